"""find_factor_pairs on real (tiny) transformers / peft models: the products are the ones the attention uses."""

import warnings

import peft
import pytest
import torch
import transformers

from mirrorflow.errors import ModelError
from mirrorflow.training.factors import find_factor_pairs

D, H = 32, 4  # hidden size, heads (head_dim 8)

pytestmark = pytest.mark.usefixtures("one_thread")


def _zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=D, n_head=H, vocab_size=40, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2Model(cfg).double().eval()


def _bert():
    torch.manual_seed(1)
    cfg = transformers.BertConfig(
        num_hidden_layers=2, hidden_size=D, num_attention_heads=H, intermediate_size=64, vocab_size=40
    )
    return transformers.BertModel(cfg).double().eval()


def _vit():
    torch.manual_seed(2)
    cfg = transformers.ViTConfig(
        num_hidden_layers=2, hidden_size=D, num_attention_heads=H, intermediate_size=64, image_size=8, patch_size=4
    )
    return transformers.ViTModel(cfg).double().eval()


def _llama_gqa():
    torch.manual_seed(3)
    cfg = transformers.LlamaConfig(
        num_hidden_layers=1,
        hidden_size=D,
        num_attention_heads=H,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=40,
    )
    return transformers.LlamaModel(cfg).double().eval()


def _qk(model, attn_name, x):
    """Query and key activations (biases zeroed) of one attention module, as the model computes them."""
    attn = model.get_submodule(attn_name)
    if hasattr(attn, "c_attn"):
        q, k, _ = attn.c_attn(x).split(D, dim=-1)
    elif hasattr(attn, "query"):
        q, k = attn.query(x), attn.key(x)
    else:
        q, k = attn.q_proj(x), attn.k_proj(x)
    return q, k


@pytest.mark.parametrize(
    "build,names",
    [
        (_gpt2, ["h.0.attn", "h.1.attn"]),
        (_bert, ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]),
        (_vit, ["layers.0.attention", "layers.1.attention"]),
    ],
)
def test_attention_products_give_the_attention_logits(build, names):
    model = build()
    _zero_biases(model)
    pairs = find_factor_pairs(model)
    assert [p.name for p in pairs] == names
    assert {p.kind for p in pairs} == {"attention"}
    heads = find_factor_pairs(model, per_head=True)
    assert len(heads) == H * len(names)
    x = torch.randn(5, D, dtype=torch.float64)
    for pair in pairs:
        q, k = _qk(model, pair.name, x)
        W = pair.product()
        assert W.shape == (D, D)
        # Σ_h q_h k_hᵀ = x W_Q W_Kᵀ xᵀ
        assert torch.allclose(q @ k.T, x @ W @ x.T, rtol=1e-10, atol=1e-12)
        mine = [p for p in heads if p.meta["module"] == pair.name]
        assert [p.name for p in mine] == [f"{pair.name}.head{i}" for i in range(H)]
        for i, hp in enumerate(mine):
            hd = D // H
            Wh = hp.product()
            assert hp.left().shape == (D, hd) and hp.right().shape == (hd, D)
            assert torch.allclose(
                q[:, i * hd : (i + 1) * hd] @ k[:, i * hd : (i + 1) * hd].T, x @ Wh @ x.T, rtol=1e-10, atol=1e-12
            )
        assert torch.allclose(sum(p.product() for p in mine), W, rtol=1e-10, atol=1e-12)


def test_grouped_query_attention_pairs_each_query_head_with_its_key_head():
    model = _llama_gqa()
    attn = model.layers[0].self_attn
    (pair,) = find_factor_pairs(model)
    assert pair.meta == {"module": "layers.0.self_attn", "heads": H, "kv_heads": 2, "head_dim": 8}
    heads = find_factor_pairs(model, per_head=True)
    x = torch.randn(6, D, dtype=torch.float64)
    q, k = attn.q_proj(x), attn.k_proj(x)
    for i, hp in enumerate(heads):
        j = i // 2  # 4 query heads share 2 key heads
        assert torch.allclose(
            q[:, 8 * i : 8 * i + 8] @ k[:, 8 * j : 8 * j + 8].T, x @ hp.product() @ x.T, rtol=1e-10, atol=1e-12
        )
    assert torch.allclose(sum(p.product() for p in heads), pair.product(), rtol=1e-10, atol=1e-12)


