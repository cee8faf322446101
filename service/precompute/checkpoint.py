"""A precompute job's state in Redis: the resume checkpoint, and the round trips of a batch.

A run over millions of users takes hours, so it is resumable: a checkpoint in Redis
(``genrec:<model_version>:precompute:<job fingerprint>``) advances with each batch's lists
(``BatchWriter``), so after a crash, Ctrl-C or engine error the checkpoint never claims a user
whose list is not written, nor lags behind by more than the batch in flight. Running the same
job again (same input, k and history length) continues from there; a finished run deletes its
checkpoint, so the next run starts over.

On a single Redis the checkpoint is written in the SAME transaction as the batch's lists. On a
Redis Cluster it cannot be: the lists are in many hash slots (each user's own) and the
checkpoint in yet another. There each slot's lists are one transaction and the checkpoint is
written after all of them. The guarantee above still holds: a crash in between leaves the
checkpoint one batch behind, and the resumed run writes those lists again, which changes
nothing (the same model version computes the same list from the same history, and a history
that changed meanwhile is caught by the same WATCH).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import WatchError

from service.cache import CachedList, RecommendationCache
from service.history import HistoryStore, as_text, parse_items
from service.keys import checkpoint_key, done_batches_key, history_key
from service.redis_client import RedisClient, RedisPipeline, for_each_group, is_cluster, slot_groups

logger = logging.getLogger(__name__)

# A store user whose history keeps changing under us is left to the on-demand path after this.
MAX_WATCH_ATTEMPTS = 5


@dataclass(frozen=True)
class Progress:
    """Where a job stands: ``position`` is the input offset (iterables) or SCAN cursor (store)."""

    position: str
    users_done: int


def job_fingerprint(job: str, k: int, history_len: int) -> str:
    """Short digest of what makes two runs the same job: the input and what goes into each list."""
    payload = json.dumps({"job": job, "k": k, "history_len": history_len}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class JobMark(Protocol):
    """What a batch's transaction records besides its lists, so a rerun knows the batch is done:
    a ``Checkpoint`` (one position, batches in input order) or ``DoneBatches`` (a set of batch
    ids, batches in any order: the Ray job)."""

    def queue_advance(self, pipe: RedisPipeline, progress: Progress, *, first: bool) -> None: ...


class Checkpoint:
    """A job's progress in Redis, one hash per (model version, job fingerprint).

    Its TTL is set once, with the first batch, to the cache TTL: the checkpoint vouches that the
    users before it are cached, which stops being true when the first batch's lists expire.
    """

    def __init__(
        self, client: RedisClient, model_version: str, job: str, *, k: int, history_len: int, ttl_s: int
    ) -> None:
        self._client = client
        self.job = job
        self.key = checkpoint_key(model_version, job_fingerprint(job, k, history_len))
        self._ttl_s = ttl_s
        self._k = k

    async def load(self) -> Progress | None:
        raw = await self._client.hgetall(self.key)
        if not raw:
            return None
        fields = {as_text(name): as_text(value) for name, value in raw.items()}
        return Progress(position=fields["position"], users_done=int(fields["users_done"]))

    def queue_advance(self, pipe: RedisPipeline, progress: Progress, *, first: bool) -> None:
        """Queue the new progress into a transaction: on a single Redis the batch's own, so it
        lands with the lists or not at all; on a cluster one of its own, after them."""
        pipe.hset(
            self.key,
            mapping={
                "position": progress.position,
                "users_done": progress.users_done,
                "job": self.job,
                "k": self._k,
                "updated_at": int(time.time()),
            },
        )
        if first:
            pipe.expire(self.key, self._ttl_s)

    async def clear(self) -> None:
        await self._client.delete(self.key)


class DoneBatches:
    """The batches of a job that are written, as a Redis SET of batch ids, for jobs whose batches
    finish in any order (the Ray job, ``service.precompute.ray_job``), where one position cannot
    say what is done.

    Key ``genrec:<model_version>:precompute:<job fingerprint>:done``. A batch's id is added in
    the batch's own transaction (``queue_advance``, through ``BatchWriter``), so on a single
    Redis the id is in the set exactly when the batch's lists are written: a worker killed
    before EXEC leaves neither, and the batch is computed again; one killed after leaves both,
    and the batch is skipped. On a cluster the id is added after the lists' per-slot
    transactions, so a crash in between leaves a batch written but not marked, and the rerun
    writes the same lists again (see the module docstring).

    The set is created once per job by ``open`` (with the member ``START`` and the cache TTL),
    not by the first batch: batches land in any order from many workers, and Redis 6 has no
    ``EXPIRE NX`` to set a TTL only once. Like the checkpoint, it stops vouching for the lists
    when the earliest of them may have expired.
    """

    START = "-"  # never a batch id (those are "<file>:<row>")

    def __init__(self, client: RedisClient, model_version: str, fingerprint: str, *, ttl_s: int) -> None:
        self._client = client
        self.key = done_batches_key(model_version, fingerprint)
        self._ttl_s = ttl_s

    async def open(self, *, restart: bool) -> int:
        """Start the job's set, or keep an interrupted run's (``restart`` drops it); returns the
        number of batches an earlier run finished."""
        if restart:
            await self._client.delete(self.key)
        done = int(await self._client.scard(self.key))
        if done == 0:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.sadd(self.key, self.START)
                pipe.expire(self.key, self._ttl_s)
                await pipe.execute()
            return 0
        return done - 1

    async def is_done(self, batch_id: str) -> bool:
        return bool(await self._client.sismember(self.key, batch_id))

    async def missing(self, batch_ids: Sequence[str], chunk: int = 10_000) -> list[str]:
        """The ids of ``batch_ids`` not in the set, in their order (SMISMEMBER, a chunk at a time)."""
        absent: list[str] = []
        for start in range(0, len(batch_ids), chunk):
            part = batch_ids[start : start + chunk]
            found = await self._client.smismember(self.key, part)  # type: ignore[arg-type]
            absent.extend(batch_id for batch_id, there in zip(part, found, strict=True) if not there)
        return absent

    def queue_advance(self, pipe: RedisPipeline, progress: Progress, *, first: bool) -> None:
        """Queue the batch's id (``progress.position``) into the batch's transaction."""
        pipe.sadd(self.key, progress.position)

    async def clear(self) -> None:
        await self._client.delete(self.key)


async def fresh_users(cache: RecommendationCache, user_ids: Sequence[str]) -> set[str]:
    """The users that already have a list for this model version: one pipelined EXISTS round trip."""
    if not user_ids:
        return set()
    async with cache.client.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.exists(cache.key(user_id))
        found = await pipe.execute()
    return {user_id for user_id, exists in zip(user_ids, found, strict=True) if exists}


async def read_stored_histories(
    client: RedisClient, history: HistoryStore, user_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The users' whole stored histories in one pipelined round trip: the model sees the
    recent window, the cache entry marks every item the user already has."""
    if not user_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            history.queue_get(pipe, user_id, None)
        replies = await pipe.execute()
    return {user_id: parse_items(reply) for user_id, reply in zip(user_ids, replies, strict=True)}


