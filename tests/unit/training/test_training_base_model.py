"""Base models: the tiny random Llama is a loadable HF checkpoint; SID tokens extend its vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from model.semantic_id import SidScheme
from training.base_model import (
    SMOLLM2,
    TINY_SPECIAL_TOKENS,
    add_sid_tokens,
    build_tiny_model,
    resolve_base_model,
)

CORPUS = [
    "A user bought these items, oldest first. Predict the next item.",
    "1. Hydrating Rose Face Serum 30ml",
    "2. Repairing Argan Shampoo 250ml",
    "Next item:",
] * 20
SCHEME = SidScheme((4, 3, 2))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", CORPUS, vocab_size=400, seed=0)


def _load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32
    ), AutoTokenizer.from_pretrained(str(path))


def test_tiny_model_is_a_loadable_checkpoint(tiny_dir: Path) -> None:
    assert (tiny_dir / "config.json").is_file()
    assert list(tiny_dir.glob("*.safetensors"))
    assert (tiny_dir / "tokenizer.json").is_file()
    model, tokenizer = _load(tiny_dir)
    config = model.config
    assert config.model_type == "llama"
    assert config.vocab_size == len(tokenizer) <= 400
    assert config.num_hidden_layers == 2
    assert config.hidden_size // config.num_attention_heads == 64  # what vLLM's CPU attention supports
    assert config.tie_word_embeddings
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), config.hidden_size)


def test_tiny_tokenizer_special_tokens_and_round_trip(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    assert tokenizer.eos_token == tokenizer.bos_token == TINY_SPECIAL_TOKENS[0]
    assert tokenizer.pad_token == TINY_SPECIAL_TOKENS[1]
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "2. Repairing Argan Shampoo 250ml\nNext item:"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Trained on the corpus, BPE merges its words: far fewer tokens than bytes.
    assert len(ids) < len(text) / 2
    # Text outside the corpus still encodes (byte-level fallback) and round-trips.
    odd = "zqxj ünïcødé 42"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_tiny_model_forward_pass(tiny_dir: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    batch = tokenizer(["Next item:"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tiny_model_weights_depend_only_on_the_seed(tmp_path: Path, tiny_dir: Path) -> None:
    same = build_tiny_model(tmp_path / "same", CORPUS, vocab_size=400, seed=0)
    other = build_tiny_model(tmp_path / "other", CORPUS, vocab_size=400, seed=1)
    reference = _load(tiny_dir)[0].state_dict()
    same_state = _load(same)[0].state_dict()
    other_state = _load(other)[0].state_dict()
    assert all(torch.equal(reference[k], same_state[k]) for k in reference)
    assert not all(torch.equal(reference[k], other_state[k]) for k in reference)
    assert (same / "tokenizer.json").read_text() == (tiny_dir / "tokenizer.json").read_text()


def test_add_sid_tokens_adds_every_scheme_token_with_distinct_ids(tiny_dir: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    before = len(tokenizer)
    old_rows = model.get_input_embeddings().weight.detach().clone()
    ids = add_sid_tokens(model, tokenizer, SCHEME)

    tokens = SCHEME.all_tokens()
    assert len(tokens) == 4 + 3 + 2
    assert len(ids) == len(tokens) == len(set(ids))
    assert ids == tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids
    assert len(tokenizer) == before + len(tokens)
    assert all(before <= i < len(tokenizer) for i in ids)

    # The embedding matrix (tied with the output head) grew to the new vocabulary...
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer)
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    # ...keeping the old rows and starting the new ones at (about) their mean.
    assert torch.equal(embeddings[:before], old_rows)
    mean = old_rows.mean(dim=0)
    for row in embeddings[ids]:
        assert torch.allclose(row, mean, atol=1e-3)

    # A semantic ID in text is split into exactly its tokens, not BPE pieces.
    sid = (3, 0, 1)
    encoded = tokenizer(SCHEME.format(sid), add_special_tokens=False)["input_ids"]
    assert encoded == tokenizer.convert_tokens_to_ids(SCHEME.tokens(sid))


def test_add_sid_tokens_survives_a_save_and_reload(tiny_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    ids = add_sid_tokens(model, tokenizer, SCHEME)
    model.save_pretrained(tmp_path / "ext")
    tokenizer.save_pretrained(tmp_path / "ext")
    reloaded_model, reloaded_tokenizer = _load(tmp_path / "ext")
    assert reloaded_tokenizer.convert_tokens_to_ids(SCHEME.all_tokens()) == ids
    assert reloaded_model.config.vocab_size == len(reloaded_tokenizer)
    assert torch.equal(reloaded_model.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_add_sid_tokens_sets_a_missing_pad_token_to_eos(tiny_dir: Path) -> None:
    model, tokenizer = _load(tiny_dir)
    tokenizer.pad_token = None
    add_sid_tokens(model, tokenizer, SidScheme((2,)))
    assert tokenizer.pad_token == tokenizer.eos_token


@pytest.mark.parametrize("bad", ["/nonexistent/base-model", "not-a-model-name"])
def test_resolve_base_model_rejects_a_bad_path_clearly(bad: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        resolve_base_model(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "smollm2" in message and "HF checkpoint" in message


def test_resolve_base_model_rejects_a_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="HF checkpoint"):
        resolve_base_model(str(tmp_path))


def test_resolve_base_model_accepts_a_checkpoint_dir(tiny_dir: Path) -> None:
    assert resolve_base_model(str(tiny_dir)) == tiny_dir


def test_resolve_smollm2_reuses_the_converted_checkpoint(tmp_path: Path) -> None:
    # A finished conversion in the cache is returned as is: no GGUF is read (that takes ~30 s).
    done = tmp_path / "smollm2-135m-instruct"
    done.mkdir()
    (done / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (done / "tokenizer.json").write_text("{}")
    assert resolve_base_model(SMOLLM2, cache_dir=tmp_path) == done
