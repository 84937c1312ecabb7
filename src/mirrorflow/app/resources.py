"""Checks a command makes before it allocates anything: memory (each experiment's ``estimate_bytes``) and the
``--dry-run`` planning mode (:func:`mirrorflow.runtime.planning`)."""

from __future__ import annotations

import contextlib
from typing import Any

from ..engine.protocol import EstimatesMemory
from ..errors import ConfigError


def planned(dry_run: bool):
    """The context a command resolves its configs in: with ``dry_run`` a device this machine lacks is
    accepted (:func:`mirrorflow.runtime.planning`: the plan may be meant for another machine)."""
    from ..runtime import planning

    return planning() if dry_run else contextlib.nullcontext()


def size_text(n: float) -> str:
    """``n`` bytes in binary units (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_resources(mod: Any, cfgs: Any, available: int | None = None) -> None:
    """Refuse configs whose big tensors cannot fit, before allocating anything: the experiment's
    ``estimate_bytes(cfg)`` (:class:`~mirrorflow.engine.protocol.EstimatesMemory`; largest over ``cfgs``)
    against the memory available now (psutil). An experiment without an estimate is not checked."""
    if not isinstance(mod, EstimatesMemory):
        return
    cfgs = list(cfgs) if isinstance(cfgs, (list, tuple)) else [cfgs]
    need = max((int(mod.estimate_bytes(c)) for c in cfgs), default=0)
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if need > available:
        raise ConfigError(
            f"this config needs about {size_text(need)} of memory, {size_text(available)} is available "
            "(reduce the sizes or steps)"
        )
