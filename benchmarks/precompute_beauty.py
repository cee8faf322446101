"""Precompute every Beauty user through the engine service, as a deployment's nightly job runs.

Starts an embedded Redis and the engine service (``genrec engine``) on a trained Beauty bundle,
runs ``genrec precompute --data`` against them (ENGINE_URL), checks in Redis that every user
with a usable history got exactly one list of this model version, and writes users/s, wall
time and the engine's settings to ``benchmarks/results/precompute_beauty.json``.

    python benchmarks/precompute_beauty.py --artifacts runs/beauty_cpu/artifacts/beauty-cpu
    python benchmarks/precompute_beauty.py --artifacts ... --max-users 2000   # a rehearsal

Nothing else may run on the machine meanwhile: the figure is the engine's throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402

RESULT = RESULTS / "precompute_beauty.json"
ENGINE_START_S = 600.0
logger = logging.getLogger("precompute_beauty")


def sample_dataset(data_dir: Path, users: int, out: Path) -> Path:
    """The first ``users`` users of ``data_dir`` as a dataset of their own (for a rehearsal)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for path in data_dir.iterdir():
        if path.is_file() and not path.name.endswith(".inter.json"):
            shutil.copy(path, out / path.name)
    for inter in data_dir.glob("*.inter.json"):
        sequences = json.loads(inter.read_text())
        (out / inter.name).write_text(json.dumps(dict(list(sequences.items())[:users])))
    return out


def cached_lists(redis_url: str, version: str) -> int:
    import redis

    from service.keys import topk_key

    client = redis.Redis.from_url(redis_url)
    pattern = topk_key(version, "*")
    return sum(1 for _ in client.scan_iter(match=pattern, count=10_000))


def main() -> None:
    from model.bundle import load_bundle
    from model.engine_config import EngineConfig
    from service.local.redis_server import EmbeddedRedis, free_port
    from service.local.stack import Listen, check_port_free, genrec_command, service_process

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifacts", type=Path, required=True, help="a trained Beauty bundle")
    parser.add_argument("--data", type=Path, default=BEAUTY)
    parser.add_argument("--max-users", type=int, help="only the first N users (a rehearsal)")
    parser.add_argument("--batch-size", type=int, default=64, help="users per engine call")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    bundle = load_bundle(args.artifacts)
    work = Path(tempfile.mkdtemp(prefix="precompute_beauty_"))
    data_dir = sample_dataset(args.data, args.max_users, work / "data") if args.max_users else args.data
    port = free_port()
    engine_url = f"http://127.0.0.1:{port}"
    with EmbeddedRedis(data_dir=work / "redis") as redis_url:
        env = {
            "REDIS_URL": redis_url,
            "ARTIFACTS": str(args.artifacts.resolve()),
            "ENGINE_URL": engine_url,
            "ENGINE_HOST": "127.0.0.1",
            "ENGINE_PORT": str(port),
            "ENGINE_MAX_BATCH": str(args.batch_size),
        }
        listen = Listen("127.0.0.1", port, "ENGINE_PORT")
        check_port_free(listen)
        engine = genrec_command("engine")
        with service_process("engine", engine, env, f"{engine_url}/health/ready", ENGINE_START_S, listen):
            report_path = work / "report.json"
            command = ["precompute", "--data", str(data_dir), "--batch-size", str(args.batch_size)]
            started = time.perf_counter()
            subprocess.run(
                genrec_command(*command, "--report", str(report_path)),
                env={**os.environ, **env},
                check=True,
            )
            wall = time.perf_counter() - started
        summary = json.loads(report_path.read_text())
        lists = cached_lists(redis_url, bundle.version)
    expected = summary["users"] - summary["skipped_users"]
    assert summary["cached"] == expected == lists, (summary, lists)
    engine_config = EngineConfig(max_batch=args.batch_size).resolved()
    emit(
        {
            "users": summary["users"],
            "cached": summary["cached"],
            "lists_in_redis": lists,
            "failed": summary["users"] - summary["cached"] - summary["skipped_users"],
            "users_per_s": summary["users_per_s"],
            "job_wall_s": summary["wall_s"],
            "command_wall_s": wall,  # the job's process: start-up, reading the data, the run
            "k": summary["k"],
            "batch_size": summary["batch_size"],
            "engine": {
                "dtype": engine_config.dtype,
                "threads": engine_config.threads,
                "model": bundle.manifest.base_model,
                "version": bundle.version,
                "items": len(bundle.catalog),
            },
            "cpu_count": os.cpu_count(),
            "command": " ".join(["python benchmarks/precompute_beauty.py", *sys.argv[1:]]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
