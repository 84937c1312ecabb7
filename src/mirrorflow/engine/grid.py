"""Grid specs: a YAML file and/or CLI ``key=v1,v2,...`` overrides × ``seeds=...`` → resolved configs.

A sweep is the Cartesian product of its *axes* (every key with more than one value), crossed with the
seeds of ``seeds=0..4`` or ``seeds=0,1,2`` (:func:`mirrorflow.config.parse_seeds`; the older count form
``seeds=N``, seeds 0..N-1, is still read, with a note). Each grid point is resolved into the experiment's
typed, validated ``Config`` (:func:`mirrorflow.config.build`) and named by the same deterministic id that
``mirrorflow run`` uses, ``run_id({"experiment": NAME, **config_dict(cfg)}, prefix=NAME)``: the id is a
hash of the *resolved* config, so ``wd=0.1`` and ``wd=1e-1`` are the same run, and a re-run finds it.

YAML spec (every section optional)::

    experiment: matrix-sensing     # must match the command's EXPERIMENT when given
    seeds: 0..2                    # seed = 0, 1, 2 (the config needs a ``seed`` field); or [0, 1, 2]
    base:                          # one value per key (not swept)
      n: 8
      steps: 200
      weight_decays: [0.0, 0.1]    # a tuple-typed field: this list IS the value
    grid:                          # axes: each key maps to a LIST OF VALUES
      wd: [0.0, 0.01, 0.1]
      schedule: [constant, turn_off]
      weight_decays: [[0.0, 0.1], [0.3]]   # tuple-typed axis: a list of lists

``grid`` may also be a list of such mappings; the sweep is then the union of their products (e.g. one
sub-grid for ``schedule: [constant]`` and one for ``schedule: [turn_off]`` × ``off: [...]``).

CLI tokens (Hydra's override syntax; split by :func:`mirrorflow.config.parse_overrides`, the items of a value
by :func:`mirrorflow.config.split_top`): ``key=v`` is one value, ``key=v1,v2,v3`` an axis. **Lists vs axes.**
Top-level commas separate axis values; a value in brackets ``[a,b]`` is a list. For a field whose type is a
tuple (e.g. diagonal's ``weight_decays``) an unbracketed ``key=a,b`` is ONE value, the tuple ``(a, b)``,
exactly as in ``mirrorflow run``; to sweep it, bracket each value: ``weight_decays=[0,0.1],[0.3]`` is an
axis with two tuples. For scalar fields a bracketed value is an error. Quotes (``'a,b'``) protect commas in
strings. A CLI token replaces the YAML's entry (``base`` or ``grid``) for that key; ``seeds=...`` on the CLI
replaces the YAML's ``seeds``.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import parse_overrides, parse_seeds, renamed, split_top, unquote
from ..errors import ConfigError

MAX_POINTS = 100_000
SPEC_KEYS = ("experiment", "seeds", "base", "grid")


@dataclass(frozen=True)
class GridPoint:
    """One resolved configuration of a sweep."""

    run_id: str
    config: Any  # the experiment's Config instance
    params: dict[str, Any]  # the axis values (and seed) that picked this point, for reports


@dataclass
class Grid:
    """A parsed spec before resolution: fixed values, axes (sub-grids), number of seeds."""

    experiment: str
    base: dict[str, Any] = field(default_factory=dict)
    grids: list[dict[str, list[Any]]] = field(default_factory=lambda: [{}])
    seeds: tuple[int, ...] | None = None  # seeds=0..2 (or the count form seeds=3): the seed axis
    module: Any = field(default=None, repr=False, compare=False)  # the experiment module (its Config, run, ...)

    @property
    def axes(self) -> list[str]:
        """Keys that take more than one value somewhere (plus ``seed`` with ``seeds``), in spec order."""
        keys: list[str] = []
        for g in self.grids:
            for k, vals in g.items():
                if k not in keys and (len(vals) > 1 or len(self.grids) > 1):
                    keys.append(k)
        if self.seeds is not None and "seed" not in keys:
            keys.append("seed")
        return keys


# ------------------------------------------------------------------------------------ CLI tokens
def _parse_value(key: str, text: str) -> Any:
    """One CLI value: ``[a,b]`` → list of strings, ``'x'`` → ``x``, anything else the stripped string."""
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [unquote(x) for x in split_top(inner, key)] if inner else []
    if s.startswith("[") or s.endswith("]"):
        raise ConfigError(f"{key}: malformed list {text!r}")
    return unquote(s)


def _is_tuple_field(typ: Any) -> bool:
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_is_tuple_field(a) for a in typing.get_args(typ))
    return origin is tuple or origin is list


def field_types(config_cls: type) -> dict[str, Any]:
    """``{key: type}`` of an experiment's config dataclass (sub-configs as their flat keys)."""
    from ..config import flat_fields

    return {k: t for k, (_, t) in flat_fields(config_cls).items()}


