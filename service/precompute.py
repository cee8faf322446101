"""The batch job that fills the cache: every user's top-K computed ahead of requests.

Pre-caching each user's list is what makes serving an LLM recommender cheap (Semantic
Convergence): requests become one Redis GET. Users go through the model in batches, one
engine call per batch, and each batch's lists are written in one MULTI/EXEC round trip.

A run over millions of users takes hours, so it is resumable: a checkpoint in Redis
(``genrec:<model_version>:precompute:<job fingerprint>``) is advanced in the SAME transaction
as each batch's lists, so after a crash, Ctrl-C or engine error the checkpoint never claims a
user whose list is not written, nor lags behind by more than the batch in flight. Running the
same job again (same input, k and history length) continues from there; a finished run deletes
its checkpoint, so the next run starts over.

Users come either from an iterable (a histories file, a dataset: their histories are stored
too, so a later cache miss can be recomputed, and the position in the input is the checkpoint)
or from the history store itself (:class:`StoredUsers`: SCAN over ``genrec:hist:*``, the SCAN
cursor is the checkpoint), which is how a running deployment refreshes all its users.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from model.progress import progress
from model.recommender import Recommender, ScoredItem
from service.cache import CachedList, RecommendationCache
from service.engine.protocol import AsyncRecommender
from service.engine.runner import as_async
from service.history import HISTORY_KEY, HistoryStore, history_key, parse_items
from service.recommend import usable_history

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "genrec:{model_version}:precompute:{fingerprint}"
HISTORY_PREFIX = HISTORY_KEY.format(user_id="")
# SCAN's cursor is 0 both at the start and at the end of a full iteration; a checkpoint must
# tell "nothing done" from "all done" (a crash between the last batch and clearing it).
SCAN_DONE = "done"
# A store user whose history keeps changing under us is left to the on-demand path after this.
MAX_WATCH_ATTEMPTS = 5

User = tuple[str, list[str]]


@dataclass(frozen=True)
class PrecomputeSummary:
    """What one run did. ``users`` are the users read in THIS run:
    ``users == skipped_fresh + cached + skipped_users + changed`` (for distinct user ids)."""

    users: int  # users read this run (not counting those done by an earlier, interrupted run)
    batches: int
    cached: int  # users whose top-K was written to the cache
    skipped_users: int  # users with no known history item: stored, not sent to the model
    skipped_unknown_items: int  # history item ids (within the last history_len) unknown to the catalog
    skipped_fresh: int  # --only-stale: users that already had a list for this model version
    resumed: int  # users done by an earlier run of the same job, skipped via the checkpoint
    changed: int  # history changed while computing (a live event); left to the on-demand path
    # users whose stored history (the API's events) was kept over a different one in the source
    kept_stored: int
    wall_s: float
    users_per_s: float

    def describe(self) -> str:
        """One line for the log and the CLI."""
        return (
            f"{self.users} users read in {self.batches} batches, {self.cached} cached, "
            f"{self.skipped_fresh} skipped as fresh, {self.resumed} skipped via resume, "
            f"{self.skipped_users} without known history ({self.skipped_unknown_items} unknown "
            f"history items), {self.changed} changed during the run, {self.kept_stored} kept their "
            f"stored history over the source's; "
            f"{self.wall_s:.1f}s, {self.users_per_s:.1f} users/s"
        )


class PrecomputeFailed(Exception):
    """The run stopped part-way (engine or Redis error); what is done stays done.

    Not a ValueError/RuntimeError on purpose: the CLI reports bad input (exit 2) differently
    from a failure half-way through a good run (exit 1, "run it again to resume").
    """

    def __init__(self, message: str, *, users_done: int, resumable: bool) -> None:
        super().__init__(message)
        self.users_done = users_done
        self.resumable = resumable


@dataclass(frozen=True)
class StoredUsers:
    """Precompute every user with a history in Redis (``genrec:hist:*``), found with SCAN.

    Histories are read, not written: they are the live state of the deployment.
    """

    job: str = "store"  # the input identity in the checkpoint fingerprint


def user_batches(users: Iterable[User], size: int) -> Iterator[list[User]]:
    """Consecutive lists of ``size`` users (the last may be shorter), read lazily."""
    iterator = iter(users)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class Progress:
    """Where a job stands: ``position`` is the input offset (iterables) or SCAN cursor (store)."""

    position: str
    users_done: int


def job_fingerprint(job: str, k: int, history_len: int) -> str:
    """Short digest of what makes two runs the same job: the input and what goes into each list."""
    payload = json.dumps({"job": job, "k": k, "history_len": history_len}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Checkpoint:
    """A job's progress in Redis, one hash per (model version, job fingerprint).

    Its TTL is set once, with the first batch, to the cache TTL: the checkpoint vouches that the
    users before it are cached, which stops being true when the first batch's lists expire.
    """

    def __init__(
        self, client: redis.Redis, model_version: str, job: str, *, k: int, history_len: int, ttl_s: int
    ) -> None:
        self._client = client
        self.job = job
        self.key = CHECKPOINT_KEY.format(
            model_version=model_version, fingerprint=job_fingerprint(job, k, history_len)
        )
        self._ttl_s = ttl_s
        self._k = k

    async def load(self) -> Progress | None:
        raw = await self._client.hgetall(self.key)
        if not raw:
            return None
        fields = {_text(name): _text(value) for name, value in raw.items()}
        return Progress(position=fields["position"], users_done=int(fields["users_done"]))

    def queue_advance(self, pipe: Pipeline, progress: Progress, *, first: bool) -> None:
        """Queue the new progress into the batch's transaction (so it lands with the lists or not at all)."""
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Batch:
    """Users of one batch and the checkpoint position once they are done.

    ``histories`` is None for store users: their histories are read from Redis at batch time.
    """

    user_ids: list[str]
    position: str
    histories: dict[str, list[str]] | None


