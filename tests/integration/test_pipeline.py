"""The whole system on a tiny dataset: real CLI, real tokenizer, real LoRA training, the real vLLM
CPU engine, a real Redis server and the real HTTP app. One engine is started for the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import genrec_cli
from model.bundle import ArtifactBundle, load_bundle
from model.recommender import Recommender
from service.api.app import create_app
from service.batch import recommend_to_jsonl
from service.cache import RecommendationCache
from service.precompute.job import run_precompute
from service.precompute.sources import Source
from service.settings import Settings
from training.data import InteractionData, load_lcrec, serving_histories

pytestmark = [pytest.mark.slow, pytest.mark.integration]

K = 10
USERS = 80
ITEMS = 60


def _genrec(*args: str) -> str:
    result = CliRunner().invoke(genrec_cli.app, list(args))
    assert result.exit_code == 0, f"genrec {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    _genrec("generate-data", "--out", str(root / "data"), "--users", str(USERS), "--items", str(ITEMS))
    _genrec("tokenize", "--data", str(root / "data"), "--out", str(root / "tok"), "--codebook-size", "8")
    _genrec(
        "train",
        "--data", str(root / "data"),
        "--tokenizer", str(root / "tok"),
        "--out", str(root / "run"),
        "--base-model", "tiny",
        "--max-steps", "40",
        "--batch-size", "16",
        "--lr", "3e-3",
    )  # fmt: skip
    _genrec("export", "--run", str(root / "run"), "--artifacts", str(root / "artifacts"), "--version", "it1")
    return root


@pytest.fixture(scope="module")
def dataset(workdir: Path) -> InteractionData:
    return load_lcrec(workdir / "data")


@pytest.fixture(scope="module")
def bundle(workdir: Path) -> ArtifactBundle:
    return load_bundle(workdir / "artifacts" / "current")


@pytest.fixture(scope="module")
def settings(workdir: Path, redis_url: str) -> Settings:
    # cache_extra 0: the engine's beam is K, the width the references below search with;
    # float32: the references below score in fp32, and ``auto`` is bf16 where that measures faster
    return Settings(
        redis_url=redis_url, artifacts=workdir / "artifacts" / "current", max_k=K, default_k=K,
        cache_extra=0, engine_dtype="float32",
    )  # fmt: skip


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Recommender]:
    from service.engine.connect import load_recommender

    recommender = load_recommender(settings)
    yield recommender
    recommender.close()  # type: ignore[attr-defined]


def _assert_valid_topk(items: list[str], bundle: ArtifactBundle, k: int) -> None:
    assert len(items) == k
    assert len(set(items)) == k
    assert all(item in bundle.catalog for item in items)


def test_export_made_a_verified_bundle(bundle: ArtifactBundle, dataset: InteractionData) -> None:
    assert bundle.version == "it1"
    assert len(bundle.catalog) == len(dataset.items) == ITEMS


def test_engine_returns_k_distinct_catalog_items(engine: Recommender, bundle: ArtifactBundle) -> None:
    histories = list(catalog_histories(bundle))[:6]
    results = engine.recommend(histories, K)
    assert len(results) == len(histories)
    for ranked in results:
        _assert_valid_topk([item.item_id for item in ranked], bundle, K)
        scores = [item.score for item in ranked]
        assert scores == sorted(scores, reverse=True)


def catalog_histories(bundle: ArtifactBundle) -> Iterator[list[str]]:
    """Five-item histories made of the catalog's own ids."""
    ids = [item.item_id for item in bundle.catalog]
    for start in range(0, len(ids) - 5, 7):
        yield ids[start : start + 5]


