"""Training examples as token ids: prompts (left-padded to the serving alignment), answers
that alone carry loss, length-bucketed batches, and the answer-only loss."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from model.catalog import Catalog
from model.prompts import encode_prompt, next_item_prompt
from model.topk import PromptBuilder
from training.data import Example
from training.tasks import NEXT_ITEM, Sample, render_prompt, trimmed
from training.train_config import TrainConfig

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
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


def _batch_ids(tokenizer: object, texts: list[str], *, special: bool) -> list[list[int]]:
    """Token ids of each text; one batched (parallel, Rust) call for HF fast tokenizers."""
    if not texts:
        return []
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    return [list(tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]  # type: ignore[operator]


def _pad_left(ids: list[int], tokenizer: object, align: int) -> list[int]:
    padding = -len(ids) % align
    if not padding:
        return ids
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = tokenizer.eos_token_id  # type: ignore[attr-defined]
    return [int(pad_id)] * padding + ids


def prompt_text(sample: Sample, catalog: Catalog, config: TrainConfig) -> str:
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
    alignment); prompts are tokenized in batches, so only over-budget ones take the slow path.
    """
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    out: list[Encoded] = []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        prompts = _batch_ids(tokenizer, [prompt_text(s, catalog, config) for s in part], special=True)
        text_at = [i for i, s in enumerate(part) if s.answer_text is not None]
        texts = _batch_ids(tokenizer, [" " + str(part[i].answer_text) for i in text_at], special=False)
        text_answers = dict(zip(text_at, texts, strict=True))
        for i, (sample, prompt) in enumerate(zip(part, prompts, strict=True)):
            prompt = _pad_left(prompt, tokenizer, config.prompt_align)
            if len(prompt) > config.max_prompt_tokens:
                prompt = _encode_prompt_fitting(sample, catalog, tokenizer, config)
            if i in text_answers:
                answer = text_answers[i][: config.max_answer_tokens]
            else:
                answer = list(tokenizer.convert_tokens_to_ids(list(sample.answer_tokens)))  # type: ignore[attr-defined]
            answer = [*answer, eos]
            out.append(Encoded(prompt + answer, [IGNORE] * len(prompt) + answer, sample.task))
    return out


def length_bucketed_batches(
    data: Sequence[Encoded], batch_size: int, rng: random.Random
) -> Iterator[list[Encoded]]:
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].input_ids), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        yield [data[i] for i in batch]


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def collate_left(batch: Sequence[Encoded], pad_id: int) -> tuple[dict[str, torch.Tensor], int]:
    """Left-padded batch (answers end-aligned) with position ids that ignore the padding, and
    how many final positions hold every row's answer plus the position predicting its first token.

    Position ids count real tokens only, so a row reads exactly as it would alone (and as
    served); batch padding never shifts positions.
    """
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    answer = 1
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, length - n :] = torch.tensor(example.input_ids)
        labels[row, length - n :] = torch.tensor(example.labels)
        attention[row, length - n :] = 1
        answer = max(answer, n - next((i for i, v in enumerate(example.labels) if v != IGNORE), n))
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    inputs = {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "labels": labels}
    return inputs, min(answer + 1, length)


def answer_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
    """Mean next-token loss over the answer tokens of a :func:`collate_left` batch.

    Only the last ``keep`` positions go through the LM head (``logits_to_keep``): the answers
    are a few tokens of a few-hundred-token prompt, and the [tokens, vocab] logits of the whole
    sequence would cost a fifth of the compute and most of the activation memory.
    """
    labels = inputs["labels"]
    logits = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        logits_to_keep=keep,
    ).logits
    targets = labels[:, labels.shape[1] - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def tiny_corpus(
    examples: Sequence[Example], catalog: Catalog, config: TrainConfig, limit: int = 2000
) -> list[str]:
    """Texts the tiny model's tokenizer is trained on: the prompts it will actually read."""
    texts = [item.title for item in catalog]
    for example in examples[:limit]:
        history = [catalog[i] for i in example.history if i in catalog][-config.history_len :]
        texts.append(next_item_prompt(history, catalog.scheme, with_titles=config.with_titles))
    return texts
