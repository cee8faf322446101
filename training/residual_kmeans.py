"""Residual k-means (RQ-KMeans, as in TIGER/LC-Rec): each level clusters what the levels before it
left unexplained, so items with similar vectors share code prefixes; and the disambiguation
level that makes every code tuple unique. Plus the figures that say how well codes are used.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quantized:
    """Residual k-means output: codes ``[n, levels]`` and each level's centroids ``[codes, dim]``."""

    codes: np.ndarray
    codebooks: list[np.ndarray]


def residual_quantize(
    embeddings: np.ndarray, levels: int, codebook_size: int, seed: int, *, iters: int = 50
) -> Quantized:
    """Level ``l`` clusters what levels ``0..l-1`` left unexplained.

    Deterministic for a given ``seed`` (one k-means init per level, seeded ``seed + level``).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [items, dim], got shape {embeddings.shape}")
    n = embeddings.shape[0]
    if n == 0:
        raise ValueError("cannot tokenize an empty catalog (0 embeddings)")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if not 1 <= codebook_size <= n:
        raise ValueError(f"codebook_size {codebook_size} must be in 1..{n} (one code per item at most)")
    residual = np.asarray(embeddings, dtype=np.float64).copy()
    codes = np.zeros((n, levels), dtype=np.int64)
    codebooks: list[np.ndarray] = []
    for level in range(levels):
        kmeans = KMeans(n_clusters=codebook_size, n_init=1, max_iter=iters, random_state=seed + level)
        with warnings.catch_warnings():
            # Near-duplicate texts leave fewer distinct residuals than codes; that is expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = kmeans.fit_predict(residual)
        codes[:, level] = labels
        codebooks.append(kmeans.cluster_centers_.astype(np.float32))
        residual -= kmeans.cluster_centers_[labels]
        logger.info(
            "k-means level %d/%d: %d of %d codes used, residual norm %.4f",
            level + 1,
            levels,
            len(set(labels)),
            codebook_size,
            np.linalg.norm(residual) / np.sqrt(n),
        )
    return Quantized(codes, codebooks)


def residual_kmeans(
    embeddings: np.ndarray, levels: int, codebook_size: int, seed: int, *, iters: int = 50
) -> np.ndarray:
    """Codes ``[n, levels]`` of :func:`residual_quantize`."""
    return residual_quantize(embeddings, levels, codebook_size, seed, iters=iters).codes


def collision_rate(codes: np.ndarray) -> float:
    """Fraction of items whose code tuple an earlier item already has (``1 - unique / n``)."""
    n = codes.shape[0]
    if n == 0:
        return 0.0
    return 1.0 - len({tuple(row) for row in codes.tolist()}) / n


def add_disambiguation_level(codes: np.ndarray) -> np.ndarray:
    """Append a level numbering the items that share a prefix: 0 for the first, 1 for the second, ..."""
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [items, levels], got shape {codes.shape}")
    seen: Counter[tuple[int, ...]] = Counter()
    extra = np.zeros((codes.shape[0], 1), dtype=np.int64)
    for row, prefix in enumerate(codes.tolist()):
        key = tuple(prefix)
        extra[row, 0] = seen[key]
        seen[key] += 1
    return np.concatenate([codes.astype(np.int64), extra], axis=1)


def entropy_bits(column: np.ndarray) -> float:
    counts = np.unique(column, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())
