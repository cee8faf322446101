"""Semantic-only, behaviour-only, dual-source and item-level item indices on Beauty, side by side.

Embeds the item texts once and trains SASRec once, then builds each variant's index from the
configs in ``benchmarks/configs/tokenizer_<variant>.json`` (same number of levels, so the
decoding cost is the same) and writes ``benchmarks/results/tokenizer_beauty.json``: per variant
the collision rate before disambiguation, codebook usage and entropy per level, and the
validation Recall@10/NDCG@10 of a fine-tuning run on it; ``null`` until then.

With ``--runs`` (finished ``genrec eval`` reports, ``<runs>/<variant>/eval_valid.json``) nothing
is rebuilt: the indices in ``--out`` are the ones the runs trained on (SASRec on CPU is not
bit-reproducible, so a rebuild could differ). Their own reports give the statistics (a build's
text-embedding and SASRec figures are not repeated), and each run's bundle manifest
(``<runs>/artifacts/<variant>/*/manifest.json``, as ``benchmarks/gpu/collect.py`` lays them
out) must carry the catalog hash of that index.

    python benchmarks/tokenizer_beauty.py                  # ~8 minutes on 2 CPU cores
    python benchmarks/tokenizer_beauty.py --runs runs/gpu  # seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402

DATASET = BEAUTY
CONFIGS = REPO / "benchmarks" / "configs"
RESULT = RESULTS / "tokenizer_beauty.json"
BUILD_FILE = "build.json"  # beside the indices: what their build shared (embeddings, SASRec), for --runs
# behavior_item (one behavioural level + a token per item) is the default index of the recipe
VARIANTS = ("semantic", "behavior", "dual", "behavior_item")

logger = logging.getLogger("tokenizer_beauty")


def valid_metrics(runs: Path | None, variant: str) -> dict[str, float] | None:
    """Recall@10/NDCG@10 from ``genrec eval --split valid`` of the variant's fine-tuned bundle."""
    report = runs / variant / "eval_valid.json" if runs else None
    if report is None or not report.is_file():
        return None
    metrics = json.loads(report.read_text())["metrics"]
    return {"recall@10": metrics["recall@10"], "ndcg@10": metrics["ndcg@10"]}


def variant_entry(report: dict[str, object], valid: dict[str, float] | None) -> dict[str, object]:
    """One variant's line: the tokenizer report's statistics and the validation metrics."""
    extra = report["extra"]
    assert isinstance(extra, dict)
    fields = ("collision_rate", "codebook_sizes", "usage", "entropy_bits", "max_items_per_prefix")
    return {
        **{k: report[k] for k in fields},
        "level_sources": extra["level_sources"],
        "valid": valid,
    }


def check_trained_on(runs: Path, variant: str, index: Path) -> str:
    """The manifest proving that ``variant``'s evaluated bundle was built on ``index``."""
    from model.bundle import sha256_file

    manifests = sorted((runs / "artifacts" / variant).glob("*/manifest.json"))
    if not manifests:
        raise SystemExit(
            f"{variant}: no bundle manifest under {runs / 'artifacts' / variant}; "
            "cannot tell which index its run trained on"
        )
    have = sha256_file(index / "catalog.json")
    for manifest in manifests:
        want = json.loads(manifest.read_text())["hashes"]["catalog"]
        if want != have:
            raise SystemExit(
                f"{variant}: {manifest} was built on another index than {index} "
                f"(catalog sha256 {want[:12]} vs {have[:12]})"
            )
    return str(manifests[0])


def from_runs(args: argparse.Namespace) -> dict[str, object]:
    """The statistics of the indices in ``--out`` and the runs' validation metrics, nothing rebuilt."""
    result: dict[str, object] = {}
    checked = {}
    for variant in VARIANTS:
        index = args.out / variant
        report_path = index / "tokenizer_report.json"
        if not report_path.is_file():
            raise SystemExit(f"{variant}: no {report_path}; build the indices first (without --runs)")
        valid = valid_metrics(args.runs, variant)
        if valid is not None:
            checked[variant] = check_trained_on(args.runs, variant, index)
        result[variant] = variant_entry(json.loads(report_path.read_text()), valid)
    result["indices"] = {"dir": str(args.out), "trained_on_checked_by": checked}
    build = args.out / BUILD_FILE
    if build.is_file():  # the build's shared figures travel with the indices they describe
        result.update(json.loads(build.read_text()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATASET)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / ".cache" / "tokenizer_beauty")
    parser.add_argument(
        "--runs", type=Path, help="directory of per-variant fine-tuning runs with eval reports"
    )
    parser.add_argument("--result", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.runs is not None:
        checked = from_runs(args)
        checked["command"] = " ".join(["python benchmarks/tokenizer_beauty.py", *sys.argv[1:]])
        emit(checked, args.result)
        return

    from training.data import load_lcrec, sort_item_ids
    from training.item_tokenizer import behavior_embeddings, semantic_embeddings, tokenize_dataset
    from training.text_embeddings import encode_texts
    from training.tokenizer_config import BEHAVIOR, SEMANTIC, ItemTokenizerConfig

    data = load_lcrec(args.data)
    item_ids = sort_item_ids(data.items)
    configs = {
        v: ItemTokenizerConfig.model_validate_json((CONFIGS / f"tokenizer_{v}.json").read_text())
        for v in VARIANTS
    }
    started = time.perf_counter()
    text, embed_s = semantic_embeddings(data, item_ids, encode_texts)
    behavior, sasrec = behavior_embeddings(data, item_ids, configs["dual"].sasrec)
    shared_s = time.perf_counter() - started
    result: dict[str, object] = {}
    for variant, config in configs.items():
        _, report = tokenize_dataset(
            data, config, args.out / variant, precomputed={SEMANTIC: text, BEHAVIOR: behavior}
        )
        result[variant] = variant_entry(report.to_json(), None)
    build = {
        "shared": {"text_embedding_s": embed_s, "sasrec": sasrec, "embeddings_s": shared_s},
        "config": {"dataset": data.name, "items": len(item_ids), "configs": "benchmarks/configs/"},
    }
    (args.out / BUILD_FILE).write_text(json.dumps(build, indent=2) + "\n")
    result.update(build)
    result["command"] = " ".join(["python benchmarks/tokenizer_beauty.py", *sys.argv[1:]])
    emit(result, args.result)


if __name__ == "__main__":
    main()
