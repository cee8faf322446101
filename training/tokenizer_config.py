"""The item tokenizer's configuration: which sources the semantic ID is built from and the shape of
each source's codes; what ``genrec tokenize --config`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from training.base_model import SMOLLM2
from training.sasrec import SasrecConfig

MINILM = "minilm"
SEMANTIC = "semantic"
BEHAVIOR = "behavior"
SOURCES = (SEMANTIC, BEHAVIOR)
DISAMBIGUATION = "disambiguation"
ITEM = "item"


class ItemTokenizerConfig(BaseModel):
    """Semantic-ID shape: each source's k-means levels, in ``sources`` order, then one last level.

    ``levels``/``codebook_size`` shape the semantic (text) codes, ``behavior_levels``/
    ``behavior_codebook_size`` the behavioural (SASRec) codes. ``last_level`` says what tells
    apart items that share those codes: ``disambiguation`` numbers them within their prefix
    (TIGER; the code means nothing across prefixes), ``item`` gives every item a token of its
    own (as many codes as items), so the last level is an item embedding that the model reads
    and scores like SASRec does, while the k-means levels above it still group similar items.
    """

    sources: tuple[str, ...] = (SEMANTIC,)
    levels: int = Field(default=3, ge=1)
    codebook_size: int = Field(default=256, ge=1)
    behavior_levels: int = Field(default=1, ge=1)
    behavior_codebook_size: int = Field(default=256, ge=1)
    align: bool = True
    last_level: Literal["disambiguation", "item"] = "disambiguation"
    # What embeds the item text: "minilm" (the bundled all-MiniLM-L6-v2 sentence encoder) or a
    # base LLM ("smollm2" or a local HF checkpoint) whose mean last hidden state is the vector
    # (``training.llm_embeddings``), cut to ``text_max_tokens`` tokens.
    text_encoder: str = MINILM
    text_max_tokens: int = Field(default=32, ge=1)
    seed: int = 0
    kmeans_iters: int = Field(default=50, ge=1)
    sasrec: SasrecConfig = SasrecConfig()

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        if not sources:
            raise ValueError(f"sources must name at least one of {', '.join(SOURCES)}")
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or len(set(sources)) != len(sources):
            raise ValueError(f"sources must be distinct names from {SOURCES}, got {list(sources)}")
        return sources

    @field_validator("text_encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        if name in (MINILM, SMOLLM2) or (Path(name) / "config.json").is_file():
            return name
        raise ValueError(f"{name!r} is not {MINILM!r}, {SMOLLM2!r} or a HF checkpoint directory")

    def shape(self, source: str) -> tuple[int, int]:
        """(levels, codebook size) of one source."""
        if source == SEMANTIC:
            return self.levels, self.codebook_size
        return self.behavior_levels, self.behavior_codebook_size

    def check_fits(self, num_items: int) -> None:
        """A codebook larger than the catalog could never be used: refuse it before any work."""
        for source in self.sources:
            _, size = self.shape(source)
            if size > num_items:
                field = "codebook_size" if source == SEMANTIC else "behavior_codebook_size"
                raise ValueError(
                    f"{field}={size} asks for more codes than the catalog has items ({num_items})"
                )
