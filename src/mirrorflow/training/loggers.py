"""Where a plain training loop's metrics go: TensorBoard, Weights & Biases, MLflow.

A sink has ``log(metrics, step)`` and ``close()``. :class:`~mirrorflow.training.monitor.SpectralMonitor`
sends every measurement (ρ and the other spectral keys, with ``wd/lambda`` and ``wd/a`` when it is given a
:class:`~mirrorflow.training.scheduler.WeightDecayScheduler`) to each sink in its ``loggers=`` list.
Each library is imported when its sink is built; a missing one is named with the command to install it.

* :class:`TensorBoardSink` ``(log_dir)``: ``torch.utils.tensorboard.SummaryWriter`` scalars.
* :class:`WandbSink` ``(run=None)``: ``run.log(metrics, step=step)`` on the given run or ``wandb.run``
  (``wandb.init`` first; ``WANDB_MODE=offline`` works without an account).
* :class:`MLflowSink` ``(run_id=None)``: ``mlflow.log_metrics(metrics, step=step)`` in the active run or
  the given one (a file store works: ``mlflow.set_tracking_uri("file:/path")``).

>>> import tempfile
>>> sink = make_sink("tensorboard:" + tempfile.mkdtemp())
>>> type(sink).__name__
'TensorBoardSink'
>>> sink.close()
"""

from __future__ import annotations

import math
import os
from typing import Protocol

__all__ = ["MetricsSink", "TensorBoardSink", "WandbSink", "MLflowSink", "make_sink"]


class MetricsSink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{module} is not installed: pip install {package}") from err


class TensorBoardSink:
    """Scalars in a TensorBoard event file under ``log_dir`` (one tag per metrics key)."""

    def __init__(self, log_dir: str | os.PathLike):
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """``run.log(metrics, step=step)`` on ``run`` (default: the current ``wandb.run``)."""

    def __init__(self, run=None):
        wandb = _need("wandb", "wandb")
        self.run = run if run is not None else wandb.run
        if self.run is None:
            raise ValueError("WandbSink: no W&B run: call wandb.init(...) first or pass run=")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=int(step))

    def close(self) -> None:  # the run belongs to the caller, who finishes it
        pass


class MLflowSink:
    """``log_batch`` of the metrics at ``step`` into the active MLflow run, or into ``run_id``."""

    def __init__(self, run_id: str | None = None):
        self.mlflow = _need("mlflow", "mlflow-skinny")
        if run_id is None:
            active = self.mlflow.active_run()
            if active is None:
                raise ValueError("MLflowSink: no active MLflow run: use mlflow.start_run() or pass run_id=")
            run_id = active.info.run_id
        self.run_id = run_id
        self.client = self.mlflow.MlflowClient()

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v) if math.isfinite(v) else float("nan"), now, int(step)) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:  # the run belongs to the caller, who ends it
        pass


def make_sink(spec) -> MetricsSink:
    """A sink from a spec: a sink object (returned as is), ``"tensorboard:DIR"``, ``"wandb"`` (the current
    run) or ``"mlflow"`` (the active run)."""
    if hasattr(spec, "log") and hasattr(spec, "close"):
        return spec
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        if kind == "tensorboard" and arg:
            return TensorBoardSink(arg)
        if kind == "wandb" and not arg:
            return WandbSink()
        if kind == "mlflow" and not arg:
            return MLflowSink()
    raise ValueError(f"loggers: unknown logger {spec!r} (use 'tensorboard:DIR', 'wandb', 'mlflow' or a sink object)")
