"""Check which weight decay each LoRA adapter actually receives from an optimizer.

The paper's LoRA result needs weight decay on both factors, h(A, B) = ½(‖A‖_F² + ‖B‖_F²)
(docs/theory.md#factorized-products, Table 1): then the product B A follows a time-dependent mirror flow whose bias
moves from Frobenius to nuclear norm as a_t = −Σ η_s λ_s grows. Optimizer setups often drop this silently:
a "no decay" param group that catches ``lora_*`` by a name pattern, a param group built before the
adapters were added (the factors are not in the optimizer at all), or decay on A only. This module
reports, per adapter, the weight decay λ and learning rate η of the group holding A and B, and warns
(:class:`LoRADecayWarning`) when decay was asked for but a trainable factor gets none, or when A and B
get different decay (then h is not the balanced regularizer of Table 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .factors import _PEFT_PREFIX
from .scheduler import is_decoupled

if TYPE_CHECKING:  # pragma: no cover
    from .scheduler import WeightDecayScheduler

__all__ = ["LoRADecayWarning", "AdapterDecay", "lora_decay_report", "check_lora_decay", "format_lora_decay_report"]


class LoRADecayWarning(UserWarning):
    """LoRA factors get no (or unequal) weight decay although decay was asked for."""


@dataclass
class FactorDecay:
    """Decay of one factor (A or B) of an adapter."""

    param_name: str
    trainable: bool
    group: int | None  # index of the optimizer param group; None: not in the optimizer
    weight_decay: float  # λ now (0 when not in the optimizer)
    lr: float
    decoupled: bool  # AdamW-style w ← (1 − ηλ) w
    scheduled: bool = False  # the group's λ is driven by a WeightDecayScheduler

    @property
    def decayed(self) -> bool:
        return self.trainable and self.group is not None and (self.weight_decay > 0 or self.scheduled)


@dataclass
class AdapterDecay:
    """The decay of one LoRA adapter ``B A`` (module path and adapter name as in ``find_factor_pairs``)."""

    name: str
    adapter: str
    A: FactorDecay
    B: FactorDecay

    @property
    def balanced(self) -> bool:
        return self.A.weight_decay == self.B.weight_decay and self.A.lr == self.B.lr


def _decoupled(r) -> str:
    """``yes`` when both factors' weight decay is decoupled (AdamW), ``no`` when neither, else ``mixed``."""
    if r.A.decoupled and r.B.decoupled:
        return "yes"
    return "mixed" if (r.A.decoupled or r.B.decoupled) else "no"


def _lora_params(model: nn.Module) -> list[tuple[str, str, str, nn.Parameter, str, nn.Parameter]]:
    """(pair name, adapter, A name, A, B name, B) for every LoRA adapter in ``model``."""
    out = []
    for name, mod in model.named_modules():
        short = name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name
        la, lb = getattr(mod, "lora_A", None), getattr(mod, "lora_B", None)
        if isinstance(la, nn.ModuleDict) and isinstance(lb, nn.ModuleDict):
            for ad in la:
                if ad in lb and hasattr(la[ad], "weight") and hasattr(lb[ad], "weight"):
                    label = short if ad == "default" else f"{short}[{ad}]"
                    out.append(
                        (
                            label,
                            ad,
                            f"{name}.lora_A.{ad}.weight",
                            la[ad].weight,
                            f"{name}.lora_B.{ad}.weight",
                            lb[ad].weight,
                        )
                    )
        ea, eb = getattr(mod, "lora_embedding_A", None), getattr(mod, "lora_embedding_B", None)
        if isinstance(ea, nn.ParameterDict) and isinstance(eb, nn.ParameterDict):
            for ad in ea:
                if ad in eb:
                    label = short if ad == "default" else f"{short}[{ad}]"
                    out.append(
                        (label, ad, f"{name}.lora_embedding_A.{ad}", ea[ad], f"{name}.lora_embedding_B.{ad}", eb[ad])
                    )
    return out


def _unwrap(optimizer):
    """The torch optimizer inside wrappers such as accelerate's ``AcceleratedOptimizer``."""
    seen = 0
    while hasattr(optimizer, "optimizer") and isinstance(optimizer.optimizer, torch.optim.Optimizer) and seen < 4:
        optimizer, seen = optimizer.optimizer, seen + 1
    return optimizer


