"""The demo's process supervisor: a taken port is named before anything starts, and readiness
means an answer from the very process it started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from service.local.redis_server import free_port
from service.local.stack import Listen, ServiceFailed, check_port_free, service_process

# A health endpoint answering with its own pid, as the API and the engine do.
OWN_PID_SERVER = """
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ready", "pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Another stack's service: 200 with someone else's pid."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ready", "pid": 1}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_taken_port_is_named_with_its_variable(foreign_server: int) -> None:
    with pytest.raises(ServiceFailed, match=rf"port {foreign_server} is in use.*set ENGINE_PORT"):
        check_port_free(Listen("127.0.0.1", foreign_server, "ENGINE_PORT"))
    check_port_free(Listen("127.0.0.1", free_port(), "PORT"))  # a free one passes


def test_nothing_starts_when_the_port_is_taken(foreign_server: int, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    argv = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    url = f"http://127.0.0.1:{foreign_server}/health/ready"
    listen = Listen("127.0.0.1", foreign_server, "PORT")
    with pytest.raises(ServiceFailed, match="set PORT"), service_process("api", argv, {}, url, 5.0, listen):
        pass
    assert not marker.exists()


def test_an_answer_from_another_process_is_not_readiness(foreign_server: int) -> None:
    url = f"http://127.0.0.1:{foreign_server}/health/ready"
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    with (
        pytest.raises(ServiceFailed, match="not by our engine"),
        service_process("engine", argv, {}, url, 10.0),
    ):
        pass


def test_our_own_process_becomes_ready() -> None:
    port = free_port()
    argv = [sys.executable, "-c", OWN_PID_SERVER, str(port)]
    url = f"http://127.0.0.1:{port}/health/ready"
    with service_process("engine", argv, {}, url, 30.0, Listen("127.0.0.1", port, "ENGINE_PORT")) as process:
        assert process.poll() is None
    assert process.poll() is not None  # stopped at the end of the block
    check_port_free(Listen("127.0.0.1", port, "ENGINE_PORT"))  # and the port is free again


# A demo parent: one service under the supervisor, its pid on stdout, then wait to be signalled.
SUPERVISOR = """
import sys, time
from service.local.stack import service_process, sigterm_stops_the_stack
server, port = sys.argv[1], int(sys.argv[2])
with sigterm_stops_the_stack():
    argv = [sys.executable, "-c", server, str(port)]
    with service_process("svc", argv, {}, f"http://127.0.0.1:{port}/health/ready", 30.0) as child:
        print(child.pid, flush=True)
        time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie awaiting its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_service_outlives_a_signalled_demo_parent(sig: signal.Signals) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, OWN_PID_SERVER, str(free_port())],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[4],
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(sig)
        code = parent.wait(30)
        assert code == (143 if sig == signal.SIGTERM else -signal.SIGKILL)  # SIGTERM: a clean exit
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        parent.kill()
