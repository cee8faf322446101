"""Training examples as token ids: prompts (the served ones for next-item, left-padded to the
serving alignment otherwise) and answers, with labels on the answers only.

Batching is ``training.batches``'s, the loss ``training.loss``'s, and the fast path of prompt
tokenization ``training.prompt_splicing``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from model.catalog import Catalog
from model.prompts import (
    COMPACT,
    COMPACT_INSTRUCTION,
    IGNORE_INDEX,
    CompactFormat,
    encode_prompt,
    next_item_prompt,
    training_windows,
)
from model.topk import PromptBuilder
from training.data import Example
from training.prompt_splicing import PreformattedScheme, SplicingEncoder
from training.task_context import Sample
from training.task_mixture import NEXT_ITEM
from training.task_prompts import render_prompt, trimmed
from training.train_config import TrainConfig

IGNORE = IGNORE_INDEX
SEQUENCE = "sequence"  # the task name of whole-sequence next-item examples


@dataclass(frozen=True)
class Encoded:
    """One example's token ids, its labels (IGNORE on the prompt) and the task it came from."""

    input_ids: list[int]
    labels: list[int]
    task: str = NEXT_ITEM


def encode_example(
    example: Example, catalog: Catalog, tokenizer: object, config: TrainConfig
) -> Encoded | None:
    """Prompt ids + answer ids (the target's SID tokens, then EOS); loss only on the answer."""
    target = catalog.get(example.target)
    if target is None:
        return None
    prompt = PromptBuilder(catalog, tokenizer, config.prompt_settings()).encode(example.history)
    answer = list(tokenizer.convert_tokens_to_ids(catalog.scheme.tokens(target.sid)))  # type: ignore[attr-defined]
    answer.append(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    return Encoded(prompt + answer, [IGNORE] * len(prompt) + answer)


def encode_sequences(
    sequences: Sequence[Sequence[str]], catalog: Catalog, tokenizer: object, config: TrainConfig
) -> list[Encoded]:
    """Whole-sequence next-item examples: every training window of every user, packed.

    Each window (``model.prompts.training_windows``) is the compact format's token sequence of
    its items, with the loss on the ID tokens of every item from the second on; the served
    prompt of each prefix is a prefix of it. Items outside the catalog are skipped.
    """
    fmt = CompactFormat(tokenizer, catalog.scheme, with_titles=config.with_titles)
    out: list[Encoded] = []
    for sequence in sequences:
        known = [item for item in sequence if item in catalog]
        for window in training_windows(known, config.history_len):
            ids, labels = fmt.packed_sequence([catalog[i] for i in window])
            out.append(Encoded(ids, labels, SEQUENCE))
    return out


def _batch_ids(tokenizer: object, texts: list[str], *, special: bool) -> list[list[int]]:
    """Token ids of each text; one batched (parallel, Rust) call for HF fast tokenizers."""
    if not texts:
        return []
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    return [list(tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]  # type: ignore[operator]


def _pad_id(tokenizer: object) -> int:
    """The id prompts are left-padded with: the pad token, EOS where there is none (as serving)."""
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = tokenizer.eos_token_id  # type: ignore[attr-defined]
    return int(pad_id)


def _pad_left(ids: list[int], pad_id: int, align: int) -> list[int]:
    padding = -len(ids) % align
    return [pad_id] * padding + ids if padding else ids


def prompt_text(sample: Sample, catalog: Catalog, config: TrainConfig) -> str:
    """A sample's prompt text; compact next-item prompts are built on token ids instead
    (:func:`encode_samples`), so for them this is only the instruction (the tiny corpus's text)."""
    if sample.task == NEXT_ITEM and config.prompt_format == COMPACT:
        return COMPACT_INSTRUCTION
    if sample.task == NEXT_ITEM:
        items = [catalog[i] for i in sample.history if i in catalog][-config.history_len :]
        return next_item_prompt(items, catalog.scheme, with_titles=config.with_titles)
    return render_prompt(sample, catalog, config.with_titles)


def _encode_prompt_fitting(
    sample: Sample, catalog: Catalog, tokenizer: object, config: TrainConfig
) -> list[int]:
    """The slow path for a prompt over budget: drop the oldest history items until it fits."""
    if sample.task == NEXT_ITEM:
        return PromptBuilder(catalog, tokenizer, config.prompt_settings()).encode(sample.history)
    align = config.prompt_align
    current: Sample | None = sample
    ids: list[int] = []
    while current is not None:
        ids = encode_prompt(tokenizer, render_prompt(current, catalog, config.with_titles), align)
        if len(ids) <= config.max_prompt_tokens:
            break
        current = trimmed(current)
    return ids


def encode_samples(
    samples: Sequence[Sample], catalog: Catalog, tokenizer: object, config: TrainConfig, chunk: int = 2048
) -> list[Encoded]:
    """Prompt + answer ids of every sample, with labels on the answer only.

    Next-item prompts are exactly :func:`encode_example`'s (the serving template and
    alignment); prompts are tokenized in batches (with HF fast tokenizers by
    :class:`SplicingEncoder`, same ids), so only over-budget ones take the slow path.
    """
    if not samples:
        return []
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    pad_id, align, budget = _pad_id(tokenizer), config.prompt_align, config.max_prompt_tokens
    view = PreformattedScheme.of(catalog)
    splicer = SplicingEncoder.build(tokenizer, catalog.scheme)
    compact = (
        PromptBuilder(catalog, tokenizer, config.prompt_settings())
        if config.prompt_format == COMPACT
        else None
    )
    answers: dict[tuple[str, ...], list[int]] = {}  # answer tokens recur (an item is ~20 targets)
    out: list[Encoded] = []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        texts = [prompt_text(s, view, config) for s in part]
        prompts = splicer.encode(texts) if splicer is not None else None
        if prompts is None:  # not an HF fast tokenizer, or the spot check failed: whole prompts
            splicer = None
            prompts = _batch_ids(tokenizer, texts, special=True)
        text_at = [i for i, s in enumerate(part) if s.answer_text is not None]
        answer_texts = [" " + str(part[i].answer_text) for i in text_at]
        text_answers = dict(zip(text_at, _batch_ids(tokenizer, answer_texts, special=False), strict=True))
        for i, (sample, prompt) in enumerate(zip(part, prompts, strict=True)):
            if compact is not None and sample.task == NEXT_ITEM:  # the served prompt, exactly
                prompt = compact.encode(sample.history)
            else:
                prompt = _pad_left(prompt, pad_id, align)
                if len(prompt) > budget:
                    prompt = _encode_prompt_fitting(sample, catalog, tokenizer, config)
            if i in text_answers:
                answer = text_answers[i][: config.max_answer_tokens]
            else:
                tokens = sample.answer_tokens
                if tokens not in answers:
                    answers[tokens] = list(tokenizer.convert_tokens_to_ids(list(tokens)))  # type: ignore[attr-defined]
                answer = answers[tokens]
            answer = [*answer, eos]
            out.append(Encoded(prompt + answer, [IGNORE] * len(prompt) + answer, sample.task))
    return out


def tiny_corpus(
    examples: Sequence[Example], catalog: Catalog, config: TrainConfig, limit: int = 2000
) -> list[str]:
    """Texts the tiny model's tokenizer is trained on: the prompts it will actually read."""
    texts = [item.title for item in catalog]
    if config.prompt_format == COMPACT:  # the instruction; the IDs are added tokens
        return [*texts, COMPACT_INSTRUCTION]
    for example in examples[:limit]:
        history = [catalog[i] for i in example.history if i in catalog][-config.history_len :]
        texts.append(next_item_prompt(history, catalog.scheme, with_titles=config.with_titles))
    return texts