async def iterable_batches(users: Iterable[User], size: int, start: Progress | None) -> AsyncIterator[Batch]:
    """Batches of an ordered input, skipping the ``start.position`` users an earlier run did."""
    iterator = iter(users)
    offset = int(start.position) if start else 0
    skipped = sum(1 for _ in itertools.islice(iterator, offset))
    if skipped < offset:
        logger.warning("the input has only %d users, the checkpoint says %d were done", skipped, offset)
    for batch in user_batches(iterator, size):
        offset += len(batch)
        yield Batch([user_id for user_id, _ in batch], str(offset), dict(batch))


async def store_batches(client: redis.Redis, size: int, start: Progress | None) -> AsyncIterator[Batch]:
    """Batches of the users in the history store, whole SCAN pages at a time (never KEYS).

    A batch ends on a page boundary so its position is a SCAN cursor, which resumes exactly:
    SCAN returns every key that exists for the whole iteration, and a cursor from an earlier
    connection continues it. Pages are gathered until ``size`` users, so a batch holds between
    ``size`` and about twice that many users.
    """
    if start is not None and start.position == SCAN_DONE:
        return
    cursor = int(start.position) if start else 0
    pending: list[str] = []
    while True:
        cursor, keys = await client.scan(cursor, match=HISTORY_PREFIX + "*", count=size)
        pending.extend(_text(key)[len(HISTORY_PREFIX) :] for key in keys)
        if cursor == 0:
            if pending:
                yield Batch(pending, SCAN_DONE, None)
            return
        if len(pending) >= size:
            yield Batch(pending, str(cursor), None)
            pending = []


# --------------------------------------------------------------------------- Redis round trips


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
    client: redis.Redis, history: HistoryStore, user_ids: Sequence[str]
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
    """Writes a batch's cache entries and advances the checkpoint in one MULTI/EXEC."""

    def __init__(
        self,
        cache: RecommendationCache,
        history: HistoryStore,
        checkpoint: Checkpoint | None,
        *,
        resumed: bool,
    ) -> None:
        self._cache = cache
        self._history = history
        self._checkpoint = checkpoint
        self._first = not resumed  # the first write of a fresh checkpoint sets its TTL

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
        if not entries and self._checkpoint is None:
            return {}
        async with self._cache.client.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_ATTEMPTS):
                try:
                    if computed_from is not None and entries:
                        await pipe.watch(*(history_key(user_id) for user_id in entries))
                        entries = await self._unchanged(entries, computed_from)
                    await self._commit(pipe, entries, progress)
                    return entries
                except WatchError:
                    continue
            logger.warning("histories of %d users kept changing: left to the on-demand path", len(entries))
            await self._commit(pipe, {}, progress)
            return {}

    async def _commit(self, pipe: Pipeline, entries: Mapping[str, CachedList], progress: Progress) -> None:
        pipe.multi()
        self._cache.queue_put_many(pipe, entries)
        if self._checkpoint is not None:
            self._checkpoint.queue_advance(pipe, progress, first=self._first)
        await pipe.execute()
        self._first = False

    async def _unchanged(
        self, entries: dict[str, CachedList], computed_from: Mapping[str, list[str]]
    ) -> dict[str, CachedList]:
        now = await read_stored_histories(self._cache.client, self._history, list(entries))
        return {
            user_id: entry for user_id, entry in entries.items() if now[user_id] == computed_from[user_id]
        }


