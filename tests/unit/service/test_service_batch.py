"""recommend_to_jsonl: the offline batch interface over any Recommender."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_fakes import HashRecommender

from service.batch import recommend_to_jsonl


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_ranked_line_per_user_in_input_order(recommender: HashRecommender, tmp_path: Path) -> None:
    users = [(f"u{n}", ["i1", "i2", f"i{n}"]) for n in range(7)]
    out = tmp_path / "deep" / "top.jsonl"
    summary = recommend_to_jsonl(recommender, iter(users), out, k=4, batch_size=3, total=len(users))
    lines = _lines(out)
    assert [line["user_id"] for line in lines] == [u for u, _ in users]
    for (_, history), line in zip(users, lines, strict=True):
        assert line["items"] == [item.item_id for item in recommender.top_k(history, 4)]
    assert [len(call) for call in recommender.calls] == [3, 3, 1]
    assert summary.users == 7
    assert summary.unknown_items_skipped == 0
    assert not (tmp_path / "deep" / "top.jsonl.part").exists()


def test_unknown_history_items_are_dropped_and_counted(recommender: HashRecommender, tmp_path: Path) -> None:
    users = [("a", ["i1", "ghost", "i2"]), ("b", ["ghost", "phantom"])]
    summary = recommend_to_jsonl(recommender, iter(users), tmp_path / "o.jsonl", k=5, batch_size=8)
    assert summary.unknown_items_skipped == 3
    assert all(len(line["items"]) == 5 for line in _lines(tmp_path / "o.jsonl"))  # type: ignore[arg-type]


def test_users_without_known_history_get_the_popular_items(
    recommender: HashRecommender, tmp_path: Path
) -> None:
    # The API's and precompute's cold-start rule: no model output from an empty prompt.
    users = [("a", ["i1", "ghost"]), ("b", ["ghost", "phantom"]), ("c", [])]
    summary = recommend_to_jsonl(recommender, iter(users), tmp_path / "o.jsonl", k=5, batch_size=8)
    assert recommender.calls == [[["i1"]]]
    a, b, c = _lines(tmp_path / "o.jsonl")
    assert a["source"] == "model"
    popular = [item.item_id for item in recommender.catalog.most_popular(5)]
    assert b == {"user_id": "b", "source": "fallback", "items": popular}
    assert c == {"user_id": "c", "source": "fallback", "items": popular}
    assert summary.cold_start == 2


def test_a_batch_of_cold_users_never_calls_the_model(recommender: HashRecommender, tmp_path: Path) -> None:
    recommend_to_jsonl(recommender, iter([("b", ["ghost"])]), tmp_path / "o.jsonl", k=3, batch_size=8)
    assert recommender.calls == []


def test_a_failing_engine_leaves_no_output_file(recommender: HashRecommender, tmp_path: Path) -> None:
    def broken(histories: object, k: int) -> object:
        raise RuntimeError("engine died")

    recommender.recommend = broken  # type: ignore[method-assign,assignment]
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError, match="engine died"):
        recommend_to_jsonl(recommender, iter([("a", ["i1"])]), out, k=3, batch_size=2)
    assert list(tmp_path.iterdir()) == []
