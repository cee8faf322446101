"""Most-popular and SASRec baselines through the evaluation harness, and the `genrec baseline` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import genrec_cli
from training.baselines import PopularRanker, build_baseline
from training.data import InteractionData, load_lcrec, train_item_counts
from training.evaluate import evaluate, select_examples
from training.sasrec import SasrecConfig
from training.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("baselines") / "data", num_users=150, num_items=40)


@pytest.fixture(scope="module")
def data(data_dir: Path) -> InteractionData:
    return load_lcrec(data_dir)


def test_popular_ranks_by_training_counts_only(data: InteractionData) -> None:
    ranker = PopularRanker(data)
    counts = train_item_counts(data)
    [top] = ranker.recommend([["anything"]], k=10)
    assert [s.score for s in top] == sorted((float(c) for c in counts.values()), reverse=True)[:10]
    assert len({s.item_id for s in top}) == 10


def test_both_baselines_go_through_the_harness(data: InteractionData) -> None:
    examples = select_examples(data, "valid", None)
    popular = evaluate(build_baseline("popular", data), examples, split="valid", k=20)
    sasrec = evaluate(
        build_baseline("sasrec", data, SasrecConfig(dim=16, epochs=20, lr=1e-2, patience=5)),
        examples,
        split="valid",
        k=20,
    )
    assert popular.model_version == "popular" and sasrec.model_version == "sasrec"
    assert 0 < popular.metrics["recall@10"] < 1
    assert sasrec.metrics["recall@10"] > popular.metrics["recall@10"]  # the sequence carries signal


def test_unknown_method_is_an_error(data: InteractionData) -> None:
    with pytest.raises(ValueError, match="method must be one of popular, sasrec"):
        build_baseline("random", data)


def test_cli_writes_valid_and_test_reports(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "popular.json"
    result = CliRunner().invoke(
        genrec_cli.app, ["baseline", "--data", str(data_dir), "--method", "popular", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["method"] == "popular"
    assert set(report["valid"]["metrics"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert report["test"]["split"] == "test"
    bad = CliRunner().invoke(genrec_cli.app, ["baseline", "--data", str(data_dir), "--method", "random"])
    assert bad.exit_code == 2
    assert "must be one of popular, sasrec" in bad.output
