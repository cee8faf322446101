"""Run genrec's services as separate local processes, the way compose runs them as containers.

``genrec demo`` uses this to start the engine, run the precompute job and serve the API each
in its own process (Redis is embedded or REDIS_URL's), so the demo exercises the same wiring
as a deployment: the API and the job reach the model only through ENGINE_URL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

POLL_S = 0.5
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ServiceFailed(RuntimeError):
    """A service process exited or did not become ready in time."""


def genrec_command(*args: str) -> list[str]:
    """``genrec ARGS`` run by this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "genrec_cli", *args]


@dataclass(frozen=True)
class Listen:
    """Where a service will listen, and the variable that moves it (for the error message)."""

    host: str
    port: int
    variable: str


def check_port_free(listen: Listen) -> None:
    """ServiceFailed naming the port and its variable when something already listens there.

    Checked before starting: otherwise a readiness probe could be answered by another stack's
    service on that port while ours dies on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: a closed connection's TIME_WAIT does not hold the port, a listener does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port))
        except OSError as exc:
            raise ServiceFailed(
                f"port {listen.port} is in use ({exc.strerror}): stop what holds it, or set "
                f"{listen.variable} to a free port"
            ) from exc


def _dies_with(parent: int) -> Callable[[], None]:
    """Run in each child before exec (Linux): SIGTERM it when ``parent`` dies, however it dies
    (even SIGKILL, when no ``finally`` of the parent runs), so no service outlives the demo.

    The kernel sends it when the *thread* that started the child exits: start children from a
    thread that lives as long as they should (the main thread, as the demo and the CLI do).
    """

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def dies_with_this_process() -> Callable[[], None] | None:
    """The ``preexec_fn`` of a child that must not outlive this process (see ``_dies_with``)."""
    return _dies_with(os.getpid()) if sys.platform.startswith("linux") else None


@contextmanager
def sigterm_stops_the_stack() -> Iterator[None]:
    """While the stack runs, SIGTERM raises SystemExit (exit code 143) instead of ending the
    process at once, so the ``finally`` blocks stop every child as Ctrl-C does."""

    def exit_cleanly(signum: int, _frame: object) -> None:
        logger.info("SIGTERM: stopping the stack")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def service_process(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    ready_url: str,
    timeout_s: float,
    listen: Listen | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` with ``env`` added, wait until ``ready_url`` answers 200 from this very
    process (the body's ``pid``), stop it at the end.

    Raises ServiceFailed (naming the service) when ``listen``'s port is taken, when the process
    exits first or ``timeout_s`` passes; its output goes to this terminal, so the reason is on
    screen.
    """
    if listen is not None:
        check_port_free(listen)
    process = subprocess.Popen(list(argv), env={**os.environ, **env}, preexec_fn=dies_with_this_process())
    try:
        wait_ready(name, process, ready_url, timeout_s)
        yield process
    finally:
        stop(name, process)


def wait_ready(name: str, process: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    started = time.monotonic()
    logged = started
    while True:
        code = process.poll()
        if code is not None:
            raise ServiceFailed(f"{name} exited with code {code} before it was ready")
        try:
            response = httpx.get(url, timeout=POLL_S * 4)
            if response.status_code == 200 and _pid(response) == process.pid:
                logger.info("%s ready after %.0fs (pid %d)", name, time.monotonic() - started, process.pid)
                return
            if response.status_code == 200:
                raise ServiceFailed(
                    f"{url} is answered by process {_pid(response)}, not by our {name} (pid {process.pid})"
                )
        except httpx.TransportError:
            pass
        now = time.monotonic()
        if now - started > timeout_s:
            raise ServiceFailed(f"{name} was not ready at {url} within {timeout_s:.0f}s")
        if now - logged > 15:
            logger.info("waiting for %s (%.0fs)...", name, now - started)
            logged = now
        time.sleep(POLL_S)


def _pid(response: httpx.Response) -> int | None:
    try:
        pid = response.json().get("pid")
    except ValueError:
        return None
    return pid if isinstance(pid, int) else None


def run_job(name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Run a one-off job process to completion; ServiceFailed if it fails."""
    code = subprocess.run(
        list(argv), env={**os.environ, **env}, check=False, preexec_fn=dies_with_this_process()
    ).returncode
    if code != 0:
        raise ServiceFailed(f"{name} failed with exit code {code}")


def stop(name: str, process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0fs; killing it", name, grace_s)
        process.kill()
        process.wait()
