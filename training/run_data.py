"""What a fine-tuning run trains on: the next-item examples of the training split, the task
mixture built from them, and all of it as token ids.

Sampling happens before the model exists (the tiny model's tokenizer is trained on these
prompts); encoding after, with the model's tokenizer. One seeded ``random.Random`` draws both
samples (the next-item examples, then the packed sequences), so a run is reproducible.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.catalog import Catalog
from training.data import Example, InteractionData, leave_one_out
from training.encoding import SEQUENCE, Encoded, encode_samples, encode_sequences
from training.task_context import Sample, TaskContext, training_sequences
from training.task_mixture import NEXT_ITEM
from training.tasks import build_mixture
from training.train_config import TrainConfig


@dataclass
class RunSamples:
    """The sampled next-item examples and every task's samples, before tokenization."""

    examples: list[Example]
    mixture: dict[str, list[Sample]]
    rng: random.Random  # the run's sampler, also used by :func:`encode_run`


@dataclass
class EncodedRun:
    """The run's examples as token ids, how many each task contributed, and how long encoding took."""

    examples: list[Encoded]
    task_examples: dict[str, int]
    encode_s: float

    @property
    def next_item(self) -> list[Encoded]:
        """The next-item examples (prompts or packed sequences): what the annealing stage trains on."""
        return [e for e in self.examples if e.task in (NEXT_ITEM, SEQUENCE)]


def sample_tasks(
    data: InteractionData, catalog: Catalog, tokenizer_dir: Path, config: TrainConfig
) -> RunSamples:
    """Leave-one-out training examples (a seeded sample of ``max_train_examples``) and the task mixture."""
    examples = leave_one_out(data, max_history=config.history_len).train
    rng = random.Random(config.seed)
    if config.max_train_examples is not None and len(examples) > config.max_train_examples:
        examples = rng.sample(examples, config.max_train_examples)
    if not examples:
        raise ValueError(f"dataset {data.name} has no training examples (every user needs >= 3 items)")
    ctx = TaskContext.build(data, catalog, examples, tokenizer_dir, config.history_len)
    mixture = build_mixture(ctx, config.tasks, config.seed, with_titles=config.with_titles)
    return RunSamples(examples, mixture, rng)


def encode_run(
    data: InteractionData, samples: RunSamples, catalog: Catalog, tokenizer: Any, config: TrainConfig
) -> EncodedRun:
    """Token ids of every sample; with the ``sequence`` objective next-item trains as packed
    whole sequences (a seeded sample of ``max_train_examples`` of them) instead of prompts."""
    started = time.perf_counter()
    encoded: list[Encoded] = []
    mixture = samples.mixture
    counts: dict[str, int] = {}
    if config.objective == "sequence":
        sequences = list(training_sequences(data).values())
        packed = encode_sequences(sequences, catalog, tokenizer, config)
        if config.max_train_examples is not None and len(packed) > config.max_train_examples:
            packed = samples.rng.sample(packed, config.max_train_examples)
        encoded.extend(packed)
        counts[SEQUENCE] = len(packed)
        mixture = {task: task_samples for task, task_samples in mixture.items() if task != NEXT_ITEM}
    for task_samples in mixture.values():
        encoded.extend(encode_samples(task_samples, catalog, tokenizer, config))
    counts.update({task: len(task_samples) for task, task_samples in mixture.items()})
    return EncodedRun(encoded, counts, time.perf_counter() - started)
