"""Data-parallel training over the processes ``accelerate launch`` starts (one per device or core).

Every process reads the same seeded batch order (``training.trainer``) and takes its own
contiguous slice of each global batch (``config.batch_size`` examples in all, so the number of
steps and the loss curve do not depend on the number of processes). The loss is the sum over a
slice's labelled tokens divided by the labelled tokens of the whole global batch, so summing the
processes' gradients gives exactly the gradient of the one-process loss.

The gradients are summed explicitly after ``backward`` (one flat all-reduce per optimizer step)
instead of wrapping the model in ``DistributedDataParallel``: the loss (``training.loss``) runs
the decoder and the head directly, never the module's ``forward``, and DDP only arms its
gradient reducer inside ``forward``. Accelerate provides the process group (gloo on CPU, NCCL on
GPU), the device of each process and the collectives.

Only the main process validates, writes checkpoints, the merged model and the run report; the
others follow its decisions (early stop, time budget) through a broadcast after every step.
A single process (no ``WORLD_SIZE`` > 1 in the environment) never imports accelerate and every
method here is a no-op, so a plain ``genrec train`` runs exactly as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

from training.devices import pick_device, training_device

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Non-main processes wait in a collective while the main process validates or saves; a long
# validation on CPU must not trip the process group's default 30-minute timeout.
COLLECTIVE_TIMEOUT = timedelta(hours=4)


def world_size_from_env() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True in a plain run and in the rank-0 process of a launched one."""
    return int(os.environ.get("RANK", "0") or 0) == 0


class DataParallel:
    """The processes of one training run: this one's rank, the shard it trains on, the collectives.

    ``DataParallel()`` is the single process: nothing is shared and nothing is imported.
    """

    def __init__(self, accelerator: Any | None = None) -> None:
        self.accelerator = accelerator
        self.size = 1 if accelerator is None else int(accelerator.num_processes)
        self.rank = 0 if accelerator is None else int(accelerator.process_index)
        # where the collectives' own tensors live: NCCL reduces CUDA tensors only
        self.collective_device = torch.device("cpu" if accelerator is None else accelerator.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, name: str) -> torch.device:
        """This process's training device: ``training_device(name)``, on this process's GPU when
        several processes share a machine."""
        device = training_device(name)
        if self.accelerator is not None and device.type == "cuda":
            return torch.device(self.accelerator.device)
        return device

    def shard(self, batch: Sequence[T]) -> list[T]:
        """This process's contiguous slice of a global batch (sizes differ by at most one; a
        batch smaller than the world leaves some processes an empty slice)."""
        if not self.distributed:
            return list(batch)
        n = len(batch)
        return list(batch[self.rank * n // self.size : (self.rank + 1) * n // self.size])

    def sum_int(self, value: int) -> int:
        """``value`` summed over the processes (labelled tokens of a global batch)."""
        if not self.distributed:
            return value
        count = torch.tensor([value], dtype=torch.long, device=self.collective_device)
        return int(self._sum(count).item())

    def sum_float(self, value: torch.Tensor) -> float:
        """A scalar tensor summed over the processes, as a float (the global batch's loss)."""
        if not self.distributed:
            return float(value)
        return float(self._sum(value.detach().reshape(1).double()).item())

    def sync_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace every gradient by its sum over the processes, in one flat all-reduce (a
        parameter without a gradient, after an empty slice, counts as zeros)."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self._sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for param, grad in zip(params, grads, strict=True):
            count = grad.numel()
            param.grad = flat[offset : offset + count].view_as(grad).to(grad.dtype)
            offset += count

    def broadcast_weights(self, model: torch.nn.Module) -> None:
        """Every process starts from the main process's weights (random LoRA and ID-row init
        included), so identical gradients keep them identical."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` run on the main process only (it writes files), its result sent to all."""
        if not self.distributed:
            return make()
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [make() if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def main_decides(self, value: T) -> T:
        """The main process's ``value`` on every process (whether and why a stage stops)."""
        return self.from_main(lambda: value)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Tear the process group down (a clean exit, without torch's leak warning)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def data_parallel(device_name: str) -> DataParallel:
    """The run's processes: one unless a launcher set ``WORLD_SIZE`` > 1, then an Accelerator
    over them (gloo when training on CPU, where accelerate must be told ``cpu=True``)."""
    if world_size_from_env() <= 1:
        return DataParallel()
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = pick_device(device_name).type == "cpu"
    accelerator = Accelerator(
        cpu=cpu, mixed_precision="no", kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)]
    )
    world = DataParallel(accelerator)
    logger.info(
        "data-parallel training: process %d of %d (%s)", world.rank, world.size, accelerator.distributed_type
    )
    return world
