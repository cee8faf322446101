"""LLM-aligned initialisation of the semantic-ID token embeddings (Semantic Convergence).

New ID tokens normally start at the mean embedding, so the LLM first has to learn what every
code means from scratch. Here each code starts where its item's text already lives in the
LLM's embedding space: a linear projection ``W_s`` per source (plus a bias) is fitted by ridge
regression so that, for every item, the mean over its quantized levels of ``codebook vector @
W_s + b`` reconstructs the LLM's embedding of the item's text (the mean input embedding of its
title tokens). Each code token is then initialised at ``its codebook vector @ W_s + b``. The
disambiguation level has no codebook and keeps the default (mean) initialisation; an item level
(one token per item) has the items' own vectors as its codebook and is fitted as a source of
its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.semantic_id import SemanticId
from training.tokenizer_config import DISAMBIGUATION

logger = logging.getLogger(__name__)

CODEBOOKS_FILE = "sid_codebooks.npz"


@dataclass(frozen=True)
class SidCodebooks:
    """Per level of the semantic ID: the centroids its codes stand for (None for disambiguation)
    and the source they quantize."""

    vectors: list[np.ndarray | None]
    sources: list[str]

    def save(self, path: Path) -> None:
        arrays = {f"level_{i}": v for i, v in enumerate(self.vectors) if v is not None}
        np.savez_compressed(path, sources=np.array(self.sources), **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> SidCodebooks:
        with np.load(path) as data:
            sources = [str(s) for s in data["sources"]]
            vectors = [data.get(f"level_{i}") for i in range(len(sources))]
        return cls(vectors, sources)


@dataclass(frozen=True)
class AlignmentFit:
    """Token embeddings per quantized level and how well they reconstruct the text embeddings."""

    token_vectors: list[np.ndarray | None]  # per level: [codebook size, llm dim], None = keep default
    r2: float  # share of the text embeddings' variance the items' mean code embedding explains


def _item_features(codebooks: SidCodebooks, sids: list[SemanticId]) -> tuple[np.ndarray, list[str]]:
    """Per item, the mean over quantized levels of its codebook vectors, one column block per source."""
    sources = [s for s in dict.fromkeys(codebooks.sources) if s != DISAMBIGUATION]
    quantized = [level for level, v in enumerate(codebooks.vectors) if v is not None]
    codes = np.asarray(sids, dtype=np.int64)
    blocks = []
    for source in sources:
        levels = [lv for lv in quantized if codebooks.sources[lv] == source]
        vectors = [np.asarray(codebooks.vectors[lv], dtype=np.float64)[codes[:, lv]] for lv in levels]
        blocks.append(np.sum(vectors, axis=0) / len(quantized))
    return np.concatenate(blocks, axis=1), sources


def fit_alignment(
    codebooks: SidCodebooks, sids: list[SemanticId], text_embeddings: np.ndarray, *, ridge: float = 1e-3
) -> AlignmentFit:
    """Ridge-fit ``W_s, b`` so that mean_l(c_l @ W_s(l) + b) ~= the item's LLM text embedding."""
    if len(sids) != text_embeddings.shape[0]:
        raise ValueError(f"{len(sids)} semantic IDs for {text_embeddings.shape[0]} text embeddings")
    features, sources = _item_features(codebooks, sids)
    x = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
    y = np.asarray(text_embeddings, dtype=np.float64)
    gram = x.T @ x + ridge * len(sids) * np.eye(x.shape[1])
    gram[-1, -1] -= ridge * len(sids)  # the bias is not shrunk
    weights = np.linalg.solve(gram, x.T @ y)
    bias = weights[-1]
    residual = y - x @ weights
    r2 = 1.0 - float((residual**2).sum() / max(((y - y.mean(axis=0)) ** 2).sum(), 1e-12))
    per_source, start = {}, 0
    for source in sources:
        dim = next(
            v.shape[1]
            for v, s in zip(codebooks.vectors, codebooks.sources, strict=True)
            if s == source and v is not None
        )
        per_source[source] = weights[start : start + dim]
        start += dim
    tokens = [
        None if v is None else (v.astype(np.float64) @ per_source[s] + bias).astype(np.float32)
        for v, s in zip(codebooks.vectors, codebooks.sources, strict=True)
    ]
    return AlignmentFit(tokens, r2)


