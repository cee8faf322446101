"""Here, after call 2: unpack what came back from the GPU machine and file it into the results.

    python benchmarks/gpu/collect.py --files /work/.device/<...>   # the reply's files_at

1. unpacks ``reports.tar.gz`` into ``--runs`` (default ``runs/gpu``): ``runs/<variant>/
   train_report.json``, ``eval/eval_<variant>_<split>.json``, ``logs/``; and lays the eval
   reports out as ``benchmarks/tokenizer_beauty.py --runs`` reads them
   (``<runs>/<variant>/eval_valid.json``);
2. writes the baselines already in ``benchmarks/results/beauty.json`` back out as
   ``genrec baseline`` reports (``<runs>/baselines/{popular,sasrec}.json``), so that
   ``benchmarks/beauty_results.py`` keeps them without re-running SASRec;
3. prints the two commands that update ``benchmarks/results/beauty.json`` and
   ``benchmarks/results/tokenizer_beauty.json`` (``--apply`` runs them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[2]
BEAUTY_RESULT = REPO / "benchmarks" / "results" / "beauty.json"


def rel(path: Path) -> str:
    return os.path.relpath(path, REPO)


def baseline_reports(result: Path, out: Path) -> list[Path]:
    """Each baseline of ``result`` as the ``{method, dataset, valid, test}`` file it came from."""
    saved = json.loads(result.read_text())
    paths = []
    for method in ("popular", "sasrec"):
        if not saved.get(method):
            continue
        report: dict[str, object] = {"method": method, "dataset": "Beauty"}
        report.update({split: {"metrics": saved[method][split]} for split in ("valid", "test")})
        path = out / f"{method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        paths.append(path)
    return paths


def write_ablation(runs: Path, summary: dict[str, object]) -> Path:
    """``<runs>/ablation.json`` from an ``--ablation`` call: the rows' configs, evals and budgets."""
    sys.path.insert(0, str(REPO))
    from training.ablation import ablation_result
    from training.train_config import TrainConfig

    rows = [str(r) for r in cast(list, summary["variants"])]
    variants = {
        r: TrainConfig.model_validate_json((runs / "configs" / f"{r}.json").read_text()) for r in rows
    }
    reports = {
        r: json.loads((runs / r / "eval_valid.json").read_text())
        for r in rows
        if (runs / r / "eval_valid.json").is_file()
    }
    train_reports = {
        r: json.loads(p.read_text()) for r in rows if (p := runs / "runs" / r / "train_report.json").is_file()
    }
    result = ablation_result(
        variants,
        reports,
        train_reports,
        base_config=str(summary.get("config_file")),
        tokenizer=f"index {summary['ablation_index']} (.gpu_data/tok/, as prepare.sh makes it)",
        commands=[
            "bash benchmarks/gpu/check_device.sh",
            f"bash benchmarks/gpu/train_and_evaluate.sh ... -> {summary['command']}",
        ],
    )
    path = runs / "ablation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ablation: {len(reports)} of {len(rows)} rows evaluated -> {rel(path)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=Path, required=True, help="the folder the run's $OUT came back in")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "gpu")
    parser.add_argument(
        "--test-variant", help="the variant evaluated on test (default: the summary's test_variant)"
    )
    parser.add_argument("--apply", action="store_true", help="run the two result commands too")
    args = parser.parse_args()

    runs: Path = args.runs
    runs.mkdir(parents=True, exist_ok=True)
    archive = next(args.files.rglob("reports.tar.gz"), None)
    if archive is None:
        sys.exit(f"no reports.tar.gz under {args.files}")
    with tarfile.open(archive) as tar:
        tar.extractall(runs, filter="data")
    for name in ("summary.json", "pipeline.log", "call1.log", "call2.log"):
        found = next(args.files.rglob(name), None)
        if found is not None:
            shutil.copy(found, runs / name)
    evals = sorted((runs / "eval").glob("eval_*_*.json"))
    for report in evals:
        variant, split = report.stem.removeprefix("eval_").rsplit("_", 1)
        (runs / variant).mkdir(exist_ok=True)
        shutil.copy(report, runs / variant / f"eval_{split}.json")
        metrics = json.loads(report.read_text())
        print(f"{variant:9s} {split:5s} users {metrics['users']:6d}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in metrics["metrics"].items()
        ))  # fmt: skip
    baselines = baseline_reports(BEAUTY_RESULT, runs / "baselines")

    commands = []
    summary_path = runs / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    tv = runs / str(args.test_variant or summary.get("test_variant", "semantic"))
    if (tv / "eval_valid.json").is_file() and (tv / "eval_test.json").is_file():
        beauty = [sys.executable, "benchmarks/beauty_results.py"]
        for path in baselines:
            beauty += ["--baseline", rel(path)]
        beauty += ["--genrec-valid", rel(tv / "eval_valid.json")]
        beauty += ["--genrec-test", rel(tv / "eval_test.json")]
        commands.append(beauty)
    if any((runs / v / "eval_valid.json").is_file() for v in ("semantic", "behavior", "dual")):
        commands.append([sys.executable, "benchmarks/tokenizer_beauty.py", "--runs", rel(runs)])
    if summary.get("ablation_index"):
        ablation = write_ablation(runs, summary)
        commands.append(
            [sys.executable, "benchmarks/beauty_results.py", "--update", "--ablation", rel(ablation)]
        )
    for command in commands:
        print("$ " + " ".join(command))
        if args.apply:
            subprocess.run(command, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
