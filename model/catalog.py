"""Item catalog: item id <-> semantic ID, with the title, category and popularity each item carries.

The catalog is the single source of truth for "what is a real item" at serving time: the
trie is compiled from it and every recommendation is mapped back through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from model.semantic_id import SemanticId, SidScheme

CATEGORY_SEPARATOR = ","


def category_path(category: str) -> tuple[str, ...]:
    """A category as its levels, broadest first, compared case-insensitively.

    Amazon's categories are paths ("Office Electronics, Telephones & Accessories, Cordless
    Telephones"); an item is in every category that is a prefix of its path.
    """
    return tuple(level.strip().casefold() for level in category.split(CATEGORY_SEPARATOR) if level.strip())


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    sid: SemanticId
    popularity: int = 0
    category: str = ""  # a path, broadest level first ("" when the data has none)

    def in_category(self, wanted: tuple[str, ...]) -> bool:
        """Whether ``wanted`` (a :func:`category_path`) is this item's category or one above it."""
        return category_path(self.category)[: len(wanted)] == wanted


def _item_json(item: CatalogItem) -> dict[str, object]:
    """One catalog entry; ``category`` only where the item has one (older files have none)."""
    entry: dict[str, object] = {**asdict(item), "sid": list(item.sid)}
    if not item.category:
        del entry["category"]
    return entry


class Catalog:
    """An immutable set of items whose semantic IDs are unique and fit one scheme."""

    def __init__(self, scheme: SidScheme, items: Iterable[CatalogItem]) -> None:
        self.scheme = scheme
        self._items: list[CatalogItem] = list(items)
        self._by_id: dict[str, int] = {}
        self._by_sid: dict[SemanticId, int] = {}
        for index, item in enumerate(self._items):
            scheme.validate(item.sid)
            if item.item_id in self._by_id:
                raise ValueError(f"duplicate item id {item.item_id!r} in catalog")
            if item.sid in self._by_sid:
                other = self._items[self._by_sid[item.sid]].item_id
                raise ValueError(f"items {other!r} and {item.item_id!r} share semantic ID {item.sid}")
            self._by_id[item.item_id] = index
            self._by_sid[item.sid] = index
        if not self._items:
            raise ValueError("catalog is empty")
        # every category some item is in (each prefix of each item's path), to tell unknown ones
        self._categories = {
            path[:depth]
            for path in (category_path(item.category) for item in self._items)
            for depth in range(1, len(path) + 1)
        }

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    def __getitem__(self, item_id: str) -> CatalogItem:
        try:
            return self._items[self._by_id[item_id]]
        except KeyError:
            raise KeyError(f"unknown item id {item_id!r}") from None

    def get(self, item_id: str) -> CatalogItem | None:
        index = self._by_id.get(item_id)
        return None if index is None else self._items[index]

    def index_of(self, item_id: str) -> int:
        return self._by_id[item_id]

    def at(self, index: int) -> CatalogItem:
        return self._items[index]

    def by_sid(self, sid: SemanticId) -> CatalogItem | None:
        index = self._by_sid.get(sid)
        return None if index is None else self._items[index]

    @property
    def has_categories(self) -> bool:
        return bool(self._categories)

    def knows_category(self, wanted: tuple[str, ...]) -> bool:
        """Whether some item is in ``wanted`` (a :func:`category_path`)."""
        return wanted in self._categories

    def most_popular(
        self, k: int, exclude: Iterable[str] = (), category: tuple[str, ...] = ()
    ) -> list[CatalogItem]:
        """Top-``k`` items by popularity (ties broken by catalog order), the cold-start fallback;
        only items in ``category`` (a :func:`category_path`) when it is given."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        skip = set(exclude)
        ranked = sorted(range(len(self._items)), key=lambda i: (-self._items[i].popularity, i))
        return [
            item
            for item in (self._items[i] for i in ranked)
            if item.item_id not in skip and item.in_category(category)
        ][:k]

    def to_json(self) -> dict[str, object]:
        return {
            "scheme": {"codebook_sizes": list(self.scheme.codebook_sizes)},
            "items": [_item_json(item) for item in self._items],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Catalog:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            scheme = SidScheme(tuple(raw["scheme"]["codebook_sizes"]))
            items = [
                CatalogItem(
                    item_id=str(entry["item_id"]),
                    title=str(entry["title"]),
                    sid=tuple(int(c) for c in entry["sid"]),
                    popularity=int(entry.get("popularity", 0)),
                    category=str(entry.get("category", "")),
                )
                for entry in raw["items"]
            ]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read catalog {path}: {exc!r}") from exc
        return cls(scheme, items)
