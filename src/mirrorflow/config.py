"""Experiment configs: dataclasses filled from ``key=value`` overrides, validated with one-line errors.

Every experiment defines a frozen dataclass of plain fields (int, float, str, bool, tuples of them) and a
``validate()`` method. :func:`build` turns ``key=value`` values into a typed, validated config, naming the bad
key on error; :func:`config_dict` gives the canonical dict that the run store hashes into a run id.

The command line's tokens have one reader, :func:`tokenize` (:func:`parse_overrides` where every token is
``key=value``), used by ``run``, ``reproduce``, ``sweep`` and ``phase`` alike: one wording for a token without
``=`` or a key given twice. A value that holds several items is split by :func:`split_top` /
:func:`split_list` (commas outside brackets and quotes); what the items mean (a sweep axis, a phase axis
``KEY:LO:HI:COUNT``) is up to the command. ``seeds=`` has one reader too, :func:`parse_seeds`
(``0,1,2``, ``0..4``).

Normalisation before hashing: a config may declare ``ignored_fields()`` — fields its other values make
irrelevant (e.g. ``schedule=none`` ignores ``wd`` and ``off``). :func:`build` resets those to their defaults,
so configs that differ only in ignored values are one config (one run id) and ``config.yaml`` never shows
a value that had no effect. A value the caller *gave* for an ignored field is a contradiction
(``schedule=none wd=0.5``) and is refused, naming the key, unless the caller allows it (a sweep crossing
``schedule`` with ``wd``, a phase grid). Integers must fit in 64 bits (``seed=1e30`` is a range error).

One validation home per kind of value, used by the command line and the Python API alike:

* counts (grid cells, seeds, windows, sizes): :func:`check_count`;
* rates (weight decay, learning rates, scales): :func:`check_rate`, including that the accumulated
  regularization a = −η Σ λ stays finite;
* thread counts: :func:`check_threads` (a field named ``threads`` is checked by :func:`build`);
* memory sizes: ``app.resources.check_resources`` against each experiment's ``estimate_bytes``;
* paths of run directories: :meth:`mirrorflow.store.RunDir.check_out`;
* when weight decay switches off (a step or a fraction of the run):
  :func:`mirrorflow.schedules.switch_off_step`.

A config may keep old key names as ``ALIASES = {"old": "new"}`` (a ``ClassVar``): :func:`build` accepts the
old name with a one-line note. Old keys that do not map one to one (several old keys that became several new
ones) are converted by a classmethod ``upgrade_keys(values) -> values`` of the config, which prints its note.

**Sub-configs.** A big config may group its fields into typed parts: a field ``finetune: FinetuneConfig =
sub_config(FinetuneConfig, "finetune_")`` (a frozen dataclass of plain fields, or of further sub-configs).
Its fields stay *flat keys* everywhere a user sees them — ``finetune_off_at=2`` on the command line, in
``config.yaml`` and in run ids — with the prefix in front (none when the prefix is empty): :func:`build` fills
the part from those keys, :func:`config_dict` flattens it back, :func:`flat_fields` lists the keys and types.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import ConfigError

C = TypeVar("C")
INT_LIMIT = 2**63  # integers (seeds, sizes) must fit torch's int64


def user_words(message: str, names: Mapping[str, str]) -> str:
    """``message`` with the argument names of a lower layer replaced by the config keys the user typed
    (e.g. the schedule's ``at``/``end`` → ``off``); whole words only."""
    return (
        re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], message)
        if names
        else message
    )


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _coerce(key: str, raw: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        optional = len(args) < len(typing.get_args(typ))
        if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", ""))):
            return None
        if int in args and float in args and not isinstance(raw, bool):  # a step or a fraction: 1.0 stays a float
            whole = isinstance(raw, int) or (isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw))
            return _coerce(key, raw, int if whole else float)
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


