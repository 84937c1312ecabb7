"""Statistics over seeds: mean, standard deviation, the t-interval of a mean, and paired differences.

Every table of mirrorflow that summarizes seeds uses these functions:

* :func:`mean_std` — mean and sample standard deviation (ddof = 1) of the finite values;
* :func:`t_interval` — mean and half-width of the 95 % confidence interval of the mean,

      x̄ ± t_{0.975, n−1} · s / √n,     s² = Σ (x_i − x̄)² / (n − 1);

* :func:`t_interval_columns` — the same for every column of an (n_seeds, n_points) array with missing
  values (learning curves over seeds);
* :func:`interval` — the same interval on the log scale for positive quantities that span decades
  (:func:`spans_decades`): geometric mean and 10^(mean ± half-width) of log10 x;
* :func:`paired_difference` — the comparison of two arms run on the same seeds: the per-seed differences
  d_i = b_i − a_i, their t-interval, the sign count, and the number of seeds that the observed spread says
  would resolve an effect of a given size.

Non-finite values (a diverged seed, a threshold never reached) are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "finite",
    "mean_std",
    "t_interval",
    "t_interval_columns",
    "t_quantile",
    "PairedDifference",
    "paired_difference",
    "seeds_needed",
    "format_mean_std",
    "spans_decades",
    "interval",
    "PAIRED_COLUMNS",
    "paired_cells",
]


def finite(values: Iterable[float | None]) -> list[float]:
    """The finite values of ``values`` as floats (``None``, NaN and ±inf dropped)."""
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


def t_quantile(df: int | np.ndarray, level: float = 0.95):
    """t_{(1+level)/2, df}: the two-sided quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return stats.t.ppf(0.5 + level / 2, df)


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, sample std with ddof = 1, n) over the finite values; std 0 for one value, NaN for none."""
    v = finite(values)
    if not v:
        return math.nan, math.nan, 0
    m = float(np.mean(v))
    s = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return m, s, len(v)


def t_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the ``level`` t-interval of the mean, n) over the finite values.

    The half-width is NaN when fewer than two values are finite.
    """
    x = np.asarray(finite(values), dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, 1
    return mean, float(t_quantile(n - 1, level) * x.std(ddof=1) / math.sqrt(n)), n


def t_interval_columns(Y: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise :func:`t_interval` of ``Y`` (rows = seeds): (mean, half-width, n) arrays.

    Non-finite entries are left out per column; the half-width is NaN where fewer than two are finite.
    """
    Y = np.asarray(Y, dtype=float)
    ok = np.isfinite(Y)
    k = ok.sum(0)
    Y0 = np.where(ok, Y, 0.0)
    with np.errstate(all="ignore"):
        mean = np.where(k > 0, Y0.sum(0) / np.maximum(k, 1), np.nan)
        ss = np.where(ok, (Y0 - mean) ** 2, 0.0).sum(0)
        sd = np.sqrt(ss / np.maximum(k - 1, 1))
        half = np.where(k > 1, t_quantile(np.maximum(k - 1, 1), level) * sd / np.sqrt(np.maximum(k, 1)), np.nan)
    return mean, half, k


def seeds_needed(sd: float, effect: float, level: float = 0.95) -> int | None:
    """Smallest n with t_{(1+level)/2, n−1} · sd / √n ≤ |effect|: the seeds a paired design with per-seed
    spread ``sd`` needs for its interval to exclude 0 when the true difference is ``effect``.
    None when sd or effect is not a positive finite number."""
    if not (math.isfinite(sd) and math.isfinite(effect)) or effect == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, 100_001):
        if t_quantile(n - 1, level) * sd / math.sqrt(n) <= abs(effect):
            return n
    return None


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences d_i = b_i − a_i of two arms run on the same seeds, summarized."""

    mean: float
    half_width: float  # of the 95 % t-interval of the mean difference (NaN for n < 2)
    sd: float
    n: int  # seeds where both arms are finite
    negative: int  # seeds with d_i < 0
    positive: int  # seeds with d_i > 0
    needed: int | None  # seeds the observed sd needs to resolve ``effect`` (None: no effect size given)
    effect: float | None = None

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        return self.n >= 2 and math.isfinite(self.half_width) and (self.low > 0 or self.high < 0)


def paired_difference(
    a: Sequence[float | None], b: Sequence[float | None], effect: float | None = None, level: float = 0.95
) -> PairedDifference:
    """Summary of d_i = b_i − a_i over seeds i where both values are finite (see :class:`PairedDifference`).

    ``effect`` is the effect size of interest (e.g. the paper's); ``needed`` is :func:`seeds_needed` for it.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs equally many values per arm, got {len(a)} and {len(b)}")
    d = [
        float(y) - float(x)
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    mean, half, n = t_interval(d, level)
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    needed = seeds_needed(sd, effect, level) if effect is not None else None
    return PairedDifference(mean, half, sd, n, sum(x < 0 for x in d), sum(x > 0 for x in d), needed, effect)


def claim_verdict(d: PairedDifference, direction: int, effect: float) -> str:
    """The verdict on a claim "the difference has the sign of ``direction`` (−1 or +1)", from the interval
    of ``d`` (computed at the level the decision rule asks for, e.g. Bonferroni-corrected):

    * ``reproduced`` — the interval excludes 0 on the claimed side;
    * ``refuted`` — the interval excludes the claimed effect ``direction·|effect|`` (the claimed gain of at
      least |effect| is ruled out);
    * ``inconclusive`` — neither (also with fewer than two seeds).
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction}")
    if d.n < 2 or not math.isfinite(d.half_width):
        return "inconclusive"
    if (d.high < 0) if direction < 0 else (d.low > 0):
        return "reproduced"
    if (d.low > -abs(effect)) if direction < 0 else (d.high < abs(effect)):
        return "refuted"
    return "inconclusive"


def format_mean_std(values: Iterable[float | None], spec: str = ".3f", scale: float = 1.0) -> str:
    """``"mean ± std"`` over seeds (``"–"`` when nothing is finite; one seed: its value)."""
    m, s, n = mean_std([v * scale for v in finite(values)])
    if n == 0:
        return "–"
    if n == 1:
        return format(m, spec)
    return f"{format(m, spec)} ± {format(s, spec.lstrip('+'))}"


def spans_decades(values: Iterable[float | None], ratio: float = 100.0) -> bool:
    """True when the finite values are all positive and max/min ≥ ``ratio``: such a quantity is shown on a
    log axis and its interval is computed on the log scale (:func:`interval`)."""
    v = np.asarray(finite(values), dtype=float)
    return bool(len(v) > 1 and (v > 0).all() and v.max() / v.min() >= ratio)


def interval(values: Iterable[float | None], log: bool = False, level: float = 0.95) -> tuple[float, float, float, int]:
    """(centre, low, high, n) of the ``level`` t-interval of the mean over the finite values.

    With ``log=True`` (positive quantities on a log axis) the interval is computed for log10 of the values
    and mapped back: centre = geometric mean, [low, high] = 10^(mean ± half-width), so it never reaches
    below 0. Non-positive values are then left out. low = high = NaN when fewer than two values count.
    """
    v = finite(values)
    if log:
        v = [math.log10(x) for x in v if x > 0]
    m, h, n = t_interval(v, level)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if log:
        return (
            10**m,
            (10 ** (m - h) if math.isfinite(h) else math.nan),
            (10 ** (m + h) if math.isfinite(h) else math.nan),
            n,
        )
    return m, m - h, m + h, n


PAIRED_COLUMNS = ("mean [95 % CI]", "signs −/+", "n", "seeds needed")


def paired_cells(d: PairedDifference, spec: str = "+.3f", scale: float = 1.0) -> list[str]:
    """Table cells of a paired difference (:data:`PAIRED_COLUMNS`): ``mean [low, high]`` (×``scale``),
    the sign count ``negative/positive``, the number of seeds, and the seeds needed for ``d.effect``
    (``"–"`` without an effect size; ``">n"`` style is not used: the number is the estimate)."""
    if d.n == 0:
        return ["–", "–", "0", "–"]
    m = format(d.mean * scale, spec)
    ci = (
        f" [{format(d.low * scale, spec)}, {format(d.high * scale, spec)}]"
        if math.isfinite(d.half_width)
        else " [n < 2]"
    )
    needed = "–" if d.effect is None or d.needed is None else str(d.needed)
    return [m + ci, f"{d.negative}/{d.positive}", str(d.n), needed]
