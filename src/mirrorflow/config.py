"""Experiment configs: dataclasses filled from ``key=value`` overrides, validated with one-line errors.

Every experiment defines a frozen dataclass of plain fields (int, float, str, bool, tuples of them) and a
``validate()`` method. :func:`parse_overrides` turns CLI tokens into typed values, naming the bad key on
error; :func:`config_dict` gives the canonical dict that the run store hashes into a run id.

Normalisation before hashing: a config may declare ``ignored_fields()`` — fields its other values make
irrelevant (e.g. ``schedule=none`` ignores ``wd`` and ``off``). :func:`build` resets those to their defaults,
so configs that differ only in ignored values are one config (one run id) and ``config.yaml`` never shows
a value that had no effect. Integers must fit in 64 bits (``seed=1e30`` is a range error), and a field
named ``threads`` is at most the machine's cores.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from typing import Any, Iterable, Mapping, TypeVar

from .errors import ConfigError

C = TypeVar("C")
INT_LIMIT = 2 ** 63  # integers (seeds, sizes) must fit torch's int64


def user_words(message: str, names: Mapping[str, str]) -> str:
    """``message`` with the argument names of a lower layer replaced by the config keys the user typed
    (e.g. the schedule's ``at``/``end`` → ``off``); whole words only."""
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], message) \
        if names else message


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _coerce(key: str, raw: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        for a in args:
            try:
                return _coerce(key, raw, a)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {' or '.join(getattr(a, '__name__', str(a)) for a in args)}, got {raw!r}")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(typ) or (str,)
        items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",") if s.strip() != ""]
        return tuple(_coerce(key, x, inner) for x in items)
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {raw!r}")
    if typ is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            if abs(raw) >= INT_LIMIT:
                raise ConfigError(f"{key}: {raw!r} is out of range (integers must be below 2**63)")
            return raw
        try:
            f = float(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        if abs(f) >= INT_LIMIT:
            raise ConfigError(f"{key}: {raw!r} is out of range (integers must be below 2**63)")
        return int(f)
    if typ is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        try:
            return float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    if typ is str:
        return str(raw)
    return raw


def parse_overrides(tokens: Iterable[str]) -> dict[str, str]:
    """``["n=50", "lr=0.1"]`` → ``{"n": "50", "lr": "0.1"}``; a token without ``=`` is an error."""
    out: dict[str, str] = {}
    for tok in tokens:
        if "=" not in tok:
            raise ConfigError(f"expected key=value, got {tok!r}")
        k, v = tok.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ConfigError(f"expected key=value, got {tok!r}")
        out[k] = v
    return out


def build(cls: type[C], values: Mapping[str, Any] | None = None) -> C:
    """Instantiate config dataclass ``cls`` from raw values (strings or typed), then ``validate()`` it."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    typed = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    if isinstance(typed.get("threads"), int) and typed["threads"] > cores():
        raise ConfigError(f"threads: at most the {cores()} cores of this machine, got {typed['threads']}")
    cfg = cls(**typed)
    ignored = getattr(cfg, "ignored_fields", None)
    if ignored is not None:  # normalise values that have no effect (module docstring)
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        reset = {k: defaults[k] for k in ignored() if k in defaults and getattr(cfg, k) != defaults[k]}
        if reset:
            cfg = dataclasses.replace(cfg, **reset)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def config_dict(cfg: Any) -> dict[str, Any]:
    """Canonical plain dict of a config dataclass (tuples become lists), used for hashing and YAML."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)


def parse_seed_list(raw: Any, key: str = "seeds") -> tuple[int, ...]:
    """``"0,1,2"`` → (0, 1, 2) for a ``reproduce`` option; one :class:`ConfigError` line naming ``key``."""
    try:
        seeds = tuple(int(v) for v in str(raw).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{key} must be a comma-separated list of integers, got {raw!r}") from None
    require(len(seeds) > 0 and len(set(seeds)) == len(seeds), f"{key} must list distinct integers, got {raw!r}")
    return seeds
