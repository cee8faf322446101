"""vLLM V1 logits processor that lets only trie paths through (the thin engine adapter).

A request opts in with ``SamplingParams(extra_args={"genrec_node": <trie node>})``: the node
its prompt has already spelled (the root for a fresh ID, a deeper node when the beam prefix is
part of the prompt). Generated tokens advance the node, so the same processor serves a
one-token level step and a multi-token constrained decode. Requests without the key pass
through untouched.

The processor is constructed inside vLLM's engine process, so it finds the trie itself, through
``model.bundle``: the bundle root is the parent of the served model directory
(``artifacts/<v>/model``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from model.bundle import load_trie
from model.trie import PAD
from model.trie_mask import TrieMask, sid_token_table

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

NODE_KEY = "genrec_node"


def load_trie_mask(bundle_root: Path, model_dir: Path, vocab_size: int, device: torch.device) -> TrieMask:
    scheme, trie = load_trie(bundle_root)
    return TrieMask(trie, sid_token_table(model_dir, scheme), vocab_size, device)


class _Row:
    __slots__ = ("consumed", "node", "outputs")

    def __init__(self, node: int, outputs: list[int]) -> None:
        self.node = node
        self.outputs = outputs
        self.consumed = len(outputs)


class TrieLogitsProcessor(LogitsProcessor):
    """Masks opted-in rows to the children of their current trie node."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        model_dir = Path(vllm_config.model_config.model)
        self.mask = load_trie_mask(
            model_dir.parent, model_dir, vllm_config.model_config.get_vocab_size(), device
        )
        self.rows: dict[int, _Row] = {}
        self.device = device
        logger.info("genrec trie processor ready: %d nodes", self.mask.trie.num_nodes)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        extra = sampling_params.extra_args or {}
        if NODE_KEY in extra and not isinstance(extra[NODE_KEY], int):
            raise ValueError(f"extra_args[{NODE_KEY!r}] must be an int trie node id")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            for index in batch_update.removed:
                self.rows.pop(index, None)
            for index, params, _prompt, outputs in batch_update.added:
                node = (params.extra_args or {}).get(NODE_KEY) if params is not None else None
                if node is None:
                    self.rows.pop(index, None)
                else:
                    self.rows[index] = _Row(int(node), outputs)
            for a, b, direction in batch_update.moved:
                row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
                if row_a is not None:
                    self.rows[b] = row_a
                if direction == MoveDirectionality.SWAP and row_b is not None:
                    self.rows[a] = row_b
        self._advance_generated()

    def _advance_generated(self) -> None:
        """Walk each row's node past the tokens it generated since the last step."""
        while True:
            stale = [row for row in self.rows.values() if row.node != PAD and row.consumed < len(row.outputs)]
            if not stale:
                return
            nodes = torch.tensor([row.node for row in stale], dtype=torch.int64, device=self.device)
            tokens = torch.tensor(
                [row.outputs[row.consumed] for row in stale], dtype=torch.int64, device=self.device
            )
            for row, node in zip(stale, self.mask.advance(nodes, tokens).tolist(), strict=True):
                row.node = node
                row.consumed += 1

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        live = [(index, row.node) for index, row in self.rows.items() if row.node != PAD]
        if not live:
            return logits
        table = torch.tensor(live, dtype=torch.int64, device=self.device)
        return self.mask.apply_(logits, table[:, 0], table[:, 1])
