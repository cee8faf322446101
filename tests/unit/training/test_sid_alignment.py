"""LLM-aligned ID-token init: the ridge fit, the codebook file, and the rows written into a real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.semantic_id import SidScheme
from training.sid_alignment import (
    DISAMBIGUATION,
    SidCodebooks,
    codebook_directions,
    fit_alignment,
    init_aligned_sid_embeddings,
    init_codebook_sid_embeddings,
    text_embeddings,
)


def toy_index(seed: int = 0) -> tuple[SidCodebooks, list[tuple[int, ...]]]:
    """Two semantic levels (dim 6), one behavioural level (dim 3), disambiguation; 200 items."""
    rng = np.random.default_rng(seed)
    vectors = [rng.normal(size=(5, 6)), rng.normal(size=(4, 6)), rng.normal(size=(3, 3)), None]
    sources = ["semantic", "semantic", "behavior", DISAMBIGUATION]
    sids = sorted({(int(rng.integers(5)), int(rng.integers(4)), int(rng.integers(3))) for _ in range(200)})
    return SidCodebooks(vectors, sources), [(*sid, 0) for sid in sids]


def test_fit_recovers_an_exact_linear_map() -> None:
    codebooks, sids = toy_index()
    rng = np.random.default_rng(1)
    w_sem, w_beh, bias = rng.normal(size=(6, 8)), rng.normal(size=(3, 8)), rng.normal(size=8)
    vectors = codebooks.vectors
    tokens_true = [vectors[0] @ w_sem + bias, vectors[1] @ w_sem + bias, vectors[2] @ w_beh + bias]
    targets = np.stack([np.mean([tokens_true[lv][sid[lv]] for lv in range(3)], axis=0) for sid in sids])
    fit = fit_alignment(codebooks, sids, targets, ridge=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)
    # Each item's mean code embedding reconstructs its text embedding.
    recon = np.stack([np.mean([fit.token_vectors[lv][sid[lv]] for lv in range(3)], axis=0) for sid in sids])  # type: ignore[index]
    np.testing.assert_allclose(recon, targets, atol=1e-4)
    assert fit.token_vectors[3] is None


def test_fit_rejects_mismatched_inputs() -> None:
    codebooks, sids = toy_index()
    with pytest.raises(ValueError, match="semantic IDs for"):
        fit_alignment(codebooks, sids, np.zeros((len(sids) + 1, 4)))


def test_codebooks_round_trip(tmp_path: Path) -> None:
    codebooks, _ = toy_index()
    codebooks.save(tmp_path / "cb.npz")
    loaded = SidCodebooks.load(tmp_path / "cb.npz")
    assert loaded.sources == codebooks.sources
    assert loaded.vectors[3] is None
    for a, b in zip(loaded.vectors[:3], codebooks.vectors[:3], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_init_writes_aligned_rows_into_a_real_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.base_model import add_sid_tokens, build_tiny_model, sid_token_ids

    codebooks, sids = toy_index()
    titles = [f"soft red lipstick number {i % 7} shade {i % 5}" for i in range(len(sids))]
    base = build_tiny_model(tmp_path / "base", titles, vocab_size=300, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    scheme = SidScheme((5, 4, 3, 1))
    add_sid_tokens(model, tokenizer, scheme)
    ids = sid_token_ids(tokenizer, scheme)
    before = model.get_input_embeddings().weight.detach().clone()
    r2 = init_aligned_sid_embeddings(model, tokenizer, codebooks, sids, titles, ids)
    after = model.get_input_embeddings().weight.detach()
    assert 0 < r2 <= 1
    for level in range(3):
        assert not torch.allclose(after[ids[level]], before[ids[level]])
    torch.testing.assert_close(after[ids[3]], before[ids[3]])  # disambiguation keeps its default
    untouched = sorted(set(range(after.shape[0])) - {i for level in ids for i in level})
    torch.testing.assert_close(after[untouched], before[untouched])
    # The items' mean code embedding is closer to their text embedding than the mean init was.
    target = torch.as_tensor(text_embeddings(model, tokenizer, titles), dtype=torch.float32)

    def error(table: torch.Tensor) -> float:
        recon = torch.stack([table[[ids[lv][sid[lv]] for lv in range(3)]].mean(dim=0) for sid in sids])
        return float(((recon - target) ** 2).sum())

    assert error(after) < error(before)


def test_codebook_directions_keep_inner_products_in_a_wider_space() -> None:
    codebooks, _ = toy_index()
    carried = codebook_directions(codebooks, 8)
    assert carried[3] is None
    for vectors, moved in zip(codebooks.vectors[:3], carried[:3], strict=True):
        assert moved is not None and moved.shape == (vectors.shape[0], 8)
        np.testing.assert_allclose(moved @ moved.T, vectors @ vectors.T, atol=1e-5)
    # One map per source: the two semantic levels share it.
    again = codebook_directions(codebooks, 8)
    np.testing.assert_array_equal(again[0], carried[0])  # deterministic for a seed


def test_codebook_init_keeps_norms_and_takes_directions() -> None:
    codebooks, _ = toy_index()
    scheme_ids = [[10 + i for i in range(5)], [20 + i for i in range(4)], [30 + i for i in range(3)], [40]]
    embedding = torch.nn.Embedding(50, 8)
    torch.nn.init.normal_(embedding.weight, std=0.02)
    model = torch.nn.Module()
    model.get_input_embeddings = lambda: embedding  # type: ignore[method-assign]
    before = embedding.weight.detach().clone()
    written = init_codebook_sid_embeddings(model, codebooks, scheme_ids)
    after = embedding.weight.detach()
    assert written == 12
    carried = codebook_directions(codebooks, 8)
    for level in range(3):
        rows = scheme_ids[level]
        # each row has the level's mean random norm ...
        torch.testing.assert_close(after[rows].norm(dim=1), before[rows].norm(dim=1).mean().expand(len(rows)))
        # ... and points along its centred centroid
        centred = torch.as_tensor(carried[level] - carried[level].mean(axis=0))  # type: ignore[operator]
        cos = torch.nn.functional.cosine_similarity(after[rows], centred.float(), dim=1)
        torch.testing.assert_close(cos, torch.ones(len(rows)))
    others = [i for i in range(50) if i not in {r for level in scheme_ids[:3] for r in level}]
    torch.testing.assert_close(after[others], before[others])  # disambiguation and words untouched
