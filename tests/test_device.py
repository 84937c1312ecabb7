"""Device plumbing of the batched engine (matrix sensing, reparameterized regression) and the packed
symmetric basis of matrix sensing against the full (m, n²) reference step."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from mirrorflow import geometry
from mirrorflow.config import build
from mirrorflow.engine.batched import run_batched, schedule_table
from mirrorflow.engine.reparam_regression import ReparamRegression
from mirrorflow.errors import ConfigError
from mirrorflow.experiments import matrix_sensing as ms
from mirrorflow.runtime import resolve_device
from mirrorflow.schedules import constant, turn_off

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = torch.cuda.is_available()
SMALL = ms.Config(n=8, r=2, steps=200, log_every=20, device="cpu")


# ------------------------------------------------------------------------------------ resolve_device
def test_resolve_device_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device=cuda: CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"^device must be one of auto, cpu, cuda"):
        resolve_device("gpu")


def test_config_device_key_is_checked(monkeypatch):
    assert build(ms.Config, {"device": "cpu"}).device == "cpu"
    with pytest.raises(ConfigError, match="device"):
        build(ms.Config, {"device": "tpu"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda"):
        build(ms.Config, {"device": "cuda"})


@pytest.mark.slow
def test_cli_device_cuda_without_cuda_is_one_line_error(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirrorflow",
            "run",
            "matrix-sensing",
            "n=4",
            "r=1",
            "steps=5",
            "device=cuda",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: device=cuda: CUDA is not available on this machine (use device=cpu or device=auto)"
    ]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- every tensor on the device
def test_matrix_sensing_state_and_trace_follow_the_device():
    cfgs = [replace(SMALL, schedule="constant", wd=0.01), replace(SMALL, schedule="turn_off", wd=0.2, off_at=0.25)]
    tr = ms.run_group(cfgs)
    assert tr.final_state["X"].device == torch.device("cpu") and tr.final_state["hit"].device.type == "cpu"
    auto = ms.run_group([replace(c, device="auto") for c in cfgs])
    assert auto.final_state["X"].device.type == ("cuda" if CUDA else "cpu")
    for k, v in tr.metrics.items():
        assert isinstance(auto.metrics[k], np.ndarray)
        np.testing.assert_allclose(auto.metrics[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_readback_and_mask_every_step_give_the_same_trace_with_a_divergence():
    """The accelerator path (freeze mask every step, no read-back) equals the CPU path, divergence included."""
    data = ms.make_data(8, 2, 48, 0)
    lam = schedule_table([constant(20.0), constant(0.01), turn_off(0.2, 50)], 150)
    traces = [
        run_batched(ms.MatrixSensing(data, [0.1, 0.1, 0.05], decay="gradient"), lam, 0.25, log_every=10, readback=rb)
        for rb in (True, False)
    ]
    assert 0 <= traces[0].diverged_at[0] < 150 and (traces[0].diverged_at[1:] == -1).all()
    assert torch.isfinite(lam).all()  # NaN-masking the records never writes into the caller's table
    assert np.isnan(traces[0].metrics["a"][0, -1]) and traces[0].metrics["a"][2, -1] == pytest.approx(-0.25 * 0.2 * 50)
    np.testing.assert_array_equal(traces[0].diverged_at, traces[1].diverged_at)
    for k in traces[0].metrics:
        np.testing.assert_array_equal(traces[0].metrics[k], traces[1].metrics[k], err_msg=k)


def test_reparam_regression_moves_reparameterization_tensors_to_its_dtype():
    """quadratic keeps float64 A_i; a float32 problem runs on a moved copy and matches float64."""
    n, N = 4, 2
    g = torch.Generator().manual_seed(0)
    Z, y = torch.randn(N, n, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)
    rep = geometry.Quadratic.from_mw(n)
    w0 = torch.full((2 * n,), 0.5, dtype=torch.float64)
    lam = schedule_table([turn_off(0.5, 100)] * 2, 400)
    xs = {}
    for dt in (torch.float64, torch.float32):
        prob = ReparamRegression(rep, Z, y, w0, n_configs=2, dtype=dt, device="cpu")
        tr = run_batched(prob, lam, 0.05, log_every=100)
        assert tr.final_state["w"].dtype == dt and prob.reparam.A.dtype == dt
        xs[dt] = prob.x_of(tr.final_state).double()
    assert rep.A.dtype == torch.float64  # the caller's reparameterization is untouched
    np.testing.assert_allclose(xs[torch.float32], xs[torch.float64], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="device"):
        ReparamRegression(rep, Z, y, w0, device="gpu")


# ------------------------------------------------------------------------------- packed symmetric basis
class FullBasisReference:
    """The step before the packed basis: ∇f(W) = 1/m Σ r_i A_i from the full (m, n²) sensing matrix."""

    def __init__(self, data, init_scales, param, decay):
        self.data, self.param, self.decay = data, param, decay
        self.init = torch.as_tensor(init_scales, dtype=data.A.dtype)

    def start(self):
        n = self.data.n
        root = self.init.sqrt() if self.param == "uu" else self.init
        return torch.eye(n, dtype=self.data.A.dtype) * root.view(-1, 1, 1)

    def W(self, X):
        return X @ X.transpose(1, 2) if self.param == "uu" else X

    def step(self, X, lam, lr):
        C, n, _ = X.shape
        A, y = self.data.A, self.data.y
        r = self.W(X).reshape(C, -1) @ A.T - y
        G = ((r @ A) / len(y)).view(C, n, n)
        eta, lam3 = lr.view(C, 1, 1), lam.view(C, 1, 1)
        if self.param == "uu":
            step = X - eta * 2.0 * (G @ X)
            return torch.exp(-eta * lam3) * step if self.decay == "exact" else step - eta * lam3 * X
        X = X - eta * G
        if bool((lam > 0).any()):
            X = 0.5 * (X + X.transpose(1, 2))
            e, V = torch.linalg.eigh(X)
            e = torch.sign(e) * (e.abs() - (lr * lam).view(C, 1)).clamp_min(0.0)
            X = (V * e.unsqueeze(1)) @ V.transpose(1, 2)
        return X


@pytest.mark.parametrize("param,decay", [("uu", "exact"), ("uu", "gradient"), ("linear", "exact")])
def test_packed_basis_equals_full_basis_reference(param, decay):
    data = ms.make_data(9, 2, 54, 3)
    inits, T = [0.1, 1e-3, 0.05], 300
    lam = schedule_table([constant(0.01), turn_off(0.2, 100), constant(0.0)], T)
    lr = torch.tensor([0.25, 0.25, 0.2], dtype=torch.float64)
    prob, ref = ms.MatrixSensing(data, inits, param, decay), FullBasisReference(data, inits, param, decay)
    state, X = prob.init_state(), ref.start()
    for t in range(T):
        state, X = prob.step(state, lam[:, t], lr, t), ref.step(X, lam[:, t], lr)
    assert float((ref.W(X) - data.W_star).norm()) < 0.5 * float(data.W_star.norm())  # it trained
    np.testing.assert_allclose(state["X"].numpy(), X.numpy(), rtol=0, atol=1e-10)
    C = X.shape[0]
    r_full = ref.W(X).reshape(C, -1) @ data.A.T - data.y
    np.testing.assert_allclose(prob.residual(ref.W(X)).numpy(), r_full.numpy(), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_equals_cpu():
    cfgs = [replace(SMALL, schedule="turn_off", wd=0.2, off_at=0.25), replace(SMALL, param="linear", wd=0.02)]
    for group in ([cfgs[0]], [cfgs[1]]):
        cpu = ms.run_group(group)
        gpu = ms.run_group([replace(c, device="cuda") for c in group])
        assert gpu.final_state["X"].device.type == "cuda"
        for k, v in cpu.metrics.items():
            np.testing.assert_allclose(gpu.metrics[k], v, rtol=1e-8, atol=1e-10, err_msg=k)
    f32 = [replace(cfgs[0], dtype="float32")]
    np.testing.assert_allclose(
        ms.run_group([replace(f32[0], device="cuda")]).final("rec_error"),
        ms.run_group(f32).final("rec_error"),
        rtol=1e-3,
    )
    g = torch.Generator().manual_seed(0)
    Z, y = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    rep, lam = geometry.get("mw", 6), schedule_table([turn_off(0.5, 100), constant(0.0)], 300)
    out = [
        run_batched(ReparamRegression(rep, Z, y, rep.init(0.5), n_configs=2, device=d), lam, 0.05, log_every=50)
        for d in ("cpu", "cuda")
    ]
    assert out[1].final_state["w"].device.type == "cuda"
    np.testing.assert_allclose(out[1].metrics["loss"], out[0].metrics["loss"], rtol=1e-8, atol=1e-12)