def test_vllm_agrees_with_the_transformers_reference(engine: Recommender, bundle: ArtifactBundle) -> None:
    from model.hf_engine import hf_recommender

    histories = list(catalog_histories(bundle))[:3]
    reference = hf_recommender(bundle, beam_width=K).recommend(histories, K)
    served = engine.recommend(histories, K)
    for ref, got in zip(reference, served, strict=True):
        assert [i.item_id for i in got] == [i.item_id for i in ref]
        assert [i.score for i in got] == pytest.approx([i.score for i in ref], abs=2e-3)


def test_vllm_matches_transformers_generate_beam_search(engine: Recommender, bundle: ArtifactBundle) -> None:
    """The served top-K equals HF ``generate(num_beams=K)`` with the trie callback, scores included."""
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.hf_generate import TokenTrie, hf_generate_topk

    model = AutoModelForCausalLM.from_pretrained(str(bundle.model_dir), dtype=torch.float32).eval()
    token_trie = TokenTrie.of_bundle(bundle)
    histories = list(catalog_histories(bundle))[3:6]
    for history, got in zip(histories, engine.recommend(histories, K), strict=True):
        prompt = engine.prompts.encode(history)  # type: ignore[attr-defined]
        generated = hf_generate_topk(model, token_trie, prompt, K)
        assert [i.item_id for i in got] == [bundle.catalog.at(g.item_index).item_id for g in generated]
        assert [i.score for i in got] == pytest.approx([g.score for g in generated], abs=2e-3)


def test_vllm_rank_scores_equal_its_search_and_the_transformers_reference(
    engine: Recommender, bundle: ArtifactBundle
) -> None:
    """Ranking a candidate list gives each item the score the top-K search gives it (candidates
    from the top-K), and the HF engine's score for it (candidates from outside the top-K too)."""
    from model.hf_engine import hf_recommender

    histories = list(catalog_histories(bundle))[:3]
    tops = engine.recommend(histories, K)
    requests = []
    for history, top in zip(histories, tops, strict=True):
        inside = [item.item_id for item in top]
        outside = [item.item_id for item in bundle.catalog if item.item_id not in set(inside)][::9]
        requests.append((history, [*inside[::2], *outside, inside[0]]))  # and a duplicate
    served = engine.rank(requests)
    reference = hf_recommender(bundle, beam_width=K).rank(requests)
    for (_, candidates), top, got, ref in zip(requests, tops, served, reference, strict=True):
        assert sorted(i.item_id for i in got) == sorted(set(candidates))
        assert [i.score for i in got] == sorted((i.score for i in got), reverse=True)
        ranked = {i.item_id: i.score for i in got}
        searched = {i.item_id: i.score for i in top if i.item_id in ranked}
        assert [ranked[i] for i in searched] == pytest.approx(list(searched.values()), abs=1e-4)
        truth = {i.item_id: i.score for i in ref}
        assert [i.score for i in got] == pytest.approx([truth[i.item_id] for i in got], abs=2e-3)


def test_batch_interface_skips_unknown_items(
    engine: Recommender, bundle: ArtifactBundle, tmp_path: Path
) -> None:
    known = next(catalog_histories(bundle))
    users = [("u1", [*known, "no-such-item"]), ("u2", ["nope"])]
    out = tmp_path / "top.jsonl"
    summary = recommend_to_jsonl(engine, iter(users), out, k=K, batch_size=4, total=len(users))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["user_id"] for line in lines] == ["u1", "u2"]
    for line in lines:
        _assert_valid_topk(line["items"], bundle, K)
    assert summary.unknown_items_skipped == 2


