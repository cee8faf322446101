"""Level-synchronous constrained beam search over semantic IDs (engine-independent core).

Semantic IDs have a fixed length, so every beam of every prompt advances one level at a
time: one scoring call per level for the whole batch. The engine behind ``ChildScorer`` only
has to say, for each live row (prompt + beam prefix), the log-probability of each child of the
row's trie node; everything else (candidate expansion, per-prompt top-W, bookkeeping) is array
code here, shared by the vLLM engine and the HF reference scorer.

Scores are sums of per-level log-probabilities masked to the trie (renormalised over the
valid children), i.e. the model's log-probability of the full ID under the trie constraint.
``score_items`` computes that same score for given items (ranking a candidate list) by
expanding only the trie nodes on the candidates' paths, with the same per-row scoring code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
            rows = LiveRows(rows_p, prefixes[rows_p, rows_b], nodes[rows_p, rows_b])
            logp = child_log_probs(trie, scorer, rows)
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


def child_log_probs(trie: CompiledTrie, scorer: ChildScorer, rows: LiveRows) -> np.ndarray:
    """``[R, max_children]`` log-probabilities of each row's children (-inf at PAD slots).

    The one place rows meet the scorer, so the top-K search and ``score_items`` produce the
    same per-level values for the same row. A node with one child leaves the model no choice:
    renormalised over the valid children its log-probability is exactly 0, so such rows are
    not sent to the scorer at all (most nodes of the disambiguation level have one child).
    """
    valid = trie.child_node[rows.node] != PAD
    logp = np.where(valid, 0.0, NEG_INF)
    ask = valid.sum(axis=1) > 1
    if ask.any():
        scored = scorer(LiveRows(rows.prompt_index[ask], rows.prefix_tokens[ask], rows.node[ask]))
        logp[ask] = np.where(valid[ask], scored, NEG_INF)
    return logp


@dataclass(frozen=True)
class ItemPaths:
    """Every item's root-to-leaf path through the trie, indexed by catalog position.

    ``node[i, d]`` is the node item ``i``'s ID has reached before its level-``d`` code and
    ``slot[i, d]`` the child slot that code takes there, so ``trie.child_node[node, slot]``
    steps along the path. Built once per trie; ranking looks paths up instead of walking.
    """

    node: np.ndarray  # [items, levels]
    slot: np.ndarray  # [items, levels]

    @classmethod
    def of(cls, trie: CompiledTrie) -> ItemPaths:
        parents, slots = np.nonzero(trie.child_node != PAD)
        children = trie.child_node[parents, slots]
        parent_of = np.full(trie.num_nodes, PAD, dtype=np.int64)
        slot_of = np.full(trie.num_nodes, PAD, dtype=np.int64)
        parent_of[children], slot_of[children] = parents, slots
        leaves = np.nonzero(trie.leaf_item != PAD)[0]
        current = np.empty(leaves.size, dtype=np.int64)
        current[trie.leaf_item[leaves]] = leaves
        node = np.empty((leaves.size, trie.num_levels), dtype=np.int64)
        slot = np.empty((leaves.size, trie.num_levels), dtype=np.int64)
        for depth in reversed(range(trie.num_levels)):
            slot[:, depth] = slot_of[current]
            current = parent_of[current]
            node[:, depth] = current
        return cls(node, slot)

    @property
    def num_items(self) -> int:
        return int(self.node.shape[0])


def score_items(
    trie: CompiledTrie,
    children_tokens: np.ndarray,
    paths: ItemPaths,
    items: Sequence[np.ndarray],
    scorer: ChildScorer,
) -> list[np.ndarray]:
    """Each prompt's score of each of its ``items`` (catalog positions), in the given order.

    The score is exactly what ``constrained_beam_search`` gives the item (the same per-level
    values summed in the same order), whether or not a beam would have reached it: ranking a
    candidate list must agree with the top-K list for the items on both. Level-synchronous
    like the search: at each level one scorer call for the distinct nodes that some prompt's
    candidates pass through, so a prompt's rows number at most its candidates per level.
    The scorer must give every valid child of each row (a top-N scorer would lose children
    no beam needs but a candidate does). Repeated items share rows and get equal scores.
    """
    lengths = [len(row) for row in items]
    item = np.concatenate([np.zeros(0, np.int64), *(np.asarray(row, dtype=np.int64) for row in items)])
    if item.size and (item.min() < 0 or item.max() >= paths.num_items):
        raise ValueError(f"item positions must lie in [0, {paths.num_items}), got {item.min()}..{item.max()}")
    prompt = np.repeat(np.arange(len(items), dtype=np.int64), lengths)
    totals = np.zeros(item.size, dtype=np.float64)
    for depth in range(trie.num_levels if item.size else 0):
        nodes = paths.node[item, depth]
        # One row per distinct (prompt, node); any of its items spells the row's prefix.
        _, first, row_of = np.unique(prompt * trie.num_nodes + nodes, return_index=True, return_inverse=True)
        spelled = item[first]
        prefixes = children_tokens[paths.node[spelled, :depth], paths.slot[spelled, :depth]]
        logp = child_log_probs(trie, scorer, LiveRows(prompt[first], prefixes, nodes[first]))
        totals = totals + logp[row_of.reshape(-1), paths.slot[item, depth]]
    return np.split(totals, np.cumsum(lengths)[:-1]) if items else []


def renormalise(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """log-softmax of ``logits`` over the ``valid`` entries of each row (-inf elsewhere)."""
    masked = np.where(valid, logits, NEG_INF)
    top = masked.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a row with no valid entry: log(0) = -inf
        logsum = np.log(np.exp(masked - top).sum(axis=1, keepdims=True)) + top
    return np.where(valid, logits - logsum, NEG_INF)
