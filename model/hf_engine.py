"""Reference engine on plain transformers: the same constrained search, scored by HF forward passes.

Used where vLLM is not available (the GPU training machine, validation during training) and
as the ground truth the vLLM engine is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from model.bundle import ArtifactBundle
from model.search import ChildScorer, LiveRows, renormalise
from model.topk import ConstrainedRecommender, PromptBuilder, PromptSettings
from model.trie import PAD
from model.trie_mask import sid_token_table


class HFChildScorer:
    """Scores trie children with transformers forward passes, every prompt run once.

    The first call runs the batch's prompts (left-padded, ``batch_size`` at a time) and keeps
    their KV cache and last-position logits; the first level is scored from those logits, and
    every later level runs only each row's beam prefix (at most num_levels - 1 tokens) on top
    of its prompt's cache. That is what makes the reference engine usable for evaluation and
    validation on a GPU without vLLM: a user costs one prompt, not one prompt per beam and level.

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
        self._prompt_state: _PromptState | None = None

    @torch.inference_mode()
    def __call__(self, rows: LiveRows) -> np.ndarray:
        state = self._prompt_state or self._run_prompts()
        self._prompt_state = state
        out = np.empty((len(rows.node), self.children_tokens.shape[1]), dtype=np.float64)
        for start in range(0, len(rows.node), self.batch_size):
            stop = start + self.batch_size
            index = torch.as_tensor(rows.prompt_index[start:stop], device=state.device)
            prefix = rows.prefix_tokens[start:stop]
            if prefix.shape[1] == 0:
                logits = state.last_logits.index_select(0, index)
            else:
                logits = self._extend(state, index, torch.as_tensor(prefix, device=state.device))
            children = self.children_tokens[rows.node[start:stop]]
            gathered = torch.gather(
                logits.float(), 1, torch.as_tensor(np.maximum(children, 0), device=state.device)
            )
            out[start:stop] = renormalise(gathered.cpu().numpy().astype(np.float64), children != PAD)
        return out

    def _run_prompts(self) -> _PromptState:
        """Every prompt left-padded to the longest, run in chunks; their caches concatenated."""
        device = next(self.model.parameters()).device
        length = max(len(p) for p in self.prompts)
        ids = torch.full((len(self.prompts), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(self.prompts), length), dtype=torch.long)
        for i, prompt in enumerate(self.prompts):
            ids[i, length - len(prompt) :] = torch.tensor(prompt)
            attention[i, length - len(prompt) :] = 1
        ids, attention = ids.to(device), attention.to(device)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        keys: list[list[torch.Tensor]] = []
        values: list[list[torch.Tensor]] = []
        last: list[torch.Tensor] = []
        for start in range(0, len(self.prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            output = self.model(
                input_ids=ids[chunk],
                attention_mask=attention[chunk],
                position_ids=positions[chunk],
                use_cache=True,
                logits_to_keep=1,
            )
            last.append(output.logits[:, -1, :])
            for layer, (key, value, *_) in enumerate(output.past_key_values):
                if layer == len(keys):
                    keys.append([])
                    values.append([])
                keys[layer].append(key)
                values[layer].append(value)
        return _PromptState(
            device=device,
            attention=attention,
            next_position=attention.sum(dim=1),
            last_logits=torch.cat(last),
            keys=[torch.cat(k) for k in keys],
            values=[torch.cat(v) for v in values],
        )

    def _extend(self, state: _PromptState, index: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Last-position logits of prompt ``index[r]`` + ``prefix[r]`` for each row ``r``."""
        cache = DynamicCache(
            ddp_cache_data=[
                (k.index_select(0, index), v.index_select(0, index))
                for k, v in zip(state.keys, state.values, strict=True)
            ]
        )
        depth = prefix.shape[1]
        attention = torch.cat(
            [state.attention.index_select(0, index), torch.ones_like(prefix, dtype=torch.long)], dim=1
        )
        offsets = torch.arange(depth, device=state.device)
        positions = state.next_position.index_select(0, index)[:, None] + offsets[None, :]
        output = self.model(
            input_ids=prefix,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1, :]


@dataclass(frozen=True)
class _PromptState:
    """One batch's prompts after their forward pass: what every level's rows extend."""

    device: torch.device
    attention: torch.Tensor  # [P, L] left padding
    next_position: torch.Tensor  # [P] position of the first token after each prompt
    last_logits: torch.Tensor  # [P, vocab] logits at each prompt's last token
    keys: list[torch.Tensor]  # per layer [P, heads, L, head_dim]
    values: list[torch.Tensor]


def hf_recommender(
    bundle: ArtifactBundle,
    *,
    model_dir: Path | None = None,
    beam_width: int = 20,
    max_batch: int = 16,
    prompt_settings: PromptSettings | None = None,
    device: str = "cpu",
    rows: int = 64,
) -> ConstrainedRecommender:
    """A ``Recommender`` for ``bundle`` that runs the model with transformers.

    ``max_batch`` users share one constrained search (their prompts run once, together);
    ``rows`` is how many sequences (prompts, then beam rows) go through one forward pass: a
    GPU wants hundreds, 2 CPU threads a few dozen.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = model_dir or bundle.model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, device_map=device)
    model.eval()
    children = bundle.trie.to_token_space(sid_token_table(model_dir, bundle.catalog.scheme))
    settings = prompt_settings or PromptSettings.for_bundle(bundle.manifest.extra)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def make_scorer(prompts: list[list[int]]) -> ChildScorer:
        return HFChildScorer(model, prompts, children, pad_id=pad_id, batch_size=rows)

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
