"""``genrec precompute --ray``: the precompute job on a Ray cluster, one engine per worker.

The driver plans the batches (``ray_input.plan_input``: deterministic ids from the input's
row order), opens the job's set of done batches in Redis (``DoneBatches``), and runs a Ray
Dataset of the batch specs through ``map_batches`` with a pool of ``BatchWorker`` actors (one
engine each: a GPU per actor with ENGINE_DEVICE=cuda, CPUs otherwise), one precompute batch per
call. A worker reads its batch from the input itself and runs it exactly as the in-order job
does (``BatchRun.run_batch``: histories merged into the store, one engine call, one write), with
``DoneBatches`` in place of the position checkpoint: the batch's id goes into the set in the
same transaction as its lists (after them on a Redis Cluster, see ``checkpoint``).

What that guarantees, with batches finishing in any order:

* no user missing: the driver clears the set only once every planned batch id is in it, and
  otherwise fails (exit 1) so that a rerun does the rest;
* none written twice with different lists: a batch in the set is never computed again (a
  worker checks before computing); a batch not in it has no list of this job written on a
  single Redis (lists and id share one MULTI/EXEC). The only rewrite is a Ray retry, or on a
  cluster a crash between a batch's lists and its id, and those write the same lists (the
  same model version, from the same stored histories; an event landing meanwhile invalidates
  the list the ordinary way);
* resumable after a killed worker (Ray restarts it up to PRECOMPUTE_RAY_MAX_RESTARTS times and
  retries its batch; after that the job fails) and after a killed driver: run the same command
  again and the batches in the set are skipped. The same input files (path, size, mtime),
  batch size, k and history length make the same job; ``--restart`` drops the set.

ray is imported only here, and this module only by the ``--ray`` path of the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from model.bundle import read_manifest
from model.progress import progress
from model.recommender import Recommender
from service.cache import RecommendationCache
from service.engine.connect import stop_recommender
from service.history import HistoryStore
from service.keys import done_batches_key
from service.precompute.checkpoint import BatchWriter, DoneBatches, job_fingerprint
from service.precompute.job import (
    COUNTED,
    BatchRun,
    PrecomputeFailed,
    PrecomputeSummary,
    check_precompute_args,
    precompute_engine,
    reachable_redis,
)
from service.precompute.ray_input import BatchSpec, InputPlan, plan_input, read_batch
from service.precompute.sources import Batch
from service.redis_client import RedisClient, redis_client
from service.settings import Settings

logger = logging.getLogger(__name__)

# Ray Data runs each block as one task on one actor, so a block is at most a few batches: many
# more blocks than actors spread the work, and a retried task redoes little.
MAX_BLOCKS = 10_000
REPORTED = (*COUNTED, "resumed")  # the counts each worker returns per batch
EngineFactory = Callable[[], Recommender]


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker of one job is built from (pickled to the actors)."""

    settings: Settings
    model_version: str
    fingerprint: str
    filesystem: pafs.FileSystem
    k: int
    batch_size: int
    only_stale: bool
    engine: EngineFactory | None  # None: the engine ``connect`` chooses (ENGINE_URL or the bundle)


