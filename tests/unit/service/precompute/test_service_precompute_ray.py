"""``genrec precompute --ray`` on a real local Ray (2 CPUs, 2 workers), a real Redis and a real
engine: the transformers one over a tiny random Llama in a real bundle, one per worker.

A worker is killed mid-run (``os._exit`` inside an engine call, the first time only), with
restarts off, so the job fails part-way; the same job run again resumes: every user ends up
cached exactly once with the list the engine gives in process, and no batch written before the
kill is written again.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aredis
from service_fakes import make_catalog

from model.bundle import CATALOG, MODEL_DIR, TRIE, load_bundle, write_manifest
from model.prompts import next_item_prompt
from model.recommender import RankRequest, Recommender, ScoredItem
from model.trie import CompiledTrie
from service.cache import CachedList, decode_entry
from service.history import usable_history
from service.keys import done_batches_key, history_key, topk_key
from service.precompute.checkpoint import job_fingerprint
from service.precompute.job import PrecomputeFailed
from service.precompute.ray_input import plan_input
from service.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray")

VERSION = "tiny-ray"
USERS = 40
BATCH = 5
K = 5
HISTORY_LEN = 5


def build_tiny_bundle(root: Path) -> Path:
    """A servable bundle: a tiny random Llama with the catalog's semantic-ID tokens, its trie."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.base_model import add_sid_tokens, build_tiny_model

    catalog = make_catalog()
    items = list(catalog)
    corpus = [item.title for item in items] + [
        next_item_prompt(items[i : i + 3], catalog.scheme) for i in range(len(items))
    ]
    base = build_tiny_model(root.parent / "base", corpus, vocab_size=400, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme)
    with torch.no_grad():  # spread the new rows so that items score clearly apart
        weight = model.get_input_embeddings().weight
        noise = torch.randn(len(sid_ids), weight.shape[1], generator=torch.Generator().manual_seed(1))
        weight[sid_ids] += noise
    model.save_pretrained(root / MODEL_DIR, safe_serialization=True)
    tokenizer.save_pretrained(root / MODEL_DIR)
    catalog.save(root / CATALOG)
    CompiledTrie.build([item.sid for item in catalog]).save(root / TRIE)
    write_manifest(root, version=VERSION, base_model="tiny", catalog=catalog, with_titles=True)
    return root


def tiny_engine(bundle_dir: Path) -> Recommender:
    """The transformers engine over the bundle, one thread (the two workers share two cores)."""
    import torch

    from model.hf_engine import hf_recommender

    torch.set_num_threads(1)
    return hf_recommender(load_bundle(bundle_dir), beam_width=K, max_batch=BATCH)


class DyingEngine:
    """The real engine, except that the process dies (``os._exit``) inside its ``die_on``-th
    engine call, the first time any worker gets there: ``marker`` records that it happened."""

    def __init__(self, engine: Recommender, marker: Path, die_on: int) -> None:
        self._engine = engine
        self._marker = marker
        self._die_on = die_on
        self._calls = 0

    @property
    def model_version(self) -> str:
        return self._engine.model_version

    @property
    def catalog(self):  # type: ignore[no-untyped-def]
        return self._engine.catalog

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        self._calls += 1
        if self._calls == self._die_on and not self._marker.exists():
            self._marker.write_text(str(os.getpid()))
            os._exit(1)  # a killed worker: no cleanup, no exception, mid-batch
        return self._engine.recommend(histories, k)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        return self._engine.rank(requests)


