"""Constrained top-K decode speed: genrec's engine against the arithmetic limit, HF generate and
the forward-pass floor.

Same model (SmolLM2-135M with the semantic-ID tokens added), same prompts (Beauty test-split
histories through the shared prompt template: the compact ID-only format by default, or
``--prompt titles`` for the numbered lines with titles), K = beam width = 20, 4-level IDs, the
12k-item Beauty trie. Prints and writes ms per user for

- ``genrec``: the serving engine (vLLM, level-synchronous search, trie logits processor) in
  its precision (``--dtype``, ENGINE_DTYPE's ``auto`` by default: bf16 where the CPU has it);
- ``limit``: the arithmetic limit, the FLOPs the search ran (``benchmarks/flops.py``: model
  shape, prefill tokens, rows scored per level) over the matmul rate measured in this run in
  the engine's precision; ``genrec_over_limit`` is the engine's distance to it;
- ``reference_fp32_titles``: genrec again on fp32 and titled prompts (the configuration the
  earlier figures were measured in), for the speed-up measured side by side;
- ``hf_generate``: transformers ``generate(num_beams=K, prefix_allowed_tokens_fn=trie)``;
- ``floor``: the bare forward passes, each prompt prefilled once, then one decode step per
  level over all K beams (KV cache reused, no search, no masking);
- ``vllm_beam_search``: vLLM's ``LLM.beam_search`` with the trie processor;

plus ``mask_share``, the share of genrec's engine time spent in the trie logits processor.
Weights are the base model's (speed does not depend on training); without ``--artifacts`` an
untrained bundle is built once under ``benchmarks/.cache``.

    python benchmarks/decode_speed.py --quick      # ~5 minutes on 2 CPU cores
    python benchmarks/decode_speed.py --compile    # all 32 users through every method, genrec's
                                                   # engine compiled as a long-running server runs it
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402
from benchmarks.flops import ModelShape, matmul_gflops, search_flops  # noqa: E402

DATASET = BEAUTY
CACHE = REPO / "benchmarks" / ".cache"
RESULT = RESULTS / "decode_speed.json"

logger = logging.getLogger("decode_speed")


PROMPTS = ("compact", "titles")


def build_bench_bundle(root: Path, data_dir: Path, prompt: str = "titles") -> Path:
    """Beauty semantic IDs + SmolLM2 with the SID tokens added, exported as a bundle (once)
    whose manifest asks for ``prompt``: the compact ID-only format or titled numbered lines.
    The item index is built once, in ``root``'s sibling ``decode_tok``, for every format."""
    from model.catalog import Catalog
    from training.base_model import add_sid_tokens, convert_smollm2
    from training.data import load_lcrec
    from training.export import export_run
    from training.finetune import MERGED_DIR, RUN_CATALOG, RUN_REPORT, RUN_TRIE
    from training.item_tokenizer import tokenize_dataset
    from training.tokenizer_config import ItemTokenizerConfig
    from training.train_config import TrainConfig

    bundle = root / "artifacts" / "bench"
    if (bundle / "manifest.json").is_file():
        return bundle
    shutil.rmtree(root, ignore_errors=True)
    tok = root.parent / "decode_tok"
    if (tok / RUN_CATALOG).is_file():
        catalog = Catalog.load(tok / RUN_CATALOG)
    else:
        catalog, _ = tokenize_dataset(load_lcrec(data_dir), ItemTokenizerConfig(), tok)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = convert_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    add_sid_tokens(model, tokenizer, catalog.scheme)
    run = root / "run"
    model.save_pretrained(run / MERGED_DIR)
    tokenizer.save_pretrained(run / MERGED_DIR)
    for name in (RUN_CATALOG, RUN_TRIE):
        shutil.copy(tok / name, run / name)
    if prompt == "titles":  # the titled numbered-lines prompts (~190 tokens on average)
        config = TrainConfig(
            base_model="smollm2", objective="prompt", prompt_format="lines", with_titles=True, prompt_align=32
        )
    else:  # the default: instruction tokens, then the history's IDs
        config = TrainConfig(base_model="smollm2", objective="sequence", prompt_format="compact")
    (run / RUN_REPORT).write_text(json.dumps({"dataset": "Beauty", "config": config.model_dump()}))
    export_run(run, root / "artifacts", "bench")
    return bundle