class BatchWriter:
    """Writes a batch's cache entries and advances the checkpoint: one MULTI/EXEC on a single
    Redis; on a cluster one per hash slot, then the checkpoint (see the module docstring)."""

    def __init__(
        self,
        cache: RecommendationCache,
        history: HistoryStore,
        checkpoint: JobMark | None,
        *,
        resumed: bool,
    ) -> None:
        self._cache = cache
        self._history = history
        self._checkpoint = checkpoint
        self._first = not resumed  # the first write of a fresh checkpoint sets its TTL
        # the checkpoint shares the lists' transaction only where one may span hash slots
        self._checkpoint_apart = is_cluster(cache.client)

    async def write(
        self,
        entries: dict[str, CachedList],
        progress: Progress,
        computed_from: Mapping[str, list[str]] | None,
    ) -> dict[str, CachedList]:
        """Write ``entries`` (and the checkpoint); returns the entries actually written.

        With ``computed_from`` (store users), an entry is written only if the user's history is
        still the one it was computed from (WATCH, re-read, compare, EXEC): a live
        ``POST /events`` may have appended to it and invalidated the cached list meanwhile,
        and writing the old list back would serve it until it expires.
        """
        checkpoint = None if self._checkpoint_apart else self._checkpoint
        groups = slot_groups(self._cache.client, entries, history_key)
        if checkpoint is not None and not groups:
            groups = [[]]  # no list to write: the checkpoint alone
        written: dict[str, CachedList] = {}
        for part in await for_each_group(
            groups,
            lambda users: self._write_group(
                {u: entries[u] for u in users}, computed_from, checkpoint, progress
            ),
        ):
            written.update(part)
        if self._checkpoint_apart and self._checkpoint is not None:
            async with self._cache.client.pipeline(transaction=True) as pipe:
                self._checkpoint.queue_advance(pipe, progress, first=self._first)
                await pipe.execute()
        self._first = False
        return written

    async def _write_group(
        self,
        entries: dict[str, CachedList],
        computed_from: Mapping[str, list[str]] | None,
        checkpoint: JobMark | None,
        progress: Progress,
    ) -> dict[str, CachedList]:
        """One transaction: ``entries`` (all in one hash slot on a cluster) and ``checkpoint``'s advance."""
        async with self._cache.client.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_ATTEMPTS):
                try:
                    if computed_from is not None and entries:
                        await pipe.watch(*(history_key(user_id) for user_id in entries))
                        entries = await self._unchanged(entries, computed_from)
                    await self._commit(pipe, entries, checkpoint, progress)
                    return entries
                except WatchError:
                    continue
            logger.warning("histories of %d users kept changing: left to the on-demand path", len(entries))
            await self._commit(pipe, {}, checkpoint, progress)
            return {}

    async def _commit(
        self,
        pipe: RedisPipeline,
        entries: Mapping[str, CachedList],
        checkpoint: JobMark | None,
        progress: Progress,
    ) -> None:
        pipe.multi()
        self._cache.queue_put_many(pipe, entries)
        if checkpoint is not None:
            checkpoint.queue_advance(pipe, progress, first=self._first)
        await pipe.execute()

    async def _unchanged(
        self, entries: dict[str, CachedList], computed_from: Mapping[str, list[str]]
    ) -> dict[str, CachedList]:
        now = await read_stored_histories(self._cache.client, self._history, list(entries))
        return {
            user_id: entry for user_id, entry in entries.items() if now[user_id] == computed_from[user_id]
        }
