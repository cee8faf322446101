"""The bundled sentence encoder loads offline and puts similar titles close together."""

from __future__ import annotations

import numpy as np
import pytest

from training.text_embeddings import EMBEDDING_DIM, encode_texts, encoder_path


def test_encoder_is_bundled() -> None:
    path = encoder_path()
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_empty_input_needs_no_model() -> None:
    out = encode_texts([])
    assert out.shape == (0, EMBEDDING_DIM)
    assert out.dtype == np.float32


@pytest.mark.slow
def test_similar_titles_are_closer_than_unrelated_ones() -> None:
    texts = [
        "Hydrating rose face serum 50ml",
        "Moisturizing rose oil face cream",
        "Cordless drill with 18V lithium battery",
        "Stainless steel frying pan 28cm",
    ]
    emb = encode_texts(texts, batch_size=2, show_progress=False)
    assert emb.shape == (4, EMBEDDING_DIM)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[0, 3] + 0.3
    np.testing.assert_allclose(encode_texts(texts[:1], show_progress=False), emb[:1], atol=1e-5)
