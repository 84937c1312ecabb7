"""``mirrorflow phase`` up to and including the run directory: planning (and ``--dry-run``), running with
resume, facets, and what is written (cells.csv, figures, summary.json last)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ...config import config_dict, parse_overrides, split_list
from ...errors import ConfigError
from ...experiments import canonical, load
from ...store import RunDir, read_summary, run_id, write_csv, write_json, writing
from .cells import assemble, best_switch, turn_off_wins, winners
from .rows import plan_rows, run_grid
from .spec import AUTO, PhaseSpec, parse_spec


def plan_phase(experiment: str, tokens: Sequence[str], out: Path | str | None = None, check_out: bool = True):
    """``mirrorflow phase`` up to running (and its ``--dry-run``): (module, validated :class:`PhaseSpec`, run
    directory). Nothing is created."""
    return _plan_phase(experiment, parse_overrides(tokens), out, check_out)


def _plan_phase(experiment: str, kv: Mapping[str, str], out: Path | str | None = None, check_out: bool = True):
    mod = load(experiment)
    experiment = canonical(experiment)
    spec = parse_spec(experiment, kv, mod)
    out = Path(out) if out is not None else Path("runs") / run_id(spec.as_dict(), prefix=f"phase-{experiment}")
    if check_out:
        RunDir(out).check_out()
    return mod, spec, out


def open_run_dir(out: Path, config: Mapping, force: bool) -> tuple[RunDir, dict[str, list[dict]] | None]:
    """The run directory of a phase (or of a faceted phase) with ``config``: (directory, finished groups to
    resume from), or (directory, None) when it already holds the finished run of this config (nothing to
    run). ``force`` starts over."""
    from ...store import read_config

    rd = RunDir(out)
    rd.check_out()
    if force:
        rd.clear()
        for p in rd.file("groups").glob("*.json"):
            p.unlink()
        return rd, {}
    if rd.finished_with(config):
        return rd, None
    done = {}
    same = rd.file("config.yaml").is_file() and read_config(rd.file("config.yaml")) == config
    for p in sorted(rd.file("groups").glob("*.json")):
        if same:
            done[p.stem] = read_summary(p)["rows"]
        else:
            p.unlink()  # programs of another config (e.g. another auto rule) must not be resumed later
    return rd, done


def split_facet(kv: Mapping[str, str]) -> tuple[str | None, tuple[float, ...], dict[str, str]]:
    """``facet=KEY:V1,V2,...`` among the ``key=value`` pairs ``kv`` → (KEY, values, the other pairs);
    (None, (), kv) without a facet."""
    if "facet" not in kv:
        return None, (), dict(kv)
    key, _, raw = kv["facet"].partition(":")
    key = key.strip().replace("-", "_")
    try:
        values = tuple(dict.fromkeys(float(v) for v in split_list(raw, "facet")))
    except ValueError:
        raise ConfigError(f"facet: expected KEY:V1,V2,... (numbers), got {kv['facet']!r}") from None
    if not key or not values:
        raise ConfigError(f"facet: expected KEY:V1,V2,... (numbers), got {kv['facet']!r}")
    for axis in ("x", "y"):
        if kv.get(axis, "").split(":")[0].strip().replace("-", "_") == key:
            raise ConfigError(f"facet: {key} is already the {axis} axis")
    if key in kv:
        raise ConfigError(f"facet: {key} is the facet; drop {key}={kv[key]}")
    rest = {k: v for k, v in kv.items() if k != "facet"}
    return key, values, rest


def is_faceted(tokens: Sequence[str]) -> bool:
    """Whether the tokens of ``mirrorflow phase`` give a ``facet=`` (one phase run per facet value)."""
    return "facet" in parse_overrides(tokens)


def plan_facets(experiment: str, tokens: Sequence[str], out: Path | str | None = None):
    """A faceted phase (``facet=KEY:V1,V2``): (KEY, [(value, spec, sub-directory)], directory); each facet is
    a complete phase run with ``KEY=value`` in ``directory/KEY=value``. Nothing is created."""
    return _plan_facets(experiment, parse_overrides(tokens), out)


def _plan_facets(experiment: str, kv: Mapping[str, str], out: Path | str | None = None):
    key, values, rest = split_facet(kv)
    specs = []
    for v in values:
        _, spec, _ = _plan_phase(experiment, {**rest, key: f"{v:g}"}, ".", check_out=False)
        specs.append((v, spec))
    if out is None:
        out = Path("runs") / run_id(
            {"facet": key, "specs": [s.as_dict() for _, s in specs]}, prefix=f"phase-{canonical(experiment)}"
        )
    return key, [(v, spec, Path(out) / f"{key}={v:g}") for v, spec in specs], Path(out)


def run_phase(
    experiment: str,
    tokens: Sequence[str],
    out: Path | str | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, dict]:
    """Parse, run every group (resuming from finished ones), write the run directory (summary.json last);
    returns (dir, summary). With ``facet=KEY:V1,V2`` one phase per value, then the facets' summary."""
    return _run_phase(experiment, parse_overrides(tokens), out, force, progress)


