"""Matrix sensing with W = UUᵀ and weight decay on U (Sec. 5, App. C, Table 2; docs/matrix-sensing.md).

The experiment's files (the shape every experiment package has):

* :mod:`.config` — ``Config``, one run's settings and its weight-decay schedule λ_t;
* :mod:`.problem` — the data and the batched gradient descent (``make_data``, ``MatrixSensing``, ``run_many``);
* :mod:`.run` — ``run``, ``write_run``, ``reproduce_plan``, ``reproduce`` (Table 2 or a study);
* :mod:`.report` — Table 2's columns, its markdown and figures;
* :mod:`.studies` — Table 2's arms by name and the multi-seed studies (``reproduce preset=...``).
"""

from .config import Config
from .problem import MatrixSensing, SensingData, effective_rank, make_data, run_group, run_many
from .report import metric_rows, summarize, table2_markdown
from .run import estimate_bytes, reproduce, reproduce_plan, run, write_run
from .studies import check_budget, table2_arms, table2_named

__all__ = [
    "Config",
    "MatrixSensing",
    "SensingData",
    "check_budget",
    "effective_rank",
    "estimate_bytes",
    "make_data",
    "metric_rows",
    "reproduce",
    "reproduce_plan",
    "run",
    "run_group",
    "run_many",
    "summarize",
    "table2_arms",
    "table2_markdown",
    "table2_named",
    "write_run",
]
