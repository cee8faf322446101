"""Engine replicas (ENGINE_URL with several URLs): least outstanding requests, failover when a
replica process dies mid-traffic, and the replica put back once it answers again. Each replica
is a real engine service process (``create_engine_app`` under uvicorn) on the test recommender."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fakes import MODEL_VERSION, HashRecommender

from model.catalog import Catalog
from service.engine.client import EngineUnavailable, RemoteRecommender
from service.engine.replicas import ReplicaPool, engine_urls
from service.local.redis_server import free_port

TESTS = Path(__file__).resolve().parents[2] / "service"
REPLICA = """
import sys
sys.path.insert(0, sys.argv[1])
import uvicorn
from service_fakes import HashRecommender, make_catalog
from service.engine.server import create_engine_app
from service.settings import Settings
app = create_engine_app(Settings(max_k=20), HashRecommender(make_catalog(), delay_s=0.02))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def start_replica(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", REPLICA, str(TESTS), str(port)], cwd=Path(__file__).resolve().parents[4]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"replica on port {port} exited with {process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"replica on port {port} did not become ready")


@pytest.fixture
def replicas() -> Iterator[tuple[list[int], list[subprocess.Popen[bytes]]]]:
    ports = [free_port(), free_port()]
    processes = [start_replica(port) for port in ports]
    yield ports, processes
    for process in processes:
        process.kill()
        process.wait()


def test_engine_url_takes_one_or_several_urls() -> None:
    assert engine_urls("http://a:8001") == ["http://a:8001"]
    assert engine_urls(" http://a:8001, http://b:8001 ,") == ["http://a:8001", "http://b:8001"]
    with pytest.raises(ValueError, match="names no URL"):
        engine_urls(" , ")


async def test_a_replica_stopped_mid_traffic_fails_no_request_and_comes_back(
    replicas: tuple[list[int], list[subprocess.Popen[bytes]]], catalog: Catalog
) -> None:
    ports, processes = replicas
    pool = ReplicaPool(
        [RemoteRecommender(f"http://127.0.0.1:{p}", catalog, MODEL_VERSION, timeout_s=10) for p in ports],
        recheck_s=0.5,
    )
    model = HashRecommender(catalog)
    try:
        assert await pool.status() == "ok"

        async def traffic(n: int, offset: int) -> None:
            answers = await asyncio.gather(
                *(pool.recommend([[f"i{(offset + u) % 30}"]], 5) for u in range(n))
            )
            for u, [top] in enumerate(answers):  # every request answered, and correctly
                assert top == model.top_k([f"i{(offset + u) % 30}"], 5)

        await traffic(40, 0)
        assert all(count > 5 for count in pool.served), pool.served  # both took a share
        before = list(pool.served)
        stopping = asyncio.create_task(traffic(60, 3))
        await asyncio.sleep(0.05)
        processes[0].kill()  # mid-traffic: its in-flight and later requests go to the other
        processes[0].wait()
        await stopping  # all 60 answered, the stopped replica's in-flight ones by the other
        assert sum(pool.served) - sum(before) == 60
        survivor = pool.served[1]
        await traffic(30, 7)
        assert pool.served[1] - survivor == 30  # the other replica takes every request now
        assert await pool.status() == "ok"  # one replica is enough
        # back on the same port: after its recheck it takes requests again
        processes[0] = start_replica(ports[0])
        await asyncio.sleep(0.6)
        back = pool.served[0]
        await traffic(40, 11)
        assert pool.served[0] > back
    finally:
        await pool.aclose()


async def test_no_replica_up_is_an_engine_error_not_a_hang(catalog: Catalog) -> None:
    dead = [free_port(), free_port()]
    pool = ReplicaPool([RemoteRecommender(f"http://127.0.0.1:{p}", catalog, MODEL_VERSION, 5) for p in dead])
    try:
        assert (await pool.status()).startswith("error: no engine replica is ready")
        with pytest.raises(EngineUnavailable):
            await pool.recommend([["i1"]], 5)
    finally:
        await pool.aclose()


async def test_a_replica_serving_another_model_version_is_never_used(
    replicas: tuple[list[int], list[subprocess.Popen[bytes]]], catalog: Catalog
) -> None:
    ports, _ = replicas
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    pool = ReplicaPool(
        [
            RemoteRecommender(urls[0], catalog, MODEL_VERSION, 10),
            RemoteRecommender(urls[1], catalog, "another-version", 10),
        ]
    )
    try:
        for _ in range(10):
            await pool.recommend([["i2"]], 5)
        assert pool.served == [10, 0]
    finally:
        await pool.aclose()
