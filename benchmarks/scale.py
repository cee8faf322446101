"""Sizing figures for docs/scale.md (10M users, 1M items), measured on this machine.

- ``redis``: bytes per user in Redis, measured on a real (embedded) Redis filled the way
  precompute fills it: real Beauty histories (history + event times) and a cached list of
  MAX_K + CACHE_EXTRA items per user, through the service's own HistoryStore and
  RecommendationCache. ``used_memory`` before and after, divided by the users, and MEMORY
  USAGE of each key kind on a sample.
- ``trie``: build time, peak memory (the build in a child process, its max RSS) and the saved
  size of the prefix trie and catalog for synthetic catalogs of 100k and 1M items with
  Beauty's ID shape (3 x 256 codes + a disambiguation level), and the size of the arrays the
  engine holds (the children table in token space).
- ``precompute``: the engine's measured users/s (benchmarks/results/precompute_beauty.json)
  turned into hours for 10M users; GPU figures only where a GPU run was measured.

    python benchmarks/scale.py                     # ~5 minutes, up to ~20 GB of memory at 1M items
    python benchmarks/scale.py --items 100000      # the small catalog only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402

RESULT = RESULTS / "scale.json"
PRECOMPUTE = RESULTS / "precompute_beauty.json"
TARGET_USERS = 10_000_000
logger = logging.getLogger("scale")


async def fill_redis(redis_url: str, users: int, data_dir: Path) -> dict[str, float]:
    """Fill Redis like precompute does for ``users`` real Beauty users; bytes per user."""
    import redis.asyncio as aredis

    from model.recommender import ScoredItem
    from service.cache import CachedList, RecommendationCache
    from service.history import HistoryStore
    from service.keys import history_key, times_key, topk_key
    from service.settings import Settings
    from training.data import load_lcrec, serving_histories

    settings = Settings()
    histories = dict(list(serving_histories(load_lcrec(data_dir)))[:users])
    items = sorted({i for h in histories.values() for i in h})
    rng = np.random.default_rng(0)
    client = aredis.Redis.from_url(redis_url)
    try:
        before = int((await client.info("memory"))["used_memory"])
        store = HistoryStore(client)
        cache = RecommendationCache(client, "scale-v1", settings.cache_ttl_s)
        user_ids = list(histories)
        for start in range(0, len(user_ids), 500):
            chunk = {u: histories[u] for u in user_ids[start : start + 500]}
            await store.seed_many(chunk)
            entries = {}
            for user, history in chunk.items():
                picks = rng.choice(len(items), size=settings.list_len, replace=False)
                scores = np.sort(rng.normal(-8, 2, size=settings.list_len))[::-1]
                top = [ScoredItem(items[i], float(s)) for i, s in zip(picks, scores, strict=True)]
                entries[user] = CachedList.of(top, history)
            await cache.put_many(entries)
        after = int((await client.info("memory"))["used_memory"])
        sample = user_ids[:: max(1, len(user_ids) // 200)]

        async def usage(key_of) -> float:  # type: ignore[no-untyped-def]
            sizes = [await client.memory_usage(key_of(u)) or 0 for u in sample]
            return float(np.mean(sizes))

        seeded = {
            "history_key_bytes": await usage(history_key),
            "cached_list_key_bytes": await usage(lambda u: topk_key("scale-v1", u)),
        }
        # A user who then sends an event through the API also gets the times of their entries.
        now = time.time()
        await store.append_many({u: [(items[0], now)] for u in sample})

        return {
            "users": float(len(user_ids)),
            "mean_history_len": float(np.mean([len(h) for h in histories.values()])),
            "list_len": float(settings.list_len),
            "bytes_per_user": (after - before) / len(user_ids),
            **seeded,
            "history_times_key_bytes_after_an_event": await usage(times_key),
        }
    finally:
        await client.aclose()


def synthetic_sids(items: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Beauty's ID shape at ``items`` items: 3 random levels of 256 codes + disambiguation."""
    from training.residual_kmeans import add_disambiguation_level

    codes = np.random.default_rng(seed).integers(0, 256, size=(items, 3))
    return [tuple(row) for row in add_disambiguation_level(codes).tolist()]


def _trie_child(items: int, out: Path, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from model.catalog import Catalog, CatalogItem
    from model.semantic_id import SidScheme
    from model.trie import CompiledTrie

    sids = synthetic_sids(items)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    trie = CompiledTrie.build(sids)
    build_s = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    trie.save(out / "trie.npz")
    token_of_code = np.arange(4 * 256).reshape(4, 256)
    held = trie.to_token_space(token_of_code)
    scheme = SidScheme(tuple(int(max(s[level] for s in sids)) + 1 for level in range(4)))
    started = time.perf_counter()
    catalog = Catalog(scheme, (CatalogItem(f"item{i}", f"Item {i}", sid, 1) for i, sid in enumerate(sids)))
    catalog_s = time.perf_counter() - started
    catalog.save(out / "catalog.json")
    queue.put(
        {
            "items": items,
            "nodes": trie.num_nodes,
            "max_children": trie.max_children,
            "build_s": build_s,
            "build_peak_rss_mb": peak_kib / 1024,
            "trie_arrays_mb": sum(
                a.nbytes for a in (trie.children, trie.child_node, trie.depth, trie.leaf_item)
            )
            / 2**20,
            "token_space_children_mb": held.nbytes / 2**20,
            "trie_file_mb": (out / "trie.npz").stat().st_size / 2**20,
            "catalog_build_s": catalog_s,
            "catalog_file_mb": (out / "catalog.json").stat().st_size / 2**20,
        }
    )


def measure_trie(items: int) -> dict[str, float]:
    """The trie and catalog figures at ``items`` items, built in a fresh child process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        child = context.Process(target=_trie_child, args=(items, Path(tmp), queue))
        child.start()
        result = queue.get()
        child.join()
    logger.info("trie at %d items: %s", items, result)
    return result  # type: ignore[no-any-return]


def precompute_hours() -> dict[str, object]:
    """Hours to precompute 10M users at the measured engine throughputs (None: not measured)."""
    if not PRECOMPUTE.is_file():
        return {"cpu": None, "gpu": None, "source": "no benchmarks/results/precompute_beauty.json yet"}
    measured = json.loads(PRECOMPUTE.read_text())
    cpu_rate = float(measured["users_per_s"])
    gpu = measured.get("gpu_users_per_s")
    return {
        "cpu_users_per_s": cpu_rate,
        "cpu_hours_for_10m_users_per_machine": TARGET_USERS / cpu_rate / 3600,
        "gpu_users_per_s": gpu,
        "gpu_hours_for_10m_users_per_gpu": None if gpu is None else TARGET_USERS / float(gpu) / 3600,
        "source": "benchmarks/results/precompute_beauty.json",
        "engine": measured.get("engine"),
    }


def main() -> None:
    from service.local.redis_server import EmbeddedRedis

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=BEAUTY)
    parser.add_argument("--users", type=int, default=20_000, help="real Beauty users written to Redis")
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp)) as redis_url:
        redis_figures = asyncio.run(fill_redis(redis_url, args.users, args.data))
    logger.info("redis: %s", redis_figures)
    tries = [measure_trie(n) for n in args.items]
    per_user = redis_figures["bytes_per_user"]
    emit(
        {
            "redis": {
                **redis_figures,
                "gb_for_10m_users": per_user * TARGET_USERS / 1e9,
            },
            "trie": tries,
            "precompute": precompute_hours(),
            "command": " ".join(["python benchmarks/scale.py", *sys.argv[1:]]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
