"""Semantic IDs from item embeddings: each source quantized on its own (``training.residual_kmeans``),
the sources' codes in the configured order, then the last level (disambiguation, or a token per
item); with the scheme they fit, the per-level codebooks (for the aligned token init) and a
report of codebook usage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from model.semantic_id import SemanticId, SidScheme
from training.residual_kmeans import add_disambiguation_level, collision_rate, entropy_bits, residual_quantize
from training.sid_alignment import SidCodebooks
from training.tokenizer_config import DISAMBIGUATION, ITEM, SEMANTIC, ItemTokenizerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerReport:
    """How well the codes use their codebooks; the figures to compare against published tokenizers.

    ``levels`` counts every level of the semantic ID, the last one included.
    ``collision_rate`` is the fraction of items whose k-means prefix was already taken by an
    earlier item, i.e. ``1 - unique_prefixes / num_items``; ``max_items_per_prefix`` the most
    items that share one k-means prefix.
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


def build_semantic_ids(
    embeddings: np.ndarray, config: ItemTokenizerConfig
) -> tuple[SidScheme, list[SemanticId], TokenizerReport]:
    """Single-source semantic IDs for items in row order (``embeddings`` as the semantic source)."""
    scheme, sids, report, _ = build_item_index(
        {SEMANTIC: embeddings}, config.model_copy(update={"sources": (SEMANTIC,)})
    )
    return scheme, sids, report


def build_item_index(
    embeddings: dict[str, np.ndarray], config: ItemTokenizerConfig
) -> tuple[SidScheme, list[SemanticId], TokenizerReport, SidCodebooks]:
    """Semantic IDs for items in row order from each configured source's embeddings, the scheme
    they fit, a quality report and the per-level codebooks (for the aligned token init).

    A codebook larger than the catalog is an error: it could never be used.
    """
    start = time.perf_counter()
    missing = [s for s in config.sources if s not in embeddings]
    if missing:
        raise ValueError(f"no embeddings for source(s) {missing}")
    counts = {s: int(embeddings[s].shape[0]) if embeddings[s].ndim >= 1 else 0 for s in config.sources}
    n = counts[config.sources[0]]
    if n == 0:
        raise ValueError("cannot build semantic IDs for an empty catalog")
    if len(set(counts.values())) != 1:
        raise ValueError(f"sources embed different numbers of items: {counts}")
    config.check_fits(n)
    blocks: list[np.ndarray] = []
    codebooks: list[np.ndarray | None] = []
    level_sources: list[str] = []
    sizes: list[int] = []
    for offset, source in enumerate(config.sources):
        levels, size = config.shape(source)
        logger.info("quantizing %s embeddings: %d levels x %d codes", source, levels, size)
        quantized = residual_quantize(
            embeddings[source], levels, size, config.seed + 1000 * offset, iters=config.kmeans_iters
        )
        blocks.append(quantized.codes)
        codebooks.extend(quantized.codebooks)
        level_sources.extend([source] * levels)
        sizes.extend([size] * levels)
    codes = np.concatenate(blocks, axis=1)
    collisions = collision_rate(codes)
    numbered = add_disambiguation_level(codes)
    max_per_prefix = int(numbered[:, -1].max()) + 1
    if config.last_level == ITEM:
        # Every item its own code; the token starts from the item's own vector (the last
        # source's embedding), as the k-means levels start from their centroids.
        full = np.concatenate([codes.astype(np.int64), np.arange(n, dtype=np.int64)[:, None]], axis=1)
        sizes.append(n)
        codebooks.append(np.asarray(embeddings[config.sources[-1]], dtype=np.float32))
        level_sources.append(ITEM)
    else:
        full = numbered
        sizes.append(max_per_prefix)
        codebooks.append(None)
        level_sources.append(DISAMBIGUATION)
    scheme = SidScheme(tuple(sizes))
    sids: list[SemanticId] = [tuple(int(c) for c in row) for row in full.tolist()]
    report = TokenizerReport(
        num_items=n,
        levels=len(sizes),
        codebook_sizes=tuple(sizes),
        usage=tuple(len(np.unique(full[:, i])) / size for i, size in enumerate(sizes)),
        entropy_bits=tuple(entropy_bits(full[:, i]) for i in range(len(sizes))),
        collision_rate=collisions,
        max_items_per_prefix=max_per_prefix,
        wall_time_s=time.perf_counter() - start,
        extra={"level_sources": level_sources},
    )
    logger.info(
        "semantic IDs for %d items from %s: codebooks %s, usage %s, collision rate %.3f "
        "(max %d items per prefix)",
        n,
        "+".join(config.sources),
        tuple(sizes),
        ", ".join(f"{u:.2f}" for u in report.usage),
        collisions,
        max_per_prefix,
    )
    return scheme, sids, report, SidCodebooks(codebooks, level_sources)