class BatchWorker:
    """A Ray Data actor: one engine and one Redis client, batches run one at a time.

    A sync class whose calls each run its batch to completion on the actor's own event loop:
    Ray calls it from one thread, and the engine, Redis client and ``BatchRun`` live on that loop
    for the actor's life.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._stack = AsyncExitStack()
        self._run, self._done = self._loop.run_until_complete(self._open())

    async def _open(self) -> tuple[BatchRun, DoneBatches]:
        config, settings = self._config, self._config.settings
        assert settings.redis_url is not None
        client = redis_client(settings.redis_url, settings.redis_timeout_s, settings.redis_max_connections)
        self._stack.push_async_callback(client.aclose)
        given = config.engine() if config.engine is not None else None
        if given is not None:
            self._stack.callback(stop_recommender, given)
        recommender = await self._stack.enter_async_context(
            precompute_engine(settings, given, config.batch_size)
        )
        if recommender.model_version != config.model_version:
            raise ValueError(
                f"the worker's engine serves {recommender.model_version!r}, "
                f"the job is for {config.model_version!r}"
            )
        cache = RecommendationCache(client, config.model_version, settings.cache_ttl_s)
        history = HistoryStore(client)
        done = DoneBatches(client, config.model_version, config.fingerprint, ttl_s=settings.cache_ttl_s)
        run = BatchRun(
            recommender=recommender,
            cache=cache,
            history=history,
            writer=BatchWriter(cache, history, done, resumed=True),
            k=config.k,
            history_len=settings.history_len,
            only_stale=config.only_stale,
            resumed=0,
        )
        return run, done

    def __call__(self, specs: pa.Table) -> pa.Table:
        """Run each batch of ``specs`` (one, with ``batch_size=1``); a row of counts per batch."""
        rows = [
            {"batch_id": row["batch_id"], **self._loop.run_until_complete(self._one(BatchSpec.from_row(row)))}
            for row in specs.to_pylist()
        ]
        return pa.Table.from_pylist(rows)

    async def _one(self, spec: BatchSpec) -> dict[str, int]:
        counts = dict.fromkeys(REPORTED, 0)
        if await self._done.is_done(spec.batch_id):  # an earlier run, or a retry after EXEC
            counts["resumed"] = spec.rows
            return counts
        users = read_batch(self._config.filesystem, spec)
        before = Counter(self._run.counts)
        await self._run.run_batch(Batch([user_id for user_id, _ in users], spec.batch_id, dict(users)))
        counts.update(self._run.counts - before)
        return counts

    def __del__(self) -> None:
        """Stop the engine when Ray Data drops the actor (vLLM's worker processes with it)."""
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.run_until_complete(self._stack.aclose())
            except Exception:  # the process is going away; nothing to report to
                logger.debug("worker cleanup failed", exc_info=True)
            loop.close()


def worker_resources(settings: Settings) -> dict[str, Any]:
    """Each actor's Ray resources: a whole GPU for a CUDA engine, else CPUs (ENGINE_URL: the
    engine is elsewhere, a CPU is plenty for the client)."""
    if settings.engine_device == "cuda" and settings.engine_url is None:
        return {"num_gpus": 1}
    return {"num_cpus": settings.precompute_ray_cpus_per_actor}


def worker_count(settings: Settings, cluster_resources: dict[str, float]) -> int:
    """PRECOMPUTE_RAY_ACTORS, or one per GPU of the cluster for a CUDA engine, else one."""
    if settings.precompute_ray_actors is not None:
        return settings.precompute_ray_actors
    if "num_gpus" in worker_resources(settings):
        return max(1, int(cluster_resources.get("GPU", 0)))
    return 1


def run_ray_precompute(
    settings: Settings,
    input_uri: str,
    k: int,
    batch_size: int,
    *,
    address: str | None = None,
    restart: bool = False,
    only_stale: bool = False,
    engine: EngineFactory | None = None,
) -> PrecomputeSummary:
    """Fill REDIS_URL's Redis with the top-``k`` of each user of ``input_uri`` on Ray.

    ``address`` is ``ray.init``'s (None: a local Ray, or RAY_ADDRESS; ``auto``; ``ray://...``);
    a Ray this process already joined is used as it is and left running. ``engine`` builds each
    worker's engine (tests, other engines); by default ``connect`` chooses, as for the in-order
    job. Bad input raises HistoryFileError (before Ray starts); a run that stops part-way raises
    PrecomputeFailed, and the same call resumes it.
    """
    check_precompute_args(settings, k, batch_size)
    plan = plan_input(input_uri, batch_size)
    model_version = read_manifest(settings.artifacts).version
    fingerprint = job_fingerprint(plan.job, k, settings.history_len)
    done = _in_redis(
        settings,
        lambda client: DoneBatches(client, model_version, fingerprint, ttl_s=settings.cache_ttl_s).open(
            restart=restart
        ),
    )
    if done:
        logger.info("precompute job %s: %d batches done by an earlier run are skipped", fingerprint, done)
    config = WorkerConfig(
        settings, model_version, fingerprint, plan.filesystem, k, batch_size, only_stale, engine
    )
    if not plan.batches:  # an empty input: nothing to start Ray for
        _in_redis(settings, lambda client: _finish(client, plan, config))
        return PrecomputeSummary(**dict.fromkeys(COUNTED, 0), resumed=0, wall_s=0.0, users_per_s=0.0)

    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        return _run_on_ray(plan, config)
    finally:
        if started_here:
            ray.shutdown()


def _run_on_ray(plan: InputPlan, config: WorkerConfig) -> PrecomputeSummary:
    """Stream every batch through the actor pool; the summary once every batch is marked done."""
    import ray
    import ray.data

    settings = config.settings
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts users
    actors = worker_count(settings, ray.cluster_resources())
    resources = worker_resources(settings)
    logger.info(
        "precompute on Ray: %d users in %d batches, %d workers with %s each",
        plan.users,
        len(plan.batches),
        actors,
        resources,
    )
    blocks = max(1, min(len(plan.batches), MAX_BLOCKS))
    specs = ray.data.from_items([asdict(spec) for spec in plan.batches], override_num_blocks=blocks)
    results = specs.map_batches(
        BatchWorker,
        fn_constructor_kwargs={"config": config},
        batch_size=1,
        batch_format="pyarrow",
        concurrency=actors,
        max_restarts=settings.precompute_ray_max_restarts,
        **resources,
    )
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    try:
        with progress(total=plan.users, unit="user", desc="precompute", dynamic_ncols=True) as bar:
            for row in results.iter_rows():
                counts.update({name: int(row[name]) for name in REPORTED})
                bar.update(int(row["users"]) + int(row["resumed"]))
        missing = _in_redis(settings, lambda client: _finish(client, plan, config))
    except Exception as exc:
        users_done = counts["users"] + counts["resumed"]
        raise PrecomputeFailed(
            f"precompute failed on Ray: {type(exc).__name__}: {exc}; {users_done} users are done: "
            f"run the same command again to resume (done batches in "
            f"{done_batches_key(config.model_version, config.fingerprint)})",
            users_done=users_done,
            resumable=True,
        ) from exc
    if missing:
        raise PrecomputeFailed(
            f"precompute on Ray finished with {len(missing)} batches not written (first: {missing[:5]}): "
            "run the same command again to do them",
            users_done=counts["users"] + counts["resumed"],
            resumable=True,
        )
    wall_s = time.perf_counter() - started
    return PrecomputeSummary(
        **{name: counts[name] for name in COUNTED},
        resumed=counts["resumed"],
        wall_s=wall_s,
        users_per_s=counts["users"] / wall_s if wall_s > 0 else 0.0,
    )


def _in_redis(settings: Settings, step: Callable[[RedisClient], Any]) -> Any:
    """Run one async step of the driver on a client of REDIS_URL (RuntimeError if unreachable)."""

    async def run() -> Any:
        async with reachable_redis(settings) as client:
            return await step(client)

    return asyncio.run(run())


async def _finish(client: RedisClient, plan: InputPlan, config: WorkerConfig) -> list[str]:
    """The planned batch ids not in the done set; none: the job is complete and its set deleted."""
    done = DoneBatches(client, config.model_version, config.fingerprint, ttl_s=config.settings.cache_ttl_s)
    missing = await done.missing([spec.batch_id for spec in plan.batches])
    if not missing:
        await done.clear()
    return missing
