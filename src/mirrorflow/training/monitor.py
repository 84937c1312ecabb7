"""``SpectralMonitor``: ρ and the other spectral metrics of a model's factorized products, every N steps.

For each :class:`~mirrorflow.training.factors.FactorPair` ``W_ℓ`` (attention W_Q W_Kᵀ per layer or head,
LoRA B A, user pairs) it reports ``spectral/<pair>/<metric>`` for the metrics of
:func:`~mirrorflow.training.spectral.spectral_metrics`, and the paper's aggregate (docs/theory.md#rho)

    spectral/rho      = ( (1/L) Σ_ℓ ‖W_ℓ‖_* ) / ( (1/L) Σ_ℓ ‖W_ℓ‖_F )   (ratio of layer averages: the text)
    spectral/rho_mean = (1/L) Σ_ℓ ‖W_ℓ‖_* / ‖W_ℓ‖_F                  (average of ratios: the ICLR-era CSV)

The paper does not settle which of the two it plots (docs/theory.md#rho); both are logged. Pairs whose product
is 0 (LoRA at init, B = 0) have ρ = NaN and are left out of ``rho_mean``; ``rho`` is NaN while all products are 0.
``spectral/nuclear_mean`` and ``spectral/frobenius_mean`` are the two averages. When pairs of several kinds
are monitored (``include="all"``), the aggregates are also given per kind: ``spectral/<kind>/rho``.

Pairs with the same factor shapes are stacked and measured in one batched QR/SVD call.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..schedules import as_count
from .factors import FactorPair, find_factor_pairs
from .loggers import TensorBoardSink, make_sink
from .spectral import METRICS, batched_spectral_metrics, product_singular_values

__all__ = ["SpectralMonitor", "CsvAppender"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return str(v)


class CsvAppender:
    """Append rows to a CSV file, one ``write`` of a whole line per row (``O_APPEND``), flushed and fsynced.

    A line cut short by a crash is removed when the file is opened again; an existing file must have the
    same header (a resumed run), otherwise ``ValueError``. Columns are fixed by the first row. With ``key``
    (a numeric column, e.g. ``"step"``), a row whose key is not beyond the file's last row is skipped: a run
    resumed from a checkpoint does not write the steps it already wrote again.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True, key: str | None = None):
        self.path = Path(path)
        self.columns: list[str] | None = None
        self.fsync = fsync
        self.key = key
        self.written_through: float | None = None  # the key of the file's last row

    def _existing_header(self) -> list[str] | None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if not data.endswith(b"\n"):  # a half-written last line: drop it
                cut = data.rfind(b"\n") + 1
                fh.truncate(cut)
                data = data[:cut]
        if not data:
            return None
        lines = data.decode().rstrip("\n").split("\n")
        header = lines[0].split(",")
        if self.key in header and len(lines) > 1:
            with contextlib.suppress(ValueError):
                self.written_through = float(lines[-1].split(",")[header.index(self.key)])
        return header

    def append(self, row: dict) -> None:
        if self.columns is None:
            columns = list(row.keys())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existing = self._existing_header()
            if existing is None:
                self._write(",".join(columns) + "\n")
            elif existing != columns:
                raise ValueError(
                    f"{self.path} exists with different columns ({len(existing)} vs {len(columns)}); "
                    "use another csv_path or delete the file"
                )
            self.columns = columns
        if self.written_through is not None and float(row[self.key]) <= self.written_through:
            return  # already in the file (a resumed run)
        if self.key is not None:
            self.written_through = float(row[self.key])
        self._write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")

    def _write(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


class SpectralMonitor:
    """Spectral metrics of factorized products, on every ``every``-th step.

    Args:
        model: the model to search with :func:`~mirrorflow.training.factors.find_factor_pairs`
            (may be ``None`` when ``pairs`` is given).
        every: measure on steps ``t`` with ``t % every == 0`` (``t`` = the call count, or the ``step``
            passed to :meth:`step`), so the first call measures.
        pairs: explicit :class:`FactorPair` list (skips discovery).
        per_head: attention products per head instead of per layer.
        csv_path: append one row per measurement (``step`` + all keys) to this CSV; a
            :class:`~mirrorflow.store.RunDir` means its ``spectral.csv``.
            On a resumed run, steps already in the file are not written again.
        tensorboard_dir: also write scalars with ``torch.utils.tensorboard`` when it is installed
            (a warning otherwise); shorthand for ``loggers=["tensorboard:DIR"]``.
        scheduler: a :class:`~mirrorflow.training.scheduler.WeightDecayScheduler`; each measurement then also
            has ``wd/lambda`` (λ of the step just taken, first driven group) and ``wd/a`` (a_t).
        loggers: sinks of :mod:`mirrorflow.training.loggers` (``"tensorboard:DIR"``, ``"wandb"``,
            ``"mlflow"`` or sink objects); every measurement goes to each.
        include, extra: passed to ``find_factor_pairs``.
        per_pair: report the per-pair keys (set False to log only the aggregates).
        dtype: working precision of the SVDs (default: the factors', at least float32).

    >>> import torch
    >>> from mirrorflow.training.factors import FactorPair
    >>> L, R = torch.eye(4)[:, :2], 2 * torch.eye(4)[:2]
    >>> mon = SpectralMonitor(pairs=[FactorPair("w", lambda: L, lambda: R)], every=5)
    >>> m = mon.step(); m["spectral/w/nuclear"], round(m["spectral/rho"], 12)
    (4.0, 1.414213562373)
    >>> mon.step()
    {}
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        every: int = 10,
        pairs: Sequence[FactorPair] | None = None,
        per_head: bool = False,
        csv_path: str | os.PathLike | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        include: str | Iterable[str] = "auto",
        extra: Sequence[tuple] | None = None,
        per_pair: bool = True,
        dtype: torch.dtype | None = None,
        scheduler=None,
        loggers: Sequence = (),
    ):
        every = as_count("every", every)
        if pairs is None:
            if model is None:
                raise ValueError("SpectralMonitor needs a model or a list of pairs")
            pairs = find_factor_pairs(model, per_head=per_head, extra=extra, include=include)
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("SpectralMonitor: empty list of pairs")
        self.every = every
        self.per_pair = per_pair
        self.dtype = dtype
        self.calls = 0
        self.last: dict[str, float] = {}
        self.last_step: int | None = None
        self.history: list[dict[str, float]] = []
        if csv_path is not None and hasattr(csv_path, "file") and hasattr(csv_path, "finish"):  # a RunDir
            csv_path = csv_path.file("spectral.csv")
        self._csv = CsvAppender(csv_path, key="step") if csv_path is not None else None
        self.scheduler = scheduler
        self.sinks = [make_sink(x) for x in loggers]
        if tensorboard_dir is not None:
            try:
                self.sinks.append(TensorBoardSink(tensorboard_dir))
            except ModuleNotFoundError:
                warnings.warn(
                    "tensorboard is not installed: SpectralMonitor writes no TensorBoard events", stacklevel=2
                )

    @property
    def pair_names(self) -> list[str]:
        return [p.name for p in self.pairs]

    # -- measurement -------------------------------------------------------------------------------
    def singular_values(self) -> dict[str, torch.Tensor]:
        """Current singular values of every pair (descending, float64), batched by factor shape."""
        groups: dict[tuple, list[int]] = {}
        factors = []
        for i, p in enumerate(self.pairs):
            L, R = p.left().detach(), p.right().detach()
            factors.append((L, R))
            key = (tuple(L.shape), tuple(R.shape), L.dtype, R.dtype, L.device, R.device)
            groups.setdefault(key, []).append(i)
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for idx in groups.values():
                Ls = torch.stack([factors[i][0] for i in idx])
                Rs = torch.stack([factors[i][1] for i in idx])
                s = product_singular_values(Ls, Rs, dtype=self.dtype).to(torch.float64).cpu()
                for row, i in enumerate(idx):
                    out[self.pairs[i].name] = s[row] * abs(self.pairs[i].current_scale())
        return out

    def compute(self, step: int | None = None) -> dict[str, float]:
        """Measure now (whatever the step) and log; returns the metrics dict."""
        svals = self.singular_values()
        names = [p.name for p in self.pairs]
        k = max(s.numel() for s in svals.values())
        S = torch.zeros(len(names), k, dtype=torch.float64)
        for i, n in enumerate(names):
            S[i, : svals[n].numel()] = svals[n]
        per = batched_spectral_metrics(S)
        metrics: dict[str, float] = {}
        if self.per_pair:
            for i, n in enumerate(names):
                for m in METRICS:
                    metrics[f"spectral/{n}/{m}"] = float(per[m][i])
        metrics.update(self._aggregate(per, range(len(names)), "spectral"))
        kinds = sorted({p.kind for p in self.pairs})
        if len(kinds) > 1:
            for kind in kinds:
                idx = [i for i, p in enumerate(self.pairs) if p.kind == kind]
                metrics.update(self._aggregate(per, idx, f"spectral/{kind}"))
        if self.scheduler is not None:
            metrics.update(self.scheduler.wd_metrics())
        self.last = metrics
        self.last_step = step
        self._log(metrics, step)
        return metrics

    @staticmethod
    def _aggregate(per: dict[str, torch.Tensor], idx, prefix: str) -> dict[str, float]:
        idx = list(idx)
        nuc = per["nuclear"][idx]
        fro = per["frobenius"][idx]
        rho = per["rho"][idx]
        nuc_mean, fro_mean = float(nuc.mean()), float(fro.mean())
        finite = rho[~torch.isnan(rho)]
        return {
            f"{prefix}/rho": nuc_mean / fro_mean if fro_mean > 0 else math.nan,
            f"{prefix}/rho_mean": float(finite.mean()) if finite.numel() else math.nan,
            f"{prefix}/nuclear_mean": nuc_mean,
            f"{prefix}/frobenius_mean": fro_mean,
        }

    def step(self, step: int | None = None) -> dict[str, float]:
        """Call once per training step. Measures when ``t % every == 0`` (t = ``step`` or the call count).

        Returns the metrics on a measuring step and ``{}`` otherwise.
        """
        t = self.calls if step is None else int(step)
        self.calls += 1
        if t % self.every:
            return {}
        return self.compute(t)

    # -- output ---------------------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float], step: int | None) -> None:
        t = step if step is not None else self.calls
        row = {"step": t, **metrics}
        self.history.append(row)
        if self._csv is not None:
            self._csv.append(row)
        for sink in self.sinks:
            sink.log(metrics, t)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def __enter__(self) -> SpectralMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kinds = sorted({p.kind for p in self.pairs})
        return f"SpectralMonitor({len(self.pairs)} pairs {kinds}, every={self.every})"
