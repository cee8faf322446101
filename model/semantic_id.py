"""Semantic-ID codec: item codes <-> the tokens added to the LLM's vocabulary.

A semantic ID is a fixed-length tuple of integer codes, one per level. Level ``i`` has its
own token namespace (``<a_*>`` for level 0, ``<b_*>`` for level 1, ...), so the same code at
two levels is two different tokens and the trie never confuses levels.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

SemanticId = tuple[int, ...]

_LEVEL_NAMES = string.ascii_lowercase
_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """The vocabulary token for ``code`` at ``level`` (``<a_12>`` for level 0, code 12)."""
    if not 0 <= level < len(_LEVEL_NAMES):
        raise ValueError(f"level {level} out of range 0..{len(_LEVEL_NAMES) - 1}")
    if code < 0:
        raise ValueError(f"code must be >= 0, got {code}")
    return f"<{_LEVEL_NAMES[level]}_{code}>"


@dataclass(frozen=True)
class SidScheme:
    """Shape of the semantic IDs of one catalog: how many codes each level may use."""

    codebook_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.codebook_sizes:
            raise ValueError("a semantic-ID scheme needs at least one level")
        if any(size < 1 for size in self.codebook_sizes):
            raise ValueError(f"codebook sizes must be >= 1, got {self.codebook_sizes}")

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    def all_tokens(self) -> list[str]:
        """Every token of the scheme, level by level, in code order (the vocabulary to add)."""
        return [
            sid_token(level, code) for level, size in enumerate(self.codebook_sizes) for code in range(size)
        ]

    def validate(self, sid: SemanticId) -> None:
        """Raise ValueError if ``sid`` does not fit this scheme."""
        if len(sid) != self.num_levels:
            raise ValueError(f"semantic ID {sid} has {len(sid)} codes, scheme has {self.num_levels} levels")
        for level, (code, size) in enumerate(zip(sid, self.codebook_sizes, strict=True)):
            if not 0 <= code < size:
                raise ValueError(f"code {code} at level {level} outside codebook of size {size}")

    def format(self, sid: SemanticId) -> str:
        """Render ``sid`` as the token string the LLM reads and writes."""
        self.validate(sid)
        return "".join(sid_token(level, code) for level, code in enumerate(sid))

    def tokens(self, sid: SemanticId) -> list[str]:
        self.validate(sid)
        return [sid_token(level, code) for level, code in enumerate(sid)]

    def parse(self, text: str) -> SemanticId:
        """Parse a token string such as ``<a_1><b_7><c_0>`` back into codes."""
        matches = _TOKEN_RE.findall(text)
        if _TOKEN_RE.sub("", text).strip():
            raise ValueError(f"unexpected text around the semantic-ID tokens in {text!r}")
        if len(matches) != self.num_levels:
            raise ValueError(
                f"expected {self.num_levels} semantic-ID tokens in {text!r}, found {len(matches)}"
            )
        sid: list[int] = []
        for level, (name, code) in enumerate(matches):
            if name != _LEVEL_NAMES[level]:
                raise ValueError(
                    f"token <{name}_{code}> at position {level}, expected level {_LEVEL_NAMES[level]!r}"
                )
            sid.append(int(code))
        result = tuple(sid)
        self.validate(result)
        return result