def _randomize_lora_B(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()


def test_lora_pairs_equal_peft_delta_weight_with_scaling():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(_bert(), peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"]))
    _randomize_lora_B(model)
    pairs = find_factor_pairs(model)
    assert {p.kind for p in pairs} == {"lora"}
    assert [p.name for p in pairs] == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    ]
    for p in pairs:
        mod = model.base_model.model.get_submodule(p.name)
        assert p.current_scale() == 4.0  # lora_alpha / r
        assert p.left().shape == (D, 4) and p.right().shape == (4, D)
        assert torch.allclose(p.product(), mod.get_delta_weight("default"), rtol=1e-12, atol=0)


def test_lora_on_gpt2_conv1d_and_effective_attention_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(
            _gpt2(), peft.LoraConfig(r=2, lora_alpha=2, target_modules=["c_attn"], fan_in_fan_out=True)
        )
    _randomize_lora_B(model)
    _zero_biases(model)
    (lp0, lp1) = find_factor_pairs(model)
    mod = model.base_model.model.get_submodule("h.0.attn.c_attn")
    # peft returns ΔW in Conv1D layout (in, out); the pair is B A (out, in)
    assert torch.allclose(lp0.product(), mod.get_delta_weight("default").T, rtol=1e-12, atol=0)
    both = find_factor_pairs(model, include="all")
    assert [p.kind for p in both] == ["attention", "attention", "lora", "lora"]
    attn = both[0]
    x = torch.randn(4, D, dtype=torch.float64)
    q, k, _ = mod(x).split(D, dim=-1)  # the adapted layer: (W_0 + ΔW)
    assert torch.allclose(q @ k.T, x @ attn.product() @ x.T, rtol=1e-10, atol=1e-12)
    assert find_factor_pairs(model, include="attention")[0].name == "h.0.attn"


def test_user_pairs_tensors_and_callables():
    A, B = torch.randn(6, 2), torch.randn(2, 5)
    pairs = find_factor_pairs(
        torch.nn.Linear(3, 3), include="none", extra=[("t", A, B), ("c", lambda: A, lambda: B, -3.0)]
    )
    assert [p.kind for p in pairs] == ["user", "user"]
    assert torch.equal(pairs[0].product(), A @ B)
    assert torch.allclose(pairs[1].product(), -3.0 * (A @ B))
    with pytest.raises(ValueError, match="unique"):
        find_factor_pairs(torch.nn.Linear(3, 3), include="none", extra=[("t", A, B), ("t", A, B)])
    with pytest.raises(ValueError, match="name, left, right"):
        find_factor_pairs(torch.nn.Linear(3, 3), extra=[("t", A)])
    with pytest.raises(ValueError, match="include"):
        find_factor_pairs(torch.nn.Linear(3, 3), include="heads")


def test_unknown_architecture_names_what_was_and_was_not_found():
    with pytest.raises(ModelError) as e:
        find_factor_pairs(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    msg = str(e.value)
    assert "Sequential" in msg and "attention modules" in msg and ": 0" in msg and "lora_A/lora_B): 0" in msg
    assert "extra=" in msg

    class HalfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.query = torch.nn.Linear(4, 4)

    with pytest.raises(ModelError, match="has query but no key"):
        find_factor_pairs(torch.nn.Sequential(HalfAttention()))
    # attention present but only LoRA asked for: the count of what exists is in the message
    with pytest.raises(ModelError, match=r"T5 q/k\): 2"):
        find_factor_pairs(_vit(), include="lora")


# --- DistilBERT, T5, GPT-NeoX: checked against the query/key states the model's own forward computes ----


def _distilbert():
    torch.manual_seed(4)
    cfg = transformers.DistilBertConfig(
        n_layers=2, dim=D, n_heads=H, hidden_dim=64, vocab_size=40, max_position_embeddings=16
    )
    return transformers.DistilBertModel(cfg), transformers.models.distilbert.modeling_distilbert


def _t5():
    torch.manual_seed(5)
    cfg = transformers.T5Config(
        num_layers=2, d_model=D, num_heads=H, d_kv=6, d_ff=64, vocab_size=40
    )  # inner 24 ≠ d_model
    return transformers.T5EncoderModel(cfg), transformers.models.t5.modeling_t5


def _neox():
    torch.manual_seed(6)
    cfg = transformers.GPTNeoXConfig(
        num_hidden_layers=2,
        hidden_size=D,
        num_attention_heads=H,
        intermediate_size=64,
        vocab_size=40,
        max_position_embeddings=16,
    )
    return transformers.GPTNeoXModel(cfg), transformers.models.gpt_neox.modeling_gpt_neox


@pytest.mark.parametrize(
    "build,names,hd",
    [
        (_distilbert, ["transformer.layer.0.attention", "transformer.layer.1.attention"], D // H),
        (_t5, ["encoder.block.0.layer.0.SelfAttention", "encoder.block.1.layer.0.SelfAttention"], 6),
        (_neox, ["layers.0.attention", "layers.1.attention"], D // H),
    ],
    ids=["distilbert", "t5", "gpt_neox"],
)
def test_products_match_the_query_key_states_of_the_models_forward(build, names, hd, monkeypatch):
    """Per layer and per head, x W_Q^h W_K^hᵀ xᵀ = q_h k_hᵀ where q, k are captured inside the model's own
    eager attention (after its reshapes: GPT-NeoX's per-head fused layout, T5's unscaled heads)."""
    model, modeling = build()
    model = model.double().eval()
    model.config._attn_implementation = "eager"
    _zero_biases(model)
    inputs, captured = {}, {}
    for name in names:
        model.get_submodule(name).register_forward_pre_hook(
            lambda mod, args, kwargs, name=name: inputs.__setitem__(
                name, (args[0] if args else kwargs["hidden_states"])[0]
            ),
            with_kwargs=True,
        )
    original = modeling.eager_attention_forward

    def capture(module, query, key, *args, **kwargs):
        captured[module] = (query[0], key[0])  # (heads, seq, head_dim)
        return original(module, query, key, *args, **kwargs)

    monkeypatch.setattr(modeling, "eager_attention_forward", capture)
    ids = torch.randint(0, 40, (1, 7))
    kwargs = (
        {"position_ids": torch.zeros_like(ids)} if "neox" in modeling.__name__ else {}
    )  # rotary angle 0: no rotation
    with torch.no_grad():
        model(input_ids=ids, **kwargs)
    pairs = find_factor_pairs(model)
    heads = find_factor_pairs(model, per_head=True)
    assert [p.name for p in pairs] == names and len(heads) == H * len(names)
    for pair in pairs:
        x = inputs[pair.name]
        q, k = captured[model.get_submodule(pair.name)]
        assert torch.allclose(x @ pair.product() @ x.T, sum(q[h] @ k[h].T for h in range(H)), rtol=1e-10, atol=1e-12)
        mine = [p for p in heads if p.meta["module"] == pair.name]
        for h, hp in enumerate(mine):
            assert hp.left().shape == (D, hd)
            assert torch.allclose(x @ hp.product() @ x.T, q[h] @ k[h].T, rtol=1e-10, atol=1e-12)


def _mha_attention_weights(mha, x):
    with torch.no_grad():
        return mha(x, x, x, need_weights=True, average_attn_weights=False)[1][0]  # (heads, L, L)


def test_torch_multihead_attention_and_transformer_encoder():
    """nn.MultiheadAttention: softmax(x W_Q^h W_K^hᵀ xᵀ / √hd) is the module's own attention matrix."""
    torch.manual_seed(7)
    enc = (
        torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, H, 64, batch_first=True), num_layers=2)
        .double()
        .eval()
    )
    _zero_biases(enc)
    pairs = find_factor_pairs(enc)
    assert [p.name for p in pairs] == ["layers.0.self_attn", "layers.1.self_attn"]
    heads = find_factor_pairs(enc, per_head=True)
    x = torch.randn(1, 6, D, dtype=torch.float64)
    hd = D // H
    for pair in pairs:
        mha = enc.get_submodule(pair.name)
        weights = _mha_attention_weights(mha, x)
        mine = [p for p in heads if p.meta["module"] == pair.name]
        for h, hp in enumerate(mine):
            logits = x[0] @ hp.product() @ x[0].T / hd**0.5
            assert torch.allclose(torch.softmax(logits, dim=-1), weights[h], rtol=1e-10, atol=1e-12)
        assert torch.allclose(sum(p.product() for p in mine), pair.product(), rtol=1e-10, atol=1e-12)
    # separate q/k/v weights (kdim ≠ embed_dim) are read too; the root module is named "model"
    mha = torch.nn.MultiheadAttention(D, H, kdim=10, vdim=10).double()
    (pair,) = find_factor_pairs(mha)
    assert pair.name == "model" and pair.left().shape == (D, D) and pair.right().shape == (D, 10)
    assert torch.equal(pair.product(), mha.q_proj_weight.T @ mha.k_proj_weight)
