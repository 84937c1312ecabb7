"""Typed sub-configs (config.sub_config): flat keys on the command line, in config.yaml and in run ids; and the
engine's one worker pool (engine.pool.run_pool)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mirrorflow.config import build, config_dict, flat_fields, flat_keys, sub_config
from mirrorflow.engine.grid import make_grid
from mirrorflow.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Part:
    steps: int = 10
    off_at: int = 5


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    part: Part = sub_config(Part, "deep_")


@dataclasses.dataclass(frozen=True)
class Outer:
    seed: int = 0
    fine: Part = sub_config(Part, "fine_", steps=100)
    plain: Inner = sub_config(Inner)


def test_flat_keys_fill_the_parts_and_config_dict_flattens_them_back():
    assert list(flat_fields(Outer)) == ["seed", "fine_steps", "fine_off_at", "rate", "deep_steps", "deep_off_at"]
    assert flat_fields(Outer)["fine_off_at"] == (("fine", "off_at"), int)
    assert flat_keys(Part, "fine_") == ("fine_steps", "fine_off_at")
    cfg = build(Outer, {"fine_off_at": "7", "rate": "0.5", "deep_steps": "3"})
    assert cfg == Outer(fine=Part(100, 7), plain=Inner(0.5, Part(3, 5)))  # fine_steps keeps the field's default 100
    assert config_dict(cfg) == {
        "seed": 0,
        "fine_steps": 100,
        "fine_off_at": 7,
        "rate": 0.5,
        "deep_steps": 3,
        "deep_off_at": 5,
    }
    assert build(Outer, {k: str(v) for k, v in config_dict(cfg).items()}) == cfg


def test_a_sub_config_key_is_checked_like_any_other():
    with pytest.raises(ConfigError, match="fine_steps: expected an integer, got 'x'"):
        build(Outer, {"fine_steps": "x"})
    with pytest.raises(ConfigError, match="unknown config key 'steps' .*fine_off_at"):
        build(Outer, {"steps": "3"})


def test_two_fields_with_one_flat_key_are_refused():
    @dataclasses.dataclass(frozen=True)
    class Clash:
        steps: int = 1
        part: Part = sub_config(Part)

    with pytest.raises(TypeError, match="two fields have the flat key 'steps'"):
        flat_fields(Clash)


def test_the_attention_grid_sweeps_a_sub_config_key_by_its_flat_name():
    from mirrorflow.experiments import attention

    grid = make_grid("attention", attention.Config, None, ["finetune_off_at=2,3", "finetune_steps=4"])
    assert grid.axes == ["finetune_off_at"]
    cfg = build(attention.Config, {"finetune_off_at": "0.5", "finetune_steps": "4", "lrs_optimizers": "sgd"})
    assert cfg.finetune.off_at == 2 and cfg.lrs.optimizers == ("sgd",) and config_dict(cfg)["finetune_off_at"] == 2


def test_the_pool_records_or_raises_failures():
    from mirrorflow.engine.pool import run_pool

    results, errors = {}, {}
    run_pool(math.sqrt, [4.0, -1.0, 9.0], 2, on_result=results.__setitem__, on_error=errors.__setitem__)
    assert results == {4.0: 2.0, 9.0: 3.0}
    assert list(errors) == [-1.0] and isinstance(errors[-1.0], ValueError)
    with pytest.raises(ValueError, match="math domain error"):
        run_pool(math.sqrt, [4.0, -1.0, 9.0], 2)


def test_a_step_or_a_fraction_keeps_what_the_user_typed():
    """An ``int | float`` key (a switch point: a step or a fraction) reads ``24`` as the step 24 and ``1.0`` as
    the fraction 1.0 (the whole run), as :func:`mirrorflow.schedules.switch_off_step` defines them."""
    from mirrorflow.config import _coerce

    assert [_coerce("off_at", raw, int | float) for raw in ("24", "1.0", "0.4", " 7 ", 3, 0.5)] == [
        24,
        1.0,
        0.4,
        7,
        3,
        0.5,
    ]
    assert isinstance(_coerce("off_at", "1.0", int | float), float)
