"""LC-Rec / LETTER datasets: loaders, the leave-one-out split, and train-only item popularity.

The generative-recommendation literature ships its benchmarks as two JSON files per dataset:
``X.inter.json`` (``{"user": [item, ...]}``, chronological) and ``X.item.json``
(``{"item": {"title", "description", "brand", "categories"}}``), or for Beauty a derived
``X.item_short.json`` (``{"item": {"asin", "short_title"}}``). Reading them through one loader
with strict validation means every later stage (tokenizer, fine-tuning, evaluation, serving
seed) agrees on the same user and item ids, and a broken file fails here with the file and
key named instead of deep inside training.

Ids are kept as strings exactly as the file spells them, because that is what the catalog and
the service expose.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INTER_SUFFIX = ".inter.json"
ITEM_SUFFIX = ".item.json"
ITEM_SHORT_SUFFIX = ".item_short.json"
MAX_TEXT_CHARS = 512
DEFAULT_MAX_HISTORY = 20
# A user needs a test target, a validation target and at least one history item.
MIN_EVAL_LENGTH = 3

_WHITESPACE = re.compile(r"\s+")


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the offending key."""


def _clean(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class ItemText:
    """What is known about an item in words: the input of the text encoder and the catalog title."""

    item_id: str
    title: str
    description: str = ""
    brand: str = ""
    categories: str = ""

    def text(self, max_chars: int = MAX_TEXT_CHARS) -> str:
        """Text to embed: title first (the most specific signal), then brand, categories, description.

        Trimmed to ``max_chars`` because the sentence encoder truncates long inputs anyway and
        long product descriptions would otherwise dominate what little context it keeps.
        """
        parts = [_clean(self.title)]
        if self.brand.strip():
            parts.append(f"Brand: {_clean(self.brand)}")
        if self.categories.strip():
            parts.append(f"Categories: {_clean(self.categories)}")
        if self.description.strip():
            parts.append(_clean(self.description))
        text = ". ".join(p.rstrip(".") for p in parts if p)
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] or text[:max_chars]
        return text


@dataclass
class InteractionData:
    """One dataset: chronological item sequences per user and the text of every item.

    ``items`` covers every item of the item file and every item of any sequence; an item with
    no text gets the placeholder title ``"item <id>"``.
    """

    name: str
    sequences: dict[str, list[str]]
    items: dict[str, ItemText]
    source: Path

    @property
    def num_interactions(self) -> int:
        return sum(len(seq) for seq in self.sequences.values())


def sort_item_ids(ids: Iterable[str]) -> list[str]:
    """Deterministic item order: numerically when every id is an integer, else lexicographically."""
    unique = set(ids)
    if all(_is_int(i) for i in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: not valid JSON: {exc}") from exc


def _item_id(value: object, where: str) -> str:
    # bool is an int subclass; an item id of `true` is a bug in whatever wrote the file.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise DataError(f"{where}: expected an item id (int or non-empty string), got {type(value).__name__}")


def _parse_inter(path: Path) -> dict[str, list[str]]:
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataError(
            f"{path.name}: expected an object mapping user id -> item ids, got {type(raw).__name__}"
        )
    sequences: dict[str, list[str]] = {}
    for user, seq in raw.items():
        if not isinstance(seq, list):
            raise DataError(
                f"{path.name}: user {user!r}: expected a list of item ids, got {type(seq).__name__}"
            )
        sequences[user] = [
            _item_id(v, f"{path.name}: user {user!r}: position {i}") for i, v in enumerate(seq)
        ]
    return sequences


def _text_field(entry: dict[str, Any], field: str, where: str) -> str:
    value = entry.get(field)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Some LC-Rec exports keep categories as a list of strings; join rather than reject.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")


def _parse_items(path: Path, *, short: bool) -> dict[str, ItemText]:
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataError(
            f"{path.name}: expected an object mapping item id -> fields, got {type(raw).__name__}"
        )
    items: dict[str, ItemText] = {}
    for item_id, entry in raw.items():
        where = f"{path.name}: item {item_id!r}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object of fields, got {type(entry).__name__}")
        if short:
            items[item_id] = ItemText(item_id=item_id, title=_text_field(entry, "short_title", where))
        else:
            items[item_id] = ItemText(
                item_id=item_id,
                title=_text_field(entry, "title", where),
                description=_text_field(entry, "description", where),
                brand=_text_field(entry, "brand", where),
                categories=_text_field(entry, "categories", where),
            )
    return items


