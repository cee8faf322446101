"""What the service asks of a recommender (``AsyncRecommender``), and the engine service's wire format.

The API and the precompute job talk to an ``AsyncRecommender``: a ``LocalRecommender`` around a
``Recommender`` in this process (``service.engine.runner``) or a ``RemoteRecommender`` for the
engine service over HTTP (``service.engine.client``), whose server and client share the
request and answer bodies below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from model.catalog import Catalog
from model.recommender import RankRequest, ScoredItem

ENGINE_API = "/v1/engine"
# One request may carry many users (precompute sends whole batches); the engine splits them
# into its own batches.
MAX_HISTORIES = 4096


class EngineTimeout(RuntimeError):
    """The model did not answer within ``engine_timeout_s``."""


@runtime_checkable
class AsyncRecommender(Protocol):
    """Async top-K and ranking over one catalog and model version."""

    @property
    def model_version(self) -> str: ...

    @property
    def catalog(self) -> Catalog: ...

    async def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]: ...

    async def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]: ...

    async def status(self) -> str:
        """ "ok", or why the recommender cannot answer now."""
        ...

    async def aclose(self) -> None: ...


class EngineInfo(BaseModel):
    model_version: str
    catalog_items: int
    beam_width: int | None
    max_batch: int | None


class RecommendBody(BaseModel):
    histories: list[list[str]] = Field(min_length=1, max_length=MAX_HISTORIES)
    k: int = Field(ge=1)


class RankBody(BaseModel):
    # (history, candidates) per request
    requests: list[tuple[list[str], list[str]]] = Field(min_length=1, max_length=MAX_HISTORIES)


class RankedLists(BaseModel):
    model_version: str
    lists: list[list[tuple[str, float]]]  # per history: (item_id, score), best first
