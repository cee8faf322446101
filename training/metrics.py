"""Top-K ranking metrics for leave-one-out evaluation (one held-out item per user)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1 if the single held-out item is in the top ``k``, else 0 (hit rate = recall here)."""
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1/log2(rank+1) for the held-out item's 1-based rank within the top ``k``; ideal DCG is 1."""
    for rank, item in enumerate(ranked[:k], start=1):
        if item == target:
            return 1.0 / math.log2(rank + 1)
    return 0.0


def summarize(
    rankings: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over users."""
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings for {len(targets)} targets")
    if not targets:
        raise ValueError("no users to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum(recall_at_k(r, t, k) for r, t in zip(rankings, targets, strict=True)) / len(
            targets
        )
        out[f"ndcg@{k}"] = sum(ndcg_at_k(r, t, k) for r, t in zip(rankings, targets, strict=True)) / len(
            targets
        )
    return out