# --------------------------------------------------------------------------- the job


@dataclass
class _Counts:
    users: int = 0
    batches: int = 0
    cached: int = 0
    no_history: int = 0
    unknown: int = 0
    fresh: int = 0
    changed: int = 0
    kept_stored: int = 0


@dataclass
class _Job:
    """What every batch of one run shares; ``run_batch`` does one batch."""

    recommender: AsyncRecommender
    cache: RecommendationCache
    history: HistoryStore
    writer: BatchWriter
    k: int
    history_len: int
    only_stale: bool
    resumed: int  # users_done of the checkpoint this run started from
    counts: _Counts

    @property
    def users_done(self) -> int:
        return self.resumed + self.counts.users

    async def run_batch(self, batch: Batch) -> None:
        """Skip fresh users, get histories, one engine call, one write with the checkpoint."""
        fresh = await fresh_users(self.cache, batch.user_ids) if self.only_stale else set()
        todo = [user_id for user_id in dict.fromkeys(batch.user_ids) if user_id not in fresh]
        if batch.histories is not None:  # merged into the store, never replacing what the API wrote
            seeds = {user_id: batch.histories[user_id] for user_id in todo}
            self.counts.kept_stored += await self.history.seed_many(seeds)
        # the model reads the stored histories, and a list is only written if its user's history
        # is still the one it was computed from (an event may land meanwhile)
        histories = computed_from = await read_stored_histories(self.cache.client, self.history, todo)
        inputs = self._model_inputs(histories)
        entries = {
            user_id: CachedList.of(items, histories[user_id])
            for user_id, items in (await self._recommend(inputs)).items()
        }
        progress = Progress(batch.position, self.users_done + len(batch.user_ids))
        written = await self.writer.write(entries, progress, computed_from)
        self.counts.users += len(batch.user_ids)
        self.counts.batches += 1
        self.counts.fresh += sum(1 for user_id in batch.user_ids if user_id in fresh)
        self.counts.cached += len(written)
        self.counts.changed += len(entries) - len(written)

    def _model_inputs(self, histories: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """Each user's known recent items; users with none are counted, not modelled."""
        catalog = self.recommender.catalog
        inputs: dict[str, list[str]] = {}
        for user_id, items in histories.items():
            known, unknown = usable_history(items, catalog, self.history_len)
            self.counts.unknown += unknown
            if known:
                inputs[user_id] = known
            else:
                self.counts.no_history += 1
        return inputs

    async def _recommend(self, inputs: Mapping[str, list[str]]) -> dict[str, list[ScoredItem]]:
        if not inputs:
            return {}
        lists = await self.recommender.recommend(list(inputs.values()), self.k)
        return dict(zip(inputs, lists, strict=True))


async def precompute(
    recommender: Recommender | AsyncRecommender,
    users: Iterable[User] | StoredUsers,
    cache: RecommendationCache,
    history: HistoryStore,
    *,
    k: int,
    batch_size: int,
    history_len: int,
    total: int | None = None,
    job: str | None = None,
    restart: bool = False,
    only_stale: bool = False,
) -> PrecomputeSummary:
    """Cache each user's top-``k`` (storing histories of iterable users); ``total`` sizes the bar.

    ``job`` names the input (e.g. a file's path, size and mtime) and turns on the checkpoint:
    a run of the same job, k and history length resumes where an interrupted one stopped,
    unless ``restart``. Store users are always checkpointed (job ``StoredUsers.job``). Without
    a job an iterable's order is not known to be repeatable, so nothing is checkpointed.
    ``only_stale`` skips users that already have a list for this model version.

    Raises PrecomputeFailed when a batch fails (engine, Redis): the batches before it stay
    written and checkpointed. ``recommender`` is a blocking one run in this process (in a worker
    thread with no timeout: a batch on a CPU engine can legitimately take minutes, and nothing
    is waiting on it) or an ``AsyncRecommender``, e.g. the client of the engine service.
    """
    if k < 1 or batch_size < 1 or history_len < 1:
        raise ValueError(f"k, batch_size and history_len must be >= 1, got {k}, {batch_size}, {history_len}")
    if cache.model_version != recommender.model_version:
        raise ValueError(f"cache is for {cache.model_version!r}, model is {recommender.model_version!r}")
    if isinstance(users, StoredUsers):
        job = users.job
    checkpoint = None
    if job is not None:
        checkpoint = Checkpoint(
            cache.client, cache.model_version, job, k=k, history_len=history_len, ttl_s=cache.ttl_s
        )
    start = await _starting_point(checkpoint, restart)
    if isinstance(users, StoredUsers):
        batches = store_batches(cache.client, batch_size, start)
    else:
        batches = iterable_batches(users, batch_size, start)
    run = _Job(
        recommender=as_async(recommender, None, batch_size),
        cache=cache,
        history=history,
        writer=BatchWriter(cache, history, checkpoint, resumed=start is not None),
        k=k,
        history_len=history_len,
        only_stale=only_stale,
        resumed=start.users_done if start else 0,
        counts=_Counts(),
    )
    started = time.perf_counter()
    try:
        with progress(
            total=total, initial=run.resumed, unit="user", desc="precompute", dynamic_ncols=True
        ) as bar:
            async for batch in batches:
                await run.run_batch(batch)
                bar.update(len(batch.user_ids))
    except Exception as exc:
        message = _stopped_message(exc, checkpoint, run.users_done)
        raise PrecomputeFailed(message, users_done=run.users_done, resumable=checkpoint is not None) from exc
    except BaseException:  # Ctrl-C (KeyboardInterrupt / CancelledError): say how to go on, then stop
        logger.warning("%s", _stopped_message(None, checkpoint, run.users_done))
        raise
    if checkpoint is not None:
        await checkpoint.clear()
    summary = _summarize(run.counts, run.resumed, time.perf_counter() - started)
    # DEBUG: the CLI prints the summary as its result; a log line would repeat it
    logger.debug("precompute (model %s, k=%d): %s", recommender.model_version, k, summary.describe())
    return summary


async def _starting_point(checkpoint: Checkpoint | None, restart: bool) -> Progress | None:
    """The progress to resume from (logged), or None to start at the beginning."""
    if checkpoint is None:
        return None
    if restart:
        await checkpoint.clear()
        logger.info("precompute job %s: --restart, starting from the beginning", checkpoint.job)
        return None
    start = await checkpoint.load()
    if start is None:
        logger.info("precompute job %s: no checkpoint, starting from the beginning", checkpoint.job)
    else:
        logger.info(
            "precompute job %s: resuming after %d users done by an earlier run (position %s, "
            "checkpoint %s); --restart to start over",
            checkpoint.job,
            start.users_done,
            start.position,
            checkpoint.key,
        )
    return start


def _summarize(counts: _Counts, resumed: int, wall_s: float) -> PrecomputeSummary:
    return PrecomputeSummary(
        users=counts.users,
        batches=counts.batches,
        cached=counts.cached,
        skipped_users=counts.no_history,
        skipped_unknown_items=counts.unknown,
        skipped_fresh=counts.fresh,
        resumed=resumed,
        changed=counts.changed,
        kept_stored=counts.kept_stored,
        wall_s=wall_s,
        users_per_s=counts.users / wall_s if wall_s > 0 else 0.0,
    )


def _stopped_message(exc: BaseException | None, checkpoint: Checkpoint | None, users_done: int) -> str:
    cause = f"precompute failed: {type(exc).__name__}: {exc}" if exc else "precompute interrupted"
    if checkpoint is None:
        return f"{cause} after {users_done} users (no checkpoint: a new run starts over)"
    return (
        f"{cause} after {users_done} users; run the same command again to resume "
        f"(checkpoint {checkpoint.key})"
    )
