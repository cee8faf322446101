"""The serving engine: vLLM runs the merged model, the trie processor masks, the core searches.

Each trie level is one ``LLM.generate`` call over all live beams of the batch, each request
asking for one token with the trie mask applied and the top ``beam_width`` processed
log-probabilities returned. Prompts are shared by all beams of a user, so vLLM's prefix cache
computes each prompt once per batch and every later level only runs the beam's new tokens.
Ranking runs the same level steps along the candidates' paths, each row asking for every valid
child of its node, so the engine allows ``max(beam_width, trie.max_children)`` log-probs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

from model.bundle import ArtifactBundle
from model.engine_config import EngineConfig, usable_cores
from model.search import NEG_INF, ChildScorer, LiveRows
from model.topk import ConstrainedRecommender, PromptBuilder, PromptSettings
from model.trie import PAD
from model.trie_mask import sid_token_table
from model.vllm_processor import NODE_KEY, TrieLogitsProcessor

logger = logging.getLogger(__name__)


class VllmChildScorer:
    """Scores the children of every live row with one vLLM generate call.

    vLLM returns only the top ``num_logprobs`` processed log-probabilities of a row; the rest
    come back as -inf. That suffices for the top-K search (a child outside its beam's top
    ``beam_width`` cannot make the prompt's top ``beam_width``). ``num_logprobs=None`` asks
    each row for as many as its node has valid children, i.e. all of them, as ranking needs.
    The trie mask leaves only valid children finite, so the top ones are exactly those.
    """

    def __init__(
        self, llm: object, prompts: list[list[int]], children_tokens: np.ndarray, num_logprobs: int | None
    ) -> None:
        self.llm = llm
        self.prompts = prompts
        self.children_tokens = children_tokens
        self.num_logprobs = num_logprobs

    def __call__(self, rows: LiveRows) -> np.ndarray:
        requests = [
            TokensPrompt(prompt_token_ids=self.prompts[p] + prefix.tolist())
            for p, prefix in zip(rows.prompt_index, rows.prefix_tokens, strict=True)
        ]
        if self.num_logprobs is None:
            wanted = (self.children_tokens[rows.node] != PAD).sum(axis=1).tolist()
        else:
            wanted = [self.num_logprobs] * len(rows.node)
        params = [
            SamplingParams(
                max_tokens=1,
                temperature=0.0,
                logprobs=int(count),
                detokenize=False,  # only token ids are read; decoding R x W logprob tokens is waste
                extra_args={NODE_KEY: int(node)},
            )
            for node, count in zip(rows.node, wanted, strict=True)
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)  # type: ignore[attr-defined]
        # Flatten the returned (row, token, logprob) triples, then find each token's child slot
        # with one vectorised comparison against the rows' children.
        row_ids: list[int] = []
        tokens: list[int] = []
        logps: list[float] = []
        for row, output in enumerate(outputs):
            for token, logprob in output.outputs[0].logprobs[0].items():
                row_ids.append(row)
                tokens.append(token)
                logps.append(logprob.logprob)
        result = np.full((len(rows.node), self.children_tokens.shape[1]), NEG_INF)
        if not row_ids:
            return result
        r = np.asarray(row_ids)
        t = np.asarray(tokens)
        children = self.children_tokens[rows.node[r]]
        hit = (children == t[:, None]) & (children != PAD)
        found = hit.any(axis=1)
        slot = hit.argmax(axis=1)
        result[r[found], slot[found]] = np.asarray(logps)[found]
        return result


def _configure_cpu_env(config: EngineConfig) -> None:
    """Give vLLM's CPU worker every requested core.

    vLLM's default binding reserves one core for the API process and, on a 2-core machine,
    leaves the model a single thread: measured here that halves decode speed. The API process
    mostly waits on the engine, so the worker gets all cores. Values already in the
    environment win.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(config.kv_cache_gb))))
    cores = usable_cores()[: config.threads]
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def build_llm(
    bundle: ArtifactBundle,
    config: EngineConfig,
    max_logprobs: int,
    processor: type = TrieLogitsProcessor,
    *,
    beams: int | None = None,
) -> object:
    """Start vLLM on the bundle's merged model with the trie processor installed.

    ``max_logprobs`` is the most log-probabilities one request may ask for; vLLM only checks
    requests against it (its sampler's top-k takes the batch's largest actual request), so
    allowing ranking's wide requests costs the top-K search nothing. ``beams`` (the live rows
    per user of a top-K level step; default ``max_logprobs``) sizes vLLM's running batch.
    """
    config = config.resolved()
    assert config.max_batch is not None
    cpu = config.device == "cpu"
    if cpu:
        _configure_cpu_env(config)
    else:
        # TrieLogitsProcessor implements the V1 processor interface; GPU vLLM >= 0.32 would
        # otherwise run Model Runner V2, whose interface differs.
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    memory: dict[str, Any] = {} if cpu else {"gpu_memory_utilization": config.gpu_memory_utilization}
    return LLM(
        model=str(bundle.model_dir),
        dtype=config.dtype,
        max_model_len=config.max_prompt_tokens + bundle.trie.num_levels + 8,
        max_num_seqs=max(config.max_batch * (beams or max_logprobs), 256),
        max_logprobs=max_logprobs,
        logprobs_mode="processed_logprobs",
        logits_processors=[processor],
        enable_prefix_caching=True,
        block_size=config.block_size,
        seed=config.seed,
        enforce_eager=not config.compile,
        **memory,
    )


