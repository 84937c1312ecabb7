"""Find the factorized products of a model: attention W_Q W_Kᵀ and LoRA B A (docs/theory.md#factorized-products,
Table 1).

A :class:`FactorPair` names one product ``W = scale · left() @ right()``; ``left``/``right`` are callables
so that the current weights are read each time the product is measured.

Attention. The attention logits of one head are ``x W_Q^h (x W_K^h)ᵀ = x (W_Q^h W_K^hᵀ) xᵀ``, so the
paper's product for a layer is ``W_Q W_Kᵀ = Σ_h W_Q^h W_K^hᵀ`` (d×d, rank ≤ d) and for a head
``W_Q^h W_K^hᵀ`` (d×d, rank ≤ head_dim). Here W_Q, W_K map inputs (rows) to features (columns):

* GPT-2 ``c_attn`` (``Conv1D``, weight ``(d, 3d)`` = fused ``[Q | K | V]``, ``y = x W``):
  ``W_Q = W[:, :d]``, ``W_K = W[:, d:2d]``; head h uses columns ``h·hd : (h+1)·hd``.
* BERT / MiniLM ``query`` / ``key`` and transformers-5 ViT / Llama-style ``q_proj`` / ``k_proj``
  (``nn.Linear``, weight ``(out, in)``, ``y = x Wᵀ``): ``W_Q = query.weightᵀ``, ``W_K = key.weightᵀ``;
  head h uses rows ``h·hd : (h+1)·hd`` of the weights. Grouped-query attention pairs query head h with
  key head ``h // (H / H_kv)``. DistilBERT ``q_lin`` / ``k_lin`` and T5 ``q`` / ``k`` (no 1/√d scaling in
  T5's logits; the product is the same ``W_Q W_Kᵀ``) have the same layout.
* GPT-NeoX / Pythia ``query_key_value`` (``nn.Linear``, weight ``(3d, d)``), laid out *per head*: the
  output is viewed as ``(H, 3·hd)``, so head h's query rows are ``3h·hd : (3h+1)·hd`` and its key rows
  the next ``hd`` (not ``[Q | K | V]`` blocks as in GPT-2).
* torch ``nn.MultiheadAttention`` (also inside ``nn.TransformerEncoderLayer``): ``in_proj_weight``
  ``(3E, E)`` = ``[W_q; W_k; W_v]`` blocks, ``q = x W_qᵀ``; head h uses rows ``h·hd : (h+1)·hd`` of each.

When a peft adapter wraps the projection, the *effective* weight ``W_0 + scaling · B A`` is used.

LoRA. peft's ``lora_A[adapter]`` (``Linear(in, r)``) and ``lora_B[adapter]`` (``Linear(r, out)``) give
``ΔW = scaling · B A`` with ``scaling = lora_alpha / r`` (or ``lora_alpha / √r`` with rsLoRA), read from
the layer at measurement time. Embedding adapters (``lora_embedding_A/B``) and conv adapters
(flattened kernels) are paired the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ModelError

__all__ = ["FactorPair", "find_factor_pairs", "KINDS"]

TensorOrFn = torch.Tensor | Callable[[], torch.Tensor]

#: kinds of factor pairs :func:`find_factor_pairs` can return.
KINDS = ("attention", "attention_head", "lora", "user")

_PEFT_PREFIX = "base_model.model."


@dataclass
class FactorPair:
    """One factorized product ``W = scale · left() @ right()``.

    ``left()`` is ``(m, r)``, ``right()`` is ``(r, n)``. ``scale`` is a number or a callable returning one
    (LoRA reads its current ``scaling`` this way). ``kind`` is one of :data:`KINDS`.
    """

    name: str
    left: Callable[[], torch.Tensor]
    right: Callable[[], torch.Tensor]
    scale: float | Callable[[], float] = 1.0
    kind: str = "user"
    meta: dict = field(default_factory=dict)

    def current_scale(self) -> float:
        return float(self.scale() if callable(self.scale) else self.scale)

    def product(self) -> torch.Tensor:
        """The explicit product (for checks; the monitor never forms it for thin factors)."""
        return self.current_scale() * (self.left() @ self.right())


def _as_fn(x: TensorOrFn, what: str) -> Callable[[], torch.Tensor]:
    if callable(x) and not isinstance(x, torch.Tensor):
        return x
    if isinstance(x, torch.Tensor):
        t = x
        return lambda: t
    raise TypeError(f"{what} must be a tensor or a callable returning one, got {type(x).__name__}")


def _short(name: str) -> str:
    return name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name


# --- effective weights of (possibly peft-wrapped) projections -----------------------------------------


def _is_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2


def _base(mod: nn.Module) -> nn.Module:
    """The innermost base layer of a peft-wrapped module (the module itself otherwise)."""
    seen = 0
    while hasattr(mod, "get_base_layer") and seen < 8:
        b = mod.get_base_layer()
        if b is mod:
            break
        mod, seen = b, seen + 1
    return mod


def _is_projection(mod: nn.Module | None) -> bool:
    if mod is None:
        return False
    b = _base(mod)
    return isinstance(b, nn.Linear) or _is_conv1d(b)


def _weight_fn(mod: nn.Module) -> Callable[[], torch.Tensor]:
    """Callable giving the effective weight in the *base layer's* layout (``(out, in)`` or Conv1D ``(in, out)``)."""
    base = _base(mod)
    has_lora = hasattr(mod, "get_delta_weight") and hasattr(mod, "lora_A")

    def weight() -> torch.Tensor:
        w = base.weight
        if has_lora and not getattr(mod, "merged", False):
            for a in getattr(mod, "active_adapters", []):
                if a in mod.lora_A:
                    w = w + mod.get_delta_weight(a).to(w.dtype)
        return w

    return weight


