"""Prompt formats shared by fine-tuning and serving: the one place that defines them.

Two next-item formats:

- ``compact`` (the default): a short instruction, then the history's semantic IDs back to
  back (optionally each followed by its title). It is defined on token ids, piece by piece
  (:class:`CompactFormat`), so the served prompt for a history ``s[:t]`` is *exactly* a prefix
  of the token sequence of ``s``, and item ``t``'s ID tokens follow it. That is what lets
  whole-sequence training (:func:`packed_sequence`) score every item of a user's history in
  one causal pass with the very scores serving computes. Never padded.
- ``lines``: the earlier numbered-lines text ending in an answer cue, one prompt per target
  (kept for bundles trained with it).

Training and serving must produce identical prompts, so both build them here. Prompts
are encoded on their own and the semantic-ID tokens are appended as ids, so the prompt's
tokenization never depends on what follows it.

Prompts can be left-padded to a multiple of ``align`` tokens. The engine scores every beam of
a prompt as a new request that shares the prompt's KV blocks through prefix caching, and only
*full* blocks are shared: an aligned prompt leaves each beam just its own ID prefix to compute
instead of the prompt's partial last block (3.4x faster decoding on Beauty, CPU). Padding is
part of the prompt format, so a model is trained with the alignment it is served with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from model.catalog import CatalogItem
from model.semantic_id import SemanticId, SidScheme

PromptFormat = Literal["compact", "lines"]
PROMPT_FORMATS: tuple[str, ...] = ("compact", "lines")
COMPACT = "compact"
LINES = "lines"
# Label value of a position that carries no loss (transformers' and torch's convention).
IGNORE_INDEX = -100
COMPACT_INSTRUCTION = "Items a user bought, oldest first:"
NEXT_ITEM_INSTRUCTION = "A user bought these items, oldest first. Predict the next item."
ANSWER_CUE = "Next item:"


def next_item_prompt(history: Sequence[CatalogItem], scheme: SidScheme, *, with_titles: bool = True) -> str:
    """The next-item prompt: instruction, numbered history (IDs and optionally titles), answer cue."""
    lines = [NEXT_ITEM_INSTRUCTION]
    for position, item in enumerate(history, start=1):
        sid = scheme.format(item.sid)
        lines.append(f"{position}. {sid} {item.title}" if with_titles else f"{position}. {sid}")
    lines.append(ANSWER_CUE)
    return "\n".join(lines)


def encode_prompt(tokenizer: object, text: str, align: int = 1) -> list[int]:
    """Token ids of a prompt, exactly as both training and serving feed it to the model.

    With ``align > 1`` the ids are left-padded with the pad token (EOS when there is none) to
    a multiple of ``align``.
    """
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])  # type: ignore[operator]
    padding = -len(ids) % align
    if padding:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = tokenizer.eos_token_id  # type: ignore[attr-defined]
        ids = [int(pad_id)] * padding + ids
    return ids


def history_window(history: Sequence[CatalogItem], history_len: int) -> list[CatalogItem]:
    """The items a prompt shows: the last ``history_len`` (the literature's protocol: 20)."""
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    return list(history[-history_len:])


def training_windows(sequence: Sequence[str], history_len: int) -> list[list[str]]:
    """A training sequence cut into windows of at most ``history_len + 1`` items.

    Consecutive windows overlap by one item (stride ``history_len``), so every item from the
    second on is a target exactly once, with at most ``history_len`` items before it, the
    most any served prompt shows. A sequence of fewer than two items has no target: no window.
    """
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    items = list(sequence)
    if len(items) < 2:
        return []
    starts = list(range(0, len(items) - 1, history_len))
    return [items[start : start + history_len + 1] for start in starts]


@dataclass
class CompactFormat:
    """The compact next-item format on token ids: ``header + piece(item_1) + piece(item_2) ...``.

    ``header`` is the instruction, encoded with the tokenizer's special tokens (its BOS, if it
    adds one); an item's piece is its semantic-ID token ids, then, with ``with_titles``, its
    title (`` <title>\n``, cut to ``title_tokens``). Pieces are encoded on their own and
    concatenated, so a prompt never depends on what follows it and every served prompt is a
    prefix of the packed training sequence. Pieces are cached per item.
    """

    tokenizer: object
    scheme: SidScheme
    with_titles: bool = False
    title_tokens: int = 24
    _header: list[int] | None = field(default=None, init=False, repr=False)
    _sid_ids: dict[SemanticId, list[int]] = field(default_factory=dict, init=False, repr=False)
    _titles: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)

    def header(self) -> list[int]:
        if self._header is None:
            ids = self.tokenizer(COMPACT_INSTRUCTION, add_special_tokens=True)["input_ids"]  # type: ignore[operator]
            self._header = [int(i) for i in ids]
        return self._header

    def sid_ids(self, item: CatalogItem) -> list[int]:
        """The token ids of ``item``'s semantic ID: what the model must write for it."""
        ids = self._sid_ids.get(item.sid)
        if ids is None:
            tokens = self.scheme.tokens(item.sid)
            ids = [int(i) for i in self.tokenizer.convert_tokens_to_ids(tokens)]  # type: ignore[attr-defined]
            self._sid_ids[item.sid] = ids
        return ids

    def title_ids(self, item: CatalogItem) -> list[int]:
        ids = self._titles.get(item.item_id)
        if ids is None:
            raw = self.tokenizer(f" {item.title}\n", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
            ids = [int(i) for i in raw][: self.title_tokens]
            self._titles[item.item_id] = ids
        return ids

    def piece(self, item: CatalogItem) -> list[int]:
        return self.sid_ids(item) + self.title_ids(item) if self.with_titles else self.sid_ids(item)

    def prompt(self, history: Sequence[CatalogItem]) -> list[int]:
        """The served prompt for ``history`` (already windowed): header, then each item's piece."""
        ids = list(self.header())
        for item in history:
            ids.extend(self.piece(item))
        return ids

    def packed_sequence(self, items: Sequence[CatalogItem]) -> tuple[list[int], list[int]]:
        """One whole-sequence training example: (input ids, labels).

        The input is ``prompt(items)``; the labels are the ID tokens of every item from the
        second on (:data:`IGNORE_INDEX` elsewhere), so position ``p`` of the labels is the token
        that follows ``prompt(items[:t])`` plus the ID tokens of item ``t`` written so far.
        """
        ids = list(self.header())
        labels = [IGNORE_INDEX] * len(ids)
        for position, item in enumerate(items):
            sid = self.sid_ids(item)
            ids.extend(sid)
            labels.extend(sid if position > 0 else [IGNORE_INDEX] * len(sid))
            if self.with_titles:
                title = self.title_ids(item)
                ids.extend(title)
                labels.extend([IGNORE_INDEX] * len(title))
        return ids, labels
