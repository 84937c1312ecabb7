"""Batched full-batch gradient descent over a leading *configuration* axis.

The small experiments (matrix sensing, diagonal networks, sparse coding) are gradient descent on tiny
tensors. Running a grid of C configurations one by one is a Python loop of GEMVs; stacking them along a
leading axis turns every step into a few GEMMs on shared data.

A :class:`BatchedProblem` owns the shared data and knows how to take one step for all configurations at
once given per-config strengths ``λ_t`` (shape ``(C,)``) and learning rates ``η`` (shape ``(C,)``).
:func:`run_batched` drives it: it feeds each step's column of the ``(C, T)`` schedule table, records
metrics every ``log_every`` steps, and marks a configuration *diverged* at the first step its state stops
being finite — its state is frozen there and its later metrics are NaN, the other configurations go on.

The accumulated regularization of each configuration is tracked as ``a_t = -Σ_{s<t} η_s λ_s``
(discrete form of a_t = −∫λ_s ds, Eq. (9)) and logged with the metrics as ``lam`` and ``a``.

Devices: the run happens on the device of the problem's state (``device=cuda`` puts the problem's data
there; :func:`mirrorflow.runtime.resolve_device` turns ``auto|cpu|cuda`` into a ``torch.device``).
The schedule table, the learning rates, ``a`` and the divergence bookkeeping live on that device too, and
metrics are copied to the CPU only at the steps they are recorded. On the CPU a diverged row is frozen only
when one appears (a cheap check); on an accelerator the freeze is applied every step without reading the
flag back, so the step loop never waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..schedules import Schedule

State = dict[str, torch.Tensor]


class BatchedProblem(Protocol):
    """A family of C gradient-descent runs that share data. All state tensors have leading dim C.

    A problem may set ``divergence_keys`` (a tuple of state keys): only those entries are checked for
    divergence and frozen for a diverged configuration; the other entries (large accumulators derived from
    them, updated in place) pass through. Without it every floating-point entry is checked and frozen."""

    n_configs: int

    def init_state(self) -> State: ...

    def step(self, state: State, lam: torch.Tensor, lr: torch.Tensor, t: int) -> State: ...

    def metrics(self, state: State) -> Mapping[str, torch.Tensor]: ...


@dataclass
class Trace:
    """What a batched run recorded: ``metrics[name]`` has shape ``(C, len(steps))``."""

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    diverged_at: np.ndarray  # (C,), -1 where the run stayed finite
    final_state: State = field(repr=False, default_factory=dict)

    def final(self, name: str) -> np.ndarray:
        """Last recorded value of ``name`` per configuration (NaN for diverged ones)."""
        return self.metrics[name][:, -1]

    def rows(self, labels: Sequence[str] | None = None) -> list[dict]:
        """Long-format rows (config, step, metric...) for ``metrics.csv``."""
        C = len(self.diverged_at)
        labels = list(labels) if labels is not None else [str(i) for i in range(C)]
        names = list(self.metrics)
        out = []
        for c in range(C):
            for j, s in enumerate(self.steps):
                row = {"config": labels[c], "step": int(s)}
                for n in names:
                    row[n] = float(self.metrics[n][c, j])
                out.append(row)
        return out


def schedule_table(
    schedules: Sequence[Schedule], steps: int, dtype=torch.float64, device: str | torch.device | None = None
) -> torch.Tensor:
    """Stack ``λ_0..λ_{T-1}`` of each schedule into a ``(C, T)`` tensor (on ``device``, default CPU)."""
    return torch.as_tensor(np.stack([s.table(steps) for s in schedules]), dtype=dtype, device=device)


def _watched(problem: BatchedProblem, state: State) -> tuple[str, ...]:
    """The state keys that decide divergence and are frozen (``problem.divergence_keys``, default: all
    floating-point entries)."""
    keys = getattr(problem, "divergence_keys", None)
    if keys is None:
        return tuple(k for k, v in state.items() if v.is_floating_point())
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"divergence_keys {missing} are not in the state ({', '.join(state)})")
    return tuple(keys)


def _finite_rows(state: State, C: int, keys: Sequence[str]) -> torch.Tensor:
    """Rows that are still numbers (see :func:`run_batched`): the entries ``keys`` are finite, with no
    entry above √(max float) (the next product overflows)."""
    ok = torch.ones(C, dtype=torch.bool, device=next(iter(state.values())).device)
    for v in (state[k] for k in keys):
        if v.is_floating_point():
            rows = v.reshape(C, -1)
            fi = torch.finfo(v.dtype)
            ok &= torch.isfinite(rows).all(dim=1)
            if rows.shape[1]:
                ok &= rows.abs().nan_to_num(0.0, 0.0, 0.0).amax(dim=1).to(torch.float64) <= math.sqrt(fi.max)
    return ok


def run_batched(
    problem: BatchedProblem,
    lam_table: torch.Tensor,
    lr: float | torch.Tensor,
    log_every: int = 10,
    progress: Callable[[int], None] | None = None,
    state: State | None = None,
    readback: bool | None = None,
    observe: Callable[[int, Mapping[str, np.ndarray]], Mapping[int, int] | None] | None = None,
) -> Trace:
    """Run ``T = lam_table.shape[1]`` steps of ``problem`` for all configurations at once.

    A configuration *diverges* (``diverged_at`` = the step; its state is frozen and later metrics are NaN)
    when its state has a non-finite entry or an entry above √(max float) (the next product overflows). A
    problem's ``step`` may return NaN for a configuration whose step is no discretization of the flow (e.g.
    matrix sensing's overshooting gradient step), which marks it diverged the same way.

    Metrics are recorded at steps 0, ``log_every``, 2·``log_every``, ..., and at ``T``. ``progress(k)``
    is called with the number of steps just completed (for a progress bar). ``readback``: read the
    "all rows finite" flag back every step and freeze rows only when one diverged (default: on the CPU),
    or apply the freeze mask every step without reading anything back (default on an accelerator); both
    give the same trace.

    ``observe(t, metrics)``: a controller fed at every recorded step t ≥ 1 with the metrics measured after
    t steps (numpy arrays of shape (C,)). It may answer ``{row: s}``: λ of that configuration is 0 from step
    s on (s ≥ t; its ``a`` is recomputed) — how a schedule that switches itself off on a monitored signal
    (``training.AutoTurnOff``) runs inside the batch.
    """
    C, T = lam_table.shape
    if problem.n_configs != C:
        raise ValueError(f"lam_table has {C} rows but the problem has {problem.n_configs} configurations")
    state = problem.init_state() if state is None else state
    watched = _watched(problem, state)
    ref = next(v for v in state.values() if v.is_floating_point())
    dev = ref.device
    lam_table = lam_table.to(device=dev, dtype=ref.dtype)
    if observe is not None:
        lam_table = lam_table.clone()  # the controller's switch-offs never write into the caller's table
    lr_vec = torch.as_tensor(lr, dtype=ref.dtype).to(dev).expand(C).clone()
    # a_t = −Σ_{s<t} η λ_s for every t at once (a diverged row's later values are never reported)
    a_table = 0.0 - torch.cumsum(torch.cat([torch.zeros_like(lam_table[:, :1]), lr_vec.view(C, 1) * lam_table], 1), 1)
    diverged_at = torch.full((C,), -1, dtype=torch.long, device=dev)
    readback = dev.type == "cpu" if readback is None else readback
    log_steps = sorted(set(range(0, T, max(1, log_every))) | {T})
    records: dict[str, list[np.ndarray]] = {}

    def record(t: int) -> None:
        m = dict(problem.metrics(state))
        m["lam"] = lam_table[:, t] if t < T else torch.zeros_like(lr_vec)
        m["a"] = a_table[:, t]
        dead = (diverged_at >= 0).cpu()
        for k, v in m.items():
            v = v.detach().to(device="cpu", dtype=torch.float64, copy=True)  # never write into the state
            v[dead] = float("nan")
            records.setdefault(k, []).append(v.numpy())
        if observe is not None and t > 0:
            offs = observe(t, {k: v[-1] for k, v in records.items()}) or {}
            for row, s in offs.items():
                if s < t:
                    raise ValueError(f"observe: row {row} asked for λ = 0 from step {s}, before step {t}")
                lam_table[row, s:] = 0.0
            if offs:
                a_table[:] = 0.0 - torch.cumsum(
                    torch.cat([torch.zeros_like(lam_table[:, :1]), lr_vec.view(C, 1) * lam_table], 1), 1
                )

    next_log = 0
    chunk = 0
    with torch.no_grad():
        for t in range(T):
            if t == log_steps[next_log]:
                record(t)
                next_log += 1
            lam = lam_table[:, t]
            new = problem.step(state, lam, lr_vec, t)
            ok = _finite_rows(new, C, watched)
            if not readback or not bool(ok.all()):
                diverged_at = torch.where((~ok) & (diverged_at < 0), t, diverged_at)
                new = {
                    k: torch.where(ok.view(C, *([1] * (v.dim() - 1))), v, state[k])
                    if k in watched and v.is_floating_point()
                    else v
                    for k, v in new.items()
                }
            state = new
            chunk += 1
            if progress is not None and (chunk >= 50 or t == T - 1):
                progress(chunk)
                chunk = 0
        record(T)
    metrics = {k: np.stack(v, axis=1) for k, v in records.items()}
    return Trace(np.asarray(log_steps), metrics, diverged_at.cpu().numpy(), state)