def test_precompute_then_recommend_over_http(
    engine: Recommender, bundle: ArtifactBundle, dataset: InteractionData, settings: Settings
) -> None:
    assert settings.redis_url is not None
    asyncio.run(_flush(settings.redis_url))
    users = list(serving_histories(dataset))[:20]
    summary = run_precompute(settings, Source(users, None, len(users)), K, 8, recommender=engine)
    assert summary.cached == len(users)

    with TestClient(create_app(settings, engine)) as client:
        assert client.get("/health/ready").status_code == 200
        cached_user = users[0][0]
        whole = {"user_id": cached_user, "k": K, "exclude_seen": False}
        body = client.get("/v1/recommend", params=whole).json()
        assert body["source"] == "cache"
        assert body["model_version"] == "it1"
        _assert_valid_topk([item["item_id"] for item in body["items"]], bundle, K)
        assert all(item["title"] == bundle.catalog[item["item_id"]].title for item in body["items"])
        # By default the items the user already has are left out of the same cached list.
        unseen = client.get("/v1/recommend", params={"user_id": cached_user, "k": K}).json()["items"]
        history = set(users[0][1])
        assert [i["item_id"] for i in unseen] == [
            i["item_id"] for i in body["items"] if i["item_id"] not in history
        ]

        # A known user whose list expired is recomputed on demand from the stored history.
        asyncio.run(_delete_topk(settings.redis_url, bundle.version, cached_user))
        again = client.get("/v1/recommend", params={**whole, "k": 5}).json()
        assert again["source"] == "model"
        assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in body["items"]][:5]

        cold = client.get("/recommend", params={"user_id": "never-seen", "k": K}).json()
        assert cold["source"] == "fallback"
        _assert_valid_topk([item["item_id"] for item in cold["items"]], bundle, K)

        bad = client.get("/recommend", params={"user_id": cached_user, "k": K + 1})
        assert bad.status_code == 422
        assert "k" in bad.json()["detail"]


async def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


async def _delete_topk(url: str, version: str, user_id: str) -> None:
    client = redis.Redis.from_url(url)
    await RecommendationCache(client, version, 60).invalidate(user_id)
    await client.aclose()


def test_api_precompute_and_engine_as_separate_services(
    engine: Recommender, bundle: ArtifactBundle, dataset: InteractionData, settings: Settings
) -> None:
    """The deployment's wiring on the real engine: the engine app behind real HTTP, precompute
    and the API reaching it only through ENGINE_URL (each loading just the catalog)."""
    from live_server import live_server

    from service.engine.server import create_engine_app
    from service.local.redis_server import free_port

    assert settings.redis_url is not None
    asyncio.run(_flush(settings.redis_url))
    users = list(serving_histories(dataset))[:12]
    with live_server(create_engine_app(settings, engine), free_port()) as engine_url:
        remote = settings.model_copy(update={"engine_url": engine_url})
        summary = run_precompute(remote, Source(users, None, len(users)), K, 8)
        assert summary.cached == len(users)
        with TestClient(create_app(remote)) as client:
            assert client.get("/health/ready").json()["status"] == "ready"
            user, history = users[0]
            hit = client.get("/v1/recommend", params={"user_id": user, "exclude_seen": False}).json()
            assert hit["source"] == "cache"
            assert [i["item_id"] for i in hit["items"]] == [
                i.item_id for i in engine.recommend([history], K)[0]
            ]
            asyncio.run(_delete_topk(settings.redis_url, bundle.version, user))
            miss = client.get("/v1/recommend", params={"user_id": user, "exclude_seen": False}).json()
            assert miss["source"] == "model"
            # the same list; scores to float32 noise (another batch composition in the engine)
            assert [i["item_id"] for i in miss["items"]] == [i["item_id"] for i in hit["items"]]
            assert [i["score"] for i in miss["items"]] == pytest.approx(
                [i["score"] for i in hit["items"]], abs=1e-4
            )
            candidates = [i["item_id"] for i in hit["items"][::3]]
            ranked = client.post("/v1/rank", json={"user_id": user, "candidates": candidates[::-1]}).json()
            assert ranked["source"] == "model"
            assert [i["item_id"] for i in ranked["items"]] == candidates
            scores = {i["item_id"]: i["score"] for i in hit["items"]}
            assert [i["score"] for i in ranked["items"]] == pytest.approx(
                [scores[c] for c in candidates], abs=1e-4
            )
