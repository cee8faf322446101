"""Serving load on the cache-hit path: ``GET /v1/recommend`` against a bare endpoint doing one Redis GET.

Both servers run side by side as single uvicorn worker processes on the same real Redis (the
embedded one), filled with every Beauty user's history and a cached top-20. The genrec server
is the real app (API key off, ``exclude_seen`` on, the default) with a recommender that fails
if called: a cache hit must never touch the engine. The bare server is the floor: a FastAPI
endpoint that GETs the same key and returns it. Load comes from this process at concurrency
8 and 64, the two servers alternating, and the result goes to
``benchmarks/results/serve_load.json``: requests/s and p50/p99 latency per server and the
ratio genrec/bare.

A third phase, ``mixed``, checks that nothing is lost under load: workers send events and
recommendation requests together (each user owned by one worker, so its event order is
known), events invalidate lists, so requests miss and go to the engine; afterwards every
user's stored history must equal what was sent, in order, and no answer may contain an item
the user already had. The engine there is a stand-in (popular items, 20 ms per call), since
this phase measures the service's bookkeeping, not the model.

    python benchmarks/serve_load.py                 # ~2.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fastapi import Response

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402
from service.local.redis_server import EmbeddedRedis, free_port  # noqa: E402

DATASET = BEAUTY
RESULT = RESULTS / "serve_load.json"
MODEL_VERSION = "serve-load"
K = 20
CACHE_HIT = b'"source":"cache"'  # as service.api.render writes it

logger = logging.getLogger("serve_load")


def beauty_catalog(data_dir: Path):  # type: ignore[no-untyped-def]
    """Beauty's real items and training popularity; the IDs are positional (the cache path never
    reads them)."""
    from model.catalog import Catalog, CatalogItem
    from model.semantic_id import SidScheme
    from training.data import load_lcrec, sort_item_ids, train_item_counts

    data = load_lcrec(data_dir)
    popularity = train_item_counts(data)
    items = [
        CatalogItem(item_id=i, title=data.items[i].title, sid=(n // 256, n % 256), popularity=popularity[i])
        for n, i in enumerate(sort_item_ids(data.items))
    ]
    return Catalog(SidScheme((-(-len(items) // 256), 256)), items), data


class CacheOnly:
    """A recommender for the cache-hit benchmark: any engine call is a bug in the cache path."""

    def __init__(self, catalog) -> None:  # type: ignore[no-untyped-def]
        self.catalog = catalog
        self.model_version = MODEL_VERSION

    def recommend(self, histories: Sequence[Sequence[str]], k: int):  # type: ignore[no-untyped-def]
        raise RuntimeError("the cache-hit benchmark reached the engine")


class StandInRecommender:
    """The mixed phase's model: the most popular items, after ``delay_s`` per engine call
    (what a batched engine call costs, so concurrent misses batch)."""

    def __init__(self, catalog, delay_s: float = 0.02) -> None:  # type: ignore[no-untyped-def]
        from model.recommender import ScoredItem

        self.catalog = catalog
        self.model_version = MODEL_VERSION
        self.delay_s = delay_s
        self._top = [ScoredItem(item.item_id, -0.1 * n) for n, item in enumerate(catalog.most_popular(K))]

    def recommend(self, histories: Sequence[Sequence[str]], k: int):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        return [self._top[:k] for _ in histories]

    def rank(self, requests):  # type: ignore[no-untyped-def]
        raise RuntimeError("not used by this benchmark")


def mixed_app():  # type: ignore[no-untyped-def]
    """uvicorn factory: the real app on REDIS_URL with the stand-in engine."""
    from service.api.app import create_app
    from service.settings import Settings

    catalog, _ = beauty_catalog(Path(os.environ["GENREC_BENCH_DATA"]))
    return create_app(Settings(max_k=K, default_k=10), StandInRecommender(catalog))


def genrec_app():  # type: ignore[no-untyped-def]
    """uvicorn factory: the real app on REDIS_URL with the Beauty catalog."""
    from service.api.app import create_app
    from service.settings import Settings

    catalog, _ = beauty_catalog(Path(os.environ["GENREC_BENCH_DATA"]))
    return create_app(Settings(max_k=K, default_k=10), CacheOnly(catalog))


def bare_app():  # type: ignore[no-untyped-def]
    """uvicorn factory: the floor, one Redis GET per request and the stored JSON returned as is."""
    import redis.asyncio as redis
    from fastapi import FastAPI

    from service.keys import topk_key

    app = FastAPI()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    @app.get("/v1/recommend")
    async def recommend(user_id: str) -> Response:
        raw = await client.get(topk_key(MODEL_VERSION, user_id))
        return Response(raw or b"[]", media_type="application/json")

    return app


async def fill_redis(url: str, data_dir: Path) -> list[str]:
    """Every user's history and a cached top-K (the most popular items, those the user has
    marked seen, as the service caches them)."""
    import redis.asyncio as redis

    from model.recommender import ScoredItem
    from service.cache import CachedList, RecommendationCache
    from service.history import HistoryStore

    catalog, data = beauty_catalog(data_dir)
    client = redis.Redis.from_url(url)
    top = [ScoredItem(item.item_id, -0.1 * rank) for rank, item in enumerate(catalog.most_popular(K))]
    lists = {user: CachedList.of(top, seq) for user, seq in data.sequences.items()}
    await HistoryStore(client).set_many(data.sequences)
    await RecommendationCache(client, MODEL_VERSION, ttl_s=86400).put_many(lists)
    await client.aclose()
    return list(data.sequences)


def start_server(factory: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"benchmarks.serve_load:{factory}",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
    )


async def wait_ready(port: int, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (
                    await client.get(f"http://127.0.0.1:{port}/v1/recommend", params={"user_id": "x"})
                ).status_code:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.5)
    raise RuntimeError(f"server on port {port} did not start within {timeout_s}s")


async def load(
    port: int, users: list[str], concurrency: int, seconds: float, check_source: bool
) -> dict[str, float]:
    """``concurrency`` workers on keep-alive connections, each sending one request after another
    for ``seconds`` (aiohttp: a Python client fast enough not to be the bottleneck first)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rng = random.Random(concurrency)
    stop = time.perf_counter() + seconds
    url = f"http://127.0.0.1:{port}/v1/recommend"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                started = time.perf_counter()
                async with session.get(url, params={"user_id": rng.choice(users), "k": "10"}) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - started)
                # A substring test, not json.loads: the load generator shares the CPU with the
                # servers, and parsing every genrec body would slow genrec's side of the run only.
                if response.status != 200 or (check_source and CACHE_HIT not in body):
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "requests": len(latencies),
        "errors": errors,
    }


