"""LegendreTracker on real torch optimizers: the identity ∇R_{a_t}(x_t) = μ_t (Theorem 3.6) holds to O(η)
for gradient descent and visibly fails for momentum/Adam; a_t agrees with WeightDecayScheduler; the
Theorem 3.11 prediction matches the trained end point; misuse raises one clear error."""

import math

import numpy as np
import pytest
import torch

from conftest import commuting_sensing
from conftest import sparse_regression as regression
from mirrorflow import geometry as G
from mirrorflow.schedules import turn_off
from mirrorflow.training.scheduler import WeightDecayScheduler
from mirrorflow.training.tracker import LegendreTracker, identity_residual

pytestmark = pytest.mark.usefixtures("one_thread")
D = torch.float64


def train(rep, w0, Z, y, make_opt, lr, horizon, a_total=-0.25, every=None):
    """Train the factors with ``make_opt(params, lr)`` for time ``horizon`` (steps = horizon/lr), weight
    decay switched off half-way with a_∞ = a_total; returns (tracker, scheduler)."""
    steps = int(round(horizon / lr))
    parts = {k: torch.nn.Parameter(v.clone()) for k, v in rep.unpack(w0).items()}
    opt = make_opt(list(parts.values()), lr)
    lam = -a_total / (lr * (steps // 2))
    opt.param_groups[0]["weight_decay"] = lam
    sched = WeightDecayScheduler(opt, turn_off(lam, steps // 2))
    tracker = LegendreTracker(rep, parts, opt, every=every or steps, data=(Z, y))
    for _ in range(steps):
        opt.zero_grad()
        x = tracker.watch(rep.g(torch.cat([p.reshape(-1) for p in parts.values()])))
        r = Z @ x - y
        (0.5 * (r * r).mean()).backward()
        opt.step()
        sched.step()
    return tracker, sched


def sgd(p, lr):
    return torch.optim.SGD(p, lr=lr)


def test_gradient_descent_identity_is_first_order_in_eta():
    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    tr1, sch = train(rep, w0, Z, y, sgd, 0.02, 8.0)
    tr2, _ = train(rep, w0, Z, y, sgd, 0.01, 8.0)
    assert tr1.a == pytest.approx(sch.a, abs=1e-12) and tr1.a == pytest.approx(-0.25, abs=1e-12)
    assert tr1.steps == 400 and len(tr1.history) == 1 and tr1.history[0]["step"] == 400
    r1, r2 = tr1.history[-1]["residual"], tr2.history[-1]["residual"]
    assert tr1.history[-1]["mu_norm"] > 0.05
    assert r2 < 1e-3 and 0.35 < r2 / r1 < 0.65, (r1, r2)


def test_tracker_mu_equals_engine_mu_for_gradient_descent():
    """The tracker's μ from torch SGD equals the batched engine's μ (same discrete step, exact decay aside)."""
    from mirrorflow.engine.batched import run_batched, schedule_table
    from mirrorflow.engine.reparam_regression import ReparamRegression

    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    tr, _ = train(rep, w0, Z, y, sgd, 0.01, 2.0, a_total=0.0)  # no weight decay: both are plain GD
    prob = ReparamRegression(rep, Z, y, w0)
    trace = run_batched(prob, schedule_table([turn_off(0.0, 100)], 200), lr=0.01, log_every=200)
    assert torch.allclose(tr.mu, trace.final_state["mu"][0], atol=1e-12)
    assert torch.allclose(tr.x(), prob.x_of(trace.final_state)[0], atol=1e-12)


def test_matrix_sensing_identity_and_predicted_limit():
    """W = UUᵀ with commuting sensing matrices (Eq. 17): small residual, end point = Theorem 3.11's x̂."""
    n, m = 3, 2
    Q, A = commuting_sensing(n, m, seed=1)
    y = torch.einsum("mij,ij->m", A, Q @ torch.diag(torch.tensor([0.5, 0.3, 0.4], dtype=D)) @ Q.T)
    rep = G.get("uut", n)
    tr, _ = train(rep, rep.init(scale=0.6), A.reshape(m, -1), y, sgd, 0.02, 30.0, a_total=-0.5, every=500)
    last = tr.history[-1]
    assert last["loss"] < 1e-10
    assert last["residual"] < 1e-2
    assert last["x_pred_dist"] < 2e-2
    assert [h["step"] for h in tr.history] == [500, 1000, 1500]


@pytest.mark.parametrize(
    "name,make",
    [
        ("momentum", lambda p, lr: torch.optim.SGD(p, lr=lr * 0.1, momentum=0.9)),
        ("adam", lambda p, lr: torch.optim.Adam(p, lr=lr * 0.5)),
    ],
)
def test_momentum_and_adam_leave_the_geometry(name, make):
    """The same μ_t = −Σ η_s ∇f(x_s) with the optimizer's nominal η: the identity fails by O(1), not O(η)."""
    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    tr, _ = train(rep, w0, Z, y, make, 0.02, 8.0)
    gd, _ = train(rep, w0, Z, y, sgd, 0.02, 8.0)
    assert tr.history[-1]["residual"] > 0.5
    assert tr.history[-1]["residual"] > 100 * gd.history[-1]["residual"]


def test_momentum_follows_the_flow_on_a_rescaled_clock():
    """Heavy ball with lr η(1−β) takes effective steps η: rescaling μ and a by 1/(1−β) restores the identity."""
    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    tr, _ = train(rep, w0, Z, y, lambda p, lr: torch.optim.SGD(p, lr=lr * 0.1, momentum=0.9), 0.02, 8.0)
    rho = identity_residual(rep, tr.init, 10 * tr.a, tr.x(), 10 * tr.mu)
    assert rho < 0.05 < tr.history[-1]["residual"]


def test_observe_accumulates_and_missing_gradient_is_an_error():
    rep = G.get("mw", 2)
    m = torch.nn.Parameter(torch.ones(2, dtype=D))
    w = torch.nn.Parameter(torch.zeros(2, dtype=D))
    opt = torch.optim.SGD([m, w], lr=0.1)
    tr = LegendreTracker(rep, [m, w], opt, every=1)
    tr.observe(torch.tensor([1.0, 2.0]))
    tr.observe(torch.tensor([1.0, 0.0]))  # gradient accumulation: two micro-batches
    opt.step()
    assert tr.mu.tolist() == pytest.approx([-0.2, -0.2])
    assert tr.steps == 1 and len(tr.history) == 1
    with pytest.raises(RuntimeError, match="tracker.watch"):
        opt.step()
    tr.close()
    opt.step()  # hooks removed: no error, nothing counted
    assert tr.steps == 1


def test_bad_arguments_name_the_problem():
    rep = G.get("mw", 2)
    m = torch.nn.Parameter(torch.ones(2, dtype=D))
    w = torch.nn.Parameter(torch.zeros(2, dtype=D))
    with pytest.raises(ValueError, match="parts"):
        LegendreTracker(rep, {"m": m})
    with pytest.raises(ValueError, match="every"):
        LegendreTracker(rep, [m, w], every=0)
    with pytest.raises(ValueError, match="param groups"):
        LegendreTracker(rep, [m, w], torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
    with pytest.raises(ValueError, match="columns"):
        LegendreTracker(rep, [m, w], data=(torch.ones(1, 3), torch.ones(1)))
    tr = LegendreTracker(rep, [m, w])
    with pytest.raises(ValueError, match="n = 2"):
        tr.observe(torch.ones(3))


def test_identity_residuals_on_a_batched_engine_state():
    """The batched form on the engine's final state (what a `track=true` run reports): small for every
    configuration, and equal to the single-row residual."""
    from mirrorflow.engine.batched import run_batched, schedule_table
    from mirrorflow.engine.reparam_regression import ReparamRegression
    from mirrorflow.training.tracker import identity_residuals

    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    prob = ReparamRegression(rep, Z, y, w0, n_configs=2)
    trace = run_batched(prob, schedule_table([turn_off(0.5, 200), turn_off(1.0, 100)], 400), lr=0.01, log_every=400)
    a, x, mu = trace.final("a"), prob.x_of(trace.final_state), trace.final_state["mu"]
    rhos = identity_residuals(rep, w0, a, x, mu)
    assert a.tolist() == pytest.approx([-1.0, -1.0])
    assert max(rhos) < 2e-2
    assert rhos[1] == pytest.approx(identity_residual(rep, w0, a[1], x[1], mu[1]), rel=1e-12)


def test_tracker_inside_a_hugging_face_trainer(tmp_path):
    """WeightDecayCallback(tracker=...) attaches the tracker to the Trainer's optimizer and logs its residual;
    the tracker's a_t equals the callback's and plain SGD keeps the identity to O(η)."""
    import transformers

    from mirrorflow.training.hf import WeightDecayCallback

    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.unpack(rep.init(scale=1.0))

    class MW(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.Parameter(w0["m"].clone().float())
            self.w = torch.nn.Parameter(w0["w"].clone().float())

        def forward(self, z, target):
            x = tracker.watch(self.m * self.w)
            return {"loss": 0.5 * ((z @ x - target) ** 2).mean()}

    model = MW()
    tracker = LegendreTracker(rep, {"m": model.m, "w": model.w}, every=10, data=(Z, y))
    data = [{"z": Z.float(), "target": y.float()}] * 40  # one full batch per step (collated below)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=40,
        per_device_train_batch_size=1,
        learning_rate=0.02,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.02, weight_decay=0.0)
    cb = WeightDecayCallback(turn_off(0.5, at=20), tracker=tracker, check_lora=False)
    tr = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=data,
        callbacks=[cb],
        optimizers=(opt, None),
        data_collator=lambda b: {"z": b[0]["z"], "target": b[0]["target"]},
    )
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [10, 20, 30, 40]
    assert logs[-1]["legendre/a"] == pytest.approx(-0.02 * 0.5 * 20, abs=1e-9)
    assert logs[-1]["legendre/a"] == pytest.approx(logs[-1]["wd/a"], abs=1e-9)
    assert 0 < logs[-1]["legendre/residual"] < 0.05
    assert [h["legendre/step"] for h in logs] == [10, 20, 30, 40]  # the step each record was measured at
    assert logs[-1]["legendre/mu_norm"] == pytest.approx(tracker.history[-1]["mu_norm"], rel=1e-12)
    assert tracker.steps == 40 and not tracker._hooks  # closed at the end of training


def test_engine_tracks_the_identity_residual_along_training():
    """ReparamRegression(track=True): a_t in the state equals the engine's a, and the logged residual is the
    tracker's formula at every log step (what `mirrorflow run diagonal track=true` will report)."""
    from mirrorflow.engine.batched import run_batched, schedule_table
    from mirrorflow.engine.reparam_regression import ReparamRegression

    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.init(scale=1.0)
    prob = ReparamRegression(rep, Z, y, w0, n_configs=2, track=True)
    trace = run_batched(prob, schedule_table([turn_off(0.5, 200), turn_off(1.0, 100)], 400), lr=0.01, log_every=100)
    rho = trace.metrics["identity_residual"]
    assert rho.shape == (2, 5) and math.isnan(rho[0, 0])  # μ_0 = 0
    assert trace.final_state["a"].tolist() == pytest.approx(trace.final("a").tolist(), abs=1e-12)
    assert (rho[:, 1:] < 2e-2).all() and (rho[:, 1:] > 0).all()
    x, mu = prob.x_of(trace.final_state)[1], trace.final_state["mu"][1]
    assert rho[1, -1] == pytest.approx(identity_residual(rep, w0, trace.final("a")[1], x, mu), rel=1e-12)


def test_tracker_inside_a_lightning_trainer(tmp_path):
    """WeightDecayMonitor(tracker=...) attaches the tracker to Lightning's optimizer and logs its residual the
    Lightning way; the tracker's a_t equals the monitor's and SGD keeps the identity to O(η)."""
    import warnings

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from mirrorflow.store import read_csv
    from mirrorflow.training.lightning import WeightDecayMonitor

    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.unpack(rep.init(scale=1.0))

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.Parameter(w0["m"].clone().float())
            self.w = torch.nn.Parameter(w0["w"].clone().float())

        def training_step(self, batch, batch_idx):
            z, target = batch
            x = tracker.watch(self.m * self.w)
            return 0.5 * ((z @ x - target) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.02, weight_decay=0.0)

    module = Module()
    tracker = LegendreTracker(rep, {"m": module.m, "w": module.w}, every=10, data=(Z, y))
    cb = WeightDecayMonitor(turn_off(0.5, at=20), tracker=tracker, check_lora=False)
    trainer = L.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=CSVLogger(str(tmp_path)),
        callbacks=[cb],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = [(Z.float(), y.float())] * 40
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints about dataloader workers on CPU
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    rows = [r for r in read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") if r.get("legendre/a")]
    last = rows[-1]
    assert float(last["legendre/a"]) == pytest.approx(-0.02 * 0.5 * 20, abs=1e-7)
    assert float(last["legendre/a"]) == pytest.approx(float(last["wd/a"]), abs=1e-7)
    assert 0 < float(last["legendre/residual"]) < 0.05
    assert float(last["legendre/step"]) == 40 and float(rows[0]["legendre/step"]) == 10
    assert tracker.steps == 40 and not tracker._hooks  # closed at the end of training


def _tracker(**kw):
    Z, y = regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.unpack(rep.init(scale=1.0))
    params = {"m": torch.nn.Parameter(w0["m"].clone()), "w": torch.nn.Parameter(w0["w"].clone())}
    return LegendreTracker(rep, params, **kw), params


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"every": "abc"}, ValueError, "every must be a number, got 'abc'"),
        ({"every": 2.7}, ValueError, "every must be a whole number, got 2.7"),
        ({"every": 0}, ValueError, "every must be a positive integer"),
        ({"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer, got str"),
        ({"lam": 0.5}, TypeError, "lam must be a callable"),
    ],
)
def test_tracker_misuse_names_the_argument(kw, err, match):
    with pytest.raises(err, match=match):
        _tracker(**kw)


def test_tracker_load_state_dict_checks_before_changing_anything():
    tracker, params = _tracker(every=np.int64(3))
    assert tracker.every == 3
    good = tracker.state_dict()
    for bad, err, match in [
        ({}, ValueError, "missing mu, a, steps, init, history"),
        ([1, 2], TypeError, "state_dict must be a mapping"),
        ({**good, "a": 0.5}, ValueError, r"state_dict\['a'\] must be a finite number ≤ 0"),
        ({**good, "mu": torch.zeros(2)}, ValueError, r"state_dict\['mu'\] must be a tensor of 6"),
        ({**good, "steps": 2.5}, ValueError, "whole number"),
    ]:
        with pytest.raises(err, match=match):
            tracker.load_state_dict(bad)
    assert tracker.a == 0.0 and tracker.steps == 0
    tracker.load_state_dict({**good, "a": -0.25, "steps": 7})
    assert tracker.a == -0.25 and tracker.steps == 7