# ------------------------------------------------------------------------ the commands' key=value tokens
def tokenize(tokens: Iterable[str], positional: bool = False) -> tuple[list[str], dict[str, str]]:
    """The one splitter of command-line tokens (``run``, ``reproduce``, ``sweep``, ``phase``):
    ``["spec.yaml", "n=50", "lr=0.1"]`` → (``["spec.yaml"]``, ``{"n": "50", "lr": "0.1"}``).

    A key may be written with ``-`` for ``_`` (``n-atoms=3`` is ``n_atoms``); the value is the text after the
    first ``=``, kept as typed (it may be empty or contain ``=``, ``:`` or commas: what it means is up to the
    command, e.g. a sweep axis ``wd=0.1,0.2`` or a phase axis ``x=wd:0.1:1:4``). A token without ``=`` is a
    positional argument (a sweep's spec file) where ``positional``, an error otherwise. Errors (one wording
    for every command, naming the token typed): ``expected key=value, got 'n'`` (no ``=``, or an empty key
    as in ``=5``) and ``wd: given twice (wd=0.1 and wd=0.2); give it once``."""
    args: list[str] = []
    values: dict[str, str] = {}
    typed: dict[str, str] = {}
    for tok in map(str, tokens):
        raw_key, eq, value = tok.partition("=")
        key = raw_key.strip().replace("-", "_")
        if not eq and positional:
            args.append(tok)
            continue
        if not eq or not key:
            raise ConfigError(f"expected key=value, got {tok!r}")
        if key in values:
            raise ConfigError(f"{key}: given twice ({typed[key]} and {tok}); give it once")
        values[key], typed[key] = value, tok
    return args, values


def parse_overrides(tokens: Iterable[str]) -> dict[str, str]:
    """``["n=50", "lr=0.1"]`` → ``{"n": "50", "lr": "0.1"}``: :func:`tokenize` where every token is
    ``key=value``."""
    return tokenize(tokens)[1]


def split_top(text: str, key: str, sep: str = ",") -> list[str]:
    """Split the value of ``key`` at ``sep`` outside brackets and quotes: ``"[1,2],[3]"`` → ``["[1,2]", "[3]"]``
    (items unstripped; an unbalanced bracket or an unclosed quote is a ConfigError naming ``key``)."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{key}: unbalanced ']' in {text!r}")
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if quote:
        raise ConfigError(f"{key}: unclosed quote in {text!r}")
    if depth:
        raise ConfigError(f"{key}: unbalanced '[' in {text!r}")
    parts.append("".join(cur))
    return parts


def unquote(s: str) -> str:
    """``s`` stripped, without one pair of enclosing quotes (``'a,b'`` → ``a,b``)."""
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def split_list(text: str, key: str) -> list[str]:
    """The items of a comma-separated value of ``key`` (``schedules=a, b,c`` → ``["a", "b", "c"]``): split by
    :func:`split_top`, unquoted, empty items dropped."""
    return [unquote(p) for p in split_top(text, key) if p.strip()]


MAX_SEEDS = 100_000  # seeds in one list or range (a sweep has at most 100,000 points in all)
_SEED_RANGE = re.compile(r"(-?\d+)\s*\.\.\s*(-?\d+)")


def parse_seeds(raw: Any, key: str = "seeds", count: bool = False) -> tuple[int, ...]:
    """The one reader of ``seeds=`` (``run``, ``reproduce``, ``phase``, ``sweep``): integers and inclusive ranges,
    comma-separated — ``0,1,2`` → (0, 1, 2), ``0..4`` → (0, 1, 2, 3, 4), ``0..2,7`` → (0, 1, 2, 7); a YAML
    list of integers as it is. Seeds are distinct; one :class:`ConfigError` line naming ``key`` otherwise.

    ``count`` (``sweep`` only): its older form ``seeds=N``, a lone integer, still means the N seeds 0..N-1;
    a one-line note on stderr gives the range that says the same (``seeds=0..N-1``)."""
    form = f"{key} must be integers or ranges A..B, comma-separated (e.g. {key}=0,1,2 or {key}=0..4), got {raw!r}"
    if isinstance(raw, bool):
        raise ConfigError(form)
    if count and (isinstance(raw, int) or re.fullmatch(r"\s*\d+\s*", str(raw))):
        n = int(raw)
        if not 1 <= n <= MAX_SEEDS:
            raise ConfigError(
                f"{key}={raw} is a count of seeds and must be 1..{MAX_SEEDS}; "
                f"or list the seeds ({key}=0,1,2) or give a range ({key}=0..4)"
            )
        print(f"note: {key}={n} (a count) runs seeds 0..{n - 1}; {key}=0..{n - 1} says the same", file=sys.stderr)
        return tuple(range(n))
    items = list(raw) if isinstance(raw, (list, tuple)) else split_list(str(raw), key)
    seeds: list[int] = []
    for item in items:
        text = str(item).strip()
        rng = _SEED_RANGE.fullmatch(text)
        try:
            lo, hi = (int(rng.group(1)), int(rng.group(2))) if rng else (int(text), int(text))
        except ValueError:
            raise ConfigError(form) from None
        if isinstance(item, bool) or lo > hi or max(abs(lo), abs(hi)) >= INT_LIMIT:
            raise ConfigError(form)
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"{key}: at most {MAX_SEEDS} seeds, got {raw!r}")
        seeds.extend(range(lo, hi + 1))
    require(len(seeds) > 0, form)
    require(len(set(seeds)) == len(seeds), f"{key} must list distinct integers, got {raw!r}")
    return tuple(seeds)


def check_count(key: str, raw: Any, low: int = 1, high: int | None = None) -> int:
    """A count (grid points, seeds, windows, block sizes): an integer in ``low..high`` from a number or a
    string; ``inf``, ``1e400``, ``2.5`` and ``abc`` raise one :class:`ConfigError` naming ``key``."""
    rng = f"{low}..{high}" if high is not None else f"≥ {low}"
    try:
        f = float(str(raw).strip()) if not isinstance(raw, (int, float)) or isinstance(raw, bool) else raw
    except ValueError:
        f = math.nan
    if isinstance(raw, bool) or not (isinstance(f, int) or (math.isfinite(f) and f == int(f))):
        raise ConfigError(f"{key} must be an integer {rng}, got {raw!r}")
    n = int(f)
    if n < low or (high is not None and n > high):
        raise ConfigError(f"{key} must be an integer {rng}, got {n}")
    return n


def check_rate(key: str, value: float, positive: bool = False, horizon: float | None = None) -> float:
    """A rate (weight decay λ, a learning rate, a scale): finite and ≥ 0 (> 0 when ``positive``). With
    ``horizon`` (η · steps for a weight decay) the accumulated regularization a = −horizon · λ must be finite
    too: ``wd=1e308`` would give a = −inf (docs/theory.md: R_a is defined for finite a ≤ 0)."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ConfigError(f"{key} must be {'positive' if positive else 'non-negative'} and finite, got {value}")
    if horizon is not None and not math.isfinite(v * horizon):
        raise ConfigError(
            f"{key}={value} makes the accumulated regularization a = -lr·steps·{key} infinite "
            f"(at most {math.floor(1e308 / horizon):.3g} here)"
        )
    return v


