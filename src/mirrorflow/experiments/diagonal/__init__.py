"""Diagonal linear networks with weight decay, then without (App. D; Figs. 8, 9; docs/diagonal-and-sparse-coding.md).

The experiment's files (the shape every experiment package has):

* :mod:`.config` — ``Config``: the regression problem, the parameterization, the weight decays and ``off_at``;
* :mod:`.problem` — the data and the batched reparameterized regression (``make_data``, ``DiagonalNetwork``,
  ``run_sweep``);
* :mod:`.run` — ``run``, ``reproduce_plan``, ``reproduce`` (Figs. 8, 9) and Theorem 3.11's predicted limits;
* :mod:`.report` — the per-weight-decay summary, the curves and the table;
* :mod:`.studies` — the sweeps over seeds and the regime of each run.
"""

from .config import DEFAULT_LR, MODELS, POWER_PENALTIES, Config
from .problem import DiagonalNetwork, RegressionData, final_x, initial_params, make_data, reparameterization, run_sweep
from .report import metric_rows, summarize, table_markdown
from .run import estimate_bytes, predicted_limits, reproduce, reproduce_plan, run

__all__ = [
    "DEFAULT_LR",
    "MODELS",
    "POWER_PENALTIES",
    "Config",
    "DiagonalNetwork",
    "RegressionData",
    "estimate_bytes",
    "final_x",
    "initial_params",
    "make_data",
    "metric_rows",
    "predicted_limits",
    "reparameterization",
    "reproduce",
    "reproduce_plan",
    "run",
    "run_sweep",
    "summarize",
    "table_markdown",
]
