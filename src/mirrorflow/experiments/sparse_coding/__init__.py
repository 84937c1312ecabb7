"""Sparse coding on Olivetti faces with a reparameterized sparse-code step (App. E; Figs. 11, 13;
docs/diagonal-and-sparse-coding.md).

The experiment's files (the shape every experiment package has):

* :mod:`.config` — ``Config``: the faces, the dictionary, the reparameterization and the seeds × k × α sweep;
* :mod:`.problem` — the faces and the batched code and dictionary steps (``faces``, ``SparseCoding``,
  ``run_sweep``); :mod:`.dictionary` — the dictionary steps (Mairal's and the paper code's per-sample one);
* :mod:`.run` — ``run``, ``reproduce_plan``, ``reproduce`` (Figs. 11, 13);
* :mod:`.report` — the per-configuration summary, the table and the curves;
* :mod:`.studies` — the reproduction's presets and the comparison with the paper code's stored curve.
"""

from .config import DICT_UPDATES, IMAGE_SIZES, LOG_INITS, PARAMS, Config
from .problem import LOG_CLAMP, SparseCoding, faces, run_sweep, spectral_norm_sq
from .report import metric_rows, settled_iteration, stationary_iteration, summarize
from .run import estimate_bytes, reproduce, reproduce_plan, run

__all__ = [
    "DICT_UPDATES",
    "IMAGE_SIZES",
    "LOG_CLAMP",
    "LOG_INITS",
    "PARAMS",
    "Config",
    "SparseCoding",
    "estimate_bytes",
    "faces",
    "metric_rows",
    "reproduce",
    "reproduce_plan",
    "run",
    "run_sweep",
    "settled_iteration",
    "spectral_norm_sq",
    "stationary_iteration",
    "summarize",
]
