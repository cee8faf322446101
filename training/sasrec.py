"""SASRec: a causal self-attention next-item model, trained on the training split only.

genrec uses it twice: its item embedding table is the *behavioural* source of the dual-source
item index (items bought in similar contexts get similar vectors, whatever their text), and
its full-catalog ranking is the sequential baseline the LLM recommender has to beat.

Training follows Kang & McAuley (2018) with a (sampled) softmax cross-entropy loss, which
trains faster and ranks better than the paper's one-negative BCE. Only the training part of every
sequence (``s[:-2]``, as in :func:`training.data.leave_one_out`) is used, early stopping
included: it scores the last training item of a random sample of users, held out of training,
so neither validation nor test targets shape the embeddings the validation compares.
Deterministic for a given seed on a given machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from model.cpu_features import resolve_precision
from model.progress import progress as progress_bar
from training.data import Example, InteractionData, leave_one_out, sort_item_ids
from training.metrics import summarize

logger = logging.getLogger(__name__)

PAD_INDEX = 0  # item index 0 is padding; catalog item i (sort_item_ids order) is index i + 1


class SasrecConfig(BaseModel):
    """Model size and training budget; the defaults fit Beauty on 2 CPU cores in a few minutes."""

    dim: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=1, ge=1)
    max_len: int = Field(default=50, ge=2)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # Softmax over the batch's targets plus this many shared random items (0 = the full catalog):
    # on Beauty a full softmax costs ~36 s an epoch on 2 cores, this ~5x less.
    negatives: int = Field(default=1024, ge=0)
    patience: int = Field(default=3, ge=1)  # epochs without a better early-stopping Recall@10
    # holdout: the last training item of ``holdout_users`` random users, held out of training
    # (what the behavioural item index uses: no validation target shapes its embeddings);
    # valid: the validation split itself (the baseline's protocol: tune on validation, report test).
    early_stop: Literal["holdout", "valid"] = "holdout"
    holdout_users: int = Field(default=2000, ge=1)  # users whose last training item is held out
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    seed: int = 0


class SASRec(nn.Module):
    """Item + position embeddings, pre-norm causal transformer blocks, scores by dot product."""

    def __init__(self, num_items: int, config: SasrecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(num_items + 1, config.dim, padding_idx=PAD_INDEX)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=config.dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.item_emb.weight, std=config.dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD_INDEX].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[batch, length, dim]`` for left-padded item-index sequences."""
        length = seqs.shape[1]
        positions = torch.arange(length, device=seqs.device)
        x = self.item_emb(seqs) * self.config.dim**0.5 + self.pos_emb(positions)
        x = self.dropout(x) * (seqs != PAD_INDEX).unsqueeze(-1)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=seqs.device)
        x = self.blocks(x, mask=causal, is_causal=True)
        return self.norm(x)

    def item_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalog item (padding excluded) for each hidden state: ``[..., num_items]``."""
        return hidden @ self.item_emb.weight[1:].T


@dataclass
class TrainedSasrec:
    """A trained model with its item order, ready to embed items or rank the catalog."""

    model: SASRec
    item_ids: list[str]  # catalog order: row i of item_embeddings() is item_ids[i]
    best_holdout_recall10: float
    epochs_run: int
    wall_time_s: float

    def __post_init__(self) -> None:
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}

    def item_embeddings(self) -> np.ndarray:
        """``[num_items, dim]`` float32: the behavioural vector of every item, in catalog order."""
        return self.model.item_emb.weight[1:].detach().cpu().numpy().astype(np.float32)

    def encode(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Left-padded index tensor of the histories' known items (last ``max_len`` kept)."""
        max_len = self.model.config.max_len
        rows = [[self.index[i] for i in h if i in self.index][-max_len:] for h in histories]
        width = max(1, max(map(len, rows), default=1))
        out = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            if row:
                out[r, width - len(row) :] = torch.tensor(row)
        return out

    @torch.no_grad()
    def rank(self, histories: Sequence[Sequence[str]], k: int, *, batch_size: int = 256) -> list[list[str]]:
        """Top-``k`` item ids per history over the full catalog (best first)."""
        self.model.eval()
        ranked: list[list[str]] = []
        for start in range(0, len(histories), batch_size):
            seqs = self.encode(histories[start : start + batch_size])
            scores = self.model.item_scores(self.model(seqs)[:, -1])
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.tolist()
            ranked.extend([self.item_ids[i] for i in row] for row in top)
        return ranked


def training_sequences(data: InteractionData) -> list[list[str]]:
    """The training part ``s[:-2]`` of every sequence with at least two training items."""
    return [seq[:-2] for seq in data.sequences.values() if len(seq) - 2 >= 2]


