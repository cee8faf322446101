"""Histories in, top-K catalog items out: the part of every engine that is not the engine.

``ConstrainedRecommender`` turns item-id histories into prompts (the same template training
used), runs the level-synchronous search in batches with whatever ``ChildScorer`` an engine
provides, and maps trie leaves back to catalog items. ``rank`` scores given candidate lists
with the same scorer along the candidates' trie paths. The vLLM and HF engines differ only in
the scorers they plug in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.catalog import Catalog
from model.prompts import (
    COMPACT,
    LINES,
    PROMPT_FORMATS,
    CompactFormat,
    encode_prompt,
    history_window,
    next_item_prompt,
)
from model.recommender import RankRequest, ScoredItem
from model.search import ChildScorer, ItemPaths, constrained_beam_search, score_items
from model.trie import CompiledTrie

logger = logging.getLogger(__name__)

# Builds the scorer for one batch from that batch's prompt token ids.
ScorerFactory = Callable[[list[list[int]]], ChildScorer]


@dataclass(frozen=True)
class PromptSettings:
    history_len: int = 20
    max_prompt_tokens: int = 512
    with_titles: bool = True
    align: int = 1  # left-pad prompts to a multiple of this (see model.prompts)
    format: str = LINES  # model.prompts.PROMPT_FORMATS; bundles from before the compact format: lines

    def __post_init__(self) -> None:
        # history[-0:] would silently keep the whole history
        if self.history_len < 1 or self.max_prompt_tokens < 1 or self.align < 1:
            raise ValueError(f"history_len, max_prompt_tokens and align must be >= 1: {self}")
        if self.format not in PROMPT_FORMATS:
            raise ValueError(f"prompt format must be one of {PROMPT_FORMATS}, got {self.format!r}")
        if self.format == COMPACT and self.align != 1:
            raise ValueError("the compact prompt format is never padded: align must be 1")

    @classmethod
    def for_bundle(cls, manifest_extra: dict[str, object], **overrides: int) -> PromptSettings:
        """The prompt format a bundle's model was trained with (older bundles: no alignment)."""
        return cls(
            with_titles=bool(manifest_extra.get("with_titles", True)),
            align=int(str(manifest_extra.get("prompt_align", 1))),
            format=str(manifest_extra.get("prompt_format", LINES)),
            **overrides,
        )


class PromptBuilder:
    """Encodes a history as the next-item prompt, dropping the oldest items until it fits."""

    def __init__(self, catalog: Catalog, tokenizer: object, settings: PromptSettings) -> None:
        self.catalog = catalog
        self.tokenizer = tokenizer
        self.settings = settings
        self.compact = (
            CompactFormat(tokenizer, catalog.scheme, with_titles=settings.with_titles)
            if settings.format == COMPACT
            else None
        )

    def known_items(self, history: Sequence[str]) -> list[str]:
        return [item_id for item_id in history if item_id in self.catalog]

    def encode(self, history: Sequence[str]) -> list[int]:
        items = history_window(
            [self.catalog[i] for i in self.known_items(history)], self.settings.history_len
        )
        while True:
            if self.compact is not None:
                ids = self.compact.prompt(items)
                if len(ids) <= self.settings.max_prompt_tokens or not items:
                    return ids
                items = items[1:]
                continue
            text = next_item_prompt(items, self.catalog.scheme, with_titles=self.settings.with_titles)
            ids = encode_prompt(self.tokenizer, text, self.settings.align)
            if len(ids) <= self.settings.max_prompt_tokens or not items:
                return ids
            items = items[1:]


class ConstrainedRecommender:
    """A ``Recommender`` over any engine that can score trie children.

    ``make_scorer`` serves the top-K search, whose scorer may return only the children a beam
    of ``beam_width`` could keep; ``make_ranking_scorer`` (default: ``make_scorer``) serves
    ``rank`` and must return every valid child, since a candidate may lie anywhere.
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        trie: CompiledTrie,
        children_tokens: np.ndarray,
        prompts: PromptBuilder,
        make_scorer: ScorerFactory,
        beam_width: int,
        max_batch: int,
        model_version: str,
        make_ranking_scorer: ScorerFactory | None = None,
    ) -> None:
        self._catalog = catalog
        self.trie = trie
        self.children_tokens = children_tokens
        self.prompts = prompts
        self.make_scorer = make_scorer
        self.make_ranking_scorer = make_ranking_scorer or make_scorer
        self.paths = ItemPaths.of(trie)
        self.beam_width = beam_width
        self.max_batch = max_batch
        self._model_version = model_version

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > self.beam_width:
            raise ValueError(f"k={k} exceeds the engine's beam width {self.beam_width}")
        k = min(k, len(self._catalog))
        results: list[list[ScoredItem]] = []
        for start in range(0, len(histories), self.max_batch):
            batch = histories[start : start + self.max_batch]
            prompts = [self.prompts.encode(history) for history in batch]
            hits = constrained_beam_search(
                self.trie,
                self.children_tokens,
                len(prompts),
                self.make_scorer(prompts),
                beam_width=self.beam_width,
                k=k,
            )
            results.extend(
                [ScoredItem(self._catalog.at(hit.item_index).item_id, hit.score) for hit in row]
                for row in hits
            )
        return results

    def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        """Each request's candidates, each once (first occurrence kept), best first.

        A candidate's score is the one the top-K search gives it for the same history, so the
        two endpoints agree on every item they share. Requests are scored ``max_batch`` at a
        time, one scorer call per trie level per batch. Candidates outside the catalog are
        the caller's error: all of them are named in one ValueError before anything runs.
        """
        unknown = list(dict.fromkeys(c for _, cands in requests for c in cands if c not in self._catalog))
        if unknown:
            raise ValueError(f"candidates not in the catalog: {unknown}")
        results: list[list[ScoredItem]] = []
        for start in range(0, len(requests), self.max_batch):
            batch = requests[start : start + self.max_batch]
            prompts = [self.prompts.encode(history) for history, _ in batch]
            items = [
                np.asarray([self._catalog.index_of(c) for c in dict.fromkeys(cands)], dtype=np.int64)
                for _, cands in batch
            ]
            scores = score_items(
                self.trie, self.children_tokens, self.paths, items, self.make_ranking_scorer(prompts)
            )
            for row_items, row_scores in zip(items, scores, strict=True):
                order = np.argsort(-row_scores, kind="stable")  # ties keep the caller's order
                results.append(
                    [
                        ScoredItem(self._catalog.at(int(row_items[i])).item_id, float(row_scores[i]))
                        for i in order
                    ]
                )
        return results
