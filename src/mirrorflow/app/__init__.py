"""What the commands do, between the command line (:mod:`mirrorflow.cli`, which parses and prints) and the
experiments (:mod:`mirrorflow.experiments`, which hold the paper's experiments and nothing else).

* :mod:`.run` — ``mirrorflow run``: ``key=value`` tokens → a validated config → one run directory;
* :mod:`.reproduce` — ``mirrorflow reproduce``: an experiment's paper reproduction and its plan;
* :mod:`.sweep` — ``mirrorflow sweep`` up to running: spec file and axes → grid points and a sweep directory
  (the running itself is :mod:`mirrorflow.engine.sweep`);
* :mod:`.phase` — ``mirrorflow phase``: phase diagrams as batched programs (a package: spec, programs, rows,
  cells, run);
* :mod:`.legendre` — ``mirrorflow legendre``: R_a of a one-dimensional reparameterization and its effects;
* :mod:`.resources` — the memory check before anything is allocated, and the ``--dry-run`` planning mode.

Every command reads its tokens with :func:`mirrorflow.config.parse_overrides` (one wording for bad tokens).
"""