def _run_phase(experiment: str, kv: Mapping[str, str], out: Path | str | None, force: bool, progress):
    if "facet" in kv:
        return _run_facets(experiment, kv, out, force, progress)
    _, spec, out = _plan_phase(experiment, kv, out)
    # locked; a failed or interrupted phase keeps its finished programs (groups/, resumed next time) and its
    # config, and removes everything else it added
    with writing(out, keep=lambda p: p.name in ("groups", "config.yaml")):
        rd, done = open_run_dir(Path(out), spec.as_dict(), force)
        if done is None:
            return out, rd.summary()
        rd.write_config(spec.as_dict())
        groups, index = plan_rows(spec)
        results, wall, cpu = run_grid(
            spec, groups, done, lambda g, rows: write_json(rd.file(f"groups/{g.gid}.json"), {"rows": rows}), progress
        )
        grids = assemble(spec, groups, results, index)
        write_phase(rd, spec, grids, groups, wall, cpu, resumed=sum(g.gid in done for g in groups))
    return out, rd.summary()


def write_phase(rd: RunDir, spec: PhaseSpec, grids, groups, wall: float, cpu: float, resumed: int = 0) -> None:
    """cells.csv, the figures (:func:`mirrorflow.report.phase.draw`), summary.json last."""
    from ...report.phase import draw

    xs, ys = spec.x.values, spec.y.values
    wins = turn_off_wins(grids, spec.metric, spec.margin)
    win, rel, clear = winners(grids, spec.metric, spec.margin)
    names = list(grids)
    rows = []
    for s, grid in grids.items():
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                row = {
                    "schedule": s,
                    spec.x.key: float(xv),
                    spec.y.key: float(yv),
                    "diverged_seeds": int(grid["diverged"][j, i]),
                }
                for m in dict.fromkeys(spec.metrics + (spec.metric,)):
                    row[m] = float(grid[m][j, i])
                    row[m + "_half"] = float(grid[m + "_half"][j, i])
                if s == AUTO:
                    row["auto_off"] = float(grid["auto_off"][j, i])
                    row["auto_fired"] = int(grid["auto_fired"][j, i])
                if spec.theory:
                    row["theory"] = grid["theory"][j, i]
                    row["theory_gap"] = float(grid["theory_gap"][j, i])
                row["winner"] = names[win[j, i]] if win[j, i] >= 0 else ""
                row["margin"] = float(rel[j, i])
                row["clear"] = bool(clear[j, i])
                row["turn_off_wins"] = bool(wins[j, i]) if wins is not None else ""
                rows.append(row)
    write_csv(rd.file("cells.csv"), rows, list(dict.fromkeys(k for r in rows for k in r)))
    n_rows = sum(len(g.rows) for g in groups)
    row_steps = sum(len(g.rows) * spec.program.horizon(g.cfg) for g in groups)
    summary = {
        "experiment": spec.experiment,
        "title": f"{spec.program.title}: {spec.program.describe(spec.base)}",
        "axes": {
            a: {"key": ax.key, "values": [float(v) for v in ax.values], "log": ax.log}
            for a, ax in (("x", spec.x), ("y", spec.y))
        },
        "fixed": spec.fixed,
        "labels": dict(spec.program.labels),
        "symbols": dict(spec.program.symbols),
        "metric": spec.metric,
        "metrics": list(spec.metrics),
        "lower_better": [m for m in spec.metrics if m in spec.program.lower_better],
        "references": {m: v for m, v in spec.program.references.items() if m in spec.metrics},
        "margin": spec.margin,
        "schedules": list(spec.schedules),
        "seeds": list(spec.seeds),
        "cells_per_schedule": len(xs) * len(ys),
        "rows": n_rows,  # distinct runs (cells × schedules × seeds, identical ones once)
        "groups": len(groups),
        "groups_resumed": resumed,
        "seconds_total": round(wall, 3),  # wall time of the programs run now (not the resumed ones)
        "cpu_seconds": round(cpu, 3),
        "row_steps_per_second": round(row_steps / wall, 1) if wall > 0 and not resumed else None,
        "row_steps_per_cpu_second": round(row_steps / cpu, 1) if cpu > 0 and not resumed else None,
        "device": spec.device or config_dict(spec.base).get("device", "cpu"),
        "threads": spec.threads,
        "diverged": {s: int((g["diverged"] > 0).sum()) for s, g in grids.items()},
        "winner_fraction": {s: float((win == k).mean()) for k, s in enumerate(names)},
        "clear_fraction": float(clear.mean()),
    }
    if spec.auto is not None:
        summary["auto"] = spec.auto.spec()
    note = spec.program.theory_note(spec.base)
    if note is not None:
        summary["theory"] = note
    elif spec.theory:
        summary["theory"] = {
            s: {k: int((g["theory"] == k).sum()) for k in sorted(set(g["theory"].ravel()) - {""})}
            for s, g in grids.items()
            if (g["theory"] != "").any()
        }
    if wins is not None:
        summary["turn_off_wins_fraction"] = float(wins.mean())
        if wins.any():
            jj, ii = np.nonzero(wins)
            summary["turn_off_wins_box"] = {
                spec.x.key: [float(xs[ii.min()]), float(xs[ii.max()])],
                spec.y.key: [float(ys[jj.min()]), float(ys[jj.max()])],
            }
    for s in grids:
        v = grids[s][spec.metric]
        summary[f"best_{spec.metric}_{s}"] = float(np.nanmin(v)) if np.isfinite(v).any() else None
    switch = best_switch(spec, grids)
    if switch is not None:
        summary["best_switch"] = switch
    draw(rd.path, summary, rows)
    rd.finish(summary)


