"""``serve`` and ``precompute`` commands of the online side, both configured from the environment.

``run_precompute`` is the reusable core: another CLI can feed it users from a dataset split
instead of a JSONL file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import redis.asyncio as redis
import typer
from pydantic import BaseModel, Field, ValidationError

from model.recommender import Recommender
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.precompute import PrecomputeSummary, precompute
from service.redis_server import EmbeddedRedis
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_BAD_INPUT = 2
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


def run_precompute(
    settings: Settings,
    users: Iterable[tuple[str, list[str]]],
    k: int,
    batch_size: int,
    *,
    recommender: Recommender | None = None,
    total: int | None = None,
) -> PrecomputeSummary:
    """Fill REDIS_URL's Redis with each user's history and top-``k``; loads the bundle unless given one."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set: precompute needs the Redis server the service will read")
    if not 1 <= k <= settings.max_k:
        raise ValueError(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if recommender is None:
        from service.engine import load_recommender

        recommender = load_recommender(settings)
    return asyncio.run(_precompute(settings, settings.redis_url, recommender, users, k, batch_size, total))


async def _precompute(
    settings: Settings,
    redis_url: str,
    recommender: Recommender,
    users: Iterable[tuple[str, list[str]]],
    k: int,
    batch_size: int,
    total: int | None,
) -> PrecomputeSummary:
    client = redis.Redis.from_url(
        redis_url, socket_timeout=settings.redis_timeout_s, socket_connect_timeout=settings.redis_timeout_s
    )
    try:
        cache = RecommendationCache(client, recommender.model_version, settings.cache_ttl_s)
        return await precompute(
            recommender,
            users,
            cache,
            HistoryStore(client),
            k=k,
            batch_size=batch_size,
            history_len=settings.history_len,
            total=total,
        )
    finally:
        await client.aclose()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


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
    embedded = EmbeddedRedis()
    url = embedded.start()
    logger.info("REDIS_URL not set: using an embedded, non-persistent Redis at %s", url)
    try:
        yield settings.model_copy(update={"redis_url": url})
    finally:
        embedded.stop()


def serve_until_stopped(
    settings: Settings, recommender: Recommender | None = None, user_id: str = "..."
) -> None:
    """Run uvicorn on HOST:PORT until SIGINT/SIGTERM; logs a ready line with a curl for ``user_id``."""
    import uvicorn

    from service.app import create_app

    ready = (
        f"genrec is serving on http://{settings.host}:{settings.port} — try: "
        f"curl 'http://localhost:{settings.port}/v1/recommend?user_id={user_id}&k={settings.default_k}'"
    )
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        create_app(settings, recommender, ready_message=ready),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def serve() -> None:
    """Serve GET /recommend on HOST:PORT; starts an embedded Redis when REDIS_URL is not set."""
    settings = get_settings()
    configure_logging(settings.log_level)
    with redis_available(settings) as settings:
        serve_until_stopped(settings)


@app.command("precompute")
def precompute_command(
    histories: Annotated[Path, typer.Option(help=HISTORIES_HELP)],
    k: Annotated[int | None, typer.Option(help="list length to cache (default: MAX_K)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="users per engine call (default: settings)")] = None,
) -> None:
    """Precompute and cache the top-K of every user in a histories file."""
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        total = count_histories(histories)
        summary = run_precompute(
            settings,
            read_histories(histories),
            k if k is not None else settings.max_k,
            batch_size if batch_size is not None else settings.precompute_batch_size,
            total=total,
        )
    except (HistoryFileError, ValueError, RuntimeError) as exc:
        logger.error("%s", exc)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    typer.echo(
        f"cached top-{k or settings.max_k} for {summary.cached}/{summary.users} users "
        f"in {summary.wall_s:.1f}s ({summary.users_per_s:.1f} users/s)"
    )


if __name__ == "__main__":
    app()
