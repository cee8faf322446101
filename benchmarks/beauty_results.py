"""Assemble ``benchmarks/results/beauty.json`` (or another dataset's) from the harness's reports.

``genrec baseline`` writes one ``{valid, test}`` file per baseline and ``genrec eval`` one
report per split for genrec; this puts their Recall@5/10 and NDCG@5/10 side by side, with the
commands that produced them. A method whose reports are not given is recorded as ``null``, or
with ``--update`` kept as the file had it (e.g. to add the ablation of a later run).

    python benchmarks/beauty_results.py --baseline runs/beauty/popular.json \\
        --baseline runs/beauty/sasrec.json [--genrec-valid FILE --genrec-test FILE] \\
        [--ablation runs/ablation/ablation.json]
    python benchmarks/beauty_results.py --data ../shared/datasets/amazon2014_office_lcrec \\
        --baseline runs/office/popular.json --baseline runs/office/sasrec.json \\
        --out benchmarks/results/office.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import RESULTS, emit  # noqa: E402
from model.cpu_features import resolve_precision  # noqa: E402

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
BASELINE_COMMAND = "genrec baseline --data {data} --method {method} --out {out}"
BEAUTY_DATA = "../shared/datasets/amazon2014_beauty_p5order"


def metrics(report: dict[str, object]) -> dict[str, float]:
    values = report["metrics"]
    assert isinstance(values, dict)
    return {m: float(values[m]) for m in METRICS}


# the training settings a genrec entry records (the rest are in its run's train_report.json)
RECIPE_KEYS = (
    "objective", "prompt_format", "loss_vocab", "precision", "epochs", "batch_size", "lr",
    "embedding_dropout", "hidden_dropout", "attention_dropout", "weight_decay",
)  # fmt: skip


def _index_sources(run: Path) -> list[str] | None:
    """What each semantic-ID level of the run's item index was built from."""
    path = run / "tokenize.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report.get("extra", {}).get("level_sources") or report.get("level_sources")


def run_summary(run: Path) -> dict[str, object]:
    """Backbone, device, recipe and wall times of a ``benchmarks/beauty_cpu.sh`` run folder."""
    seconds: dict[str, float] = {}
    for line in (run / "times.txt").read_text().splitlines():
        name, value = line.split()
        seconds[name] = seconds.get(name, 0.0) + float(value)
    report = json.loads((run / "run" / "train_report.json").read_text())
    config = report["config"]
    backbone = config["base_model"]
    if backbone == "scratch":
        shape = config["scratch"]
        backbone = f"scratch Llama ({shape['layers']} layers, hidden {shape['hidden']})"
    return {
        "backbone": backbone,
        "device": report["device"],
        "index": _index_sources(run),
        "recipe": {k: config.get(k) for k in RECIPE_KEYS},
        # the precision training ran in on this machine (auto: bf16 where the CPU has it)
        "precision_used": resolve_precision(config["precision"], report["device"]),
        "train_steps": report["steps"],
        "best_step": report.get("best_step"),
        "train_tokens_per_s": report.get("tokens_per_s"),
        "train_wall_s": seconds.get("train"),
        "eval_test_wall_s": seconds.get("eval_test"),
        "total_wall_s": sum(seconds.values()),
        "step_wall_s": seconds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[], help="a `genrec baseline` output"
    )
    parser.add_argument(
        "--sasrec-config", help="the --sasrec-config of a SASRec report that does not name it"
    )
    parser.add_argument("--genrec-valid", type=Path, help="`genrec eval --split valid --out` report")
    parser.add_argument("--genrec-test", type=Path, help="`genrec eval --split test --out` report")
    parser.add_argument(
        "--genrec-run", type=Path, help="benchmarks/beauty_cpu.sh's run folder (times, train report)"
    )
    parser.add_argument("--genrec-command", help="the command that made the genrec run")
    parser.add_argument(
        "--ablation", type=Path, help="`benchmarks/ablation_beauty.py`'s ablation.json (validation)"
    )
    parser.add_argument("--data", default=BEAUTY_DATA, help="the dataset the reports were made on")
    parser.add_argument("--out", type=Path, default=RESULTS / "beauty.json")
    parser.add_argument(
        "--update", action="store_true", help="keep what --out holds for every part not given here"
    )
    args = parser.parse_args()

    previous = json.loads(args.out.read_text()) if args.update and args.out.is_file() else {}
    result: dict[str, object] = {m: previous.get(m) for m in ("genrec", "sasrec", "popular")}
    for kept in ("ablation", "genrec_earlier"):
        if kept in previous:
            result[kept] = previous[kept]
    commands = list(previous.get("commands", []))
    for path in args.baseline:
        report = json.loads(path.read_text())
        entry = {split: metrics(report[split]) for split in ("valid", "test")}
        command = BASELINE_COMMAND.format(data=args.data, method=report["method"], out=path)
        config_file = report.get("config_file") or (
            args.sasrec_config if report["method"] == "sasrec" else None
        )
        if config_file:
            command += f" --sasrec-config {config_file}"
        for key in ("epochs_run", "fit_s", "config"):
            if key in report:
                entry[key] = report[key]
        result[report["method"]] = entry
        commands.append(command)
    if args.genrec_valid and args.genrec_test:
        reports = {
            split: json.loads(path.read_text())
            for split, path in (("valid", args.genrec_valid), ("test", args.genrec_test))
        }
        entry: dict[str, object] = {split: metrics(report) for split, report in reports.items()}
        entry["users"] = reports["test"]["users"]
        entry["valid_users"] = reports["valid"]["users"]
        if args.genrec_run:
            entry.update(run_summary(args.genrec_run))
        if args.genrec_command:
            entry["command"] = args.genrec_command
        earlier = previous.get("genrec")
        if earlier and earlier != entry:  # a replaced run stays on record, newest first
            result["genrec_earlier"] = [earlier, *previous.get("genrec_earlier", [])]
        result["genrec"] = entry
    if args.ablation:
        ablation = json.loads(args.ablation.read_text())
        result["ablation"] = {k: ablation[k] for k in ("split", "base_config", "tokenizer", "rows", "budget")}
        commands.extend(ablation["commands"])
    commands.append(" ".join(["python benchmarks/beauty_results.py", *sys.argv[1:]]))
    result["commands"] = list(dict.fromkeys(commands))  # each command once, first use first
    emit(result, args.out)


if __name__ == "__main__":
    main()
