"""The batch job that fills the cache: every user's top-K computed ahead of requests.

Pre-caching each user's list is what makes serving an LLM recommender cheap (Semantic
Convergence): requests become one Redis GET. Users come from a ``Source`` in batches
(``service.precompute.sources``), one engine call per batch, and each batch's lists are
written in one MULTI/EXEC round trip that also advances the resume checkpoint
(``service.precompute.checkpoint``).

``run_precompute`` runs a job as the commands do: Redis at REDIS_URL, the recommender from
``service.engine.connect`` (the engine service at ENGINE_URL, or the bundle in process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, fields

from model.progress import progress
from model.recommender import Recommender, ScoredItem
from service.cache import CachedList, RecommendationCache
from service.engine.connect import connect
from service.engine.protocol import AsyncRecommender
from service.engine.runner import as_async
from service.history import HistoryStore, usable_history
from service.precompute.checkpoint import (
    BatchWriter,
    Checkpoint,
    Progress,
    fresh_users,
    read_stored_histories,
)
from service.precompute.sources import STORE_JOB, Batch, Source, batches
from service.redis_client import RedisClient, ping, redis_client
from service.settings import Settings

logger = logging.getLogger(__name__)


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


# The fields of PrecomputeSummary that a run counts batch by batch.
COUNTED = tuple(
    f.name for f in fields(PrecomputeSummary) if f.name not in ("resumed", "wall_s", "users_per_s")
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


@dataclass
class BatchRun:
    """What every batch of one run shares; ``run_batch`` does one batch. Shared by this
    in-order job and the workers of the Ray job (``service.precompute.ray_job``), each of which
    holds one and reports its ``counts``."""

    recommender: AsyncRecommender
    cache: RecommendationCache
    history: HistoryStore
    writer: BatchWriter
    k: int
    history_len: int
    only_stale: bool
    resumed: int  # users_done of the checkpoint this run started from
    counts: Counter[str] = field(default_factory=Counter)  # by COUNTED field

    @property
    def users_done(self) -> int:
        return self.resumed + self.counts["users"]

    async def run_batch(self, batch: Batch) -> None:
        """Skip fresh users, get histories, one engine call, one write with the checkpoint."""
        fresh = await fresh_users(self.cache, batch.user_ids) if self.only_stale else set()
        todo = [user_id for user_id in dict.fromkeys(batch.user_ids) if user_id not in fresh]
        if batch.histories is not None:  # merged into the store, never replacing what the API wrote
            seeds = {user_id: batch.histories[user_id] for user_id in todo}
            self.counts["kept_stored"] += await self.history.seed_many(seeds)
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
        self.counts["users"] += len(batch.user_ids)
        self.counts["batches"] += 1
        self.counts["skipped_fresh"] += sum(1 for user_id in batch.user_ids if user_id in fresh)
        self.counts["cached"] += len(written)
        self.counts["changed"] += len(entries) - len(written)

    def _model_inputs(self, histories: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """Each user's known recent items; users with none are counted, not modelled."""
        catalog = self.recommender.catalog
        inputs: dict[str, list[str]] = {}
        for user_id, items in histories.items():
            known, unknown = usable_history(items, catalog, self.history_len)
            self.counts["skipped_unknown_items"] += unknown
            if known:
                inputs[user_id] = known
            else:
                self.counts["skipped_users"] += 1
        return inputs

    async def _recommend(self, inputs: Mapping[str, list[str]]) -> dict[str, list[ScoredItem]]:
        if not inputs:
            return {}
        lists = await self.recommender.recommend(list(inputs.values()), self.k)
        return dict(zip(inputs, lists, strict=True))


