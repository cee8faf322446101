"""The batch job that fills the cache: every user's top-K computed ahead of requests.

Pre-caching each user's list is what makes serving an LLM recommender cheap (Semantic
Convergence): requests become one Redis GET. Users go through the model in batches, one
engine call per batch, and each batch's lists are written with one pipelined round trip.
Histories are stored too, so a later cache miss (expiry, new model) can be recomputed.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tqdm import tqdm

from model.recommender import Recommender, ScoredItem
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.recommend import ModelRunner, usable_history

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecomputeSummary:
    users: int  # users read (including those skipped for the model)
    batches: int
    cached: int  # users whose top-K was written to the cache
    skipped_users: int  # users with no known history item: stored, not sent to the model
    skipped_unknown_items: int  # history item ids (within the last history_len) unknown to the catalog
    wall_s: float
    users_per_s: float


def user_batches(users: Iterable[tuple[str, list[str]]], size: int) -> Iterator[list[tuple[str, list[str]]]]:
    """Consecutive lists of ``size`` users (the last may be shorter), read lazily."""
    iterator = iter(users)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


async def precompute(
    recommender: Recommender,
    users: Iterable[tuple[str, list[str]]],
    cache: RecommendationCache,
    history: HistoryStore,
    *,
    k: int,
    batch_size: int,
    history_len: int,
    total: int | None = None,
) -> PrecomputeSummary:
    """Store each user's history and cache its top-``k``; ``total`` (if known) sizes the progress bar.

    The recommender runs in a worker thread with no timeout: a batch on a CPU engine can
    legitimately take minutes, and nothing is waiting on it.
    """
    if k < 1 or batch_size < 1 or history_len < 1:
        raise ValueError(f"k, batch_size and history_len must be >= 1, got {k}, {batch_size}, {history_len}")
    if cache.model_version != recommender.model_version:
        raise ValueError(f"cache is for {cache.model_version!r}, model is {recommender.model_version!r}")
    runner = ModelRunner(recommender, timeout_s=None)
    catalog = recommender.catalog
    n_users = n_batches = n_cached = n_skipped_users = n_unknown = 0
    start = time.perf_counter()
    with tqdm(total=total, unit="user", desc="precompute", dynamic_ncols=True) as progress:
        for batch in user_batches(users, batch_size):
            await history.set_many(dict(batch))
            ids: list[str] = []
            inputs: list[list[str]] = []
            for user_id, items in batch:
                known, unknown = usable_history(items, catalog, history_len)
                n_unknown += unknown
                if known:
                    ids.append(user_id)
                    inputs.append(known)
                else:
                    n_skipped_users += 1
            if inputs:
                lists: list[list[ScoredItem]] = await runner.run(inputs, k)
                await cache.put_many(dict(zip(ids, lists, strict=True)))
            n_users += len(batch)
            n_batches += 1
            n_cached += len(ids)
            progress.update(len(batch))
    wall_s = time.perf_counter() - start
    summary = PrecomputeSummary(
        users=n_users,
        batches=n_batches,
        cached=n_cached,
        skipped_users=n_skipped_users,
        skipped_unknown_items=n_unknown,
        wall_s=wall_s,
        users_per_s=n_users / wall_s if wall_s > 0 else 0.0,
    )
    logger.info(
        "precompute (model %s): %d users in %d batches, %d cached, %d without known history, "
        "%d unknown history items skipped, %.1fs, %.1f users/s",
        recommender.model_version,
        summary.users,
        summary.batches,
        summary.cached,
        summary.skipped_users,
        summary.skipped_unknown_items,
        summary.wall_s,
        summary.users_per_s,
    )
    return summary
