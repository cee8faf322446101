"""``serve``, ``engine``, ``precompute`` and ``migrate-keys`` commands of the online side, configured
from the environment.

``precompute_cli`` is the precompute command's body: another CLI can feed it users from a
dataset split instead of a JSONL file (``genrec precompute --data``). ``--ray`` runs the job on
Ray instead (``service.precompute.ray_job``, imported only then, so nothing else imports ray).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from model.recommender import Recommender
from service.local.redis_server import EmbeddedRedis
from service.migrate import MigrationSummary, migrate_keys
from service.precompute.job import (
    PrecomputeFailed,
    PrecomputeSummary,
    check_precompute_args,
    run_precompute,
)
from service.precompute.sources import HistoryFileError, Source, histories_file
from service.redis_client import redis_client
from service.request_id import RequestIdFilter
from service.settings import Settings, environment_help, get_settings

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # a good run that stopped part-way (engine, Redis): run it again to resume
HISTORIES_HELP = (
    'JSONL, one {"user_id": str, "history": \\[item_id, ...]} per line; with --ray also Parquet, '
    "a folder of such files, or a URI (s3://...)"
)

app = typer.Typer(help="serve recommendations, precompute the cache.", no_args_is_help=True)

# A precompute run from the settings, k and batch size: the in-order job or the Ray one.
RunJob = Callable[[Settings, int, int], PrecomputeSummary]


def precompute_cli(
    open_input: Callable[[], Source],
    k: int | None,
    batch_size: int | None,
    *,
    restart: bool,
    only_stale: bool,
    input_errors: tuple[type[Exception], ...] = (),
    report: Path | None = None,
) -> None:
    """The precompute command's body, shared with ``genrec precompute --data``: the in-order job
    over ``open_input()`` (see ``run_job_cli``)."""

    def run(settings: Settings, k: int, batch_size: int) -> PrecomputeSummary:
        check_precompute_args(settings, k, batch_size)
        source = open_input()
        return run_precompute(settings, source, k, batch_size, restart=restart, only_stale=only_stale)

    run_job_cli(run, k, batch_size, input_errors=input_errors, report=report)


def ray_job(
    address: str | None, input_uri: str, actors: int | None, *, restart: bool, only_stale: bool
) -> RunJob:
    """The Ray job over ``input_uri`` on the Ray at ``address`` (None: RAY_ADDRESS, else a local
    Ray started for the run, as ``ray.init()`` chooses)."""

    def run(settings: Settings, k: int, batch_size: int) -> PrecomputeSummary:
        from service.precompute.ray_job import run_ray_precompute

        if actors is not None:
            settings = settings.model_copy(update={"precompute_ray_actors": actors})
        return run_ray_precompute(
            settings,
            input_uri,
            k,
            batch_size,
            address=address,
            restart=restart,
            only_stale=only_stale,
        )

    return run


def run_job_cli(
    run: RunJob,
    k: int | None,
    batch_size: int | None,
    *,
    input_errors: tuple[type[Exception], ...] = (),
    report: Path | None = None,
) -> None:
    """Run a precompute job as a command does.

    Bad settings or input exit 2 before any model is loaded; a run that fails part-way exits 1
    and says how to resume. The summary goes to stdout and the log, and with ``report`` as
    JSON to that file (for schedulers and benchmarks).
    """
    settings = get_settings()
    configure_logging(settings.log_level)
    k = k if k is not None else settings.list_len
    batch_size = batch_size if batch_size is not None else settings.precompute_batch_size
    bad_input: tuple[type[Exception], ...] = (HistoryFileError, ValueError, RuntimeError, *input_errors)
    try:
        summary = run(settings, k, batch_size)
    except PrecomputeFailed as exc:
        typer.echo(f"error: {exc}", err=True)  # once: the job logs nothing more about it
        raise typer.Exit(EXIT_FAILED) from exc
    except bad_input as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    typer.echo(f"precompute top-{k}: {summary.describe()}")  # the result, on stdout, once
    if report is not None:
        report.write_text(
            json.dumps({"k": k, "batch_size": batch_size, **dataclasses.asdict(summary)}, indent=2)
        )


def configure_logging(level: str) -> None:
    """Log lines to stderr, each with the id of the request it was written for (or ``-``)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks run.

    uvicorn re-raises the signal that stopped it; with the default handler the process would
    die on the spot and leave the embedded redis-server behind.
    """
    raise SystemExit(128 + signum)


@contextmanager
def redis_available(settings: Settings) -> Iterator[Settings]:
    """Yield ``settings`` with a usable REDIS_URL, starting an embedded Redis for the block if unset."""
    if settings.redis_url is not None:
        yield settings
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the finally below runs on SIGTERM too
    data_dir = settings.genrec_data_dir / "redis"
    embedded = EmbeddedRedis(data_dir=data_dir)
    url = embedded.start()
    logger.info("REDIS_URL not set: using an embedded Redis at %s (data kept in %s)", url, data_dir)
    try:
        yield settings.model_copy(update={"redis_url": url})
    finally:
        embedded.stop()


def serve_until_stopped(settings: Settings, recommender: Recommender | None = None) -> None:
    """Run uvicorn on HOST:PORT until SIGINT/SIGTERM; logs one line once the port is bound."""
    import uvicorn

    from service.api.app import create_app

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # bound: the line a user (or the demo) waits for
                logger.info(
                    "API listening on http://%s:%d (try: curl 'http://localhost:%d/v1/recommend?user_id=USER')",
                    settings.host,
                    settings.port,
                    settings.port,
                )

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = uvicorn.Config(
        create_app(settings, recommender),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )
    Server(config).run()


@app.command(epilog=environment_help())
def serve() -> None:
    """Serve the API on HOST:PORT: cache misses and rankings go to the engine service at
    ENGINE_URL, or to an engine in this process when it is unset; starts an embedded Redis when
    REDIS_URL is not set."""
    settings = get_settings()
    configure_logging(settings.log_level)
    with redis_available(settings) as settings:
        serve_until_stopped(settings)


ONLY_STALE_HELP = "skip users that already have a cached list for this model version"
RESTART_HELP = "ignore the checkpoint of an interrupted run of the same job and start over"
FROM_STORE_HELP = (
    "precompute every user whose history is in Redis (genrec:{*}:hist), e.g. to refresh a deployment"
)
K_HELP = "list length to cache (default: MAX_K + CACHE_EXTRA, what the API caches on a miss)"
BATCH_SIZE_HELP = "users per engine call (default: PRECOMPUTE_BATCH_SIZE)"
REPORT_HELP = "also write the run's summary as JSON to this file"
RAY_HELP = (
    "run on Ray, one engine per worker: the cluster at RAY_ADDRESS or --ray-address, else a local "
    "Ray started for the run; --histories is then a JSONL or Parquet file or folder, a local path "
    "or a URI pyarrow opens (s3://...)"
)
RAY_ADDRESS_HELP = "--ray on the Ray cluster at this address (auto, ray://host:10001); implies --ray"
ACTORS_HELP = "--ray: workers, one engine each (default: PRECOMPUTE_RAY_ACTORS)"


@app.command(epilog=environment_help())
def engine() -> None:
    """Serve the engine (the model) on ENGINE_HOST:ENGINE_PORT for APIs and jobs with ENGINE_URL."""
    import uvicorn

    from service.engine.server import create_engine_app

    settings = get_settings()
    configure_logging(settings.log_level)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        create_engine_app(settings),
        host=settings.engine_host,
        port=settings.engine_port,
        log_level=settings.log_level.lower(),
    )


@app.command("precompute")
def precompute_command(
    histories: Annotated[str | None, typer.Option(help=HISTORIES_HELP)] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help=FROM_STORE_HELP)] = False,
    k: Annotated[int | None, typer.Option(help=K_HELP)] = None,
    batch_size: Annotated[int | None, typer.Option(help=BATCH_SIZE_HELP)] = None,
    only_stale: Annotated[bool, typer.Option("--only-stale", help=ONLY_STALE_HELP)] = False,
    restart: Annotated[bool, typer.Option("--restart", help=RESTART_HELP)] = False,
    report: Annotated[Path | None, typer.Option(help=REPORT_HELP)] = None,
    ray: Annotated[bool, typer.Option("--ray", help=RAY_HELP)] = False,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    actors: Annotated[int | None, typer.Option(min=1, help=ACTORS_HELP)] = None,
) -> None:
    """Precompute and cache the top-K of every user of a histories file or of the history store.

    Resumable: run the same command again after an interruption and it continues where it stopped.
    """
    if (histories is None) == (not from_store):
        typer.echo("error: give exactly one of --histories FILE.jsonl or --from-store", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    if ray or ray_address is not None:
        if histories is None:
            typer.echo("error: --ray reads --histories FILE_OR_FOLDER (JSONL or Parquet)", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        job = ray_job(ray_address, histories, actors, restart=restart, only_stale=only_stale)
        run_job_cli(job, k, batch_size, report=report)
        return
    path = Path(histories) if histories is not None else None
    precompute_cli(
        (lambda: histories_file(path)) if path is not None else Source.from_store,
        k,
        batch_size,
        restart=restart,
        only_stale=only_stale,
        report=report,
    )


DRY_RUN_HELP = "count what would be renamed, change nothing"


@app.command("migrate-keys", epilog=environment_help())
def migrate_keys_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help=DRY_RUN_HELP)] = False,
) -> None:
    """Rename the per-user keys of earlier releases to the hash-tagged scheme (genrec:hist:<user>
    becomes genrec:{<user>}:hist, ...), in REDIS_URL's Redis or cluster, or without REDIS_URL in
    the embedded one of GENREC_DATA_DIR. Run it before starting this release's API; idempotent."""
    settings = get_settings()
    configure_logging(settings.log_level)

    async def migrate(url: str) -> MigrationSummary:
        client = redis_client(url, settings.redis_timeout_s, settings.redis_max_connections)
        try:
            return await migrate_keys(client, dry_run=dry_run)
        finally:
            await client.aclose()

    with redis_available(settings) as settings:
        assert settings.redis_url is not None
        try:
            summary = asyncio.run(migrate(settings.redis_url))
        except (RedisError, OSError) as exc:
            typer.echo(
                f"error: {type(exc).__name__}: {exc} (a rerun continues: the moves are idempotent)", err=True
            )
            raise typer.Exit(EXIT_FAILED) from exc
    typer.echo(summary.describe())


if __name__ == "__main__":
    app()
