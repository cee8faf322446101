"""Where a precompute run's users come from, and how they are cut into batches.

A ``Source`` is either an iterable of ``(user_id, history)`` (a histories file, a dataset:
their histories are stored too, so a later cache miss can be recomputed, and the position in
the input is the checkpoint) or the history store itself (``Source.from_store()``: SCAN over
``genrec:{*}:hist``, the SCAN cursor is the checkpoint), which is how a running deployment
refreshes all its users. On a Redis Cluster SCAN runs node by node (each master holds its own
keys), and the checkpoint is the node and its cursor.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio.cluster import RedisCluster

from service.history import as_text
from service.keys import HISTORY_PATTERN, user_of_history_key
from service.precompute.checkpoint import Progress
from service.redis_client import RedisClient

logger = logging.getLogger(__name__)

User = tuple[str, list[str]]
# The store's identity in the checkpoint fingerprint: the keys it scans, so a cursor into
# another key scheme (before ``genrec migrate-keys``) is never resumed.
STORE_JOB = f"store:{HISTORY_PATTERN}"
# SCAN's cursor is 0 both at the start and at the end of a full iteration; a checkpoint must
# tell "nothing done" from "all done" (a crash between the last batch and clearing it).
SCAN_DONE = "done"


@dataclass(frozen=True)
class Source:
    """The users of one precompute run and what identifies them for the resume checkpoint.

    ``users`` None: every user with a history in Redis, whose histories are read, not written
    (they are the live state of the deployment); the store is always checkpointed.
    """

    users: Iterable[User] | None
    job: str | None  # None: no checkpoint (the order of ``users`` is not known to repeat)
    total: int | None = None  # sizes the progress bar; None when unknown (the store)

    @classmethod
    def from_store(cls) -> Source:
        return cls(None, STORE_JOB)


class HistoryLine(BaseModel):
    """One line of a histories JSONL file."""

    user_id: str = Field(min_length=1)
    history: list[str]


class HistoryFileError(ValueError):
    """A histories file cannot be read; the message names the file and line."""


def read_histories(path: Path) -> Iterator[User]:
    """Stream ``(user_id, history)`` from JSONL; blank lines are skipped, bad ones raise HistoryFileError."""
    try:
        with path.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, start=1):
                if line.strip():
                    yield parse_history_line(line, f"{path}:{lineno}")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryFileError(f"{path}: cannot read histories file: {exc}") from exc


def parse_history_line(line: str | bytes, where: str) -> User:
    """One JSONL line as ``(user_id, history)``; HistoryFileError naming ``where`` (file:line)."""
    try:
        record = HistoryLine.model_validate_json(line)
    except ValidationError as exc:
        problems = "; ".join(_describe(err["loc"], err["msg"]) for err in exc.errors())
        raise HistoryFileError(f"{where}: malformed history line ({problems})") from exc
    return record.user_id, record.history


def _describe(loc: tuple[int | str, ...], msg: str) -> str:
    return f"{'.'.join(str(part) for part in loc) or 'line'}: {msg}"


def count_histories(path: Path) -> int:
    """Validate the whole file before any model is loaded, and size the progress bar."""
    return sum(1 for _ in read_histories(path))


def histories_file(path: Path) -> Source:
    """A histories file, validated whole before any model is loaded.

    Its identity is path, size and modification time: a rewritten file is a new job (its
    order may differ, so resuming by position could skip users), an untouched one resumes.
    """
    total = count_histories(path)
    stat = path.stat()
    job = f"histories:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return Source(read_histories(path), job, total)


def user_batches(users: Iterable[User], size: int) -> Iterator[list[User]]:
    """Consecutive lists of ``size`` users (the last may be shorter), read lazily."""
    iterator = iter(users)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class Batch:
    """Users of one batch and the checkpoint position once they are done.

    ``histories`` is None for store users: their histories are read from Redis at batch time.
    """

    user_ids: list[str]
    position: str
    histories: dict[str, list[str]] | None


def batches(client: RedisClient, source: Source, size: int, start: Progress | None) -> AsyncIterator[Batch]:
    """The source's batches of about ``size`` users, after ``start`` (an earlier run's progress)."""
    if source.users is None:
        return store_batches(client, size, start)
    return iterable_batches(source.users, size, start)


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


async def store_batches(client: RedisClient, size: int, start: Progress | None) -> AsyncIterator[Batch]:
    """Batches of the users in the history store, whole SCAN pages at a time (never KEYS).

    A batch ends on a page boundary so its position is a SCAN cursor, which resumes exactly:
    SCAN returns every key that exists for the whole iteration, and a cursor from an earlier
    connection continues it. Pages are gathered until ``size`` users, so a batch holds between
    ``size`` and about twice that many users.
    """
    if start is not None and start.position == SCAN_DONE:
        return
    pages = (
        _cluster_pages(client, size, start.position if start else None)
        if isinstance(client, RedisCluster)
        else _pages(client, size, start.position if start else None)
    )
    pending: list[str] = []
    # A full batch is held back until the next page is read: when the scan ends with no more
    # users, it is the last batch and says so (SCAN_DONE), so the checkpoint records the end.
    held: Batch | None = None
    async for keys, position in pages:
        pending.extend(user for key in keys if (user := user_of_history_key(as_text(key))) is not None)
        if position == SCAN_DONE:
            if pending:
                if held is not None:
                    yield held
                yield Batch(pending, SCAN_DONE, None)
            elif held is not None:
                yield Batch(held.user_ids, SCAN_DONE, None)
            return
        if len(pending) >= size:
            if held is not None:
                yield held
            held = Batch(pending, position, None)
            pending = []
    if held is not None:
        yield held


Page = tuple[list[bytes | str], str]  # the keys of one SCAN page, and the position after it


async def _pages(client: RedisClient, size: int, position: str | None) -> AsyncIterator[Page]:
    """A single Redis's SCAN pages; the position is the cursor."""
    cursor = int(position) if position else 0
    while True:
        cursor, keys = await client.scan(cursor, match=HISTORY_PATTERN, count=size)
        yield keys, str(cursor) if cursor else SCAN_DONE
        if not cursor:
            return


async def _cluster_pages(client: RedisCluster, size: int, position: str | None) -> AsyncIterator[Page]:
    """A cluster's SCAN pages, one master after the other in name order; the position is
    ``<master host:port>/<cursor>``. A checkpoint naming a master the cluster no longer has
    (a failover, a new topology) cannot be resumed: the scan starts over, with a warning."""
    await client.initialize()
    masters = sorted(client.get_primaries(), key=lambda node: node.name)
    names = [node.name for node in masters]
    first, cursor = 0, 0
    if position:
        name, _, at = position.rpartition("/")
        if name in names:
            first, cursor = names.index(name), int(at)
        else:
            logger.warning(
                "the checkpoint's master %s is not in the cluster %s: scanning from the start", name, names
            )
    for n in range(first, len(masters)):
        while True:
            reply = await client.scan(cursor, match=HISTORY_PATTERN, count=size, target_nodes=masters[n])
            cursors, keys = cast("tuple[dict[str, int], list[bytes | str]]", reply)  # a cursor per node
            cursor = cursors[names[n]]
            if cursor:
                yield keys, f"{names[n]}/{cursor}"
                continue
            yield keys, f"{names[n + 1]}/0" if n + 1 < len(masters) else SCAN_DONE
            break