def shutdown_llm(llm: object) -> None:
    """Stop an ``LLM``'s engine core (and its worker processes) now."""
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None:
        engine_core.shutdown()


class VllmRecommender(ConstrainedRecommender):
    """A ``Recommender`` backed by vLLM; one instance owns one engine."""

    def __init__(self, bundle: ArtifactBundle, config: EngineConfig) -> None:
        config = config.resolved()
        assert config.max_batch is not None
        beam_width = config.beam_width or 20
        # Ranking asks a row for every child of its node, so the engine must allow that many.
        max_logprobs = max(beam_width, bundle.trie.max_children)
        self.llm = build_llm(bundle, config, max_logprobs=max_logprobs, beams=beam_width)
        tokenizer = self.llm.get_tokenizer()  # type: ignore[attr-defined]
        children = bundle.trie.to_token_space(sid_token_table(bundle.model_dir, bundle.catalog.scheme))
        prompt_settings = PromptSettings.for_bundle(
            bundle.manifest.extra, history_len=config.history_len, max_prompt_tokens=config.max_prompt_tokens
        )
        block_size = config.block_size
        assert block_size is not None
        if prompt_settings.align > 1 and prompt_settings.align % block_size:  # compact prompts: never padded
            logger.warning(
                "prompts are aligned to %d tokens but KV blocks hold %d: beams cannot share the "
                "prompt's last block, decoding will be slower",
                prompt_settings.align,
                block_size,
            )
        llm = self.llm

        def make_scorer(prompts: list[list[int]]) -> ChildScorer:
            return VllmChildScorer(llm, prompts, children, num_logprobs=beam_width)

        def make_ranking_scorer(prompts: list[list[int]]) -> ChildScorer:
            return VllmChildScorer(llm, prompts, children, num_logprobs=None)

        super().__init__(
            catalog=bundle.catalog,
            trie=bundle.trie,
            children_tokens=children,
            prompts=PromptBuilder(bundle.catalog, tokenizer, prompt_settings),
            make_scorer=make_scorer,
            beam_width=beam_width,
            max_batch=config.max_batch,
            model_version=bundle.version,
            make_ranking_scorer=make_ranking_scorer,
        )
        logger.info("vLLM engine ready for %s (beam width %d, %s)", bundle.version, beam_width, config.dtype)

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        shutdown_llm(self.llm)
