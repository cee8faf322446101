"""Memory of the running demo stack: PSS of every process of `genrec demo` once it serves.

    .venv/bin/python benchmarks/demo_memory.py    # -> benchmarks/results/demo_memory.json

Starts `genrec demo` (reusing a built `.demo` workdir when there is one) on free ports, waits for
its "genrec is serving" line, then reads each process's proportional set size
(/proc/PID/smaps_rollup: shared pages split between the processes that map them, so the sum is
what the stack costs the machine) and stops it. Linux only.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench_common import REPO, RESULTS, emit

from service.local.redis_server import free_port

READY_LINE = "genrec is serving"


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    found = [pid]
    for child in children(pid):
        found.extend(tree(child))
    return found


def pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return " ".join(part.decode(errors="replace") for part in f.read().split(b"\0") if part)[:120]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=RESULTS / "demo_memory.json")
    args = parser.parse_args()
    env = {**os.environ, "PORT": str(free_port()), "ENGINE_PORT": str(free_port()), "LOG_LEVEL": "INFO"}
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = args.workdir / "demo_memory.log"
    command = [sys.executable, "-m", "genrec_cli", "demo", "--workdir", str(args.workdir)]
    started = time.monotonic()
    with log.open("w") as sink:
        # its own process group, stopped as a terminal's Ctrl-C stops it: SIGINT to the group
        demo = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        try:
            while READY_LINE not in log.read_text(errors="replace"):
                if demo.poll() is not None or time.monotonic() - started > args.timeout_s:
                    raise SystemExit(f"the demo did not come up; see {log}")
                time.sleep(2)
            time.sleep(5)  # let the first requests' allocations settle
            processes = [
                {"pid": pid, "command": command_line(pid), "pss_mb": round(pss_mb(pid), 1)}
                for pid in tree(demo.pid)
            ]
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
    emit(
        {
            "command": " ".join(["python benchmarks/demo_memory.py", *sys.argv[1:]]),
            "total_pss_mb": round(sum(p["pss_mb"] for p in processes), 1),
            "processes": processes,
            "setup_s": round(time.monotonic() - started, 1),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
