"""Recall@k and NDCG@k for leave-one-out evaluation, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from training.metrics import ndcg_at_k, recall_at_k, summarize

RANKED = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def test_hit_at_rank_one_scores_one() -> None:
    assert recall_at_k(RANKED, "a", 5) == 1.0
    assert ndcg_at_k(RANKED, "a", 5) == 1.0


def test_miss_scores_zero() -> None:
    assert recall_at_k(RANKED, "zzz", 10) == 0.0
    assert ndcg_at_k(RANKED, "zzz", 10) == 0.0


@pytest.mark.parametrize(("target", "rank"), [("b", 2), ("c", 3), ("e", 5), ("g", 7)])
def test_ndcg_is_one_over_log2_of_rank_plus_one(target: str, rank: int) -> None:
    expected = {2: 1 / math.log2(3), 3: 0.5, 5: 1 / math.log2(6), 7: 1 / 3}[rank]
    assert ndcg_at_k(RANKED, target, 10) == pytest.approx(expected)
    assert recall_at_k(RANKED, target, 10) == 1.0


def test_hit_exactly_at_rank_k_counts_and_rank_k_plus_one_does_not() -> None:
    # "e" is 5th: inside the top 5; "f" is 6th: outside it.
    assert recall_at_k(RANKED, "e", 5) == 1.0
    assert ndcg_at_k(RANKED, "e", 5) == pytest.approx(1 / math.log2(6))
    assert recall_at_k(RANKED, "f", 5) == 0.0
    assert ndcg_at_k(RANKED, "f", 5) == 0.0
    assert recall_at_k(RANKED, "f", 6) == 1.0


def test_short_ranking_and_tuple_input() -> None:
    assert recall_at_k(("x", "y"), "y", 10) == 1.0
    assert ndcg_at_k(("x", "y"), "y", 10) == pytest.approx(1 / math.log2(3))
    assert recall_at_k([], "y", 10) == 0.0
    assert ndcg_at_k([], "y", 10) == 0.0


def test_summarize_averages_over_users() -> None:
    rankings = [RANKED, RANKED, RANKED, RANKED]
    targets = ["a", "c", "g", "zzz"]  # rank 1, rank 3, rank 7, miss
    out = summarize(rankings, targets)
    assert set(out) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert out["recall@5"] == pytest.approx(2 / 4)
    assert out["recall@10"] == pytest.approx(3 / 4)
    assert out["ndcg@5"] == pytest.approx((1 + 0.5) / 4)
    assert out["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 4)


def test_summarize_custom_cutoffs() -> None:
    out = summarize([RANKED, ["q", "a"]], ["b", "a"], ks=(1, 2))
    assert out == pytest.approx({"recall@1": 0.0, "ndcg@1": 0.0, "recall@2": 1.0, "ndcg@2": 1 / math.log2(3)})


def test_summarize_rejects_mismatched_lengths_and_empty_input() -> None:
    with pytest.raises(ValueError, match="2 rankings for 1 targets"):
        summarize([RANKED, RANKED], ["a"])
    with pytest.raises(ValueError, match="no users"):
        summarize([], [])
