"""Item text -> dense vectors from the base LLM's own hidden states (issue 4's optional source).

The sentence encoder (``training.text_embeddings``) is trained for similarity but knows nothing
of the LLM that will read the IDs; the LLM's hidden states place items where the LLM itself
sees them, which is what an index "aligned with the LLM" is after. Each text is cut to
``max_tokens`` (the title comes first in ``Item.text()``), run through the model once, and its
last hidden state is mean-pooled over the real tokens and L2-normalised, so residual k-means
treats these vectors like the sentence encoder's.

Texts are batched by length (little padding), and padding is on the right with an attention
mask, so a text's vector does not depend on what it was batched with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.progress import progress

logger = logging.getLogger(__name__)


def encode_texts_with_llm(
    texts: Sequence[str],
    model_dir: Path,
    *,
    max_tokens: int = 32,
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """L2-normalised float32 ``[len(texts), hidden]``: mean last hidden state of each text, in order."""
    from transformers import AutoModel, AutoTokenizer

    if max_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_tokens and batch_size must be >= 1, got {max_tokens}, {batch_size}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).to(device).eval()
    hidden = int(model.config.hidden_size)
    if not texts:
        return np.zeros((0, hidden), dtype=np.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_tokens)
    ids = encoded["input_ids"]
    # an empty text is read as one EOS (the pad row of the embeddings may be all zeros)
    ids = [row or [int(tokenizer.eos_token_id)] for row in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), hidden), dtype=np.float32)
    started = time.perf_counter()
    with torch.inference_mode(), progress(total=len(ids), desc="LLM item embeddings", unit="item") as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                batch[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            mask = mask.to(device)
            states = model(input_ids=batch.to(device), attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.float().cpu().numpy()
            bar.update(len(rows))
    took = time.perf_counter() - started
    logger.info(
        "LLM embeddings of %d texts (<= %d tokens) in %.1f s (%.0f items/s)",
        len(ids), max_tokens, took, len(ids) / max(took, 1e-9),
    )  # fmt: skip
    return out
