"""``genrec migrate-keys``: the per-user keys of earlier releases renamed to the hash-tagged scheme.

Before ``service.keys`` gave every per-user key the user's hash tag, genrec wrote

    genrec:hist:<user>                   ->  genrec:{<user>}:hist
    genrec:hist_ts:<user>                ->  genrec:{<user>}:hist_ts
    genrec:<model_version>:topk:<user>   ->  genrec:{<user>}:<model_version>:topk
    genrec:<model_version>:stale:<user>  ->  genrec:{<user>}:<model_version>:stale

One SCAN over ``genrec:*`` finds them (every master's keys, on a cluster), page by page. Each
old key is moved only while its new name is free: a new key is never overwritten (it is newer
than the old one: the new release wrote it), the old one is then left in place and counted.
So the command is idempotent: a second run finds nothing left to move. Keys that are not per
user (``genrec:<model_version>:similar:<item>``, precompute checkpoints) kept their form. A
model version holding ``:`` is not recognised in an old list's key; such lists are left to
expire (CACHE_TTL_S) and are recomputed on demand, histories are always recognised.

On a single Redis a move is RENAMENX, in a script that first checks the old key still exists
(SCAN may return a key twice). On a Redis Cluster the old and the new name of a key are in
different hash slots, where RENAME is refused (CROSSSLOT): the value is copied with
DUMP/RESTORE (its TTL kept) and the old key deleted after. A run stopped in between leaves both;
the next run finds the new key equal to the old one's dump and completes the move.

The order of operations (README, "Running at scale"): stop the old release's API, or accept
that events it records meanwhile are left under old keys; run ``genrec migrate-keys``; start
the new release (a second run after the switch moves any stragglers).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.history import as_text
from service.keys import PREFIX, history_key, stale_key, times_key, topk_key
from service.redis_client import RedisClient

logger = logging.getLogger(__name__)

SCAN_PATTERN = PREFIX + ":*"
PAGE_SIZE = 1000  # keys moved per pipelined round trip (and SCAN's COUNT hint)
PROGRESS_EVERY_S = 10.0
OLD_HISTORY = PREFIX + ":hist:"
OLD_TIMES = PREFIX + ":hist_ts:"
# genrec:<model_version>:topk|stale:<user>; a version never starts with "{" (a new-scheme key does)
OLD_LIST = re.compile(r"genrec:(?P<version>[^:{][^:]*):(?P<kind>topk|stale):(?P<user>.+)", re.DOTALL)

# KEYS: old, new. 0: the old key is gone (moved by an earlier page), 1: renamed, 2: new name taken.
MOVE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return 2 - redis.call('RENAMENX', KEYS[1], KEYS[2])
"""


class Outcome(Enum):
    GONE = 0
    MOVED = 1
    TAKEN = 2


@dataclass
class MigrationSummary:
    """What one run did (or, with ``dry_run``, would do)."""

    dry_run: bool
    scanned: int = 0  # keys under genrec:* seen by the SCAN
    moved: Counter[str] = field(default_factory=Counter)  # by kind: hist, hist_ts, topk, stale
    taken: int = 0  # old keys left in place: their new name exists already
    wall_s: float = 0.0

    def describe(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.moved.items())) or "none"
        verb = "would be renamed" if self.dry_run else "renamed"
        return (
            f"migrate-keys{' (dry run)' if self.dry_run else ''}: {self.scanned} keys scanned, "
            f"{self.moved.total()} {verb} ({kinds}), {self.taken} left in place because their new name "
            f"exists already; {self.wall_s:.1f}s"
        )


def new_name(old: str) -> tuple[str, str] | None:
    """``(kind, new key)`` for a key of the old scheme; None for any other key (a new one, a
    per-item or checkpoint key, a model version with ``:``, an empty user id)."""
    try:
        if old.startswith(OLD_TIMES):
            return "hist_ts", times_key(old[len(OLD_TIMES) :])
        if old.startswith(OLD_HISTORY):
            return "hist", history_key(old[len(OLD_HISTORY) :])
    except ValueError:  # an empty user id: not a key genrec could have written
        return None
    match = OLD_LIST.fullmatch(old)
    if match is None:
        return None
    to_key = topk_key if match["kind"] == "topk" else stale_key
    return match["kind"], to_key(match["version"], match["user"])


