"""Dictionary steps of online dictionary learning (Mairal et al. 2009, Alg. 2) for the sparse-coding
experiment (App. E): the aggregated update and the paper code's per-sample update, batched over a leading
configuration axis C.

Both are block-coordinate sweeps over the atoms (rows d_j of D ∈ ℝ^{K×P}) with accumulators A (K×K), B:

    u_j = (b_j − Dᵀ a_j) / A_jj + d_j,     d_j ← u_j / max(1, ε + ‖u_j‖),   ε = 10⁻⁵,

* ``aggregated`` (Mairal): A ← A + X_bᵀX_b, B ← B + Y_bᵀX_b over the whole batch, then ONE sweep.
* ``per_sample`` (the paper's code, ``main_power.py``/``main_log.py``): one A[i], B[i] per *position* i of
  the batch, A[i] ← A[i] + x_i x_iᵀ, B[i] ← B[i] + y_i x_iᵀ (``einsum('bi,bj->bij')``; A[i]_0 = 0.01·I,
  B[i]_0 = 0), then a sweep with A[i], B[i] for i = 1, …, b in turn: b sequential single-sample fits.

The per-sample sweep is K·b sequential atom updates per batch, each a K×P matrix-vector product; a Python
loop over them is dominated by interpreter overhead. On the CPU it runs in a small C kernel (compiled once
with the system C compiler, cached, loaded with ``ctypes``; OpenMP over the configuration axis) that takes
the atoms in blocks of ``MB`` with an ``MB × TB``-vector tile of accumulators in registers, so each row of D
it loads serves ``MB`` atoms (``benchmarks/bench_per_sample_kernel.py`` compares tiles); elsewhere,
or without a compiler, the same loop runs in torch with the configuration axis batched. Both give the
straightforward loop's result to float64 rounding (tested).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

EPS = 1e-5  # d_j ← u_j / max(1, ε + ‖u_j‖)
A0 = 0.01  # A_0 = 0.01·I
log = logging.getLogger(__name__)


def aggregated_step(D: torch.Tensor, A: torch.Tensor, Bt: torch.Tensor, Xb: torch.Tensor, Yb: torch.Tensor):
    """Mairal's update: A ← A + X_bᵀX_b, Bᵀ ← Bᵀ + X_bᵀY_b, one sweep. Shapes D, Bt (C, K, P), A (C, K, K),
    Xb (C, b, K), Yb (C, b, P). Returns (D, A, Bt) (new tensors)."""
    A = A + Xb.transpose(1, 2) @ Xb
    Bt = Bt + Xb.transpose(1, 2) @ Yb
    D = D.clone()
    for j in range(D.shape[1]):
        ajj = A[:, j, j].clamp_min(1e-12).view(-1, 1, 1)
        # A is symmetric: row j of A equals column j, and (C,1,K)@(C,K,P) is one batched GEMV
        u = (Bt[:, j : j + 1, :] - torch.bmm(A[:, j : j + 1, :], D)) / ajj + D[:, j : j + 1, :]
        D[:, j : j + 1, :] = u / torch.clamp(EPS + u.norm(dim=2, keepdim=True), min=1.0)
    return D, A, Bt


def per_sample_step(
    D: torch.Tensor,
    A: torch.Tensor,
    Bt: torch.Tensor,
    Xb: torch.Tensor,
    Yb: torch.Tensor,
    threads: int = 1,
    kernel: str = "auto",
) -> None:
    """The paper code's update, IN PLACE: for each position i, A[i] += x_i x_iᵀ, Bᵀ[i] += x_i y_iᵀ, then one
    sweep over the atoms with A[i], B[i]. Shapes D (C, K, P), A (C, b, K, K), Bt (C, b, K, P), Xb (C, b, K),
    Yb (C, b, P). ``kernel``: ``"c"`` (compiled loop; CPU only), ``"torch"``, or ``"auto"`` (C when possible)."""
    use_c = kernel == "c" or (kernel == "auto" and D.device.type == "cpu" and _library(D.dtype) is not None)
    if use_c:
        lib = _library(D.dtype)
        if lib is None:
            raise RuntimeError("the per-sample C kernel could not be compiled (no C compiler?)")
        ts = (D, A, Bt, Xb, Yb)
        if not all(t.is_contiguous() and t.device.type == "cpu" and t.dtype == D.dtype for t in ts):
            raise ValueError("per_sample_step: the C kernel needs contiguous CPU tensors of one dtype")
        C, b, K, P = Bt.shape
        lib.per_sample_sweep(C, b, K, P, *(ctypes.c_void_p(t.data_ptr()) for t in ts), EPS, max(1, threads))
        return
    _per_sample_torch(D, A, Bt, Xb, Yb)


def _per_sample_torch(D, A, Bt, Xb, Yb) -> None:
    """The per-sample sweep in torch: positions and atoms in sequence, configurations batched."""
    C, b, K, P = Bt.shape
    A.add_(Xb.unsqueeze(3) * Xb.unsqueeze(2))
    Bt.add_(Xb.unsqueeze(3) * Yb.unsqueeze(2))
    for i in range(b):
        Ai, Bi = A[:, i], Bt[:, i]
        for j in range(K):
            u = (Bi[:, j : j + 1] - torch.bmm(Ai[:, j : j + 1], D)) / Ai[:, j, j].view(C, 1, 1) + D[:, j : j + 1]
            D[:, j : j + 1] = u / torch.clamp(EPS + u.norm(dim=2, keepdim=True), min=1.0)


# ------------------------------------------------------------------------------- the C kernel
_SOURCE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifndef MB
#define MB 5   /* atoms per block: every d_l loaded serves MB atoms (K = 50 is 10 blocks) */
#endif
#ifndef TB
#define TB 4   /* 64-byte vectors per register tile: MB·TB accumulators stay in registers */
#endif
#define VL ((int)(64 / sizeof(REAL)))
typedef REAL vec __attribute__((vector_size(64)));

static inline vec vload(const REAL *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(REAL *p, vec v) { memcpy(p, &v, sizeof v); }

/* ub[jj] = b_{j0+jj} − Σ_{l ∉ [j0, j0+m)} a_{j0+jj, l} d_l for the block's m atoms */
static void block_rest(int K, int P, int j0, int m, const REAL *Ai, const REAL *Bi, const REAL *Dc, REAL *ub) {
    REAL al[K][MB];
    for (int l = 0; l < K; l++)
        for (int jj = 0; jj < MB; jj++)
            al[l][jj] = (jj < m && (l < j0 || l >= j0 + m)) ? Ai[(size_t)(j0 + jj) * K + l] : 0;
    int W = TB * VL, t0 = 0;
    for (; t0 + W <= P; t0 += W) {
        vec acc[MB][TB];
        for (int jj = 0; jj < MB; jj++)
            for (int v = 0; v < TB; v++)
                acc[jj][v] = jj < m ? vload(Bi + (size_t)(j0 + jj) * P + t0 + v * VL) : (vec){0};
        for (int l = 0; l < K; l++) {
            const REAL *dl = Dc + (size_t)l * P + t0;
            vec d[TB];
            for (int v = 0; v < TB; v++) d[v] = vload(dl + v * VL);
            for (int jj = 0; jj < MB; jj++) {
                REAL a = al[l][jj];
                for (int v = 0; v < TB; v++) acc[jj][v] -= a * d[v];
            }
        }
        for (int jj = 0; jj < m; jj++)
            for (int v = 0; v < TB; v++) vstore(ub + (size_t)jj * P + t0 + v * VL, acc[jj][v]);
    }
    for (int jj = 0; jj < m; jj++) {  /* the tail of the row, fewer than TB·VL entries */
        REAL *u = ub + (size_t)jj * P;
        for (int t = t0; t < P; t++) u[t] = Bi[(size_t)(j0 + jj) * P + t];
        for (int l = 0; l < K; l++) {
            REAL a = al[l][jj]; const REAL *dl = Dc + (size_t)l * P;
            for (int t = t0; t < P; t++) u[t] -= a * dl[t];
        }
    }
}

void per_sample_sweep(int C, int b, int K, int P, REAL *D, REAL *A, REAL *Bt, const REAL *X,
                      const REAL *Y, double eps, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        REAL *Dc = D + (size_t)c * K * P;
        REAL *ub = (REAL *)malloc(sizeof(REAL) * MB * P);
        for (int i = 0; i < b; i++) {
            REAL *Ai = A + ((size_t)c * b + i) * K * K;
            REAL *Bi = Bt + ((size_t)c * b + i) * K * P;
            const REAL *x = X + ((size_t)c * b + i) * K;
            const REAL *y = Y + ((size_t)c * b + i) * P;
            for (int p = 0; p < K; p++) {            /* A[i] += x xᵀ, Bᵀ[i] += x yᵀ */
                for (int q = 0; q < K; q++) Ai[p * K + q] += x[p] * x[q];
                REAL xp = x[p]; REAL *Bp = Bi + (size_t)p * P;
                for (int t = 0; t < P; t++) Bp[t] += xp * y[t];
            }
            for (int j0 = 0; j0 < K; j0 += MB) {     /* u_j = (b_j − Σ_l a_jl d_l)/a_jj + d_j, j in the block */
                int m = K - j0 < MB ? K - j0 : MB;
                block_rest(K, P, j0, m, Ai, Bi, Dc, ub);
                for (int jj = 0; jj < m; jj++) {     /* atoms of the block in sequence (A[i] symmetric) */
                    int j = j0 + jj;
                    REAL *u = ub + (size_t)jj * P;
                    for (int ll = 0; ll < m; ll++) {
                        REAL al = Ai[(size_t)j * K + j0 + ll]; const REAL *dl = Dc + (size_t)(j0 + ll) * P;
                        for (int t = 0; t < P; t++) u[t] -= al * dl[t];
                    }
                    REAL ajj = Ai[(size_t)j * K + j]; REAL *dj = Dc + (size_t)j * P; REAL nrm = 0;
                    for (int t = 0; t < P; t++) { REAL v = u[t] / ajj + dj[t]; u[t] = v; nrm += v * v; }
                    REAL sc = (REAL)eps + sqrt(nrm); if (sc < 1) sc = 1;
                    for (int t = 0; t < P; t++) dj[t] = u[t] / sc;
                }
            }
        }
        free(ub);
    }
}
"""
_LIBS: dict[torch.dtype, ctypes.CDLL | None] = {}
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-shared", "-fPIC", "-fopenmp"]
_CTYPES = {torch.float64: "double", torch.float32: "float"}


