"""Assemble ``benchmarks/results/beauty.json`` (or another dataset's) from the harness's reports.

``genrec baseline`` writes one ``{valid, test}`` file per baseline and ``genrec eval`` one
report per split for genrec; this puts their Recall@5/10 and NDCG@5/10 side by side, with the
commands that produced them. A method whose reports are not given is recorded as ``null``, or
with ``--update`` kept as the file had it (e.g. to add the ablation of a later run).

genrec's reports go to the ``genrec`` entry (the CPU recipe of ``benchmarks/beauty_cpu.sh``) or,
with ``--genrec-key``, to another one beside it: ``benchmarks/gpu/collect.py`` files a GPU run
as ``genrec_cuda`` (``--update`` required, so ``genrec`` stays as it is). An entry it replaces
moves to ``<key>_earlier``, newest first.

    python benchmarks/beauty_results.py --baseline runs/beauty/popular.json \\
        --baseline runs/beauty/sasrec.json [--genrec-valid FILE --genrec-test FILE] \\
        [--ablation runs/ablation/ablation.json]
    python benchmarks/beauty_results.py --update --genrec-key genrec_cuda \\
        --genrec-valid runs/gpu/behavior_item/eval_valid.json \\
        --genrec-test runs/gpu/behavior_item/eval_test.json \\
        --genrec-train-report runs/gpu/runs/behavior_item/train_report.json
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
GENREC = "genrec"  # the entry of the CPU recipe; --genrec-key names another one
EARLIER = "_earlier"  # <entry>_earlier: the runs an entry replaced, newest first
METHODS = (GENREC, "sasrec", "popular")


def metrics(report: dict[str, object]) -> dict[str, float]:
    values = report["metrics"]
    assert isinstance(values, dict)
    return {m: float(values[m]) for m in METRICS}


# the training settings a genrec entry records (the rest are in its run's train_report.json)
RECIPE_KEYS = (
    "objective", "prompt_format", "loss_vocab", "precision", "epochs", "batch_size", "lr",
    "embedding_dropout", "hidden_dropout", "attention_dropout", "weight_decay", "scratch_sid_init",
)  # fmt: skip


def index_sources(report: Path) -> list[str] | None:
    """The level sources a tokenizer report records (``genrec tokenize``'s output or a tokenizer
    dir's ``tokenizer_report.json``)."""
    saved = json.loads(report.read_text())
    return saved.get("extra", {}).get("level_sources") or saved.get("level_sources")


def _index_sources(run: Path) -> list[str] | None:
    """What each semantic-ID level of the run's item index was built from."""
    path = run / "tokenize.json"
    return index_sources(path) if path.is_file() else None


def train_summary(report: dict[str, object], index: list[str] | None) -> dict[str, object]:
    """Backbone, device, index, recipe and training figures of a run's ``train_report.json``."""
    config = report["config"]
    assert isinstance(config, dict)
    backbone = config["base_model"]
    if backbone == "scratch":
        shape = config["scratch"]
        backbone = f"scratch Llama ({shape['layers']} layers, hidden {shape['hidden']})"
    device = str(report["device"])
    return {
        "backbone": backbone,
        "device": device,
        "index": index,
        "recipe": {k: config.get(k) for k in RECIPE_KEYS},
        # the precision training ran in on this machine (auto: bf16 on CUDA and where the CPU has it)
        "precision_used": resolve_precision(config["precision"], device.partition(":")[0]),
        "train_steps": report["steps"],
        "best_step": report.get("best_step"),
        "train_tokens_per_s": report.get("tokens_per_s"),
    }


def run_summary(run: Path) -> dict[str, object]:
    """Backbone, device, recipe and wall times of a ``benchmarks/beauty_cpu.sh`` run folder."""
    seconds: dict[str, float] = {}
    for line in (run / "times.txt").read_text().splitlines():
        name, value = line.split()
        seconds[name] = seconds.get(name, 0.0) + float(value)
    report = json.loads((run / "run" / "train_report.json").read_text())
    return {
        **train_summary(report, _index_sources(run)),
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
    parser.add_argument(
        "--genrec-train-report",
        type=Path,
        help="the run's train_report.json, for a run not made by beauty_cpu.sh (e.g. on the GPU)",
    )
    parser.add_argument(
        "--genrec-index-report",
        type=Path,
        help="with --genrec-train-report: the run's tokenizer report (tokenizer_report.json), for the index",
    )
    parser.add_argument("--genrec-command", help="the command that made the genrec run")
    parser.add_argument(
        "--genrec-key",
        default=GENREC,
        help="the entry genrec's reports go to (genrec: the CPU recipe; genrec_cuda: a GPU run); "
        "another than genrec needs --update",
    )
    parser.add_argument(
        "--ablation", type=Path, help="`benchmarks/ablation_beauty.py`'s ablation.json (validation)"
    )
    parser.add_argument("--data", default=BEAUTY_DATA, help="the dataset the reports were made on")
    parser.add_argument("--out", type=Path, default=RESULTS / "beauty.json")
    parser.add_argument(
        "--update", action="store_true", help="keep what --out holds for every part not given here"
    )
    args = parser.parse_args()
    genrec_key = args.genrec_key
    if not genrec_key.startswith(GENREC) or genrec_key.endswith(EARLIER):
        parser.error(f"--genrec-key: {genrec_key!r} is not a genrec entry's name (genrec, genrec_cuda, ...)")
    if genrec_key != GENREC and not args.update:
        parser.error(
            f"--genrec-key {genrec_key} needs --update (without it the file's other entries are dropped)"
        )
    if args.genrec_run and args.genrec_train_report:
        parser.error("--genrec-run and --genrec-train-report: give one (the run folder holds its report)")

    previous = json.loads(args.out.read_text()) if args.update and args.out.is_file() else {}
    result: dict[str, object] = {m: previous.get(m) for m in METHODS}
    for kept, value in previous.items():  # the ablation, other genrec entries, replaced runs
        if kept not in result and kept != "commands":
            result[kept] = value
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
        genrec: dict[str, object] = {split: metrics(report) for split, report in reports.items()}
        genrec["users"] = reports["test"]["users"]
        genrec["valid_users"] = reports["valid"]["users"]
        if args.genrec_run:
            genrec.update(run_summary(args.genrec_run))
        elif args.genrec_train_report:
            index = index_sources(args.genrec_index_report) if args.genrec_index_report else None
            train = json.loads(args.genrec_train_report.read_text())
            genrec.update(train_summary(train, index))
            # why stage 1 ended (max_steps: the whole schedule; time_budget: cut by --max-train-s)
            genrec.update(train_stopped=train.get("stopped"), train_s=train.get("train_s"))
        if args.genrec_command:
            genrec["command"] = args.genrec_command
        earlier = previous.get(genrec_key)
        if earlier and earlier != genrec:  # a replaced run stays on record, newest first
            result[genrec_key + EARLIER] = [earlier, *previous.get(genrec_key + EARLIER, [])]
        result[genrec_key] = genrec
    if args.ablation:
        ablation = json.loads(args.ablation.read_text())
        result["ablation"] = {k: ablation[k] for k in ("split", "base_config", "tokenizer", "rows", "budget")}
        commands.extend(ablation["commands"])
    commands.append(" ".join(["python benchmarks/beauty_results.py", *sys.argv[1:]]))
    result["commands"] = list(dict.fromkeys(commands))  # each command once, first use first
    emit(result, args.out)


if __name__ == "__main__":
    main()
