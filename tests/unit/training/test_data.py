"""LC-Rec loaders, the leave-one-out protocol and train-only popularity."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from shared_datasets import shared_dataset

from training.data import (
    DataError,
    Example,
    InteractionData,
    ItemText,
    leave_one_out,
    load_lcrec,
    serving_histories,
    sort_item_ids,
    train_item_counts,
)


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    _write(tmp_path / "Tiny.inter.json", {"u1": [1, 2, 3, 4, 5, 6], "u2": [7, 8], "u3": [1, 2, 3]})
    _write(
        tmp_path / "Tiny.item.json",
        {
            str(i): {"title": f"Title {i}", "description": "", "brand": "B", "categories": "C"}
            for i in (1, 2, 3, 4, 5, 6, 9)
        },
    )
    return tmp_path


def test_item_text_combines_fields_and_trims() -> None:
    item = ItemText("1", "Red  Pen.", description="Writes\nwell.", brand="Inky", categories="Office, Pens")
    assert item.text() == "Red Pen. Brand: Inky. Categories: Office, Pens. Writes well"
    assert ItemText("2", "Just a title").text() == "Just a title"
    long = ItemText("3", "word " * 500)
    assert len(long.text()) <= 512
    assert len(long.text(max_chars=50)) <= 50


def test_sort_item_ids_numeric_then_lexicographic() -> None:
    assert sort_item_ids(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_item_ids(["b", "10", "a"]) == ["10", "a", "b"]


def test_load_directory_and_inter_file(tiny: Path) -> None:
    for path in (tiny, tiny / "Tiny.inter.json"):
        data = load_lcrec(path)
        assert data.name == "Tiny"
        assert data.source == tiny / "Tiny.inter.json"
        assert data.sequences == {
            "u1": ["1", "2", "3", "4", "5", "6"],
            "u2": ["7", "8"],
            "u3": ["1", "2", "3"],
        }
        # Union of the item file (9 has no interactions) and the sequences (7, 8 have no text).
        assert list(data.items) == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
        assert data.items["3"] == ItemText("3", "Title 3", "", "B", "C")
        assert data.items["7"].title == "item 7"
        assert data.num_interactions == 11


def test_untitled_items_are_counted_in_a_warning(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.data"):
        load_lcrec(tiny)
    assert any("2 of 9 items have no title" in r.getMessage() for r in caplog.records)


def test_item_short_file_gives_titles(tmp_path: Path) -> None:
    _write(tmp_path / "S.inter.json", {"0": [0, 1, 2]})
    _write(
        tmp_path / "S.item_short.json",
        {"0": {"asin": "A0", "short_title": "nail lacquer"}, "1": {"asin": "A1"}},
    )
    data = load_lcrec(tmp_path)
    assert data.items["0"].title == "nail lacquer"
    assert data.items["1"].title == "item 1"
    assert data.items["2"].title == "item 2"


def test_no_item_file_falls_back_to_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "N.inter.json", {"0": ["a", "b", "c"]})
    with caplog.at_level(logging.WARNING, logger="training.data"):
        data = load_lcrec(tmp_path)
    assert [t.title for t in data.items.values()] == ["item a", "item b", "item c"]
    assert any("3 of 3 items have no title" in r.getMessage() for r in caplog.records)


def test_leave_one_out_protocol(tiny: Path) -> None:
    split = leave_one_out(load_lcrec(tiny), max_history=2)
    # u2 has only 2 interactions: no examples at all.
    assert split.test == [Example("u1", ("4", "5"), "6"), Example("u3", ("1", "2"), "3")]
    assert split.valid == [Example("u1", ("3", "4"), "5"), Example("u3", ("1",), "2")]
    assert split.train == [
        Example("u1", ("1",), "2"),
        Example("u1", ("1", "2"), "3"),
        Example("u1", ("2", "3"), "4"),
    ]
    # No training target is ever a validation or test target of the same user.
    assert all(e.target not in {"5", "6"} for e in split.train if e.user_id == "u1")


def test_leave_one_out_default_history_is_20(tmp_path: Path) -> None:
    _write(tmp_path / "L.inter.json", {"u": list(range(30))})
    split = leave_one_out(load_lcrec(tmp_path))
    assert split.test[0].history == tuple(str(i) for i in range(9, 29))
    assert split.valid[0].history == tuple(str(i) for i in range(8, 28))
    assert len(split.train) == 27
    assert split.train[-1] == Example("u", tuple(str(i) for i in range(7, 27)), "27")
    with pytest.raises(ValueError, match="max_history"):
        leave_one_out(load_lcrec(tmp_path), max_history=0)


def test_train_item_counts_exclude_valid_and_test(tiny: Path) -> None:
    counts = train_item_counts(load_lcrec(tiny))
    # u1 trains on 1..4, u3 on 1; u2 (2 items) and every valid/test target are left out.
    assert counts == {"1": 2, "2": 1, "3": 1, "4": 1, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0}


def test_serving_histories_are_full_copies(tiny: Path) -> None:
    data = load_lcrec(tiny)
    histories = dict(serving_histories(data))
    assert histories == data.sequences
    histories["u1"].append("99")
    assert data.sequences["u1"][-1] == "6"


@pytest.mark.parametrize(
    ("inter", "items", "message"),
    [
        ("[1, 2]", None, r"Bad\.inter\.json: expected an object"),
        ("{not json", None, r"Bad\.inter\.json: not valid JSON"),
        ({"12": "1 2 3"}, None, r"Bad\.inter\.json: user '12': expected a list of item ids, got str"),
        ({"3": [1, 2.5]}, None, r"Bad\.inter\.json: user '3': position 1: expected an item id"),
        ({"3": [1, True]}, None, r"Bad\.inter\.json: user '3': position 1: .*got bool"),
        ({"3": [None]}, None, r"Bad\.inter\.json: user '3': position 0"),
        ({"0": [1]}, {"5": {"title": 7}}, r"Bad\.item\.json: item '5': field 'title' must be a string"),
        ({"0": [1]}, {"5": {"title": "t", "brand": {"x": 1}}}, r"Bad\.item\.json: item '5': field 'brand'"),
        ({"0": [1]}, {"5": "just a title"}, r"Bad\.item\.json: item '5': expected an object"),
        ({"0": [1]}, ["a"], r"Bad\.item\.json: expected an object"),
    ],
)
def test_malformed_files_name_file_and_key(
    tmp_path: Path, inter: object, items: object, message: str
) -> None:
    _write(tmp_path / "Bad.inter.json", inter)
    if items is not None:
        _write(tmp_path / "Bad.item.json", items)
    with pytest.raises(DataError, match=message):
        load_lcrec(tmp_path)


def test_directory_must_hold_exactly_one_inter_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"exactly one \*\.inter\.json file, found 0"):
        load_lcrec(tmp_path)
    _write(tmp_path / "A.inter.json", {"0": [1]})
    _write(tmp_path / "B.inter.json", {"0": [1]})
    with pytest.raises(DataError, match=r"found 2 \(A\.inter\.json, B\.inter\.json\)"):
        load_lcrec(tmp_path)
    assert load_lcrec(tmp_path / "B.inter.json").name == "B"
    with pytest.raises(DataError, match="no such dataset"):
        load_lcrec(tmp_path / "missing")
    with pytest.raises(DataError, match="expected an interaction file"):
        load_lcrec(_write(tmp_path / "notes.json", "{}"))


REAL = [
    ("amazon2014_beauty_p5order", "Beauty", 22_363, 12_101, 198_502),
    ("amazon2014_office_lcrec", "Office", 4_905, 2_420, 53_258),
    ("amazon2018_scientific_lcrec", "Scientific", 8_317, 4_344, 58_492),
    ("amazon2018_instruments_lcrec_noText", "Instruments", 24_772, 9_922, 206_153),
]


@pytest.mark.parametrize(("folder", "name", "users", "items", "interactions"), REAL)
def test_real_datasets_load_with_published_counts(
    folder: str, name: str, users: int, items: int, interactions: int
) -> None:
    path = shared_dataset(folder)
    data = load_lcrec(path)
    assert (data.name, len(data.sequences), len(data.items), data.num_interactions) == (
        name,
        users,
        items,
        interactions,
    )
    split = leave_one_out(data)
    evaluable = sum(1 for s in data.sequences.values() if len(s) >= 3)
    assert len(split.test) == len(split.valid) == evaluable
    assert len(split.train) == sum(len(s) - 3 for s in data.sequences.values() if len(s) >= 3)
    assert all(len(e.history) <= 20 for e in split.test)
    assert sum(train_item_counts(data).values()) == sum(max(len(s) - 2, 0) for s in data.sequences.values())
    titled = sum(1 for t in data.items.values() if not t.title.startswith("item "))
    if name == "Instruments":
        assert titled == 0  # no item text shipped: every title is the fallback
    else:
        assert titled >= 0.99 * items
    if name == "Beauty":
        assert data.items["0"].title == "nail lacquer simmer and shimmer"


def test_interaction_data_is_a_plain_dataclass(tiny: Path) -> None:
    data = load_lcrec(tiny)
    assert isinstance(data, InteractionData)
    assert data.items["1"].text() == "Title 1. Brand: B. Categories: C"
