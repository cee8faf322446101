"""The JSON body of a recommendation, rendered without building a pydantic model per item.

Every cache hit renders a response, so this is the hot path's last step: each catalog item's
``{"item_id": ..., "title": ...`` fragment is encoded once at startup, and a response is
string joins plus one float repr per item. ``RecommendResult`` is the schema of that body (it
documents the endpoint and the tests parse responses with it); rendering it through pydantic
cost more than the Redis round trip of a hit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from model.catalog import Catalog
from model.recommender import ScoredItem

logger = logging.getLogger(__name__)

Source = Literal["cache", "model", "fallback"]


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float | None = Field(
        description="the model's log-probability of the item (its semantic ID) for this user, "
        "higher is better; null when the model did not rank it (source 'fallback': popularity order)"
    )


class SimilarItemsResult(BaseModel):
    item_id: str
    model_version: str
    source: Source
    items: list[RecommendedItem]
    degraded: str | None = None


class RecommendResult(BaseModel):
    user_id: str
    model_version: str
    source: Source
    items: list[RecommendedItem]
    # Why a user with history got a degraded answer: the popularity fallback (Redis or the
    # model unavailable) or a stale cached list (the model unavailable).
    degraded: str | None = None


@dataclass(frozen=True)
class Recommendation:
    """One answer of the recommend logic, before rendering; ``items`` are catalog items."""

    user_id: str
    source: Source
    items: list[ScoredItem]
    degraded: str | None = None


class ResultRenderer:
    """Renders ``Recommendation``s of one model version as ``RecommendResult`` JSON bytes."""

    def __init__(self, catalog: Catalog, model_version: str) -> None:
        self.model_version = model_version
        self._head = {
            item.item_id: f'{{"item_id":{json.dumps(item.item_id)},"title":{json.dumps(item.title)},"score":'
            for item in catalog
        }
        self._version = json.dumps(model_version)

    def render(self, result: Recommendation, subject: str = "user_id") -> bytes:
        """``subject`` names ``result.user_id``'s field: "item_id" for the items like an item."""
        # one meaning for score: the model's; a fallback list is in popularity order, unscored
        scored = result.source != "fallback"
        parts = []
        for item in result.items:
            head = self._head.get(item.item_id)
            if head is None:  # a cached list from a catalog this model version should not have
                logger.warning(
                    "user %s: dropping item %r unknown to the catalog", result.user_id, item.item_id
                )
                continue
            parts.append(f"{head}{float(item.score)!r}}}" if scored else f"{head}null}}")
        items = ",".join(parts)
        degraded = "null" if result.degraded is None else json.dumps(result.degraded)
        return (
            f'{{"{subject}":{json.dumps(result.user_id)},"model_version":{self._version},'
            f'"source":"{result.source}","items":[{items}],"degraded":{degraded}}}'
        ).encode()
