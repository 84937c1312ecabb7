"""mirrorflow.models.load_model: SmolLM2-135M-Instruct in one call, trainable by the Hugging Face Trainer.

The model is loaded once for this module (about 30 s on 2 cores); the Trainer takes one optimizer step of
LoRA (rank 2, q_proj and v_proj) on one 8-token window, with WeightDecayCallback driving λ."""

from __future__ import annotations

import os

import pytest
import torch

from mirrorflow.errors import ModelError
from mirrorflow.models import load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


def test_load_model_returns_a_dense_float32_model_and_its_tokenizer(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__} == {"Linear"}
    assert tok.vocab_size == 49152 and tok.pad_token is not None
    ids = tok("First Citizen: Before we proceed", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert 0 < loss < 8  # pretrained: far below uniform, ln 49152 ≈ 10.8


def test_one_trainer_step_with_peft_lora_and_the_callback(smollm2, tmp_path):
    import peft
    import transformers

    from mirrorflow.schedules import turn_off
    from mirrorflow.training.hf import WeightDecayCallback

    base, tok = smollm2
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    frozen = model.get_base_model().model.layers[0].mlp.up_proj.weight.detach().clone()
    ids = tok("First Citizen: Before we proceed any further, hear me speak.")["input_ids"][:8]
    data = [{"input_ids": torch.tensor(ids), "labels": torch.tensor(ids)}]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=1,
        learning_rate=1e-3,
        weight_decay=0.1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    cb = WeightDecayCallback(turn_off(at=0.5), monitor_every=1)  # λ = 0.1 from the arguments, off after step 0
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    with pytest.warns(UserWarning, match="accumulates a_∞"):  # 1e-3 · 0.1 is far too little to matter: warned
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    assert [h["wd/lambda"] for h in logs] == [pytest.approx(0.1), 0.0]
    assert logs[-1]["wd/a"] == pytest.approx(-1e-3 * 0.1, rel=1e-6)  # η_0 λ_0; λ_1 = 0
    assert all(1.0 <= h["spectral/rho"] <= 2**0.5 + 1e-9 for h in logs)  # ρ(BA) of rank-2 products
    assert [h["spectral/step"] for h in logs] == [1, 2]
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p.detach(), lora_b[n])]
    assert len(changed) == 60  # 30 layers × (q_proj, v_proj): the adapters trained
    assert torch.equal(model.get_base_model().model.layers[0].mlp.up_proj.weight, frozen)  # the base did not


def test_unknown_names_and_kinds_are_refused():
    with pytest.raises(ModelError, match="unknown model 'no-such-model-xyz': not 'smollm2', 'minilm'"):
        load_model("no-such-model-xyz")
    with pytest.raises(ValueError, match="kind must be one of causal-lm, encoder"):
        load_model("smollm2", kind="seq2seq")
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        load_model("smollm2", dtype="float32")
