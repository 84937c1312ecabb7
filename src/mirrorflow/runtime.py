"""Where and how a run computes: the device, the number of threads, the floating-point dtype and the
mixed precision of the transformer experiments. Every experiment and command resolves these here.

* **Device** — ``device=auto|cpu|cuda|cuda:K``. ``auto`` is ``cuda`` when torch sees a CUDA device, else
  ``cpu``. :func:`resolve_device` refuses an unknown name, or ``cuda`` on a machine without CUDA, with one
  line naming the key the user typed. Inside :func:`planning` (``--dry-run``) the name is checked but not the
  machine, so a plan meant for a GPU machine can be checked on a laptop.
* **Threads** — ``threads=N`` torch intra-op threads (``0``: torch's own setting); :func:`torch_threads`
  scopes it to a block, :func:`set_threads` sets it for the process (a worker).
* **dtype** — ``dtype=float64|float32`` of the small experiments' tensors (:func:`resolve_dtype`).
* **Precision** — ``precision=f32|bf16|auto`` of the transformer experiments:

  - ``f32``: everything in float32 (the default; the numbers of every earlier run).
  - ``bf16``: the forward and backward passes run under ``torch.autocast`` in bfloat16. What is *trained*
    stays float32: the trainable weights, the optimizer state, λ_t and a_t, and the spectral metrics. For LoRA
    the frozen pretrained weights are also *stored* in bfloat16 (:func:`freeze_in_bf16`).
  - ``auto``: ``bf16`` where the hardware multiplies bfloat16 natively (a CUDA device with bfloat16 support,
    or a CPU with AVX512-BF16 or AMX tiles), ``f32`` elsewhere. On a CPU without them (AVX2 only) bfloat16
    products are emulated, about ten times slower than float32 (``benchmarks/bench_lora_precision.py``), so
    ``bf16`` there warns once.

  The resolved precision (never ``auto``) is what a run directory records: the two give different numbers.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys

import torch

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PRECISIONS = ("f32", "bf16", "auto")

_PLANNING = contextvars.ContextVar("mirrorflow_planning", default=False)
_WARNED: set[str] = set()


# ------------------------------------------------------------------------------------------- device
@contextlib.contextmanager
def planning():
    """Inside this block :func:`resolve_device` checks a device's name but not that this machine has it: a
    dry run (``mirrorflow run/reproduce --dry-run``) validates a plan that may be meant for another machine."""
    token = _PLANNING.set(True)
    try:
        yield
    finally:
        _PLANNING.reset(token)


def resolve_device(spec: str | torch.device, key: str = "device") -> torch.device:
    """``auto`` → ``cuda`` when a CUDA device is available, else ``cpu``; ``cpu``/``cuda``/``cuda:K`` as given.

    Raises :class:`~mirrorflow.errors.ConfigError` (one line naming ``key``) for an unknown name or for
    ``cuda`` on a machine without CUDA (not inside :func:`planning`)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if _PLANNING.get():
            return torch.device(name)
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={spec}: CUDA is not available on this machine (use {key}=cpu or {key}=auto)")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"{key}={spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise ConfigError(f"{key} must be one of {', '.join(DEVICES)} (or cuda:K), got {spec!r}")


def check_device(spec: str, key: str = "device") -> str:
    """``spec`` unchanged once its name is valid (``auto|cpu|cuda|cuda:K``); the machine is not asked.

    For a config's ``__post_init__``: the run itself calls :func:`resolve_device`."""
    with planning():
        resolve_device(spec, key)
    return spec


# ------------------------------------------------------------------------------------------ threads
@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (0: leave torch's setting), restoring it afterwards.

    The batched programs are many small GEMMs; on a shared 2-core machine a second thread made the
    diagonal sweep ~30× slower (thread hand-off), so the experiments default to one thread."""
    if n <= 0:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` for the rest of the process when ``threads > 0`` (0 keeps torch's
    default): a worker process's setting."""
    if threads > 0:
        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------- dtype
def resolve_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """``float64`` or ``float32`` as a ``torch.dtype``; anything else is refused naming ``key``."""
    if name not in DTYPES:
        raise ConfigError(f"{key} must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ---------------------------------------------------------------------------------------- precision
def native_bf16(device: str) -> bool:
    """True when ``device`` (``cpu``, ``cuda``, ``cuda:N``) multiplies bfloat16 matrices in hardware."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def resolve_precision(precision: str, device: str) -> str:
    """``f32`` or ``bf16`` for ``precision`` on ``device`` (module docstring); warns once when ``bf16`` is
    emulated on this device."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "f32"
    if precision == "bf16" and not native_bf16(device) and device not in _WARNED:
        _WARNED.add(device)
        print(
            f"warning: precision=bf16 on {device}: no native bfloat16 matrix units here (bfloat16 products are "
            "emulated, about 10x slower than float32); precision=auto picks f32",
            file=sys.stderr,
        )
    return precision


def precision_for(precision: str, device_setting: str) -> str:
    """:func:`resolve_precision` for a config's ``device`` setting (``auto``: CUDA when available)."""
    cuda = device_setting.startswith("cuda") or (device_setting == "auto" and torch.cuda.is_available())
    return resolve_precision(precision, "cuda" if cuda else "cpu")


def autocast(device: str, precision: str):
    """The context of a forward (and its backward) pass: bfloat16 autocast for ``bf16``, nothing for ``f32``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def freeze_in_bf16(model) -> None:
    """Store the frozen (``requires_grad=False``) floating-point weights of ``model`` in bfloat16; trainable
    parameters and buffers keep their dtype."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(torch.bfloat16)