class EngineFactory:
    """What each worker calls to build its engine (pickled to the actors by value, below)."""

    def __init__(self, bundle_dir: Path, marker: Path | None = None, die_on: int = 0) -> None:
        self.bundle_dir = bundle_dir
        self.marker = marker
        self.die_on = die_on

    def __call__(self) -> Recommender:
        engine = tiny_engine(self.bundle_dir)
        if self.marker is None:
            return engine
        return DyingEngine(engine, self.marker, self.die_on)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("ray") / "bundle")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray of 2 CPUs for the module; shut down (raylet, GCS and workers) after it."""
    # the workers cannot import this test module: its engine factory travels by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def write_users(path: Path) -> dict[str, list[str]]:
    users = {f"u{u}": [f"i{(u * 7 + j) % 24}" for j in range(u % 4 + 1)] for u in range(USERS)}
    path.write_text("".join(json.dumps({"user_id": u, "history": h}) + "\n" for u, h in users.items()))
    return users


async def cached(client: aredis.Redis, users: Sequence[str]) -> dict[str, CachedList]:
    return (await snapshot(client, users, None))[0]


async def snapshot(
    client: aredis.Redis, users: Sequence[str], done_key: str | None
) -> tuple[dict[str, CachedList], set[str]]:
    """The users' cached lists and the done set, read in ONE transaction: a worker of the failed
    run that Ray has not stopped yet may still write a batch, but never between the two."""
    async with client.pipeline(transaction=True) as pipe:
        for user_id in users:
            pipe.get(topk_key(VERSION, user_id))
        if done_key is not None:
            pipe.smembers(done_key)
        replies = await pipe.execute()
    lists = {u: decode_entry(raw) for u, raw in zip(users, replies, strict=False) if raw is not None}
    members = {m.decode() for m in replies[-1]} - {"-"} if done_key is not None else set()
    return lists, members


async def test_a_killed_worker_fails_the_job_and_the_rerun_completes_it_exactly_once(
    local_ray: None, bundle_dir: Path, tmp_path: Path, redis_url: str, redis_client: aredis.Redis
) -> None:
    from service.precompute.ray_job import run_ray_precompute

    users = write_users(tmp_path / "histories.jsonl")
    settings = Settings(
        redis_url=redis_url,
        artifacts=bundle_dir,
        max_k=K,
        default_k=K,
        cache_extra=0,
        history_len=HISTORY_LEN,
        precompute_ray_actors=2,
        redis_timeout_s=30.0,  # the machine may be loaded: a slow reply is not the failure under test
        precompute_ray_max_restarts=0,  # a dead worker fails the job (the default restarts it)
    )
    plan = plan_input(str(tmp_path / "histories.jsonl"), BATCH)
    assert [spec.batch_id for spec in plan.batches] == [f"0:{n}" for n in range(0, USERS, BATCH)]
    done_key = done_batches_key(VERSION, job_fingerprint(plan.job, K, HISTORY_LEN))

    def run(engine: EngineFactory, **changes: object) -> object:
        return run_ray_precompute(
            settings.model_copy(update=changes), str(tmp_path / "histories.jsonl"), K, BATCH, engine=engine
        )

    marker = tmp_path / "killed"
    with pytest.raises(PrecomputeFailed, match="run the same command again to resume") as failed:
        await asyncio.to_thread(run, EngineFactory(bundle_dir, marker, die_on=2))
    assert "ActorDiedError" in str(failed.value)
    assert marker.exists()  # a worker did die inside an engine call
    first, members = await snapshot(redis_client, list(users), done_key)
    done_users = [
        f"u{n}"
        for spec in plan.batches
        if spec.batch_id in members
        for n in range(spec.first_row, spec.first_row + spec.rows)
    ]
    # lists and the batch's id land together: exactly the done batches' users are cached
    assert sorted(first) == sorted(done_users)
    assert len(members) < len(plan.batches)

    summary = await asyncio.to_thread(run, EngineFactory(bundle_dir), precompute_ray_max_restarts=3)
    # at least the batches done before (more if a worker of the failed run finished one late),
    # and each batch either skipped or run, never both
    assert summary.resumed >= len(done_users)  # type: ignore[attr-defined]
    assert summary.resumed + summary.cached == USERS  # type: ignore[attr-defined]
    assert summary.resumed + BATCH * summary.batches == USERS  # type: ignore[attr-defined]
    assert not await redis_client.exists(done_key)  # a finished job deletes its set

    final = await cached(redis_client, list(users))
    assert sorted(final) == sorted(users)
    for user_id in first:  # not written again by the rerun
        assert final[user_id] == first[user_id]
    engine = tiny_engine(bundle_dir)
    for start in range(0, USERS, BATCH):  # the in-process engine, on the job's batches
        batch = list(users)[start : start + BATCH]
        known = [usable_history(users[u], engine.catalog, HISTORY_LEN)[0] for u in batch]
        for user_id, items in zip(batch, engine.recommend(known, K), strict=True):
            got = final[user_id]
            assert [item.item_id for item in got.items] == [item.item_id for item in items]
            scores = [item.score for item in items]
            assert [item.score for item in got.items] == pytest.approx(scores, abs=1e-4)
            assert got.seen == CachedList.of(items, users[user_id]).seen
            stored = await redis_client.lrange(history_key(user_id), 0, -1)
            assert [item.decode() for item in stored] == users[user_id]


async def test_a_killed_worker_is_restarted_and_its_batch_retried_over_a_parquet_folder(
    local_ray: None, bundle_dir: Path, tmp_path: Path, redis_url: str, redis_client: aredis.Redis
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.precompute.ray_job import run_ray_precompute

    users = {f"p{u}": [f"i{(u * 5 + j) % 24}" for j in range(u % 3 + 1)] for u in range(12)}
    folder = tmp_path / "users"
    folder.mkdir()
    for part, names in enumerate((list(users)[:7], list(users)[7:])):
        table = pa.table({"user_id": names, "history": [users[u] for u in names]})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=3)
    settings = Settings(
        redis_url=redis_url, artifacts=bundle_dir, max_k=K, default_k=K, cache_extra=0,
        history_len=HISTORY_LEN, precompute_ray_actors=2, redis_timeout_s=30.0,
    )  # fmt: skip
    marker = tmp_path / "killed"
    summary = await asyncio.to_thread(
        run_ray_precompute, settings, str(folder), K, 4, engine=EngineFactory(bundle_dir, marker, die_on=1)
    )
    assert marker.exists()
    # 7 + 5 users in batches of 4: 0:0, 0:4, 1:0, 1:4; the dead worker's batch was retried, once
    assert (summary.batches, summary.cached, summary.resumed) == (4, 12, 0)
    final = await cached(redis_client, list(users))
    engine = tiny_engine(bundle_dir)
    names = list(users)
    for batch in (names[0:4], names[4:7], names[7:11], names[11:]):  # the job's batches
        known = [usable_history(users[u], engine.catalog, HISTORY_LEN)[0] for u in batch]
        for user_id, items in zip(batch, engine.recommend(known, K), strict=True):
            assert [item.item_id for item in final[user_id].items] == [item.item_id for item in items]