def _io_weight_fn(mod: nn.Module) -> Callable[[], torch.Tensor]:
    """Callable giving the weight as an ``(in, out)`` matrix (features = columns), whatever the layer type."""
    w = _weight_fn(mod)
    if _is_conv1d(_base(mod)):
        return w
    return lambda: w().transpose(0, 1)


# --- head counts --------------------------------------------------------------------------------------


def _heads(attn: nn.Module, model: nn.Module, out_q: int) -> tuple[int, int]:
    """(number of query heads, head_dim) of an attention module."""
    cfg = getattr(model, "config", None)
    h = None
    for src in (attn, getattr(attn, "config", None), cfg):
        if src is None:
            continue
        for key in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
            v = getattr(src, key, None)
            if isinstance(v, int) and v > 0:
                h = v
                break
        if h:
            break
    hd = None
    for key in ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim"):
        v = getattr(attn, key, None)
        if isinstance(v, int) and v > 0:
            hd = v
            break
    if h is None and hd is not None:
        h = out_q // hd
    if h is None:
        raise ModelError(
            f"cannot tell the number of heads of attention module {type(attn).__name__}: "
            "it has none of num_heads/num_attention_heads/n_head/head_dim; use per_head=False or pass extra="
        )
    if hd is None:
        hd = out_q // h
    if h * hd != out_q:
        raise ModelError(f"{type(attn).__name__}: {h} heads × head_dim {hd} ≠ query width {out_q}")
    return h, hd


# --- discovery ------------------------------------------------------------------------------------------

#: separate query / key projections: BERT, ViT & Llama-style, DistilBERT, T5 (T5 also needs ``v``).
_QK_NAMES = (("query", "key"), ("q_proj", "k_proj"), ("q_lin", "k_lin"), ("q", "k"))


