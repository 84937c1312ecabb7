"""The training loop of the transformer experiments, with weight decay kept on or turned off.

One :class:`Trainer` trains one model on one task with SGD (momentum) or AdamW and a
:class:`~mirrorflow.training.scheduler.WeightDecayScheduler` on the ``decay`` param group, and records,
every ``eval_every`` steps and at the end, a row with

    step, epoch, train_loss (mean since the last row), val_loss, val_acc, wd (λ_t), a (a_t = −Σ_{s<t} η_s λ_s),
    lr, and the SpectralMonitor's ``spectral/...`` keys (ρ of B A for LoRA, of W_Q W_Kᵀ for attention;
    docs/theory.md#rho).

**Arms from one run.** Constant weight decay λ and "λ until t_off, then 0" (Remark 3.9) are the same run
up to t_off. :func:`run_arms` trains the constant arm once, takes a snapshot (trainable weights, optimizer,
LR and weight-decay schedulers, recorded rows) at every turn-off point, and continues each turned-off arm
from its snapshot with ``turn_off(λ, t_off)`` as the schedule. Batches are a pure function of (seed, step)
and dropout is off, so an arm continued from a snapshot gives the same numbers as a run from scratch (a test
checks this). The automatic switch-off arm (:class:`~mirrorflow.training.auto_off.AutoTurnOff` watching
``spectral/rho``) is handled the same way: it sees the constant arm's rows until it fires.

The model trains in ``eval()`` mode: dropout is off everywhere (the paper's LoRA runs use no dropout; the
models here have no batch norm), which makes forks exact.

Under ``torchrun``/``accelerate launch`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel``; rank r trains on ``batch[r::world]`` of the global batch and evaluates every
world-th validation batch; sums are all-reduced, so every rank records the same rows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from ...errors import ConfigError
from ...runtime import autocast
from ...schedules import Schedule, constant, turn_off
from ...training.scheduler import WeightDecayScheduler, decay_param_groups
from .distributed import DistEnv, all_reduce_sum
from .tasks import EpochSampler

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("constant", "cosine_restarts")
NO_DECAY = ("*bias", "*norm*", "*LayerNorm*", "*ln_*", "*cls_token*", "*position_embeddings*", "*wpe*", "*wte*")


@dataclass(frozen=True)
class TrainSpec:
    """How to train: steps, batch, optimizer, learning-rate schedule, which parameters get weight decay.

    ``lr_schedule``: ``constant`` (after ``warmup`` linear warm-up steps) or ``cosine_restarts``
    (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` with period ``restart_period`` steps, App. G).
    ``decay`` / ``no_decay``: fnmatch patterns on parameter names (``decay_param_groups``).
    ``precision``: ``f32`` or ``bf16`` (forward and backward under bfloat16 autocast; weights, optimizer state
    and weight decay stay float32; :mod:`.precision`).
    """

    steps: int
    batch_size: int
    eval_every: int
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    beta2: float = 0.999
    lr_schedule: str = "constant"
    warmup: int = 0
    restart_period: int = 0
    clip: float = 0.0
    decay: tuple[str, ...] = ("*",)
    no_decay: tuple[str, ...] = NO_DECAY
    seed: int = 0
    precision: str = "f32"

    def validate(self) -> None:
        from ...config import require

        require(self.steps > 0, f"steps must be positive, got {self.steps}")
        require(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        require(self.eval_every > 0, f"eval_every must be positive, got {self.eval_every}")
        require(
            self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
        )
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be positive, got {self.lr}")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        require(self.warmup >= 0, f"warmup must be non-negative, got {self.warmup}")
        require(
            self.lr_schedule != "cosine_restarts" or self.restart_period > 0,
            f"restart_period must be positive with lr_schedule=cosine_restarts, got {self.restart_period}",
        )
        require(self.clip >= 0, f"clip must be non-negative, got {self.clip}")
        require(self.precision in ("f32", "bf16"), f"precision must be f32 or bf16, got {self.precision!r}")


def _lr_scheduler(opt: torch.optim.Optimizer, spec: TrainSpec):
    if spec.lr_schedule == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=spec.restart_period)
    w = spec.warmup
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / w) if w > 0 else 1.0)


@dataclass
class Snapshot:
    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict
    lr_scheduler: dict
    wd_scheduler: dict
    losses: list[float]
    rows: list[dict]
    diverged_at: int | None


class Trainer:
    """Train ``model`` on ``task`` with weight decay ``schedule`` (default constant ``value``); see module doc."""

    def __init__(
        self,
        model: nn.Module,
        task,
        spec: TrainSpec,
        value: float,
        env: DistEnv,
        monitor=None,
        schedule: Schedule | Callable[[int], float] | None = None,
    ):
        self.model = model.to(env.device)
        self.model.train(False)  # dropout off (module docstring)
        self.task, self.spec, self.env, self.monitor = task, spec, env, monitor
        self.value = float(value)
        groups = decay_param_groups(model, weight_decay=self.value, decay=spec.decay, no_decay=spec.no_decay)
        if not any(g["name"] == "decay" for g in groups):
            raise ConfigError(f"no trainable parameter matches the weight-decay patterns {list(spec.decay)}")
        self.decay_index = next(i for i, g in enumerate(groups) if g["name"] == "decay")
        if spec.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
        else:
            self.opt = torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, spec.beta2))
        self.lr_sched = _lr_scheduler(self.opt, spec)
        self.wd = WeightDecayScheduler(
            self.opt, schedule if schedule is not None else constant(self.value), groups=["decay"]
        )
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.net = model
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = [env.local_rank] if env.device.startswith("cuda") else None
            self.net = DDP(model, device_ids=dev)
        self.sampler = EpochSampler(task.n_train, spec.batch_size, spec.seed)
        self.step = 0
        self.full_eval_at: set[int] = set()  # steps (besides the last) evaluated on the full validation set
        self.losses: list[float] = []
        self.rows: list[dict] = []
        self.diverged_at: int | None = None

    # -- one step / one evaluation --------------------------------------------------------------------
    def train_step(self) -> None:
        idx = self.sampler.indices(self.step)
        if self.env.distributed:
            idx = idx[self.env.rank :: self.env.world]
        with autocast(self.env.device, self.spec.precision):
            loss = self.task.loss(self.net, self.task.train_batch(idx))
        value = float(loss.detach())
        finite = math.isfinite(value)
        if self.env.distributed:
            finite = all_reduce_sum([0.0 if finite else 1.0], self.env)[0] == 0.0
        if not finite:
            self.diverged_at = self.step
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), self.spec.clip)
        self.opt.step()
        self.lr_sched.step()
        self.wd.step()
        self.losses.append(value)
        self.step += 1

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The row of the current step (module docstring)."""
        env = self.env
        batches = self.task.eval_batches()
        k = getattr(self.task, "subset_batches", None)  # the first k batches: the subset evaluated every row
        full = k is None or self.step == self.spec.steps or self.step in self.full_eval_at
        last = self.rows[-1]["step"] if self.rows else 0
        recent = self.losses[last : self.step]
        sums = EvalSums(train_loss=sum(recent), train_steps=float(len(recent)))
        for i in list(range(len(batches) if full else k))[env.rank :: env.world]:
            with autocast(env.device, self.spec.precision):
                sums.add(_unit_stats(self.task.eval_stats(self.model, batches[i])), subset=k is not None and i < k)
        t = sums.all_reduce(env)
        group = self.opt.param_groups[self.decay_index]
        nan = math.nan
        row = {
            "step": self.step,
            "epoch": self.step / self.sampler.steps_per_epoch,
            "train_loss": t.train_loss / t.train_steps if t.train_steps else nan,
            "val_loss": t.loss / t.count if t.count and full else nan,
            "val_acc": t.correct / t.count if t.count and full else nan,
            # standard error of the validation loss: spread of the per-unit (window / example) losses
            "val_loss_sem": t.unit_sem() if t.units > 1 and full else nan,
            "wd": float(group["weight_decay"]),
            "a": float(self.wd.a),
            "lr": float(group["lr"]),
        }
        if k is not None:
            row["val_loss_subset"] = t.subset_loss / t.subset_count if t.subset_count else nan
        if self.monitor is not None:
            row.update(self.monitor.compute(self.step))
        return row

    def advance(self, until: int, on_eval: Callable[[int, dict], None] | None = None) -> None:
        """Train up to step ``until`` (≤ spec.steps), recording rows on the evaluation grid."""
        until = min(int(until), self.spec.steps)
        while self.diverged_at is None:
            s = self.step
            due = s % self.spec.eval_every == 0 or s == self.spec.steps
            if due and (not self.rows or self.rows[-1]["step"] != s):
                row = self.evaluate()
                self.rows.append(row)
                if on_eval is not None:
                    on_eval(s, row)
            if s >= until:
                return
            self.train_step()

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot(
            step=self.step,
            params={n: p.detach().clone() for n, p in self.trainable.items()},
            optimizer=copy.deepcopy(self.opt.state_dict()),
            lr_scheduler=copy.deepcopy(self.lr_sched.state_dict()),
            wd_scheduler=copy.deepcopy(self.wd.state_dict()),
            losses=list(self.losses),
            rows=[dict(r) for r in self.rows],
            diverged_at=self.diverged_at,
        )

    def restore(self, snap: Snapshot, schedule: Schedule | Callable[[int], float]) -> None:
        """Go back to ``snap`` and continue with weight-decay ``schedule`` (λ of step ``snap.step`` on)."""
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(snap.params[n])
        self.opt.load_state_dict(copy.deepcopy(snap.optimizer))
        self.lr_sched.load_state_dict(copy.deepcopy(snap.lr_scheduler))
        self.wd.close()
        self.wd = WeightDecayScheduler(self.opt, schedule, groups=["decay"])
        self.wd.load_state_dict(copy.deepcopy(snap.wd_scheduler))
        self.wd.last_epoch -= 1  # re-apply step `snap.step` with the new schedule
        self.wd.step()
        self.step = snap.step
        self.losses = list(snap.losses)
        self.rows = [dict(r) for r in snap.rows if r["step"] < snap.step]
        self.diverged_at = snap.diverged_at

    def close(self) -> None:
        self.wd.close()


def _unit_stats(stats: Sequence[float]) -> list[float]:
    """``eval_stats`` as (loss sum, correct, count, Σ unit loss, Σ unit loss², units).

    A task may return the last three itself (per-window losses of a language model); otherwise the
    batch's mean loss counts as one unit.
    """
    st = [float(v) for v in stats]
    if len(st) >= 6:
        return st[:6]
    m = st[0] / st[2] if st[2] else 0.0
    return st[:3] + [m, m * m, 1.0 if st[2] else 0.0]


@dataclass
class EvalSums:
    """The sums behind one evaluation row, added over batches and all-reduced over ranks (module docstring).

    Training loss since the last row; the full validation set's loss, correct predictions and count, and the
    per-unit losses (Σ ℓ_u, Σ ℓ_u², units) for the standard error; the subset's loss and count (the first
    ``subset_batches`` batches, ``val_loss_subset``)."""

    train_loss: float = 0.0
    train_steps: float = 0.0
    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    unit_loss: float = 0.0
    unit_loss_sq: float = 0.0
    units: float = 0.0
    subset_loss: float = 0.0
    subset_count: float = 0.0

    def add(self, stats: Sequence[float], subset: bool) -> None:
        """One batch's :func:`_unit_stats` (counted in the subset too when ``subset``)."""
        loss, correct, count, unit_loss, unit_loss_sq, units = stats
        self.loss += loss
        self.correct += correct
        self.count += count
        self.unit_loss += unit_loss
        self.unit_loss_sq += unit_loss_sq
        self.units += units
        if subset:
            self.subset_loss += loss
            self.subset_count += count

    def all_reduce(self, env: DistEnv) -> EvalSums:
        """The sums over all ranks (the same on every rank; this process's own without ``torchrun``)."""
        names = [f.name for f in fields(self)]
        return EvalSums(**dict(zip(names, all_reduce_sum([getattr(self, n) for n in names], env))))

    def unit_sem(self) -> float:
        """Standard error of the mean unit loss: sqrt(max(E[ℓ²] − E[ℓ]², 0) / (units − 1))."""
        n = self.units
        return math.sqrt(max(self.unit_loss_sq / n - (self.unit_loss / n) ** 2, 0.0) / max(n - 1, 1))


# ------------------------------------------------------------------------------------------------- arms
@dataclass
class ArmResult:
    """One weight-decay arm: its rows, where λ became 0 (``off_at``), and divergence."""

    name: str
    value: float
    rows: list[dict]
    off_at: int | None = None
    diverged_at: int | None = None
    info: dict = field(default_factory=dict)


def arm_name(off_at: int | None, auto: bool = False) -> str:
    if auto:
        return "auto"
    return "constant" if off_at is None else f"off@{off_at}"


def run_arms(
    trainer: Trainer,
    value: float,
    off_points: Sequence[int] = (),
    auto: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ArmResult]:
    """Constant λ = ``value`` plus, from snapshots, λ turned off at each of ``off_points`` and, with
    ``auto`` (keyword arguments of ``AutoTurnOff``), the automatic switch-off (module docstring).

    ``trainer`` must have been built with the constant schedule. ``progress(k)`` is called per k steps.
    """
    T = trainer.spec.steps
    points = sorted({int(p) for p in off_points})
    for p in points:
        if not 0 <= p <= T:
            raise ConfigError(f"turn-off step {p} is outside 0..steps={T}")
    snaps: dict[str, tuple[Snapshot, Callable[[int], float], int]] = {}
    auto_sched = None
    if auto is not None and value > 0:
        from ...training.auto_off import AutoTurnOff

        auto_sched = AutoTurnOff(value, **auto)

        def on_eval(s: int, row: dict) -> None:
            if auto_sched.triggered or s == 0:
                return
            auto_sched.observe(s - 1, row)  # the row at s is measured after update s-1
            if auto_sched.triggered:
                snaps["auto"] = (trainer.snapshot(), copy.deepcopy(auto_sched), auto_sched.off_from)
    else:
        on_eval = None

    done = 0

    def tick(to: int) -> None:
        nonlocal done
        if progress is not None and to > done:
            progress(to - done)
            done = to

    for p in points:
        trainer.advance(p, on_eval)
        tick(trainer.step)
        if value > 0 and trainer.diverged_at is None:
            snaps[arm_name(p)] = (trainer.snapshot(), turn_off(value, at=p), p)
    trainer.advance(T, on_eval)
    tick(T)
    results = [ArmResult("constant", value, list(trainer.rows), None, trainer.diverged_at)]
    if auto_sched is not None and "auto" not in snaps:
        results.append(ArmResult("auto", value, list(trainer.rows), None, trainer.diverged_at, {"triggered": False}))
    done_at: dict[int, ArmResult] = {}  # fixed turn-off arms by their switch step
    for name, (snap, sched, off) in sorted(snaps.items(), key=lambda kv: (kv[1][2], kv[0] == "auto")):
        info = {"triggered": True, "trigger_value": sched.trigger_value} if name == "auto" else {}
        same = done_at.get(off) if name == "auto" else None
        if same is not None and snap.step == off:
            # the automatic switch-off fired where a fixed arm switches: same state, same λ_t (value before
            # ``off``, 0 from it on), so the same run; its rows are reused instead of recomputed
            results.append(ArmResult(name, value, list(same.rows), off, same.diverged_at, info))
        else:
            trainer.restore(snap, sched)
            trainer.advance(T)
            results.append(ArmResult(name, value, list(trainer.rows), off, trainer.diverged_at, info))
            if name != "auto":
                done_at[off] = results[-1]
        if progress is not None:
            progress(T - off)
    for p in points:  # constant arm diverged before the turn-off: the turned-off arm is the same run
        if value == 0 or arm_name(p) not in snaps:
            results.append(ArmResult(arm_name(p), value, list(results[0].rows), p, results[0].diverged_at))
    trainer.close()
    order = {"constant": -2, "auto": 10**9}
    return sorted(results, key=lambda r: order.get(r.name, r.off_at if r.off_at is not None else -1))


def intersection(
    steps: Sequence[float], rho_const: Sequence[float], rho_off: Sequence[float], start: float
) -> float | None:
    """First step after ``start`` where the turned-off ρ curve crosses the constant one.

    The sign of ρ_off − ρ_const at the first evaluation after ``start`` with a non-zero difference is the
    reference; the crossing is the first later evaluation where the sign is the opposite (or the difference
    is 0). ``None`` when the curves do not cross within the run (Table 3's last row).
    """
    ref = 0.0
    for s, c, o in zip(steps, rho_const, rho_off):
        if s <= start or not (math.isfinite(c) and math.isfinite(o)):
            continue
        d = o - c
        if ref == 0.0:
            ref = math.copysign(1.0, d) if d != 0 else 0.0
            continue
        if d == 0 or math.copysign(1.0, d) != ref:
            return s
    return None
