"""The engine service seen from the API and precompute: ``RemoteRecommender``, over HTTP.

The API process keeps only the bundle's catalog (titles, popularity, the ids events may name)
and sends histories to the engine process (``service.engine.server``), which batches the
requests of every API replica into its engine calls. The engine must serve the same model
version as the catalog the API loaded: a mismatch is refused at start-up and on every answer,
so the API never renders one model's items with another model's catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from model.catalog import Catalog
from model.recommender import RankRequest, ScoredItem
from service.engine.protocol import (
    ENGINE_API,
    EngineInfo,
    EngineTimeout,
    RankBody,
    RankedLists,
    RecommendBody,
)

logger = logging.getLogger(__name__)

# Readiness probes ask the engine for its info; they must answer fast even when it hangs.
STATUS_TIMEOUT_S = 2.0


class EngineUnavailable(RuntimeError):
    """The engine service could not be reached or did not answer properly."""


class RemoteRecommender:
    """``AsyncRecommender`` for the engine service at ``url``; requests time out after ``timeout_s``."""

    def __init__(self, url: str, catalog: Catalog, model_version: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.catalog = catalog
        self.model_version = model_version
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s, limits=httpx.Limits(max_connections=256)
        )

    async def info(self, timeout_s: float | None = None) -> EngineInfo:
        response = await self._call("GET", f"{ENGINE_API}/info", timeout_s=timeout_s)
        return EngineInfo.model_validate_json(response.content)

    async def status(self) -> str:
        """ "ok" when the engine service answers with this model version, else why not (within
        ``STATUS_TIMEOUT_S``, so a hung engine does not hang readiness probes)."""
        try:
            info = await self.info(timeout_s=min(STATUS_TIMEOUT_S, self.timeout_s))
        except (EngineUnavailable, EngineTimeout, ValueError) as exc:
            return f"error: {exc}"
        if info.model_version != self.model_version:
            return f"error: the engine serves {info.model_version!r}, this API {self.model_version!r}"
        return "ok"

    async def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        body = RecommendBody(histories=[list(h) for h in histories], k=k)
        return self._lists(await self._call("POST", f"{ENGINE_API}/recommend", body.model_dump_json()))

    async def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        body = RankBody(requests=[(list(history), list(candidates)) for history, candidates in requests])
        return self._lists(await self._call("POST", f"{ENGINE_API}/rank", body.model_dump_json()))

    def _lists(self, response: httpx.Response) -> list[list[ScoredItem]]:
        answer = RankedLists.model_validate_json(response.content)
        if answer.model_version != self.model_version:
            raise EngineUnavailable(
                f"the engine serves {answer.model_version!r}, this API {self.model_version!r}"
            )
        return [[ScoredItem(item_id, score) for item_id, score in row] for row in answer.lists]

    async def _call(
        self, method: str, path: str, content: str | None = None, timeout_s: float | None = None
    ) -> httpx.Response:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            response = await self._http.request(
                method, path, content=content, headers={"content-type": "application/json"}, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"the engine service did not answer within {timeout}s") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine service at {self.url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EngineUnavailable(f"engine service answered {response.status_code}: {response.text[:200]}")
        return response

    async def aclose(self) -> None:
        await self._http.aclose()
