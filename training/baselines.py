"""The non-LLM baselines of the evaluation harness: most-popular and SASRec.

Both are fitted on the training split only (``s[:-2]`` of every sequence) and ranked over the
full catalog through the same ``evaluate`` as genrec, so their numbers are comparable with
the LLM's line for line. Like the LLM, they do not filter the user's history out of the
ranking (the literature's protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

from model.recommender import ScoredItem
from training.data import InteractionData, sort_item_ids, train_item_counts
from training.sasrec import SasrecConfig, TrainedSasrec, train_sasrec

METHODS = ("popular", "sasrec")


class PopularRanker:
    """The same list for everyone: items by training-split interactions (ties in catalog order)."""

    model_version = "popular"

    def __init__(self, data: InteractionData) -> None:
        counts = train_item_counts(data)
        order = sort_item_ids(data.items)
        self.ranking = sorted(order, key=lambda item: -counts.get(item, 0))
        self.counts = counts

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        top = [ScoredItem(item, float(self.counts.get(item, 0))) for item in self.ranking[:k]]
        return [list(top) for _ in histories]


class SasrecRanker:
    """SASRec's full-catalog ranking of each history's last ``max_len`` known items."""

    model_version = "sasrec"

    def __init__(self, trained: TrainedSasrec) -> None:
        self.trained = trained

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        ranked = self.trained.rank(histories, k)
        return [[ScoredItem(item, -float(rank)) for rank, item in enumerate(row)] for row in ranked]


def build_baseline(
    method: str, data: InteractionData, sasrec: SasrecConfig | None = None
) -> PopularRanker | SasrecRanker:
    if method == "popular":
        return PopularRanker(data)
    if method == "sasrec":
        return SasrecRanker(train_sasrec(data, sasrec or SasrecConfig()))
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
