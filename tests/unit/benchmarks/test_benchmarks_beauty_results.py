"""beauty_results.py's --genrec-key: a GPU run filed beside the CPU recipe's `genrec` entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import beauty_results

CPU_ENTRY = {
    "valid": {"recall@5": 0.05, "recall@10": 0.08, "ndcg@5": 0.03, "ndcg@10": 0.04},
    "test": {"recall@5": 0.04, "recall@10": 0.06, "ndcg@5": 0.02, "ndcg@10": 0.03},
    "users": 22363,
    "valid_users": 22363,
    "device": "cpu",
    "command": "bash benchmarks/beauty_cpu.sh",
}
BASELINE = {"valid": CPU_ENTRY["valid"], "test": CPU_ENTRY["test"]}


def eval_report(path: Path, split: str, recall10: float, users: int = 2000) -> Path:
    """A report as `genrec eval --out` writes it (training.evaluate.EvalReport.to_json)."""
    metrics = {
        "recall@5": recall10 / 2, "recall@10": recall10, "ndcg@5": recall10 / 4, "ndcg@10": recall10 / 3,
    }  # fmt: skip
    report = {
        "split": split, "users": users, "k": 10, "metrics": metrics, "model_version": "beauty-behavior_item",
        "wall_s": 12.5, "users_per_s": users / 12.5, "extra": {"device": "cuda", "rows": 512},
    }  # fmt: skip
    path.write_text(json.dumps(report))
    return path


@pytest.fixture
def filed(tmp_path: Path) -> Path:
    """A beauty.json holding the CPU recipe, a replaced CPU run and the baselines."""
    out = tmp_path / "beauty.json"
    saved = {
        "genrec": CPU_ENTRY,
        "sasrec": {**BASELINE, "epochs_run": 80, "fit_s": 600.0, "config": {"hidden": 64}},
        "popular": BASELINE,
        "genrec_earlier": [{**CPU_ENTRY, "users": 100}],
        "commands": ["bash benchmarks/beauty_cpu.sh"],
    }
    out.write_text(json.dumps(saved))
    return out


def gpu_run(tmp_path: Path, stopped: str = "max_steps") -> tuple[Path, Path]:
    """A GPU run's train_report.json and its index's tokenizer_report.json."""
    config = {
        "base_model": "scratch", "scratch": {"hidden": 128, "layers": 4, "heads": 2, "intermediate": 512},
        "objective": "sequence", "prompt_format": "compact", "loss_vocab": "level", "precision": "auto",
        "epochs": 40.0, "batch_size": 256, "lr": 0.002,
    }  # fmt: skip
    train = {"config": config, "device": "cuda", "steps": 3720, "best_step": 3534, "tokens_per_s": 1e5}
    train_report = tmp_path / "train_report.json"
    train_report.write_text(json.dumps({**train, "stopped": stopped, "train_s": 140.0}))
    index_report = tmp_path / "tokenizer_report.json"
    index_report.write_text(json.dumps({"extra": {"level_sources": ["behavior", "item"]}}))
    return train_report, index_report


def run(monkeypatch: pytest.MonkeyPatch, *args: object) -> None:
    monkeypatch.setattr(sys, "argv", ["beauty_results.py", *map(str, args)])
    beauty_results.main()


def file_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, out: Path, recall10: float) -> None:
    train_report, index_report = gpu_run(tmp_path)
    run(
        monkeypatch, "--update", "--out", out, "--genrec-key", "genrec_cuda",
        "--genrec-valid", eval_report(tmp_path / "valid.json", "valid", recall10),
        "--genrec-test", eval_report(tmp_path / "test.json", "test", recall10, users=22363),
        "--genrec-train-report", train_report, "--genrec-index-report", index_report,
        "--genrec-command", "bash benchmarks/gpu/train_and_evaluate.sh",
    )  # fmt: skip


def test_genrec_cuda_is_its_own_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filed: Path) -> None:
    before = json.loads(filed.read_text())
    file_gpu(monkeypatch, tmp_path, filed, recall10=0.07)
    after = json.loads(filed.read_text())
    for kept in ("genrec", "sasrec", "popular", "genrec_earlier"):
        assert after[kept] == before[kept]  # the CPU recipe and the rest untouched
    cuda = after["genrec_cuda"]
    assert cuda["device"] == "cuda"
    assert cuda["test"]["recall@10"] == pytest.approx(0.07)
    assert cuda["valid"]["ndcg@10"] == pytest.approx(0.07 / 3)
    assert (cuda["users"], cuda["valid_users"]) == (22363, 2000)
    assert cuda["index"] == ["behavior", "item"]
    assert cuda["backbone"] == "scratch Llama (4 layers, hidden 128)"
    assert cuda["precision_used"] == "bf16"  # auto on CUDA
    assert cuda["recipe"]["objective"] == "sequence"
    assert (cuda["train_steps"], cuda["train_stopped"]) == (3720, "max_steps")
    assert cuda["command"] == "bash benchmarks/gpu/train_and_evaluate.sh"
    assert "genrec_cuda_earlier" not in after
    assert after["commands"][0] == "bash benchmarks/beauty_cpu.sh"
    assert "--genrec-key genrec_cuda" in after["commands"][-1]


def test_a_second_gpu_run_moves_the_first_to_its_own_earlier_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filed: Path
) -> None:
    file_gpu(monkeypatch, tmp_path, filed, recall10=0.07)
    first = json.loads(filed.read_text())["genrec_cuda"]
    file_gpu(monkeypatch, tmp_path, filed, recall10=0.075)
    after = json.loads(filed.read_text())
    assert after["genrec_cuda"]["test"]["recall@10"] == pytest.approx(0.075)
    assert after["genrec_cuda_earlier"] == [first]
    assert after["genrec"] == CPU_ENTRY
    assert after["genrec_earlier"] == [{**CPU_ENTRY, "users": 100}]


def test_the_default_key_still_files_genrec_and_keeps_genrec_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filed: Path
) -> None:
    file_gpu(monkeypatch, tmp_path, filed, recall10=0.07)
    cuda = json.loads(filed.read_text())["genrec_cuda"]
    run(
        monkeypatch, "--update", "--out", filed,
        "--genrec-valid", eval_report(tmp_path / "cpu_valid.json", "valid", 0.09, users=22363),
        "--genrec-test", eval_report(tmp_path / "cpu_test.json", "test", 0.066, users=22363),
    )  # fmt: skip
    after = json.loads(filed.read_text())
    assert after["genrec"]["test"]["recall@10"] == pytest.approx(0.066)
    assert after["genrec_earlier"][0] == CPU_ENTRY  # the replaced CPU entry, newest first
    assert after["genrec_cuda"] == cuda


def test_a_baseline_filed_in_the_same_call_goes_to_its_own_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filed: Path
) -> None:
    baseline = tmp_path / "sasrec.json"
    saved = {"method": "sasrec", "epochs_run": 90, "fit_s": 1.0, "config": {"hidden": 32}}
    baseline.write_text(json.dumps({**saved, **{s: {"metrics": BASELINE[s]} for s in ("valid", "test")}}))
    run(
        monkeypatch, "--update", "--out", filed, "--baseline", baseline, "--genrec-key", "genrec_cuda",
        "--genrec-valid", eval_report(tmp_path / "valid.json", "valid", 0.07),
        "--genrec-test", eval_report(tmp_path / "test.json", "test", 0.07),
    )  # fmt: skip
    after = json.loads(filed.read_text())
    assert set(after) == {"genrec", "sasrec", "popular", "genrec_earlier", "genrec_cuda", "commands"}
    assert after["sasrec"]["epochs_run"] == 90
    assert after["genrec"] == CPU_ENTRY
    assert after["genrec_cuda"]["test"]["recall@10"] == pytest.approx(0.07)


@pytest.mark.parametrize(
    "args",
    [
        ["--genrec-key", "genrec_cuda"],  # without --update the other entries would be dropped
        ["--update", "--genrec-key", "sasrec"],
        ["--update", "--genrec-key", "genrec_earlier"],
    ],
)
def test_a_key_that_could_overwrite_other_entries_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filed: Path, args: list[str]
) -> None:
    before = filed.read_text()
    with pytest.raises(SystemExit):
        run(
            monkeypatch, *args, "--out", filed,
            "--genrec-valid", eval_report(tmp_path / "valid.json", "valid", 0.07),
            "--genrec-test", eval_report(tmp_path / "test.json", "test", 0.07),
        )  # fmt: skip
    assert filed.read_text() == before