async def precompute(
    recommender: Recommender | AsyncRecommender,
    source: Source,
    cache: RecommendationCache,
    history: HistoryStore,
    *,
    k: int,
    batch_size: int,
    history_len: int,
    restart: bool = False,
    only_stale: bool = False,
) -> PrecomputeSummary:
    """Cache the top-``k`` of each user of ``source`` (storing the histories it brings).

    The source's ``job`` names the input (e.g. a file's path, size and mtime) and turns on the
    checkpoint: a run of the same job, k and history length resumes where an interrupted one
    stopped, unless ``restart``. The store is always checkpointed. Without a job an iterable's
    order is not known to be repeatable, so nothing is checkpointed. ``only_stale`` skips users
    that already have a list for this model version.

    Raises PrecomputeFailed when a batch fails (engine, Redis): the batches before it stay
    written and checkpointed. ``recommender`` is a blocking one run in this process (in a worker
    thread with no timeout: a batch on a CPU engine can legitimately take minutes, and nothing
    is waiting on it) or an ``AsyncRecommender``, e.g. the client of the engine service.
    """
    if k < 1 or batch_size < 1 or history_len < 1:
        raise ValueError(f"k, batch_size and history_len must be >= 1, got {k}, {batch_size}, {history_len}")
    if cache.model_version != recommender.model_version:
        raise ValueError(f"cache is for {cache.model_version!r}, model is {recommender.model_version!r}")
    job = STORE_JOB if source.users is None else source.job
    checkpoint = None
    if job is not None:
        checkpoint = Checkpoint(
            cache.client, cache.model_version, job, k=k, history_len=history_len, ttl_s=cache.ttl_s
        )
    start = await _starting_point(checkpoint, restart)
    run = BatchRun(
        recommender=as_async(recommender, None, batch_size),
        cache=cache,
        history=history,
        writer=BatchWriter(cache, history, checkpoint, resumed=start is not None),
        k=k,
        history_len=history_len,
        only_stale=only_stale,
        resumed=start.users_done if start else 0,
    )
    started = time.perf_counter()
    try:
        with progress(
            total=source.total, initial=run.resumed, unit="user", desc="precompute", dynamic_ncols=True
        ) as bar:
            async for batch in batches(cache.client, source, batch_size, start):
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
    wall_s = time.perf_counter() - started
    summary = PrecomputeSummary(
        **{name: run.counts[name] for name in COUNTED},
        resumed=run.resumed,
        wall_s=wall_s,
        users_per_s=run.counts["users"] / wall_s if wall_s > 0 else 0.0,
    )
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


def _stopped_message(exc: BaseException | None, checkpoint: Checkpoint | None, users_done: int) -> str:
    cause = f"precompute failed: {type(exc).__name__}: {exc}" if exc else "precompute interrupted"
    if checkpoint is None:
        return f"{cause} after {users_done} users (no checkpoint: a new run starts over)"
    return (
        f"{cause} after {users_done} users; run the same command again to resume "
        f"(checkpoint {checkpoint.key})"
    )


def check_precompute_args(settings: Settings, k: int, batch_size: int) -> None:
    """Reject what would fail later, before the input is read or the model loaded (seconds vs minutes)."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set: precompute needs the Redis server the service will read")
    if not 1 <= k <= settings.list_len:
        raise ValueError(
            f"k must be between 1 and {settings.list_len} (MAX_K + CACHE_EXTRA, the cached list), got {k}"
        )
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")


@asynccontextmanager
async def reachable_redis(settings: Settings) -> AsyncIterator[RedisClient]:
    """A client of REDIS_URL that has answered a PING, closed afterwards: a job checks Redis
    before it loads a model (RuntimeError naming the reason when Redis does not answer)."""
    assert settings.redis_url is not None
    client = redis_client(settings.redis_url, settings.redis_timeout_s, settings.redis_max_connections)
    try:
        status = await ping(client, settings.redis_timeout_s)
        if status != "ok":
            raise RuntimeError(f"cannot reach Redis at REDIS_URL: {status.removeprefix('error: ')}")
        yield client
    finally:
        await client.aclose()


def precompute_engine(
    settings: Settings, recommender: Recommender | None, batch_size: int
) -> AbstractAsyncContextManager[AsyncRecommender]:
    """The engine a precompute job calls (``recommender``, else the one ``connect`` chooses): no
    deadline of the API's, PRECOMPUTE_TIMEOUT_S per remote call, and an engine that must answer."""
    return connect(
        settings,
        recommender,
        timeout_s=None,
        remote_timeout_s=settings.precompute_timeout_s,
        max_batch=batch_size,
        must_answer=True,
    )


def run_precompute(
    settings: Settings,
    source: Source,
    k: int,
    batch_size: int,
    *,
    recommender: Recommender | None = None,
    restart: bool = False,
    only_stale: bool = False,
) -> PrecomputeSummary:
    """Fill REDIS_URL's Redis with the top-``k`` (and history) of each user of ``source``.

    The recommender is ``recommender`` when given, else the one ``service.engine.connect``
    chooses, loaded only once Redis has answered (an unreachable REDIS_URL is reported before
    minutes of model loading). ``restart`` and ``only_stale`` are those of :func:`precompute`;
    raises PrecomputeFailed when the run stops part-way.
    """
    check_precompute_args(settings, k, batch_size)

    async def run() -> PrecomputeSummary:
        async with (
            reachable_redis(settings) as client,
            precompute_engine(settings, recommender, batch_size) as connected,
        ):
            cache = RecommendationCache(client, connected.model_version, settings.cache_ttl_s)
            return await precompute(
                connected,
                source,
                cache,
                HistoryStore(client),
                k=k,
                batch_size=batch_size,
                history_len=settings.history_len,
                restart=restart,
                only_stale=only_stale,
            )

    return asyncio.run(run())
