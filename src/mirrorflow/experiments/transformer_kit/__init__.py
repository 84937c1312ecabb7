"""What the transformer experiments (``lora``, ``attention``) share.

* :mod:`.models` — pretrained models by name (offline first), seeds, threads;
* :mod:`.distributed` — ranks and devices under ``torchrun``;
* :mod:`.tasks` — the data and losses (speaker classification, causal LM, digits);
* :mod:`.train` — the training loop with weight decay kept or turned off, arms branched from snapshots;
* :mod:`.groups` — a (setting, λ, seed) group of arms as a cached run directory, run on a worker pool;
* :mod:`.arms` — reading arms across seeds: finals, curves, ρ crossings.
"""
