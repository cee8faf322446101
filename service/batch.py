"""Offline batch interface: histories JSONL in, top-K JSONL out, through the serving engine."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from model.progress import progress
from model.recommender import Recommender
from service.precompute.sources import user_batches

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSummary:
    users: int
    unknown_items_skipped: int
    cold_start: int  # users without a known history item: given the most popular items
    wall_s: float

    @property
    def users_per_s(self) -> float:
        return self.users / self.wall_s if self.wall_s > 0 else 0.0


def recommend_to_jsonl(
    recommender: Recommender,
    users: Iterable[tuple[str, list[str]]],
    out: Path,
    *,
    k: int,
    batch_size: int,
    total: int | None = None,
) -> BatchSummary:
    """Write one ``{"user_id", "source", "items"}`` line per user, best item first.

    History ids that are not in the catalog are dropped (counted and logged), never fatal. A
    user left with no history gets the catalog's most popular items (``source`` "fallback"),
    the rule the API and precompute follow; the others get the model's list (``"model"``).
    The output is written to a temporary file and renamed, so a failed run leaves no half file.
    """
    started = time.perf_counter()
    catalog = recommender.catalog
    popular = [item.item_id for item in catalog.most_popular(k)]
    skipped = cold = 0
    count = 0
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            tmp.open("w", encoding="utf-8") as sink,
            progress(total=total, desc="recommend", unit="user") as bar,
        ):
            for batch in user_batches(users, batch_size):
                histories = [[item_id for item_id in history if item_id in catalog] for _, history in batch]
                skipped += sum(len(history) for _, history in batch) - sum(map(len, histories))
                modelled = [history for history in histories if history]
                lists = iter(recommender.recommend(modelled, k) if modelled else [])
                for (user_id, _), history in zip(batch, histories, strict=True):
                    if history:
                        line = {
                            "user_id": user_id,
                            "source": "model",
                            "items": [i.item_id for i in next(lists)],
                        }
                    else:  # the API's cold-start rule: the most popular items
                        cold += 1
                        line = {"user_id": user_id, "source": "fallback", "items": popular}
                    sink.write(json.dumps(line) + "\n")
                count += len(batch)
                bar.update(len(batch))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(out)
    summary = BatchSummary(
        users=count, unknown_items_skipped=skipped, cold_start=cold, wall_s=time.perf_counter() - started
    )
    if skipped:
        logger.warning("skipped %d history item ids that are not in the catalog", skipped)
    logger.info(
        "recommended for %d users in %.1f s (%.2f users/s)", count, summary.wall_s, summary.users_per_s
    )
    return summary
