"""λ, a_t and ρ in the loggers users have: TensorBoard, W&B (offline), MLflow (file store), Lightning.

Each test runs the real library and reads back what it stored."""

import glob
import json
import math
import pathlib
import struct
import warnings

import pytest
import torch
from torch import nn

from mirrorflow.schedules import turn_off
from mirrorflow.training import SpectralMonitor, WeightDecayScheduler
from mirrorflow.training.loggers import MLflowSink, WandbSink, make_sink

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS, LR, LAM = 6, 0.05, 0.1


class TinyAttention(nn.Module):
    """One attention layer (q_proj/k_proj, 2 heads) and a linear read-out."""

    def __init__(self, d=8):
        super().__init__()
        self.num_heads = 2
        self.q_proj, self.k_proj, self.out = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 1)

    def forward(self, x):  # x: (batch, seq, d)
        att = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(1, 2) / 2.0, dim=-1)
        return self.out(att @ x).mean(dim=(1, 2))


def _batches(n=STEPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 5, 8, generator=g), torch.randn(4, generator=g)) for _ in range(n)]


def _plain_loop(loggers):
    """A plain AdamW loop: turn_off(at=0.5) with λ from the optimizer, monitor every 2 steps."""
    torch.manual_seed(0)
    model = TinyAttention()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=LAM)
    wd = WeightDecayScheduler(opt, turn_off(at=0.5), horizon=STEPS)
    mon = SpectralMonitor(model, every=2, scheduler=wd, loggers=loggers)
    for step, (x, y) in enumerate(_batches(), start=1):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        wd.step()
        mon.step(step)
    mon.close()
    return mon


