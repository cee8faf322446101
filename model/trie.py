"""Prefix trie of all valid semantic IDs, compiled into flat arrays.

The trie lives in *code* space (level, code) so it does not depend on any tokenizer; an
engine maps codes to its own token ids once (``to_token_space``). Every node stores its
children as one row of a padded matrix, so the allowed-token mask of a whole batch is a
gather plus a scatter on the engine's device, with no Python loop over the vocabulary.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.semantic_id import SemanticId

PAD = -1
ROOT = 0


@dataclass(frozen=True)
class CompiledTrie:
    """Flat-array trie over fixed-length semantic IDs.

    Attributes:
        children: ``[num_nodes, max_children]`` codes of each node's children, ``PAD``-filled.
        child_node: same shape, the node id each child leads to, ``PAD``-filled.
        depth: ``[num_nodes]`` level of each node (root = 0, leaves = num_levels).
        leaf_item: ``[num_nodes]`` catalog index of the item a leaf spells, ``PAD`` elsewhere.
    """

    children: np.ndarray
    child_node: np.ndarray
    depth: np.ndarray
    leaf_item: np.ndarray
    num_levels: int

    @property
    def num_nodes(self) -> int:
        return int(self.depth.shape[0])

    @property
    def max_children(self) -> int:
        return int(self.children.shape[1])

    @classmethod
    def build(cls, sids: Sequence[SemanticId]) -> CompiledTrie:
        """Compile the trie of ``sids``; ``leaf_item`` refers to positions in ``sids``."""
        if not sids:
            raise ValueError("cannot build a trie from an empty catalog")
        num_levels = len(sids[0])
        kids: list[dict[int, int]] = [{}]
        depth = [0]
        leaf_item = [PAD]
        for index, sid in enumerate(sids):
            if len(sid) != num_levels:
                raise ValueError(f"semantic ID {sid} has {len(sid)} codes, expected {num_levels}")
            node = ROOT
            for level, code in enumerate(sid):
                nxt = kids[node].get(code)
                if nxt is None:
                    nxt = len(kids)
                    kids[node][code] = nxt
                    kids.append({})
                    depth.append(level + 1)
                    leaf_item.append(PAD)
                node = nxt
            if leaf_item[node] != PAD:
                raise ValueError(f"semantic ID {sid} appears twice (items {leaf_item[node]} and {index})")
            leaf_item[node] = index
        width = max(len(k) for k in kids)
        children = np.full((len(kids), width), PAD, dtype=np.int64)
        child_node = np.full((len(kids), width), PAD, dtype=np.int64)
        for node, mapping in enumerate(kids):
            for slot, code in enumerate(sorted(mapping)):
                children[node, slot] = code
                child_node[node, slot] = mapping[code]
        return cls(
            children, child_node, np.asarray(depth, np.int64), np.asarray(leaf_item, np.int64), num_levels
        )

    def child(self, node: int, code: int) -> int:
        """Node reached from ``node`` by ``code``, or ``PAD`` if that path is not in the trie."""
        row = self.children[node]
        hits = np.nonzero(row == code)[0]
        return int(self.child_node[node, hits[0]]) if hits.size else PAD

    def walk(self, prefix: Sequence[int]) -> int:
        """Node spelled by ``prefix`` (codes), or ``PAD`` if it is not a valid prefix."""
        node = ROOT
        for code in prefix:
            node = self.child(node, code)
            if node == PAD:
                return PAD
        return node

    def allowed(self, node: int) -> list[int]:
        """Codes that may follow ``node`` (empty at a leaf)."""
        row = self.children[node]
        return [int(c) for c in row[row != PAD]]

    def to_token_space(self, token_of_code: np.ndarray) -> np.ndarray:
        """Children matrix with codes replaced by token ids.

        ``token_of_code[level, code]`` is the vocabulary id of that code's token. A child of a
        node at depth ``d`` is a code of level ``d``.
        """
        levels = np.minimum(self.depth, self.num_levels - 1)[:, None]
        safe = np.where(self.children == PAD, 0, self.children)
        tokens = token_of_code[levels, safe]
        return np.where(self.children == PAD, PAD, tokens)

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                children=self.children,
                child_node=self.child_node,
                depth=self.depth,
                leaf_item=self.leaf_item,
                num_levels=np.asarray(self.num_levels),
            )

    @classmethod
    def load(cls, path: Path) -> CompiledTrie:
        try:
            with np.load(path) as data:
                return cls(
                    children=data["children"],
                    child_node=data["child_node"],
                    depth=data["depth"],
                    leaf_item=data["leaf_item"],
                    num_levels=int(data["num_levels"]),
                )
        # A damaged .npz fails inside zipfile/zlib (bad CRC, truncated stream, odd compression
        # flags), which raise neither OSError nor ValueError.
        except (
            OSError,
            EOFError,
            KeyError,
            ValueError,
            RuntimeError,
            zipfile.BadZipFile,
            zlib.error,
        ) as exc:
            raise ValueError(f"cannot read trie {path}: {exc!r}") from exc
