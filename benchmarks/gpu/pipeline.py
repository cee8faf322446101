"""The device side of a Beauty GPU session, inside one deadline.

By default it runs the project's filed recipe on the GPU: ``benchmarks/configs/train_beauty_gpu.json``
(``train_beauty_cpu.json``, the CPU recipe of ``benchmarks/beauty_cpu.sh``: a scratch
Llama 4x128 trained on whole sequences with the per-level softmax, here with ``device`` cuda,
40 cosine epochs and validation NDCG@10 on 2,000 users), on each tokenizer variant:
``behavior_item`` (the recipe's index) first, then ``semantic``, ``behavior`` and ``dual``.

1. convert the reassembled SmolLM2 GGUF into the HF checkpoint ``genrec train`` starts from,
   only when the config (or ``--train-args --base-model``) trains from ``smollm2``; the scratch
   model needs no base checkpoint;
2. train one run per variant, all at once on the one GPU (a small model leaves an H200 mostly
   idle; the same config and time cap for each);
3. export each run into a bundle;
4. evaluate with the HF engine (no vLLM there): validation for every variant, test for
   ``--test-variant`` (``best``: the variant with the best validation score during training,
   the config's ``val_metric`` at ``val_k``, chosen before any test metric exists), all at
   once. The number of users is what fits before the deadline, estimated from the runs' own
   validation speed (all users when they fit);
5. pack the reports into ``--out``: ``summary.json``, ``eval_<variant>_<split>.json``,
   ``reports.tar.gz`` (every train_report.json, eval report and log) and ``pipeline.log``.

With ``--ablation INDEX`` step 2 trains the rows of the fine-tuning ablation instead
(``training.ablation``: ``full`` and one part switched per row, from ``--config``, by default
the SmolLM2 prompt recipe ``benchmarks/configs/train_beauty.json`` whose task families the rows
switch), all on that one index with the same time cap, and step 4 evaluates each on
validation only.

Whatever stops a step (a crash, a timeout), what exists by then is packed. Every step runs
``benchmarks/gpu/offline_cli.py`` (``genrec`` without the service side) in a subprocess with
its own log. ``train_and_evaluate.sh`` (device call 2) calls this after installing the wheels
and joining the model; ``benchmarks/gpu/collect.py`` files the results here afterwards (the
test variant as the ``genrec_cuda`` entry of ``benchmarks/results/beauty.json``); for a CPU
rehearsal see ``benchmarks/gpu/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO / "benchmarks" / "gpu" / "offline_cli.py")]
VARIANTS = ("behavior_item", "semantic", "behavior", "dual")  # the recipe's index first
CONFIGS = REPO / "benchmarks" / "configs"
GPU_CONFIG = CONFIGS / "train_beauty_gpu.json"  # the filed recipe on the GPU
ABLATION_CONFIG = CONFIGS / "train_beauty.json"  # the SmolLM2 task mixture the ablation switches
SMOLLM2 = "smollm2"  # the one base model that step 1 converts
BEST = "best"
ALL_USERS = 22363  # Beauty's users with a validation and a test target

logger = logging.getLogger("gpu.pipeline")


class Clock:
    """Seconds since the call started (``--started``, epoch seconds from the shell) and left."""

    def __init__(self, started: float, deadline_s: float) -> None:
        self.started = started
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        return self.deadline_s - self.elapsed()


def run_logged(
    name: str, args: list[str], log_dir: Path, env: dict[str, str], timeout: float
) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    logger.info("start %s (timeout %.0f s): %s", name, timeout, " ".join(args))
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    proc.name = name  # type: ignore[attr-defined]
    proc.deadline = time.time() + timeout  # type: ignore[attr-defined]
    return proc


def wait_all(procs: list[subprocess.Popen[bytes]], log_dir: Path) -> dict[str, int | str]:
    """Wait for every process; kill those past their deadline. name -> return code or 'timeout'."""
    status: dict[str, int | str] = {}
    pending = list(procs)
    while pending:
        for proc in list(pending):
            code = proc.poll()
            if code is None and time.time() > proc.deadline:  # type: ignore[attr-defined]
                proc.kill()
                proc.wait()
                code = -9
                status[proc.name] = "timeout"  # type: ignore[attr-defined]
            if code is not None:
                pending.remove(proc)
                status.setdefault(proc.name, code)  # type: ignore[attr-defined]
                level = logging.INFO if code == 0 else logging.ERROR
                logger.log(level, "%s finished: %s", proc.name, status[proc.name])  # type: ignore[attr-defined]
                if code != 0:
                    tail = (log_dir / f"{proc.name}.log").read_bytes()[-3000:]  # type: ignore[attr-defined]
                    logger.error("%s log tail:\n%s", proc.name, tail.decode(errors="replace"))  # type: ignore[attr-defined]
        time.sleep(1.0)
    return status


def eval_users(runs: dict[str, Path], jobs: int, seconds: float, cap: int | None) -> int | None:
    """Users per eval that fit in ``seconds``: the runs' median validation rate (users/s while
    the runs shared the GPU, as the ``jobs`` evals will; the first validation also pays the
    warm-up), 60% of it, after 40 s of loading. None (all users) when they fit; ``cap`` when
    no run validated."""
    rates = []
    for run in runs.values():
        report = run / "train_report.json"
        if not report.is_file():
            continue
        curve = json.loads(report.read_text()).get("val_curve") or []
        users = json.loads(report.read_text())["config"]["val_users"]
        rates += [users / p["wall_s"] for p in curve if p.get("wall_s")]
    if not rates:
        return cap
    rate = sorted(rates)[len(rates) // 2]
    fit = int(rate * max(0.0, seconds - 40.0) * 0.6 * 3 / max(jobs, 3))
    logger.info(
        "validation ran at %.1f users/s (median): %d users fit per eval in %.0f s", rate, fit, seconds
    )
    users = None if fit >= ALL_USERS else max(fit, 100)
    if cap is not None:
        users = cap if users is None else min(users, cap)
    return users


def base_model(config: Path, train_args: str) -> str:
    """The base model the runs start from: ``--base-model`` in ``train_args``, else the config's."""
    chosen = str(json.loads(config.read_text()).get("base_model", SMOLLM2))  # TrainConfig's default
    words = shlex.split(train_args)
    for n, word in enumerate(words):
        if word == "--base-model" and n + 1 < len(words):
            chosen = words[n + 1]
        elif word.startswith("--base-model="):
            chosen = word.split("=", 1)[1]
    return chosen


