"""A stand-in HF tokenizer for the training tests."""

from __future__ import annotations


class WordTokenizer:
    """One stable id per whitespace-separated word, BOS = 1, EOS = 2, no pad token (EOS pads)."""

    bos_token_id = 1
    eos_token_id = 2

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def _id(self, word: str) -> int:
        return self.vocab.setdefault(word, 10 + len(self.vocab))

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        ids = [self._id(word) for word in text.split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self._id(token) for token in tokens]
