"""The diagonal-network problem (App. D; Figs. 8, 9; docs/theory.md#exp-diagonal): sparse regression data and one
batched reparameterized regression per model, with weight decay, then without.

Underdetermined regression (N < d): ``Z ∈ ℝ^{N×d}`` with i.i.d. N(0, 1) entries, a sparse ground truth x*
(``sparsity`` non-zero coordinates, the first ones, so the "first parameter" the paper reports is a true
coordinate), labels ``y = Z x*`` and the MSE loss

    f(x) = 1/(2N) ‖Z x − y‖²,      ∇f(x) = Zᵀ(Z x − y)/N.

Parameterizations x = g(θ), every one with weight decay h(θ) = ½‖θ‖² on its parameters:

* ``linear``  x = θ (L2 on x; Cor. D.1: nothing is stored in a geometry, Fig. 8a/9a);
* ``mw``      x = m ⊙ w (Eq. 9: time-dependent hyperbolic entropy, L2 → L1; Fig. 8b/9b);
* ``mwv``     x = m ⊙ w ⊙ v (depth 3; Thm D.2: does not commute with weight decay; Fig. 8c/9c);
* ``power``   x = u^{2k} − v^{2k} (Woodworth et al. 2020), with ``power_penalty=l2`` (weight decay
  ½(‖u‖²+‖v‖²)) or ``power_penalty=matched`` (h = Σ u^{2k} + v^{2k}, Cor. 3.12, docs/theory.md#legendre-power, Eq. 11).

All start at x = 0 with the same parameter scale s = ``init_scale`` (App. D: "both parametrizations are
initialized at zero and have the same scaling"): linear θ_0 = 0; m_0 = s·1, w_0 = 0; m_0 = w_0 = s·1,
v_0 = 0; u_0 = v_0 = s·1.

Each run: ``steps`` steps, weight decay λ until ``off_at`` and none after it (turn-off, Remark 3.9).
One gradient step on f followed by the exact flow of the decay term (operator splitting, docs/theory.md#stiff-decay):

    θ ← e^{−ηλ_t} (θ − η ∇_θ f(g(θ)))                     (h = ½‖θ‖²)
    u ← sign(u) (|u'|^{2−2k} + 4k(k−1) ηλ_t)^{−1/(2k−2)}   (h = u^{2k}, k > 1; u' the gradient step)

This equals plain gradient descent on f + λh up to O(η²) and stays stable for any ηλ. The
parameterizations are ``geometry``'s families (Identity, MW, DeepProduct, PowerDiff with its ``penalty``) and
the step is ``engine.reparam_regression.ReparamRegression``'s exact-decay step (each family's ``decay_flow``);
this module adds the data and the App. D metrics. The accumulated
regularization is a_t = −η Σ_{s<t} λ_s (docs/theory.md#notation); for ``mw`` Theorem 3.11 predicts the limit
x_∞ = argmin_{Zx=y} R_{a_∞}(x) with R_a of Eq. (9), γ_a = e^{2a} s²/2.

All weight decays of one parameterization run as ONE batched tensor program (leading config axis C,
``mirrorflow.engine.batched``): a step is two GEMMs ``(C,d)·(d,N)`` and ``(C,N)·(N,d)``.

Values the paper does not give (App. D gives none of them; docs/theory.md#exp-diagonal) are chosen here and documented
in ``docs/diagonal-and-sparse-coding.md``: N = 40, d = 100, 5 non-zeros, s = 1, η = 0.05 (u^{2k} − v^{2k}:
0.005), 20000 steps with weight decay switched off after 4000 (off_at=0.2), λ ∈ {0, 0.01, 0.03, 0.1, 0.3, 0.5,
1}. With s = 1 training without weight decay ends far from x* (the L2-like regime); with a small init it would
already be sparse (docs/theory.md#init-regime).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ...engine.batched import Trace, run_batched, schedule_table
from ...engine.reparam_regression import ReparamRegression
from ...geometry import MW, DeepProduct, Identity, PowerDiff, Reparameterization
from ...runtime import resolve_dtype, torch_threads
from .config import Config


# --------------------------------------------------------------------------------------------- data
@dataclass
class RegressionData:
    Z: torch.Tensor  # (N, d)
    y: torch.Tensor  # (N,)
    x_star: torch.Tensor  # (d,)

    @property
    def ratio_star(self) -> float:
        """‖x*‖₁/‖x*‖₂ of the ground truth (the dotted line of Fig. 9)."""
        return float(self.x_star.abs().sum() / self.x_star.norm())


def make_data(n_samples: int, dim: int, sparsity: int, seed: int, dtype: torch.dtype = torch.float64) -> RegressionData:
    """Z i.i.d. N(0,1); x* has ``sparsity`` non-zeros on the first coordinates, x*_i = ±(0.5 + |g_i|),
    g_i ~ N(0,1) (bounded away from 0 so every true coordinate is visible), sorted by decreasing
    magnitude so that x_1, the coordinate the paper reports (App. D), is the largest; y = Z x*."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n_samples, dim, generator=g, dtype=torch.float64)
    vals = torch.randn(sparsity, generator=g, dtype=torch.float64)
    x_star = torch.zeros(dim, dtype=torch.float64)
    mags = 0.5 + vals.abs()
    order = torch.argsort(mags, descending=True)
    x_star[:sparsity] = (torch.sign(vals) * mags)[order]
    y = Z @ x_star
    return RegressionData(Z.to(dtype), y.to(dtype), x_star.to(dtype))