def bench_histories(data_dir: Path, users: int) -> list[list[str]]:
    from training.data import leave_one_out, load_lcrec

    return [list(e.history) for e in leave_one_out(load_lcrec(data_dir)).test[:users]]


def encode_prompts(bundle_dir: Path, histories: list[list[str]]) -> list[list[int]]:
    """The prompts exactly as the engine builds them (template, alignment, truncation)."""
    from transformers import AutoTokenizer

    from model.bundle import load_bundle
    from model.topk import PromptBuilder, PromptSettings

    bundle = load_bundle(bundle_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(bundle.model_dir))
    builder = PromptBuilder(bundle.catalog, tokenizer, PromptSettings.for_bundle(bundle.manifest.extra))
    return [builder.encode(history) for history in histories]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@dataclass
class EngineTimes:
    genrec_ms: float  # per user, the serving engine's full constrained search
    mask_share: float  # share of that time spent in the trie logits processor
    floor_ms: float  # per user, the same engine's bare forward passes
    results: list  # the top-K lists, checked for K distinct items
    prompts: list[list[int]]  # what the engine fed the model
    decode_rows: dict[int, int]  # rows scored after the prefill, by the tokens before their new one
    dtype: str  # the engine's precision


def time_engine(
    bundle_dir: Path,
    histories: list[list[str]],
    k: int,
    batch: int,
    compile: bool,
    dtype: str = "auto",
    floor: bool = True,
) -> EngineTimes:
    """The serving engine's speed, its processor share, the rows it scored, and (``floor``)
    the forward floor on its kernels."""
    # The engine core runs in this process so the processor's time can be measured.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from model.bundle import load_bundle
    from model.engine_config import EngineConfig
    from model.vllm_engine import VllmChildScorer, VllmRecommender
    from model.vllm_processor import TrieLogitsProcessor

    decode_rows: Counter[int] = Counter()
    score = VllmChildScorer.__call__

    def counted(self, rows):  # type: ignore[no-untyped-def]
        depth = rows.prefix_tokens.shape[1]
        if depth:  # level 0 is each prompt's prefill, counted from the prompts themselves
            decode_rows.update(len(self.prompts[p]) + depth for p in rows.prompt_index.tolist())
        return score(self, rows)

    VllmChildScorer.__call__ = counted  # type: ignore[method-assign]
    spent = {"mask": 0.0}
    for name in ("apply", "update_state"):
        original = getattr(TrieLogitsProcessor, name)

        def timed(self, *args, _original=original):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                spent["mask"] += time.perf_counter() - started

        setattr(TrieLogitsProcessor, name, timed)
    config = EngineConfig(beam_width=k, max_batch=batch, compile=compile, dtype=dtype).resolved()  # type: ignore[arg-type]
    try:
        recommender = VllmRecommender(load_bundle(bundle_dir), config)
        recommender.recommend(histories[:2], k)  # warm-up: first-call compilation and allocation
        recommender.llm.reset_prefix_cache()  # every timed run starts with no prompt cached
        spent["mask"] = 0.0
        decode_rows.clear()
        started = time.perf_counter()
        results = recommender.recommend(histories, k)
        wall = time.perf_counter() - started
    finally:
        VllmChildScorer.__call__ = score  # type: ignore[method-assign]
    prompts = [recommender.prompts.encode(h) for h in histories]
    recommender.llm.reset_prefix_cache()
    floor_ms = time_engine_floor(recommender.llm, prompts, k, recommender.trie.num_levels) if floor else 0.0
    recommender.close()
    return EngineTimes(
        1000 * wall / len(histories),
        spent["mask"] / wall,
        floor_ms,
        results,
        prompts,
        dict(decode_rows),
        config.dtype,
    )