def parse_cli(
    tokens: Iterable[str], config_cls: type
) -> tuple[dict[str, Any], dict[str, list[Any]], tuple[int, ...] | None]:
    """CLI tokens (:func:`mirrorflow.config.parse_overrides`) → (fixed values, axes, seeds). See the module
    docstring for the list/axis rule."""
    types = field_types(config_cls)
    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    seeds: tuple[int, ...] | None = None
    for key, text in renamed(config_cls, parse_overrides(tokens)).items():
        if key == "seeds":
            seeds = parse_seeds(text, count=True)
            continue
        if key not in types:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(types))})")
        if text.strip() == "":
            raise ConfigError(f"{key}: no value given")
        is_tuple = _is_tuple_field(types[key])
        parts = split_top(text, key)
        if is_tuple and not any(p.strip().startswith("[") for p in parts):
            values = [[unquote(p) for p in parts]]  # key=a,b on a tuple field: one value, as in `run`
        else:
            values = [_parse_value(key, p) for p in parts]
            if any(p.strip() == "" for p in parts):
                raise ConfigError(f"{key}: empty value in {text!r}")
            if not is_tuple and any(isinstance(v, list) for v in values):
                raise ConfigError(f"{key}: is not a list-valued field, got {text!r}")
            if is_tuple and not all(isinstance(v, list) for v in values):
                raise ConfigError(f"{key}: bracket every value of a list-valued axis, e.g. {key}=[0,0.1],[0.3]")
        if len(values) == 1:
            base[key] = values[0]
        else:
            axes[key] = values
    return base, axes, seeds


# ------------------------------------------------------------------------------------- YAML file
def _yaml_loader():
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false are booleans, so a key or value
    ``off``/``on``/``yes``/``no`` (matrix sensing's ``off`` field!) stays a string."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


MAX_SPEC_VALUES = 100_000  # scalars in a sweep spec once its aliases are expanded (a YAML "billion laughs")


def _expanded_size(obj: Any, limit: int) -> int:
    """The number of scalars in ``obj`` with every alias expanded, counted up to just past ``limit`` only
    (an alias bomb is never walked in full)."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        else:
            count += 1
    return count


def load_yaml(path: Path | str, experiment: str, config_cls: type) -> Grid:
    """Read a YAML spec (module docstring) into a :class:`Grid`; every problem is one ``ConfigError`` line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {str(path)!r} not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"sweep spec {path.name}{where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {path}: not UTF-8 text") from None
    if raw is None:
        raw = {}
    if _expanded_size(raw, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise ConfigError(
            f"sweep spec {path.name}: expands to more than {MAX_SPEC_VALUES} values "
            "(YAML anchors and aliases repeat them); a sweep spec lists its values"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep spec {path.name}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"sweep spec {path.name}: unknown section {unknown[0]!r} (known: {', '.join(SPEC_KEYS)}); "
            "put config keys under 'base:' or 'grid:'"
        )
    exp = raw.get("experiment")
    if exp is not None and str(exp).replace("_", "-") != experiment.replace("_", "-"):
        raise ConfigError(f"sweep spec {path.name} is for experiment {exp!r}, not {experiment!r}")
    types = field_types(config_cls)
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"sweep spec {path.name}: 'base' must be a mapping of key: value")
    base = renamed(config_cls, dict(base))
    for k in base:
        _check_key(path.name, k, types)
    grids_raw = raw.get("grid") or {}
    grids_list = grids_raw if isinstance(grids_raw, list) else [grids_raw]
    grids: list[dict[str, list[Any]]] = []
    for i, g in enumerate(grids_list):
        where = f"grid[{i}]" if isinstance(grids_raw, list) else "grid"
        if not isinstance(g, dict):
            raise ConfigError(f"sweep spec {path.name}: '{where}' must be a mapping of key: [values]")
        axes: dict[str, list[Any]] = {}
        for k, vals in renamed(config_cls, dict(g)).items():
            _check_key(path.name, k, types)
            if not isinstance(vals, list):
                raise ConfigError(f"sweep spec {path.name}: {where}.{k} must be a list of values, got {vals!r}")
            if not vals:
                raise ConfigError(f"sweep spec {path.name}: {where}.{k} is an empty list")
            if _is_tuple_field(types[k]) and not all(isinstance(v, list) for v in vals):
                raise ConfigError(
                    f"sweep spec {path.name}: {where}.{k} is list-valued; give a list of lists, e.g. [[0, 0.1], [0.3]]"
                )
            axes[str(k)] = list(vals)
        grids.append(axes)
    seeds = raw.get("seeds")
    return Grid(experiment, dict(base), grids or [{}], parse_seeds(seeds, count=True) if seeds is not None else None)


