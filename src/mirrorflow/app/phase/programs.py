"""How each experiment with a batched engine runs the rows of a phase diagram (``mirrorflow phase``).

A phase diagram (:mod:`mirrorflow.app.phase`) runs many *rows* — one configuration each — under a λ table of shape
(C, T) built by the phase itself (so every experiment takes the same ``wd``, ``off`` as a fraction of the
run, ``lr``, and the schedules of :mod:`mirrorflow.schedules`). Rows that share data form a *group* and run
as ONE batched program (``engine.batched.run_batched``). A :class:`PhaseProgram` says, per experiment:

* ``row_keys``: the keys that may differ between the rows of one program (with their defaults), e.g.
  ``init_scale`` (matrix sensing, diagonal networks: each row has its own initialization) or ``k`` and
  ``seed`` (sparse coding: each row has its own dictionary, code and batch order); every other key is a
  field of the experiment's ``Config`` and splits the grid into groups (``seed`` of matrix sensing and
  diagonal networks: a seed draws the data);
* ``horizon``/``wd``/``lr``/``switch``: the run length T and the defaults of λ, η and the switch point
  (a fraction of T) read from the experiment's config;
* ``metrics``: the final metrics a cell reports, ``lower_better`` those a winner may be decided by (lower
  is better), ``compare`` the default one, ``references`` a metric's known target (matrix sensing:
  ‖W*‖_* = 1; figures draw the deviation from it), ``signal`` the metric the automatic switch-off
  (``AutoTurnOff``) watches;
* ``run``/``final``: one batched program of a group, and its per-row final metrics;
* ``theory``: Theorem 3.11's predicted limit (``geometry.predict_limit``) against the trained point, where
  the family has one (``theory_note`` says why not otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ...engine.batched import Trace, run_batched
from ...schedules import is_fraction

Observe = Callable[[int, Mapping[str, np.ndarray]], Mapping[int, int] | None]


class PhaseProgram(Protocol):
    """An experiment's phase rows as batched programs (module docstring)."""

    metrics: tuple[str, ...]
    lower_better: tuple[str, ...]
    compare: str
    signal: str
    title: str
    references: Mapping[str, float]
    labels: Mapping[str, str]  # axis names of the phase keys wd / lr where the experiment calls them otherwise
    symbols: Mapping[str, str]  # their symbols in a title

    def row_keys(self, cfg) -> dict[str, Any]: ...

    def horizon(self, cfg) -> int: ...

    def wd(self, cfg) -> float: ...

    def lr(self, cfg) -> float: ...

    def switch(self, cfg) -> float: ...

    def describe(self, cfg) -> str: ...

    def run(
        self,
        cfg,
        rows: Sequence[Mapping[str, Any]],
        lam: torch.Tensor,
        lr: torch.Tensor,
        log_every: int,
        progress,
        observe: Observe | None,
    ) -> Trace: ...

    def final(self, cfg, rows: Sequence[Mapping[str, Any]], trace: Trace) -> list[dict[str, float]]: ...

    def theory_note(self, cfg) -> str | None: ...

    def theory(
        self, cfg, rows: Sequence[Mapping[str, Any]], trace: Trace, pick: Sequence[int], lam_last: np.ndarray
    ) -> dict[int, dict]: ...


def _final(trace: Trace, names: Sequence[str]) -> list[dict[str, float]]:
    """Per row: the last recorded value of each metric in ``names`` (NaN for a diverged row) and ``status``."""
    out = []
    for c in range(len(trace.diverged_at)):
        row = {n: float(trace.metrics[n][c, -1]) for n in names}
        row["status"] = "diverged" if trace.diverged_at[c] >= 0 else "finished"
        out.append(row)
    return out


