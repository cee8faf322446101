"""Prompt token ids fast: each distinct text piece tokenized once, the semantic-ID tokens' ids
spliced in between (HF fast tokenizers), and every catalog ID formatted once.

Encoding Beauty's task mixture spent most of its time re-tokenizing the same item lines and
re-formatting the same IDs; these two give the same ids (checked) in a fraction of the time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import chain

from transformers import PreTrainedTokenizerBase

from model.catalog import Catalog
from model.semantic_id import SemanticId, SidScheme

logger = logging.getLogger(__name__)

# A run of consecutive semantic-ID-shaped tokens (``<a_12><b_3>``); the capture keeps it in split().
# Spelled to start with a literal ``<``, which re scans for 2.4x faster than ``((?:<...>)+)``.
_SID_RUN = re.compile(r"(<[a-z]_[0-9]+>(?:<[a-z]_[0-9]+>)*)")
_SID_PIECE = re.compile(r"<[a-z]_[0-9]+>")
# An added token that could swallow part of a semantic-ID token: it holds one, or ends in a prefix of one.
_OVERLAPS_SID = re.compile(r"<[a-z]_[0-9]+>|<(?:[a-z](?:_[0-9]*)?)?$")


@dataclass(frozen=True)
class PreformattedScheme(SidScheme):
    """A scheme that looks its catalog's IDs up already formatted.

    Prompts name each item ~20 times; formatting its ID every time was 3.7 s of the 5.3 s
    spent rendering Beauty's prompt texts.
    """

    formatted: dict[SemanticId, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, catalog: Catalog) -> Catalog:
        """The same catalog, with this scheme (same prompt texts, rendered faster)."""
        scheme = catalog.scheme
        formatted = {item.sid: scheme.format(item.sid) for item in catalog}
        return Catalog(cls(scheme.codebook_sizes, formatted), catalog)

    def format(self, sid: SemanticId) -> str:
        text = self.formatted.get(sid)
        return text if text is not None else super().format(sid)


class SplicingEncoder:
    """Prompt ids from an HF fast tokenizer, without matching added tokens in whole prompts.

    Tokenizing whole prompts redoes the same work: an item's line recurs in ~20 prompts, and
    the search for added tokens (the semantic-ID tokens) runs over every character. HF
    tokenizers split a text on its added tokens *before* normalizing and tokenizing the pieces
    between them, so a prompt's ids are its text pieces' ids with the ID tokens' ids spliced
    in, and each distinct piece is tokenized once. :meth:`build` refuses tokenizers for which
    that argument does not hold, and :meth:`encode` checks the first prompts against the
    tokenizer on the whole text.
    """

    SPOT_CHECK = 8

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        token_ids: dict[str, int],
        prefix: list[int],
        suffix: list[int],
    ) -> None:
        self.tokenizer = tokenizer
        self.token_ids = token_ids
        self.prefix, self.suffix = prefix, suffix  # the post-processor's special tokens
        self.pieces: dict[str, list[int]] = {}  # text piece or ID run -> its ids
        self.foreign: set[str] = set()  # ID-like runs with a token outside the scheme
        self.checked = 0

    @classmethod
    def build(cls, tokenizer: object, scheme: SidScheme) -> SplicingEncoder | None:
        """The splicing encoder, or None where its result could differ from the tokenizer's."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase) or not tokenizer.is_fast:
            return None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or backend.normalizer is not None:
            return None  # normalized added tokens are matched in normalized text: not split first
        added = {t.content: (i, t) for i, t in tokenizer.added_tokens_decoder.items()}
        token_ids: dict[str, int] = {}
        for token in scheme.all_tokens():
            if token not in added:
                return None  # tokenized as plain text
            i, spec = added[token]
            if spec.lstrip or spec.rstrip or spec.single_word:
                return None
            token_ids[token] = i
        others = [c for c in added if c not in token_ids and not _SID_PIECE.fullmatch(c)]
        if any(_OVERLAPS_SID.search(c) for c in others):  # ID-shaped ones: see ``foreign``
            return None
        probe, probe_id = next(iter(token_ids.items()))
        ids = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
        if ids.count(probe_id) != 1:
            return None
        at = ids.index(probe_id)
        return cls(tokenizer, token_ids, ids[:at], ids[at + 1 :])

    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        """``tokenizer(texts, add_special_tokens=False)["input_ids"]`` from the Rust tokenizer directly.

        transformers' call sets the backend's truncation, padding and special-token splitting,
        then converts every encoding to a dict (on Beauty nearly as long as the tokenizing). A
        call on one text sets that state; the rest go straight to ``encode_batch`` in it.
        """
        first = list(self.tokenizer(texts[0], add_special_tokens=False)["input_ids"])
        encodings = self.tokenizer.backend_tokenizer.encode_batch(texts[1:], add_special_tokens=False)
        return [first, *(e.ids for e in encodings)]

    def encode(self, texts: list[str]) -> list[list[int]] | None:
        """Ids of each text exactly as ``tokenizer(text, add_special_tokens=True)``; None if the
        spot check on the first prompts ever encoded found a difference."""
        splits = [_SID_RUN.split(text) for text in texts]  # text, run, text, ..., text
        pieces, foreign = self.pieces, self.foreign
        new_text = list({p: None for parts in splits for p in parts[::2] if p not in pieces})
        if new_text:
            pieces.update(zip(new_text, self._text_ids(new_text), strict=True))
        for parts in splits:
            for run in parts[1::2]:
                if run not in pieces and run not in foreign:
                    run_ids = [self.token_ids.get(t) for t in _SID_PIECE.findall(run)]
                    if None in run_ids:
                        foreign.add(run)
                    else:
                        pieces[run] = [i for i in run_ids if i is not None]
        out: list[list[int]] = []
        for text, parts in zip(texts, splits, strict=True):
            if foreign and not foreign.isdisjoint(parts[1::2]):  # plain text to the tokenizer
                out.append(list(self.tokenizer(text, add_special_tokens=True)["input_ids"]))
            else:
                out.append([*self.prefix, *chain.from_iterable(map(pieces.__getitem__, parts)), *self.suffix])
        for text, ids in zip(texts[: max(0, self.SPOT_CHECK - self.checked)], out, strict=False):
            self.checked += 1
            if ids != list(self.tokenizer(text, add_special_tokens=True)["input_ids"]):
                logger.warning("spliced prompt ids differ from the tokenizer's; tokenizing whole prompts")
                return None
        return out
