"""Build the production recommender: the verified artifact bundle served by the vLLM engine.

vLLM is imported lazily so the rest of the service (and its tests) runs without it.
"""

from __future__ import annotations

import logging

from model.bundle import load_bundle
from model.recommender import Recommender
from service.settings import Settings

logger = logging.getLogger(__name__)


def load_recommender(settings: Settings) -> Recommender:
    """Load and verify ``settings.artifacts`` (BundleError if it cannot be served), start the engine."""
    bundle = load_bundle(settings.artifacts)
    from model.vllm_engine import VllmRecommender

    config = settings.engine_config()
    logger.info("starting the vLLM engine for bundle %s with %s", bundle.version, config)
    recommender: Recommender = VllmRecommender(bundle, config)
    return recommender


def stop_recommender(recommender: object) -> None:
    """Stop a recommender's engine now (the vLLM one has worker processes), if it has one."""
    close = getattr(recommender, "close", None)
    if callable(close):
        close()
