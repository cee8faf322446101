"""Item tokenizer: item embeddings from one or two sources -> residual k-means codes + disambiguation.

Sources (EAGER-LLM's dual-source index): ``semantic`` vectors come from the item text
(all-MiniLM-L6-v2, or the base LLM's hidden states with ``text_encoder``), ``behavior`` vectors
from a SASRec trained on the training split. Each source is quantized on its own by residual
k-means (RQ-KMeans, as in TIGER/LC-Rec), so items with similar text, or bought in similar
contexts, share code prefixes; the semantic ID is the sources' codes in the configured order,
and every level has its own token namespace (``<a_*>``, ``<b_*>``, ...). Distinct items can
still share all codes; a final level numbers the items within each prefix (0, 1, 2, ... in
item order) so every ID is unique and the trie maps each leaf to exactly one catalog item.

With ``align`` the per-level codebooks are saved too (``sid_codebooks.npz``): fine-tuning then
initialises the ID tokens' embeddings from them (Semantic Convergence, see
``training.sid_alignment``).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, field_validator
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from model.catalog import Catalog, CatalogItem
from model.semantic_id import SemanticId, SidScheme
from model.trie import CompiledTrie
from training.base_model import SMOLLM2
from training.data import InteractionData, sort_item_ids, train_item_counts
from training.sasrec import SasrecConfig
from training.sid_alignment import CODEBOOKS_FILE, DISAMBIGUATION, SidCodebooks
from training.text_embeddings import encode_texts

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
TRIE_FILE = "trie.npz"
REPORT_FILE = "tokenizer_report.json"

EmbedFn = Callable[[Sequence[str]], np.ndarray]
MINILM = "minilm"
SEMANTIC = "semantic"
BEHAVIOR = "behavior"
SOURCES = (SEMANTIC, BEHAVIOR)


class ItemTokenizerConfig(BaseModel):
    """Semantic-ID shape: each source's k-means levels, in ``sources`` order, then disambiguation.

    ``levels``/``codebook_size`` shape the semantic (text) codes, ``behavior_levels``/
    ``behavior_codebook_size`` the behavioural (SASRec) codes.
    """

    sources: tuple[str, ...] = (SEMANTIC,)
    levels: int = Field(default=3, ge=1)
    codebook_size: int = Field(default=256, ge=1)
    behavior_levels: int = Field(default=1, ge=1)
    behavior_codebook_size: int = Field(default=256, ge=1)
    align: bool = True
    # What embeds the item text: "minilm" (the bundled all-MiniLM-L6-v2 sentence encoder) or a
    # base LLM ("smollm2" or a local HF checkpoint) whose mean last hidden state is the vector
    # (``training.llm_embeddings``), cut to ``text_max_tokens`` tokens.
    text_encoder: str = MINILM
    text_max_tokens: int = Field(default=32, ge=1)
    seed: int = 0
    kmeans_iters: int = Field(default=50, ge=1)
    sasrec: SasrecConfig = SasrecConfig()

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        if not sources:
            raise ValueError(f"sources must name at least one of {', '.join(SOURCES)}")
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or len(set(sources)) != len(sources):
            raise ValueError(f"sources must be distinct names from {SOURCES}, got {list(sources)}")
        return sources

    @field_validator("text_encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        if name in (MINILM, SMOLLM2) or (Path(name) / "config.json").is_file():
            return name
        raise ValueError(f"{name!r} is not {MINILM!r}, {SMOLLM2!r} or a HF checkpoint directory")

    def shape(self, source: str) -> tuple[int, int]:
        """(levels, codebook size) of one source."""
        if source == SEMANTIC:
            return self.levels, self.codebook_size
        return self.behavior_levels, self.behavior_codebook_size

    def check_fits(self, num_items: int) -> None:
        """A codebook larger than the catalog could never be used: refuse it before any work."""
        for source in self.sources:
            _, size = self.shape(source)
            if size > num_items:
                field = "codebook_size" if source == SEMANTIC else "behavior_codebook_size"
                raise ValueError(
                    f"{field}={size} asks for more codes than the catalog has items ({num_items})"
                )


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


def _entropy_bits(column: np.ndarray) -> float:
    counts = np.unique(column, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


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
    full = add_disambiguation_level(codes)
    max_per_prefix = int(full[:, -1].max()) + 1
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
        entropy_bits=tuple(_entropy_bits(full[:, i]) for i in range(len(sizes))),
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


def text_embedder(config: ItemTokenizerConfig) -> EmbedFn:
    """The function that embeds item texts for ``config.text_encoder``."""
    if config.text_encoder == MINILM:
        return encode_texts
    from training.base_model import resolve_base_model
    from training.llm_embeddings import encode_texts_with_llm

    model_dir = resolve_base_model(config.text_encoder)
    return lambda texts: encode_texts_with_llm(texts, model_dir, max_tokens=config.text_max_tokens)


def semantic_embeddings(
    data: InteractionData, item_ids: list[str], embed: EmbedFn
) -> tuple[np.ndarray, float]:
    texts = [data.items[i].text() for i in item_ids]
    logger.info("embedding %d item texts of %s", len(texts), data.name)
    start = time.perf_counter()
    embeddings = np.asarray(embed(texts))
    took = time.perf_counter() - start
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {embeddings.shape} for {len(texts)} texts; expected [n, dim]")
    logger.info("embedded %d items in %.1f s (%.0f items/s)", len(texts), took, len(texts) / max(took, 1e-9))
    return embeddings, took


def behavior_embeddings(
    data: InteractionData, item_ids: list[str], config: SasrecConfig
) -> tuple[np.ndarray, dict[str, object]]:
    from training.sasrec import train_sasrec

    logger.info("training SASRec on the training split of %s for behavioural item embeddings", data.name)
    trained = train_sasrec(data, config)
    if trained.item_ids != item_ids:
        raise AssertionError("SASRec item order differs from the catalog order")
    info: dict[str, object] = {
        "holdout_recall@10": trained.best_holdout_recall10,
        "epochs": trained.epochs_run,
        "wall_time_s": trained.wall_time_s,
    }
    return trained.item_embeddings(), info


def tokenize_dataset(
    data: InteractionData,
    config: ItemTokenizerConfig,
    out_dir: Path,
    *,
    embed: EmbedFn | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None,
) -> tuple[Catalog, TokenizerReport]:
    """Give every item of ``data`` a semantic ID; write ``catalog.json``, ``trie.npz``, the report
    and, with ``config.align``, the codebooks the aligned token init needs.

    Items are in :func:`training.data.sort_item_ids` order, which is also the catalog order the
    trie's leaves point into. Popularity and behavioural embeddings see the training part of
    each sequence only. ``embed`` replaces ``config.text_encoder`` (tests); ``precomputed``
    holds source vectors (in that order) already made, so a sweep over index shapes embeds the
    text and trains SASRec once.
    """
    started = time.perf_counter()
    item_ids = sort_item_ids(data.items)
    if not item_ids:
        raise ValueError(f"dataset {data.name!r} has no items to tokenize")
    config.check_fits(len(item_ids))  # before any embedding work
    embeddings: dict[str, np.ndarray] = {}
    extra: dict[str, object] = {"dataset": data.name, "config": config.model_dump()}
    embed_time = 0.0
    for source in config.sources:
        if precomputed is not None and source in precomputed:
            embeddings[source] = np.asarray(precomputed[source])
        elif source == SEMANTIC:
            embed_fn = embed if embed is not None else text_embedder(config)
            embeddings[source], embed_time = semantic_embeddings(data, item_ids, embed_fn)
        else:
            embeddings[source], extra["sasrec"] = behavior_embeddings(data, item_ids, config.sasrec)

    scheme, sids, report, codebooks = build_item_index(embeddings, config)
    popularity = train_item_counts(data)
    catalog = Catalog(
        scheme,
        (
            CatalogItem(
                item_id=i,
                title=data.items[i].title,
                sid=sid,
                popularity=popularity.get(i, 0),
                category=data.items[i].categories,
            )
            for i, sid in zip(item_ids, sids, strict=True)
        ),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog.save(out_dir / CATALOG_FILE)
    CompiledTrie.build([item.sid for item in catalog]).save(out_dir / TRIE_FILE)
    (out_dir / CODEBOOKS_FILE).unlink(missing_ok=True)
    if config.align:
        codebooks.save(out_dir / CODEBOOKS_FILE)
    report = replace(
        report,
        embed_time_s=embed_time,
        wall_time_s=time.perf_counter() - started,
        extra={**report.extra, **extra},
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    logger.info("wrote %s, %s and %s to %s", CATALOG_FILE, TRIE_FILE, REPORT_FILE, out_dir)
    return catalog, report
