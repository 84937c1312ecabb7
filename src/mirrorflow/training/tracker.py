"""``LegendreTracker``: does the paper's geometry still govern *this* training run?

Along gradient flow on f(g(w)) + α_t h(w) with a commuting reparameterization x = g(w) (Theorem 3.6),

    ∇R_{a_t}(x_t) = μ_t,      μ_t = −∫_0^t ∇f(x_s) ds,      a_t = −∫_0^t α_s ds,

and if the flow interpolates after weight decay stops, it ends at argmin_{Zx=y} R_{a_∞}(x) (Theorem 3.11;
docs/theory.md#limit). The tracker measures how far a real optimizer leaves this: it hooks
``optimizer.step()`` and accumulates, from the optimizer's *actual* steps,

    μ_t = −Σ_{s<t} η_s ∇_x f(x_s),     a_t = −Σ_{s<t} η_s λ_s,

with η_s and λ_s read from the param group at the moment of the step (as ``WeightDecayScheduler`` does)
and ∇_x f(x_s) the gradient with respect to x = g(w) of the loss that produced that step (captured with a
tensor hook by :meth:`LegendreTracker.watch`, or given to :meth:`LegendreTracker.observe`). This is the
discretization of the paper's μ with time dt = η: for plain gradient descent the identity holds to O(η);
for momentum, Adam or AdamW the optimizer's step is not −η∇f, so the same μ_t measures exactly how far the
run leaves the mirror-flow geometry. Every ``every`` steps it records the relative residual

    ρ_t = ‖∇R_{a_t}(x_t) − μ_t‖ / ‖μ_t‖

and, given the data (Z, y), the limit x̂(a_t) = argmin_{Zx=y} R_{a_t}(x) that Theorem 3.11 predicts if weight
decay stopped now, with its distance to x_t.

    w = {"m": model.m, "w": model.w}                                 # the factors, by reparameterization part
    tracker = LegendreTracker(geometry.get("mw", n), w, opt, every=50, data=(Z, y))
    for t in range(T):
        opt.zero_grad()
        x = tracker.watch(model.m * model.w)                         # x = g(w); records ∇_x f on backward
        loss = f(x); loss.backward(); opt.step()
    tracker.history[-1]   # {"step", "a", "residual", "mu_norm", "x_pred_dist", ...}

Each record also goes, as ``legendre/residual``, ``legendre/a``, ``legendre/mu_norm`` (and ``legendre/loss``,
``legendre/x_pred_dist`` with data) at its step, to the sinks in ``loggers=`` — the same TensorBoard, W&B and
MLflow sinks as :class:`~mirrorflow.training.monitor.SpectralMonitor`'s (:mod:`mirrorflow.training.loggers`);
the Trainer and Lightning callbacks (``tracker=``) log the same keys (:meth:`LegendreTracker.metrics`).

The weight decay the optimizer applies is ½λ‖w‖² (torch's ``weight_decay``), so the reparameterization
must have h = ½‖w‖² (``weight_decay_l2``: m⊙w, UUᵀ, ...) — or the loop applies λ_t∇h itself and passes
``lam=callable`` returning the λ it used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from ..geometry import OutsideDomainError, predict_limit
from ..geometry.reparam import Reparameterization
from ..schedules import as_count
from .loggers import make_sink

F64 = torch.float64


def identity_residual(reparam: Reparameterization, init, a: float, x: torch.Tensor, mu: torch.Tensor) -> float:
    """ρ = ‖∇R_a(x) − μ‖ / ‖μ‖ for one x = g(w) (flat, shape (n,)) and dual variable μ (Theorem 3.6).

    ``inf`` when x is outside the domain of R_a or on its boundary (a coordinate or eigenvalue collapsed to
    0, where ∇R_a is not finite: gradient flow never gets there in finite time); NaN when μ = 0."""
    x = torch.as_tensor(x, dtype=F64).reshape(-1)
    mu = torch.as_tensor(mu, dtype=F64).reshape(-1)
    try:
        grad = reparam.flat(reparam.legendre(init, float(a)).grad(reparam.point(x))).reshape(-1)
    except OutsideDomainError:
        return math.inf
    if not bool(torch.isfinite(grad).all()):
        return math.inf
    norm = float(mu.norm())
    return float((grad - mu).norm()) / norm if norm > 0 else math.nan


def identity_residuals(reparam: Reparameterization, init, a, x, mu) -> list[float]:
    """:func:`identity_residual` for each row of a batch (C configurations, e.g. a batched engine's final
    state: x = g(w) of shape (C, n), μ of shape (C, n), a of shape (C,))."""
    x = torch.as_tensor(x, dtype=F64)
    mu = torch.as_tensor(mu, dtype=F64)
    a = torch.as_tensor(a, dtype=F64).reshape(-1).expand(x.shape[0])
    return [identity_residual(reparam, init, float(a[c]), x[c], mu[c]) for c in range(x.shape[0])]


class LegendreTracker:
    """Accumulate μ_t and a_t from an optimizer's actual steps; report ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖.

    Args:
        reparam: the commuting reparameterization x = g(w) (``mirrorflow.geometry.get(name, n)`` or a
            ``Custom`` (g, h) that passes ``geometry.check_commuting``).
        params: the factors: a mapping part name → tensor (``{"m": ..., "w": ...}``, ``{"U": ...}``) or a
            sequence in ``reparam.parts`` order. Their values at construction are w_0 (the initialization
            that fixes R_a); read again at every report for x_t = g(w_t).
        optimizer: attach now (or later with :meth:`attach`, e.g. when a Trainer builds the optimizer).
        every: record every ``every`` optimizer steps (and at :meth:`report`).
        data: (Z, y) of an underdetermined regression: adds the Theorem 3.11 prediction x̂(a_t).
        lam: ``() -> float``, the λ_t the loop applies to h itself (for h ≠ ½‖w‖²); default: the
            ``weight_decay`` of the param group that holds the first tracked tensor.
        loggers: sinks of :mod:`mirrorflow.training.loggers` (``"tensorboard:DIR"``, ``"wandb"``,
            ``"mlflow"`` or sink objects); every record goes to each as :meth:`metrics` at its step.
    """

    def __init__(
        self,
        reparam: Reparameterization,
        params: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 10,
        data: tuple | None = None,
        lam: Callable[[], float] | None = None,
        loggers: Sequence = (),
    ):
        if not isinstance(reparam, Reparameterization):
            raise TypeError(
                f"reparam must be a Reparameterization (mirrorflow.geometry.get(name, n)), got {type(reparam).__name__}"
            )
        every = as_count("every", every)
        if lam is not None and not callable(lam):
            raise TypeError(f"lam must be a callable () -> λ or None, got {type(lam).__name__}")
        if isinstance(params, Mapping):
            unknown = [k for k in params if k not in reparam.parts]
            missing = [k for k in reparam.parts if k not in params]
            if unknown or missing:
                raise ValueError(f"params: {reparam.name} has parts {list(reparam.parts)}, got {list(params)}")
            self.tensors = [params[k] for k in reparam.parts]
        else:
            self.tensors = list(params)
            if len(self.tensors) != len(reparam.parts):
                raise ValueError(
                    f"params: {reparam.name} has {len(reparam.parts)} parts {list(reparam.parts)}, "
                    f"got {len(self.tensors)} tensors"
                )
        if not all(isinstance(t, torch.Tensor) for t in self.tensors):
            raise TypeError(f"params: expected tensors, got {[type(t).__name__ for t in self.tensors]}")
        self.reparam = reparam
        self.every = int(every)
        self.lam_fn = lam
        self.init = self.w()
        self.mu = torch.zeros(reparam.n, dtype=F64)
        self.a = 0.0
        self.steps = 0
        self.history: list[dict] = []
        self._pending: torch.Tensor | None = None
        self._hooks: list = []
        self.Z = self.y = None
        if data is not None:
            Z, y = data
            self.Z = torch.as_tensor(Z, dtype=F64).reshape(len(y), -1).cpu()
            self.y = torch.as_tensor(y, dtype=F64).reshape(-1).cpu()
            if self.Z.shape[1] != reparam.n:
                raise ValueError(f"data: Z has {self.Z.shape[1]} columns, x = g(w) has n = {reparam.n} entries")
        self.sinks = [make_sink(x) for x in loggers]
        self.optimizer = None
        if optimizer is not None:
            self.attach(optimizer)

    # -- state ----------------------------------------------------------------------------------------
    def w(self) -> torch.Tensor:
        """The current flat parameter vector w_t (float64, CPU) in ``reparam.parts`` order."""
        return torch.cat([t.detach().to(device="cpu", dtype=F64).reshape(-1) for t in self.tensors])

    def x(self) -> torch.Tensor:
        """x_t = g(w_t), flat (n,)."""
        return self.reparam.g(self.w())

    # -- gradient capture -----------------------------------------------------------------------------
    def observe(self, grad_x: torch.Tensor) -> None:
        """Add ∇_x f(x_t) (any shape with n entries) for the coming optimizer step (accumulates, like .grad)."""
        g = torch.as_tensor(grad_x).detach().to(device="cpu", dtype=F64).reshape(-1)
        if g.numel() != self.reparam.n:
            raise ValueError(f"observe: ∇_x f has {g.numel()} entries, x = g(w) has n = {self.reparam.n}")
        self._pending = g if self._pending is None else self._pending + g

    def watch(self, x: torch.Tensor) -> torch.Tensor:
        """Register a hook on the model's x = g(w) that records ∇_x f when the loss is back-propagated;
        returns x unchanged (use it in the forward pass)."""
        if x.requires_grad:
            x.register_hook(lambda g: self.observe(g) or None)
        return x

    # -- optimizer hooks ------------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> LegendreTracker:
        """Hook ``optimizer.step()``: before it, μ −= η∇_x f and a −= ηλ; after it, record every N steps."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._unhook()
        ids = {id(t) for t in self.tensors}
        groups = [g for g in optimizer.param_groups if any(id(p) in ids for p in g["params"])]
        if not groups:
            raise ValueError("attach: none of the tracked tensors is in the optimizer's param groups")
        self.optimizer, self._group = optimizer, groups[0]
        self._hooks = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]
        return self

    def _unhook(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def close(self) -> None:
        """Remove the optimizer hooks and close the sinks."""
        self._unhook()
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def _before_step(self, optimizer, args, kwargs) -> None:
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if self._pending is None and closure is not None:
            return  # ∇_x f is computed by the closure inside step() (Lightning): accumulated after the step
        self._accumulate()

    def _accumulate(self) -> None:
        """μ −= η∇_x f(x_t) and a −= ηλ with the η, λ of the step being taken."""
        if self._pending is None:
            raise RuntimeError(
                "LegendreTracker: no ∇_x f for this optimizer step; wrap x = g(w) with "
                "tracker.watch(x) in the forward pass or call tracker.observe(grad_x) first"
            )
        eta = float(self._group["lr"])
        lam = float(self.lam_fn()) if self.lam_fn is not None else float(self._group.get("weight_decay", 0.0))
        self.mu -= eta * self._pending
        self.a -= eta * lam
        self._pending = None

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._pending is not None:  # gradient from a closure evaluated inside step()
            self._accumulate()
        self.steps += 1
        if self.steps % self.every == 0:
            self.report()

    # -- measurement ----------------------------------------------------------------------------------
    def predicted_limit(self, a: float | None = None) -> torch.Tensor:
        """Theorem 3.11: argmin_{Zx=y} R_a(x) for a = a_t (the limit if weight decay stopped now)."""
        if self.Z is None:
            raise ValueError("predicted_limit needs data=(Z, y)")
        return predict_limit(self.reparam, self.init, self.a if a is None else float(a), self.Z, self.y).reshape(-1)

    def report(self) -> dict:
        """Record (and return) step, a_t, ‖μ_t‖, the relative residual ρ_t and, with data, x̂(a_t)."""
        x = self.x()
        rec = {
            "step": self.steps,
            "a": self.a,
            "mu_norm": float(self.mu.norm()),
            "residual": identity_residual(self.reparam, self.init, self.a, x, self.mu),
        }
        self._warn_non_finite(x)
        if self.Z is not None:
            r = self.Z @ x - self.y
            rec["loss"] = 0.5 * float((r * r).mean())
            try:
                xp = self.predicted_limit()
                rec["x_pred_dist"] = float((xp - x).norm())
            except (ValueError, OutsideDomainError):  # no minimiser from this init / a
                rec["x_pred_dist"] = math.nan
        self.history.append(rec)
        for sink in self.sinks:
            sink.log(self.metrics(rec), rec["step"])
        return rec

    def metrics(self, rec: dict | None = None) -> dict[str, float]:
        """A record (default: the latest) as logged: ``legendre/<key>`` for residual, a, mu_norm, loss,
        x_pred_dist, and ``legendre/step``, the optimizer step it was measured at; {} before any record."""
        rec = rec if rec is not None else (self.history[-1] if self.history else None)
        if rec is None:
            return {}
        return {
            f"legendre/{k}": float(rec[k])
            for k in ("step", "residual", "a", "mu_norm", "loss", "x_pred_dist")
            if k in rec
        }

    def _warn_non_finite(self, x: torch.Tensor) -> None:
        """Warn once per tracker when x, μ (the accumulated gradients) or the data hold NaN/inf: the residuals
        are NaN from then on, which says nothing about the geometry."""
        if getattr(self, "_warned_non_finite", False):
            return
        bad = [
            name
            for name, t in (
                ("x = g(w)", x),
                ("μ (accumulated gradients)", self.mu),
                ("data Z", self.Z),
                ("data y", self.y),
            )
            if t is not None and not bool(torch.isfinite(t).all())
        ]
        if bad:
            import warnings

            self._warned_non_finite = True
            warnings.warn(
                f"LegendreTracker: {', '.join(bad)} not finite at step {self.steps} (NaN gradients or "
                "data?); the residuals are NaN from here on",
                RuntimeWarning,
                stacklevel=3,
            )

    def state_dict(self) -> dict:
        return {
            "mu": self.mu.clone(),
            "a": self.a,
            "steps": self.steps,
            "init": self.init.clone(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output; a state of the wrong shape raises (naming the entry) before
        anything is changed."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state_dict must be a mapping from LegendreTracker.state_dict(), got {type(state).__name__}"
            )
        missing = [k for k in ("mu", "a", "steps", "init", "history") if k not in state]
        if missing:
            raise ValueError(f"state_dict is not a LegendreTracker state: missing {', '.join(missing)}")
        n = self.reparam.n
        for k, size in (("mu", n), ("init", self.init.numel())):
            if not isinstance(state[k], torch.Tensor) or state[k].numel() != size:
                raise ValueError(f"state_dict[{k!r}] must be a tensor of {size} entries, got {state[k]!r:.80}")
        a = state["a"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a > 0:
            raise ValueError(f"state_dict['a'] must be a finite number ≤ 0 (a = −Σηλ), got {a!r}")
        steps = as_count("state_dict['steps']", state["steps"], minimum=0)
        if not isinstance(state["history"], (list, tuple)):
            raise TypeError(f"state_dict['history'] must be a list of records, got {type(state['history']).__name__}")
        self.mu, self.a, self.steps = state["mu"].detach().to(F64).reshape(-1).clone(), float(a), steps
        self.init, self.history = state["init"].detach().to(F64).clone(), list(state["history"])

    def __repr__(self) -> str:
        last = self.history[-1]["residual"] if self.history else math.nan
        return f"LegendreTracker({self.reparam.name}, step={self.steps}, a={self.a:.4g}, residual={last:.3g})"
