"""The engine service's wire format, shared by the server and its client."""

from __future__ import annotations

from pydantic import BaseModel, Field

ENGINE_API = "/v1/engine"
# One request may carry many users (precompute sends whole batches); the engine splits them
# into its own batches.
MAX_HISTORIES = 4096


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
