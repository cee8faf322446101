"""The one place a recommender is chosen and built, for every command that needs one.

In process, the production recommender is the verified artifact bundle served by the vLLM
engine (``serving_recommender``: ``recommend-batch`` and ``eval`` build it with their own
options, ``load_recommender`` from the settings for the API, the engine service and
precompute). The API and the precompute job ``connect`` to one: the engine service at
ENGINE_URL (the process then loads only the bundle's catalog) or the bundle's model loaded in
this process.

vLLM is imported lazily so the rest of the service (and its tests) runs without it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from model.bundle import ArtifactBundle, load_bundle
from model.engine_config import EngineConfig
from model.recommender import Recommender
from service.engine.client import RemoteRecommender
from service.engine.protocol import AsyncRecommender
from service.engine.replicas import ReplicaPool, engine_urls
from service.engine.runner import LocalRecommender, as_async
from service.settings import Settings

logger = logging.getLogger(__name__)


def serving_recommender(bundle: ArtifactBundle, config: EngineConfig) -> Recommender:
    """The serving engine (vLLM) over ``bundle`` in this process, configured by ``config``."""
    from model.vllm_engine import VllmRecommender

    recommender: Recommender = VllmRecommender(bundle, config)
    return recommender


def load_recommender(settings: Settings) -> Recommender:
    """Load and verify ``settings.artifacts`` (BundleError if it cannot be served), start the engine."""
    bundle = load_bundle(settings.artifacts)
    config = settings.engine_config()
    logger.info("starting the vLLM engine for bundle %s with %s", bundle.version, config)
    return serving_recommender(bundle, config)


def stop_recommender(recommender: object) -> None:
    """Stop a recommender's engine now (the vLLM one has worker processes), if it has one."""
    close = getattr(recommender, "close", None)
    if callable(close):
        close()


def engine_max_batch(settings: Settings) -> int:
    """Users per engine call in this process, the engine's configured batch."""
    return settings.engine_config().max_batch or 1


@asynccontextmanager
async def connect(
    settings: Settings,
    given: Recommender | AsyncRecommender | None = None,
    *,
    timeout_s: float | None,
    remote_timeout_s: float,
    max_batch: int | None = None,
    must_answer: bool,
) -> AsyncIterator[AsyncRecommender]:
    """The recommender of an API or a job, for the block; closed (and stopped if built here) after.

    ``given`` (tests, the integration pipeline) is used as it is, a blocking one run by a
    ``LocalRecommender``; its owner stops it. Otherwise: with ENGINE_URL, a
    ``RemoteRecommender`` (a ``ReplicaPool`` of them when it names several URLs) waiting
    ``remote_timeout_s`` per request, which must answer now when
    ``must_answer`` (a job: RuntimeError) or may still be starting (the API serves cache hits
    and fallbacks meanwhile: a warning); without, the bundle's model loaded here and run by a
    ``LocalRecommender`` that waits ``timeout_s`` (None: no limit) and batches ``max_batch``
    users per call (None: the engine's configured batch).
    """
    if given is not None:
        yield as_async(given, timeout_s, max_batch or engine_max_batch(settings))
        return
    if settings.engine_url is None:
        owned = load_recommender(settings)
        try:
            yield LocalRecommender(owned, timeout_s, max_batch or engine_max_batch(settings))
        finally:
            stop_recommender(owned)
        return
    bundle = load_bundle(settings.artifacts)
    remotes = [
        RemoteRecommender(url, bundle.catalog, bundle.version, remote_timeout_s)
        for url in engine_urls(settings.engine_url)
    ]
    client: RemoteRecommender | ReplicaPool = remotes[0] if len(remotes) == 1 else ReplicaPool(remotes)
    try:
        status = await client.status()
        if status != "ok" and must_answer:
            raise RuntimeError(f"engine service at ENGINE_URL={settings.engine_url}: {status}")
        if status != "ok":
            # The engine may still be starting: the API serves cache hits and fallbacks meanwhile.
            logger.warning("engine service at %s: %s; see /health/ready", settings.engine_url, status)
        yield client
    finally:
        await client.aclose()
