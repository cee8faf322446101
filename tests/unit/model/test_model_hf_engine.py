"""HF reference engine on a tiny random Llama in a real bundle, checked against brute-force scoring."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from model_test_helpers import make_catalog

from benchmarks.hf_generate import TokenTrie, hf_generate_topk
from model.bundle import CATALOG, MODEL_DIR, TRIE, ArtifactBundle, load_bundle, write_manifest
from model.catalog import Catalog
from model.hf_engine import HFChildScorer, hf_recommender
from model.prompts import next_item_prompt
from model.search import LiveRows
from model.topk import ConstrainedRecommender, PromptSettings
from model.trie import PAD, ROOT, CompiledTrie
from model.trie_mask import TrieMask, sid_token_table

pytestmark = pytest.mark.slow

NUM_ITEMS = 12
HISTORIES = [["i1", "i4"], ["i9"], [], ["i11", "i0", "i7", "unknown"]]


def build_bundle(root: Path, catalog: Catalog, *, with_titles: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.base_model import add_sid_tokens, build_tiny_model

    corpus = [item.title for item in catalog] + [
        next_item_prompt(list(catalog)[i : i + 3], catalog.scheme) for i in range(len(catalog))
    ]
    base = build_tiny_model(root.parent / f"{root.name}-base", corpus, vocab_size=400, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme)
    # New rows start near the mean embedding; spread them so items get clearly different scores.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[sid_ids] += torch.randn(len(sid_ids), weight.shape[1], generator=generator)
    model.save_pretrained(root / MODEL_DIR, safe_serialization=True)
    tokenizer.save_pretrained(root / MODEL_DIR)
    catalog.save(root / CATALOG)
    CompiledTrie.build([item.sid for item in catalog]).save(root / TRIE)
    write_manifest(root, version="tiny-test", base_model="tiny", catalog=catalog, with_titles=with_titles)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ArtifactBundle:
    root = tmp_path_factory.mktemp("hf") / "bundle"
    build_bundle(root, make_catalog(NUM_ITEMS), with_titles=True)
    return load_bundle(root)


@pytest.fixture(scope="module")
def recommender(bundle: ArtifactBundle) -> ConstrainedRecommender:
    return hf_recommender(bundle, beam_width=NUM_ITEMS, max_batch=3)


@pytest.fixture(scope="module")
def model(bundle: ArtifactBundle) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(bundle.model_dir), dtype=torch.float32).eval()


def brute_force(model: torch.nn.Module, bundle: ArtifactBundle, prompt: list[int]) -> list[tuple[str, float]]:
    """Every item's constrained log-probability, one unpadded forward pass per trie prefix."""
    trie = bundle.trie
    children = trie.to_token_space(sid_token_table(bundle.model_dir, bundle.catalog.scheme))
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def child_logp(prefix: tuple[int, ...], node: int) -> np.ndarray:
        if prefix not in cache:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + list(prefix)])).logits[0, -1]
            tokens = children[node][children[node] != PAD]
            cache[prefix] = torch.log_softmax(logits[torch.as_tensor(tokens)].double(), dim=0).numpy()
        return cache[prefix]

    scored = []
    for item in bundle.catalog:
        node, prefix, total = ROOT, (), 0.0
        for code in item.sid:
            slot = int(np.nonzero(trie.children[node] == code)[0][0])
            total += float(child_logp(prefix, node)[slot])
            prefix = (*prefix, int(children[node, slot]))
            node = int(trie.child_node[node, slot])
        scored.append((item.item_id, total))
    return sorted(scored, key=lambda pair: -pair[1])


def test_returns_k_distinct_catalog_items_best_first(
    recommender: ConstrainedRecommender, bundle: ArtifactBundle
) -> None:
    results = recommender.recommend(HISTORIES, k=5)
    assert len(results) == len(HISTORIES)
    for row in results:
        ids = [item.item_id for item in row]
        assert len(ids) == 5
        assert len(set(ids)) == 5
        assert all(item_id in bundle.catalog for item_id in ids)
        scores = [item.score for item in row]
        assert all(np.isfinite(scores)) and all(s <= 1e-6 for s in scores)
        assert all(a >= b for a, b in itertools.pairwise(scores))
    assert len({tuple(item.item_id for item in row) for row in results}) > 1, "history must matter"
    assert recommender.model_version == "tiny-test"


def test_matches_brute_force_scoring(
    recommender: ConstrainedRecommender, bundle: ArtifactBundle, model: torch.nn.Module
) -> None:
    results = recommender.recommend(HISTORIES, k=NUM_ITEMS)
    for history, row in zip(HISTORIES, results, strict=True):
        truth = brute_force(model, bundle, recommender.prompts.encode(history))
        assert [item.item_id for item in row] == [item_id for item_id, _ in truth]
        np.testing.assert_allclose([item.score for item in row], [s for _, s in truth], atol=1e-4)
        # A distribution over the catalog: every item, probabilities summing to one.
        assert float(np.exp([item.score for item in row]).sum()) == pytest.approx(1.0, abs=1e-4)


def test_left_padding_does_not_change_the_scores(bundle: ArtifactBundle, model: torch.nn.Module) -> None:
    """Rows of different lengths scored together (left-padded) equal rows scored one by one."""
    trie = bundle.trie
    children = trie.to_token_space(sid_token_table(bundle.model_dir, bundle.catalog.scheme))
    prompts = [[5, 9, 13, 7, 22, 30, 31, 2], [11], [40, 41, 42]]
    first = [int(t) for t in children[ROOT] if t != PAD]
    slots = [0, 1, 1, 0]
    rows = LiveRows(
        prompt_index=np.array([0, 1, 2, 1]),
        prefix_tokens=np.array([[first[s]] for s in slots]),
        node=trie.child_node[ROOT, slots],
    )
    pad_id = 1
    together = HFChildScorer(model, prompts, children, pad_id=pad_id)(rows)
    alone = HFChildScorer(model, prompts, children, pad_id=pad_id, batch_size=1)(rows)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    valid = children[rows.node] != PAD
    assert np.isneginf(together[~valid]).all()
    np.testing.assert_allclose(np.exp(np.where(valid, together, -np.inf)).sum(axis=1), 1.0, atol=1e-6)