async def migrate_keys(client: RedisClient, *, dry_run: bool = False) -> MigrationSummary:
    """Rename every key of the old scheme (see the module docstring); progress in the log."""
    summary = MigrationSummary(dry_run=dry_run)
    started = last_log = time.monotonic()
    page: list[tuple[str, str, str]] = []  # (kind, old, new)
    async for raw in client.scan_iter(match=SCAN_PATTERN, count=PAGE_SIZE):
        summary.scanned += 1
        key = as_text(raw)
        if (target := new_name(key)) is not None:
            page.append((target[0], key, target[1]))
        if len(page) >= PAGE_SIZE:
            await _move_page(client, page, summary)
            page = []
        if time.monotonic() - last_log >= PROGRESS_EVERY_S:
            last_log = time.monotonic()
            logger.info(
                "migrate-keys: %d keys scanned, %d renamed so far", summary.scanned, summary.moved.total()
            )
    await _move_page(client, page, summary)
    summary.wall_s = time.monotonic() - started
    logger.debug("%s", summary.describe())  # DEBUG: the CLI prints the summary as its result
    return summary


async def _move_page(
    client: RedisClient, page: Sequence[tuple[str, str, str]], summary: MigrationSummary
) -> None:
    if not page:
        return
    pairs = [(old, new) for _, old, new in page]
    if summary.dry_run:
        outcomes = await _would_move(client, pairs)
    elif isinstance(client, RedisCluster):
        outcomes = await _copy_across_slots(client, pairs)
    else:
        outcomes = await _rename(client, pairs)
    for (kind, old, new), outcome in zip(page, outcomes, strict=True):
        if outcome is Outcome.MOVED:
            summary.moved[kind] += 1
        elif outcome is Outcome.TAKEN:
            summary.taken += 1
            logger.warning("left %s in place: %s exists already", old, new)


async def _would_move(client: RedisClient, pairs: Sequence[tuple[str, str]]) -> list[Outcome]:
    async with client.pipeline(transaction=False) as pipe:
        for old, new in pairs:
            pipe.exists(old)
            pipe.exists(new)
        found = await pipe.execute()
    return [
        Outcome.GONE if not old else Outcome.TAKEN if new else Outcome.MOVED
        for old, new in zip(found[::2], found[1::2], strict=True)
    ]


async def _rename(client: redis.Redis, pairs: Sequence[tuple[str, str]]) -> list[Outcome]:
    """A single Redis: one RENAMENX script per key, a page per round trip."""
    move = client.register_script(MOVE_SCRIPT)
    async with client.pipeline(transaction=False) as pipe:
        for old, new in pairs:
            await move(keys=[old, new], client=pipe)
        return [Outcome(int(code)) for code in await pipe.execute()]


async def _copy_across_slots(client: RedisCluster, pairs: Sequence[tuple[str, str]]) -> list[Outcome]:
    """A cluster: DUMP and PTTL the old keys, RESTORE them under the new names (never
    replacing), delete the old ones that were restored or whose new name already holds the same
    value (the move of a run stopped half-way)."""
    async with client.pipeline(transaction=False) as pipe:
        for old, _ in pairs:
            pipe.dump(old)
            pipe.pttl(old)
        dumped = await pipe.execute()
    payloads = list(zip(dumped[::2], dumped[1::2], strict=True))
    async with client.pipeline(transaction=False) as pipe:
        for (_, new), (payload, pttl) in zip(pairs, payloads, strict=True):
            if payload is not None:
                pipe.restore(new, max(int(pttl), 0), payload)
        restored = iter(await pipe.execute(raise_on_error=False))
    outcomes: list[Outcome] = []
    busy: list[int] = []
    for n, (payload, _) in enumerate(payloads):
        reply = next(restored) if payload is not None else None
        if payload is None:
            outcomes.append(Outcome.GONE)
        elif isinstance(reply, ResponseError):
            if not str(reply).startswith("BUSYKEY"):
                raise reply
            outcomes.append(Outcome.TAKEN)
            busy.append(n)
        else:
            outcomes.append(Outcome.MOVED)
    if busy:
        async with client.pipeline(transaction=False) as pipe:
            for n in busy:
                pipe.dump(pairs[n][1])
            for n, present in zip(busy, await pipe.execute(), strict=True):
                if present == payloads[n][0]:
                    outcomes[n] = Outcome.MOVED
    async with client.pipeline(transaction=False) as pipe:
        for (old, _), outcome in zip(pairs, outcomes, strict=True):
            if outcome is Outcome.MOVED:
                pipe.delete(old)
        await pipe.execute()
    return outcomes
