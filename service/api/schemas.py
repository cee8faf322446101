"""The API's request and response bodies (the recommendation bodies themselves are in ``render``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.recommend import Event, InvalidRequest
from service.api.render import RecommendResult
from service.http import pid_field

USER_ID_MAX_LEN = 256
MAX_EVENTS = 1000
MAX_EXCLUDE = 100  # item ids one request may filter out
MAX_BATCH_USERS = 100  # users per POST /v1/recommend:batch: a few engine batches at most


class ReadyStatus(BaseModel):
    # "degraded": Redis answers but the engine does not; /recommend still answers (cached, stale
    # or popular lists), so the instance stays in rotation (200).
    status: Literal["ready", "degraded", "not ready"]
    redis: str
    model: str
    model_version: str | None
    pid: int = pid_field()


class RecommendQuery(BaseModel):
    """The query of ``GET /recommend``."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_LEN, description="the user")
    k: int | None = Field(default=None, description="list length, 1..MAX_K (default DEFAULT_K)")
    exclude_seen: bool = Field(default=True, description="leave out items already in the user's history")
    exclude: str | None = Field(
        default=None,
        max_length=MAX_EXCLUDE * 257,
        description=f"comma-separated item ids to leave out (up to {MAX_EXCLUDE}; unknown ids are ignored)",
    )
    category: str | None = Field(
        default=None,
        max_length=1024,
        description="only items in this category or one below it, as a path broadest level first "
        '("Office Electronics, Telephones & Accessories"; case-insensitive); 422 when no item is in it',
    )

    def excluded(self) -> frozenset[str]:
        ids = frozenset(i for i in (self.exclude or "").split(",") if i)
        if len(ids) > MAX_EXCLUDE:
            raise InvalidRequest(f"exclude: at most {MAX_EXCLUDE} item ids, got {len(ids)}")
        return ids


class BatchRecommendQuery(BaseModel):
    """The body of ``POST /v1/recommend:batch``."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LEN)]] = Field(
        min_length=1, max_length=MAX_BATCH_USERS, description=f"1..{MAX_BATCH_USERS} users"
    )
    k: int | None = Field(default=None, description="list length, 1..MAX_K (default DEFAULT_K)")
    exclude_seen: bool = Field(default=True, description="leave out items already in each user's history")


class BatchRecommendResult(BaseModel):
    results: list[RecommendResult] = Field(description="one per requested user, in request order")


class HistoryItem(BaseModel):
    item_id: str
    title: str | None  # None for an id the current catalog no longer has


class UserHistory(BaseModel):
    user_id: str
    items: list[HistoryItem]


class ItemInfo(BaseModel):
    item_id: str
    title: str
    semantic_id: str
    popularity: int


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class RankQuery(BaseModel):
    """The body of ``POST /rank``."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_LEN)
    candidates: list[str] = Field(min_length=1, description="catalog item ids to order for the user")
