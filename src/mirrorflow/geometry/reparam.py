"""A reparameterization x = g(w) with its weight-decay regularizer h(w) (Eq. 3; Def. 3.1–3.3).

Parameters live in one flat vector w ∈ ℝ^d, the concatenation of named parts (e.g. ``m`` and ``w`` for
x = m⊙w); ``pack``/``unpack``/``as_params`` convert between the flat vector and the parts. Every family
provides, on batches ``(..., d)``:

* ``g(w)`` → x ``(..., n)`` and ``h(w)`` → ``(...)``, both torch functions (autograd-able, for ``checks``);
* ``h_grad(w)`` and ``pullback(w, v) = ∂g(w)ᵀ v`` in closed form (the training engine uses them);
* ``init(scale, x0)`` → a flat w_init, and ``legendre(init, a)`` → the time-dependent Legendre function R_a
  (Theorem 3.6) for that initialization and accumulated regularization a = −∫α.

``weight_decay_l2`` is True when h = ½‖w‖², so the decay part of the flow is exactly w ↦ e^{−s} w.
``decay_flow(w, s)`` is the exact flow of the decay part, dw/dt = −∇h(w) for time s (operator splitting:
one gradient step on f, then this flow for s = ηλ_t, stable for any ηλ); families without a closed form
return None from it and ``has_exact_decay`` is False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ._num import F64
from .legendre import LegendreFunction, NonCommutingError


def _checked_init(init):
    import functools

    @functools.wraps(init)
    def checked(self, scale=1.0, *args, **kw):
        try:
            ok = math.isfinite(float(scale)) and float(scale) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"init: scale must be positive and finite, got {scale!r}")
        return init(self, scale, *args, **kw)

    return checked


class Reparameterization:
    """Base class: subclasses set ``name``, ``parts`` (name → shape) and implement g, h, h_grad, pullback."""

    name = "reparameterization"
    weight_decay_l2 = True
    hint = ""  # appended to NonCommutingError messages (paper reference)

    def __init_subclass__(cls, **kw):
        """Every subclass's ``init(scale, ...)`` checks ``scale`` first (finite and > 0): one check, all families."""
        super().__init_subclass__(**kw)
        if "init" in cls.__dict__:
            cls.init = _checked_init(cls.__dict__["init"])

    def __init__(self, n: int, parts: Mapping[str, tuple[int, ...]]):
        if int(n) < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n = int(n)  # dimension of x = g(w)
        self.parts = dict(parts)
        self.d = sum(math.prod(s) for s in self.parts.values())

    # ---- parameters ---------------------------------------------------------------------------------
    def unpack(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, s in self.parts.items():
            m = math.prod(s)
            out[k] = w[..., i : i + m].reshape(*w.shape[:-1], *s)
            i += m
        return out

    def pack(self, **parts) -> torch.Tensor:
        missing = [k for k in self.parts if k not in parts]
        if missing:
            raise ValueError(f"{self.name}: missing parameter part(s) {missing} (parts: {list(self.parts)})")
        ts = [
            torch.as_tensor(np.asarray(parts[k]) if not isinstance(parts[k], torch.Tensor) else parts[k])
            for k in self.parts
        ]
        batch = ts[0].shape[: ts[0].dim() - len(self.parts[next(iter(self.parts))])]
        return torch.cat([t.to(F64).reshape(*batch, -1) for t in ts], -1)

    def as_params(self, init) -> torch.Tensor:
        """w_init as a flat float64 tensor from a flat tensor/array, a dict of parts or a tuple of parts."""
        if isinstance(init, Mapping):
            unknown = [k for k in init if k not in self.parts]
            if unknown:
                raise ValueError(f"{self.name}: unknown parameter part(s) {unknown} (parts: {list(self.parts)})")
            w = self.pack(**init)
        elif isinstance(init, (tuple, list)) and len(init) == len(self.parts) and len(self.parts) > 1:
            w = self.pack(**dict(zip(self.parts, init)))
        else:
            w = torch.as_tensor(init if isinstance(init, torch.Tensor) else np.asarray(init)).to(F64)
        if w.shape[-1] != self.d:
            raise ValueError(
                f"{self.name}: w_init has {w.shape[-1]} entries, expected d={self.d} (parts {dict(self.parts)})"
            )
        return w

    def point(self, x: torch.Tensor) -> torch.Tensor:
        """x = g(w) in the shape the Legendre function takes (matrices for ``uut``)."""
        return x

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`point`."""
        return x

    # ---- to implement -------------------------------------------------------------------------------
    def g(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def h(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (w * w).sum(-1)

    def h_grad(self, w: torch.Tensor) -> torch.Tensor:
        return w

    @property
    def has_exact_decay(self) -> bool:
        """Whether :meth:`decay_flow` has a closed form for this family."""
        return self.weight_decay_l2

    def decay_flow(self, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
        """w(s) for dw/dt = −∇h(w), w(0) = w: e^{−s} w for h = ½‖w‖²; None where no closed form is known.
        ``s`` (= ηλ for one step) broadcasts against ``w``."""
        if not self.weight_decay_l2:
            return None
        return w * torch.exp(-s)

    def pullback(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∂g(w)ᵀ v (autograd fallback; families override with closed forms)."""
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (gw,) = torch.autograd.grad(self.g(w_), w_, v)
        return gw

    def init(self, scale: float = 1.0, x0=None, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def legendre(self, init, a: float) -> LegendreFunction:
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------------------------------
    def x0(self, init) -> torch.Tensor:
        return self.g(self.as_params(init))

    def generic_legendre(self, init, a: float, **kw) -> LegendreFunction:
        """R_a through the generic commuting-flow path (raises ``NonCommutingError`` if (g, h) do not
        commute; the message names the bracket)."""
        from .numeric import FlowLegendre

        a = float(a)
        eye = torch.eye(self.n, dtype=F64)

        def field(w, mu):  # ∂g(w)ᵀμ + a∇h(w) in closed form
            return self.pullback(w, mu) + a * self.h_grad(w) if a != 0.0 else self.pullback(w, mu)

        def jac(w):  # ∂g(w), (B, n, d)
            B = w.shape[0]
            return self.pullback(w.unsqueeze(-2).expand(B, self.n, self.d), eye.expand(B, self.n, self.n))

        kw.setdefault("field", field)
        kw.setdefault("jac", jac)
        try:
            return FlowLegendre(self.g, self.h, self.as_params(init), a, **kw)
        except NonCommutingError as e:
            raise NonCommutingError(f"{self.name}: {e}{self.hint}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


def broadcast_x0(x0, n: int) -> torch.Tensor:
    t = torch.zeros(n, dtype=F64) if x0 is None else torch.as_tensor(x0, dtype=F64)
    return t.expand(n).clone() if t.dim() == 0 else t


__all__ = ["Reparameterization", "broadcast_x0"]
