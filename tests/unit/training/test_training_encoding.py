"""encode_samples' fast path: prompts spliced from cached pieces are exactly the tokenizer's ids.

The reference is the whole-prompt path (``SplicingEncoder.build`` disabled): each prompt text
through the tokenizer, as before the fast path existed, and serving's ``PromptBuilder`` for
next-item prompts. Titles hold what could break a splice: special tokens, semantic-ID tokens
of the scheme and ID-shaped strings outside it, doubled and trailing spaces, non-ASCII.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from tokenizers import AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from word_tokenizer import WordTokenizer

from model.catalog import Catalog, CatalogItem
from model.prompts import encode_prompt
from model.semantic_id import SidScheme
from model.topk import PromptBuilder
from training import encoding, prompt_splicing
from training.base_model import build_tiny_model
from training.data import InteractionData, ItemText, leave_one_out
from training.encoding import Encoded, encode_samples, prompt_text
from training.prompt_splicing import SplicingEncoder
from training.task_context import Sample, TaskContext
from training.task_mixture import NEXT_ITEM, TASKS, TaskMixture, TaskSpec
from training.tasks import build_mixture
from training.train_config import TrainConfig

SCHEME = SidScheme((4, 4, 3))
# The numbered-lines prompt, one example per target: the earlier recipe, still supported.
LINES: dict[str, str] = {"prompt_format": "lines", "objective": "prompt"}
SOURCES = ["semantic", "behavior", "disambiguation"]  # dual-source: source_recon is on
TITLES = [
    "Lip Gloss",
    "Eye <|endoftext|> Liner",
    "Gel <a_1><b_2> Polish",  # the scheme's own tokens inside a title
    "Mask <z_5> Kit <a_9>",  # ID-shaped, outside the scheme: plain text
    "Cream  ",
    "  Sérum – 50ml (Rose)",
    "Nail\tFile",
    "Shampoo 2-in-1, 400ml",
]
NUM_ITEMS = 24


def _catalog() -> Catalog:
    return Catalog(
        SCHEME,
        [
            CatalogItem(f"i{n}", f"{TITLES[n % len(TITLES)]} {n}" if n % 3 else TITLES[n % len(TITLES)],
                        (n % 4, (n // 4) % 4, n // 16))
            for n in range(NUM_ITEMS)
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> TaskContext:
    tok_dir = tmp_path_factory.mktemp("index")
    (tok_dir / "tokenizer_report.json").write_text(json.dumps({"extra": {"level_sources": SOURCES}}))
    rng = random.Random(3)
    items = [f"i{n}" for n in range(NUM_ITEMS)]
    data = InteractionData(
        "Toy",
        {f"u{u}": rng.sample(items, 3 + u % 12) for u in range(40)},
        {i: ItemText(i, c.title, brand="Brand") for i, c in zip(items, _catalog(), strict=True)},
        Path("toy"),
    )
    return TaskContext.build(data, _catalog(), leave_one_out(data, max_history=12).train, tok_dir, 12)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, ctx: TaskContext) -> Path:
    corpus = [item.title for item in ctx.catalog] * 4 + ["A user bought these items. Next item:"]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus, vocab_size=400)


def _tokenizer(tiny_dir: Path, tokens: Sequence[str | AddedToken] = ()) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    tokenizer.add_tokens(list(tokens) or SCHEME.all_tokens())
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path) -> PreTrainedTokenizerBase:
    return _tokenizer(tiny_dir)


def _mixture(ctx: TaskContext, with_titles: bool) -> list[Sample]:
    mixture = TaskMixture(**{t: TaskSpec(enabled=True, weight=0.5) for t in TASKS})
    samples = [
        s for task in build_mixture(ctx, mixture, seed=1, with_titles=with_titles).values() for s in task
    ]
    assert {s.task for s in samples} == set(TASKS)
    return samples


def _reference(
    samples: Sequence[Sample], catalog: Catalog, tokenizer: object, config: TrainConfig
) -> list[Encoded]:
    """encode_samples on whole prompts (the path before splicing)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SplicingEncoder, "build", classmethod(lambda cls, tok, scheme: None))
        return encode_samples(samples, catalog, tokenizer, config)


def _check_prompts(
    samples: Sequence[Sample],
    encoded: Sequence[Encoded],
    catalog: Catalog,
    tokenizer: object,
    config: TrainConfig,
) -> int:
    """Each prompt is the tokenizer's on the whole text and, for next-item, serving's; returns
    how many were over budget (trimmed by the slow path instead)."""
    builder = PromptBuilder(catalog, tokenizer, config.prompt_settings())
    over = 0
    for sample, enc in zip(samples, encoded, strict=True):
        prompt = enc.input_ids[: enc.labels.count(encoding.IGNORE)]
        whole = encode_prompt(tokenizer, prompt_text(sample, catalog, config), config.prompt_align)
        if len(whole) > config.max_prompt_tokens:
            over += 1
        else:
            assert prompt == whole
        if sample.task == NEXT_ITEM:  # byte-identical to serving's prompt
            assert prompt == builder.encode(sample.history)
    return over