def _run_facets(experiment: str, kv: Mapping[str, str], out: Path | str | None, force: bool, progress):
    """One phase run per facet value (each resumable on its own), then ``winner_facets.png`` and
    ``summary.json`` (per facet: the win fraction, the winners, the title) in the top directory."""
    from ...report.figures import save_png
    from ...report.phase import facet_winners, title_of
    from ...store import read_csv

    key, facets, out = _plan_facets(experiment, kv, out)
    RunDir(out).check_out()
    config = {
        "experiment": canonical(experiment),
        "facet": key,
        "values": [v for v, _, _ in facets],
        "runs": [sub.name for _, _, sub in facets],
    }
    # locked; the facets' own directories (each locked and cleaned by its run) and the config stay on failure
    with writing(out, keep=lambda p: p.is_dir() or p.name == "config.yaml"):
        rd, done = open_run_dir(out, config, force)
        if done is None:
            return out, rd.summary()
        rd.write_config(config)
        subs = {}
        for v, _spec, sub in facets:
            rest = {k: x for k, x in kv.items() if k != "facet"}
            _, subs[sub.name] = _run_phase(experiment, {**rest, key: f"{v:g}"}, sub, force, progress)
        panels = [(name, s, read_csv(out / name / "cells.csv")) for name, s in subs.items()]
        first = next(iter(subs.values()))
        unfaceted = {**first, "fixed": {k: v for k, v in first["fixed"].items() if k != key}}
        save_png(
            facet_winners(panels, title_of(unfaceted, f"Which schedule wins, as {key} changes?")),
            rd.file("winner_facets.png"),
        )
        keep = (
            "title",
            "turn_off_wins_fraction",
            "turn_off_wins_box",
            "winner_fraction",
            "clear_fraction",
            "seconds_total",
            "best_switch",
        )
        rd.finish(
            {
                "experiment": config["experiment"],
                "facet": key,
                "facet_values": config["values"],
                "metric": first["metric"],
                "facets": {name: {k: s[k] for k in keep if k in s} for name, s in subs.items()},
                "seconds_total": round(sum(s["seconds_total"] for s in subs.values()), 3),
            }
        )
    return out, rd.summary()
