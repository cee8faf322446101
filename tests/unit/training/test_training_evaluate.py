"""evaluate() through a fake Recommender with known rankings, and the user sampling of select_examples."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from model.catalog import Catalog, CatalogItem
from model.recommender import Recommender, ScoredItem
from model.semantic_id import SidScheme
from training.data import Example, InteractionData, ItemText, leave_one_out
from training.evaluate import EvalReport, evaluate, select_examples

ITEMS = [f"i{n}" for n in range(12)]


class FakeRecommender:
    """Returns a fixed ranking per history (keyed by the history's last item) and records its calls."""

    def __init__(self, rankings: dict[str, list[str]], version: str = "fake-v1") -> None:
        self.rankings = rankings
        self.version = version
        self.calls: list[tuple[list[list[str]], int]] = []
        self._catalog = Catalog(
            SidScheme((len(ITEMS),)), [CatalogItem(i, f"title {i}", (n,)) for n, i in enumerate(ITEMS)]
        )

    @property
    def model_version(self) -> str:
        return self.version

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        self.calls.append(([list(h) for h in histories], k))
        return [
            [ScoredItem(item, -float(rank)) for rank, item in enumerate(self.rankings[h[-1]][:k])]
            for h in histories
        ]


RANKING = [f"i{n}" for n in range(10)]  # i0 best ... i9 10th


@pytest.fixture
def examples() -> list[Example]:
    return [
        Example("u_rank1", ("i11", "h1"), "i0"),
        Example("u_rank3", ("h2",), "i2"),
        Example("u_rank7", ("i10", "h3"), "i6"),
        Example("u_miss", ("h4",), "i11"),
    ]


@pytest.fixture
def recommender() -> FakeRecommender:
    return FakeRecommender({f"h{n}": RANKING for n in range(1, 5)})


def test_fake_satisfies_the_protocol(recommender: FakeRecommender) -> None:
    typed: Recommender = recommender  # mypy checks the structural match
    assert typed.model_version == "fake-v1"


def test_evaluate_gives_the_hand_computed_metrics(
    recommender: FakeRecommender, examples: list[Example]
) -> None:
    report = evaluate(recommender, examples, split="test", k=10, batch_size=3)
    assert report.metrics == pytest.approx(
        {
            "recall@5": 2 / 4,
            "ndcg@5": (1 + 0.5) / 4,
            "recall@10": 3 / 4,
            "ndcg@10": (1 + 0.5 + 1 / math.log2(8)) / 4,
        }
    )
    assert report.split == "test"
    assert report.users == 4
    assert report.k == 10
    assert report.model_version == "fake-v1"
    assert report.users_per_s > 0


def test_evaluate_batches_histories_in_order_and_passes_k(
    recommender: FakeRecommender, examples: list[Example]
) -> None:
    evaluate(recommender, examples, split="valid", k=7, batch_size=3)
    assert [len(h) for h, _ in recommender.calls] == [3, 1]
    assert all(k == 7 for _, k in recommender.calls)
    sent = [h for batch, _ in recommender.calls for h in batch]
    assert sent == [list(e.history) for e in examples]


def test_cut_offs_beyond_k_are_left_out_with_a_warning(
    examples: list[Example], caplog: pytest.LogCaptureFixture
) -> None:
    # 5-item lists cannot answer recall@10: reporting it would repeat recall@5 under another name.
    report = evaluate(FakeRecommender({f"h{n}": RANKING for n in range(1, 5)}), examples, split="test", k=5)
    assert report.metrics == pytest.approx({"recall@5": 2 / 4, "ndcg@5": 1.5 / 4})
    assert "left out" in caplog.text


def test_lists_shorter_than_every_cut_off_report_at_k(examples: list[Example]) -> None:
    report = evaluate(FakeRecommender({f"h{n}": RANKING for n in range(1, 5)}), examples, split="test", k=3)
    assert report.metrics == pytest.approx({"recall@3": 2 / 4, "ndcg@3": 1.5 / 4})


def test_report_serialises_to_json(recommender: FakeRecommender, examples: list[Example]) -> None:
    report = evaluate(recommender, examples, split="test", k=10)
    data = json.loads(json.dumps(report.to_json()))
    assert data["metrics"]["recall@10"] == pytest.approx(0.75)
    assert data["model_version"] == "fake-v1"
    assert data["extra"] == {}
    assert EvalReport(**data) == report


def test_evaluate_rejects_a_recommender_that_drops_rows(examples: list[Example]) -> None:
    class Lossy(FakeRecommender):
        def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
            return super().recommend(histories, k)[:-1]

    with pytest.raises(ValueError, match="rankings for 4 targets"):
        evaluate(Lossy({f"h{n}": RANKING for n in range(1, 5)}), examples, split="test", batch_size=2)


def test_evaluate_with_no_examples_fails_clearly(recommender: FakeRecommender) -> None:
    with pytest.raises(ValueError, match="no users"):
        evaluate(recommender, [], split="test")
    assert recommender.calls == []


@pytest.fixture
def data() -> InteractionData:
    sequences = {f"u{n}": [f"i{(n + j) % 12}" for j in range(3 + n % 4)] for n in range(30)}
    sequences["short"] = ["i1", "i2"]  # too short for any example
    items = {i: ItemText(i, f"title {i}") for i in ITEMS}
    return InteractionData(name="Toy", sequences=sequences, items=items, source=Path("toy.inter.json"))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_select_examples_without_limit_is_the_whole_split(data: InteractionData, split: str) -> None:
    parts = leave_one_out(data)
    expected = parts.valid if split == "valid" else parts.test
    assert select_examples(data, split, None) == expected
    assert select_examples(data, split, 1000) == expected
    assert len(expected) == 30


def test_select_examples_targets_match_the_split(data: InteractionData) -> None:
    for example in select_examples(data, "test", None):
        seq = data.sequences[example.user_id]
        assert example.target == seq[-1]
        assert list(example.history) == seq[:-1]
    for example in select_examples(data, "valid", None):
        seq = data.sequences[example.user_id]
        assert example.target == seq[-2]
        assert list(example.history) == seq[:-2]


def test_select_examples_sampling_is_deterministic_per_seed(data: InteractionData) -> None:
    first = select_examples(data, "test", 10, seed=3)
    again = select_examples(data, "test", 10, seed=3)
    other = select_examples(data, "test", 10, seed=4)
    assert first == again
    assert len(first) == 10
    assert len({e.user_id for e in first}) == 10
    assert set(first) <= set(select_examples(data, "test", None))
    assert {e.user_id for e in first} != {e.user_id for e in other}


def test_select_examples_same_users_for_valid_and_test(data: InteractionData) -> None:
    # Both splits list users in the same order, so one seed samples the same users for both.
    valid = select_examples(data, "valid", 8, seed=1)
    test = select_examples(data, "test", 8, seed=1)
    assert [e.user_id for e in valid] == [e.user_id for e in test]


def test_select_examples_rejects_unknown_split(data: InteractionData) -> None:
    with pytest.raises(ValueError, match="split must be 'valid' or 'test', got 'train'"):
        select_examples(data, "train", None)
