"""What every top-K backend returns and promises, independent of the engine behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from model.catalog import Catalog


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item. ``score`` is the log-probability of its full semantic ID."""

    item_id: str
    score: float


class Recommender(Protocol):
    """A top-K generator over one catalog.

    ``recommend`` takes histories of catalog item ids (oldest first; ids not in the catalog
    are the caller's to drop) and returns, per history, ``k`` distinct catalog items best
    first (fewer only when the catalog has fewer than ``k`` items).
    """

    @property
    def model_version(self) -> str: ...

    @property
    def catalog(self) -> Catalog: ...

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]: ...
