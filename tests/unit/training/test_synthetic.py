"""The synthetic dataset: reproducible bytes, LC-Rec format, and structure a model can learn."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from training.data import leave_one_out, load_lcrec
from training.synthetic import MAX_CATEGORIES, generate_synthetic

FILES = ("Synthetic.inter.json", "Synthetic.item.json")


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a")
    b = generate_synthetic(tmp_path / "b")
    c = generate_synthetic(tmp_path / "c", seed=1)
    assert a == tmp_path / "a"
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / FILES[0]).read_bytes() != (c / FILES[0]).read_bytes()


def test_loads_as_lcrec_with_requested_shape(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path, num_users=50, num_items=40, num_categories=4, seed=3))
    assert data.name == "Synthetic"
    assert len(data.sequences) == 50
    assert list(data.items) == [str(i) for i in range(40)]
    titles = [item.title for item in data.items.values()]
    assert len(set(titles)) == len(titles)
    assert all(item.brand and item.categories and item.description for item in data.items.values())
    assert all(5 <= len(seq) <= 20 and len(set(seq)) == len(seq) for seq in data.sequences.values())
    split = leave_one_out(data)
    assert len(split.test) == 50


def test_titles_are_readable_and_match_their_category(tmp_path: Path) -> None:
    raw = json.loads((generate_synthetic(tmp_path) / "Synthetic.item.json").read_text())
    assert len(raw) == 300
    item = raw["0"]
    assert set(item) == {"title", "description", "brand", "categories"}
    assert item["title"].startswith(item["brand"])
    assert len(item["title"].split()) >= 4
    assert len({entry["categories"].split(", ")[1] for entry in raw.values()}) == 8


def test_sequences_have_sequential_structure(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path))
    category = {i: t.categories.split(", ")[1] for i, t in data.items.items()}
    rng = np.random.default_rng(0)
    actual, shuffled = [], []
    for seq in data.sequences.values():
        other = list(rng.permutation(seq))
        actual += [category[a] == category[b] for a, b in itertools.pairwise(seq)]
        shuffled += [category[a] == category[b] for a, b in itertools.pairwise(other)]
    # Consecutive items share a category far more often than the same items in random order.
    assert np.mean(actual) > np.mean(shuffled) + 0.15


def test_popularity_is_skewed(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path))
    counts = np.sort(np.bincount([int(i) for s in data.sequences.values() for i in s], minlength=300))[::-1]
    assert counts[:30].sum() > 3 * counts[-30:].sum()


def test_generation_is_fast(tmp_path: Path) -> None:
    best = float("inf")
    for attempt in range(2):
        start = time.perf_counter()
        generate_synthetic(tmp_path / str(attempt))
        best = min(best, time.perf_counter() - start)
    assert best < 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_users": 0}, "num_users must be >= 1"),
        ({"num_categories": 0}, "num_categories must be in 1"),
        ({"num_categories": MAX_CATEGORIES + 1}, "num_categories must be in 1"),
        ({"num_items": 5, "num_categories": 6}, r"num_items \(5\) must be >= num_categories \(6\)"),
        ({"num_items": 4, "num_categories": 2}, "num_items must be >= 5"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synthetic(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_small_catalogs_still_avoid_repeats(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path, num_users=20, num_items=6, num_categories=3))
    assert all(len(set(seq)) == len(seq) for seq in data.sequences.values())
