"""WeightDecayScheduler: the lr_scheduler contract, a_t bookkeeping, param-group selection."""

import copy
import math

import pytest
import torch

from mirrorflow.schedules import constant, cosine_decay, linear_decay, turn_off
from mirrorflow.training import WeightDecayScheduler, decay_param_groups


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))


def _train(model, opt, wd_sched, steps, lr_sched=None, start=0):
    g = torch.Generator().manual_seed(123)
    X = torch.randn(32, 4, generator=g)
    y = torch.randn(32, 1, generator=g)
    for _ in range(start, steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
        wd_sched.step()


def test_sets_weight_decay_each_step_and_accumulates_a_for_sgd():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = WeightDecayScheduler(opt, linear_decay(1.0, until=4))
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["weight_decay"])
        w.grad = torch.zeros(3)
        opt.step()
        sched.step()
    assert seen == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert sched.a == pytest.approx(-0.1 * 2.5)
    # pure decay on SGD: w_T = Π(1 - η λ_s) w_0
    assert w.detach()[0].item() == pytest.approx((1 - 0.1) * (1 - 0.075) * (1 - 0.05) * (1 - 0.025))
    assert sched.log_shrink == pytest.approx(sched.a)  # coupled: reported as −Σηλ


def test_adamw_decoupled_a_uses_the_learning_rate_of_each_step():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([w], lr=0.5, weight_decay=0.2)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched = WeightDecayScheduler(opt, constant(0.2))
    for _ in range(3):
        w.grad = torch.zeros(2)
        opt.step()
        lr_sched.step()
        sched.step()
    lrs = [0.5, 0.25, 0.125]
    assert sched.a == pytest.approx(-sum(0.2 * lr for lr in lrs))
    exact = sum(math.log(1 - 0.2 * lr) for lr in lrs)
    assert sched.log_shrink == pytest.approx(exact)
    # AdamW with zero gradient only applies decay: w = exp(log_shrink)
    assert w.detach()[0].item() == pytest.approx(math.exp(exact), rel=1e-6)


def test_order_with_lr_scheduler_does_not_change_a():
    results = []
    for wd_first in (True, False):
        m = _model()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
        lr_s = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
        wd_s = WeightDecayScheduler(opt, turn_off(0.1, at=5))
        for _ in range(8):
            opt.zero_grad()
            m(torch.ones(2, 4)).sum().backward()
            opt.step()
            if wd_first:
                wd_s.step()
                lr_s.step()
            else:
                lr_s.step()
                wd_s.step()
        results.append(wd_s.a)
    expected = -sum(0.1 * 0.1 * 0.9**s for s in range(5))
    assert results[0] == pytest.approx(expected) and results[1] == pytest.approx(expected)


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.AdamW])
def test_state_dict_round_trip_mid_training_matches_uninterrupted(opt_cls):
    def sched_fn():
        return cosine_decay(0.3, until=12)

    ref = _model()
    opt = opt_cls(ref.parameters(), lr=0.05, weight_decay=0.3)
    s_ref = WeightDecayScheduler(opt, sched_fn())
    _train(ref, opt, s_ref, 20)

    m = _model()
    opt1 = opt_cls(m.parameters(), lr=0.05, weight_decay=0.3)
    s1 = WeightDecayScheduler(opt1, sched_fn())
    _train(m, opt1, s1, 7)
    ckpt = {"model": copy.deepcopy(m.state_dict()), "opt": copy.deepcopy(opt1.state_dict()), "wd": s1.state_dict()}

    m2 = _model(seed=99)
    m2.load_state_dict(ckpt["model"])
    opt2 = opt_cls(m2.parameters(), lr=0.05, weight_decay=0.3)
    opt2.load_state_dict(ckpt["opt"])
    s2 = WeightDecayScheduler(opt2, sched_fn())
    s2.load_state_dict(ckpt["wd"])
    assert s2.get_last_wd() == s1.get_last_wd() and s2.last_epoch == 7
    _train(m2, opt2, s2, 20, start=7)
    assert s2.a == pytest.approx(s_ref.a, rel=1e-12)
    assert s2.last_epoch == s_ref.last_epoch == 20
    for p, q in zip(ref.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_selects_groups_by_name_pattern():
    m = _model()
    groups = decay_param_groups(m, weight_decay=0.1, no_decay=("*bias", "1.*"))
    names = {g["name"]: len(g["params"]) for g in groups}
    assert names == {"decay": 2, "no_decay": 4}  # two Linear weights; biases + LayerNorm excluded
    opt = torch.optim.AdamW(groups, lr=1e-2)
    sched = WeightDecayScheduler(opt, turn_off(0.1, at=2), groups=["decay"])
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.0
    assert sched.group_indices == [0]
    assert sched.a == pytest.approx(-2 * 0.1 * 1e-2)


def test_scale_by_initial_and_per_group_schedules():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [a], "weight_decay": 0.5}, {"params": [b], "weight_decay": 2.0}], lr=0.1)
    s = WeightDecayScheduler(opt, linear_decay(1.0, until=2), scale_by_initial=True)
    assert s.get_last_wd() == [0.5, 2.0]
    s.step()
    assert s.get_last_wd() == [0.25, 1.0]
    s2 = WeightDecayScheduler(opt, [constant(0.1), constant(0.2)], groups=[0, 1])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.2]
    assert s2.a_per_group == [0.0, 0.0]


