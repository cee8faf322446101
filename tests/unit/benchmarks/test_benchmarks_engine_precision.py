"""The bf16-vs-fp32 list comparison: overlaps, identical lists and paired metric differences."""

from __future__ import annotations

import pytest

from benchmarks.engine_precision import compare


def rows(lists: list[list[str]], targets: list[str]) -> list[dict]:
    return [
        {"user_id": f"u{n}", "target": t, "items": items}
        for n, (items, t) in enumerate(zip(lists, targets, strict=True))
    ]


def test_compare_counts_overlap_and_paired_differences() -> None:
    base = [f"i{n}" for n in range(10)]
    swapped = ["x", *base[1:]]  # one item replaced: overlap 0.9
    fp32 = rows([base, base], ["i0", "i3"])
    bf16 = rows([swapped, base], ["i0", "i3"])
    result = compare(fp32, bf16)
    assert result["users"] == 2
    assert result["mean_top10_overlap"] == pytest.approx(0.95)
    assert result["min_top10_overlap"] == pytest.approx(0.9)
    assert result["identical_top10_share"] == pytest.approx(0.5)
    recall = result["recall@10"]
    assert recall["bf16_minus_fp32"] == pytest.approx(-0.5)  # the first user's hit is lost
    assert recall["ci95_low"] < -0.5 < recall["ci95_high"]
    assert result["ndcg@10"]["bf16_minus_fp32"] == pytest.approx(-0.5)  # its hit was at rank 1


def test_compare_refuses_different_users() -> None:
    with pytest.raises(ValueError, match="different users"):
        compare(rows([["a"]], ["a"]), [{"user_id": "other", "target": "a", "items": ["a"]}])