def time_vllm_beam_search(bundle_dir: Path, prompts: list[list[int]], k: int) -> tuple[float, int]:
    """ms/user of vLLM's own ``LLM.beam_search`` with the trie processor, and how many of the
    returned lists hold k distinct catalog items.

    ``beam_search`` builds its per-step SamplingParams itself (no ``extra_args``) and puts the
    beam's tokens into the prompt, so a subclass of the processor finds each request's trie
    node from the tokens that follow the user's prompt.
    """
    from vllm.sampling_params import BeamSearchParams

    from benchmarks.hf_generate import TokenTrie
    from model.bundle import load_bundle
    from model.engine_config import EngineConfig
    from model.vllm_engine import build_llm, shutdown_llm
    from model.vllm_processor import NODE_KEY, TrieLogitsProcessor

    originals = {tuple(p) for p in prompts}
    lengths = sorted({len(p) for p in prompts}, reverse=True)  # the longest matching prompt wins

    class PromptTailTrieProcessor(TrieLogitsProcessor):
        def update_state(self, batch_update):  # type: ignore[no-untyped-def]
            if batch_update is not None:
                for _, params, prompt, _ in batch_update.added:
                    if params is not None and NODE_KEY not in (params.extra_args or {}):
                        params.extra_args = {**(params.extra_args or {}), NODE_KEY: self.node_of(prompt)}
            super().update_state(batch_update)

        def node_of(self, prompt: list[int] | None) -> int:
            """The trie node the beam's tokens spell: what follows the user's own prompt (a
            compact prompt itself ends in ID tokens, so the tail cannot be told by its tokens)."""
            if not hasattr(self, "token_trie"):
                self.token_trie = TokenTrie(self.mask.trie, self.mask.children.cpu().numpy())
            prompt = prompt or []
            for length in lengths:
                if tuple(prompt[:length]) in originals:
                    return self.token_trie.walk(prompt[length:])
            raise ValueError("a beam_search prompt that starts with none of the users' prompts")

    bundle = load_bundle(bundle_dir)
    llm = build_llm(bundle, EngineConfig(beam_width=k), max_logprobs=2 * k, processor=PromptTailTrieProcessor)
    params = BeamSearchParams(beam_width=k, max_tokens=bundle.trie.num_levels)
    llm.beam_search([{"prompt_token_ids": prompts[0]}], params)  # type: ignore[attr-defined]  # warm-up
    llm.reset_prefix_cache()  # type: ignore[attr-defined]
    started = time.perf_counter()
    outputs = llm.beam_search([{"prompt_token_ids": p} for p in prompts], params)  # type: ignore[attr-defined]
    wall = time.perf_counter() - started
    token_trie = TokenTrie.of_bundle(bundle)
    complete = 0
    for prompt, output in zip(prompts, outputs, strict=True):
        ends = [token_trie.walk(sequence.tokens[len(prompt) :]) for sequence in output.sequences]
        complete += len({node for node in ends if token_trie.is_leaf(node)}) == k
    shutdown_llm(llm)
    return 1000 * wall / len(prompts), complete