def _expected(step):  # λ of step `step` (1-based: the step just taken) and a after it
    lam = LAM if step <= STEPS // 2 else 0.0
    return lam, -LR * LAM * min(step, STEPS // 2)


def _check(rows):
    """rows: {step: {key: value}} read back from a logger."""
    assert sorted(rows) == [2, 4, 6]
    for step, r in rows.items():
        lam, a = _expected(step)
        assert r["wd/lambda"] == pytest.approx(lam, abs=1e-7)
        assert r["wd/a"] == pytest.approx(a, rel=1e-5)
        assert 1.0 <= r["spectral/rho"] <= math.sqrt(8)


def test_plain_loop_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mon = _plain_loop(["tensorboard:" + str(tmp_path)])
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    rows = {}
    for tag in ("wd/lambda", "wd/a", "spectral/rho"):
        for e in acc.Scalars(tag):
            rows.setdefault(e.step, {})[tag] = e.value
    _check(rows)
    assert rows[6]["spectral/rho"] == pytest.approx(mon.last["spectral/rho"], rel=1e-6)


def _wandb_history(run_dir):
    """History rows of an offline W&B run, read from its ``run-*.wandb`` file (LevelDB log format:
    7-byte file header, 32 KiB blocks, records with a 7-byte header and FULL/FIRST/MIDDLE/LAST chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = pathlib.Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, rows = 7, 32768, b"", {}
    while pos + 7 <= len(data):
        room = block - pos % block
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7]) if room >= 7 else (0, 0, 0)
        if room < 7 or (n == 0 and kind == 0):
            pos += room
            continue
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                rows[items["_step"]] = items
    return rows


def test_plain_loop_wandb_offline(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        project="mirrorflow-test", dir=str(tmp_path), settings=wandb.Settings(x_disable_stats=True, console="off")
    )
    try:
        _plain_loop([WandbSink(run)])
    finally:
        run.finish()
        wandb.teardown()  # stops the W&B service, which closes (flushes) the run file
    _check(_wandb_history(tmp_path))


def test_plain_loop_mlflow_file_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store behind this switch
    mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    with mlflow.start_run() as run:
        _plain_loop(["mlflow"])
    client = mlflow.MlflowClient()
    rows = {}
    for key in ("wd/lambda", "wd/a", "spectral/rho"):
        for m in client.get_metric_history(run.info.run_id, key):
            rows.setdefault(m.step, {})[key] = m.value
    _check(rows)


def _tracker_loop(loggers):
    """A plain SGD loop on x = m⊙w with turn_off(0.5, at=10): the LegendreTracker records every 5 steps and
    sends each record to ``loggers``, the same sinks as SpectralMonitor's."""
    from conftest import sparse_regression
    from mirrorflow import geometry as G
    from mirrorflow.training.tracker import LegendreTracker

    Z, y = sparse_regression()
    rep = G.get("mw", Z.shape[1])
    w0 = rep.unpack(rep.init(scale=1.0))
    m, w = nn.Parameter(w0["m"].clone().float()), nn.Parameter(w0["w"].clone().float())
    opt = torch.optim.SGD([m, w], lr=0.02, weight_decay=0.5)
    wd = WeightDecayScheduler(opt, turn_off(0.5, at=10))
    tracker = LegendreTracker(rep, {"m": m, "w": w}, opt, every=5, data=(Z, y), loggers=loggers)
    for _ in range(20):
        opt.zero_grad()
        x = tracker.watch(m * w)
        (0.5 * ((Z.float() @ x - y.float()) ** 2).mean()).backward()
        opt.step()
        wd.step()
    tracker.close()
    return tracker


def _check_tracker(tracker, rows):
    """rows: {step: {key: value}} read back from a logger: one row per record, equal to the record."""
    assert sorted(rows) == [5, 10, 15, 20] == [r["step"] for r in tracker.history]
    for rec in tracker.history:
        row = rows[rec["step"]]
        assert row["legendre/a"] == pytest.approx(rec["a"], rel=1e-6)
        assert row["legendre/residual"] == pytest.approx(rec["residual"], rel=1e-5)
        assert row["legendre/x_pred_dist"] == pytest.approx(rec["x_pred_dist"], rel=1e-5)
    assert rows[20]["legendre/a"] == pytest.approx(-0.02 * 0.5 * 10, rel=1e-6)
    assert 0 < rows[20]["legendre/residual"] < 0.05


TRACKER_KEYS = ("legendre/a", "legendre/residual", "legendre/x_pred_dist")


def test_tracker_records_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = _tracker_loop(["tensorboard:" + str(tmp_path)])
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    rows = {}
    for tag in TRACKER_KEYS:
        for e in acc.Scalars(tag):
            rows.setdefault(e.step, {})[tag] = e.value
    _check_tracker(tracker, rows)


def test_tracker_records_reach_wandb_offline(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        project="mirrorflow-test", dir=str(tmp_path), settings=wandb.Settings(x_disable_stats=True, console="off")
    )
    try:
        tracker = _tracker_loop([WandbSink(run)])
    finally:
        run.finish()
        wandb.teardown()
    _check_tracker(tracker, _wandb_history(tmp_path))


def test_tracker_records_reach_mlflow_file_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    with mlflow.start_run() as run:
        tracker = _tracker_loop(["mlflow"])
    rows = {}
    for key in TRACKER_KEYS:
        for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, key):
            rows.setdefault(m.step, {})[key] = m.value
    _check_tracker(tracker, rows)


def test_sinks_name_what_is_missing():
    with pytest.raises(ValueError, match="unknown logger 'tensorbord:x'"):
        make_sink("tensorbord:x")
    with pytest.raises(ValueError, match="no active MLflow run"):
        MLflowSink()