def ablation_jobs(config: Path, rows: str | None, out: Path) -> dict[str, Path]:
    """Row name -> its config file (written to ``out``) for the ablation of ``config``."""
    sys.path.insert(0, str(REPO))
    from training.ablation import ablation_variants, select_rows
    from training.train_config import TrainConfig

    try:
        variants = select_rows(ablation_variants(TrainConfig.model_validate_json(config.read_text())), rows)
    except ValueError as exc:
        raise SystemExit(f"--ablation-rows: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, row in variants.items():
        paths[name] = out / f"{name}.json"
        paths[name].write_text(row.model_dump_json(indent=2))
    return paths


def best_variant(runs: dict[str, Path]) -> str | None:
    """The run with the best validation score during training (its val_metric; first on a tie)."""
    scores = {}
    for variant, run in runs.items():
        report = run / "train_report.json"
        if report.is_file():
            full = json.loads(report.read_text())
            config = full["config"]
            metric = f"best_val_{config.get('val_metric', 'recall')}@{config['val_k']}"
            scores[variant] = full.get(metric) or 0.0
    if not scores:
        return None
    best = max(scores, key=lambda v: scores[v])  # max keeps the first of equal scores
    logger.info("test variant: %s (best validation score during training: %s)", best, scores)
    return best


PACKED = (
    "logs/*.log", "runs/*/train_report.json", "eval/*.json", "artifacts/*/*/manifest.json", "configs/*.json",
)  # fmt: skip
MAX_LOOSE_EVALS = 4  # eval reports also copied next to summary.json (the reply takes 8 files at most)


def pack(work: Path, out: Path, summary: dict[str, object]) -> None:
    """``summary.json``, the eval reports, ``pipeline.log`` and ``reports.tar.gz`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    reports = sorted((work / "eval").glob("eval_*.json"))
    for report in reports if len(reports) <= MAX_LOOSE_EVALS else []:  # else in the archive only
        shutil.copy(report, out / report.name)
    if (work / "logs" / "pipeline.log").is_file():
        shutil.copy(work / "logs" / "pipeline.log", out / "pipeline.log")
    with tarfile.open(out / "reports.tar.gz", "w:gz") as tar:
        for pattern in PACKED:
            for path in sorted(work.glob(pattern)):
                tar.add(path, arcname=str(path.relative_to(work)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="Beauty dataset directory")
    parser.add_argument("--tok-root", type=Path, required=True, help="<variant>/ tokenizer dirs")
    parser.add_argument("--work", type=Path, required=True, help="scratch: cache, runs, bundles, logs")
    parser.add_argument("--out", type=Path, required=True, help="where the reports go ($OUT)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--test-variant", default=BEST, help="also evaluated on test: a variant, 'best' or '' (none)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"training config (default {os.path.relpath(GPU_CONFIG, REPO)}; "
        f"with --ablation {os.path.relpath(ABLATION_CONFIG, REPO)})",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--started", type=float, default=time.time(), help="epoch s the call began")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="everything packed by then")
    parser.add_argument(
        "--train-s",
        type=float,
        default=240.0,
        help="cap on each run's stage-1 training seconds (validation not counted); a run that reaches "
        "it stops before its cosine schedule ends (train report 'stopped': 'time_budget')",
    )
    parser.add_argument(
        "--eval-reserve-s", type=float, default=150.0, help="kept for export + eval after training"
    )
    parser.add_argument("--train-args", default="", help="more `genrec train` options, one string")
    parser.add_argument(
        "--eval-args", default="--rows 512 --batch-size 256", help="more `genrec eval` options, one string"
    )
    parser.add_argument("--eval-users", type=int, help="at most this many users per eval")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads per process")
    parser.add_argument("--ablation", metavar="INDEX", help="train the ablation's rows on this index")
    parser.add_argument("--ablation-rows", help="comma-separated subset of the ablation's rows")
    args = parser.parse_args()
    if args.config is None:
        args.config = ABLATION_CONFIG if args.ablation else GPU_CONFIG

    clock = Clock(args.started, args.deadline_s)
    work: Path = args.work
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(work / "logs" / "pipeline.log")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().addHandler(handler)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))

    # one training job per name: (tokenizer dir, config file)
    jobs_of: dict[str, tuple[Path, Path]]
    if args.ablation:
        configs = ablation_jobs(args.config, args.ablation_rows, work / "configs")
        jobs_of = {name: (args.tok_root / args.ablation, config) for name, config in configs.items()}
    else:
        variants = [v for v in args.variants.split(",") if v]
        jobs_of = {v: (args.tok_root / v, args.config) for v in variants}
    variants = list(jobs_of)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_MININTERVAL": "15",
        "PYTHONUNBUFFERED": "1",
        "GENREC_CACHE": str(work / "cache"),
    }
    summary: dict[str, object] = {
        "command": shlex.join(["python", "benchmarks/gpu/pipeline.py", *sys.argv[1:]]),
        "variants": variants,
        "ablation_index": args.ablation,
        "config_file": os.path.relpath(args.config, REPO),
        "device": args.device,
        "config": json.loads(args.config.read_text()),
        "base_model": base_model(args.config, args.train_args),
        "train_s": args.train_s,
        "train_args": args.train_args,
        "eval_args": args.eval_args,
        "timeline": {},
    }
    timeline: dict[str, float] = summary["timeline"]  # type: ignore[assignment]
    runs = {v: work / "runs" / v for v in variants}
    try:
        # 1. the base model, once (the runs would race on the cache); none for the scratch model
        if summary["base_model"] == SMOLLM2:
            convert = [
                sys.executable,
                "-c",
                "from training.base_model import convert_smollm2; print(convert_smollm2())",
            ]
            status = wait_all([run_logged("convert", convert, logs, env, clock.left())], logs)
            timeline["converted"] = round(clock.elapsed(), 1)
            if status["convert"] != 0:
                raise RuntimeError("base model conversion failed")
        else:
            logger.info("base model %s: nothing to convert", summary["base_model"])

        # 2. one run per variant, all at once
        train_timeout = clock.left() - args.eval_reserve_s
        procs = []
        for v in variants:
            tokenizer, config = jobs_of[v]
            command = [*CLI, "train", "--config", str(config), "--data", str(args.data)]
            command += ["--tokenizer", str(tokenizer), "--out", str(runs[v])]
            command += [
                "--device",
                args.device,
                "--max-train-s",
                str(args.train_s),
                *shlex.split(args.train_args),
            ]
            procs.append(run_logged(f"train_{v}", command, logs, env, train_timeout))
        summary["train_status"] = wait_all(procs, logs)
        timeline["trained"] = round(clock.elapsed(), 1)
        for v in variants:
            report = runs[v] / "train_report.json"
            if report.is_file():
                full = json.loads(report.read_text())
                summary[f"train_{v}"] = {k: full.get(k) for k in (
                    "examples", "task_examples", "steps", "stopped", "best_step", "train_s", "encode_s",
                    "tokens_per_s", "final_loss_ema", "val_curve", "anneal", "wall_s", "aligned_sid_init_r2",
                )}  # fmt: skip
        trained = {v: runs[v] for v in variants if (runs[v] / "merged" / "config.json").is_file()}

        # 3. bundles, all at once (one artifacts root per variant: export moves its `current` link)
        procs = []
        for v in trained:
            command = [*CLI, "export", "--run", str(runs[v]), "--artifacts", str(work / "artifacts" / v)]
            procs.append(run_logged(f"export_{v}", [*command, "--version", f"beauty-{v}"], logs, env, 120))
        status = wait_all(procs, logs)
        bundles = {v: work / "artifacts" / v / f"beauty-{v}" for v in trained if status[f"export_{v}"] == 0}
        timeline["exported"] = round(clock.elapsed(), 1)

        # 4. evaluations, all at once, inside the deadline
        jobs = [(v, "valid") for v in bundles]
        if args.ablation:  # validation only: the ablation compares rows, it does not report test
            test_variant: str | None = ""
        elif args.test_variant == BEST:
            test_variant = best_variant(trained)
        else:
            test_variant = args.test_variant
        summary["test_variant"] = test_variant
        if test_variant in bundles:
            jobs.append((test_variant, "test"))
        users = eval_users(trained, len(jobs), clock.left(), args.eval_users)
        summary["eval_users"] = users if users is not None else "all"
        (work / "eval").mkdir(exist_ok=True)
        procs = []
        for v, split in jobs:
            command = [
                *CLI,
                "eval",
                "--artifacts",
                str(bundles[v]),
                "--data",
                str(args.data),
                "--split",
                split,
            ]
            command += [
                "--engine",
                "hf",
                "--device",
                args.device,
                "--out",
                str(work / "eval" / f"eval_{v}_{split}.json"),
            ]
            command += [
                *(["--max-users", str(users)] if users is not None else []),
                *shlex.split(args.eval_args),
            ]
            procs.append(run_logged(f"eval_{v}_{split}", command, logs, env, clock.left() - 15))
        summary["eval_status"] = wait_all(procs, logs)
        timeline["evaluated"] = round(clock.elapsed(), 1)
        for v, split in jobs:
            report = work / "eval" / f"eval_{v}_{split}.json"
            if report.is_file():
                full = json.loads(report.read_text())
                summary[f"eval_{v}_{split}"] = {
                    k: full[k] for k in ("users", "metrics", "wall_s", "users_per_s", "extra")
                }
    except Exception as exc:  # pack what there is
        logger.exception("pipeline stopped")
        summary["error"] = repr(exc)
    finally:
        timeline["packed"] = round(clock.elapsed(), 1)
        logger.info("summary: %s", json.dumps(summary)[:4000])
        handler.flush()
        pack(work, args.out, summary)
    sys.exit(1 if "error" in summary else 0)


if __name__ == "__main__":
    main()