def test_batching_does_not_change_recommendations(bundle: ArtifactBundle) -> None:
    one = hf_recommender(bundle, beam_width=6, max_batch=1).recommend(HISTORIES, k=4)
    many = hf_recommender(bundle, beam_width=6, max_batch=16).recommend(HISTORIES, k=4)
    assert [[i.item_id for i in row] for row in one] == [[i.item_id for i in row] for row in many]
    np.testing.assert_allclose(
        [[i.score for i in row] for row in one], [[i.score for i in row] for row in many], atol=1e-5
    )


def test_prompt_settings_come_from_the_manifest_unless_given(bundle: ArtifactBundle) -> None:
    assert hf_recommender(bundle).prompts.settings.with_titles is True
    custom = PromptSettings(history_len=3, with_titles=False)
    assert hf_recommender(bundle, prompt_settings=custom).prompts.settings == custom


def test_k_above_the_beam_width_is_refused(recommender: ConstrainedRecommender) -> None:
    with pytest.raises(ValueError, match="exceeds the engine's beam width"):
        recommender.recommend([["i1"]], k=NUM_ITEMS + 1)


@pytest.mark.parametrize("beam_width", [NUM_ITEMS, 5, 2])
def test_matches_transformers_generate_beam_search(
    bundle: ArtifactBundle, model: torch.nn.Module, beam_width: int
) -> None:
    """Our level-synchronous search equals HF's own ``generate(num_beams=W)`` with the trie callback:
    the same items in the same order with the same scores, exhaustive (W = catalog) or pruned."""
    ours = hf_recommender(bundle, beam_width=beam_width)
    token_trie = TokenTrie.of_bundle(bundle)
    for history, row in zip(HISTORIES, ours.recommend(HISTORIES, k=beam_width), strict=True):
        generated = hf_generate_topk(model, token_trie, ours.prompts.encode(history), beam_width)
        assert [bundle.catalog.at(g.item_index).item_id for g in generated] == [i.item_id for i in row]
        np.testing.assert_allclose([g.score for g in generated], [i.score for i in row], atol=1e-4)


def test_token_trie_walks_the_compiled_trie(bundle: ArtifactBundle) -> None:
    token_trie = TokenTrie.of_bundle(bundle)
    table = sid_token_table(bundle.model_dir, bundle.catalog.scheme)
    for index, item in enumerate(bundle.catalog):
        tokens = [int(table[level, code]) for level, code in enumerate(item.sid)]
        assert token_trie.item_index(tokens) == index
        assert token_trie.item_index(tokens[:-1]) == PAD  # a prefix is no item
    assert token_trie.walk([10**6]) == PAD


def test_rank_scores_equal_the_exhaustive_search_scores(
    recommender: ConstrainedRecommender, bundle: ArtifactBundle
) -> None:
    """Beam = catalog, so the search scores every item; ranking the whole catalog agrees."""
    everything = [item.item_id for item in bundle.catalog]
    searched = recommender.recommend(HISTORIES, k=NUM_ITEMS)
    ranked = recommender.rank([(history, everything) for history in HISTORIES])
    for full, row in zip(searched, ranked, strict=True):
        assert [i.item_id for i in row] == [i.item_id for i in full]
        np.testing.assert_allclose([i.score for i in row], [i.score for i in full], atol=1e-5)


def test_rank_returns_candidate_subsets_sorted_with_their_search_scores(
    recommender: ConstrainedRecommender, bundle: ArtifactBundle
) -> None:
    rng = np.random.default_rng(0)
    ids = [item.item_id for item in bundle.catalog]
    searched = recommender.recommend(HISTORIES, k=NUM_ITEMS)
    requests = [
        (history, [ids[i] for i in rng.choice(NUM_ITEMS, size=size, replace=False)])
        for history, size in zip(HISTORIES, [1, 3, 7, 11], strict=True)
    ]
    requests.append((HISTORIES[0], ["i3", "i5", "i3", "i3", "i5"]))  # duplicates collapse
    searched.append(searched[0])
    for (_, candidates), full, row in zip(requests, searched, recommender.rank(requests), strict=True):
        assert [i.item_id for i in row] == [i.item_id for i in full if i.item_id in set(candidates)]
        truth = {i.item_id: i.score for i in full}
        np.testing.assert_allclose([i.score for i in row], [truth[i.item_id] for i in row], atol=1e-5)
    with pytest.raises(ValueError, match=r"candidates not in the catalog: \['zzz'\]"):
        recommender.rank([(HISTORIES[0], ["i1", "zzz"])])


def test_the_vllm_processor_reads_the_trie_through_the_bundle(bundle: ArtifactBundle) -> None:
    """vLLM's engine process builds the trie mask from the bundle root, as load_bundle reads it."""
    pytest.importorskip("vllm.v1.sample.logits_processor")
    from model.vllm_processor import load_trie_mask

    vocab_size = 512
    mask = load_trie_mask(bundle.root, bundle.model_dir, vocab_size, torch.device("cpu"))
    table = sid_token_table(bundle.model_dir, bundle.catalog.scheme)
    expected = TrieMask(bundle.trie, table, vocab_size, torch.device("cpu"))
    assert torch.equal(mask.children, expected.children)
    assert torch.equal(mask.child_node, expected.child_node)
