"""Is (g, h) commuting and regular? Numerical (autograd) and symbolic (sympy) checks.

* Lie bracket (Def. 3.2): [X, Y](w) = ∂Y(w) X(w) − ∂X(w) Y(w).
* Commuting (Def. 3.3): [∇g_i, ∇g_j] = 0 for all i, j and, for Theorem 3.6 with weight decay,
  [∇g_i, ∇h] = 0 for all i. For gradient fields [∇g_i, ∇g_j] = ∇²g_j ∇g_i − ∇²g_i ∇g_j.
* Regular (Def. 3.1): the Jacobian ∂g(w) ∈ ℝ^{n×d} has rank n.
* Corollary 3.12 (separable g_i = Σ_j g_ij(w_ij), h = Σ h_ij(w_ij), analytic): commuting iff the
  Wronskian g_ij' h_ij'' − h_ij' g_ij'' vanishes, i.e. h_ij = c_ij g_ij + const.
* Theorem D.2: for g = w_1 ⋯ w_D (depth D) and h = ½Σ w_k², [∇g, ∇h] = (2 − D)∇g (Euler's identity:
  ∇²g w = (D − 1)∇g), so only D = 2 commutes with weight decay. Cor. D.1: g = id never commutes with
  h = ½‖w‖² ([e_i, ∇h] = e_i).

Callables take a parameter vector w of shape (d,) and return g(w) of shape (n,) / h(w) a scalar, written
with torch operations (plain reverse-mode autograd; Hessian-vector products by double backward).
Sympy input: expressions in a list of symbols.
The numerical verdict is relative: ‖[X, Y]‖ ≤ tol · (‖∂Y X‖ + ‖∂X Y‖) at every sampled point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ._num import F64

Field = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- numerical (autograd) ----------------
def gradient_field(fn: Callable[[torch.Tensor], torch.Tensor]) -> Field:
    """w ↦ ∇fn(w) for a scalar function fn (differentiable again, for brackets)."""

    def X(w: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            w_ = w if w.requires_grad else w.detach().requires_grad_(True)
            (gr,) = torch.autograd.grad(fn(w_).sum(), w_, create_graph=True)
        return gr

    return X


def _jvp(F: Field, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∂F(w) v by the double-backward trick (two reverse passes, no torch.func)."""
    with torch.enable_grad():
        w_ = w.detach().requires_grad_(True)
        Fw = F(w_)
        if not Fw.requires_grad:  # a constant field
            return torch.zeros_like(Fw)
        u = torch.zeros_like(Fw, requires_grad=True)
        (vjp,) = torch.autograd.grad(Fw, w_, grad_outputs=u, create_graph=True, allow_unused=True)
        if vjp is None:
            return torch.zeros_like(Fw)
        (out,) = torch.autograd.grad(vjp, u, grad_outputs=v.detach(), allow_unused=True)
    return torch.zeros_like(Fw) if out is None else out


def lie_bracket(X: Field, Y: Field, w: torch.Tensor) -> torch.Tensor:
    """[X, Y](w) = ∂Y(w) X(w) − ∂X(w) Y(w) (Def. 3.2), by autograd."""
    w = torch.as_tensor(w, dtype=F64) if not isinstance(w, torch.Tensor) else w
    Xw, Yw = X(w).detach(), Y(w).detach()
    return _jvp(Y, w, Xw) - _jvp(X, w, Yw)


