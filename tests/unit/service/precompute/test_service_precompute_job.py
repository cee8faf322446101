"""The precompute job on a real Redis: batches, resume from the checkpoint, only-stale, the store,
and ``run_precompute`` from the settings. The tests marked ``cluster`` run again on a real
three-master Redis Cluster, where a batch is one transaction per hash slot and the checkpoint
is written after them (service/precompute/checkpoint.py).

The engine is the in-test HashRecommender (deterministic per history); a subclass fails or
blocks on a chosen call to stand in for an engine error or a Ctrl-C mid-run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aredis
from redis.exceptions import RedisError
from service_fakes import HashRecommender, command_calls, open_client, sync_client

from model.catalog import Catalog
from model.recommender import ScoredItem
from service.api.app import create_app
from service.cache import CachedList, RecommendationCache, decode_entry
from service.history import HistoryStore, usable_history
from service.keys import checkpoint_key as key_of_checkpoint
from service.keys import history_key, topk_key
from service.precompute.checkpoint import Checkpoint, job_fingerprint
from service.precompute.job import PrecomputeFailed, PrecomputeSummary, precompute, run_precompute
from service.precompute.sources import STORE_JOB, Source
from service.settings import Settings

JOB = "histories:/data/h.jsonl:1234:5678"


class FailingRecommender(HashRecommender):
    """Raises on its ``fail_on``-th engine call (1-based), like an engine that dies mid-run."""

    def __init__(self, catalog: Catalog, fail_on: int) -> None:
        super().__init__(catalog)
        self.fail_on = fail_on

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        if len(self.calls) + 1 == self.fail_on:
            self.calls.append([])  # counted, not served
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().recommend(histories, k)


class BlockingRecommender(HashRecommender):
    """Blocks its ``block_on``-th call until released, so a test can cancel the run inside it."""

    def __init__(self, catalog: Catalog, block_on: int) -> None:
        super().__init__(catalog)
        self.block_on = block_on
        self.entered = threading.Event()
        self.release = threading.Event()

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        if len(self.calls) + 1 == self.block_on:
            self.entered.set()
            self.release.wait(timeout=10)
        return super().recommend(histories, k)


class HistoryChangingRecommender(HashRecommender):
    """Appends to ``user_id``'s history while computing, as a live ``POST /events`` would."""

    def __init__(self, catalog: Catalog, redis_url: str, user_id: str) -> None:
        super().__init__(catalog)
        self._url = redis_url
        self._user_id = user_id

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        with sync_client(self._url) as client:
            client.rpush(history_key(self._user_id), "i29")
        return super().recommend(histories, k)


def make_users(n: int, prefix: str = "u") -> list[tuple[str, list[str]]]:
    """Distinct histories for n < 60 users (start item and length both vary)."""
    return [(f"{prefix}{u}", [f"i{(u + j) % 30}" for j in range(u % 4 + 1)]) for u in range(n)]


def engine_saw(recommender: HashRecommender) -> list[list[str]]:
    return [history for call in recommender.calls for history in call]


def expected_entry(recommender: HashRecommender, history: list[str], k: int, history_len: int) -> CachedList:
    known, _ = usable_history(history, recommender.catalog, history_len)
    return CachedList.of(recommender.top_k(known, k), history)


async def run(
    recommender: HashRecommender,
    users: list[tuple[str, list[str]]] | Source,
    cache: RecommendationCache,
    history: HistoryStore,
    *,
    batch_size: int = 10,
    k: int = 20,
    job: str | None = JOB,
    restart: bool = False,
    only_stale: bool = False,
) -> PrecomputeSummary:
    source = users if isinstance(users, Source) else Source(iter(users), job)
    return await precompute(
        recommender,
        source,
        cache,
        history,
        k=k,
        batch_size=batch_size,
        history_len=5,
        restart=restart,
        only_stale=only_stale,
    )


def checkpoint_key(k: int = 20, job: str = JOB) -> str:
    return key_of_checkpoint("test-v1", job_fingerprint(job, k, 5))