# ------------------------------------------------------------------------------------------ problem
def reparameterization(model: str, dim: int, k: int = 2, power_penalty: str = "l2") -> Reparameterization:
    """The ``geometry`` family of ``model``: linear → Identity, mw → MW, mwv → DeepProduct(3),
    power → PowerDiff(k, penalty = ``power_penalty``)."""
    if model == "linear":
        return Identity(dim)
    if model == "mw":
        return MW(dim)
    if model == "mwv":
        return DeepProduct(dim, 3)
    return PowerDiff(dim, k, penalty=power_penalty)


def initial_params(rep: Reparameterization, model: str, init_scale: float) -> torch.Tensor:
    """x_0 = 0 with parameter scale s (App. D): linear θ_0 = 0; m_0 = s, w_0 = 0; m_0 = w_0 = s, v_0 = 0;
    u_0 = v_0 = s. Flat parameter vector (d,)."""
    s = float(init_scale)
    parts = {name: torch.full(shape, s, dtype=torch.float64) for name, shape in rep.parts.items()}
    if model != "power":
        last = list(parts)[-1]
        parts[last] = torch.zeros_like(parts[last])
    return rep.pack(**parts)


class DiagonalNetwork(ReparamRegression):
    """``BatchedProblem``: C weight decays of one parameterization on shared data (``init_scale``: one scale
    for all, or one per configuration).

    The step is ``engine.reparam_regression``'s exact-decay step (a GD step on f, then the family's decay
    flow for ηλ_t); state ``w`` (C, d) is the family's flat parameter vector (``rep.unpack`` gives the
    factors). This class adds only the App. D metrics.
    """

    def __init__(
        self,
        data: RegressionData,
        model: str,
        n_configs: int,
        init_scale: float | Sequence[float],
        k: int = 2,
        power_penalty: str = "l2",
        device: str | torch.device = "cpu",
        track: bool = False,
    ):
        self.data = data
        self.model = model
        rep = reparameterization(model, data.Z.shape[1], k, power_penalty)
        if isinstance(init_scale, (int, float)):
            self.init_scale = float(init_scale)
            w0 = initial_params(rep, model, init_scale)
        else:  # one scale per configuration (a phase diagram over init_scale)
            self.init_scale = [float(s) for s in init_scale]
            w0 = torch.stack([initial_params(rep, model, s) for s in self.init_scale])
        super().__init__(
            rep,
            data.Z,
            data.y,
            w0,
            n_configs,
            decay="exact",
            dtype=data.Z.dtype,
            device=device,
            track=track,
            dual=track,
        )
        self.x_star = data.x_star.to(self.device)

    def metrics(self, state) -> dict[str, torch.Tensor]:
        x = self.x_of(state)
        r = self.residual(x)
        l2 = x.norm(dim=1)
        l1 = x.abs().sum(dim=1)
        tiny = torch.finfo(x.dtype).tiny
        return {
            "train_loss": 0.5 * (r * r).mean(dim=1),
            "dist": (x - self.x_star).norm(dim=1),
            "l1_l2": torch.where(l2 > 0, l1 / l2.clamp_min(tiny), torch.zeros_like(l1)),
            "l1": l1,
            "x1": x[:, 0],
            **self.tracked(state, x),
        }


# ------------------------------------------------------------------------------------------ running
def run_sweep(
    cfg: Config, progress: Callable[[int], None] | None = None, data: RegressionData | None = None
) -> tuple[Trace, RegressionData]:
    """All weight decays of ``cfg`` as one batched run; returns the trace and the data."""
    dtype = resolve_dtype(cfg.dtype)
    data = data or make_data(cfg.n_samples, cfg.dim, cfg.sparsity, cfg.seed, dtype)
    problem = DiagonalNetwork(
        data, cfg.model, len(cfg.weight_decays), cfg.init_scale, cfg.k, cfg.power_penalty, cfg.device, cfg.track
    )
    lam = schedule_table(cfg.schedules(), cfg.steps, dtype, problem.device)
    with torch_threads(cfg.threads):
        trace = run_batched(problem, lam, cfg.step_size, log_every=cfg.log_every, progress=progress)
    return trace, data


def final_x(cfg: Config, trace: Trace, data: RegressionData) -> torch.Tensor:
    """x = g(θ) at the end of the run, (C, d)."""
    problem = DiagonalNetwork(
        data, cfg.model, len(cfg.weight_decays), cfg.init_scale, cfg.k, cfg.power_penalty, cfg.device
    )
    return problem.x_of(trace.final_state)
