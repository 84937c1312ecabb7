"""Reparameterized underdetermined regression as a :class:`~mirrorflow.engine.batched.BatchedProblem`.

C configurations share the data (Z ∈ ℝ^{N×n}, y ∈ ℝ^N) and one reparameterization x = g(w) from
``mirrorflow.geometry``; each has its own λ-schedule and learning rate (the engine's ``lam``/``lr``). The
loss is

    f(x) = 1/(2N) ‖Zx − y‖²,     ∇f(x) = Zᵀ(Zx − y)/N,

and one step (docs/theory.md#stiff-decay) is

    decay="exact":     w ← Φ_{ηλ_t}(w − η ∂g(w)ᵀ∇f(x))        Φ_s = the family's exact flow of dw/dt = −∇h(w)
                                                              (``reparam.decay_flow``: e^{−s}w for h = ½‖w‖²,
                                                              the matched u^{2k} flow for u^{2k} − v^{2k});
                                                              stable for any ηλ
    decay="gradient":  w ← w − η (∂g(w)ᵀ∇f(x) + λ_t ∇h(w))    (any h; plain gradient descent on f + λh)

``decay="auto"`` (default) takes "exact" when the family has a closed-form decay flow
(``reparam.has_exact_decay``: m⊙w, UUᵀ, linear, depth 3, u^{2k} − v^{2k}, quadratic with B = I) and
"gradient" otherwise (log u − log v, quadratic with B ≠ I, custom h). Both are first-order consistent with
the flow dw = −∇f dt − α∇h dt with α_t = λ_t, so the accumulated regularization is a_t = −η Σ_{s<t} λ_s —
exactly what ``run_batched`` records as ``a`` and what ``geometry.predict_limit(..., schedule, lr=η)`` /
``reparam.legendre(init, a)`` take.

State (leading axis C): ``w`` (C, d) the parameters and, unless ``dual=False``, ``mu`` (C, n) the dual
variable μ_t = −η Σ_{s<t} ∇f(x_s) (Eq. 5 integrated; ∇R_{a_t}(x_t) = μ_t up to O(η)). Metrics: ``loss``
f(x), ``residual`` ‖Zx − y‖_∞ (experiments subclass and override :meth:`metrics`). With ``track=True`` the
state also carries a_t and the metrics add ``identity_residual`` ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖ (Theorem 3.6;
``training.tracker.identity_residual``).

    prob = ReparamRegression(geometry.get("mw", n), Z, y, w0, n_configs=3)
    trace = run_batched(prob, schedule_table([turn_off(0.5, 200)] * 3, 5000), lr=0.05)
    x = prob.x_of(trace.final_state)                          # (3, n)
    x_pred = geometry.predict_limit("mw", w0, turn_off(0.5, 200), Z, y, lr=0.05)

``device="auto"|"cpu"|"cuda"`` puts the data, w0 and every state tensor there (``run_batched`` follows the
state). The reparameterization's own tensors (e.g. the A_i of ``quadratic``) are moved on a shallow copy;
a custom g that closes over CPU tensors stays on the CPU.
"""

from __future__ import annotations

import copy

import torch

from ..runtime import resolve_device

DECAYS = ("auto", "exact", "gradient")


