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
    from model.vllm_engine import EngineConfig, VllmRecommender

    config = EngineConfig(
        beam_width=settings.beam_width,
        max_batch=settings.engine_max_batch,
        threads=settings.engine_threads,
        kv_cache_gb=settings.engine_kv_cache_gb,
        gpu_memory_utilization=settings.engine_gpu_memory_utilization,
        max_prompt_tokens=settings.engine_max_prompt_tokens,
        history_len=settings.history_len,
        device=settings.engine_device,
        compile=settings.engine_compile,
    )
    logger.info("starting the vLLM engine for bundle %s with %s", bundle.version, config)
    recommender: Recommender = VllmRecommender(bundle, config)
    return recommender
