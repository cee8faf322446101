"""Item catalog: lookups, uniqueness checks, popularity ranking and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.catalog import Catalog, CatalogItem
from model.semantic_id import SidScheme

SCHEME = SidScheme((3, 4))


def item(item_id: str, sid: tuple[int, ...], popularity: int = 0, title: str | None = None) -> CatalogItem:
    return CatalogItem(item_id=item_id, title=title or f"Title {item_id}", sid=sid, popularity=popularity)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        SCHEME,
        [
            item("a", (0, 0), popularity=5),
            item("b", (0, 1), popularity=9),
            item("c", (1, 3), popularity=5),
            item("d", (2, 2), popularity=0),
            item("e", (2, 0), popularity=9),
        ],
    )


def test_lookups(catalog: Catalog) -> None:
    assert len(catalog) == 5
    assert [i.item_id for i in catalog] == ["a", "b", "c", "d", "e"]
    assert "c" in catalog
    assert "zzz" not in catalog
    assert 3 not in catalog
    assert catalog["c"].sid == (1, 3)
    assert catalog.get("c") == catalog["c"]
    assert catalog.index_of("d") == 3
    assert catalog.at(3).item_id == "d"
    assert catalog.by_sid((2, 0)) == catalog["e"]
    assert catalog.scheme == SCHEME


def test_unknown_ids_and_sids(catalog: Catalog) -> None:
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        catalog["nope"]
    assert catalog.get("nope") is None
    assert catalog.by_sid((1, 0)) is None
    assert catalog.by_sid((0,)) is None
    with pytest.raises(KeyError):
        catalog.index_of("nope")


def test_duplicate_item_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        Catalog(SCHEME, [item("a", (0, 0)), item("a", (0, 1))])


def test_duplicate_semantic_ids_are_rejected_naming_both_items() -> None:
    with pytest.raises(ValueError, match=r"items 'x' and 'y' share semantic ID \(1, 2\)"):
        Catalog(SCHEME, [item("x", (1, 2)), item("z", (0, 0)), item("y", (1, 2))])


@pytest.mark.parametrize("sid", [(3, 0), (0, 4), (0,), (0, 0, 0)])
def test_semantic_ids_must_fit_the_scheme(sid: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        Catalog(SCHEME, [item("a", (0, 0)), item("b", sid)])


def test_empty_catalog_is_rejected() -> None:
    with pytest.raises(ValueError, match="catalog is empty"):
        Catalog(SCHEME, [])


def test_catalog_accepts_any_iterable_once() -> None:
    catalog = Catalog(SCHEME, (item(f"i{c}", (0, c)) for c in range(4)))
    assert len(catalog) == 4
    assert [i.item_id for i in catalog] == ["i0", "i1", "i2", "i3"]
    # Iterating twice gives the same items (the generator was materialised).
    assert [i.item_id for i in catalog] == ["i0", "i1", "i2", "i3"]


def test_most_popular_orders_by_popularity_then_catalog_order(catalog: Catalog) -> None:
    assert [i.item_id for i in catalog.most_popular(5)] == ["b", "e", "a", "c", "d"]
    assert [i.item_id for i in catalog.most_popular(2)] == ["b", "e"]
    assert [i.item_id for i in catalog.most_popular(3)] == ["b", "e", "a"]


def test_most_popular_with_large_k_returns_everything(catalog: Catalog) -> None:
    assert len(catalog.most_popular(100)) == 5


def test_most_popular_zero(catalog: Catalog) -> None:
    assert catalog.most_popular(0) == []


def test_most_popular_excludes_items_and_still_fills_k(catalog: Catalog) -> None:
    ranked = catalog.most_popular(3, exclude=["b", "a", "unknown"])
    assert [i.item_id for i in ranked] == ["e", "c", "d"]
    # A generator works as the exclusion list too.
    assert [i.item_id for i in catalog.most_popular(2, exclude=(x for x in ["e"]))] == ["b", "a"]
    assert catalog.most_popular(3, exclude=["a", "b", "c", "d", "e"]) == []


def test_save_load_round_trip(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "catalog.json"
    catalog.save(path)
    loaded = Catalog.load(path)
    assert loaded.scheme == catalog.scheme
    assert list(loaded) == list(catalog)
    assert all(isinstance(i.sid, tuple) for i in loaded)
    assert loaded.by_sid((1, 3)) == catalog["c"]


def test_round_trip_keeps_unicode_titles(tmp_path: Path) -> None:
    titles = ["Café crème", "日本語のタイトル", 'quote " and \\ backslash', "emoji 🎧"]
    original = Catalog(SCHEME, [item(f"u{n}", (0, n), title=t) for n, t in enumerate(titles)])
    path = tmp_path / "catalog.json"
    original.save(path)
    assert [i.title for i in Catalog.load(path)] == titles


def test_to_json_layout(catalog: Catalog) -> None:
    raw = catalog.to_json()
    assert raw["scheme"] == {"codebook_sizes": [3, 4]}
    items = raw["items"]
    assert isinstance(items, list)
    assert items[1] == {"item_id": "b", "title": "Title b", "sid": [0, 1], "popularity": 9}
    json.dumps(raw)  # plain JSON types only


def test_load_defaults_popularity_and_stringifies_ids(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {
                "scheme": {"codebook_sizes": [3, 4]},
                "items": [{"item_id": 17, "title": "t", "sid": [1, 1]}],
            }
        )
    )
    loaded = Catalog.load(path)
    assert loaded["17"].popularity == 0
    assert loaded["17"].sid == (1, 1)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"items": []}),
        json.dumps({"scheme": {"codebook_sizes": [3, 4]}}),
        json.dumps({"scheme": {"codebook_sizes": [3, 4]}, "items": [{"title": "t", "sid": [0, 0]}]}),
        json.dumps({"scheme": {"codebook_sizes": [3, 4]}, "items": [None]}),
        json.dumps([1, 2, 3]),
    ],
)
def test_load_of_a_malformed_file_raises_value_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="cannot read catalog"):
        Catalog.load(path)


def test_load_of_a_missing_file_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read catalog"):
        Catalog.load(tmp_path / "missing.json")


def test_load_rejects_duplicate_semantic_ids_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {
                "scheme": {"codebook_sizes": [3, 4]},
                "items": [
                    {"item_id": "a", "title": "A", "sid": [1, 1]},
                    {"item_id": "b", "title": "B", "sid": [1, 1]},
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="share semantic ID"):
        Catalog.load(path)


def test_load_rejects_ids_outside_the_stored_scheme(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {"scheme": {"codebook_sizes": [2, 2]}, "items": [{"item_id": "a", "title": "A", "sid": [2, 0]}]}
        )
    )
    with pytest.raises(ValueError, match="outside codebook"):
        Catalog.load(path)


def test_most_popular_rejects_negative_k(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        catalog.most_popular(-1)


def test_categories_are_paths_matched_by_prefix_case_insensitively(tmp_path: Path) -> None:
    from model.catalog import category_path

    assert category_path(" Office Electronics,Telephones & Accessories ,") == (
        "office electronics",
        "telephones & accessories",
    )
    phone = CatalogItem("p", "Phone", (0, 0), 3, category="Office Electronics, Telephones, Cordless")
    ink = CatalogItem("k", "Ink", (0, 1), 9, category="Office Supplies, Ink")
    plain = CatalogItem("x", "No category", (1, 0), 20)
    catalog = Catalog(SCHEME, [phone, ink, plain])
    assert catalog.has_categories
    assert phone.in_category(category_path("office electronics, TELEPHONES"))
    assert not phone.in_category(category_path("Telephones"))  # a path starts at the broadest level
    assert phone.in_category(())  # no filter
    assert catalog.knows_category(category_path("Office Electronics, Telephones"))
    assert not catalog.knows_category(category_path("Office Electronics, Ink"))
    assert [i.item_id for i in catalog.most_popular(5, category=category_path("office supplies"))] == ["k"]
    assert [i.item_id for i in catalog.most_popular(2)] == ["x", "k"]
    catalog.save(tmp_path / "c.json")
    assert Catalog.load(tmp_path / "c.json")["p"].category == phone.category
    assert not Catalog(SCHEME, [plain]).has_categories


def test_a_catalog_written_before_categories_loads(tmp_path: Path) -> None:
    raw = {"scheme": {"codebook_sizes": [3, 4]}, "items": [{"item_id": "a", "title": "A", "sid": [0, 1]}]}
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert Catalog.load(tmp_path / "old.json")["a"].category == ""