async def test_precompute_caches_every_user_one_engine_call_and_one_transaction_per_batch(
    redis_client: aredis.Redis,
    recommender: HashRecommender,
    cache: RecommendationCache,
    history: HistoryStore,
) -> None:
    users = make_users(23)
    execs = await command_calls(redis_client, "exec")
    summary = await run(recommender, users, cache, history, job=None)
    assert (summary.users, summary.batches, summary.cached, summary.skipped_users) == (23, 3, 23, 0)
    assert summary.users_per_s > 0
    assert [len(call) for call in recommender.calls] == [10, 10, 3]  # one model call per batch
    # Per batch one script merges the histories and one MULTI writes the lists (+ checkpoint).
    assert await command_calls(redis_client, "exec") - execs == 3
    for user_id, items in users:
        # Read back through the cache's own reader: precompute writes the format it parses.
        assert await cache.get(user_id) == expected_entry(recommender, items, 20, 5)
        assert await history.get(user_id, 100) == items


@pytest.mark.cluster
async def test_users_without_known_items_are_stored_not_modelled(
    cache: RecommendationCache, recommender: HashRecommender, history: HistoryStore
) -> None:
    users = [("a", ["i1", "nope"]), ("b", ["nope", "never"]), ("c", [])]
    summary = await run(recommender, users, cache, history, k=5, batch_size=64)
    assert (summary.users, summary.batches, summary.cached, summary.skipped_users) == (3, 1, 1, 2)
    assert summary.skipped_unknown_items == 3
    assert recommender.calls == [[["i1"]]]
    assert await cache.get("b") is None
    assert await history.get("b", 10) == ["nope", "never"]


