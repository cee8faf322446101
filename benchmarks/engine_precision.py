"""bf16 against fp32 in the vLLM engine, list by list, on a trained Beauty bundle.

Runs ``genrec eval --engine vllm`` on the same users twice, ``--precision fp32`` and
``--precision bf16`` (the engine's dtype, ENGINE_DTYPE when serving), each writing every
user's ranked list, then compares them: the mean overlap of the two top-10 lists, the share of
identical top-10s, and Recall/NDCG of both with the paired difference and its 95% interval
(per-user differences, so "equal within noise" is a measured statement).

    python benchmarks/engine_precision.py --artifacts runs/beauty_cpu/artifacts/beauty-cpu
    python benchmarks/engine_precision.py --artifacts ... --max-users 2000   # a sample

Writes ``benchmarks/results/engine_precision_beauty.json``. Speed is not the point here (both
runs share the machine with nothing else, but bf16 may be slower on CPUs without fast bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402

TOP = 10
PRECISIONS = ("fp32", "bf16")


def run_eval(args: argparse.Namespace, precision: str, work: Path) -> tuple[dict[str, object], list[dict]]:
    """One ``genrec eval --engine vllm`` run: its report and its per-user lists."""
    report, lists = work / f"eval_{precision}.json", work / f"lists_{precision}.jsonl"
    command = [str(REPO / ".venv" / "bin" / "genrec"), "eval", "--artifacts", str(args.artifacts)]
    command += ["--data", str(args.data), "--split", args.split, "--engine", "vllm", "--k", "20"]
    command += ["--precision", precision, "--out", str(report), "--lists", str(lists)]
    if args.max_users:
        command += ["--max-users", str(args.max_users)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in lists.read_text().splitlines()]
    return json.loads(report.read_text()), rows


def hit_and_gain(row: dict) -> tuple[float, float]:
    """Recall@10 and NDCG@10 of one user (one held-out target)."""
    items = row["items"][:TOP]
    if row["target"] not in items:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(items.index(row["target"]) + 2)


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of b - a with a 95% normal interval over users."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)
    half = 1.96 * math.sqrt(var / len(diffs))
    return {"bf16_minus_fp32": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def compare(fp32: list[dict], bf16: list[dict]) -> dict[str, object]:
    if [r["user_id"] for r in fp32] != [r["user_id"] for r in bf16]:
        raise ValueError("the two runs ranked different users")
    overlaps = [
        len(set(a["items"][:TOP]) & set(b["items"][:TOP])) / TOP for a, b in zip(fp32, bf16, strict=True)
    ]
    same = sum(a["items"][:TOP] == b["items"][:TOP] for a, b in zip(fp32, bf16, strict=True))
    scores = {name: [hit_and_gain(r) for r in rows] for name, rows in (("fp32", fp32), ("bf16", bf16))}
    return {
        "users": len(fp32),
        "mean_top10_overlap": sum(overlaps) / len(overlaps),
        "min_top10_overlap": min(overlaps),
        "identical_top10_share": same / len(fp32),
        "recall@10": paired([s[0] for s in scores["fp32"]], [s[0] for s in scores["bf16"]]),
        "ndcg@10": paired([s[1] for s in scores["fp32"]], [s[1] for s in scores["bf16"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifacts", type=Path, required=True, help="a trained Beauty bundle")
    parser.add_argument("--data", type=Path, default=BEAUTY)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-users", type=int, default=None, help="a random sample (default: every user)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "engine_precision")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine_precision_beauty.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    reports, lists = {}, {}
    for precision in PRECISIONS:
        reports[precision], lists[precision] = run_eval(args, precision, args.work)
    emit(
        {
            "split": args.split,
            "comparison": compare(lists["fp32"], lists["bf16"]),
            "reports": reports,
            "command": "python benchmarks/engine_precision.py " + " ".join(sys.argv[1:]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