def _resolve(path: Path) -> tuple[str, Path]:
    """(dataset name, inter file) for a dataset directory or an ``X.inter.json`` path."""
    if path.is_file():
        if not path.name.endswith(INTER_SUFFIX):
            raise DataError(f"{path.name}: expected an interaction file named X{INTER_SUFFIX}")
        return path.name[: -len(INTER_SUFFIX)], path
    if not path.is_dir():
        raise DataError(f"{path}: no such dataset directory or {INTER_SUFFIX} file")
    found = sorted(path.glob(f"*{INTER_SUFFIX}"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(
            f"{path}: expected exactly one *{INTER_SUFFIX} file, found {len(found)} ({names}); "
            "pass the interaction file itself"
        )
    return found[0].name[: -len(INTER_SUFFIX)], found[0]


def load_lcrec(path: Path) -> InteractionData:
    """Load an LC-Rec dataset from its directory (or its ``X.inter.json``).

    Item text comes from ``X.item.json`` if present, else ``X.item_short.json`` (short title
    only), else nowhere: items without a title get ``"item <id>"`` and a warning says how many.
    Users with fewer than 3 interactions are kept (they still seed serving histories) but
    :func:`leave_one_out` gives them no examples.
    """
    path = Path(path)
    name, inter_path = _resolve(path)
    sequences = _parse_inter(inter_path)
    item_path = inter_path.with_name(name + ITEM_SUFFIX)
    short_path = inter_path.with_name(name + ITEM_SHORT_SUFFIX)
    if item_path.is_file():
        texts = _parse_items(item_path, short=False)
    elif short_path.is_file():
        texts = _parse_items(short_path, short=True)
    else:
        logger.warning(
            "%s: no %s or %s next to it; items have no text", inter_path.name, ITEM_SUFFIX, ITEM_SHORT_SUFFIX
        )
        texts = {}

    all_ids = sort_item_ids([*texts, *(i for seq in sequences.values() for i in seq)])
    items: dict[str, ItemText] = {}
    untitled = 0
    for item_id in all_ids:
        text = texts.get(item_id)
        if text is None or not text.title.strip():
            untitled += 1
            base = text or ItemText(item_id=item_id, title="")
            text = ItemText(item_id, f"item {item_id}", base.description, base.brand, base.categories)
        items[item_id] = text
    if untitled:
        logger.warning(
            "%s: %d of %d items have no title; using 'item <id>' instead", name, untitled, len(items)
        )
    short = sum(1 for seq in sequences.values() if len(seq) < MIN_EVAL_LENGTH)
    if short:
        logger.info(
            "%s: %d users have fewer than %d interactions (no split examples)", name, short, MIN_EVAL_LENGTH
        )
    data = InteractionData(name=name, sequences=sequences, items=items, source=inter_path)
    logger.info(
        "loaded %s: %d users, %d items, %d interactions",
        name,
        len(sequences),
        len(items),
        data.num_interactions,
    )
    return data


@dataclass(frozen=True)
class Example:
    """One next-item prediction: the user's recent history (oldest first) and the item that came next."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass
class Split:
    train: list[Example]
    valid: list[Example]
    test: list[Example]


def leave_one_out(data: InteractionData, max_history: int = DEFAULT_MAX_HISTORY) -> Split:
    """The literature's leave-one-out split, users in file order.

    For a sequence ``s``: test predicts ``s[-1]`` from ``s[:-1]``, validation predicts ``s[-2]``
    from ``s[:-2]``, and training holds every next-item prefix inside ``s[:-2]`` (targets
    ``s[1] .. s[-3]``). Histories keep the last ``max_history`` items. Users with fewer than 3
    interactions contribute nothing, since they cannot give a test, a validation target and
    a history.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    split = Split(train=[], valid=[], test=[])
    for user, seq in data.sequences.items():
        n = len(seq)
        if n < MIN_EVAL_LENGTH:
            continue
        for t in range(1, n - 2):
            split.train.append(Example(user, tuple(seq[max(0, t - max_history) : t]), seq[t]))
        split.valid.append(Example(user, tuple(seq[: n - 2][-max_history:]), seq[n - 2]))
        split.test.append(Example(user, tuple(seq[: n - 1][-max_history:]), seq[n - 1]))
    return split


def train_item_counts(data: InteractionData) -> dict[str, int]:
    """Interactions per item over the training part ``s[:-2]`` of each sequence (every item listed).

    Popularity must not see the validation or test targets, or the most-popular baseline and
    the cold-start fallback would be evaluated on the answers they were built from.
    """
    counts = dict.fromkeys(data.items, 0)
    for seq in data.sequences.values():
        for item in seq[:-2]:
            counts[item] = counts.get(item, 0) + 1
    return counts


def serving_histories(data: InteractionData) -> Iterator[tuple[str, list[str]]]:
    """(user id, full chronological sequence) for every user: what a serving history store starts from."""
    for user, seq in data.sequences.items():
        yield user, list(seq)