@pytest.mark.parametrize("with_titles", [True, False])
@pytest.mark.parametrize(("align", "budget"), [(1, 512), (16, 512), (16, 96), (1, 40)])
def test_spliced_encoding_equals_the_whole_prompt_tokenizer(
    ctx: TaskContext, tokenizer: PreTrainedTokenizerBase, with_titles: bool, align: int, budget: int,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    assert SplicingEncoder.build(tokenizer, SCHEME) is not None  # the fast path is the one tested
    config = TrainConfig(
        **LINES, history_len=12, with_titles=with_titles, prompt_align=align, max_prompt_tokens=budget
    )
    samples = _mixture(ctx, with_titles)
    with caplog.at_level(logging.WARNING, logger=prompt_splicing.__name__):
        fast = encode_samples(samples, ctx.catalog, tokenizer, config, chunk=64)
    assert "differ" not in caplog.text  # the spot check passed: no fallback
    assert fast == _reference(samples, ctx.catalog, tokenizer, config)
    over = _check_prompts(samples, fast, ctx.catalog, tokenizer, config)
    assert (over > 0) == (budget < 512)  # the tight budgets do reach the slow path


def test_splicer_equals_the_tokenizer_on_awkward_texts(tokenizer: PreTrainedTokenizerBase) -> None:
    texts = [
        "<a_0>",
        "<a_0><b_1><c_2>",
        "x<a_3>y<b_0> <c_1>  \n",
        "<a_9><b_1> foreign level",
        "<|endoftext|><a_1>",
        "plain text, no IDs",
        "1. <a_1><b_1><c_0> Lip Gloss\n2. <a_2><b_3><c_1> Cream  \nNext item:",
    ]
    splicer = SplicingEncoder.build(tokenizer, SCHEME)
    assert splicer is not None
    assert splicer.encode(texts) == [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    assert splicer.foreign == {"<a_9><b_1>"}


def test_tokenizers_it_cannot_splice_for_take_the_whole_prompt_path(tiny_dir: Path) -> None:
    tokens = SCHEME.all_tokens()
    assert SplicingEncoder.build(WordTokenizer(), SCHEME) is None
    assert SplicingEncoder.build(_tokenizer(tiny_dir, ["<unrelated>"]), SCHEME) is None  # no ID tokens
    stripping = [AddedToken(t, lstrip=True) for t in tokens]
    assert SplicingEncoder.build(_tokenizer(tiny_dir, stripping), SCHEME) is None
    assert SplicingEncoder.build(_tokenizer(tiny_dir, [*tokens, "x<a_"]), SCHEME) is None  # overlaps IDs
    assert SplicingEncoder.build(_tokenizer(tiny_dir, [*tokens, "<d_0>"]), SCHEME) is not None


def test_a_failed_spot_check_falls_back_to_whole_prompts(
    ctx: TaskContext, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    config = TrainConfig(**LINES, history_len=12, prompt_align=16, with_titles=True)
    samples = _mixture(ctx, with_titles=True)
    expected = _reference(samples, ctx.catalog, tokenizer, config)
    monkeypatch.setattr(SplicingEncoder, "_text_ids", lambda self, texts: [[0] for _ in texts])
    with caplog.at_level(logging.WARNING, logger=prompt_splicing.__name__):
        assert encode_samples(samples, ctx.catalog, tokenizer, config, chunk=64) == expected
    assert "differ" in caplog.text


def test_word_tokenizer_takes_the_whole_prompt_path(ctx: TaskContext) -> None:
    tokenizer = WordTokenizer()
    config = TrainConfig(**LINES, history_len=12, prompt_align=8, max_prompt_tokens=60, with_titles=True)
    samples = _mixture(ctx, with_titles=True)
    encoded = encode_samples(samples, ctx.catalog, tokenizer, config)
    assert _check_prompts(samples, encoded, ctx.catalog, tokenizer, config) > 0  # some over budget


def test_compact_next_item_prompts_are_the_served_prompts(
    ctx: TaskContext, tokenizer: PreTrainedTokenizerBase
) -> None:
    """One example per target in the compact format: the prompt is serving's, token for token."""
    config = TrainConfig(objective="prompt", history_len=12)
    samples = [s for s in _mixture(ctx, with_titles=False) if s.task == NEXT_ITEM][:60]
    encoded = encode_samples(samples, ctx.catalog, tokenizer, config)
    builder = PromptBuilder(ctx.catalog, tokenizer, config.prompt_settings())
    for sample, enc in zip(samples, encoded, strict=True):
        prompt = builder.encode(sample.history)
        assert enc.input_ids[: len(prompt)] == prompt
        assert enc.labels[: len(prompt)] == [encoding.IGNORE] * len(prompt)
        answer = tokenizer.convert_tokens_to_ids(list(sample.answer_tokens))
        assert enc.input_ids[len(prompt) :] == [*answer, tokenizer.eos_token_id]
