"""Batches of encoded examples: length-bucketed in a seeded random order, padded into tensors.

Left padding (:func:`collate_left`, what training uses) end-aligns the answers, and position
ids count real tokens only, so a row reads exactly as it would alone and as served.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from training.encoding import IGNORE, Encoded


def length_bucketed_batches(
    data: Sequence[Encoded], batch_size: int, rng: random.Random
) -> Iterator[list[Encoded]]:
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].input_ids), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        yield [data[i] for i in batch]


def _padded(batch: Sequence[Encoded], pad_id: int, *, left: bool) -> dict[str, torch.Tensor]:
    """Ids, labels and attention mask of ``batch``, padded to its longest row on one side."""
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        span = slice(length - n, length) if left else slice(0, n)
        ids[row, span] = torch.tensor(example.input_ids)
        labels[row, span] = torch.tensor(example.labels)
        attention[row, span] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: what an HF model's own ``labels`` loss reads (tests compare with it)."""
    return _padded(batch, pad_id, left=False)


def collate_left(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded batch (answers end-aligned) with position ids that ignore the padding.

    Position ids count real tokens only, so a row reads exactly as it would alone (and as
    served); batch padding never shifts positions.
    """
    out = _padded(batch, pad_id, left=True)
    positions = (out["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": out["input_ids"],
        "attention_mask": out["attention_mask"],
        "position_ids": positions,
        "labels": out["labels"],
    }
