import math
import os

import pytest
import torch

# Two cores on CI: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is fastest on a shared 2-core machine (restored afterwards).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def commuting_sensing(n: int = 3, m: int = 2, seed: int = 1):
    """(Q, A): symmetric sensing matrices A_i = Q diag(d_i) Qᵀ that commute (one eigenbasis Q), with orthogonal
    eigenvalue profiles d_i (well-conditioned measurements); float64."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    d = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=torch.float64))[0].T * math.sqrt(m)
    return Q, torch.stack([Q @ torch.diag(d[i]) @ Q.T for i in range(m)])


def sparse_regression(N: int = 4, n: int = 6, seed: int = 0):
    """(Z, y): N orthogonal rows scaled to ‖row‖ = √N, and y = Z x* for a 2-sparse x* = (0.5, −0.3, 0, ...)."""
    gen = torch.Generator().manual_seed(seed)
    Z = torch.linalg.qr(torch.randn(n, N, generator=gen, dtype=torch.float64))[0].T * math.sqrt(N)
    x_star = torch.zeros(n, dtype=torch.float64)
    x_star[:2] = torch.tensor([0.5, -0.3], dtype=torch.float64)
    return Z, Z @ x_star


NO_REPRODUCTION = """

def reproduce_plan(overrides):
    from mirrorflow.errors import ConfigError

    raise ConfigError("this probe has no paper reproduction")


def reproduce(out, overrides=None, progress=None):
    return reproduce_plan(overrides)
"""


@pytest.fixture
def plugin_experiment(tmp_path, monkeypatch):
    """Register a throw-away experiment module: ``plugin_experiment(name, source) -> name``. ``source`` gives
    ``Config`` and ``run``; a probe has no paper reproduction, so :data:`NO_REPRODUCTION` completes the
    ``Experiment`` protocol (engine/protocol.py) that ``experiments.load`` checks."""
    from mirrorflow import experiments

    def register(name: str, source: str) -> str:
        module = name.replace("-", "_")
        pkg = tmp_path / f"{module}_pkg"
        pkg.mkdir()
        (pkg / f"{module}.py").write_text(source + NO_REPRODUCTION)
        monkeypatch.syspath_prepend(str(pkg))
        monkeypatch.setitem(experiments.EXPERIMENTS, name, module)
        return name

    return register
