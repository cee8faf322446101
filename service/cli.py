"""``serve`` and ``precompute`` commands of the online side, both configured from the environment.

``run_precompute`` is the reusable core: another CLI can feed it users from a dataset split
instead of a JSONL file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as redis
import typer
from pydantic import BaseModel, Field, ValidationError
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from model.recommender import Recommender
from service.cache import RecommendationCache
from service.engine.connect import connect
from service.history import HistoryStore
from service.local.redis_server import EmbeddedRedis
from service.precompute import PrecomputeFailed, PrecomputeSummary, StoredUsers, precompute
from service.request_id import RequestIdFilter
from service.settings import Settings, environment_help, get_settings

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # a good run that stopped part-way (engine, Redis): run it again to resume
HISTORIES_HELP = 'JSONL, one {"user_id": str, "history": \\[item_id, ...]} per line'

app = typer.Typer(help="serve recommendations, precompute the cache.", no_args_is_help=True)


class HistoryLine(BaseModel):
    """One line of a histories JSONL file."""

    user_id: str = Field(min_length=1)
    history: list[str]


class HistoryFileError(ValueError):
    """A histories file cannot be read; the message names the file and line."""


def read_histories(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Stream ``(user_id, history)`` from JSONL; blank lines are skipped, bad ones raise HistoryFileError."""
    try:
        with path.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = HistoryLine.model_validate_json(line)
                except ValidationError as exc:
                    problems = "; ".join(_describe(err["loc"], err["msg"]) for err in exc.errors())
                    raise HistoryFileError(f"{path}:{lineno}: malformed history line ({problems})") from exc
                yield record.user_id, record.history
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryFileError(f"{path}: cannot read histories file: {exc}") from exc


def _describe(loc: tuple[int | str, ...], msg: str) -> str:
    return f"{'.'.join(str(part) for part in loc) or 'line'}: {msg}"


def count_histories(path: Path) -> int:
    """Validate the whole file before any model is loaded, and size the progress bar."""
    return sum(1 for _ in read_histories(path))


@dataclasses.dataclass(frozen=True)
class PrecomputeInput:
    """The users of one precompute run and what identifies them for the resume checkpoint."""

    users: Iterable[tuple[str, list[str]]] | StoredUsers
    job: str | None  # None: no checkpoint (the order of ``users`` is not known to repeat)
    total: int | None  # sizes the progress bar; None when unknown (the store)


def histories_input(path: Path) -> PrecomputeInput:
    """A histories file, validated whole before any model is loaded.

    Its identity is path, size and modification time: a rewritten file is a new job (its
    order may differ, so resuming by position could skip users), an untouched one resumes.
    """
    total = count_histories(path)
    stat = path.stat()
    job = f"histories:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return PrecomputeInput(read_histories(path), job, total)


def store_input() -> PrecomputeInput:
    return PrecomputeInput(StoredUsers(), StoredUsers().job, None)


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


def check_redis(redis_url: str, timeout_s: float) -> None:
    """One PING, so an unreachable REDIS_URL is reported before minutes of model loading."""
    client = SyncRedis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except RedisError as exc:
        raise RuntimeError(f"cannot reach Redis at REDIS_URL: {exc}") from exc
    finally:
        client.close()


def run_precompute(
    settings: Settings,
    users: Iterable[tuple[str, list[str]]] | StoredUsers,
    k: int,
    batch_size: int,
    *,
    recommender: Recommender | None = None,
    total: int | None = None,
    job: str | None = None,
    restart: bool = False,
    only_stale: bool = False,
) -> PrecomputeSummary:
    """Fill REDIS_URL's Redis with each user's top-``k`` (and history); loads the bundle unless given one.

    ``job``, ``restart`` and ``only_stale`` are those of :func:`service.precompute.precompute`;
    raises PrecomputeFailed when the run stops part-way.
    """
    check_precompute_args(settings, k, batch_size)
    assert settings.redis_url is not None
    check_redis(settings.redis_url, settings.redis_timeout_s)
    options = PrecomputeOptions(k, batch_size, total, job, restart, only_stale)
    return asyncio.run(_precompute(settings, settings.redis_url, recommender, users, options))


@dataclasses.dataclass(frozen=True)
class PrecomputeOptions:
    k: int
    batch_size: int
    total: int | None
    job: str | None
    restart: bool
    only_stale: bool


async def _precompute(
    settings: Settings,
    redis_url: str,
    recommender: Recommender | None,
    users: Iterable[tuple[str, list[str]]] | StoredUsers,
    options: PrecomputeOptions,
) -> PrecomputeSummary:
    async with connect(
        settings,
        recommender,
        timeout_s=None,
        remote_timeout_s=settings.precompute_timeout_s,
        max_batch=options.batch_size,
        must_answer=True,
    ) as model:
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        try:
            cache = RecommendationCache(client, model.model_version, settings.cache_ttl_s)
            return await precompute(
                model,
                users,
                cache,
                HistoryStore(client),
                k=options.k,
                batch_size=options.batch_size,
                history_len=settings.history_len,
                total=options.total,
                job=options.job,
                restart=options.restart,
                only_stale=options.only_stale,
            )
        finally:
            await client.aclose()


def precompute_cli(
    open_input: Callable[[], PrecomputeInput],
    k: int | None,
    batch_size: int | None,
    *,
    restart: bool,
    only_stale: bool,
    input_errors: tuple[type[Exception], ...] = (),
    report: Path | None = None,
) -> None:
    """The precompute command's body, shared with ``genrec precompute --data``.

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
        check_precompute_args(settings, k, batch_size)
        source = open_input()
        summary = run_precompute(
            settings,
            source.users,
            k,
            batch_size,
            total=source.total,
            job=source.job,
            restart=restart,
            only_stale=only_stale,
        )
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

    from service.app import create_app

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
    "precompute every user whose history is in Redis (genrec:hist:*), e.g. to refresh a deployment"
)
K_HELP = "list length to cache (default: MAX_K + CACHE_EXTRA, what the API caches on a miss)"
BATCH_SIZE_HELP = "users per engine call (default: PRECOMPUTE_BATCH_SIZE)"
REPORT_HELP = "also write the run's summary as JSON to this file"


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
    histories: Annotated[Path | None, typer.Option(help=HISTORIES_HELP)] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help=FROM_STORE_HELP)] = False,
    k: Annotated[int | None, typer.Option(help=K_HELP)] = None,
    batch_size: Annotated[int | None, typer.Option(help=BATCH_SIZE_HELP)] = None,
    only_stale: Annotated[bool, typer.Option("--only-stale", help=ONLY_STALE_HELP)] = False,
    restart: Annotated[bool, typer.Option("--restart", help=RESTART_HELP)] = False,
    report: Annotated[Path | None, typer.Option(help=REPORT_HELP)] = None,
) -> None:
    """Precompute and cache the top-K of every user of a histories file or of the history store.

    Resumable: run the same command again after an interruption and it continues where it stopped.
    """
    if (histories is None) == (not from_store):
        typer.echo("error: give exactly one of --histories FILE.jsonl or --from-store", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    path = histories
    precompute_cli(
        (lambda: histories_input(path)) if path is not None else store_input,
        k,
        batch_size,
        restart=restart,
        only_stale=only_stale,
        report=report,
    )


if __name__ == "__main__":
    app()
