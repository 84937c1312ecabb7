"""Pretrained models by name, seeds and threads for the transformer experiments (``lora``, ``attention``).

* **Models by name.** The pretrained models (``smollm2``, ``minilm``, ``*.gguf`` files, local directories,
  hub ids from the cache) load through the public :mod:`mirrorflow.models` (one home; a user's own script
  calls :func:`mirrorflow.models.load_model`). The experiments add ``tiny-gpt2`` and ``tiny-vit``: small
  models built from a config (random init). A name that cannot be loaded raises
  :class:`~mirrorflow.errors.ModelError` naming it, one line.
* **Seeds.** :func:`set_seed` fixes Python, NumPy and torch; with dropout off (the experiments train in
  ``eval()`` mode, see :mod:`.train`) the same config gives the same numbers on CPU.
"""

from __future__ import annotations

import random
from functools import partial

from ... import models as _models
from ...models import gguf_file  # noqa: F401  (re-exported for the experiments)

TINY_MODELS = ("tiny-gpt2", "tiny-vit")
_KNOWN = "".join(f", {t!r}" for t in TINY_MODELS)

#: :func:`mirrorflow.models.load_pretrained` etc., whose "unknown model" message also names the tiny models
load_pretrained = partial(_models.load_pretrained, known=_KNOWN)
load_config = partial(_models.load_config, known=_KNOWN)
pretrained_model = partial(_models.pretrained_model, known=_KNOWN)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