@dataclass(frozen=True)
class Names:
    """How a program's phase keys ``wd`` / ``lr`` read in axis labels and titles when the experiment calls
    them otherwise (default: weight decay λ, learning rate η)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    symbols: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MatrixSensingProgram(Names):
    """W = UUᵀ (or the linear parameterization) on shared sensing data; each row its own U_0 = √α·I."""

    metrics: tuple[str, ...] = ("rec_error", "nuclear_norm", "time_to_train_loss", "train_loss")
    lower_better: tuple[str, ...] = ("rec_error", "time_to_train_loss", "train_loss")
    compare: str = "rec_error"
    signal: str = "train_loss"
    title: str = "matrix sensing"
    references: Mapping[str, float] = field(default_factory=lambda: {"nuclear_norm": 1.0})  # ‖W*‖_* = 1

    def row_keys(self, cfg) -> dict[str, Any]:
        return {"init_scale": cfg.init_scale}

    def horizon(self, cfg) -> int:
        return cfg.steps

    def wd(self, cfg) -> float:
        return cfg.wd

    def lr(self, cfg) -> float:
        return cfg.lr

    def switch(self, cfg) -> float:
        return cfg.off_at if is_fraction(cfg.off_at) else cfg.off_at / cfg.steps

    def describe(self, cfg) -> str:
        return f"n={cfg.n}, r={cfg.r}, m={cfg.measurements}, steps={cfg.steps}"

    def run(self, cfg, rows, lam, lr, log_every, progress, observe):
        from ...experiments.matrix_sensing import MatrixSensing, make_data
        from ...runtime import resolve_dtype

        data = make_data(cfg.n, cfg.r, cfg.measurements, cfg.seed, resolve_dtype(cfg.dtype))
        problem = MatrixSensing(
            data, [r["init_scale"] for r in rows], cfg.param, cfg.decay, cfg.loss_threshold, cfg.device, cfg.penalty
        )
        return run_batched(problem, lam, lr.to(problem.device), log_every=log_every, progress=progress, observe=observe)

    def final(self, cfg, rows, trace):
        out = _final(trace, ("rec_error", "nuclear_norm", "train_loss", "effective_rank", "a"))
        hit = trace.metrics["hit_step"][:, -1]
        for row, h in zip(out, hit):
            row["time_to_train_loss"] = float(h) if np.isfinite(h) and h >= 0 else float("nan")
        return out

    def theory_note(self, cfg) -> str | None:
        return (
            "no prediction: Theorem 3.11's limit for W = UUᵀ (Cor. C.3) needs sensing matrices that commute "
            "with each other and with W_0; these are Gaussian"
        )

    def theory(self, cfg, rows, trace, pick, lam_last):
        return {}


@dataclass(frozen=True)
class DiagonalProgram(Names):
    """x = g(θ) of one family (linear, m⊙w, m⊙w⊙v, u^{2k} − v^{2k}) on shared regression data; each row its
    own initial scale."""

    metrics: tuple[str, ...] = ("dist", "l1_l2", "train_loss")
    lower_better: tuple[str, ...] = ("dist", "train_loss")
    compare: str = "dist"
    signal: str = "train_loss"
    title: str = "diagonal network"
    references: Mapping[str, float] = field(default_factory=dict)

    def row_keys(self, cfg) -> dict[str, Any]:
        return {"init_scale": cfg.init_scale}

    def horizon(self, cfg) -> int:
        return cfg.steps

    def wd(self, cfg) -> float:
        return max(cfg.weight_decays)

    def lr(self, cfg) -> float:
        return cfg.step_size

    def switch(self, cfg) -> float:
        return cfg.off_step / cfg.steps

    def describe(self, cfg) -> str:
        k = f", k={cfg.k}" if cfg.model == "power" else ""
        return f"model={cfg.model}{k}, N={cfg.n_samples}, d={cfg.dim}, steps={cfg.steps}"

    def run(self, cfg, rows, lam, lr, log_every, progress, observe):
        from ...experiments.diagonal import DiagonalNetwork, make_data
        from ...runtime import resolve_dtype

        data = make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed, resolve_dtype(cfg.dtype))
        problem = DiagonalNetwork(
            data, cfg.model, len(rows), [r["init_scale"] for r in rows], cfg.k, cfg.power_penalty, cfg.device
        )
        return run_batched(problem, lam, lr.to(problem.device), log_every=log_every, progress=progress, observe=observe)

    def final(self, cfg, rows, trace):
        return _final(trace, ("dist", "l1_l2", "train_loss", "x1", "a"))

    def theory_note(self, cfg) -> str | None:
        if cfg.model == "mw" or (cfg.model == "power" and (cfg.power_penalty == "matched" or cfg.k == 1)):
            return None
        if cfg.model == "mwv":
            return "no prediction: m⊙w⊙v does not commute with weight decay (Theorem D.2)"
        if cfg.model == "linear":
            return "no prediction: x = θ with L2 on x stores nothing in a geometry (Cor. D.1)"
        return "no prediction: u^(2k) − v^(2k) with an L2 penalty does not commute (use power_penalty=matched)"

    def theory(self, cfg, rows, trace, pick, lam_last):
        """Theorem 3.11 at rows ``pick`` (``lam_last``: each row's λ at the last step): ``theory`` is ``match``
        when ‖x_pred − x‖/‖x‖ ≤ THEORY_MATCH, else
        ``mismatch``; ``not converged`` when training did not fit (final loss ≥ ``converged_loss``: the
        theorem is about the limit), ``λ never off`` for a row whose λ is still on at the end (a_∞ is
        unbounded), ``unsolved`` when the constrained solve did not converge; ``theory_gap`` the ratio."""
        from ...experiments.diagonal import initial_params, make_data, reparameterization
        from ...geometry import predict_limit
        from ...runtime import resolve_dtype

        data = make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed, resolve_dtype(cfg.dtype))
        rep = reparameterization(cfg.model, cfg.dim, cfg.k, cfg.power_penalty)
        x = rep.g(trace.final_state["w"].to("cpu", torch.float64))
        out = {}
        for c in pick:
            row = {"theory": "", "theory_gap": float("nan")}
            if trace.diverged_at[c] >= 0:
                row["theory"] = "diverged"
            elif not trace.metrics["train_loss"][c, -1] < cfg.converged_loss:
                row["theory"] = "not converged"
            elif lam_last[c] > 0:
                row["theory"] = "λ never off"
            else:
                w0 = initial_params(rep, cfg.model, float(rows[c]["init_scale"]))
                res = predict_limit(
                    rep,
                    w0,
                    float(trace.metrics["a"][c, -1]),
                    data.Z.double(),
                    data.y.double(),
                    full=True,
                    allow_unconverged=True,
                    max_iter=THEORY_MAX_ITER,
                )
                if not res.converged:
                    row["theory"] = "unsolved"
                else:
                    gap = float((torch.as_tensor(res.x, dtype=torch.float64) - x[c]).norm() / x[c].norm())
                    row.update(theory="match" if gap <= THEORY_MATCH else "mismatch", theory_gap=gap)
            out[c] = row
        return out


@dataclass(frozen=True)
class SparseCodingProgram(Names):
    """Dictionary learning with a reparameterized code (u^{2k} − v^{2k} or log u − log v); each row its own k
    and seed (dictionary, code, batch order). One step is one iteration (a pass over the faces)."""

    metrics: tuple[str, ...] = ("mse", "nuclear_norm", "sparsity")
    lower_better: tuple[str, ...] = ("mse",)
    compare: str = "mse"
    signal: str = "mse"
    title: str = "sparse coding"
    references: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(
        default_factory=lambda: {"wd": "regularization strength α", "lr": "learning-rate scale"}
    )
    symbols: Mapping[str, str] = field(default_factory=lambda: {"wd": "α", "lr": "lr scale"})

    def row_keys(self, cfg) -> dict[str, Any]:
        return {"k": cfg.ks[0], "seed": cfg.seeds[0]}

    def horizon(self, cfg) -> int:
        return cfg.iterations

    def wd(self, cfg) -> float:
        return cfg.alphas[0]

    def lr(self, cfg) -> float:
        return cfg.lr_scale

    def switch(self, cfg) -> float:
        return 0.5

    def describe(self, cfg) -> str:
        return (
            f"param={cfg.param}, {cfg.image_size}×{cfg.image_size} px, {cfg.n_images} faces, "
            f"{cfg.n_atoms} atoms, iterations={cfg.iterations}"
        )

    def run(self, cfg, rows, lam, lr, log_every, progress, observe):
        from ...experiments.sparse_coding import SparseCoding, faces
        from ...runtime import resolve_device, resolve_dtype

        dtype, device = resolve_dtype(cfg.dtype), resolve_device(cfg.device)
        Y = torch.as_tensor(faces(cfg.image_size, cfg.n_images), dtype=dtype).to(device)
        problem = SparseCoding(
            Y,
            cfg.param,
            [int(r["k"]) for r in rows],
            cfg.n_atoms,
            cfg.batch_size,
            [int(r["seed"]) for r in rows],
            cfg.sparsity_tol,
            cfg.dict_update,
            cfg.log_init,
            cfg.threads,
        )
        return run_batched(
            problem, lam.to(device), lr.to(device), log_every=log_every, progress=progress, observe=observe
        )

    def final(self, cfg, rows, trace):
        return _final(trace, ("mse", "nuclear_norm", "sparsity", "a_code"))

    def theory_note(self, cfg) -> str | None:
        return (
            "no prediction: the dictionary is trained too, so the code's loss changes during training "
            "(Theorem 3.11 is for a fixed loss)"
        )

    def theory(self, cfg, rows, trace, pick, lam_last):
        return {}


THEORY_MATCH = 0.05  # ‖x_pred − x_trained‖ / ‖x_trained‖ below this: the trained point is the predicted limit
THEORY_MAX_ITER = 60  # Newton steps of one constrained solve (very negative a_∞ needs many: marked unsolved)


PROGRAMS: dict[str, PhaseProgram] = {
    "matrix-sensing": MatrixSensingProgram(),
    "diagonal": DiagonalProgram(),
    "sparse-coding": SparseCodingProgram(),
}
