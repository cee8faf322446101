"""Reference engine on plain transformers: the same constrained search, scored by HF forward passes.

Used where vLLM is not available (the GPU training machine, validation during training) and
as the ground truth the vLLM engine is tested against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.bundle import ArtifactBundle
from model.search import ChildScorer, LiveRows, renormalise
from model.topk import ConstrainedRecommender, PromptBuilder, PromptSettings
from model.trie import PAD
from model.trie_mask import sid_token_table


class HFChildScorer:
    """Scores trie children with full forward passes over prompt + beam prefix (left-padded).

    Every valid child of a row gets its renormalised log-probability (nothing is truncated to
    a top-N as in vLLM), so the same scorer serves the top-K search and ``rank``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompts: list[list[int]],
        children_tokens: np.ndarray,
        *,
        pad_id: int,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.prompts = prompts
        self.children_tokens = children_tokens
        self.pad_id = pad_id
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, rows: LiveRows) -> np.ndarray:
        device = next(self.model.parameters()).device
        out = np.empty((len(rows.node), self.children_tokens.shape[1]), dtype=np.float64)
        for start in range(0, len(rows.node), self.batch_size):
            stop = start + self.batch_size
            seqs = [
                self.prompts[p] + prefix.tolist()
                for p, prefix in zip(
                    rows.prompt_index[start:stop], rows.prefix_tokens[start:stop], strict=True
                )
            ]
            length = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), length), dtype=torch.long)
            for i, seq in enumerate(seqs):
                ids[i, length - len(seq) :] = torch.tensor(seq)
                attention[i, length - len(seq) :] = 1
            positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
            logits = self.model(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
            ).logits[:, -1, :]
            children = self.children_tokens[rows.node[start:stop]]
            gathered = torch.gather(
                logits.float(), 1, torch.as_tensor(np.maximum(children, 0), device=device)
            )
            out[start:stop] = renormalise(gathered.cpu().numpy().astype(np.float64), children != PAD)
        return out


def hf_recommender(
    bundle: ArtifactBundle,
    *,
    model_dir: Path | None = None,
    beam_width: int = 20,
    max_batch: int = 16,
    prompt_settings: PromptSettings | None = None,
    device: str = "cpu",
) -> ConstrainedRecommender:
    """A ``Recommender`` for ``bundle`` that runs the model with transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = model_dir or bundle.model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, device_map=device)
    model.eval()
    children = bundle.trie.to_token_space(sid_token_table(model_dir, bundle.catalog.scheme))
    settings = prompt_settings or PromptSettings.for_bundle(bundle.manifest.extra)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def make_scorer(prompts: list[list[int]]) -> ChildScorer:
        return HFChildScorer(model, prompts, children, pad_id=pad_id)

    return ConstrainedRecommender(
        catalog=bundle.catalog,
        trie=bundle.trie,
        children_tokens=children,
        prompts=PromptBuilder(bundle.catalog, tokenizer, settings),
        make_scorer=make_scorer,
        beam_width=beam_width,
        max_batch=max_batch,
        model_version=bundle.version,
    )
