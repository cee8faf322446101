"""ConstrainedRecommender.rank with the prompt-seeded table scorers of the top-K tests (topk_helpers).

The engine-level agreement (tiny model through HF, and vLLM against HF) is tested in
test_model_hf_engine.py and the integration pipeline; here the contract: every candidate once,
best first, with the score the top-K search gives it, batched like ``recommend``.
"""

from __future__ import annotations

import numpy as np
import pytest
from topk_helpers import HISTORIES, NUM_ITEMS, PromptSeededScorers, make_recommender

from model.catalog import Catalog
from model.recommender import Recommender
from model.topk import ConstrainedRecommender
from model.trie import CompiledTrie


@pytest.fixture
def recommender(catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers) -> ConstrainedRecommender:
    return make_recommender(catalog, trie, scorers)


def test_is_a_ranking_recommender(recommender: ConstrainedRecommender) -> None:
    ranker: Recommender = recommender
    assert ranker.rank([]) == []


def test_rank_scores_are_exactly_the_exhaustive_search_scores(
    recommender: ConstrainedRecommender, catalog: Catalog
) -> None:
    everything = [item.item_id for item in catalog]
    searched = recommender.recommend(HISTORIES, k=NUM_ITEMS)
    ranked = recommender.rank([(history, everything[::-1]) for history in HISTORIES])
    assert ranked == searched  # same items, same order, bit-identical scores


def test_candidates_come_back_once_each_best_first(
    recommender: ConstrainedRecommender, catalog: Catalog
) -> None:
    rng = np.random.default_rng(0)
    ids = [item.item_id for item in catalog]
    searched = recommender.recommend(HISTORIES, k=NUM_ITEMS)
    requests = []
    for history in HISTORIES:
        picks = [ids[i] for i in rng.choice(NUM_ITEMS, size=rng.integers(1, NUM_ITEMS), replace=False)]
        requests.append((history, [*picks, picks[0], *picks[:2]]))  # with duplicates
    for (_, candidates), full, row in zip(requests, searched, recommender.rank(requests), strict=True):
        assert sorted(item.item_id for item in row) == sorted(set(candidates))
        assert [item.score for item in row] == sorted((item.score for item in row), reverse=True)
        assert row == [item for item in full if item.item_id in set(candidates)]


def test_ties_keep_the_callers_order(catalog: Catalog, trie: CompiledTrie) -> None:
    flat = PromptSeededScorers(trie)
    flat.table = lambda prompt: np.zeros(trie.children.shape)  # type: ignore[method-assign]
    recommender = make_recommender(catalog, trie, flat)
    (row,) = recommender.rank([(["i1"], ["i7", "i2", "i9", "i2"])])
    assert [item.item_id for item in row] == ["i7", "i2", "i9"]


def test_unknown_candidates_are_all_named_before_any_scoring(
    recommender: ConstrainedRecommender, scorers: PromptSeededScorers
) -> None:
    with pytest.raises(ValueError, match=r"candidates not in the catalog: \['nope', 'gone'\]"):
        recommender.rank([(["i1"], ["i2", "nope"]), (["i3"], ["gone", "i4", "nope"])])
    assert scorers.batches == []


def test_unknown_history_ids_are_dropped_as_for_recommend(recommender: ConstrainedRecommender) -> None:
    candidates = ["i3", "i0", "i8"]
    assert recommender.rank([(["x", "i1", "y"], candidates)]) == recommender.rank([(["i1"], candidates)])


def test_requests_are_scored_in_batches_of_max_batch(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    requests = [(history, ["i0", "i5", "i11"]) for history in HISTORIES]
    batched = make_recommender(catalog, trie, scorers, max_batch=2)
    results = batched.rank(requests)
    assert [len(batch) for batch in scorers.batches] == [2, 2, 1]
    assert results == make_recommender(catalog, trie, PromptSeededScorers(trie)).rank(requests)
    assert batched.rank([(["i1"], [])]) == [[]]


def test_rank_uses_the_ranking_scorer_and_recommend_the_search_one(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    """An engine whose top-K scorer truncates children plugs in a full one for ranking."""
    ranking = PromptSeededScorers(trie)
    base = make_recommender(catalog, trie, scorers)
    recommender = ConstrainedRecommender(
        catalog=catalog,
        trie=trie,
        children_tokens=base.children_tokens,
        prompts=base.prompts,
        make_scorer=scorers,
        beam_width=NUM_ITEMS,
        max_batch=16,
        model_version="toy-v3",
        make_ranking_scorer=ranking,
    )
    recommender.rank([(["i1"], ["i2"])])
    assert (len(scorers.batches), len(ranking.batches)) == (0, 1)
    recommender.recommend([["i1"]], k=2)
    assert (len(scorers.batches), len(ranking.batches)) == (1, 1)
