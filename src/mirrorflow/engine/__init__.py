"""How runs execute, below the commands (:mod:`mirrorflow.app`) and the experiments.

* :mod:`.batched` — full-batch gradient descent over a leading configuration axis (``BatchedProblem``,
  ``run_batched``, the λ tables of schedules); :mod:`.reparam_regression` is its reparameterized regression;
* :mod:`.grid` — sweep specs (YAML and ``key=v1,v2`` axes × seeds) resolved into validated configs with run ids;
* :mod:`.units` and :mod:`.sweep` — the units of work of a sweep (one run, or a batch sharing data), the
  local worker pool, the run store's manifest, resuming and failures; :mod:`.ray_backend` runs the same
  units on Ray;
* :mod:`.progress` — progress bars with an ETA, or the caller's ``progress(k)``;
* :mod:`.protocol` — the contract between the commands and an experiment (``Experiment``,
  ``BatchedExperiment``, ``Plan``), checked by type.

The run store itself (run directories, atomic writes, locks) is :mod:`mirrorflow.store`.
"""