def time_engine_floor(llm, prompts: list[list[int]], k: int, levels: int) -> float:  # type: ignore[no-untyped-def]
    """ms/user of the same engine's bare forward passes: each prompt prefilled once, then K
    sequences per prompt that decode one token per remaining level on the cached prompt. No
    logprobs, no processor, no search."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    started = time.perf_counter()
    prefill = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
    firsts = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], prefill, use_tqdm=False)
    beams = [
        TokensPrompt(prompt_token_ids=[*prompt, first.outputs[0].token_ids[0]])
        for prompt, first in zip(prompts, firsts, strict=True)
        for _ in range(k)
    ]
    decode = SamplingParams(
        max_tokens=levels - 1,
        min_tokens=levels - 1,
        ignore_eos=True,
        temperature=0.0,  # greedy costs the same forward passes (a per-request seed fails on CPU)
        detokenize=False,
    )
    llm.generate(beams, decode, use_tqdm=False)
    return 1000 * (time.perf_counter() - started) / len(prompts)


def load_hf(bundle_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    return AutoModelForCausalLM.from_pretrained(str(bundle_dir / "model"), dtype=torch.float32).eval()


def time_floor(model, prompts: list[list[int]], k: int, levels: int, batch: int) -> float:  # type: ignore[no-untyped-def]
    """ms/user of prefill once + one K-beam decode step per remaining level, KV cache reused."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            length = max(map(len, chunk))
            ids = torch.zeros((len(chunk), length), dtype=torch.long)
            mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, prompt in enumerate(chunk):
                ids[row, length - len(prompt) :] = torch.tensor(prompt)
                mask[row, length - len(prompt) :] = 1
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            mask = mask.repeat_interleave(k, dim=0)
            token = out.logits[:, -1].argmax(-1).repeat_interleave(k)[:, None]
            for _ in range(levels - 1):
                mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                out = model(
                    input_ids=token,
                    attention_mask=mask,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = out.past_key_values
                token = out.logits[:, -1].argmax(-1)[:, None]
    return 1000 * (time.perf_counter() - started) / len(prompts)


def time_hf_generate(model, bundle_dir: Path, prompts: list[list[int]], k: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """ms/user of ``generate(num_beams=k)`` with a trie ``prefix_allowed_tokens_fn``, one user at a
    time, and how many of the returned lists hold k distinct catalog items."""
    from benchmarks.hf_generate import TokenTrie, hf_generate_topk
    from model.bundle import load_bundle
    from model.trie import PAD

    token_trie = TokenTrie.of_bundle(load_bundle(bundle_dir))
    started = time.perf_counter()
    outputs = [hf_generate_topk(model, token_trie, prompt, k) for prompt in prompts]
    wall = time.perf_counter() - started
    complete = sum(len({g.item_index for g in out} - {PAD}) == k for out in outputs)
    return 1000 * wall / len(prompts), complete


def arithmetic(bundle_dir: Path, engine: EngineTimes, gflops: float) -> dict[str, float]:
    """FLOPs per user of what the engine ran, and the ms/user they take at ``gflops``."""
    shape = ModelShape.of_checkpoint(bundle_dir / "model")
    flops = search_flops(shape, [len(p) for p in engine.prompts], engine.decode_rows) / len(engine.prompts)
    return {"gflop_per_user": flops / 1e9, "limit_ms": 1000 * flops / (gflops * 1e9)}


def main() -> None:
    from model.engine_config import EngineConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer users: about 5 minutes on 2 cores")
    parser.add_argument("--artifacts", type=Path, help="a SmolLM2 bundle to use instead of the built one")
    parser.add_argument("--data", type=Path, default=DATASET)
    parser.add_argument(
        "--prompt", choices=PROMPTS, default="compact", help="the built bundle's prompt format"
    )
    parser.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="the engine's (ENGINE_DTYPE)"
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip genrec on fp32 and titled prompts (the reference)"
    )
    parser.add_argument("--users", type=int, help="users for genrec and the floor (default 32, quick 16)")
    parser.add_argument(
        "--hf-users",
        type=int,
        help="users for HF generate, the first of the genrec users (default all, quick 4)",
    )
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="genrec engine batch (users per search)")
    parser.add_argument(
        "--compile", action="store_true", help="run genrec's engine with torch.compile (ENGINE_COMPILE=true)"
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    users = args.users or (16 if args.quick else 32)
    hf_users = args.hf_users or (4 if args.quick else users)
    dtype = EngineConfig(dtype=args.dtype).resolved().dtype
    reference = not args.no_reference and (args.prompt, dtype) != ("titles", "float32")

    # The matmul rates first, before any engine binds this process's OpenMP threads.
    rates = {d: matmul_gflops(d) for d in dict.fromkeys([dtype, *(["float32"] if reference else [])])}
    logger.info("2048x2048 matmul: %s", ", ".join(f"{d} {r:.0f} GFLOPS" for d, r in rates.items()))
    bundle_dir = args.artifacts or build_bench_bundle(
        CACHE / f"decode_bundle_{args.prompt}", args.data, args.prompt
    )
    histories = bench_histories(args.data, users)
    prompts = encode_prompts(bundle_dir, histories)
    # The HF runs go first: the in-process vLLM engine re-binds this process's OpenMP threads.
    model = load_hf(bundle_dir)
    levels = len(json.loads((bundle_dir / "manifest.json").read_text())["sid_codebook_sizes"])
    hf_floor_ms = time_floor(model, prompts, args.k, levels, batch=4)
    logger.info("floor with transformers: %.0f ms/user (%d torch threads)", hf_floor_ms, torch_threads())
    hf_ms, hf_complete = time_hf_generate(model, bundle_dir, prompts[:hf_users], args.k)
    logger.info("hf generate: %.0f ms/user, %d/%d with k distinct items", hf_ms, hf_complete, hf_users)
    del model
    engine = time_engine(bundle_dir, histories, args.k, batch=args.batch, compile=args.compile, dtype=dtype)
    genrec_ms, mask_share, floor_ms, results = (
        engine.genrec_ms,
        engine.mask_share,
        engine.floor_ms,
        engine.results,
    )
    limit = arithmetic(bundle_dir, engine, rates[dtype])
    logger.info(
        "genrec: %.0f ms/user (%s, mask share %.2f%%), arithmetic limit %.1f ms/user (%.2f GFLOP/user)",
        genrec_ms, dtype, 100 * mask_share, limit["limit_ms"], limit["gflop_per_user"],
    )  # fmt: skip
    logger.info("floor on the engine's kernels: %.0f ms/user", floor_ms)
    assert engine.prompts == prompts, "the engine must see the prompts the baselines saw"
    beam_ms, beam_complete = time_vllm_beam_search(bundle_dir, prompts, args.k)
    logger.info("vLLM beam_search: %.0f ms/user, %d/%d with k distinct items", beam_ms, beam_complete, users)
    assert all(len({i.item_id for i in row}) == len(row) == args.k for row in results), "not K distinct items"
    reference_report: dict[str, object] | None = None
    if reference:
        titles_dir = build_bench_bundle(CACHE / "decode_bundle_titles", args.data, "titles")
        ref = time_engine(
            titles_dir,
            histories,
            args.k,
            batch=args.batch,
            compile=args.compile,
            dtype="float32",
            floor=False,
        )
        ref_limit = arithmetic(titles_dir, ref, rates["float32"])
        logger.info(
            "reference (fp32, titles): %.0f ms/user, limit %.1f", ref.genrec_ms, ref_limit["limit_ms"]
        )
        reference_report = {
            "genrec_ms_per_user": ref.genrec_ms,
            "limit_ms_per_user": ref_limit["limit_ms"],
            "gflop_per_user": ref_limit["gflop_per_user"],
            "genrec_over_limit": ref.genrec_ms / ref_limit["limit_ms"],
            "mean_prompt_tokens": sum(map(len, ref.prompts)) / len(ref.prompts),
            "speedup_of_genrec": ref.genrec_ms / genrec_ms,
        }
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    prompt_settings = manifest.get("extra", {})
    report = {
        "ms_per_user": {
            "genrec": genrec_ms,
            "limit": limit["limit_ms"],
            "hf_generate": hf_ms,
            "vllm_beam_search": beam_ms,
            "floor": floor_ms,
        },
        # "floor" is the lower of the two floors: the engine's own kernels are the faster ones here
        "floors": {"vllm_kernels": floor_ms, "transformers": hf_floor_ms},
        "arithmetic": {
            "dtype": dtype,
            "matmul_gflops": rates,
            "gflop_per_user": limit["gflop_per_user"],
            "decode_rows_per_user": sum(engine.decode_rows.values()) / users,
        },
        "vllm_beam_search_complete_lists": f"{beam_complete}/{users}",
        "hf_generate_complete_lists": f"{hf_complete}/{hf_users}",
        "ratios": {
            "genrec_over_limit": genrec_ms / limit["limit_ms"],
            "genrec_over_floor": genrec_ms / min(floor_ms, hf_floor_ms),
            "hf_generate_over_genrec": hf_ms / genrec_ms,
        },
        "reference_fp32_titles": reference_report,
        "mask_share": mask_share,
        "config": {
            "model": f"SmolLM2-135M-Instruct + SID tokens (engine {dtype}; HF columns float32)",
            "dataset": "amazon2014_beauty_p5order (test-split histories)",
            "prompt": str(prompt_settings.get("prompt_format", "lines"))
            + (" with titles" if prompt_settings.get("with_titles") else ""),
            "k": args.k,
            "levels": levels,
            "items": manifest["num_items"],
            "users": users,
            "genrec_batch": args.batch,
            "genrec_compile": args.compile,
            "hf_generate_users": hf_users,
            "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
            "hf_generate_mean_prompt_tokens": sum(map(len, prompts[:hf_users])) / hf_users,
            "cpu_count": os.cpu_count(),
        },
        "command": " ".join(["python benchmarks/decode_speed.py", *sys.argv[1:]]),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
