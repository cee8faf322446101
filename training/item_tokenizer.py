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

This module embeds the items and writes the tokenizer directory; the settings are
``training.tokenizer_config``'s, the index ``training.item_index``'s and the quantization
``training.residual_kmeans``'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.catalog import Catalog, CatalogItem
from model.trie import CompiledTrie
from training.data import InteractionData, sort_item_ids, train_item_counts
from training.item_index import TokenizerReport, build_item_index
from training.sasrec import SasrecConfig
from training.sid_alignment import CODEBOOKS_FILE
from training.text_embeddings import encode_texts
from training.tokenizer_config import MINILM, SEMANTIC, ItemTokenizerConfig

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
TRIE_FILE = "trie.npz"
REPORT_FILE = "tokenizer_report.json"

EmbedFn = Callable[[Sequence[str]], np.ndarray]


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