def _qk_modules(attn: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The (query, key) projections of an attention module with separate ones, else None."""
    for a, b in _QK_NAMES:
        qm, km = getattr(attn, a, None), getattr(attn, b, None)
        if _is_projection(qm) and _is_projection(km) and (a != "q" or _is_projection(getattr(attn, "v", None))):
            return qm, km
    return None


def _mha_weight_fns(attn: nn.MultiheadAttention):
    """torch ``nn.MultiheadAttention``: ``q = x W_qᵀ`` with ``W_q = in_proj_weight[:E]`` (``k``: the next
    E rows), or the separate ``q_proj_weight`` / ``k_proj_weight`` when key and value widths differ."""
    E = attn.embed_dim
    if attn.in_proj_weight is not None:
        return (lambda: attn.in_proj_weight[:E].transpose(0, 1)), (
            lambda: attn.in_proj_weight[E : 2 * E].transpose(0, 1)
        )
    return (lambda: attn.q_proj_weight.transpose(0, 1)), (lambda: attn.k_proj_weight.transpose(0, 1))


def _attention_pairs(name: str, attn: nn.Module, model: nn.Module, per_head: bool) -> list[FactorPair]:
    """Pairs for one attention module (see the module docstring for the layouts)."""
    short = _short(name) or "model"  # the root module has no name
    if hasattr(attn, "c_attn") and _is_projection(attn.c_attn) and _is_conv1d(_base(attn.c_attn)):
        w_fn = _weight_fn(attn.c_attn)  # (d, 3d) or (d, 2d) for cross-attention
        d_in, width = _base(attn.c_attn).weight.shape
        d = getattr(attn, "embed_dim", None) or getattr(attn, "split_size", None) or width // 3
        if getattr(attn, "q_attn", None) is not None and _is_projection(attn.q_attn):  # GPT-2 cross-attention
            q_fn = _io_weight_fn(attn.q_attn)
            k_fn = lambda: w_fn()[:, :d]  # noqa: E731
        else:
            if width != 3 * d:
                raise ModelError(f"{short}.c_attn has width {width}, expected 3 × embed_dim = {3 * d} (fused [Q|K|V])")
            q_fn = lambda: w_fn()[:, :d]  # noqa: E731
            k_fn = lambda: w_fn()[:, d : 2 * d]  # noqa: E731
        h, hd = _heads(attn, model, d)
        h_kv = h
    elif isinstance(attn, nn.MultiheadAttention):
        q_fn, k_fn = _mha_weight_fns(attn)
        h, hd, h_kv = attn.num_heads, attn.head_dim, attn.num_heads
    elif _is_neox(attn):
        w_fn = _weight_fn(attn.query_key_value)  # GPT-NeoX: (3d, d), rows per head [q_h | k_h | v_h]
        width = _base(attn.query_key_value).weight.shape[0]
        if width % 3:
            raise ModelError(f"{short}.query_key_value has width {width}, not 3 × the attention width")
        h, hd = _heads(attn, model, width // 3)
        h_kv = h
        q_fn = lambda: w_fn().reshape(h, 3, hd, -1)[:, 0].reshape(h * hd, -1).transpose(0, 1)  # noqa: E731
        k_fn = lambda: w_fn().reshape(h, 3, hd, -1)[:, 1].reshape(h * hd, -1).transpose(0, 1)  # noqa: E731
    else:
        qm, km = _qk_modules(attn)
        q_fn, k_fn = _io_weight_fn(qm), _io_weight_fn(km)
        out_q = _base(qm).weight.shape[1] if _is_conv1d(_base(qm)) else _base(qm).weight.shape[0]
        out_k = _base(km).weight.shape[1] if _is_conv1d(_base(km)) else _base(km).weight.shape[0]
        h, hd = _heads(attn, model, out_q)
        if out_k % hd:
            raise ModelError(f"{short}: key width {out_k} is not a multiple of head_dim {hd}")
        h_kv = out_k // hd
        if h % h_kv:
            raise ModelError(f"{short}: {h} query heads cannot share {h_kv} key heads")
    group = h // h_kv
    meta = {"module": short, "heads": h, "kv_heads": h_kv, "head_dim": hd}
    if per_head:
        pairs = []
        for i in range(h):
            j = i // group
            pairs.append(
                FactorPair(
                    f"{short}.head{i}",
                    (lambda i=i: q_fn()[:, i * hd : (i + 1) * hd]),
                    (lambda j=j: k_fn()[:, j * hd : (j + 1) * hd].transpose(0, 1)),
                    kind="attention_head",
                    meta={**meta, "head": i},
                )
            )
        return pairs
    if group == 1:
        right = lambda: k_fn().transpose(0, 1)  # noqa: E731
    else:  # GQA: repeat each key head for its query heads

        def right() -> torch.Tensor:
            k = k_fn()
            return (
                k.reshape(k.shape[0], h_kv, hd)
                .repeat_interleave(group, dim=1)
                .reshape(k.shape[0], h * hd)
                .transpose(0, 1)
            )

    return [FactorPair(short, q_fn, right, kind="attention", meta=meta)]


def _lora_pairs(name: str, mod: nn.Module) -> list[FactorPair]:
    short = _short(name) or "model"  # the root module has no name
    pairs = []

    def label(adapter: str) -> str:
        return short if adapter == "default" else f"{short}[{adapter}]"

    def scale_fn(adapter: str) -> Callable[[], float]:
        return lambda: float(mod.scaling[adapter])

    lora_A, lora_B = getattr(mod, "lora_A", None), getattr(mod, "lora_B", None)
    if isinstance(lora_A, nn.ModuleDict) and isinstance(lora_B, nn.ModuleDict):
        for adapter in lora_A:
            if adapter not in lora_B:
                continue
            a_mod, b_mod = lora_A[adapter], lora_B[adapter]
            if not hasattr(a_mod, "weight") or not hasattr(b_mod, "weight"):
                continue
            pairs.append(
                FactorPair(
                    label(adapter),
                    (lambda b_mod=b_mod: b_mod.weight.flatten(1)),  # B: (out, r)
                    (lambda a_mod=a_mod: a_mod.weight.flatten(1)),  # A: (r, in[·k·k])
                    scale=scale_fn(adapter),
                    kind="lora",
                    meta={"module": short, "adapter": adapter, "r": int(a_mod.weight.shape[0])},
                )
            )
    emb_A, emb_B = getattr(mod, "lora_embedding_A", None), getattr(mod, "lora_embedding_B", None)
    if isinstance(emb_A, nn.ParameterDict) and isinstance(emb_B, nn.ParameterDict):
        for adapter in emb_A:
            if adapter not in emb_B:
                continue
            pairs.append(
                FactorPair(
                    label(adapter),
                    (lambda adapter=adapter: emb_B[adapter]),  # (embedding_dim, r)
                    (lambda adapter=adapter: emb_A[adapter]),  # (r, num_embeddings)
                    scale=scale_fn(adapter),
                    kind="lora",
                    meta={"module": short, "adapter": adapter, "r": int(emb_A[adapter].shape[0])},
                )
            )
    return pairs


def _has_lora(mod: nn.Module) -> bool:
    return isinstance(getattr(mod, "lora_A", None), nn.ModuleDict) or isinstance(
        getattr(mod, "lora_embedding_A", None), nn.ParameterDict
    )


def _is_attention(mod: nn.Module) -> bool:
    if _is_projection(getattr(mod, "c_attn", None)) and _is_conv1d(_base(mod.c_attn)):
        return True
    if isinstance(mod, nn.MultiheadAttention):
        return True
    return _is_neox(mod) or _qk_modules(mod) is not None


def _is_neox(mod: nn.Module) -> bool:
    """GPT-NeoX attention (its per-head fused layout; other fused ``query_key_value`` layouts differ)."""
    qkv = getattr(mod, "query_key_value", None)
    return type(mod).__name__.startswith("GPTNeoX") and _is_projection(qkv) and isinstance(_base(qkv), nn.Linear)


def _unpaired(model: nn.Module) -> list[str]:
    """Modules that look like half of a pair (for the error message)."""
    out = []
    for name, mod in model.named_modules():
        for a, b in (*_QK_NAMES[:3], ("lora_A", "lora_B")):
            ha, hb = hasattr(mod, a), hasattr(mod, b)
            if ha != hb:
                out.append(f"{_short(name) or '<root>'}: has {a if ha else b} but no {b if ha else a}")
    return out


def find_factor_pairs(
    model: nn.Module,
    per_head: bool = False,
    extra: Sequence[tuple] | None = None,
    include: str | Iterable[str] = "auto",
) -> list[FactorPair]:
    """All factorized products of ``model`` (see the module docstring for the conventions).

    Args:
        model: any ``nn.Module`` (a transformers model, a peft ``PeftModel``, a plain module).
        per_head: attention products per head (``W_Q^h W_K^hᵀ``, kind ``"attention_head"``) instead of per
            layer (``W_Q W_Kᵀ``, kind ``"attention"``).
        extra: user pairs ``(name, left, right)`` or ``(name, left, right, scale)``; ``left``/``right`` are
            tensors or callables; the product is ``scale · left @ right``.
        include: ``"auto"`` (LoRA products when the model has LoRA adapters, attention products otherwise;
            the paper tracks BA in LoRA runs, W_Q W_Kᵀ otherwise), ``"all"``, or kinds among
            ``"attention"``, ``"lora"``, ``"none"`` (user pairs only).

    Raises:
        ModelError: nothing found (and no ``extra``); the message lists what was looked for, what was
            found, and modules that hold only one half of a pair.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"find_factor_pairs: model must be a torch.nn.Module (e.g. a loaded transformers model), "
            f"got {type(model).__name__} {model!r:.40}"
        )
    if isinstance(include, str):
        include_set = {include}
    else:
        include_set = set(include)
    allowed = {"auto", "all", "attention", "lora", "none"}
    if not include_set <= allowed:
        raise ValueError(f"include: unknown kinds {sorted(include_set - allowed)} (allowed: {sorted(allowed)})")

    attn_pairs: list[FactorPair] = []
    lora_pairs: list[FactorPair] = []
    n_attn = n_lora = 0
    for name, mod in model.named_modules():
        if _has_lora(mod):
            n_lora += 1
            lora_pairs.extend(_lora_pairs(name, mod))
        if _is_attention(mod):
            n_attn += 1
            attn_pairs.extend(_attention_pairs(name, mod, model, per_head))

    if include_set == {"auto"}:
        found = list(lora_pairs) if lora_pairs else list(attn_pairs)
    else:
        use_attn = bool(include_set & {"all", "attention"})
        use_lora = bool(include_set & {"all", "lora", "auto"})
        found = (attn_pairs if use_attn else []) + (lora_pairs if use_lora else [])

    for item in extra or []:
        if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
            raise ValueError(f"extra: each item must be (name, left, right[, scale]), got {item!r}")
        name, a, b = item[:3]
        scale = item[3] if len(item) == 4 else 1.0
        found.append(
            FactorPair(
                str(name),
                _as_fn(a, f"extra {name!r} left"),
                _as_fn(b, f"extra {name!r} right"),
                scale=scale,
                kind="user",
            )
        )

    names = [p.name for p in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"factor pair names must be unique; repeated: {dup}")

    if not found:
        half = _unpaired(model)
        summary = (
            f"attention modules (GPT-2 c_attn, GPT-NeoX query_key_value, torch MultiheadAttention, BERT query/key, "
            f"ViT/Llama q_proj/k_proj, DistilBERT q_lin/k_lin, T5 q/k): {n_attn}; "
            f"peft LoRA layers (lora_A/lora_B): {n_lora}"
        )
        hint = f"; unpaired: {'; '.join(half[:8])}" if half else ""
        raise ModelError(
            f"no factor pairs found in {type(model).__name__} with include={sorted(include_set)}: "
            f"found {summary}{hint}. "
            "Pass extra=[(name, left, right)] to monitor other products."
        )
    return found
