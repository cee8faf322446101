"""Evaluation through the serving engine: leave-one-out, full ranking over the catalog."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from model.progress import progress
from model.recommender import ScoredItem
from training.data import Example, InteractionData, leave_one_out
from training.metrics import summarize

logger = logging.getLogger(__name__)

# the cut-offs every report carries when the ranked lists are long enough
CUTOFFS = (5, 10)


def cutoffs_within(k: int) -> tuple[int, ...]:
    """The metric cut-offs a top-``k`` list can answer: a recall@10 of 5-item lists would be recall@5."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return tuple(c for c in CUTOFFS if c <= k) or (k,)


@dataclass
class EvalReport:
    split: str
    users: int
    k: int
    metrics: dict[str, float]
    model_version: str
    wall_s: float
    users_per_s: float
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Ranker(Protocol):
    """What the harness needs: genrec's engines and the baselines alike."""

    @property
    def model_version(self) -> str: ...

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]: ...


def select_examples(data: InteractionData, split: str, max_users: int | None, seed: int = 0) -> list[Example]:
    parts = leave_one_out(data)
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    examples: list[Example] = parts.valid if split == "valid" else parts.test
    if max_users is not None and len(examples) > max_users:
        examples = random.Random(seed).sample(examples, max_users)
    return examples


def write_lists(path: Path, examples: Sequence[Example], rankings: Sequence[Sequence[str]]) -> None:
    """One JSON line per user: its id, its held-out target and its ranked items."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for example, items in zip(examples, rankings, strict=True):
            fh.write(
                json.dumps({"user_id": example.user_id, "target": example.target, "items": list(items)})
                + "\n"
            )


def evaluate(
    recommender: Ranker,
    examples: Sequence[Example],
    *,
    split: str,
    k: int = 20,
    batch_size: int = 64,
    lists: Path | None = None,
) -> EvalReport:
    """Recall and NDCG of ``recommender``'s top-``k`` on ``examples`` at 5 and 10 (those within ``k``).

    ``lists`` receives every user's ranked list as JSONL (what comparing two engines or two
    precisions list by list needs; the metrics alone hide how much the lists moved).
    """
    ks = cutoffs_within(k)
    if len(ks) < len(CUTOFFS):
        logger.warning(
            "k=%d: metrics at %s are left out (they need longer lists)", k, [c for c in CUTOFFS if c > k]
        )
    started = time.perf_counter()
    rankings: list[list[str]] = []
    with progress(total=len(examples), desc=f"eval {split}", unit="user") as bar:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            for row in recommender.recommend([list(e.history) for e in batch], k):
                rankings.append([item.item_id for item in row])
            bar.update(len(batch))
    metrics = summarize(rankings, [e.target for e in examples], ks=ks)
    if lists is not None:
        write_lists(lists, examples, rankings)
    wall = time.perf_counter() - started
    report = EvalReport(
        split=split,
        users=len(examples),
        k=k,
        metrics=metrics,
        model_version=recommender.model_version,
        wall_s=round(wall, 2),
        users_per_s=round(len(examples) / wall, 2) if wall > 0 else 0.0,
    )
    logger.info("eval %s on %d users: %s", split, len(examples), {m: round(v, 4) for m, v in metrics.items()})
    return report
