"""What the transformer experiments (``lora``, ``attention``) share; named ``transformer_kit`` so that it does
not shadow the ``transformers`` library it wraps.

* :mod:`.config` — the sub-configs both use (automatic switch-off, speaker task, runtime) and the switch-off
  step (a step or a fraction of the run);
* :mod:`.models` — pretrained models by name (offline first), seeds, threads;
* :mod:`.distributed` — ranks and devices under ``torchrun``;
* :mod:`.tasks` — the data and losses (speaker classification, causal LM, digits);
* :mod:`.train` — the training loop with weight decay kept or turned off, arms branched from snapshots;
* :mod:`.groups` — a (setting, λ, seed) group of arms as a cached run directory, run on the engine's pool;
* :mod:`.arms` — reading arms across seeds: finals, curves, ρ crossings.
"""
