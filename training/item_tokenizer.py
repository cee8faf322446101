"""First item tokenizer: item text embeddings -> residual k-means codes + a disambiguation level.

Residual k-means (RQ-KMeans, as in TIGER/LC-Rec baselines) gives items with similar text
shared code prefixes, which is what lets the LLM generalise across items token by token.
Distinct items can still land on the same prefix; a final level numbers the items within
each prefix (0, 1, 2, ... in item order) so every semantic ID is unique and the trie maps
each leaf to exactly one catalog item.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from model.catalog import Catalog, CatalogItem
from model.semantic_id import SemanticId, SidScheme
from model.trie import CompiledTrie
from training.data import InteractionData, sort_item_ids, train_item_counts
from training.text_embeddings import encode_texts

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
TRIE_FILE = "trie.npz"
REPORT_FILE = "tokenizer_report.json"

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class ItemTokenizerConfig(BaseModel):
    """Semantic-ID shape: ``levels`` k-means levels of ``codebook_size`` codes, then disambiguation."""

    levels: int = Field(default=3, ge=1)
    codebook_size: int = Field(default=256, ge=1)
    seed: int = 0
    kmeans_iters: int = Field(default=50, ge=1)


@dataclass(frozen=True)
class TokenizerReport:
    """How well the codes use their codebooks; the figures to compare against published tokenizers.

    ``levels`` counts every level of the semantic ID, the disambiguation level included.
    ``collision_rate`` is the fraction of items whose k-means prefix was already taken by an
    earlier item, i.e. ``1 - unique_prefixes / num_items``.
    """

    num_items: int
    levels: int
    codebook_sizes: tuple[int, ...]
    usage: tuple[float, ...]
    entropy_bits: tuple[float, ...]
    collision_rate: float
    max_items_per_prefix: int
    wall_time_s: float
    embed_time_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def residual_kmeans(
    embeddings: np.ndarray, levels: int, codebook_size: int, seed: int, *, iters: int = 50
) -> np.ndarray:
    """Codes ``[n, levels]``: level ``l`` clusters what levels ``0..l-1`` left unexplained.

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
        raise ValueError(
            f"codebook_size {codebook_size} must be in 1..{n} (one code per item at most); "
            "build_semantic_ids shrinks it to the catalog size"
        )
    residual = np.asarray(embeddings, dtype=np.float64).copy()
    codes = np.zeros((n, levels), dtype=np.int64)
    for level in range(levels):
        kmeans = KMeans(n_clusters=codebook_size, n_init=1, max_iter=iters, random_state=seed + level)
        with warnings.catch_warnings():
            # Near-duplicate texts leave fewer distinct residuals than codes; that is expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = kmeans.fit_predict(residual)
        codes[:, level] = labels
        residual -= kmeans.cluster_centers_[labels]
        logger.debug(
            "level %d: %d codes used, residual norm %.4f", level, len(set(labels)), np.linalg.norm(residual)
        )
    return codes


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


def _entropy_bits(column: np.ndarray) -> float:
    counts = np.unique(column, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def build_semantic_ids(
    embeddings: np.ndarray, config: ItemTokenizerConfig
) -> tuple[SidScheme, list[SemanticId], TokenizerReport]:
    """Semantic IDs for items in row order, the scheme they fit, and a quality report.

    A catalog smaller than ``codebook_size`` gets one code per item at most per level.
    """
    start = time.perf_counter()
    n = int(embeddings.shape[0]) if embeddings.ndim >= 1 else 0
    if n == 0:
        raise ValueError("cannot build semantic IDs for an empty catalog")
    effective = min(config.codebook_size, n)
    if effective < config.codebook_size:
        logger.info(
            "codebook size %d > %d items; using %d codes per level", config.codebook_size, n, effective
        )
    codes = residual_kmeans(embeddings, config.levels, effective, config.seed, iters=config.kmeans_iters)
    collisions = collision_rate(codes)
    full = add_disambiguation_level(codes)
    max_per_prefix = int(full[:, -1].max()) + 1
    sizes = (effective,) * config.levels + (max_per_prefix,)
    scheme = SidScheme(sizes)
    sids: list[SemanticId] = [tuple(int(c) for c in row) for row in full.tolist()]
    report = TokenizerReport(
        num_items=n,
        levels=len(sizes),
        codebook_sizes=sizes,
        usage=tuple(len(np.unique(full[:, i])) / size for i, size in enumerate(sizes)),
        entropy_bits=tuple(_entropy_bits(full[:, i]) for i in range(len(sizes))),
        collision_rate=collisions,
        max_items_per_prefix=max_per_prefix,
        wall_time_s=time.perf_counter() - start,
    )
    logger.info(
        "semantic IDs for %d items: codebooks %s, usage %s, collision rate %.3f (max %d items per prefix)",
        n,
        sizes,
        ", ".join(f"{u:.2f}" for u in report.usage),
        collisions,
        max_per_prefix,
    )
    return scheme, sids, report


def tokenize_dataset(
    data: InteractionData, config: ItemTokenizerConfig, out_dir: Path, *, embed: EmbedFn = encode_texts
) -> tuple[Catalog, TokenizerReport]:
    """Give every item of ``data`` a semantic ID; write ``catalog.json``, ``trie.npz`` and the report.

    Items are in :func:`training.data.sort_item_ids` order, which is also the catalog order the
    trie's leaves point into. Popularity is counted on the training part of each sequence only.
    """
    item_ids = sort_item_ids(data.items)
    if not item_ids:
        raise ValueError(f"dataset {data.name!r} has no items to tokenize")
    texts = [data.items[i].text() for i in item_ids]
    logger.info("embedding %d item texts of %s", len(texts), data.name)
    start = time.perf_counter()
    embeddings = np.asarray(embed(texts))
    embed_time = time.perf_counter() - start
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {embeddings.shape} for {len(texts)} texts; expected [n, dim]")
    logger.info(
        "embedded %d items in %.1f s (%.0f items/s)",
        len(texts),
        embed_time,
        len(texts) / max(embed_time, 1e-9),
    )

    scheme, sids, report = build_semantic_ids(embeddings, config)
    report = replace(
        report, embed_time_s=embed_time, extra={"dataset": data.name, "config": config.model_dump()}
    )
    popularity = train_item_counts(data)
    catalog = Catalog(
        scheme,
        (
            CatalogItem(item_id=i, title=data.items[i].title, sid=sid, popularity=popularity.get(i, 0))
            for i, sid in zip(item_ids, sids, strict=True)
        ),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog.save(out_dir / CATALOG_FILE)
    CompiledTrie.build([item.sid for item in catalog]).save(out_dir / TRIE_FILE)
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    logger.info("wrote %s, %s and %s to %s", CATALOG_FILE, TRIE_FILE, REPORT_FILE, out_dir)
    return catalog, report
