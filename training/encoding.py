"""Training examples as token ids: prompts (left-padded to the serving alignment), answers
that alone carry loss, length-bucketed batches, and the answer-only loss."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

import torch
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
from model.semantic_id import SemanticId, SidScheme
from model.topk import PromptBuilder
from training.data import Example
from training.task_context import Sample
from training.task_mixture import NEXT_ITEM
from training.task_prompts import render_prompt, trimmed
from training.train_config import TrainConfig

logger = logging.getLogger(__name__)

IGNORE = IGNORE_INDEX
SEQUENCE = "sequence"  # the task name of whole-sequence next-item examples
# A run of consecutive semantic-ID-shaped tokens (``<a_12><b_3>``); the capture keeps it in split().
# Spelled to start with a literal ``<``, which re scans for 2.4x faster than ``((?:<...>)+)``.
_SID_RUN = re.compile(r"(<[a-z]_[0-9]+>(?:<[a-z]_[0-9]+>)*)")
_SID_PIECE = re.compile(r"<[a-z]_[0-9]+>")
# An added token that could swallow part of a semantic-ID token: it holds one, or ends in a prefix of one.
_OVERLAPS_SID = re.compile(r"<[a-z]_[0-9]+>|<(?:[a-z](?:_[0-9]*)?)?$")


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


@dataclass(frozen=True)
class _PreformattedScheme(SidScheme):
    """A scheme that looks its catalog's IDs up already formatted.

    Prompts name each item ~20 times; formatting its ID every time was 3.7 s of the 5.3 s
    spent rendering Beauty's prompt texts.
    """

    formatted: dict[SemanticId, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, catalog: Catalog) -> Catalog:
        """The same catalog, with this scheme (same prompt texts, rendered faster)."""
        scheme = catalog.scheme
        formatted = {item.sid: scheme.format(item.sid) for item in catalog}
        return Catalog(cls(scheme.codebook_sizes, formatted), catalog)

    def format(self, sid: SemanticId) -> str:
        text = self.formatted.get(sid)
        return text if text is not None else super().format(sid)


class _SplicingEncoder:
    """Prompt ids from an HF fast tokenizer, without matching added tokens in whole prompts.

    Tokenizing whole prompts redoes the same work: an item's line recurs in ~20 prompts, and
    the search for added tokens (the semantic-ID tokens) runs over every character. HF
    tokenizers split a text on its added tokens *before* normalizing and tokenizing the pieces
    between them, so a prompt's ids are its text pieces' ids with the ID tokens' ids spliced
    in, and each distinct piece is tokenized once. :meth:`build` refuses tokenizers for which
    that argument does not hold, and :meth:`encode` checks the first prompts against the
    tokenizer on the whole text.
    """

    SPOT_CHECK = 8

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        token_ids: dict[str, int],
        prefix: list[int],
        suffix: list[int],
    ) -> None:
        self.tokenizer = tokenizer
        self.token_ids = token_ids
        self.prefix, self.suffix = prefix, suffix  # the post-processor's special tokens
        self.pieces: dict[str, list[int]] = {}  # text piece or ID run -> its ids
        self.foreign: set[str] = set()  # ID-like runs with a token outside the scheme
        self.checked = 0

    @classmethod
    def build(cls, tokenizer: object, scheme: SidScheme) -> _SplicingEncoder | None:
        """The splicing encoder, or None where its result could differ from the tokenizer's."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase) or not tokenizer.is_fast:
            return None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or backend.normalizer is not None:
            return None  # normalized added tokens are matched in normalized text: not split first
        added = {t.content: (i, t) for i, t in tokenizer.added_tokens_decoder.items()}
        token_ids: dict[str, int] = {}
        for token in scheme.all_tokens():
            if token not in added:
                return None  # tokenized as plain text
            i, spec = added[token]
            if spec.lstrip or spec.rstrip or spec.single_word:
                return None
            token_ids[token] = i
        others = [c for c in added if c not in token_ids and not _SID_PIECE.fullmatch(c)]
        if any(_OVERLAPS_SID.search(c) for c in others):  # ID-shaped ones: see ``foreign``
            return None
        probe, probe_id = next(iter(token_ids.items()))
        ids = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
        if ids.count(probe_id) != 1:
            return None
        at = ids.index(probe_id)
        return cls(tokenizer, token_ids, ids[:at], ids[at + 1 :])

    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        """``tokenizer(texts, add_special_tokens=False)["input_ids"]`` from the Rust tokenizer directly.

        transformers' call sets the backend's truncation, padding and special-token splitting,
        then converts every encoding to a dict (on Beauty nearly as long as the tokenizing). A
        call on one text sets that state; the rest go straight to ``encode_batch`` in it.
        """
        first = list(self.tokenizer(texts[0], add_special_tokens=False)["input_ids"])
        encodings = self.tokenizer.backend_tokenizer.encode_batch(texts[1:], add_special_tokens=False)
        return [first, *(e.ids for e in encodings)]

    def encode(self, texts: list[str]) -> list[list[int]] | None:
        """Ids of each text exactly as ``tokenizer(text, add_special_tokens=True)``; None if the
        spot check on the first prompts ever encoded found a difference."""
        splits = [_SID_RUN.split(text) for text in texts]  # text, run, text, ..., text
        pieces, foreign = self.pieces, self.foreign
        new_text = list({p: None for parts in splits for p in parts[::2] if p not in pieces})
        if new_text:
            pieces.update(zip(new_text, self._text_ids(new_text), strict=True))
        for parts in splits:
            for run in parts[1::2]:
                if run not in pieces and run not in foreign:
                    run_ids = [self.token_ids.get(t) for t in _SID_PIECE.findall(run)]
                    if None in run_ids:
                        foreign.add(run)
                    else:
                        pieces[run] = [i for i in run_ids if i is not None]
        out: list[list[int]] = []
        for text, parts in zip(texts, splits, strict=True):
            if foreign and not foreign.isdisjoint(parts[1::2]):  # plain text to the tokenizer
                out.append(list(self.tokenizer(text, add_special_tokens=True)["input_ids"]))
            else:
                out.append([*self.prefix, *chain.from_iterable(map(pieces.__getitem__, parts)), *self.suffix])
        for text, ids in zip(texts[: max(0, self.SPOT_CHECK - self.checked)], out, strict=False):
            self.checked += 1
            if ids != list(self.tokenizer(text, add_special_tokens=True)["input_ids"]):
                logger.warning("spliced prompt ids differ from the tokenizer's; tokenizing whole prompts")
                return None
        return out


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
    :class:`_SplicingEncoder`, same ids), so only over-budget ones take the slow path.
    """
    if not samples:
        return []
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    pad_id, align, budget = _pad_id(tokenizer), config.prompt_align, config.max_prompt_tokens
    view = _PreformattedScheme.of(catalog)
    splicer = _SplicingEncoder.build(tokenizer, catalog.scheme)
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


def collate_left(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded batch (answers end-aligned) with position ids that ignore the padding.

    Position ids count real tokens only, so a row reads exactly as it would alone (and as
    served); batch padding never shifts positions.
    """
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, length - n :] = torch.tensor(example.input_ids)
        labels[row, length - n :] = torch.tensor(example.labels)
        attention[row, length - n :] = 1
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "labels": labels}


