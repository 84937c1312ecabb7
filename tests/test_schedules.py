"""Properties of the weight-decay schedules (mirrorflow.schedules)."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorflow import schedules as S

strength = st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False)
horizon = st.integers(min_value=1, max_value=400)


@st.composite
def any_schedule(draw):
    T = draw(horizon)
    c = draw(strength)
    kind = draw(st.sampled_from(["constant", "turn_off", "linear", "cosine", "piecewise"]))
    end = draw(st.integers(min_value=1, max_value=T))
    if kind == "constant":
        return S.constant(c), T
    if kind == "turn_off":
        return S.turn_off(c, at=draw(st.floats(min_value=0, max_value=T)), horizon=T), T
    if kind == "linear":
        return S.linear_decay(c, until=end, horizon=T), T
    if kind == "cosine":
        return S.cosine_decay(c, until=end, horizon=T), T
    return S.piecewise([S.constant(c), S.linear_decay(c, until=end)], [draw(st.integers(1, T))]), T


@settings(max_examples=150, deadline=None)
@given(any_schedule())
def test_nonnegative_and_integral_is_the_sum_of_values(sched_T):
    sched, T = sched_T
    vals = sched.table(T + 5)
    assert (vals >= 0).all()
    for t in (0, 1, T // 2, T, T + 5):
        assert sched.integral(t) == pytest.approx(vals[:t].sum(), rel=1e-9, abs=1e-9)
    assert sched(3) == vals[3]


@settings(max_examples=100, deadline=None)
@given(strength, st.integers(0, 300), st.integers(1, 300))
def test_turn_off_is_zero_after_the_switch(c, at, extra):
    sched = S.turn_off(c, at=at)
    assert sched.table(at + extra)[at:].max(initial=0.0) == 0.0
    assert sched.integral(at + extra) == pytest.approx(c * at)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 100.0), st.floats(0.0, 1000.0), st.integers(1, 5000))
def test_equal_budget_constructors_are_exact(value, budget, T):
    if budget / value <= T:
        s = S.turn_off_for_budget(value, budget, horizon=T)
        assert s.integral(T) == pytest.approx(budget, rel=1e-12, abs=1e-12)
        assert s.table(T).sum() == pytest.approx(budget, rel=1e-9, abs=1e-9)
    for shape in (S.linear_decay(1.0, until=0.5, horizon=T), S.cosine_decay(1.0, until=max(1, T // 3))):
        scaled = S.with_budget(shape, budget, horizon=T)
        assert scaled.integral(T) == pytest.approx(budget, rel=1e-12, abs=1e-12)
        assert scaled.table(T).sum() == pytest.approx(budget, rel=1e-9, abs=1e-9)


def test_fraction_of_horizon_and_fractional_steps():
    assert S.turn_off(1.0, at=0.25, horizon=100).params["at"] == 25
    assert S.turn_off(1.0, at=10).params["at"] == 10
    half = S.turn_off(20.0, at=0.5 / 1000, horizon=1000)  # half a step: λ·½ on step 0
    assert half.table(3).tolist() == [10.0, 0.0, 0.0]
    assert S.linear_decay(2.0, until=4).table(6).tolist() == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert S.cosine_decay(1.0, until=2).table(3).tolist() == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: S.constant(-0.1), "value"),
        (lambda: S.constant(float("nan")), "value"),
        (lambda: S.constant(float("inf")), "value"),
        (lambda: S.turn_off(0.1, at=200, horizon=100), "at"),
        (lambda: S.turn_off(0.1, at=0.5)(0), "at=0.5"),  # a fraction waits for its horizon
        (lambda: S.turn_off(0.1, at=-3), "at"),
        (lambda: S.linear_decay(0.1, until=0), "until"),
        (lambda: S.cosine_decay(-1.0, until=10), "init"),
        (lambda: S.with_budget(S.constant(1.0), float("nan"), 10), "budget"),
        (lambda: S.turn_off_for_budget(1.0, 50.0, horizon=10), "budget"),
        (lambda: S.piecewise([S.constant(1.0)], [3]), "boundaries"),
        (lambda: S.from_spec("bogus", 1.0), "schedule"),
    ],
)
def test_bad_arguments_name_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_switch_off_step_reads_a_step_or_a_fraction_and_names_the_key():
    from mirrorflow.schedules import switch_off_step

    assert switch_off_step("off_at", 0.4, 60) == 24
    assert switch_off_step("off_at", 24, 60) == switch_off_step("off_at", 24.0, 60) == 24
    assert switch_off_step("off_at", np.int64(59), 60) == 59
    assert switch_off_step("off_at", 1.0, 60, end_ok=True) == 60  # a decay reaching 0 at the end of the run
    cases = [
        (60, "off_at must be a step in 1..59 or a fraction of the run in (0, 1) (the run has 60 steps), got 60"),
        (0, "got 0"),
        (2.5, "got 2.5"),
        (float("nan"), "got nan"),
        ("soon", "got 'soon'"),
        (True, "got True"),
        (1.0, "off_at=1.0 is step 60 of 60 steps: it must fall in 1..59"),
        (0.001, "off_at=0.001 is step 0 of 60 steps"),
    ]
    for at, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            switch_off_step("off_at", at, 60)
    with pytest.raises(ValueError, match=r"finetune_off_at must be a step in 1\.\.11 .*\(the run has 12 epochs\)"):
        switch_off_step("finetune_off_at", 12, 12, unit="epochs")


def test_the_automatic_switch_off_is_a_triggered_schedule_and_a_fixed_one_is_not():
    from mirrorflow.schedules import TriggeredSchedule
    from mirrorflow.training import AutoTurnOff

    assert isinstance(AutoTurnOff(0.1), TriggeredSchedule)
    assert not isinstance(S.turn_off(0.1, at=5), TriggeredSchedule)
    assert S.turn_off(at=0.5).value_open and not S.turn_off(0.1, at=0.5).value_open
    assert S.linear_decay(None, until=10).value_open
