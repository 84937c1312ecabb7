"""The paper's theory made computable: time-dependent Legendre functions R_a (Theorem 3.6), commuting
checks (Def. 3.2–3.3, Cor. 3.12, Theorem D.2), where training ends (Theorem 3.11) and the three effects.

Imports nothing from the rest of mirrorflow (only torch, numpy, scipy, sympy; matplotlib lazily in
``plot``). Conventions (docs/theory.md#notation): a = −∫_0^t α_s ds ≤ 0 (discrete: −η Σ λ_s), μ_t = −∫_0^t ∇f(x_s) ds,
and along gradient flow ∇R_{a_t}(x_t) = μ_t.

>>> import torch
>>> from mirrorflow.geometry import get
>>> mw = get("mw", n=2)
>>> leg = mw.legendre(mw.init(scale=1.0), a=-1.0)        # Eq. (9), x_0 = 0, γ_0 = 1/2
>>> leg.minimizer().tolist()
[0.0, 0.0]
>>> x = leg.grad_inverse(torch.tensor([0.25, -0.5], dtype=torch.float64))
>>> torch.allclose(leg.grad(x), torch.tensor([0.25, -0.5], dtype=torch.float64))
True
"""

from ._num import PrecisionOverflow
from .checks import (
    CommutingReport,
    Verdict,
    check_commuting,
    depth_bracket,
    gradient_field,
    is_commuting,
    is_regular,
    jacobian,
    jacobian_rank,
    lie_bracket,
    separable_admissible,
    symbolic_brackets,
    verdict,
    wronskian,
)
from .effects import dual_range, one_dimensional, positional_bias, three_effects, type_of_bias
from .families import (
    MW,
    PSD,
    REPARAMETERIZATIONS,
    Custom,
    DeepProduct,
    Identity,
    LogDiff,
    PowerDiff,
    Quadratic,
    get,
    legendre,
)
from .hyperbolic import CoupledEntropy, HyperbolicEntropy
from .legendre import LegendreFunction, NonCommutingError, OutsideDomainError
from .limits import (
    LimitNotConverged,
    LimitResult,
    accumulated_regularization,
    constrained_argmin,
    matrix_sensing_limit,
    predict_limit,
)
from .logcosh import LogCoshLegendre
from .numeric import FlowLegendre
from .power import PowerLegendre
from .quadratic import QuadraticLegendre
from .reparam import Reparameterization
from .spectral import SpectralEntropy

__all__ = [
    "LegendreFunction",
    "OutsideDomainError",
    "NonCommutingError",
    "PrecisionOverflow",
    "HyperbolicEntropy",
    "CoupledEntropy",
    "SpectralEntropy",
    "PowerLegendre",
    "LogCoshLegendre",
    "QuadraticLegendre",
    "FlowLegendre",
    "Reparameterization",
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
    "lie_bracket",
    "gradient_field",
    "check_commuting",
    "is_commuting",
    "is_regular",
    "jacobian",
    "jacobian_rank",
    "CommutingReport",
    "symbolic_brackets",
    "wronskian",
    "separable_admissible",
    "depth_bracket",
    "verdict",
    "Verdict",
    "predict_limit",
    "constrained_argmin",
    "matrix_sensing_limit",
    "accumulated_regularization",
    "LimitResult",
    "LimitNotConverged",
    "positional_bias",
    "type_of_bias",
    "dual_range",
    "three_effects",
    "one_dimensional",
]