def check_threads(key: str, value: int, zero_ok: bool = True) -> int:
    """A thread count: ``1..cores()`` (and ``0`` = torch's default when ``zero_ok``), naming ``key``."""
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "0 (torch's default) or 1.." if zero_ok else "1.."
        raise ConfigError(f"{key} must be {what}{cores()} (the cores of this machine), got {value!r}")
    if value > cores():
        raise ConfigError(f"{key}: at most the {cores()} cores of this machine, got {value}")
    return value


class IgnoredValueError(ConfigError):
    """A value given for a field the config ignores (``schedule=none wd=0.5``); ``keys`` lists all of them."""

    def __init__(self, message: str, keys: Iterable[str]):
        super().__init__(message)
        self.keys = tuple(keys)


PREFIX = "mirrorflow.prefix"  # field metadata of a sub-config: the prefix of its flat keys


def sub_config(cls: type, prefix: str = "", **defaults: Any) -> Any:
    """A field holding a typed sub-config ``cls`` whose fields are the flat keys ``prefix + name`` (module
    docstring); ``defaults`` override ``cls``'s own defaults for this use (e.g. ``workers=2``)."""
    factory = functools.partial(cls, **defaults) if defaults else cls
    return dataclasses.field(default_factory=factory, metadata={PREFIX: prefix})