def _cache_dir() -> Path:
    base = os.environ.get("MIRRORFLOW_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirrorflow" / "kernels"


def _compile(real: str) -> Path | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    key = hashlib.sha256(
        "|".join([_SOURCE, real, cc, *CFLAGS, platform.machine(), platform.node(), sys.platform]).encode()
    ).hexdigest()[:16]
    out = _cache_dir() / f"per_sample_{real}_{key}.so"
    if out.exists():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # an unwritable cache: compile into a private temporary directory instead
        log.warning("kernel cache %s not writable (%s); compiling into a temporary directory", out.parent, e)
        out = Path(tempfile.mkdtemp(prefix="mirrorflow-kernels-")) / out.name
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.c"
        src.write_text(f"#define REAL {real}\n{_SOURCE}")
        lib = Path(tmp) / "k.so"
        for fl in (CFLAGS, ["-O3", "-shared", "-fPIC"]):  # plain flags: no OpenMP (the pragma is ignored)
            try:
                r = subprocess.run([cc, *fl, str(src), "-o", str(lib), "-lm"], capture_output=True, text=True)
            except OSError as e:  # the compiler named by CC does not run
                r = subprocess.CompletedProcess([cc], 1, "", str(e))
            if r.returncode == 0:
                os.replace(lib, out)  # atomic: concurrent processes never load a half-written file
                return out
        log.warning("per-sample C kernel not compiled (%s); using the torch loop", r.stderr.strip()[:200])
    return None


def load_kernel(path: Path | str) -> ctypes.CDLL:
    """A compiled per-sample kernel with the signature of ``per_sample_sweep`` declared."""
    lib = ctypes.CDLL(str(path))
    lib.per_sample_sweep.restype = None
    lib.per_sample_sweep.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 5 + [ctypes.c_double, ctypes.c_int]
    return lib


def _library(dtype: torch.dtype) -> ctypes.CDLL | None:
    """The compiled per-sample kernel for ``dtype`` (None when no C compiler works)."""
    if dtype not in _LIBS:
        real = _CTYPES.get(dtype)
        path = _compile(real) if real else None
        lib = None
        if path is not None:
            try:
                lib = load_kernel(path)
            except (OSError, AttributeError) as e:  # a damaged cached file (truncated, overwritten): rebuild it
                log.warning("cached kernel %s cannot be loaded (%s); rebuilding it", path, str(e)[:200])
                path.unlink(missing_ok=True)
                path = _compile(real)
                lib = load_kernel(path) if path is not None else None
        _LIBS[dtype] = lib
    return _LIBS[dtype]
