"""Phase diagrams: a 2-D grid of configurations per weight-decay schedule, run as batched tensor programs.

The paper's claim (Sec. 3–5; docs/theory.md#stored) is that weight decay switched off part-way ("turned
off") reaches solutions that neither constant weight decay (it trades fit for norm) nor no weight decay
(wrong geometry) reaches. A phase diagram maps where that holds — and *when* to switch — over two keys of
any experiment with a batched engine (matrix sensing, diagonal networks, sparse coding):

    mirrorflow phase matrix-sensing x=wd:1e-3:1:32:log y=init_scale:1e-3:1e-1:32:log metric=rec_error \\
        n=20 steps=2000 --out runs/phase-ms
    mirrorflow phase diagonal x=off:0.05:0.95:16 y=wd:0.01:1:16:log seeds=0,1,2 model=mw --out runs/phase-dn

Tokens:

* ``x=KEY:LO:HI:COUNT[:log|lin]`` and ``y=...`` — the two axes (``lin`` default). KEY is any numeric config
  field of the experiment, a row key of its program (:mod:`.programs`: ``init_scale``; sparse coding
  ``k``), or one of the phase's own keys, the same on every experiment:
  ``wd`` (λ), ``lr`` (η; sparse coding: ``lr_scale``) and ``off`` — the switch point as a *fraction of the
  run* in [0, 1] (the λ table switches at step round(off·T));
* ``wd=``, ``lr=``, ``off=`` — their values where they are not an axis (defaults: the experiment's config);
* ``seeds=0,1,2`` or ``seeds=0..2`` (:func:`mirrorflow.config.parse_seeds`) — every cell runs once per seed
  (matrix sensing, diagonal networks: a seed draws the data, one batched program per seed; sparse coding:
  per-row seeds in one program); a cell reports the mean and the half-width of the 95 % t-interval over the
  seeds;
* ``schedules=constant,turn_off,none[,auto]`` — one grid per schedule (``none`` ignores λ and ``off``,
  ``constant`` ignores ``off``: their cells run once per distinct configuration); ``auto`` is
  ``training.AutoTurnOff`` run in the same batch: λ until its signal fires (default with an ``off`` axis);
* ``auto=plateau[:SIGNAL[:TOL[:WINDOW]]]`` or ``auto=threshold:SIGNAL:LEVEL`` — its rule (default
  ``plateau:<the program's signal>:0.01:5``), observed every ``auto_every`` steps (default T/100);
* ``metric=NAME`` — the metric (lower is better) that decides the winner of a cell and whether "turned
  off beats both": turn_off < (1 − ``margin``)·min(constant, none), ``margin=0.01`` by default;
* ``metrics=a,b,c`` — the heatmaps to draw (default: the program's ``metrics``);
* ``theory=N`` — cells (an even sub-grid, first seed) where Theorem 3.11's predicted limit
  (``geometry.predict_limit``) is compared with the trained point (default 64 where the family has one);
* ``facet=KEY:V1,V2,...`` — a third key: one complete phase run per value in ``DIR/KEY=V``;
* ``device=cpu|cuda`` — where the batched programs run; ``threads=N`` torch threads on the CPU (default 1);
* every other ``key=value`` is a base config override (``n=20 steps=2000``); only final metrics are kept.

All rows (cells × schedules × seeds) that share data run as ONE batched program. Output (run store):
``config.yaml``, ``cells.csv`` (one row per cell and schedule: mean, interval, winner and margin),
``groups/`` (each finished program's rows: a killed run resumes from them), the figures of
:mod:`mirrorflow.report.phase`, and ``summary.json`` last (wall time, runs per second, the win fraction,
the winning box, the automatic switch-off against the best fixed switch).

Modules: :mod:`.spec` (the tokens → a validated :class:`PhaseSpec`), :mod:`.programs` (how each experiment
runs its rows as one batched program), :mod:`.rows` (rows grouped into programs, run and resumed),
:mod:`.cells` (means, intervals, winners, the best switch), :mod:`.run` (planning, the run directory, facets).
"""

from .cells import best_switch, turn_off_wins, winners
from .programs import PROGRAMS, PhaseProgram
from .run import is_faceted, plan_facets, plan_phase, run_phase
from .spec import Axis, PhaseSpec, parse, parse_axis

__all__ = [
    "PROGRAMS",
    "Axis",
    "PhaseProgram",
    "PhaseSpec",
    "best_switch",
    "is_faceted",
    "parse",
    "parse_axis",
    "plan_facets",
    "plan_phase",
    "run_phase",
    "turn_off_wins",
    "winners",
]
