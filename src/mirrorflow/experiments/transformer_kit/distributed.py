"""Scale-out of the transformer experiments: ranks, devices and all-reduce under ``torchrun``.

:func:`dist_env` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` as set by ``torchrun`` or ``accelerate
launch``; with ``WORLD_SIZE > 1`` it initializes ``torch.distributed`` (NCCL on GPUs, Gloo on CPUs) and the
training loop wraps the model in ``DistributedDataParallel``, splits every batch across ranks and
all-reduces the evaluation sums. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistEnv:
    """Where this process runs: rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


_ENV: DistEnv | None = None


def dist_env(device: str = "auto") -> DistEnv:
    """This process's :class:`DistEnv`; initializes ``torch.distributed`` once when ``WORLD_SIZE > 1``.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``
    (:func:`mirrorflow.runtime.resolve_device`; each rank takes the CUDA device of its ``LOCAL_RANK``).
    """
    global _ENV
    import torch

    from ...runtime import resolve_device

    use_cuda = resolve_device(device).type == "cuda"
    world = _env_count("WORLD_SIZE", 1, low=1)
    rank = _env_count("RANK", 0, low=0, high=world - 1)
    local = _env_count("LOCAL_RANK", 0, low=0)
    dev = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _ENV = DistEnv(rank=rank, world=world, local_rank=local, device=dev)
    return _ENV


def _env_count(name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer environment variable set by ``torchrun``; a bad value names the variable (one line)."""
    from ...config import check_count

    raw = os.environ.get(name)
    return default if raw is None else check_count(f"environment variable {name}", raw, low=low, high=high)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a short list of floats over all ranks (identity on one process)."""
    if not env.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
