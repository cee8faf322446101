"""SASRec: training-split-only sequences, determinism, learning, full-catalog ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import InteractionData, ItemText, load_lcrec
from training.sasrec import SasrecConfig, holdout_split, train_sasrec, training_sequences
from training.synthetic import generate_synthetic

SMALL = SasrecConfig(dim=16, epochs=3, batch_size=32, holdout_users=100, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> InteractionData:
    root = tmp_path_factory.mktemp("sasrec")
    return load_lcrec(generate_synthetic(root / "data", num_users=200, num_items=60, num_categories=4))


def test_training_sequences_hold_out_the_validation_and_test_items() -> None:
    items = {str(i): ItemText(item_id=str(i), title=f"t{i}") for i in range(9)}
    data = InteractionData(
        name="Toy",
        sequences={"a": ["1", "2", "3", "4", "5"], "b": ["6", "7", "8"], "c": ["0", "1"]},
        items=items,
        source=Path("."),
    )
    assert training_sequences(data) == [["1", "2", "3"]]


def test_early_stopping_holds_out_the_last_training_item() -> None:
    seqs = [["1", "2", "3", "4"], ["5", "6"], ["7", "8", "9"]]
    train, held = holdout_split(seqs, users=5, rng=np.random.default_rng(0))
    assert train == [["1", "2", "3"], ["5", "6"], ["7", "8"]]  # 2-item sequences are kept whole
    assert [(e.history, e.target) for e in held] == [(("1", "2", "3"), "4"), (("7", "8"), "9")]
    train, held = holdout_split(seqs, users=1, rng=np.random.default_rng(0))
    assert len(held) == 1 and sum(map(len, train)) == sum(map(len, seqs)) - 1


def test_same_seed_same_embeddings_other_seed_other_embeddings(data: InteractionData) -> None:
    a = train_sasrec(data, SMALL, progress=False).item_embeddings()
    b = train_sasrec(data, SMALL, progress=False).item_embeddings()
    np.testing.assert_array_equal(a, b)
    c = train_sasrec(data, SMALL.model_copy(update={"seed": 1}), progress=False).item_embeddings()
    assert not np.array_equal(a, c)
    assert a.shape == (60, 16) and a.dtype == np.float32


def test_learns_the_sequential_signal(data: InteractionData) -> None:
    trained = train_sasrec(
        data, SMALL.model_copy(update={"epochs": 20, "lr": 1e-2, "patience": 5}), progress=False
    )
    # Synthetic users stay mostly within a category: SASRec beats the most-popular list (0.215).
    assert trained.best_holdout_recall10 > 0.3
    ranked = trained.rank([["1", "2", "3"], [], ["unknown"]], k=10)
    assert all(len(row) == len(set(row)) == 10 for row in ranked)
    assert all(item in data.items for row in ranked for item in row)


def test_a_dataset_without_training_sequences_is_an_error() -> None:
    items = {i: ItemText(item_id=i, title=i) for i in ("1", "2")}
    data = InteractionData(name="Short", sequences={"a": ["1", "2"]}, items=items, source=Path("."))
    with pytest.raises(ValueError, match="no user with 2\\+ training interactions"):
        train_sasrec(data, SMALL, progress=False)
