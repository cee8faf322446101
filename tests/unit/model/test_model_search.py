"""Constrained beam search and candidate scoring with a fixed log-prob table, checked against
exhaustive enumeration and against each other."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import (
    TableScorer,
    exhaustive_ranking,
    make_catalog,
    node_path,
    random_sids,
    token_of_code,
)

from model.search import ItemPaths, LiveRows, SearchHit, constrained_beam_search, renormalise, score_items
from model.semantic_id import SemanticId, SidScheme
from model.trie import PAD, ROOT, CompiledTrie


def setup(sids: list[SemanticId], scheme: SidScheme) -> tuple[CompiledTrie, np.ndarray]:
    trie = CompiledTrie.build(sids)
    return trie, trie.to_token_space(token_of_code(scheme))


def assert_valid_hits(
    hits: list[SearchHit], scorer: TableScorer, prompt: int, sids: list[SemanticId]
) -> None:
    indices = [hit.item_index for hit in hits]
    assert len(set(indices)) == len(indices), "items must be distinct"
    assert all(0 <= i < len(sids) for i in indices)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert hit.score == pytest.approx(scorer.item_score(prompt, sids[hit.item_index]), abs=1e-9)
        assert hit.score <= 1e-9  # a log-probability


def test_exhaustive_search_returns_the_true_top_k() -> None:
    catalog = make_catalog(24)
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)
    scorer = TableScorer(trie, tokens, num_prompts=3, seed=0)
    results = constrained_beam_search(trie, tokens, 3, scorer, beam_width=24, k=10)
    assert len(results) == 3
    for prompt, hits in enumerate(results):
        truth = exhaustive_ranking(scorer, prompt, sids)[:10]
        assert [h.item_index for h in hits] == [index for index, _ in truth]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in truth], atol=1e-9)
        assert_valid_hits(hits, scorer, prompt, sids)
    # Prompts get different answers from different tables (the search does not mix prompts up).
    assert [h.item_index for h in results[0]] != [h.item_index for h in results[1]]


def test_exhaustive_search_scores_are_a_distribution_over_items() -> None:
    catalog = make_catalog(24)
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)
    scorer = TableScorer(trie, tokens, num_prompts=1, seed=3)
    (hits,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=24, k=24)
    assert sorted(h.item_index for h in hits) == list(range(24))
    # Per-level renormalised log-probs: the probabilities of all items sum to one.
    assert float(np.exp([h.score for h in hits]).sum()) == pytest.approx(1.0, abs=1e-9)


def test_one_scoring_call_per_level_with_only_live_rows() -> None:
    catalog = make_catalog(24)
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)
    scorer = TableScorer(trie, tokens, num_prompts=2, seed=1)
    constrained_beam_search(trie, tokens, 2, scorer, beam_width=4, k=3)
    assert len(scorer.calls) == trie.num_levels
    assert [call.prefix_tokens.shape[1] for call in scorer.calls] == list(range(trie.num_levels))
    assert len(scorer.calls[0].node) == 2  # one root row per prompt
    for call in scorer.calls:
        assert (call.node != PAD).all()
        assert (trie.depth[call.node] < trie.num_levels).all()
        assert len(call.node) <= 2 * 4
        assert sorted(set(call.prompt_index.tolist())) == [0, 1]


@st.composite
def search_case(draw: st.DrawFn) -> tuple[SidScheme, list[SemanticId], int, int, int, int]:
    sizes = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    scheme = SidScheme(sizes)
    count = draw(st.integers(1, min(int(np.prod(sizes)), 40)))
    sids = random_sids(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), scheme, count)
    beam_width = draw(st.integers(1, 45))
    k = draw(st.integers(1, beam_width))
    num_prompts = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    return scheme, sids, beam_width, k, num_prompts, seed


@settings(max_examples=80, deadline=None)
@given(search_case())
def test_search_properties_on_random_tries(
    case: tuple[SidScheme, list[SemanticId], int, int, int, int],
) -> None:
    scheme, sids, beam_width, k, num_prompts, seed = case
    trie, tokens = setup(sids, scheme)
    scorer = TableScorer(trie, tokens, num_prompts, seed)
    results = constrained_beam_search(trie, tokens, num_prompts, scorer, beam_width=beam_width, k=k)
    assert len(results) == num_prompts
    for prompt, hits in enumerate(results):
        # Always min(k, items) results, even when the beam pruned paths.
        assert len(hits) == min(k, len(sids))
        assert_valid_hits(hits, scorer, prompt, sids)
        if beam_width >= len(sids):
            truth = exhaustive_ranking(scorer, prompt, sids)[:k]
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in truth], atol=1e-9)
        else:
            # A beam can miss the best item, never return something better than it.
            best = exhaustive_ranking(scorer, prompt, sids)[0][1]
            assert hits[0].score <= best + 1e-9


def test_a_narrow_beam_can_miss_the_best_item_that_a_wide_beam_finds() -> None:
    """Greedy (beam 1) follows the best first code; the best full ID lies under another one."""
    sids = [(0, 0), (0, 1), (1, 0)]
    scheme = SidScheme((2, 2))
    trie, tokens = setup(sids, scheme)
    root, node_0, node_1 = trie.walk([]), trie.walk([0]), trie.walk([1])
    table = np.full((1, trie.num_nodes, trie.max_children), -np.inf)
    table[0, root, :2] = np.log([0.6, 0.4])
    table[0, node_0, :2] = np.log([0.5, 0.5])
    table[0, node_1, :1] = 0.0

    def scorer(rows: LiveRows) -> np.ndarray:
        return table[rows.prompt_index, rows.node]

    (greedy,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=1, k=1)
    (wide,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=3, k=3)
    assert greedy[0].item_index in (0, 1)
    assert greedy[0].score == pytest.approx(np.log(0.3))
    assert wide[0].item_index == 2
    assert wide[0].score == pytest.approx(np.log(0.4))
    assert [h.item_index for h in wide] == [2, 0, 1]


def test_items_with_zero_probability_are_never_returned() -> None:
    sids = [(0, 0), (0, 1), (1, 0), (1, 1)]
    trie, tokens = setup(sids, SidScheme((2, 2)))
    node_1 = trie.walk([1])

    def scorer(rows: LiveRows) -> np.ndarray:
        out = np.log(np.full((len(rows.node), trie.max_children), 0.5))
        out[rows.node == node_1, 1] = -np.inf  # (1, 1) impossible
        return out

    (hits,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=4, k=4)
    assert sorted(h.item_index for h in hits) == [0, 1, 2]


def test_scores_at_pad_slots_are_ignored() -> None:
    """A scorer that puts large scores on PAD slots must not create phantom items."""
    sids = [(0, 0), (1, 0), (1, 1), (2, 1)]
    trie, tokens = setup(sids, SidScheme((3, 2)))

    def scorer(rows: LiveRows) -> np.ndarray:
        out = np.log(np.full((len(rows.node), trie.max_children), 0.25))
        out[trie.child_node[rows.node] == PAD] = 100.0
        return out

    (hits,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=8, k=4)
    assert sorted(h.item_index for h in hits) == [0, 1, 2, 3]
    assert all(h.score < 0 for h in hits)


def test_k_larger_than_the_catalog_returns_every_item() -> None:
    sids = [(0, 1), (1, 0), (1, 1)]
    trie, tokens = setup(sids, SidScheme((2, 2)))
    scorer = TableScorer(trie, tokens, 1, seed=5)
    (hits,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=10, k=10)
    assert sorted(h.item_index for h in hits) == [0, 1, 2]


@pytest.mark.parametrize(("beam_width", "k"), [(3, 4), (1, 2), (5, 0), (5, -1)])
def test_invalid_k_or_beam_width_raises(beam_width: int, k: int) -> None:
    sids = [(0, 1), (1, 0)]
    trie, tokens = setup(sids, SidScheme((2, 2)))
    scorer = TableScorer(trie, tokens, 1, seed=0)
    with pytest.raises(ValueError, match="need 1 <= k <= beam_width"):
        constrained_beam_search(trie, tokens, 1, scorer, beam_width=beam_width, k=k)
    assert scorer.calls == []


def test_ties_are_broken_deterministically() -> None:
    catalog = make_catalog(12)
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)

    def uniform(rows: LiveRows) -> np.ndarray:
        valid = trie.child_node[rows.node] != PAD
        return renormalise(np.zeros(valid.shape), valid)

    first = constrained_beam_search(trie, tokens, 2, uniform, beam_width=12, k=5)
    second = constrained_beam_search(trie, tokens, 2, uniform, beam_width=12, k=5)
    assert first == second
    assert first[0] == first[1]
    assert len({h.item_index for h in first[0]}) == 5


def test_renormalise_is_a_log_softmax_over_the_valid_entries() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=5, size=(6, 5))
    valid = rng.random((6, 5)) < 0.6
    valid[:, 0] = True
    out = renormalise(logits, valid)
    assert np.isneginf(out[~valid]).all()
    np.testing.assert_allclose(np.exp(np.where(valid, out, -np.inf)).sum(axis=1), 1.0)
    for row in range(6):
        v = logits[row, valid[row]]
        expected = v - np.log(np.exp(v - v.max()).sum()) - v.max()
        np.testing.assert_allclose(out[row, valid[row]], expected)
    # Shift invariant, and stable for huge logits.
    np.testing.assert_allclose(renormalise(logits + 1000.0, valid), out)
    assert np.isfinite(renormalise(np.array([[1e6, 1e6 - 1.0]]), np.ones((1, 2), bool))).all()


def test_renormalise_of_a_row_without_valid_entries_is_all_minus_inf() -> None:
    """A row with nothing valid has probability zero everywhere: -inf, not NaN (and no warning)."""
    logits = np.array([[0.5, 1.0, 2.0], [0.1, 0.2, 0.3]])
    valid = np.array([[False, False, False], [True, False, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = renormalise(logits, valid)
    assert np.isneginf(out[0]).all()
    assert np.isneginf(out[1, 1])
    np.testing.assert_allclose(np.exp(out[1, [0, 2]]).sum(), 1.0)


def test_single_child_nodes_are_not_scored_and_results_stay_exact() -> None:
    """Disambiguation-style level: most nodes have one child, whose renormalised log-prob is 0."""
    scheme = SidScheme((3, 3, 2))
    sids = [(a, b, 0) for a in range(3) for b in range(3)] + [(0, 0, 1), (2, 1, 1)]
    trie, tokens = setup(sids, scheme)
    scorer = TableScorer(trie, tokens, num_prompts=2, seed=5)
    results = constrained_beam_search(trie, tokens, 2, scorer, beam_width=len(sids), k=len(sids))
    children = (trie.child_node != PAD).sum(axis=1)
    for call in scorer.calls:
        assert (children[call.node] > 1).all(), "a single-child node was sent to the scorer"
    last_level = [call for call in scorer.calls if call.prefix_tokens.shape[1] == 2]
    assert len(last_level) == 1 and len(last_level[0].node) == 2 * 2  # only (0,0) and (2,1), per prompt
    for prompt, hits in enumerate(results):
        truth = exhaustive_ranking(scorer, prompt, sids)
        assert [h.item_index for h in hits] == [index for index, _ in truth]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in truth], atol=1e-9)


def test_item_paths_spell_every_item() -> None:
    catalog = make_catalog(24)
    sids = [item.sid for item in catalog]
    trie = CompiledTrie.build(sids)
    paths = ItemPaths.of(trie)
    assert paths.num_items == len(sids)
    for index, sid in enumerate(sids):
        assert list(zip(paths.node[index], paths.slot[index], strict=True)) == node_path(trie, sid)
        leaf = trie.child_node[paths.node[index, -1], paths.slot[index, -1]]
        assert trie.leaf_item[leaf] == index


def test_scored_items_get_exactly_their_search_scores() -> None:
    """Bit-identical to an exhaustive search: same per-level values summed in the same order."""
    catalog = make_catalog(24)
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)
    scorer = TableScorer(trie, tokens, num_prompts=3, seed=2)
    searched = constrained_beam_search(trie, tokens, 3, scorer, beam_width=24, k=24)
    everything = [np.arange(24)] * 3
    scored = score_items(trie, tokens, ItemPaths.of(trie), everything, scorer)
    for hits, scores in zip(searched, scored, strict=True):
        assert {h.item_index: h.score for h in hits} == dict(enumerate(scores.tolist()))


def test_scoring_expands_only_the_candidates_paths_one_call_per_level() -> None:
    catalog = make_catalog(24)  # scheme (3, 4, 2): items i0..i23, all of the first two codes
    sids = [item.sid for item in catalog]
    trie, tokens = setup(sids, catalog.scheme)
    scorer = TableScorer(trie, tokens, num_prompts=2, seed=4)
    items = [np.array([5, 4, 17, 5]), np.array([0])]
    scores = score_items(trie, tokens, ItemPaths.of(trie), items, scorer)
    assert [len(s) for s in scores] == [4, 1]
    assert scores[0][0] == scores[0][3]  # a repeat shares its rows
    for prompt, (row_items, row_scores) in enumerate(zip(items, scores, strict=True)):
        expected = [scorer.item_score(prompt, sids[i]) for i in row_items]
        np.testing.assert_allclose(row_scores, expected, atol=1e-12)
    assert len(scorer.calls) == trie.num_levels
    expected_rows = {
        0: {(0, ROOT), (1, ROOT)},
        1: {(0, trie.walk(sids[4][:1])), (0, trie.walk(sids[17][:1])), (1, trie.walk(sids[0][:1]))},
        2: {(0, trie.walk(sids[4][:2])), (0, trie.walk(sids[17][:2])), (1, trie.walk(sids[0][:2]))},
    }
    for depth, call in enumerate(scorer.calls):
        rows = set(zip(call.prompt_index.tolist(), call.node.tolist(), strict=True))
        assert rows == expected_rows[depth]
        assert len(rows) == len(call.node), "a (prompt, node) row was scored twice"


def test_scoring_skips_single_child_nodes_like_the_search() -> None:
    scheme = SidScheme((3, 3, 2))
    sids = [(a, b, 0) for a in range(3) for b in range(3)] + [(0, 0, 1), (2, 1, 1)]
    trie, tokens = setup(sids, scheme)
    scorer = TableScorer(trie, tokens, num_prompts=1, seed=7)
    (hits,) = constrained_beam_search(trie, tokens, 1, scorer, beam_width=len(sids), k=len(sids))
    scorer.calls.clear()
    lonely = sids.index((1, 1, 0))  # its last node has one child
    (scores,) = score_items(trie, tokens, ItemPaths.of(trie), [np.array([lonely])], scorer)
    assert len(scorer.calls) == 2  # the last level needed no model call
    assert scores[0] == {h.item_index: h.score for h in hits}[lonely]


def test_scoring_nothing_calls_nothing() -> None:
    sids = [(0, 1), (1, 0)]
    trie, tokens = setup(sids, SidScheme((2, 2)))
    scorer = TableScorer(trie, tokens, 2, seed=0)
    paths = ItemPaths.of(trie)
    assert score_items(trie, tokens, paths, [], scorer) == []
    (empty,) = score_items(trie, tokens, paths, [np.zeros(0, np.int64)], scorer)
    assert empty.shape == (0,)
    assert scorer.calls == []
    with pytest.raises(ValueError, match="item positions"):
        score_items(trie, tokens, paths, [np.array([2])], scorer)


@settings(max_examples=60, deadline=None)
@given(search_case(), st.data())
def test_scoring_agrees_with_the_exhaustive_search_on_random_tries(
    case: tuple[SidScheme, list[SemanticId], int, int, int, int], data: st.DataObject
) -> None:
    scheme, sids, _, _, num_prompts, seed = case
    trie, tokens = setup(sids, scheme)
    scorer = TableScorer(trie, tokens, num_prompts, seed)
    searched = constrained_beam_search(trie, tokens, num_prompts, scorer, beam_width=len(sids), k=len(sids))
    picks = st.lists(st.integers(0, len(sids) - 1), max_size=2 * len(sids))
    items = [np.asarray(data.draw(picks), dtype=np.int64) for _ in range(num_prompts)]
    scorer.calls.clear()
    scored = score_items(trie, tokens, ItemPaths.of(trie), items, scorer)
    assert len(scorer.calls) <= trie.num_levels
    for hits, row_items, row_scores in zip(searched, items, scored, strict=True):
        truth = {h.item_index: h.score for h in hits}
        assert row_scores.tolist() == [truth[int(i)] for i in row_items]
