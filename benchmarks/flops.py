"""The arithmetic a constrained top-K search needs, and the matmul rate that bounds it.

``decode_speed.py`` divides the FLOPs one user's search runs by the matmul rate measured in the
same run, in the engine's precision, to give the engine's distance to the machine's arithmetic
limit. The count comes from the model's shape (its HF ``config.json``) and from what the search
actually runs: one prefill of the prompt, then one new token per row the search scored at each
later level (single-child levels never reach the model, so they cost nothing). Attention is
counted over the real context of each token; the LM head over the whole vocabulary at each
position whose logits are read. KV-cache recomputation of partial blocks, padding and
everything that is not a matmul are the engine's overhead, not part of the limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a decoder-only transformer (Llama-style: gated MLP, GQA)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of_checkpoint(cls, model_dir: Path) -> ModelShape:
        config = json.loads((model_dir / "config.json").read_text())
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            hidden=hidden,
            layers=int(config["num_hidden_layers"]),
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads", heads)),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
        )

    def token_flops(self, context: int) -> float:
        """One token through every block: the projections and MLP, plus attention over
        ``context`` keys (itself included)."""
        q_and_o = 2 * self.hidden * self.heads * self.head_dim
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        attention = 2 * self.heads * self.head_dim * context  # scores and the weighted sum
        return 2.0 * self.layers * (q_and_o + k_and_v + mlp + attention)

    def head_flops(self) -> float:
        """The logits of one position over the whole vocabulary."""
        return 2.0 * self.hidden * self.vocab


def search_flops(shape: ModelShape, prompt_tokens: Sequence[int], decode_rows: Mapping[int, int]) -> float:
    """FLOPs of constrained searches: each prompt prefilled once (its last position's logits
    read), and ``decode_rows[c]`` rows whose one new token follows ``c`` tokens (prompt plus
    beam prefix) and whose logits are read."""
    total = 0.0
    for length in prompt_tokens:
        total += sum(shape.token_flops(p + 1) for p in range(length)) + shape.head_flops()
    for context, rows in decode_rows.items():
        total += rows * (shape.token_flops(context + 1) + shape.head_flops())
    return total


def matmul_gflops(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """The best rate of a ``size`` x ``size`` matmul on this machine's torch threads, in
    ``dtype`` ("float32" or "bfloat16"): the rate the search's arithmetic cannot beat."""
    import torch

    kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a = torch.randn(size, size).to(kind)
    b = torch.randn(size, size).to(kind)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9
