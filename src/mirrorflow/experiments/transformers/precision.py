"""Numerical precision of the transformer experiments: ``precision=f32|bf16|auto``.

* ``f32`` — everything in float32 (the default; the numbers of every earlier run).
* ``bf16`` — the forward and backward passes run under ``torch.autocast`` in bfloat16; what is *trained*
  stays float32: the trainable weights (LoRA's A and B, the ViT, W_Q/W_K), the optimizer state, the weight
  decay λ_t and a_t, and the spectral metrics (ρ is computed from the float32 factors). For LoRA the frozen
  pretrained weights are also *stored* in bfloat16 (half the memory, no per-step cast); the loss is computed
  from float32 logits.
* ``auto`` — ``bf16`` where the hardware computes in bfloat16 natively (a CUDA device with bfloat16 support,
  or a CPU with AVX512-BF16 or AMX tiles), ``f32`` elsewhere. On a CPU without them (AVX2 only), bfloat16
  matrix products are emulated and about ten times slower than float32 (``benchmarks/bench_lora_precision.py``
  prints both), so ``bf16`` there warns once.

The resolved precision (never ``auto``) is what a run directory records: the two give different numbers.
"""

from __future__ import annotations

import contextlib
import sys

PRECISIONS = ("f32", "bf16", "auto")
_WARNED: set[str] = set()


def native_bf16(device: str) -> bool:
    """True when ``device`` (``cpu``, ``cuda``, ``cuda:N``) multiplies bfloat16 matrices in hardware."""
    import torch

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
    from ...errors import ConfigError

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
    import torch

    cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    return resolve_precision(precision, "cuda" if cuda else "cpu")


def autocast(device: str, precision: str):
    """The context of a forward (and its backward) pass: bfloat16 autocast for ``bf16``, nothing for ``f32``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def freeze_in_bf16(model) -> None:
    """Store the frozen (``requires_grad=False``) floating-point weights of ``model`` in bfloat16; trainable
    parameters and buffers keep their dtype."""
    import torch

    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(torch.bfloat16)