def _check_key(fname: str, key: Any, types: Mapping[str, Any]) -> None:
    if key == "seeds":
        raise ConfigError(f"sweep spec {fname}: 'seeds' is a top-level entry, not a config key")
    if key not in types:
        raise ConfigError(f"sweep spec {fname}: unknown config key {key!r} (known: {', '.join(sorted(types))})")


# ---------------------------------------------------------------------------------------- resolve
def make_grid(experiment: str, config_cls: type, spec: Path | str | None = None, tokens: Sequence[str] = ()) -> Grid:
    """Combine an optional YAML spec with CLI tokens (CLI wins per key)."""
    grid = load_yaml(spec, experiment, config_cls) if spec is not None else Grid(experiment)
    base, axes, seeds = parse_cli(tokens, config_cls)
    for k in list(base) + list(axes):
        grid.base.pop(k, None)
        for g in grid.grids:
            g.pop(k, None)
    grid.base.update(base)
    if axes:
        grid.grids = [{**g, **axes} for g in grid.grids]
    if seeds is not None:
        grid.seeds = seeds
    return grid


def expand(grid: Grid, config_cls: type) -> list[GridPoint]:
    """Every grid point as a validated config with its run id; duplicates (same resolved config) dropped."""
    from ..config import IgnoredValueError, build, config_dict
    from ..store import run_id

    types = field_types(config_cls)
    if grid.seeds is not None:
        if "seed" not in types:
            raise ConfigError(f"seeds= needs a 'seed' config field; experiment {grid.experiment!r} has none")
        if "seed" in grid.base or any("seed" in g for g in grid.grids):
            raise ConfigError("give either seeds=... or seed=..., not both")
    total = 0
    for g in grid.grids:
        size = 1
        for vals in g.values():
            size *= len(vals)
        total += size * (len(grid.seeds) if grid.seeds is not None else 1)
    if total > MAX_POINTS:
        raise ConfigError(f"the grid has {total} points (more than {MAX_POINTS}); split it into several sweeps")
    axes = grid.axes
    # a value the config ignores at some points is no contradiction (schedule=none,turn_off with off=0.3: the
    # none points reset it, config.build); one it ignores at every point where it is given is refused
    never_used = set(grid.base) | {k for g in grid.grids for k in g}
    example: dict[str, str] = {}
    points: list[GridPoint] = []
    seen: set[str] = set()
    seed_values = grid.seeds if grid.seeds is not None else [None]
    for g in grid.grids:
        keys = list(g)
        for combo in itertools.product(*(g[k] for k in keys)):
            for seed in seed_values:
                values = {**grid.base, **dict(zip(keys, combo))}
                if seed is not None:
                    values["seed"] = seed
                try:
                    try:
                        cfg, ignored = build(config_cls, values), ()
                    except IgnoredValueError as e:
                        cfg, ignored = build(config_cls, values, allow_ignored=True), e.keys
                        example.setdefault(e.keys[0], str(e))
                    never_used -= set(values) - set(ignored)
                except (ConfigError, ValueError, TypeError) as e:
                    point = {k: values[k] for k in axes if k in values}
                    raise ConfigError(f"grid point {_fmt_point(point)}: {e}") from None
                resolved = config_dict(cfg)
                rid = run_id({"experiment": grid.experiment, **resolved}, prefix=grid.experiment)
                if rid in seen:
                    continue
                seen.add(rid)
                params = {k: resolved[k] for k in axes if k in resolved}
                points.append(GridPoint(rid, cfg, params))
    for k in example:
        if k in never_used:  # e.g. "wd=0.5 has no effect with schedule=none: ..." at every point
            raise ConfigError(f"{example[k]} (at every point of the grid)")
    return points


def _fmt_point(point: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in point.items()) + "}" if point else "{}"


def resolve(
    experiment: str, module: Any, spec: Path | str | None = None, tokens: Sequence[str] = ()
) -> tuple[Grid, list[GridPoint]]:
    """``mirrorflow sweep EXPERIMENT [spec.yaml] [tokens]`` → (grid, resolved points) for the experiment
    named ``experiment`` whose module (``Config``, ``run``, optionally ``run_many``) is ``module``."""
    grid = make_grid(experiment.replace("_", "-"), module.Config, spec, tokens)
    grid.module = module
    return grid, expand(grid, module.Config)
