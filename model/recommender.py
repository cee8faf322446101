"""What every top-K backend returns and promises, independent of the engine behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from model.catalog import Catalog


class ScoredItem(NamedTuple):
    """One recommended item. ``score`` is the log-probability of its full semantic ID.

    A NamedTuple rather than a frozen dataclass: a cache hit builds one per cached item, and a
    tuple is several times cheaper to construct.
    """

    item_id: str
    score: float


# One ranking request: a history (catalog item ids, oldest first) and the candidate item ids
# to score for it.
RankRequest = tuple[Sequence[str], Sequence[str]]


class Recommender(Protocol):
    """A top-K generator and candidate ranker over one catalog.

    ``recommend`` takes histories of catalog item ids (oldest first; ids not in the catalog
    are the caller's to drop) and returns, per history, ``k`` distinct catalog items best
    first (fewer only when the catalog has fewer than ``k`` items).

    ``rank`` takes (history, candidates) pairs and returns, per pair, every distinct candidate
    exactly once, best first, scored as ``recommend`` would score it for that history. A
    candidate not in the catalog raises ValueError naming it (the caller's error, not the
    model's; history ids outside the catalog are dropped as for ``recommend``).
    """

    @property
    def model_version(self) -> str: ...

    @property
    def catalog(self) -> Catalog: ...

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]: ...

    def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]: ...