def _lightning_module(optimizer):
    """A LightningModule around TinyAttention trained by ``optimizer(params, lr=LR, weight_decay=LAM)``."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = TinyAttention()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return optimizer(self.parameters(), lr=LR, weight_decay=LAM)

    return Module()


def test_lightning_trainer_logs_and_schedules(tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from mirrorflow.store import read_csv
    from mirrorflow.training.lightning import WeightDecayMonitor

    torch.manual_seed(0)
    module = _lightning_module(torch.optim.AdamW)
    cb = WeightDecayMonitor(turn_off(at=0.5), monitor_every=2)  # λ from the optimizer, off at 50 % of max_steps
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=CSVLogger(str(tmp_path)),
        callbacks=[cb],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints about dataloader workers on CPU
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_batches(), batch_size=None))
    rows = [r for r in read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") if r.get("wd/lambda")]
    # Lightning's CSV step column is global_step − 1 (the step just taken, 0-based)
    assert [int(r["step"]) for r in rows] == list(range(STEPS))
    for r in rows:
        lam, a = _expected(int(r["step"]) + 1)
        assert float(r["wd/lambda"]) == pytest.approx(lam, abs=1e-7)
        assert float(r["wd/a"]) == pytest.approx(a, rel=1e-5)
    assert float(rows[-1]["spectral/rho"]) == pytest.approx(cb.monitor.last["spectral/rho"], rel=1e-6)
    assert [h["step"] for h in cb.monitor.history] == [0, 2, 4, 6]
    assert module.trainer.optimizers[0].param_groups[0]["weight_decay"] == 0.0


def test_lightning_takes_the_scheduler_as_its_lr_scheduler(tmp_path):
    """WeightDecayScheduler is an LRScheduler: Lightning steps it from configure_optimizers like any other
    (interval "step"), and it drives λ, not the learning rate."""
    import lightning as L

    from mirrorflow.training import WeightDecayScheduler

    module = _lightning_module(torch.optim.SGD)
    sgd = module.configure_optimizers

    def configure_optimizers():
        opt = sgd()
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": WeightDecayScheduler(opt, turn_off(LAM, at=3)), "interval": "step"},
        }

    module.configure_optimizers = configure_optimizers
    seen = []
    module.on_train_batch_start = lambda batch, i: seen.append(dict(module.optimizers().param_groups[0]))
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_batches(), batch_size=None))
    assert [g["weight_decay"] for g in seen] == [LAM] * 3 + [0.0] * (STEPS - 3)
    assert {g["lr"] for g in seen} == {LR}
    (sched,) = [c.scheduler for c in trainer.lr_scheduler_configs]
    assert sched.a == pytest.approx(-LR * LAM * 3) and sched.last_epoch == STEPS


def test_lightning_switch_beyond_max_steps_warns_naming_both(tmp_path):
    """turn_off(at=50) in a run of max_steps=6 would never switch: the warning names 50 and max_steps=6."""
    import lightning as L

    from mirrorflow.training.lightning import WeightDecayMonitor

    cb = WeightDecayMonitor(turn_off(at=50))
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            _lightning_module(torch.optim.SGD),
            train_dataloaders=torch.utils.data.DataLoader(_batches(), batch_size=None),
        )
    beyond = [str(w.message) for w in caught if "beyond max_steps" in str(w.message)]
    assert len(beyond) == 1 and "at step 50, beyond max_steps=6" in beyond[0]
    assert cb.scheduler.get_last_wd() == [LAM]  # never switched off, as warned


def test_plain_scheduler_switch_beyond_the_horizon_warns():
    opt = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.1)
    with pytest.warns(UserWarning, match="at step 150, beyond horizon=100"):
        WeightDecayScheduler(opt, turn_off(0.1, at=150), horizon=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WeightDecayScheduler(opt, turn_off(0.1, at=100), horizon=100)  # switching at the last step is fine


@pytest.mark.parametrize(
    "missing,module,name,extra",
    [
        ("transformers", "mirrorflow.training.hf", "WeightDecayCallback", "mirrorflow[hf]"),
        ("lightning", "mirrorflow.training.lightning", "WeightDecayMonitor", "mirrorflow[lightning]"),
    ],
)
@pytest.mark.slow
def test_a_missing_extra_names_the_pip_command(missing, module, name, extra):
    """In a fresh interpreter where the framework cannot be imported: one line naming the pip command."""
    import subprocess
    import sys

    code = f"import sys; sys.modules[{missing!r}] = None\nfrom mirrorflow.training import {name}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: ") and f"pip install '{extra}'" in last and name in last