def test_bad_arguments():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="groups"):
        WeightDecayScheduler(opt, constant(0.1), groups=["nope"])
    with pytest.raises(ValueError, match="schedule"):
        WeightDecayScheduler(opt, [constant(0.1), constant(0.2)])
    with pytest.raises(ValueError, match="invalid weight decay"):
        WeightDecayScheduler(opt, lambda t: -1.0)
    with pytest.raises(TypeError, match="Optimizer"):
        WeightDecayScheduler(object(), constant(0.1))


# -- composition with torch's own schedulers (it is an LRScheduler that drives weight_decay) -------------------
def _steps(opt, scheds, n):
    """n optimizer steps of pure decay (zero gradients); returns (λ, lr) as used at each step."""
    used = []
    for _ in range(n):
        used.append((opt.param_groups[0]["weight_decay"], opt.param_groups[0]["lr"]))
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        opt.step()
        for s in scheds:
            s.step()
    return used


def test_is_an_lr_scheduler_that_leaves_lr_alone():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.5)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))  # chained beside a LambdaLR
    wd = WeightDecayScheduler(opt, turn_off(0.5, at=2))
    assert isinstance(wd, torch.optim.lr_scheduler.LRScheduler)
    used = _steps(opt, [lr, wd], 4)
    assert used == [(0.5, 0.1), (0.5, 0.05), (0.0, pytest.approx(0.1 / 3)), (0.0, 0.025)]
    assert wd.get_last_lr() == lr.get_last_lr() == [pytest.approx(0.02)] and wd.get_last_wd() == [0.0]
    assert wd.a == pytest.approx(-(0.1 * 0.5 + 0.05 * 0.5))


def test_sequential_lr_switches_between_weight_decay_schedules_at_the_milestone():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.5)
    first, second = WeightDecayScheduler(opt, constant(0.5)), WeightDecayScheduler(opt, linear_decay(0.2, until=2))
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [first, second], milestones=[3])
    used = _steps(opt, [seq], 6)
    # 0.5 on steps 0-2, then the second schedule from its own step 0: 0.2, 0.1, 0
    assert [u[0] for u in used] == [0.5, 0.5, 0.5, 0.2, pytest.approx(0.1), 0.0]
    assert all(u[1] == 0.1 for u in used) and seq.get_last_lr() == [0.1]
    assert first.a == second.a == pytest.approx(-0.1 * (1.5 + 0.3))  # both read the λ actually used
    assert w.detach()[0].item() == pytest.approx(0.95**3 * 0.98 * 0.99)


def test_chained_scheduler_with_a_warmup_lr_and_weight_decay():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([w], lr=1.0, weight_decay=0.1)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    chain = torch.optim.lr_scheduler.ChainedScheduler([warm, WeightDecayScheduler(opt, turn_off(at=2))], optimizer=opt)
    used = _steps(opt, [chain], 4)
    assert used == [(0.1, 0.25), (0.1, 0.5), (0.0, 0.75), (0.0, 1.0)]
    assert chain.get_last_lr() == [1.0]


def test_state_dict_round_trips_through_torch_save_weights_only(tmp_path):
    """Save mid-run (SequentialLR of two weight-decay schedulers and a ChainedScheduler), restore into new
    objects with torch.load(weights_only=True), continue: the same λ, lr and a_t as an uninterrupted run."""

    def build(opt):
        seq = torch.optim.lr_scheduler.SequentialLR(
            opt, [WeightDecayScheduler(opt, constant(0.3)), WeightDecayScheduler(opt, turn_off(0.6, at=2))], [2]
        )
        lr = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        return seq, torch.optim.lr_scheduler.ChainedScheduler([lr, seq], optimizer=opt)

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.3)
    seq, chain = build(opt)
    full = _steps(opt, [chain], 6)

    w2 = torch.nn.Parameter(torch.ones(2))
    opt2 = torch.optim.SGD([w2], lr=0.1, weight_decay=0.3)
    seq2, chain2 = build(opt2)
    head = _steps(opt2, [chain2], 3)
    torch.save({"opt": opt2.state_dict(), "sched": chain2.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)

    w3 = torch.nn.Parameter(w2.detach().clone())
    opt3 = torch.optim.SGD([w3], lr=0.1, weight_decay=0.3)
    seq3, chain3 = build(opt3)
    opt3.load_state_dict(ckpt["opt"])
    chain3.load_state_dict(ckpt["sched"])
    tail = _steps(opt3, [chain3], 3)
    assert head + tail == full
    assert [u[0] for u in full] == [0.3, 0.3, 0.6, 0.6, 0.0, 0.0]
    assert (
        seq3._schedulers[1].a
        == pytest.approx(seq._schedulers[1].a)
        == pytest.approx(-sum(lam * lr for lam, lr in full))
    )
    assert w3.detach().tolist() == pytest.approx(w.detach().tolist())


def test_groups_empty_or_a_single_name():
    opt = torch.optim.SGD(decay_param_groups(_model(), weight_decay=0.1), lr=0.1)
    with pytest.raises(ValueError, match="groups: an empty list"):
        WeightDecayScheduler(opt, constant(0.1), groups=[])
    assert WeightDecayScheduler(opt, constant(0.1), groups="decay").group_indices == [0]
    with pytest.raises(ValueError, match="horizon must be a whole number"):
        WeightDecayScheduler(opt, constant(0.1), horizon=2.7)