def text_embeddings(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> np.ndarray:
    """The LLM's own embedding of each text: the mean input embedding of its tokens."""
    table = model.get_input_embeddings().weight.detach()  # type: ignore[operator]
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float64)
    for row, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if ids:
            out[row] = table[torch.as_tensor(ids)].double().mean(dim=0).cpu().numpy()
    return out


@torch.no_grad()
def init_aligned_sid_embeddings(
    model: torch.nn.Module,
    tokenizer: object,
    codebooks: SidCodebooks,
    sids: list[SemanticId],
    titles: list[str],
    token_ids: list[list[int]],
) -> float:
    """Write the aligned vectors into the input embedding rows ``token_ids[level][code]``; returns R^2.

    Must run after the ID tokens were added and before LoRA wraps the embeddings.
    """
    fit = fit_alignment(codebooks, sids, text_embeddings(model, tokenizer, titles))
    weight = model.get_input_embeddings().weight  # type: ignore[operator]
    written = 0
    for level, vectors in enumerate(fit.token_vectors):
        if vectors is None:
            continue
        rows = torch.as_tensor(token_ids[level][: vectors.shape[0]])
        weight[rows] = torch.as_tensor(vectors[: len(rows)], dtype=weight.dtype, device=weight.device)
        written += len(rows)
    logger.info(
        "aligned init of %d semantic-ID token embeddings from %s codebooks (text reconstruction R^2 %.3f)",
        written,
        "+".join(s for s in dict.fromkeys(codebooks.sources) if s != DISAMBIGUATION),
        fit.r2,
    )
    return fit.r2


def codebook_directions(codebooks: SidCodebooks, dim: int, *, seed: int = 0) -> list[np.ndarray | None]:
    """Per quantized level, its centroids carried into a ``dim``-wide space (None: disambiguation).

    A model trained from scratch has no embedding space to align with, but the codebooks still
    know which codes lie close together (behaviourally or in text). Each source gets one random
    orthonormal map into ``dim`` dimensions (inner products kept exactly when the source is
    narrower than ``dim``, approximately otherwise), shared by its levels so that an item's
    level vectors stay in one space.
    """
    rng = np.random.default_rng(seed)
    maps: dict[str, np.ndarray] = {}
    out: list[np.ndarray | None] = []
    for vectors, source in zip(codebooks.vectors, codebooks.sources, strict=True):
        if vectors is None:
            out.append(None)
            continue
        width = vectors.shape[1]
        if source not in maps:
            gaussian = rng.standard_normal((max(width, dim), min(width, dim)))
            q, _ = np.linalg.qr(gaussian)  # orthonormal columns
            maps[source] = q.T if width <= dim else q  # [width, dim]
        out.append((np.asarray(vectors, dtype=np.float64) @ maps[source]).astype(np.float32))
    return out


@torch.no_grad()
def init_codebook_sid_embeddings(
    model: torch.nn.Module, codebooks: SidCodebooks, token_ids: list[list[int]], *, seed: int = 0
) -> int:
    """Point each ID token's (random) embedding along its codebook centroid; returns rows written.

    For the scratch model: each level's rows keep the mean norm of their random initialisation
    (so the first passes are conditioned as before) but take their directions from the
    centroids, centred on the level's mean, so codes of similar items start close. With tied
    embeddings the output side starts there too: the first level's logits begin as a
    SASRec-like dot product with the behaviour centroids.
    """
    weight = model.get_input_embeddings().weight  # type: ignore[operator]
    written = 0
    for level, vectors in enumerate(codebook_directions(codebooks, weight.shape[1], seed=seed)):
        if vectors is None:
            continue
        rows = torch.as_tensor(token_ids[level][: vectors.shape[0]])
        target = torch.as_tensor(vectors[: len(rows)], dtype=weight.dtype, device=weight.device)
        target = target - target.mean(dim=0, keepdim=True)  # directions around the level's mean
        norms = target.norm(dim=1, keepdim=True).clamp_min(1e-12)
        weight[rows] = target / norms * weight[rows].norm(dim=1).mean()
        written += len(rows)
    logger.info("codebook init of %d semantic-ID token embeddings (scratch model)", written)
    return written