@pytest.mark.cluster
async def test_resume_after_an_engine_failure_redoes_nothing_and_skips_no_one(
    redis_client: aredis.Redis,
    catalog: Catalog,
    cache: RecommendationCache,
    history: HistoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = make_users(50)
    failing = FailingRecommender(catalog, fail_on=3)
    with pytest.raises(
        PrecomputeFailed, match=r"CUDA error.* after 20 users; run the same command again"
    ) as info:
        await run(failing, users, cache, history)
    assert (info.value.users_done, info.value.resumable) == (20, True)
    # The checkpoint moved with the lists: exactly the first two batches are cached.
    assert await redis_client.hget(checkpoint_key(), "users_done") == b"20"
    assert 0 < await redis_client.ttl(checkpoint_key()) <= cache.ttl_s
    assert [await cache.get(u) is not None for u, _ in users] == [True] * 20 + [False] * 30

    healthy = HashRecommender(catalog)
    with caplog.at_level(logging.INFO, logger="service.precompute.job"):
        summary = await run(healthy, users, cache, history)
    assert "resuming after 20 users" in caplog.text
    assert engine_saw(healthy) == [items for _, items in users[20:]]  # only the remaining users
    assert (summary.resumed, summary.users, summary.cached, summary.batches) == (20, 30, 30, 3)
    for user_id, items in users:
        assert await cache.get(user_id) == expected_entry(healthy, items, 20, 5)
    # A finished run leaves no checkpoint: the next run of the same job starts over.
    assert not await redis_client.exists(checkpoint_key())
    again = HashRecommender(catalog)
    assert (await run(again, users, cache, history)).resumed == 0
    assert len(engine_saw(again)) == 50


@pytest.mark.cluster
async def test_a_checkpoint_write_that_fails_leaves_it_behind_its_lists_never_ahead(
    redis_url: str,
    redis_client: aredis.Redis,
    catalog: Catalog,
    cache: RecommendationCache,
    history: HistoryStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis fails as the second batch's checkpoint is written. On a single Redis the lists
    share its transaction and are not written either; on a cluster they were written before it
    (they are in other hash slots), so the checkpoint lags one batch, which the resumed run
    writes again, to the same lists."""
    users = make_users(30)
    advance = Checkpoint.queue_advance
    calls = []

    def fail_second(self: Checkpoint, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RedisError("connection lost")
        advance(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpoint, "queue_advance", fail_second)
    with pytest.raises(PrecomputeFailed, match="connection lost"):
        await run(HashRecommender(catalog), users, cache, history)
    monkeypatch.setattr(Checkpoint, "queue_advance", advance)
    assert await redis_client.hget(checkpoint_key(), "users_done") == b"10"
    written = [await cache.get(u) is not None for u, _ in users]
    batches_written = 2 if redis_url.startswith("redis+cluster://") else 1
    assert written == [True] * 10 * batches_written + [False] * (30 - 10 * batches_written)

    healthy = HashRecommender(catalog)
    summary = await run(healthy, users, cache, history)
    assert (summary.resumed, summary.cached) == (10, 20)
    assert engine_saw(healthy) == [items for _, items in users[10:]]
    for user_id, items in users:
        assert await cache.get(user_id) == expected_entry(healthy, items, 20, 5)


@pytest.mark.cluster
async def test_a_cancelled_run_resumes_after_the_last_written_batch(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore
) -> None:
    """Ctrl-C cancels the run inside an engine call: that batch is redone, no other."""
    users = make_users(35)
    blocking = BlockingRecommender(catalog, block_on=3)
    task = asyncio.create_task(run(blocking, users, cache, history))
    assert await asyncio.to_thread(blocking.entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    blocking.release.set()

    healthy = HashRecommender(catalog)
    summary = await run(healthy, users, cache, history)
    assert summary.resumed == 20
    assert engine_saw(healthy) == [items for _, items in users[20:]]
    assert all([await cache.get(u) is not None for u, _ in users])


@pytest.mark.cluster
async def test_restart_ignores_the_checkpoint_and_k_is_part_of_the_job(
    redis_client: aredis.Redis, catalog: Catalog, cache: RecommendationCache, history: HistoryStore
) -> None:
    users = make_users(30)
    with pytest.raises(PrecomputeFailed):
        await run(FailingRecommender(catalog, fail_on=2), users, cache, history)
    assert await redis_client.exists(checkpoint_key())

    other_k = HashRecommender(catalog)
    assert (await run(other_k, users, cache, history, k=10)).resumed == 0  # another job
    assert len(engine_saw(other_k)) == 30
    assert await redis_client.exists(checkpoint_key())  # the k=20 job's checkpoint is untouched

    restarted = HashRecommender(catalog)
    summary = await run(restarted, users, cache, history, restart=True)
    assert (summary.resumed, summary.users, summary.cached) == (0, 30, 30)
    assert engine_saw(restarted) == [items for _, items in users]
    assert not await redis_client.exists(checkpoint_key())


@pytest.mark.cluster
async def test_only_stale_skips_fresh_users_and_recomputes_invalidated_ones(
    redis_client: aredis.Redis,
    recommender: HashRecommender,
    cache: RecommendationCache,
    history: HistoryStore,
) -> None:
    users = make_users(20)
    await run(recommender, users, cache, history, job=None)
    for user_id in ("u3", "u11", "u17"):
        await cache.invalidate(user_id)
    newcomers = make_users(2, prefix="new")
    recommender.calls.clear()
    exists_before = await command_calls(redis_client, "exists")

    summary = await run(recommender, users + newcomers, cache, history, job=None, only_stale=True)
    assert (summary.users, summary.skipped_fresh, summary.cached) == (22, 17, 5)
    assert summary.users == summary.skipped_fresh + summary.cached + summary.skipped_users + summary.changed
    stale = [items for user_id, items in users + newcomers if user_id in {"u3", "u11", "u17", "new0", "new1"}]
    assert sorted(engine_saw(recommender)) == sorted(stale)
    assert await command_calls(redis_client, "exists") - exists_before == 22
    for user_id, items in users + newcomers:
        assert await cache.get(user_id) == expected_entry(recommender, items, 20, 5)
    assert "17 skipped as fresh" in summary.describe()


@pytest.mark.cluster
async def test_from_store_covers_every_stored_user_over_many_scan_pages(
    redis_client: aredis.Redis,
    recommender: HashRecommender,
    cache: RecommendationCache,
    history: HistoryStore,
) -> None:
    users = make_users(50, prefix="a") + make_users(50, prefix="b") + make_users(50, prefix="c")
    await history.set_many(dict(users))
    await redis_client.set(topk_key("other-v0", "zz"), "[]")  # not a history: never scanned in
    await redis_client.rpush("genrec:hist:old", "i1")  # a key of the scheme before migrate-keys: neither
    scans = await command_calls(redis_client, "scan")

    summary = await run(recommender, Source.from_store(), cache, history, batch_size=16)
    assert await command_calls(redis_client, "scan") - scans > 1
    assert summary.batches > 1
    assert summary.cached >= 150  # SCAN may return a key twice, never misses one
    assert {tuple(h) for h in engine_saw(recommender)} == {tuple(items[-5:]) for _, items in users}
    assert max(len(call) for call in recommender.calls) < 2 * 16
    for user_id, items in users:
        assert await cache.get(user_id) == expected_entry(recommender, items, 20, 5)
    assert await history.get_all("a7") == dict(users)["a7"]  # the store is read, not rewritten
    assert not await redis_client.exists(checkpoint_key(job=STORE_JOB))


@pytest.mark.cluster
async def test_from_store_resumes_from_the_scan_cursor(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore
) -> None:
    users = make_users(50, prefix="a") + make_users(50, prefix="b")
    await history.set_many(dict(users))
    with pytest.raises(PrecomputeFailed) as info:
        await run(FailingRecommender(catalog, fail_on=3), Source.from_store(), cache, history, batch_size=16)
    done = info.value.users_done  # whole SCAN pages: 16 to 31 users per batch
    cached_first = sum([await cache.get(u) is not None for u, _ in users])
    assert 16 <= cached_first <= done < len(users)  # done may count a key SCAN returned twice

    healthy = HashRecommender(catalog)
    summary = await run(healthy, Source.from_store(), cache, history, batch_size=16)
    assert summary.resumed == done
    assert len(engine_saw(healthy)) < len(users)  # the first run's batches are not redone
    for user_id, items in users:
        assert await cache.get(user_id) == expected_entry(healthy, items, 20, 5)


@pytest.mark.cluster
async def test_from_store_does_not_write_over_a_history_that_changed_meanwhile(
    redis_url: str, catalog: Catalog, cache: RecommendationCache, history: HistoryStore
) -> None:
    """An event appended while the batch computes invalidated that user: the old list is not written."""
    users = make_users(8)
    await history.set_many(dict(users))
    changing = HistoryChangingRecommender(catalog, redis_url, "u3")
    summary = await run(changing, Source.from_store(), cache, history, batch_size=64)
    assert (summary.users, summary.cached, summary.changed) == (8, 7, 1)
    assert await cache.get("u3") is None
    assert await cache.get("u4") is not None


@pytest.mark.cluster
async def test_a_histories_file_never_erases_events_the_api_accepted(
    recommender: HashRecommender, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    """The file seeds users without a stored history and extends a stored prefix of its own;
    any other stored history (events beyond or apart from the file) is kept as it is."""
    async with open_client(create_app(settings, recommender)) as http:
        events = [{"user_id": "a", "item_id": "i7"}, {"user_id": "c", "item_id": "i9"}]
        assert (await http.post("/v1/events", json={"events": events})).status_code == 200
    await history.set_many({"b": ["i1"]})  # a prefix of b's file history
    users = [("a", ["i1", "i2"]), ("b", ["i1", "i2", "i3"]), ("c", ["i9"]), ("d", ["i4"])]
    for restart in (False, True):
        summary = await run(recommender, users, cache, history, job=None, restart=restart)
        assert summary.kept_stored == 1  # a: its event is not in the file
        assert await history.get_all("a") == ["i7"]
        assert await history.get_all("b") == ["i1", "i2", "i3"]
        assert await history.get_all("c") == ["i9"]
        assert await history.get_all("d") == ["i4"]
        # the lists are computed from what the store holds, not from the file
        assert await cache.get("a") == expected_entry(recommender, ["i7"], 20, 5)


@pytest.mark.cluster
async def test_events_landing_during_a_file_run_are_kept_and_their_user_left_to_on_demand(
    redis_url: str, catalog: Catalog, cache: RecommendationCache, history: HistoryStore
) -> None:
    users = make_users(8)
    changing = HistoryChangingRecommender(catalog, redis_url, "u3")
    summary = await run(changing, users, cache, history, batch_size=64)
    assert (summary.users, summary.cached, summary.changed) == (8, 7, 1)
    assert await history.get_all("u3") == [*dict(users)["u3"], "i29"]
    assert await cache.get("u3") is None  # a list from the history before the event is not written
    # Run again: u3's history (file + event) is kept and now cached, with the event in it.
    healthy = HashRecommender(catalog)
    again = await run(healthy, users, cache, history, batch_size=64, restart=True)
    assert again.kept_stored == 1
    assert await cache.get("u3") == expected_entry(healthy, [*dict(users)["u3"], "i29"], 20, 5)


@pytest.mark.cluster
async def test_seeding_respects_the_history_cap(redis_client: aredis.Redis) -> None:
    capped = HistoryStore(redis_client, max_len=3)
    assert await capped.seed_many({"u": ["i1", "i2", "i3", "i4"]}) == 0
    assert await capped.get_all("u") == ["i2", "i3", "i4"]
    assert await capped.seed_many({"u": ["i1", "i2", "i3", "i4"]}) == 0  # the same source: no change
    await capped.append("u", ["i5"])
    assert await capped.seed_many({"u": ["i1", "i2", "i3", "i4"]}) == 1
    assert await capped.get_all("u") == ["i3", "i4", "i5"]


@pytest.mark.cluster
async def test_precomputed_lists_are_served_from_cache_and_match_on_demand(
    cache: RecommendationCache, recommender: HashRecommender, history: HistoryStore, settings: Settings
) -> None:
    users = make_users(12)
    await run(recommender, users, cache, history, batch_size=5, job=None)
    async with open_client(create_app(settings, recommender)) as http:
        for user_id, _ in users:
            body = (await http.get("/v1/recommend", params={"user_id": user_id, "k": 10})).json()
            assert body["source"] == "cache"
        cached = (await http.get("/v1/recommend", params={"user_id": "u7", "exclude_seen": "false"})).json()

        # A miss recomputed on demand from the stored history gives the same list.
        await cache.invalidate("u7")
        fresh = (await http.get("/v1/recommend", params={"user_id": "u7", "exclude_seen": "false"})).json()
    assert fresh["source"] == "model"
    assert [i["item_id"] for i in fresh["items"]] == [i["item_id"] for i in cached["items"]]


@pytest.mark.cluster
def test_run_precompute_fills_redis(tmp_path: Path, redis_url: str, recommender: HashRecommender) -> None:
    users = [("u1", ["i1", "i2"]), ("u2", ["i3"])]
    settings = Settings(redis_url=redis_url, max_k=20, cache_ttl_s=60)
    summary = run_precompute(settings, Source(users, None), 5, 8, recommender=recommender)
    assert (summary.users, summary.cached, summary.batches) == (2, 2, 1)
    with sync_client(redis_url) as client:
        raw = client.get(topk_key(recommender.model_version, "u1"))
    assert isinstance(raw, bytes) and len(decode_entry(raw).items) == 5


def test_run_precompute_needs_redis_url_and_valid_k(recommender: HashRecommender, redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="REDIS_URL is not set"):
        run_precompute(Settings(redis_url=None), Source([], None), 5, 8, recommender=recommender)
    with pytest.raises(ValueError, match=r"k must be between 1 and 30 \(MAX_K \+ CACHE_EXTRA"):
        run_precompute(Settings(redis_url=redis_url), Source([], None), 31, 8, recommender=recommender)
