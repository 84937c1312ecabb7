"""The LoRA experiment's runs: one cached group per (λ, seed) with the constant, turned-off and automatic
arms (:mod:`..transformer_kit.groups`), the grid, ``run`` and ``reproduce`` (Table 5 / Fig. 4 analogs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ...config import build, config_dict
from ...engine.progress import progress_or_bar
from ...engine.protocol import Plan
from ...runtime import set_threads
from ..transformer_kit.distributed import barrier, dist_env
from ..transformer_kit.groups import GroupJob, GroupRunner, group_key
from ..transformer_kit.train import ArmResult, Trainer, run_arms
from .config import Config
from .model import make_model, make_task
from .report import figures, summarize, table5_markdown


# --------------------------------------------------------------------------------------------- runs
def _values(cfg: Config) -> list[float]:
    return list(cfg.weight_decays) + ([0.0] if cfg.baseline and 0.0 not in cfg.weight_decays else [])


def _group_steps(cfg: Config, value: float) -> int:
    return cfg.train.steps + (((2 if cfg.auto.off else 1) * (cfg.train.steps - cfg.off_at)) if value > 0 else 0)


GRID = ("weight_decays", "seeds", "baseline")  # the keys that enumerate the groups (each adds its λ and seed)


def group_job(cfg: Config, out: Path | str, value: float, seed: int) -> GroupJob:
    """One (λ, seed) group. Its config is the whole config but the :data:`GRID` keys (adding a seed or a weight
    decay reuses the finished groups) and the volatile ones (:func:`..transformer_kit.groups.group_key`), plus
    the group's λ and seed."""
    config = {"experiment": "lora", **group_key(cfg, GRID), "weight_decay": value, "seed": seed}
    return GroupJob(
        Path(out) / "groups" / f"wd{value:g}-seed{seed}",
        config,
        _group_steps(cfg, value),
        {"value": value, "seed": seed},
    )


class LoRARunner(GroupRunner):
    """Computes one (λ, seed) group: constant λ, turned off at ``off_at``, automatic switch-off (λ > 0)."""

    def __init__(self, cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None):
        super().__init__(__name__, config_dict(cfg), out, dist_env(cfg.runtime.device), progress)
        self.cfg = cfg
        self._task = None

    @property
    def task(self):
        if self._task is None:
            self._task = make_task(self.cfg, self.env.device)
        return self._task

    def compute(self, job: GroupJob) -> list[ArmResult]:
        from ...training.monitor import SpectralMonitor

        cfg, value, seed = self.cfg, job.params["value"], job.params["seed"]
        model = make_model(cfg, self.task, seed)
        trainer = Trainer(
            model, self.task, cfg.train_spec(seed), value, self.env, SpectralMonitor(model, every=1, include="lora")
        )
        offs = [cfg.off_at] if value > 0 else []
        return run_arms(trainer, value, offs, cfg.auto.kwargs() if value > 0 else None, self.progress)


def make_runner(values: Mapping, out: Path | str) -> LoRARunner:
    """The runner of a worker process (one torch thread set by the config)."""
    cfg = build(Config, values)
    set_threads(cfg.runtime.threads)
    return LoRARunner(cfg, out)


def run_grid(
    cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None
) -> tuple[dict[float, list[list[ArmResult]]], str]:
    """All (weight decay, seed) groups of ``cfg`` under ``out/groups/``; finished groups are reused.

    With ``workers > 1`` the unfinished groups first run in that many processes; every group, in a worker or
    in this process, runs with ``threads`` torch threads.
    Returns ``{λ: [arms of seed 0, arms of seed 1, ...]}`` (λ = 0 for the baseline) and the task's description.
    """
    from ...runtime import torch_threads

    keys = [(v, s) for v in _values(cfg) for s in cfg.seeds]
    with torch_threads(cfg.runtime.threads):
        runner = LoRARunner(cfg, out, progress)
        groups = runner.run_all([group_job(cfg, out, v, s) for v, s in keys], cfg.runtime.workers)
    result: dict[float, list[list[ArmResult]]] = {}
    for (v, _), arms in zip(keys, groups):
        result.setdefault(v, []).append(arms)
    return result, runner.task.describe()


def run(cfg: Config, out: Path | str, progress: Callable[[int], None] | None = None) -> dict:
    """The grid of ``cfg`` into ``out``: groups/, table5.md, figures, summary.json (last)."""
    from ...store import RunDir

    t0 = time.perf_counter()
    grid, task_desc = run_grid(cfg, out, progress)
    env = dist_env(cfg.runtime.device)
    rows = summarize(cfg, grid)
    table = table5_markdown(cfg, rows, task_desc)
    summary = {
        "experiment": "lora",
        "table": table,
        "rows": [_jsonable(r) for r in rows],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if env.is_main:
        rd = RunDir(out)
        rd.write_config({"experiment": "lora", **config_dict(cfg)})
        rd.write_text("table5.md", table)
        figures(cfg, grid, rd)
        rd.finish(summary)
    barrier(env)
    return summary


def _jsonable(row: dict) -> dict:
    """A summary row with its paired differences as plain dicts (for summary.json)."""
    import dataclasses

    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in row.items() if k != "arms"}


def total_steps(cfg: Config) -> int:
    """Training steps of the grid (turned-off and auto arms continue from the constant run)."""
    return len(cfg.seeds) * sum(_group_steps(cfg, v) for v in _values(cfg))


def reproduce_plan(overrides: Mapping[str, str] | None = None) -> Plan:
    """``reproduce``'s overrides resolved: the LoRA grid's ``Config`` (its seeds and weight decays are fields)."""
    return Plan((("lora", build(Config, overrides or {})),))


def reproduce(
    out: Path | str, overrides: Mapping[str, str] | None = None, progress: Callable[[int], None] | None = None
) -> str:
    """Table 5 / Fig. 4 analog with the CPU defaults (SmolLM2-135M, language modelling on tiny_shakespeare);
    returns the markdown table."""
    cfg = reproduce_plan(overrides).config
    with progress_or_bar(
        progress,
        total_steps(cfg),
        f"lora ({cfg.resolved_model}, {cfg.task})",
        show=dist_env(cfg.runtime.device).is_main,
    ) as progress:
        return run(cfg, out, progress)["table"]
