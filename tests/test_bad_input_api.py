"""Python API misuse: one ValueError/TypeError naming the argument; NumPy and torch scalars are numbers.

Each kind of value has one home in mirrorflow.schedules: ``as_number`` (a number of any of Python, NumPy or
torch) and ``as_count`` (a whole number: a fraction is refused, never truncated), used by the schedule
constructors, WeightDecayScheduler, AutoTurnOff, SpectralMonitor, LegendreTracker and the callbacks."""

import numpy as np
import pytest
import torch

from mirrorflow import schedules as S
from mirrorflow.training import AutoTurnOff, SpectralMonitor, WeightDecayScheduler
from mirrorflow.training.factors import FactorPair

# the same schedule built from Python, NumPy and torch scalars: every constructor, every numeric argument
BUILDERS = {
    "constant": lambda f, i: S.constant(f(0.1)),
    "turn_off fraction": lambda f, i: S.turn_off(f(0.1), at=f(0.5), horizon=i(100)),
    "turn_off step": lambda f, i: S.turn_off(f(0.1), at=i(50)),
    "linear_decay": lambda f, i: S.linear_decay(f(0.2), until=f(0.8), horizon=i(100)),
    "cosine_decay": lambda f, i: S.cosine_decay(f(0.2), until=i(40)),
    "piecewise": lambda f, i: S.piecewise([S.constant(f(1.0)), S.constant(f(0.5))], [i(30)]),
    "with_budget": lambda f, i: S.with_budget(S.cosine_decay(1.0, until=60), f(4.0), horizon=i(100)),
    "turn_off_for_budget": lambda f, i: S.turn_off_for_budget(f(0.2), f(5.0), horizon=i(100)),
    "from_spec": lambda f, i: S.from_spec("linear", f(0.3), f(0.25), i(100)),
    "resolve": lambda f, i: S.turn_off(at=f(0.5)).resolve(horizon=i(100), value=f(0.1)),
}
SCALARS = {
    "numpy": (np.float32, np.int64),
    "numpy64": (np.float64, np.int32),
    "torch": (lambda v: torch.tensor(v, dtype=torch.float32), lambda v: torch.tensor(v)),
}


@pytest.mark.parametrize("kind", SCALARS)
@pytest.mark.parametrize("name", BUILDERS)
def test_numpy_and_torch_scalars_behave_like_python_numbers(name, kind):
    ref = BUILDERS[name](float, int)
    f, i = SCALARS[kind]
    got = BUILDERS[name](f, i)
    # equal up to float32's rounding of the value itself (np.float32(0.8) = 0.800000012)
    assert got.table(120) == pytest.approx(ref.table(120), rel=1e-6, abs=1e-7)
    assert got.integral(100) == pytest.approx(ref.integral(100), rel=1e-6)


def test_the_issue_example():
    assert (
        S.turn_off(0.1, at=np.float32(0.5), horizon=100).integral(100)
        == S.turn_off(0.1, at=0.5, horizon=100).integral(100)
        == 5.0
    )


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: S.turn_off(0.1, at=0.5, horizon=2.7), ValueError, "horizon must be a whole number, got 2.7"),
        (lambda: S.with_budget(S.constant(1.0), 1.0, horizon=2.7), ValueError, "horizon must be a whole number"),
        (
            lambda: S.piecewise([S.constant(1.0), S.constant(0.0)], [2.5]),
            ValueError,
            "boundaries must be a whole number",
        ),
        (lambda: S.turn_off(0.1, at="half"), ValueError, "at must be a number, got 'half'"),
        (lambda: S.turn_off(0.1, at=True), ValueError, "at must be a number, got True"),
        (lambda: S.constant(np.array([0.1, 0.2])), ValueError, "value must be a number, got an array of shape"),
        (lambda: S.constant(torch.tensor([0.1])), ValueError, "value must be a number, got an array of shape"),
        (lambda: S.linear_decay(0.5, 0.0, horizon=10), ValueError, "until=0.0: .*not λ's final level"),
        (lambda: S.cosine_decay(0.5, until=None), ValueError, "cosine_decay needs until="),
    ],
)
def test_schedule_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.1)


def _pair():
    L, R = torch.eye(3)[:, :2], torch.eye(3)[:2]
    return [FactorPair("w", lambda: L, lambda: R)]


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: WeightDecayScheduler(_opt(), S.constant(0.1), groups=[]), ValueError, "groups: an empty list"),
        (
            lambda: WeightDecayScheduler(_opt(), S.constant(0.1), horizon=2.7),
            ValueError,
            "horizon must be a whole number",
        ),
        (
            lambda: WeightDecayScheduler(_opt(), S.constant(0.1), last_epoch=-2),
            ValueError,
            "last_epoch must be an integer ≥ -1",
        ),
        (lambda: WeightDecayScheduler("adam", S.constant(0.1)), TypeError, "optimizer must be a torch.optim.Optimizer"),
        (lambda: SpectralMonitor(pairs=_pair(), every=2.7), ValueError, "every must be a whole number, got 2.7"),
        (lambda: SpectralMonitor(pairs=_pair(), every="abc"), ValueError, "every must be a number, got 'abc'"),
        (lambda: AutoTurnOff(0.1, window=2.5), ValueError, "window must be a whole number"),
        (lambda: AutoTurnOff(0.1, max_step=-1), ValueError, "max_step must be a non-negative integer"),
        (lambda: AutoTurnOff(0.1, signal=None), TypeError, "signal must be a metrics key"),
        (
            lambda: AutoTurnOff(0.1, signal="loss").observe(0, {"loss": "abc"}),
            ValueError,
            r"metrics\['loss'\] must be a number, got 'abc'",
        ),
    ],
)
def test_training_tool_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_whole_numbers_of_any_kind_are_accepted():
    assert SpectralMonitor(pairs=_pair(), every=np.int64(4)).every == 4
    assert SpectralMonitor(pairs=_pair(), every=4.0).every == 4
    assert WeightDecayScheduler(_opt(), S.turn_off(0.1, at=0.5), horizon=torch.tensor(10)).get_wd() == [0.1]
    auto = AutoTurnOff(np.float32(0.25), signal="loss", mode="threshold", threshold=np.float64(1.0))
    auto.observe(np.int64(3), {"loss": torch.tensor(0.5)})
    assert auto.triggered_at == 3 and auto(3) == 0.25 and auto(4) == 0.0


def test_decay_old_keyword_end_is_until_with_a_warning_and_names_both_readings():
    from mirrorflow.schedules import cosine_decay, linear_decay

    with pytest.warns(FutureWarning, match="now until=: the step"):
        assert linear_decay(1.0, end=4).table(5).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="it is not λ's final level"):
        linear_decay(0.5, end=0.0, horizon=10)  # end read as torch's end_factor: both readings named
    with pytest.raises(ValueError, match="not both"):
        cosine_decay(1.0, until=4, end=4)
