"""Prompt templates: the exact text training and serving share, and how it is encoded."""

from __future__ import annotations

import pytest
from model_test_helpers import WordTokenizer, make_catalog

from model.catalog import CatalogItem
from model.prompts import ANSWER_CUE, NEXT_ITEM_INSTRUCTION, encode_prompt, next_item_prompt
from model.semantic_id import SidScheme


def test_prompt_text_with_titles() -> None:
    catalog = make_catalog(12)
    history = [catalog["i3"], catalog["i0"]]
    expected = (
        "A user bought these items, oldest first. Predict the next item.\n"
        "1. <a_0><b_1><c_1> Item 3\n"
        "2. <a_0><b_0><c_0> Item 0\n"
        "Next item:"
    )
    assert next_item_prompt(history, catalog.scheme) == expected


def test_prompt_text_without_titles() -> None:
    catalog = make_catalog(12)
    text = next_item_prompt([catalog["i11"]], catalog.scheme, with_titles=False)
    assert text == f"{NEXT_ITEM_INSTRUCTION}\n1. <a_1><b_1><c_1>\n{ANSWER_CUE}"
    assert "Item 11" not in text


def test_prompt_of_an_empty_history_is_instruction_and_cue() -> None:
    assert next_item_prompt([], SidScheme((2,))) == f"{NEXT_ITEM_INSTRUCTION}\n{ANSWER_CUE}"


def test_prompt_numbers_items_oldest_first_and_ends_with_the_cue() -> None:
    catalog = make_catalog(12)
    history = [catalog[f"i{n}"] for n in (5, 1, 9, 2)]
    lines = next_item_prompt(history, catalog.scheme).split("\n")
    assert lines[0] == NEXT_ITEM_INSTRUCTION
    assert lines[-1] == ANSWER_CUE
    assert [line.split(".")[0] for line in lines[1:-1]] == ["1", "2", "3", "4"]
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:-1]] == ["5", "1", "9", "2"]
    # No trailing whitespace: training appends the target ids right after the cue.
    assert not next_item_prompt(history, catalog.scheme).endswith((" ", "\n"))


def test_prompt_is_deterministic() -> None:
    catalog = make_catalog(12)
    history = list(catalog)[:5]
    assert next_item_prompt(history, catalog.scheme) == next_item_prompt(tuple(history), catalog.scheme)


def test_prompt_refuses_items_that_do_not_fit_the_scheme() -> None:
    bad = CatalogItem("x", "X", (9, 9, 9))
    with pytest.raises(ValueError, match="outside codebook"):
        next_item_prompt([bad], SidScheme((3, 4, 2)))


def test_encode_prompt_adds_special_tokens_and_returns_a_list() -> None:
    tokenizer = WordTokenizer()
    ids = encode_prompt(tokenizer, "hello world")
    assert tokenizer.calls == [("hello world", True)]
    assert isinstance(ids, list)
    assert ids[0] == WordTokenizer.bos_id
    assert ids == tokenizer("hello world", add_special_tokens=True)["input_ids"]
    assert len(ids) == 3


def test_encode_prompt_with_a_real_fast_tokenizer() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>")
    assert encode_prompt(tokenizer, "hello world") == [1, 2, 3]


@pytest.mark.parametrize(("history_len", "max_prompt_tokens"), [(0, 512), (-1, 512), (20, 0)])
def test_prompt_settings_reject_non_positive_sizes(history_len: int, max_prompt_tokens: int) -> None:
    from model.topk import PromptSettings

    with pytest.raises(ValueError, match="must be >= 1"):
        PromptSettings(history_len=history_len, max_prompt_tokens=max_prompt_tokens)


@pytest.mark.parametrize("align", [1, 3, 16])
def test_encode_prompt_left_pads_to_the_alignment_with_the_pad_token(align: int) -> None:
    tokenizer = WordTokenizer()
    tokenizer.pad_token_id = 99  # type: ignore[attr-defined]
    plain = encode_prompt(tokenizer, "a b c d e")
    padded = encode_prompt(tokenizer, "a b c d e", align)
    assert len(padded) % align == 0 and len(padded) - len(plain) < align
    assert padded == [99] * (len(padded) - len(plain)) + plain


def test_encode_prompt_rejects_a_non_positive_alignment() -> None:
    with pytest.raises(ValueError, match="align must be >= 1"):
        encode_prompt(WordTokenizer(), "a", 0)
