"""What the task builders read and produce: the training split's sequences, the items they may
name, each ID level's source, and :class:`Sample` (one example before tokenization).

Leakage rule: a user's sequence ``s`` contributes only its training part ``s[:-2]``, and
item-level tasks only use items that occur in some training part (``TaskContext.train_items``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from model.catalog import Catalog
from training.data import MIN_EVAL_LENGTH, Example, InteractionData
from training.tokenizer_config import DISAMBIGUATION

TOKENIZER_REPORT = "tokenizer_report.json"
MAX_TEXT_CHARS = 256

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One example before tokenization.

    The prompt is ``header``, then ``history`` as numbered lines (``[MASK]`` at ``mask_at``),
    then ``footer``; for ``next_item`` the serving template is used instead. The answer is
    ``answer_tokens`` (semantic-ID tokens) or, if ``answer_text`` is set, that text.
    ``answer_item`` is the item the answer names (None for yes/no) and ``user_id`` the user
    whose training history it came from (None for item-level tasks): what leakage tests check.
    """

    task: str
    header: str = ""
    history: tuple[str, ...] = ()
    footer: str = ""
    answer_tokens: tuple[str, ...] = ()
    answer_text: str | None = None
    answer_item: str | None = None
    user_id: str | None = None
    mask_at: int | None = None
    extra_items: tuple[str, ...] = field(default=())  # other items named in the prompt (candidates)


def training_sequences(data: InteractionData) -> dict[str, list[str]]:
    """Each user's training part ``s[:-2]`` (users with enough items for a split only)."""
    return {u: list(s[:-2]) for u, s in data.sequences.items() if len(s) >= MIN_EVAL_LENGTH}


def level_sources(tokenizer_dir: Path, num_levels: int) -> list[str]:
    """Which source each ID level quantizes (``semantic``, ``behavior``; ``disambiguation`` or
    ``item`` for the last level).

    Read from the tokenizer report; an older tokenizer dir without it is one text source.
    """
    path = tokenizer_dir / TOKENIZER_REPORT
    try:
        sources = json.loads(path.read_text())["extra"]["level_sources"]
    except (OSError, ValueError, KeyError, TypeError):
        sources = None
    if not isinstance(sources, list) or len(sources) != num_levels:
        return ["semantic"] * (num_levels - 1) + [DISAMBIGUATION]
    return [str(s) for s in sources]


@dataclass
class TaskContext:
    """What the builders read: the catalog, the training split, item texts, the ID's sources."""

    catalog: Catalog
    train_examples: list[Example]  # next-item training examples (already sampled, if asked)
    sequences: dict[str, list[str]]  # training parts s[:-2]
    item_text: dict[str, str]
    sources: list[str]  # per level of the ID
    history_len: int
    train_items: list[str] = field(init=False)
    _user_items: dict[str, set[str]] = field(init=False)
    _tokens: dict[str, tuple[str, ...]] = field(init=False)

    def __post_init__(self) -> None:
        scheme = self.catalog.scheme
        self._tokens = {item.item_id: tuple(scheme.tokens(item.sid)) for item in self.catalog}
        seen = dict.fromkeys(i for seq in self.sequences.values() for i in seq if i in self._tokens)
        self.train_items = list(seen)
        self._user_items = {u: set(s) for u, s in self.sequences.items()}

    @classmethod
    def build(
        cls,
        data: InteractionData,
        catalog: Catalog,
        train_examples: list[Example],
        tokenizer_dir: Path,
        history_len: int,
    ) -> TaskContext:
        return cls(
            catalog=catalog,
            train_examples=train_examples,
            sequences=training_sequences(data),
            item_text={i: t.text(MAX_TEXT_CHARS) for i, t in data.items.items()},
            sources=level_sources(tokenizer_dir, catalog.scheme.num_levels),
            history_len=history_len,
        )

    def sid_tokens(self, item_id: str) -> tuple[str, ...]:
        return self._tokens[item_id]

    def known(self, item_id: str) -> bool:
        return item_id in self._tokens

    def negative(self, user_id: str, rng: random.Random) -> str:
        """A catalog item not in the user's training part (uniform; rejection sampling)."""
        have = self._user_items.get(user_id, set())
        for _ in range(100):
            item = self.catalog.at(rng.randrange(len(self.catalog))).item_id
            if item not in have:
                return item
        return self.catalog.at(rng.randrange(len(self.catalog))).item_id


def cycle(pool: Sequence[T], count: int, rng: random.Random) -> Iterator[T]:
    """``count`` draws from ``pool``: whole seeded shuffles of it, one after another."""
    if not pool:
        return
    produced = 0
    while produced < count:
        order = list(range(len(pool)))
        rng.shuffle(order)
        for i in order[: count - produced]:
            yield pool[i]
        produced += min(len(order), count - produced)