def _backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and LM head of a causal LM, peft-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    return inner.get_decoder(), inner.get_output_embeddings()  # type: ignore[operator]


def token_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    vocab_ids: torch.Tensor | None = None,
    embedding_dropout: float = 0.0,
) -> torch.Tensor:
    """Mean next-token cross-entropy over every labelled position of a :func:`collate_left` batch.

    Only the labelled positions go through the LM head (a packed sequence labels ~4/5 of its
    tokens, a prompt example only its answer). With ``vocab_ids`` the softmax runs over those
    tokens only for labels that are one of them (the semantic-ID tokens: all the constrained
    search ever scores); other labels (EOS, text answers) keep the full vocabulary.
    ``embedding_dropout`` drops input-embedding units while training (Llama has no dropout of
    its own besides attention).
    """
    backbone, head = _backbone_and_head(model)
    embeds = backbone.embed_tokens(inputs["input_ids"])  # type: ignore[operator]
    if embedding_dropout and model.training:
        embeds = torch.nn.functional.dropout(embeds, embedding_dropout, training=True)
    hidden = backbone(
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
    ).last_hidden_state
    labels = inputs["labels"][:, 1:]
    where = labels != IGNORE
    states = hidden[:, :-1][where]
    targets = labels[where]
    if targets.numel() == 0:
        raise ValueError("a training batch has no labelled position")
    if vocab_ids is None:
        return torch.nn.functional.cross_entropy(head(states).float(), targets)
    size = max(int(targets.max()), int(vocab_ids.max())) + 1
    lookup = torch.full((size,), -1, dtype=torch.long, device=targets.device)
    lookup[vocab_ids] = torch.arange(len(vocab_ids), device=targets.device)
    sid_targets = lookup[targets]
    is_sid = sid_targets >= 0
    total = torch.zeros((), device=states.device)
    if bool(is_sid.any()):
        weight = getattr(head, "weight", None)
        if isinstance(head, torch.nn.Linear) and head.bias is None and weight is not None:
            logits = torch.nn.functional.linear(states[is_sid], weight[vocab_ids])
        else:  # a wrapped head (peft's trainable tokens): full logits, then the ID columns
            logits = head(states[is_sid])[:, vocab_ids]
        total = total + torch.nn.functional.cross_entropy(
            logits.float(), sid_targets[is_sid], reduction="sum"
        )
    if not bool(is_sid.all()):  # text answers and EOS keep the full vocabulary
        rest = ~is_sid
        total = total + torch.nn.functional.cross_entropy(
            head(states[rest]).float(), targets[rest], reduction="sum"
        )
    return total / max(int(targets.numel()), 1)


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
