"""The fine-tuning ablation on Beauty: what each task family and the annealing stage add.

Derives the rows from one base config (``training.ablation``: ``full``, one family or the
annealing stage switched per row, ``next_item_only``), then for each row, one after another,
``genrec train`` -> ``genrec export`` -> ``genrec eval --split valid`` on the same validation
users, and writes ``<runs>/ablation.json`` (the table, the budget each row got, the
commands). ``benchmarks/beauty_results.py --ablation <runs>/ablation.json`` files it in
``benchmarks/results/beauty.json``. A row whose ``eval_valid.json`` exists is not run again, so
an interrupted ablation continues where it stopped (a row evaluated with other settings is an
error, not silently reused).

Every row gets the same stage-1 budget: give it with ``--train-args "--max-steps N"`` (equal
optimizer steps; the default is the base config's epochs, which is *not* equal across rows,
since fewer tasks make a shorter epoch) or ``--max-train-s``. It needs a GPU for the real
model; ``--train-args "--base-model tiny ..."`` rehearses it on the CPU:

    python benchmarks/ablation_beauty.py --tokenizer benchmarks/.cache/tokenizer_beauty/dual \\
        --runs runs/ablation --train-args "--max-steps 3000" --max-users 5000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, emit  # noqa: E402
from training.ablation import ablation_result, ablation_variants, select_rows  # noqa: E402
from training.train_config import TrainConfig  # noqa: E402

# genrec's offline commands without the service side (also what a GPU machine can import)
CLI = [sys.executable, str(REPO / "benchmarks" / "gpu" / "offline_cli.py")]
EVAL_REPORT = "eval_valid.json"
ROW_RECIPE = "row.json"  # the config and commands a row's results belong to

logger = logging.getLogger("ablation")


def run_step(name: str, args: list[str], log: Path) -> None:
    """One CLI step with its output in ``log``; a failure names the step and the log."""
    logger.info("%s: %s", name, shlex.join(args))
    started = time.perf_counter()
    with log.open("ab") as out:
        code = subprocess.call(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{name} failed (exit {code}); the end of {log}:\n" + "\n".join(tail))
    logger.info("%s done in %.0f s", name, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=BEAUTY)
    parser.add_argument("--tokenizer", type=Path, required=True, help="a `genrec tokenize` output")
    parser.add_argument("--runs", type=Path, required=True, help="one folder per row goes here")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "configs" / "train_beauty.json")
    parser.add_argument("--rows", help="comma-separated subset of the rows (default: all)")
    parser.add_argument("--add-weight", type=float, default=0.1, help="weight of a family a row adds")
    parser.add_argument("--train-args", default="", help="more `genrec train` options for every row")
    parser.add_argument("--eval-args", default="", help="more `genrec eval` options for every row")
    parser.add_argument("--max-users", type=int, help="validation users (the same sample for every row)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (train and eval)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        base = TrainConfig.model_validate_json(args.config.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--config {args.config}: {exc}") from exc
    try:
        variants = select_rows(ablation_variants(base, add_weight=args.add_weight), args.rows)
    except ValueError as exc:
        raise SystemExit(f"--rows: {exc}") from exc

    commands = []
    reports: dict[str, dict[str, object]] = {}
    train_reports: dict[str, dict[str, object]] = {}
    for number, (name, config) in enumerate(variants.items(), start=1):
        row = args.runs / name
        row.mkdir(parents=True, exist_ok=True)
        (row / "train_config.json").write_text(config.model_dump_json(indent=2))
        train = [
            *CLI, "train", "--config", str(row / "train_config.json"), "--data", str(args.data),
            "--tokenizer", str(args.tokenizer), "--out", str(row / "run"), "--device", args.device,
            *shlex.split(args.train_args),
        ]  # fmt: skip
        export = [*CLI, "export", "--run", str(row / "run"), "--artifacts", str(row / "artifacts")]
        export += ["--version", f"ablation-{name}"]
        evaluate = [
            *CLI, "eval", "--artifacts", str(row / "artifacts" / f"ablation-{name}"), "--data",
            str(args.data), "--split", "valid", "--engine", "hf", "--device", args.device,
            "--out", str(row / EVAL_REPORT), *shlex.split(args.eval_args),
        ]  # fmt: skip
        if args.max_users:
            evaluate += ["--max-users", str(args.max_users)]
        steps = [shlex.join(step) for step in (train, export, evaluate)]
        commands += steps
        recipe = {"config": config.model_dump(), "commands": steps}
        if (row / EVAL_REPORT).is_file():
            if json.loads((row / ROW_RECIPE).read_text()) != recipe:
                raise SystemExit(
                    f"{row} was evaluated with another config or other options; "
                    "remove that folder to run the row again"
                )
            logger.info(
                "row %d/%d %s: already evaluated with these settings, kept", number, len(variants), name
            )
        else:
            logger.info("row %d/%d %s", number, len(variants), name)
            (row / ROW_RECIPE).write_text(json.dumps(recipe, indent=2))
            for step, step_args in (("train", train), ("export", export), ("eval", evaluate)):
                run_step(f"{name} {step}", step_args, row / f"{step}.log")
        reports[name] = json.loads((row / EVAL_REPORT).read_text())
        train_reports[name] = json.loads((row / "run" / "train_report.json").read_text())

    result = ablation_result(
        variants,
        reports,
        train_reports,
        base_config=str(args.config),
        tokenizer=str(args.tokenizer),
        commands=[" ".join(["python benchmarks/ablation_beauty.py", *sys.argv[1:]]), *commands],
    )
    emit(result, args.runs / "ablation.json")


if __name__ == "__main__":
    main()
