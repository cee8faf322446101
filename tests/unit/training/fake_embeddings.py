"""A cheap, deterministic stand-in for the sentence encoder, shared by the training tests:
one seeded random vector per text (the same text always gets the same vector)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def fake_embed(texts: Sequence[str], dim: int = 8) -> np.ndarray:
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=dim) for t in texts])


def fake_embed_16(texts: Sequence[str]) -> np.ndarray:
    """``fake_embed`` in 16 dimensions (enough for codebooks of 16 codes)."""
    return fake_embed(texts, dim=16)
