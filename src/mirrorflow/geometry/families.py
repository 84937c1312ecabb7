"""The reparameterizations of the paper, and a registry by name.

| name          | g(w)                      | h(w)                      | R_a                                   |
|---------------|---------------------------|---------------------------|---------------------------------------|
| ``mw``        | m⊙w                       | ½(‖m‖² + ‖w‖²)            | Eq. (9); Eq. (10) if m_0 = ±w_0       |
| ``mw-coupled``| m⊙w, init m_0 = w_0       | ½(‖m‖² + ‖w‖²)            | Eq. (10)                              |
| ``uut``       | UUᵀ (U ∈ ℝ^{n×n})         | ½‖U‖_F²                   | Eq. (17) (spectral)                   |
| ``power``     | u^{2k} − v^{2k}           | Σ u^{2k} + v^{2k}         | Eq. (11) (k > 1); hyperbolic (k = 1)  |
|  ``penalty="l2"`` | u^{2k} − v^{2k}       | ½(‖u‖² + ‖v‖²)            | hyperbolic at a/2 (k = 1); none (k > 1)|
| ``log``       | log u − log v             | Σ log u + log v           | log-cosh (App. E)                     |
| ``quadratic`` | ½wᵀA_iw                   | ½wᵀBw                     | Q_a* (Theorem 3.15)                   |
| ``linear``    | w                         | ½‖w‖²                     | none for a ≠ 0 (Cor. D.1)             |
| ``depth3``    | m⊙w⊙v                     | ½(‖m‖²+‖w‖²+‖v‖²)         | none for a ≠ 0 (Theorem D.2)          |

Initializations (``init(scale, x0)``, x0 defaults to 0):
``mw``: m_0² − w_0² = scale², m_0 w_0 = x_0 (x_0 = 0: m_0 = scale, w_0 = 0, γ_0 = scale²/2);
``mw-coupled``: m_0 = w_0 = scale; ``uut``: U_0 = scale·I; ``power``: u_0^{2k} − v_0^{2k} = x_0,
u_0^{2k} v_0^{2k} = scale^{4k}; ``log``: u_0 = 2·scale·σ(x_0), v_0 = 2·scale·σ(−x_0) (the sparse-coding
code's init is scale = ½); ``linear``: w_0 = x_0; ``depth3``: m_0 = w_0 = scale, v_0 = x_0/scale²;
``quadratic``: scale·N(0, I).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._num import F64
from .hyperbolic import CoupledEntropy, HyperbolicEntropy
from .legendre import LegendreFunction
from .logcosh import LogCoshLegendre
from .power import PowerLegendre, balanced_init
from .quadratic import QuadraticLegendre, check_commuting_matrices
from .reparam import Reparameterization, broadcast_x0
from .spectral import SpectralEntropy


class MW(Reparameterization):
    """x = m⊙w with weight decay h = ½(‖m‖² + ‖w‖²) (Eq. 9 / Eq. 10)."""

    name = "mw"

    def __init__(self, n: int, init_kind: str = "general"):
        super().__init__(n, {"m": (n,), "w": (n,)})
        if init_kind not in ("general", "coupled"):
            raise ValueError(f"init_kind must be 'general' or 'coupled', got {init_kind!r}")
        self.init_kind = init_kind
        if init_kind == "coupled":
            self.name = "mw-coupled"

    def g(self, w):
        p = self.unpack(w)
        return p["m"] * p["w"]

    def pullback(self, w, v):
        p = self.unpack(w)
        return torch.cat([v * p["w"], v * p["m"]], -1)

    def init(self, scale=1.0, x0=None, generator=None):
        s = float(scale)
        if self.init_kind == "coupled" and x0 is None:
            m0 = torch.full((self.n,), s, dtype=F64)
            return self.pack(m=m0, w=m0)
        x0 = broadcast_x0(x0, self.n)
        if self.init_kind == "coupled":
            r = x0.abs().sqrt()
            return self.pack(m=r, w=torch.sign(x0) * r)
        m0 = torch.sqrt(0.5 * (s * s + torch.sqrt(s**4 + 4 * x0 * x0)))
        return self.pack(m=m0, w=x0 / m0)

    def legendre(self, init, a):
        p = self.unpack(self.as_params(init))
        coupled = p["m"].abs() == p["w"].abs()
        if bool(coupled.all()):
            return CoupledEntropy(p["m"] * p["w"], a, beta=2.0, rate=2.0)
        if bool(coupled.any()):
            raise ValueError(
                "m⊙w: some coordinates have |m_0| = |w_0| and others not; Eq. (9) needs "
                "|m_0| ≠ |w_0| everywhere and Eq. (10) needs m_0 = ±w_0 everywhere"
            )
        return HyperbolicEntropy.from_mw(p["m"], p["w"], a)


class PSD(Reparameterization):
    """W = UUᵀ (U ∈ ℝ^{n×n}) with h = ½‖U‖_F² (Cor. C.3, Eq. 17). x = vec(W) has n² entries."""

    name = "uut"

    def __init__(self, n: int):
        super().__init__(n * n, {"U": (n, n)})
        self.size = n

    def point(self, x):
        return x.reshape(*x.shape[:-1], self.size, self.size)

    def flat(self, x):
        return x.reshape(*x.shape[:-2], -1)

    def g(self, w):
        U = self.unpack(w)["U"]
        return self.flat(U @ U.transpose(-1, -2))

    def pullback(self, w, v):
        U = self.unpack(w)["U"]
        V = self.point(v)
        return self.flat((V + V.transpose(-1, -2)) @ U)

    def init(self, scale=1.0, x0=None, generator=None):
        return self.pack(U=float(scale) * torch.eye(self.size, dtype=F64))

    def legendre(self, init, a):
        U = self.unpack(self.as_params(init))["U"]
        return SpectralEntropy(U @ U.T, a)


class PowerDiff(Reparameterization):
    """x = u^{2k} − v^{2k} with the matched penalty h = Σ u^{2k} + v^{2k} (Eq. 11; Cor. 3.12, Example 3.14)
    or, with ``penalty="l2"``, plain weight decay h = ½(‖u‖² + ‖v‖²) (Woodworth et al. 2020's model).

    Exact decay flows (``decay_flow``, time s = ηλ): l2 gives w ← e^{−s} w; matched gives u ← e^{−2s} u for
    k = 1 and, from d/dt u^{2−2k} = 4k(k−1) for k > 1, u ← sign(u)(|u|^{2−2k} + 4k(k−1)s)^{−1/(2k−2)}.
    R_a: matched as Eq. (11) (k > 1) or the hyperbolic entropy (k = 1); l2 with k = 1 is the matched case at
    a/2 (½(u² + v²) is half the matched h); l2 with k > 1 does not commute ([∇g, ∇h] = (2 − 2k)∇g) and
    ``legendre`` raises ``NonCommutingError``.
    """

    name = "power"
    PENALTIES = ("matched", "l2")

    def __init__(self, n: int, k: float = 2, penalty: str = "matched"):
        super().__init__(n, {"u": (n,), "v": (n,)})
        if not float(k) >= 1:
            raise ValueError(f"k must be ≥ 1, got {k!r}")
        if penalty not in self.PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(self.PENALTIES)}, got {penalty!r}")
        self.k = float(k)
        self.penalty = penalty
        self.weight_decay_l2 = penalty == "l2"
        if penalty == "l2":
            self.hint = f" (h = ½‖w‖² on u^{{2k}} − v^{{2k}}: [∇g, ∇h] = (2 − 2k)∇g = {2 - 2 * self.k:g}·∇g)"

    def _halves(self, t):
        return t[..., : self.n], t[..., self.n :]

    def g(self, w):
        u2k, v2k = self._halves(w ** (2 * self.k))  # powers on the whole contiguous w (one kernel call)
        return u2k - v2k

    def h(self, w):
        if self.weight_decay_l2:
            return super().h(w)
        p = self.unpack(w)
        return (p["u"] ** (2 * self.k) + p["v"] ** (2 * self.k)).sum(-1)

    def h_grad(self, w):
        if self.weight_decay_l2:
            return w
        p = self.unpack(w)
        c = 2 * self.k
        return torch.cat([c * p["u"] ** (c - 1), c * p["v"] ** (c - 1)], -1)

    @property
    def has_exact_decay(self) -> bool:
        return True

    def decay_flow(self, w, s):
        if self.weight_decay_l2:
            return w * torch.exp(-s)
        k = self.k
        if k == 1.0:  # h = Σ u² + v²: dw/dt = −2w
            return w * torch.exp(-2.0 * s)
        mag = w.abs()
        inv = mag.clamp_min(torch.finfo(w.dtype).tiny) ** (2 - 2 * k) + 4 * k * (k - 1) * s
        return torch.sign(w) * inv ** (-1.0 / (2 * k - 2)) * (mag > 0)

    def pullback(self, w, v):
        c = 2 * self.k
        du, dv = self._halves(w ** (c - 1))
        return torch.cat([v * c * du, -v * c * dv], -1)

    def init(self, scale=1.0, x0=None, generator=None):
        u0, v0 = balanced_init(broadcast_x0(x0, self.n), scale, self.k)
        return self.pack(u=u0, v=v0)

    def legendre(self, init, a):
        if self.weight_decay_l2 and self.k != 1.0:
            return self.generic_legendre(init, a)
        if self.weight_decay_l2:
            a = 0.5 * float(a)
        p = self.unpack(self.as_params(init))
        if self.k == 1.0:
            return HyperbolicEntropy.from_u2v2(p["u"], p["v"], a)
        return PowerLegendre(p["u"], p["v"], self.k, a)


class LogDiff(Reparameterization):
    """x = log u − log v (u, v > 0) with h = Σ log u + log v (App. E, log-cosh R_a)."""

    name = "log"
    weight_decay_l2 = False

    def __init__(self, n: int):
        super().__init__(n, {"u": (n,), "v": (n,)})

    def g(self, w):
        p = self.unpack(w)
        return torch.log(p["u"]) - torch.log(p["v"])

    def h(self, w):
        p = self.unpack(w)
        return (torch.log(p["u"]) + torch.log(p["v"])).sum(-1)

    def h_grad(self, w):
        p = self.unpack(w)
        return torch.cat([1.0 / p["u"], 1.0 / p["v"]], -1)

    def pullback(self, w, v):
        p = self.unpack(w)
        return torch.cat([v / p["u"], -v / p["v"]], -1)

    def init(self, scale=1.0, x0=None, generator=None):
        x0 = broadcast_x0(x0, self.n)
        s = 2.0 * float(scale)
        return self.pack(u=s * torch.sigmoid(x0), v=s * torch.sigmoid(-x0))

    def legendre(self, init, a):
        p = self.unpack(self.as_params(init))
        if not bool(((p["u"] > 0) & (p["v"] > 0)).all()):
            raise ValueError("log u − log v needs u_0 > 0 and v_0 > 0")
        return LogCoshLegendre(p["u"], p["v"], a)


class Quadratic(Reparameterization):
    """g_i = ½wᵀA_iw, h = ½wᵀBw with commuting symmetric A_i, B (Theorem 3.15)."""

    name = "quadratic"

    def __init__(self, A, B=None):
        A = torch.as_tensor(A, dtype=F64)
        if A.dim() != 3 or A.shape[1] != A.shape[2]:
            raise ValueError(f"A must have shape (n, d, d), got {tuple(A.shape)}")
        super().__init__(A.shape[0], {"w": (A.shape[1],)})
        self.A = A
        self.B = None if B is None else torch.as_tensor(B, dtype=F64)
        eye = torch.eye(A.shape[1], dtype=F64)
        self.weight_decay_l2 = self.B is None or bool(torch.equal(self.B, eye))
        self._B = eye if self.B is None else self.B

    @classmethod
    def from_mw(cls, n: int) -> Quadratic:
        """m⊙w written as g_i = ½wᵀA_iw on w = (m, w): A_i couples m_i and w_i (B = I)."""
        A = torch.zeros(n, 2 * n, 2 * n, dtype=F64)
        for i in range(n):
            A[i, i, n + i] = A[i, n + i, i] = 1.0
        return cls(A)

    def g(self, w):
        return 0.5 * torch.einsum("...a,nab,...b->...n", w, self.A, w)

    def h(self, w):
        return 0.5 * torch.einsum("...a,ab,...b->...", w, self._B, w)

    def h_grad(self, w):
        return w @ self._B.T

    def pullback(self, w, v):
        return torch.einsum("...n,nab,...b->...a", v, self.A, w)

    def init(self, scale=1.0, x0=None, generator=None):
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        return float(scale) * torch.randn(self.d, generator=gen, dtype=F64)

    def check(self) -> None:
        """Raise ``NonCommutingError`` naming the first non-commuting pair."""
        check_commuting_matrices(self.A, self._B)

    def legendre(self, init, a):
        return QuadraticLegendre(self.A, self.B, self.as_params(init), a)


class Identity(Reparameterization):
    """x = w with L2 weight decay: not commuting (Cor. D.1); R_a exists only for a = 0 (½‖x − x_0‖²)."""

    name = "linear"
    hint = " (Cor. D.1: L2 weight decay on a linear parameterization stores nothing in a geometry)"

    def __init__(self, n: int):
        super().__init__(n, {"x": (n,)})

    def g(self, w):
        return w

    def pullback(self, w, v):
        return v

    def init(self, scale=1.0, x0=None, generator=None):
        return self.pack(x=broadcast_x0(x0, self.n))

    def legendre(self, init, a):
        return self.generic_legendre(init, a)


class DeepProduct(Reparameterization):
    """x = w_1 ⊙ ⋯ ⊙ w_D (D = 3: m⊙w⊙v) with h = ½Σ‖w_k‖²: not commuting for D ≥ 3 (Theorem D.2)."""

    name = "depth3"

    def __init__(self, n: int, depth: int = 3):
        depth = int(depth)
        if depth < 2:
            raise ValueError(f"depth must be ≥ 2, got {depth}")
        names = ("m", "w", "v") if depth == 3 else tuple(f"w{i + 1}" for i in range(depth))
        super().__init__(n, {k: (n,) for k in names})
        self.depth = depth
        self.name = "depth3" if depth == 3 else f"depth{depth}"
        self.hint = f" (Theorem D.2: [∇g_i, ∇h] = (2 − D)∇g_i = {2 - depth}·∇g_i for depth D = {depth})"

    def g(self, w):
        out = None
        for t in self.unpack(w).values():
            out = t if out is None else out * t
        return out

    def pullback(self, w, v):
        ps = list(self.unpack(w).values())
        grads = []
        for i in range(len(ps)):
            prod = v
            for j, t in enumerate(ps):
                if j != i:
                    prod = prod * t
            grads.append(prod)
        return torch.cat(grads, -1)

    def init(self, scale=1.0, x0=None, generator=None):
        s = float(scale)
        x0 = broadcast_x0(x0, self.n)
        parts = {k: torch.full((self.n,), s, dtype=F64) for k in self.parts}
        parts[list(self.parts)[-1]] = x0 / s ** (self.depth - 1)
        return self.pack(**parts)

    def legendre(self, init, a):
        return self.generic_legendre(init, a)


class Custom(Reparameterization):
    """A user's own (g, h) as torch callables on w ∈ ℝ^d; R_a through the generic commuting-flow path."""

    weight_decay_l2 = False

    def __init__(self, g: Callable, h: Callable | None, n: int, d: int, name: str = "custom"):
        super().__init__(n, {"w": (d,)})
        self._gfn, self._hfn, self.name = g, h, name

    def g(self, w):
        return self._gfn(w)

    def h(self, w):
        if self._hfn is None:
            raise ValueError(f"{self.name}: no regularizer h was given")
        return self._hfn(w)

    def h_grad(self, w):
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (gr,) = torch.autograd.grad(self.h(w_).sum(), w_)
        return gr

    def init(self, scale=1.0, x0=None, generator=None):
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        return float(scale) * torch.randn(self.d, generator=gen, dtype=F64)

    def legendre(self, init, a):
        from .numeric import FlowLegendre

        return FlowLegendre(self._gfn, self._hfn, self.as_params(init), a)


REPARAMETERIZATIONS: dict[str, Callable[..., Reparameterization]] = {
    "mw": lambda n=1, **kw: MW(n),
    "mw-coupled": lambda n=1, **kw: MW(n, init_kind="coupled"),
    "uut": lambda n=1, **kw: PSD(n),
    "power": lambda n=1, k=2, penalty="matched", **kw: PowerDiff(n, k, penalty),
    "log": lambda n=1, **kw: LogDiff(n),
    "linear": lambda n=1, **kw: Identity(n),
    "depth3": lambda n=1, **kw: DeepProduct(n, 3),
}


def get(name, n: int = 1, **options) -> Reparameterization:
    """A reparameterization by registry name (``mw``, ``mw-coupled``, ``uut``, ``power``, ``log``, ``linear``,
    ``depth3``); an existing :class:`Reparameterization` is returned unchanged. ``quadratic`` needs its
    matrices: use ``Quadratic(A, B)``. ``n`` is the dimension of x (``uut``: the matrix size)."""
    if isinstance(name, Reparameterization):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in REPARAMETERIZATIONS:
        raise KeyError(f"unknown reparameterization {name!r} (known: {', '.join(REPARAMETERIZATIONS)})")
    return REPARAMETERIZATIONS[key](n, **options)


def legendre(reparam, init, a: float, n: int | None = None, **options) -> LegendreFunction:
    """R_a for ``reparam`` at ``init`` and accumulated regularization ``a``.

    ``reparam`` is a registry name (then ``n=`` is needed), a :class:`Reparameterization`, or a pair
    ``(g, h)`` of torch callables — the generic path, which checks the Lie brackets first and raises
    ``NonCommutingError`` naming the first non-zero one.
    """
    if isinstance(reparam, tuple) and len(reparam) == 2 and callable(reparam[0]):
        from .numeric import FlowLegendre

        return FlowLegendre(reparam[0], reparam[1], init, a, **options)
    if n is None and not isinstance(reparam, Reparameterization):
        raise ValueError("legendre(name, ...) needs n= (dimension of x) when reparam is a name")
    rep = get(reparam, n or 1, **options)
    return rep.legendre(init, a)


__all__ = [
    "MW",
    "PSD",
    "PowerDiff",
    "LogDiff",
    "Quadratic",
    "Identity",
    "DeepProduct",
    "Custom",
    "REPARAMETERIZATIONS",
    "get",
    "legendre",
]