async def mixed_load(
    port: int, histories: dict[str, list[str]], items: list[str], concurrency: int, seconds: float
) -> dict[str, float]:
    """Events and recommendation requests together; then check that nothing was lost.

    Worker ``w`` owns the users whose position is ``w`` modulo ``concurrency`` and sends one
    request at a time, so each user's events arrive in the order they were sent.
    """
    import aiohttp

    users = list(histories)
    rng = random.Random(7)
    sent: dict[str, list[str]] = {}
    counts = {
        "events": 0,
        "recommend": 0,
        "model": 0,
        "cache": 0,
        "fallback": 0,
        "errors": 0,
        "seen_served": 0,
    }
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    base = f"http://127.0.0.1:{port}/v1"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def recommend(user: str) -> None:
            async with session.get(f"{base}/recommend", params={"user_id": user, "k": "10"}) as response:
                body = await response.json() if response.status == 200 else None
            if body is None:
                counts["errors"] += 1
                return
            counts["recommend"] += 1
            counts[body["source"]] += 1
            had = set(histories[user]) | set(sent.get(user, []))
            counts["seen_served"] += sum(1 for item in body["items"] if item["item_id"] in had)

        async def worker(w: int) -> None:
            mine = users[w::concurrency]
            while time.perf_counter() < stop:
                user = rng.choice(mine)
                started = time.perf_counter()
                if rng.random() < 0.3:
                    item = rng.choice(items)
                    event = {"events": [{"user_id": user, "item_id": item}]}
                    async with session.post(f"{base}/events", json=event) as response:
                        await response.read()
                    if response.status == 200:
                        sent.setdefault(user, []).append(item)
                        counts["events"] += 1
                    else:
                        counts["errors"] += 1
                else:
                    await recommend(user)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - began
        lost = 0
        gate = asyncio.Semaphore(concurrency)

        async def check(user: str) -> None:
            """Every event is in the history, in order; the next list leaves out what the user has."""
            nonlocal lost
            async with gate:
                expected = histories[user] + sent[user]
                async with session.get(f"{base}/users/{user}/history", params={"limit": "1000"}) as response:
                    stored = [item["item_id"] for item in (await response.json())["items"]]
                lost += stored != expected[-1000:]
                await recommend(user)

        await asyncio.gather(*(check(user) for user in sent))
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "users_with_events": len(sent),
        "users_with_lost_or_misordered_events": lost,
        **counts,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:

    with EmbeddedRedis() as url:
        users = await fill_redis(url, args.data)
        logger.info("Redis filled: %d users with history and a cached top-%d", len(users), K)
        ports = {"genrec": free_port(), "bare": free_port()}
        env = {"REDIS_URL": url, "GENREC_BENCH_DATA": str(args.data), "LOG_LEVEL": "WARNING"}
        servers = [start_server(f"{name}_app", port, env) for name, port in ports.items()]
        try:
            for port in ports.values():
                await wait_ready(port)
            report: dict[str, object] = {}
            for concurrency in (8, 64):
                rounds: dict[str, list[dict[str, float]]] = {"genrec": [], "bare": []}
                for _ in range(args.rounds):
                    for name, port in ports.items():
                        result = await load(
                            port, users, concurrency, args.seconds, check_source=name == "genrec"
                        )
                        if result["errors"]:
                            raise RuntimeError(f"{name} at c={concurrency}: {result['errors']} bad responses")
                        rounds[name].append(result)
                        logger.info(
                            "%s c=%d: %.0f req/s, p99 %.1f ms",
                            name,
                            concurrency,
                            result["rps"],
                            result["p99_ms"],
                        )
                row = {
                    f"{name}_{metric}": statistics.median(r[metric] for r in results)
                    for name, results in rounds.items()
                    for metric in ("rps", "p50_ms", "p99_ms")
                }
                row["ratio_rps"] = row["genrec_rps"] / row["bare_rps"]
                report[f"c{concurrency}"] = row
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
        report["mixed"] = await run_mixed(url, args)
    report["config"] = {
        "users": len(users),
        "k": 10,
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
        "cpu_count": os.cpu_count(),
        "servers": "one uvicorn worker each; load generator in a third process",
    }
    report["command"] = " ".join(["python benchmarks/serve_load.py", *sys.argv[1:]])
    return report


async def run_mixed(url: str, args: argparse.Namespace) -> dict[str, float]:
    """The mixed phase on a fresh fill of the same Redis; fails on any error or lost event."""
    import redis.asyncio as redis

    from training.data import load_lcrec

    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    await fill_redis(url, args.data)
    data = load_lcrec(args.data)
    port = free_port()
    server = start_server(
        "mixed_app", port, {"REDIS_URL": url, "GENREC_BENCH_DATA": str(args.data), "LOG_LEVEL": "WARNING"}
    )
    try:
        await wait_ready(port)
        result = await mixed_load(port, dict(data.sequences), sorted(data.items), 32, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    logger.info("mixed c=32: %s", result)
    if result["errors"] or result["users_with_lost_or_misordered_events"] or result["seen_served"]:
        raise RuntimeError(f"mixed load lost or broke something: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATASET)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per server and concurrency")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