def flat_fields(cls: type) -> dict[str, tuple[tuple[str, ...], Any]]:
    """``{flat key: (path of field names, type)}`` of a config dataclass, sub-configs flattened in field order:
    ``{"finetune_off_at": (("finetune", "off_at"), int | float), ...}``. Two fields with the same flat key are
    a ``TypeError`` (a mistake in the config's definition)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    for f in dataclasses.fields(cls):
        if PREFIX in f.metadata:
            inner = {
                f.metadata[PREFIX] + k: ((f.name, *path), t) for k, (path, t) in flat_fields(hints[f.name]).items()
            }
        else:
            inner = {f.name: ((f.name,), hints[f.name])}
        for k in inner:
            if k in out:
                raise TypeError(f"{cls.__name__}: two fields have the flat key {k!r}")
        out.update(inner)
    return out


def flat_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """The flat keys of config dataclass ``cls`` (:func:`flat_fields`), with ``prefix`` in front (a sub-config's
    keys as its parent config spells them)."""
    return tuple(prefix + k for k in flat_fields(cls))


def _assemble(cls: type[C], values: Mapping[tuple[str, ...], Any], base: Any = None) -> C:
    """``cls`` from values keyed by field paths (:func:`flat_fields`); a sub-config starts from its field's
    default (``sub_config(..., **defaults)``) and takes the values given for it."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if PREFIX in f.metadata:
            inner = {p[1:]: v for p, v in values.items() if p[0] == f.name}
            if inner:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
                kwargs[f.name] = _assemble(hints[f.name], inner, default)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


@runtime_checkable
class Validated(Protocol):
    """A config that checks itself: ``validate()`` raises :class:`ConfigError` naming the bad key."""

    def validate(self) -> None: ...


@runtime_checkable
class IgnoresFields(Protocol):
    """A config whose values can make other fields irrelevant (module docstring: normalisation)."""

    def ignored_fields(self) -> tuple[str, ...]: ...


def build(cls: type[C], values: Mapping[str, Any] | None = None, allow_ignored: bool = False) -> C:
    """Instantiate config dataclass ``cls`` from raw values (strings or typed), then ``validate()`` it.

    A value given for a field the config ignores (``ignored_fields()``: ``schedule=none wd=0.5``) raises
    :class:`ConfigError` naming the key, unless ``allow_ignored`` (then it is reset, module docstring)."""
    values = _renamed(cls, dict(values or {}))
    fields = flat_fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    typed = {k: _coerce(k, v, fields[k][1]) for k, v in values.items()}
    if isinstance(typed.get("threads"), int):
        check_threads("threads", typed["threads"])
    cfg = _assemble(cls, {fields[k][0]: v for k, v in typed.items()})
    if isinstance(cfg, IgnoresFields):  # normalise values that have no effect (module docstring)
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        reset = {k: defaults[k] for k in cfg.ignored_fields() if k in defaults and getattr(cfg, k) != defaults[k]}
        given = [k for k in reset if k in values]
        if given and not allow_ignored:
            why = f" with schedule={cfg.schedule}" if hasattr(cfg, "schedule") else " in this config"
            raise IgnoredValueError(
                f"{given[0]}={values[given[0]]} has no effect{why}: leave {given[0]} out "
                "or choose a schedule that uses it",
                given,
            )
        if reset:
            cfg = dataclasses.replace(cfg, **reset)
    if isinstance(cfg, Validated):
        cfg.validate()
    return cfg


def renamed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Old key names a config still accepts: ``cls.ALIASES`` maps each to its new name (a one-line note on
    stderr says so); ``values`` is changed in place and returned. Giving both the old and the new name is
    refused. (The sweep's grid uses it on its keys before checking them.)"""
    aliases: Mapping[str, str] = getattr(cls, "ALIASES", {})
    for old, new in aliases.items():
        if old in values:
            if new in values:
                raise ConfigError(f"{old} and {new} are the same setting ({old} is its old name): give only {new}")
            print(f"note: {old} is now called {new}", file=sys.stderr)
            values[new] = values.pop(old)
    return values


def _renamed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """:func:`renamed`, then the config's own ``upgrade_keys`` (old keys that do not map one to one)."""
    values = renamed(cls, values)
    upgrade = getattr(cls, "upgrade_keys", None)
    return upgrade(values) if upgrade is not None else values


def config_dict(cfg: Any) -> dict[str, Any]:
    """Canonical plain dict of a config dataclass (tuples become lists), used for hashing and YAML; the
    fields of sub-configs as their flat keys (module docstring)."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if PREFIX in f.metadata:
            out.update({f.metadata[PREFIX] + k: x for k, x in config_dict(v).items()})
        else:
            out[f.name] = plain(v)
    return out


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)
