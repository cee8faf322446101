"""Here, after call 2: unpack what came back from the GPU machine and file it into the results.

    python benchmarks/gpu/collect.py --files /work/.device/<...>   # the reply's files_at

1. unpacks ``reports.tar.gz`` into ``--runs`` (default ``runs/gpu``): ``runs/<variant>/
   train_report.json``, ``eval/eval_<variant>_<split>.json``, ``logs/``; and lays the eval
   reports out as ``benchmarks/tokenizer_beauty.py --runs`` reads them
   (``<runs>/<variant>/eval_valid.json``);
2. prints the commands that update ``benchmarks/results/beauty.json`` and
   ``benchmarks/results/tokenizer_beauty.json`` (``--apply`` runs them). The test variant's run
   goes to its own entry of ``beauty.json``, ``genrec_cuda`` (``--genrec-key``), with
   ``--update``: the CPU recipe's ``genrec`` entry, the baselines and the rest stay as filed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[2]
GPU_KEY = "genrec_cuda"  # beauty.json's entry of a GPU run, beside the CPU recipe's `genrec`
VARIANTS = ("behavior_item", "semantic", "behavior", "dual")  # the indices tokenizer_beauty.py files


def rel(path: Path) -> str:
    return os.path.relpath(path, REPO)


def genrec_command(
    runs: Path, variant: str, summary: dict[str, object], key: str, tok_root: Path
) -> list[str]:
    """``beauty_results.py`` filing ``variant``'s valid and test reports as the ``key`` entry."""
    beauty = [sys.executable, "benchmarks/beauty_results.py", "--update", "--genrec-key", key]
    beauty += ["--genrec-valid", rel(runs / variant / "eval_valid.json")]
    beauty += ["--genrec-test", rel(runs / variant / "eval_test.json")]
    train_report = runs / "runs" / variant / "train_report.json"
    if train_report.is_file():
        beauty += ["--genrec-train-report", rel(train_report)]
    index_report = tok_root / variant / "tokenizer_report.json"  # the dir that travelled
    if index_report.is_file():
        beauty += ["--genrec-index-report", rel(index_report)]
    made = "benchmarks/gpu/check_device.sh, then train_and_evaluate.sh:"
    beauty += ["--genrec-command", f"{made} {summary.get('command')} (index {variant})"]
    return beauty


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
    parser.add_argument(
        "--genrec-key", default=GPU_KEY, help="the beauty.json entry of the test variant's run"
    )
    parser.add_argument(
        "--tok-root",
        type=Path,
        default=REPO / ".gpu_data" / "tok",
        help="the tokenizer dirs that travelled (prepare.sh's), for the index's level sources",
    )
    parser.add_argument("--apply", action="store_true", help="run the result commands too")
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
        print(f"{variant:13s} {split:5s} users {metrics['users']:6d}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in metrics["metrics"].items()
        ))  # fmt: skip
    commands = []
    summary_path = runs / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    test_variant = str(args.test_variant or summary.get("test_variant") or VARIANTS[0])
    tv = runs / test_variant
    if (tv / "eval_valid.json").is_file() and (tv / "eval_test.json").is_file():
        if summary.get("device", "cuda") != "cuda":
            print(f"note: these runs were on {summary['device']}, not cuda (a rehearsal?)")
        commands.append(genrec_command(runs, test_variant, summary, args.genrec_key, args.tok_root))
    if any((runs / v / "eval_valid.json").is_file() for v in VARIANTS):
        commands.append([sys.executable, "benchmarks/tokenizer_beauty.py", "--runs", rel(runs)])
    if summary.get("ablation_index"):
        ablation = write_ablation(runs, summary)
        commands.append(
            [sys.executable, "benchmarks/beauty_results.py", "--update", "--ablation", rel(ablation)]
        )
    for command in commands:
        print("$ " + shlex.join(command))
        if args.apply:
            subprocess.run(command, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
