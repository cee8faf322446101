"""Task-mixture builders: shapes, counts per weight, determinism, and no validation/test leakage."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from word_tokenizer import WordTokenizer

from model.catalog import Catalog, CatalogItem
from model.semantic_id import SidScheme
from training.data import Example, InteractionData, ItemText, leave_one_out
from training.encoding import IGNORE, encode_example, encode_samples
from training.task_context import TaskContext, level_sources
from training.task_mixture import (
    BPR,
    MASKED_ITEM,
    NEGATIVE,
    NEXT_ITEM,
    PREFIX_RECON,
    SID_TO_TITLE,
    SOURCE_RECON,
    TASKS,
    TITLE_TO_SID,
    TaskMixture,
    TaskSpec,
)
from training.task_prompts import MASK, render_prompt, trimmed
from training.tasks import NO, YES, build_mixture
from training.train_config import TrainConfig

# Levels: two semantic, one behavioural, one disambiguation (a dual-source ID).
SCHEME = SidScheme((3, 3, 2, 2))
SOURCES = ["semantic", "semantic", "behavior", "disambiguation"]
NUM_ITEMS = 30


def _catalog() -> Catalog:
    return Catalog(
        SCHEME,
        [
            CatalogItem(f"i{n}", f"Title {n}", (n % 3, (n // 3) % 3, (n // 9) % 2, n // 18))
            for n in range(NUM_ITEMS)
        ],
    )


def _data() -> InteractionData:
    """Users with distinct items in each sequence (no re-buys), lengths 2..9."""
    rng = random.Random(7)
    sequences = {f"u{u}": rng.sample([f"i{n}" for n in range(NUM_ITEMS)], 2 + u % 8) for u in range(40)}
    items = {f"i{n}": ItemText(f"i{n}", f"Title {n}", brand=f"Brand {n % 4}") for n in range(NUM_ITEMS)}
    return InteractionData("Toy", sequences, items, Path("toy"))


@pytest.fixture
def tok_dir(tmp_path: Path) -> Path:
    (tmp_path / "tokenizer_report.json").write_text(json.dumps({"extra": {"level_sources": SOURCES}}))
    return tmp_path


@pytest.fixture
def ctx(tok_dir: Path) -> TaskContext:
    data = _data()
    return TaskContext.build(data, _catalog(), leave_one_out(data, max_history=5).train, tok_dir, 5)


def _all_on(weight: float = 1.0) -> TaskMixture:
    return TaskMixture(**{t: TaskSpec(enabled=True, weight=weight) for t in TASKS})


def test_level_sources_from_the_report_or_single_source(tok_dir: Path, tmp_path: Path) -> None:
    assert level_sources(tok_dir, 4) == SOURCES
    empty = tmp_path / "none"
    empty.mkdir()
    assert level_sources(empty, 3) == ["semantic", "semantic", "disambiguation"]


def test_every_task_builds_examples_of_its_shape(ctx: TaskContext) -> None:
    mixture = build_mixture(ctx, _all_on(), seed=0)
    n = len(ctx.train_examples)
    assert set(mixture) == set(TASKS)
    assert all(len(samples) == n for samples in mixture.values())
    catalog = ctx.catalog
    for sample in mixture[NEXT_ITEM]:
        assert sample.answer_tokens == tuple(SCHEME.tokens(catalog[sample.answer_item].sid))
    for sample in mixture[SID_TO_TITLE]:
        assert sample.answer_text == catalog[sample.answer_item].title
        assert SCHEME.format(catalog[sample.answer_item].sid) in sample.header
    for sample in mixture[TITLE_TO_SID]:
        assert catalog[sample.answer_item].title in sample.header
        assert sample.answer_tokens == tuple(SCHEME.tokens(catalog[sample.answer_item].sid))
    directions = set()
    for sample in mixture[SOURCE_RECON]:
        tokens = SCHEME.tokens(catalog[sample.answer_item].sid)
        semantic, behavior = "".join(tokens[:2]), tokens[2]
        if "semantic codes" in sample.header:
            assert semantic in sample.header and sample.answer_tokens == (behavior,)
            directions.add("s->b")
        else:
            assert behavior in sample.header and sample.answer_tokens == tuple(tokens[:2])
            directions.add("b->s")
    assert directions == {"s->b", "b->s"}
    for sample in mixture[PREFIX_RECON]:
        tokens = tuple(SCHEME.tokens(catalog[sample.answer_item].sid))
        k = len(tokens) - len(sample.answer_tokens)
        assert 1 <= k < len(tokens) and sample.answer_tokens == tokens[k:]
        assert "".join(tokens[:k]) + "." in sample.header
    for sample in mixture[MASKED_ITEM]:
        assert sample.mask_at is not None and sample.history[sample.mask_at] == sample.answer_item
        prompt = render_prompt(sample, catalog, with_titles=True)
        assert MASK in prompt and SCHEME.format(catalog[sample.answer_item].sid) not in prompt
        assert len(sample.history) <= ctx.history_len
    for sample in mixture[BPR]:
        assert sample.answer_item in sample.extra_items and len(set(sample.extra_items)) == 2
        for item in sample.extra_items:
            assert SCHEME.format(catalog[item].sid) in sample.footer
    answers = [s.answer_text for s in mixture[NEGATIVE]]
    assert set(answers) == {YES, NO}
    assert 0.3 < answers.count(YES) / len(answers) < 0.7


def test_source_recon_needs_two_sources(tmp_path: Path) -> None:
    data = _data()
    ctx = TaskContext.build(data, _catalog(), leave_one_out(data).train, tmp_path, 5)  # no report
    mixture = build_mixture(ctx, _all_on(), seed=0)
    assert mixture[SOURCE_RECON] == []


def test_no_validation_or_test_target_is_ever_an_answer(ctx: TaskContext) -> None:
    data = _data()
    held_out = {u: set(s[-2:]) for u, s in data.sequences.items() if len(s) >= 3}
    train_items = {i for u, s in data.sequences.items() if len(s) >= 3 for i in s[:-2]}
    mixture = build_mixture(ctx, _all_on(weight=3.0), seed=1)
    checked = 0
    for task, samples in mixture.items():
        for sample in samples:
            if sample.answer_item is not None:
                assert sample.answer_item in train_items, (task, sample)
            if sample.user_id is not None:
                train_part = data.sequences[sample.user_id][:-2]
                assert set(sample.history) <= set(train_part), (task, sample)
                if sample.answer_item is not None:
                    assert sample.answer_item not in held_out[sample.user_id], (task, sample)
                    checked += 1
                # BPR/negative negatives are never the user's training items
                for item in sample.extra_items:
                    assert item == sample.answer_item or item not in train_part, (task, sample)
    assert checked > 100


def test_weights_set_the_counts_and_zero_or_off_means_none(ctx: TaskContext) -> None:
    n = len(ctx.train_examples)
    mixture = TaskMixture(
        next_item=TaskSpec(enabled=True, weight=1.0),
        sid_to_title=TaskSpec(enabled=True, weight=0.5),
        bpr=TaskSpec(enabled=True, weight=2.0),
        masked_item=TaskSpec(enabled=True, weight=0.0),
        negative=TaskSpec(enabled=False, weight=3.0),
    )
    built = build_mixture(ctx, mixture, seed=0)
    assert {t: len(s) for t, s in built.items()} == {
        NEXT_ITEM: n,
        SID_TO_TITLE: round(0.5 * n),
        BPR: 2 * n,
    }
    # weight 1 next-item is the split itself, each example once
    assert [s.answer_item for s in built[NEXT_ITEM]] == [e.target for e in ctx.train_examples]


def test_builders_are_deterministic_per_seed(ctx: TaskContext) -> None:
    a = build_mixture(ctx, _all_on(), seed=3)
    b = build_mixture(ctx, _all_on(), seed=3)
    c = build_mixture(ctx, _all_on(), seed=4)
    assert a == b
    assert a[BPR] != c[BPR] and a[MASKED_ITEM] != c[MASKED_ITEM]


def test_trimmed_drops_the_oldest_but_never_the_masked_item(ctx: TaskContext) -> None:
    sample = next(s for s in build_mixture(ctx, _all_on(), seed=0)[MASKED_ITEM] if len(s.history) >= 3)
    current = sample
    while (shorter := trimmed(current)) is not None:
        assert shorter.history[shorter.mask_at] == sample.answer_item  # type: ignore[index]
        assert len(shorter.history) == len(current.history) - 1
        current = shorter
    assert current.history == (sample.answer_item,)


@pytest.mark.parametrize("align", [1, 8])
def test_encoded_samples_carry_loss_on_the_answer_only(ctx: TaskContext, align: int) -> None:
    tokenizer = WordTokenizer()
    config = TrainConfig(
        history_len=5,
        prompt_align=align,
        max_answer_tokens=1,
        prompt_format="lines",
        objective="prompt",
        with_titles=True,
    )
    mixture = build_mixture(ctx, _all_on(weight=0.2), seed=0)
    for task, samples in mixture.items():
        encoded = encode_samples(samples, ctx.catalog, tokenizer, config)
        assert len(encoded) == len(samples)
        for sample, enc in zip(samples, encoded, strict=True):
            assert enc.task == task
            prompt_len = enc.labels.count(IGNORE)
            assert prompt_len % align == 0
            assert enc.labels[:prompt_len] == [IGNORE] * prompt_len
            answer = enc.input_ids[prompt_len:]
            assert enc.labels[prompt_len:] == answer and answer[-1] == tokenizer.eos_token_id
            if sample.answer_text is None:
                assert answer[:-1] == tokenizer.convert_tokens_to_ids(list(sample.answer_tokens))
            else:
                assert answer[:-1] == tokenizer(" " + sample.answer_text)["input_ids"][:1]
    # next-item encodings are exactly the serving prompt encode_example builds
    for sample in mixture[NEXT_ITEM]:
        example = Example(str(sample.user_id), sample.history, str(sample.answer_item))
        expected = encode_example(example, ctx.catalog, tokenizer, config)
        assert expected is not None
        assert encode_samples([sample], ctx.catalog, tokenizer, config)[0].input_ids == expected.input_ids


def test_over_budget_prompts_lose_their_oldest_items(ctx: TaskContext) -> None:
    tokenizer = WordTokenizer()
    samples = [s for s in build_mixture(ctx, _all_on(), seed=0)[BPR] if len(s.history) >= 4][:5]
    full = TrainConfig(history_len=5, prompt_align=1)
    lengths = [e.labels.count(IGNORE) for e in encode_samples(samples, ctx.catalog, tokenizer, full)]
    budget = min(lengths) - 5
    tight = full.model_copy(update={"max_prompt_tokens": budget})
    for sample, enc in zip(samples, encode_samples(samples, ctx.catalog, tokenizer, tight), strict=True):
        assert enc.labels.count(IGNORE) <= budget
        assert enc.input_ids[-len(sample.answer_tokens) - 1 : -1] == tokenizer.convert_tokens_to_ids(
            list(sample.answer_tokens)
        )