@dataclass
class CommutingReport:
    """Verdict of :func:`check_commuting`: ``worst[name]`` is the largest relative bracket norm seen."""

    commuting: bool
    worst: dict[str, float] = field(default_factory=dict)
    first_nonzero: str | None = None
    at: torch.Tensor | None = None
    n_points: int = 0

    def __bool__(self) -> bool:
        return self.commuting

    @property
    def message(self) -> str:
        if self.commuting:
            return f"commuting: all {len(self.worst)} Lie brackets vanish at {self.n_points} sampled points"
        pt = "" if self.at is None else f" at w={[round(float(v), 4) for v in self.at.flatten()[:6]]}"
        return (
            f"not commuting: {self.first_nonzero} ≠ 0 (relative norm {self.worst[self.first_nonzero]:.3g}"
            f"{pt}); Theorem 3.6 needs every bracket [∇g_i, ∇g_j] and [∇g_i, ∇h] to vanish"
        )


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """a − b and its norm relative to ‖a‖ + ‖b‖ (0 when both vanish)."""
    diff = a - b
    scale = float(a.norm() + b.norm())
    return diff, (float(diff.norm()) / scale if scale > 0 else 0.0)


def brackets(g: Callable, h: Callable | None, w: torch.Tensor) -> dict[str, tuple[torch.Tensor, float]]:
    """All brackets [∇g_i, ∇g_j] (i < j) and [∇g_i, ∇h] at one point: name → (bracket, relative norm).

    [∇g_i, ∇g_j] = ∇²g_j ∇g_i − ∇²g_i ∇g_j; each Hessian-vector product is one double-backward pass.
    The relative norm divides by ‖∇²g_j ∇g_i‖ + ‖∇²g_i ∇g_j‖ (scale-free; 0 when both terms vanish).
    """
    with torch.enable_grad():
        w = torch.as_tensor(w, dtype=F64).detach().reshape(-1).requires_grad_(True)
        gv = g(w).reshape(-1)
        n = gv.numel()
        J = [torch.autograd.grad(gv[i], w, create_graph=True, allow_unused=True)[0] for i in range(n)]
        J = [torch.zeros_like(w) if t is None else t for t in J]

        def hvp(field: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # ∂(field)(w) v
            if not field.requires_grad:
                return torch.zeros_like(w)
            (out,) = torch.autograd.grad((field * v.detach()).sum(), w, retain_graph=True, allow_unused=True)
            return torch.zeros_like(w) if out is None else out

        out: dict[str, tuple[torch.Tensor, float]] = {}
        for i in range(n):
            for j in range(i + 1, n):
                b, r = _rel(hvp(J[j], J[i]), hvp(J[i], J[j]))
                out[f"[∇g_{i}, ∇g_{j}]"] = (b.detach(), r)
        if h is not None:
            (gh,) = torch.autograd.grad(h(w).sum(), w, create_graph=True)
            for i in range(n):
                b, r = _rel(hvp(gh, J[i]), hvp(J[i], gh))
                out[f"[∇g_{i}, ∇h]"] = (b.detach(), r)
    return out


def sample_points(
    w0: torch.Tensor,
    n_points: int = 3,
    spread: float = 0.1,
    seed: int = 0,
    far: tuple[float, ...] = (1.0, 2.0, 4.0),
    n_far: int = 4,
) -> torch.Tensor:
    """w_0, ``n_points − 1`` nearby points w_0 ⊙ e^{spread·ε} + spread·ε·[w_0 = 0] (ε ~ N(0, I)), and
    ``n_far`` points at each spread in ``far`` (a coordinate moves by e^{±4σ} at spread 4), all
    sign-preserving, so a bracket that vanishes near w_0 but not across the space (e.g. h with a kink away
    from w_0) is seen."""
    w0 = torch.as_tensor(w0, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    pts = [w0[None]]
    for sp, k in ((spread, max(n_points - 1, 0)), *((f, n_far) for f in far)):
        eps = torch.randn((k,) + tuple(w0.shape), generator=gen, dtype=F64)
        pts.append(w0 * torch.exp(sp * eps) + sp * eps * (w0 == 0))
    return torch.cat(pts, 0)


def check_commuting(
    g: Callable, h: Callable | None = None, points=None, w0=None, n_points: int = 4, tol: float = 1e-8, seed: int = 0
) -> CommutingReport:
    """Evaluate every bracket at ``points`` (or at points sampled around w_0, near and far:
    :func:`sample_points`) and report the worst.

    A numerical check: vanishing brackets at finitely many points are evidence, not a proof, that (g, h)
    commute everywhere (docs/geometry.md#what-the-commuting-check-proves); a non-vanishing bracket is a
    proof that they do not. Points where a bracket is not finite (outside g's or h's domain) are skipped;
    if no point is usable the check fails."""
    if points is None:
        if w0 is None:
            raise ValueError("check_commuting needs points= or w0=")
        points = sample_points(w0, n_points, seed=seed)
    pts = torch.as_tensor(points, dtype=F64)
    pts = pts[None] if pts.dim() == 1 else pts
    worst: dict[str, float] = {}
    first, at = None, None
    used = 0
    for w in pts:
        rs = brackets(g, h, w)
        if not all(math.isfinite(r) for _, r in rs.values()):
            continue
        used += 1
        for name, (_, r) in rs.items():
            worst[name] = max(worst.get(name, 0.0), r)
            if r > tol and first is None:
                first, at = name, w
    if used == 0:
        return CommutingReport(False, {k: math.nan for k in worst}, "no finite bracket at any sampled point", None, 0)
    return CommutingReport(first is None, worst, first, at, used)


def is_commuting(g: Callable, h: Callable | None = None, points=None, w0=None, **kw) -> bool:
    """True if all Lie brackets of (g, h) vanish at the sampled points (Def. 3.3)."""
    return check_commuting(g, h, points=points, w0=w0, **kw).commuting


def jacobian(g: Callable, w: torch.Tensor) -> torch.Tensor:
    """∂g(w) as an (n, d) matrix (one backward pass per output)."""
    with torch.enable_grad():
        w_ = torch.as_tensor(w, dtype=F64).detach().reshape(-1).requires_grad_(True)
        out = g(w_).reshape(-1)
        rows = []
        for i in range(out.numel()):
            (gr,) = torch.autograd.grad(out[i], w_, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(w_) if gr is None else gr)
    return torch.stack(rows) if rows else torch.zeros(0, w_.numel(), dtype=F64)


def jacobian_rank(g: Callable, w: torch.Tensor, rtol: float = 1e-10) -> int:
    """Rank of ∂g(w)."""
    s = torch.linalg.svdvals(jacobian(g, w))
    return int((s > rtol * s.max().clamp_min(1e-300)).sum()) if s.numel() else 0


def is_regular(g: Callable, points, n: int | None = None, rtol: float = 1e-10) -> bool:
    """Def. 3.1: ∂g(w) has full row rank n at every point."""
    pts = torch.as_tensor(points, dtype=F64)
    pts = pts[None] if pts.dim() == 1 else pts
    for w in pts:
        out = g(w)
        m = out.numel() if n is None else n
        if jacobian_rank(g, w, rtol) < m:
            return False
    return True


# ---------------------------------------------------------------- symbolic (sympy) --------------------
def symbolic_bracket(X, Y, variables):
    """[X, Y] = J_Y X − J_X Y for sympy column vectors X, Y in ``variables`` (simplified)."""
    import sympy as sp

    X, Y = sp.Matrix(X), sp.Matrix(Y)
    return sp.simplify(Y.jacobian(variables) * X - X.jacobian(variables) * Y)


def symbolic_brackets(g_exprs: Sequence, h_expr, variables) -> dict:
    """name → simplified bracket for all [∇g_i, ∇g_j] (i < j) and [∇g_i, ∇h] (sympy)."""
    import sympy as sp

    variables = list(variables)
    grad = lambda e: sp.Matrix([sp.diff(e, v) for v in variables])  # noqa: E731
    gs = [grad(e) for e in g_exprs]
    out = {}
    for i in range(len(gs)):
        for j in range(i + 1, len(gs)):
            out[f"[∇g_{i}, ∇g_{j}]"] = symbolic_bracket(gs[i], gs[j], variables)
    if h_expr is not None:
        gh = grad(h_expr)
        for i in range(len(gs)):
            out[f"[∇g_{i}, ∇h]"] = symbolic_bracket(gs[i], gh, variables)
    return out


def wronskian(g_ij, h_ij, var):
    """g' h'' − h' g'': the bracket of a separable coordinate (proof of Corollary 3.12)."""
    import sympy as sp

    g1, h1 = sp.diff(g_ij, var), sp.diff(h_ij, var)
    return sp.simplify(g1 * sp.diff(h1, var) - h1 * sp.diff(g1, var))


def separable_admissible(g_ij, h_ij, var) -> tuple[bool, object]:
    """Corollary 3.12 for one separable term: (admissible, c) with h_ij = c·g_ij + const, else (False, W)."""
    import sympy as sp

    W = wronskian(g_ij, h_ij, var)
    if W != 0:
        return False, W
    c = sp.simplify(sp.diff(h_ij, var) / sp.diff(g_ij, var))
    return True, c


def depth_bracket(D: int):
    """Theorem D.2: (bracket, factor) for g = w_1⋯w_D, h = ½Σ w_k², with [∇g, ∇h] = factor·∇g.

    ``factor`` is obtained symbolically (it is 2 − D); raises if the bracket is not a multiple of ∇g.
    """
    import sympy as sp

    if D < 1:
        raise ValueError(f"depth D must be ≥ 1, got {D}")
    ws = sp.symbols(f"w1:{D + 1}")
    g = sp.Mul(*ws)
    h = sp.Rational(1, 2) * sum(w**2 for w in ws)
    gg = sp.Matrix([sp.diff(g, w) for w in ws])
    b = symbolic_bracket(gg, sp.Matrix([sp.diff(h, w) for w in ws]), ws)
    factor = sp.simplify(b[0] / gg[0]) if gg[0] != 0 else sp.Integer(0)
    if sp.simplify(b - factor * gg) != sp.zeros(D, 1):
        raise AssertionError("bracket is not a multiple of ∇g")
    return b, factor


@dataclass
class Verdict:
    """User-facing answer of :func:`verdict`."""

    commuting: bool
    message: str
    nonzero: dict = field(default_factory=dict)
    regular: bool | None = None

    def __bool__(self) -> bool:
        return self.commuting


def verdict(g, h=None, variables=None, points=None, w0=None, tol: float = 1e-8) -> Verdict:
    """Does Theorem 3.6 apply to (g, h)? ``g``/``h`` are torch callables (numerical check at ``points``
    or near ``w0``) or sympy expressions in ``variables`` (exact check).

    The message names the first non-zero bracket, e.g. ``"[∇g_0, ∇h] = ... ≠ 0"``.
    """
    if variables is not None:
        import sympy as sp

        g_list = list(g) if isinstance(g, (list, tuple, sp.MatrixBase)) else [g]
        br = symbolic_brackets(g_list, h, variables)
        nonzero = {k: v for k, v in br.items() if v != sp.zeros(*v.shape)}
        J = sp.Matrix(g_list).jacobian(list(variables))
        regular = J.rank(simplify=True) == len(g_list)
        if not nonzero:
            msg = f"commuting (all {len(br)} brackets are identically 0): Theorem 3.6 applies"
            if not regular:
                msg += "; but ∂g is rank-deficient (not regular, Def. 3.1)"
            return Verdict(True, msg, {}, regular)
        name, val = next(iter(nonzero.items()))
        return Verdict(
            False, f"not commuting: {name} = {list(val)} ≠ 0 (Def. 3.3); Theorem 3.6 does not apply", nonzero, regular
        )
    rep = check_commuting(g, h, points=points, w0=w0, tol=tol)
    pts = points if points is not None else sample_points(w0)
    regular = is_regular(g, pts)
    nonzero = {k: v for k, v in rep.worst.items() if v > tol}
    msg = rep.message + ("" if regular else "; ∂g is rank-deficient at a sampled point (not regular, Def. 3.1)")
    return Verdict(rep.commuting, msg, nonzero, regular)