def lora_decay_report(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: WeightDecayScheduler | None = None
) -> list[AdapterDecay]:
    """Per LoRA adapter: the param group, λ (``weight_decay`` now) and η of its A and B factors.

    With ``scheduler``, factors in the groups it drives are marked ``scheduled`` (their λ follows the
    schedule, so a λ of 0 now, e.g. after a turn-off, is not "no decay").
    """
    optimizer = _unwrap(optimizer)
    driven = set(scheduler.group_indices) if scheduler is not None else set()
    where: dict[int, int] = {}
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            where[id(p)] = gi

    def factor(pname: str, p: nn.Parameter) -> FactorDecay:
        gi = where.get(id(p))
        if gi is None:
            return FactorDecay(pname, p.requires_grad, None, 0.0, 0.0, False)
        g = optimizer.param_groups[gi]
        return FactorDecay(
            pname,
            p.requires_grad,
            gi,
            float(g.get("weight_decay", 0.0)),
            float(g.get("lr", 0.0)),
            is_decoupled(optimizer, g),
            gi in driven,
        )

    return [AdapterDecay(label, ad, factor(an, a), factor(bn, b)) for label, ad, an, a, bn, b in _lora_params(model)]


def check_lora_decay(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    requested: float | None = None,
    warn: bool = True,
    scheduler: WeightDecayScheduler | None = None,
) -> list[AdapterDecay]:
    """:func:`lora_decay_report`, warning with :class:`LoRADecayWarning` when decay is silently missing.

    Args:
        requested: the weight decay the user asked for. ``None``: inferred as the largest
            ``weight_decay`` (or ``initial_weight_decay``, set by :class:`WeightDecayScheduler`) of any
            param group, so a setup that decays other weights but not the LoRA factors is flagged.
            ``0``: nothing was asked for, no warning about missing decay.
        warn: emit the warnings (the report is returned either way).
        scheduler: the :class:`WeightDecayScheduler` driving the optimizer, if any (see
            :func:`lora_decay_report`).
    """
    report = lora_decay_report(model, optimizer, scheduler)
    if requested is None:
        groups = _unwrap(optimizer).param_groups
        requested = max(
            [float(g.get("weight_decay", 0.0)) for g in groups]
            + [float(g.get("initial_weight_decay", 0.0)) for g in groups]
        )
    if not warn or not report:
        return report
    if requested > 0:
        missing = []
        for r in report:
            for tag, f in (("A", r.A), ("B", r.B)):
                if f.trainable and not f.decayed:
                    why = "not in the optimizer" if f.group is None else f"param group {f.group} has weight_decay=0"
                    missing.append(f"{r.name} {tag} ({why})")
        if missing:
            n = len(missing)
            warnings.warn(
                f"weight decay {requested:g} was asked for, but {n} trainable LoRA factor(s) get none: "
                + "; ".join(missing[:6])
                + (f"; ... ({n - 6} more)" if n > 6 else "")
                + ". The paper's LoRA bias (docs/theory.md#factorized-products) needs decay on both A and B.",
                LoRADecayWarning,
                stacklevel=2,
            )
    unbalanced = [
        r
        for r in report
        if r.A.decayed
        and r.B.decayed
        and not r.balanced
        and not (r.A.scheduled and r.B.scheduled and r.A.group == r.B.group)
    ]
    if unbalanced:
        r = unbalanced[0]
        warnings.warn(
            f"{len(unbalanced)} LoRA adapter(s) get different decay on A and B (e.g. {r.name}: "
            f"A λ={r.A.weight_decay:g} η={r.A.lr:g}, B λ={r.B.weight_decay:g} η={r.B.lr:g}); "
            "h = ½(‖A‖² + ‖B‖²) of Table 1 assumes equal decay",
            LoRADecayWarning,
            stacklevel=2,
        )
    return report


def format_lora_decay_report(report: list[AdapterDecay]) -> str:
    """Markdown table: adapter, λ and η of A and B, decoupled or not."""
    lines = [
        "| adapter | A: group | A: λ | A: η | B: group | B: λ | B: η | decoupled |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def g(f: FactorDecay) -> str:
        if not f.trainable:
            return "frozen"
        return "—" if f.group is None else str(f.group)

    for r in report:
        lines.append(
            f"| {r.name} | {g(r.A)} | {r.A.weight_decay:g} | {r.A.lr:g} "
            f"| {g(r.B)} | {r.B.weight_decay:g} | {r.B.lr:g} | "
            f"{_decoupled(r)} |"
        )
    return "\n".join(lines)