def _batches(
    seqs: list[list[int]], batch_size: int, max_len: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (inputs, targets) batches, left-padded to the batch's longest sequence."""
    order = rng.permutation(len(seqs))
    for start in range(0, len(order), batch_size):
        chosen = [seqs[i][-(max_len + 1) :] for i in order[start : start + batch_size]]
        width = max(len(s) for s in chosen) - 1
        inputs = torch.zeros((len(chosen), width), dtype=torch.long)
        targets = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, s in enumerate(chosen):
            inputs[row, width - len(s) + 1 :] = torch.tensor(s[:-1])
            targets[row, width - len(s) + 1 :] = torch.tensor(s[1:])
        yield inputs, targets


def _softmax_loss(
    model: SASRec, hidden: torch.Tensor, positives: torch.Tensor, negatives: int
) -> torch.Tensor:
    """Cross-entropy of each target against the full catalog, or against the batch's targets plus
    ``negatives`` shared random items."""
    num_items = model.item_emb.num_embeddings - 1
    if negatives == 0 or negatives >= num_items:
        return nn.functional.cross_entropy(model.item_scores(hidden), positives - 1)
    sampled = torch.randint(1, num_items + 1, (negatives,))
    candidates = torch.unique(torch.cat([positives, sampled]))  # sorted, so targets are found by bisection
    logits = hidden @ model.item_emb.weight[candidates].T
    return nn.functional.cross_entropy(logits, torch.searchsorted(candidates, positives))


def holdout_split(
    seqs: list[list[str]], users: int, rng: np.random.Generator
) -> tuple[list[list[str]], list[Example]]:
    """Hold out the last item of up to ``users`` random sequences that keep 2+ items without it:
    (the sequences to train on, the held-out next-item examples for early stopping)."""
    eligible = [i for i, seq in enumerate(seqs) if len(seq) >= 3]
    chosen = set(rng.permutation(eligible)[:users].tolist()) if eligible else set()
    train = [seq[:-1] if i in chosen else seq for i, seq in enumerate(seqs)]
    held = [Example(str(i), tuple(seqs[i][:-1]), seqs[i][-1]) for i in sorted(chosen)]
    return train, held


def _holdout_recall10(trained: TrainedSasrec, examples: list[Example]) -> float:
    ranked = trained.rank([e.history for e in examples], 10)
    return summarize(ranked, [e.target for e in examples], ks=(10,))["recall@10"]


def train_sasrec(data: InteractionData, config: SasrecConfig, *, progress: bool = True) -> TrainedSasrec:
    """Train on the training split, keep the epoch with the best early-stopping Recall@10
    (held-out training items or the validation split, ``config.early_stop``)."""
    item_ids = sort_item_ids(data.items)
    if not item_ids:
        raise ValueError(f"dataset {data.name!r} has no items")
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    sequences = training_sequences(data)
    if not sequences:
        raise ValueError(f"dataset {data.name!r} has no user with 2+ training interactions for SASRec")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.early_stop == "holdout":
        train_part, held = holdout_split(sequences, config.holdout_users, rng)
    else:
        train_part, held = sequences, leave_one_out(data, max_history=config.max_len).valid
    seqs = [[index[i] for i in seq] for seq in train_part]
    bf16 = resolve_precision(config.precision, "cpu") == "bf16"

    model = SASRec(len(item_ids), config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    trained = TrainedSasrec(model, item_ids, best_holdout_recall10=-1.0, epochs_run=0, wall_time_s=0.0)
    best_state, stale = None, 0
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        total, count = 0.0, 0
        batches = _batches(seqs, config.batch_size, config.max_len, rng)
        bar = progress_bar(
            iterable=batches,
            total=-(-len(seqs) // config.batch_size),
            desc=f"SASRec epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for inputs, targets in bar:
            real = targets != PAD_INDEX
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                hidden = model(inputs)[real]  # only positions with a target cost the softmax
                loss = _softmax_loss(model, hidden, targets[real], config.negatives).float()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * int(real.sum())
            count += int(real.sum())
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
        recall = _holdout_recall10(trained, held) if held else 0.0
        trained.epochs_run = epoch + 1
        logger.info(
            "SASRec epoch %d: loss %.4f, early-stopping Recall@10 %.4f (%d users), %.0f s",
            epoch + 1,
            total / max(count, 1),
            recall,
            len(held),
            time.perf_counter() - started,
        )
        if recall > trained.best_holdout_recall10:
            trained.best_holdout_recall10 = recall
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                logger.info("SASRec: no better held-out Recall@10 for %d epochs; stopping", stale)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    trained.wall_time_s = time.perf_counter() - started
    return trained
