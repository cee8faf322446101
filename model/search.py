"""Level-synchronous constrained beam search over semantic IDs (engine-independent core).

Semantic IDs have a fixed length, so every beam of every prompt advances one level at a
time: one scoring call per level for the whole batch. The engine behind ``ChildScorer`` only
has to say, for each live row (prompt + beam prefix), the log-probability of each child of the
row's trie node; everything else (candidate expansion, per-prompt top-W, bookkeeping) is array
code here, shared by the vLLM engine and the HF reference scorer.

Scores are sums of per-level log-probabilities masked to the trie (renormalised over the
valid children), i.e. the model's log-probability of the full ID under the trie constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.trie import PAD, ROOT, CompiledTrie

NEG_INF = float("-inf")


@dataclass(frozen=True)
class LiveRows:
    """The rows one scoring call must score: a prompt, its beam's ID prefix, its trie node."""

    prompt_index: np.ndarray  # [R] index into the batch's prompts
    prefix_tokens: np.ndarray  # [R, depth] vocabulary ids of the beam prefix
    node: np.ndarray  # [R] trie node the prefix spells


# Returns [R, max_children] log-probabilities of each child slot of each row's node
# (renormalised over the valid children; anything at PAD slots is ignored).
ChildScorer = Callable[[LiveRows], np.ndarray]


@dataclass(frozen=True)
class SearchHit:
    item_index: int  # position in the catalog (the trie's leaf_item)
    score: float


def constrained_beam_search(
    trie: CompiledTrie,
    children_tokens: np.ndarray,
    num_prompts: int,
    scorer: ChildScorer,
    *,
    beam_width: int,
    k: int,
) -> list[list[SearchHit]]:
    """Top-``k`` distinct items per prompt, best first.

    ``children_tokens`` is the trie's children matrix in token space (``trie.to_token_space``).
    Every kept prefix is a distinct trie path, so the leaves, and therefore the items, are
    distinct; with ``beam_width >= number of items`` the search is exhaustive.
    """
    if k < 1 or beam_width < k:
        raise ValueError(f"need 1 <= k <= beam_width, got k={k}, beam_width={beam_width}")
    nodes = np.full((num_prompts, 1), ROOT, dtype=np.int64)
    scores = np.zeros((num_prompts, 1), dtype=np.float64)
    prefixes = np.zeros((num_prompts, 1, 0), dtype=np.int64)
    slots = trie.max_children
    for depth in range(trie.num_levels):
        width = nodes.shape[1]
        live = np.isfinite(scores) & (nodes != PAD)
        rows_p, rows_b = np.nonzero(live)
        candidates = np.full((num_prompts, width, slots), NEG_INF)
        if rows_p.size:
            row_nodes = nodes[rows_p, rows_b]
            valid = trie.child_node[row_nodes] != PAD
            # A node with one child leaves the model no choice: renormalised over the valid
            # children its log-probability is exactly 0, so such rows are not scored at all.
            # (Most nodes of the disambiguation level have a single child.)
            logp = np.where(valid, 0.0, NEG_INF)
            ask = valid.sum(axis=1) > 1
            if ask.any():
                r_p, r_b, r_nodes = rows_p[ask], rows_b[ask], row_nodes[ask]
                scored = scorer(LiveRows(r_p, prefixes[r_p, r_b], r_nodes))
                logp[ask] = np.where(valid[ask], scored, NEG_INF)
            candidates[rows_p, rows_b] = scores[rows_p, rows_b][:, None] + logp
        keep = min(k if depth == trie.num_levels - 1 else beam_width, width * slots)
        flat = candidates.reshape(num_prompts, width * slots)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
        scores = np.take_along_axis(flat, order, axis=1)
        beam, slot = order // slots, order % slots
        parent = np.take_along_axis(nodes, beam, axis=1)
        safe_parent = np.where(parent == PAD, ROOT, parent)
        nodes = np.where(np.isfinite(scores), trie.child_node[safe_parent, slot], PAD)
        new_tokens = children_tokens[safe_parent, slot]
        prefixes = np.concatenate(
            [np.take_along_axis(prefixes, beam[:, :, None], axis=1), new_tokens[:, :, None]], axis=2
        )
    results: list[list[SearchHit]] = []
    for prompt in range(num_prompts):
        hits = [
            SearchHit(int(trie.leaf_item[node]), float(score))
            for node, score in zip(nodes[prompt], scores[prompt], strict=True)
            if np.isfinite(score) and node != PAD
        ]
        results.append(hits)
    return results


def renormalise(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """log-softmax of ``logits`` over the ``valid`` entries of each row (-inf elsewhere)."""
    masked = np.where(valid, logits, NEG_INF)
    top = masked.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a row with no valid entry: log(0) = -inf
        logsum = np.log(np.exp(masked - top).sum(axis=1, keepdims=True)) + top
    return np.where(valid, logits - logsum, NEG_INF)