class ReparamRegression:
    """Batched gradient descent on f(g(w)) + λ_t h(w) for C configurations sharing (Z, y)."""

    def __init__(
        self,
        reparam,
        Z,
        y,
        w0,
        n_configs: int = 1,
        decay: str = "auto",
        dtype=torch.float64,
        device: str | torch.device = "cpu",
        track: bool = False,
        dual: bool = True,
    ):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if decay == "exact" and not reparam.has_exact_decay:
            raise ValueError(
                f"decay='exact' needs a closed-form decay flow, but {reparam.name} has none; use 'gradient'"
            )
        if track and not dual:
            raise ValueError("track=True needs the dual variable μ (dual=True)")
        self.device = resolve_device(device)
        self.reparam = _on_device(reparam, self.device, dtype)
        self.exact = decay == "exact" or (decay == "auto" and reparam.has_exact_decay)
        self.dual = bool(dual)
        self.Z = torch.as_tensor(Z, dtype=dtype).reshape(len(y), -1).to(self.device)
        self.Zt = self.Z.T.contiguous()  # (n, N)
        self.y = torch.as_tensor(y, dtype=dtype).reshape(-1).to(self.device)
        self.N = self.y.numel()
        self.n_configs = int(n_configs)
        self.track = bool(track)
        w0 = reparam.as_params(w0).to(device=self.device, dtype=dtype)
        self.w0 = w0.expand(self.n_configs, -1).clone() if w0.dim() == 1 else w0.clone()
        if self.w0.shape != (self.n_configs, reparam.d):
            raise ValueError(
                f"w0 must have shape ({reparam.d},) or ({self.n_configs}, {reparam.d}), got {tuple(w0.shape)}"
            )

    def init_state(self) -> dict[str, torch.Tensor]:
        state = {"w": self.w0.clone()}
        if self.dual:
            state["mu"] = torch.zeros(self.n_configs, self.reparam.n, dtype=self.w0.dtype, device=self.device)
        if self.track:
            state["a"] = torch.zeros(self.n_configs, dtype=self.w0.dtype, device=self.device)
        return state

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Zx − y for x of shape (C, n), shape (C, N)."""
        return x @ self.Zt - self.y

    def grad_f(self, x: torch.Tensor) -> torch.Tensor:
        """∇f(x) = Zᵀ(Zx − y)/N for x of shape (C, n)."""
        return (self.residual(x) @ self.Z) / self.N

    def step(self, state, lam, lr, t):
        w = state["w"]
        eta = lr.unsqueeze(-1)
        step_x = eta * self.grad_f(self.reparam.g(w))  # η∇f(x), (C, n)
        if self.exact:
            w_new = self.reparam.decay_flow(w - self.reparam.pullback(w, step_x), (lr * lam).unsqueeze(-1))
        else:
            w_new = w - (self.reparam.pullback(w, step_x) + (lr * lam).unsqueeze(-1) * self.reparam.h_grad(w))
        new = {"w": w_new}
        if self.dual:
            new["mu"] = state["mu"] - step_x
        if self.track:
            new["a"] = state["a"] - lr * lam
        return new

    def x_of(self, state) -> torch.Tensor:
        """x = g(w), shape (C, n)."""
        return self.reparam.g(state["w"])

    def metrics(self, state):
        x = self.x_of(state)
        r = self.residual(x)
        return {"loss": 0.5 * (r * r).mean(-1), "residual": r.abs().amax(-1), **self.tracked(state, x)}

    def tracked(self, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """With ``track=True``: ``identity_residual`` ‖∇R_{a_t}(x_t) − μ_t‖/‖μ_t‖ per configuration
        (``training.tracker.identity_residual``); ``{}`` otherwise."""
        if not self.track:
            return {}
        from ..training.tracker import identity_residual

        return {
            "identity_residual": torch.tensor(
                [
                    identity_residual(self.reparam, self.w0[c], float(state["a"][c]), x[c], state["mu"][c])
                    for c in range(self.n_configs)
                ],
                dtype=x.dtype,
                device=x.device,
            )
        }


def _on_device(reparam, device: torch.device, dtype: torch.dtype):
    """``reparam`` itself when its tensors are already on ``device`` in ``dtype``; otherwise a shallow copy whose
    floating tensor attributes are moved there (so g, h_grad and the pullback run where the state is)."""
    tensors = {k: v for k, v in vars(reparam).items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if all(v.device == device and v.dtype == dtype for v in tensors.values()):
        return reparam
    moved = copy.copy(reparam)
    for k, v in tensors.items():
        setattr(moved, k, v.to(device=device, dtype=dtype))
    return moved
