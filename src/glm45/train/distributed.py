"""Process groups and model wrapping for data-parallel training (DDP or FSDP2).

The model code knows nothing of parallelism; this module applies it from outside:
  * `init_distributed` joins the process group torchrun describes (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT), NCCL on GPU and gloo on CPU; a single process needs nothing;
  * `parallelize` wraps the model: DDP (every rank holds the whole model; gradients are
    all-reduced) or FSDP2 (`fully_shard` per decoder layer, the MTP layer and the root, so
    parameters become DTensors sharded on dim 0 and gradients are reduce-scattered).
Both average gradients over ranks, which the trainer undoes by scaling its loss by the world
size (its losses are sums over the global batch divided by global counts).
The optimizer must be built *after* `parallelize`: FSDP2 swaps the parameters for DTensors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

PARALLEL_MODES = ("auto", "none", "ddp", "fsdp")


class DistributedConfigError(ValueError):
    """A parallelism setting that cannot run here."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over all ranks, on t's device (`t` itself in a single process). The
        collective runs on this rank's device, which NCCL needs."""
        if not self.is_distributed:
            return t
        on_device = t.to(self.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        return on_device.to(t.device)


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Join (or reuse) the default process group when there are several ranks.

    With no WORLD_SIZE in the environment (a plain `python` run) and no initialised group this
    is a single process. An already-initialised group (e.g. from torch.multiprocessing) is used
    as it is."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedConfigError(f"device {dev} requested but CUDA is not available")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def resolve_parallel(mode: str, info: DistInfo) -> str:
    if mode not in PARALLEL_MODES:
        raise DistributedConfigError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if mode == "auto":
        return "ddp" if info.is_distributed else "none"
    if mode != "none" and not info.is_distributed:
        return "none"  # one process: nothing to wrap, same arithmetic
    if mode == "none" and info.is_distributed:
        raise DistributedConfigError(f"{info.world_size} processes need parallel mode ddp or fsdp, not 'none'")
    return mode


def parallelize(model: nn.Module, mode: str, info: DistInfo) -> nn.Module:
    """Move the model to `info.device` and wrap it for `mode` ("auto" | "none" | "ddp" | "fsdp")."""
    mode = resolve_parallel(mode, info)
    model.to(info.device)
    if mode == "none":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Router balance biases are buffers every rank updates identically from all-reduced
        # loads, so forward passes need no buffer sync (DDP still syncs once, at wrap time).
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids, forward_sync_buffers=False)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in sharding_units(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sharding_units(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP2 shards (and gathers) one at a time: each decoder layer and the MTP layer."""
    inner = getattr(model, "model", None)
    blocks = list(getattr(inner, "layers", []))
    if getattr(model, "mtp", None) is not None:
        blocks.append(model.mtp)
    return blocks


def unwrap(model: nn.Module) -> nn.Module:
    """The model under a DDP wrapper (FSDP2 modules are the model itself)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter of a backward when `enabled` is False (every
    micro-batch of an accumulation but the last); gradients accumulate locally instead."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if enabled:
        yield
    elif isinstance(model, DDP):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
