"""Item text vectors from a base LLM's hidden states: order, padding, determinism; the tokenizer option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.base_model import build_tiny_model
from training.data import load_lcrec
from training.item_tokenizer import REPORT_FILE, tokenize_dataset
from training.llm_embeddings import encode_texts_with_llm
from training.sid_alignment import CODEBOOKS_FILE, SidCodebooks
from training.synthetic import generate_synthetic
from training.tokenizer_config import ItemTokenizerConfig

TEXTS = [
    "Rose water facial toner",
    "Matte red lipstick, long lasting, 24 hour wear, vegan and cruelty free",
    "",
    "Shampoo",
    "Argan oil hair mask for dry and damaged hair with a very long description " * 4,
]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("llm") / "base", TEXTS * 20, vocab_size=300, seed=0)


def test_vectors_are_normalised_rows_in_input_order(tiny_llm: Path) -> None:
    vectors = encode_texts_with_llm(TEXTS, tiny_llm, max_tokens=16, batch_size=2)
    assert vectors.shape == (len(TEXTS), 128)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # each row is the text's own vector, whatever it was batched with (right padding + mask)
    for i, text in enumerate(TEXTS):
        alone = encode_texts_with_llm([text], tiny_llm, max_tokens=16)
        np.testing.assert_allclose(alone[0], vectors[i], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[3], atol=1e-3)  # different texts, different vectors


def test_vectors_are_deterministic_and_truncated(tiny_llm: Path) -> None:
    first = encode_texts_with_llm(TEXTS, tiny_llm, max_tokens=8)
    np.testing.assert_array_equal(first, encode_texts_with_llm(TEXTS, tiny_llm, max_tokens=8))
    longer = encode_texts_with_llm(TEXTS, tiny_llm, max_tokens=64)
    assert not np.allclose(first[4], longer[4], atol=1e-4)  # the long text was cut at 8 tokens
    np.testing.assert_allclose(first[3], longer[3], atol=1e-5)  # "Shampoo" fits either way


def test_no_texts_and_bad_settings(tiny_llm: Path) -> None:
    assert encode_texts_with_llm([], tiny_llm).shape == (0, 128)
    with pytest.raises(ValueError, match="max_tokens"):
        encode_texts_with_llm(TEXTS, tiny_llm, max_tokens=0)


def test_text_encoder_is_validated(tiny_llm: Path, tmp_path: Path) -> None:
    assert ItemTokenizerConfig().text_encoder == "minilm"
    assert ItemTokenizerConfig(text_encoder="smollm2").text_encoder == "smollm2"
    assert ItemTokenizerConfig(text_encoder=str(tiny_llm)).text_encoder == str(tiny_llm)
    with pytest.raises(ValueError, match="text_encoder"):
        ItemTokenizerConfig(text_encoder=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="text_max_tokens"):
        ItemTokenizerConfig(text_max_tokens=0)


def test_tokenize_with_an_llm_text_encoder(tiny_llm: Path, tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=40, num_items=30, num_categories=3))
    config = ItemTokenizerConfig(levels=2, codebook_size=4, text_encoder=str(tiny_llm), text_max_tokens=16)
    catalog, _ = tokenize_dataset(data, config, tmp_path / "out")
    assert len({item.sid for item in catalog}) == len(catalog) == 30
    saved = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert saved["extra"]["config"]["text_encoder"] == str(tiny_llm)
    # the codes quantize the LLM's 128-d hidden states, not the 384-d sentence vectors: the
    # first level's centroids are means of the items' LLM vectors
    codebooks = SidCodebooks.load(tmp_path / "out" / CODEBOOKS_FILE)
    first = codebooks.vectors[0]
    assert first is not None and first.shape == (4, 128)
    texts = [data.items[item.item_id].text() for item in catalog]
    vectors = encode_texts_with_llm(texts, tiny_llm, max_tokens=16)
    codes = np.array([item.sid[0] for item in catalog])
    for code in range(4):
        np.testing.assert_allclose(first[code], vectors[codes == code].mean(0), atol=1e-4)
    again, _ = tokenize_dataset(data, config, tmp_path / "again")
    assert [i.sid for i in again] == [i.sid for i in catalog]
