"""The configuration of one sparse-coding run (App. E; docs/diagonal-and-sparse-coding.md): the faces and the
dictionary's size, the reparameterized code (x = u^{2k} − v^{2k} or log u − log v), its regularization
strengths α (the code's a_t = −Σ_s η_s α) and the sweep over seeds × k × α that runs as one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...config import require
from ...runtime import resolve_device, resolve_dtype

PARAMS = ("power", "log")
IMAGE_SIZES = (64, 32, 16, 8, 4)
DICT_UPDATES = ("aggregated", "per_sample")
LOG_INITS = ("independent", "shared")


@dataclass(frozen=True)
class Config:
    """One reparameterization with a sweep over seeds × k (power) × α; all run as one batch."""

    param: str = "power"  # "power": u^{2k} − v^{2k};  "log": log u − log v
    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # power only
    alphas: tuple[float, ...] = (0.001,)
    seeds: tuple[int, ...] = (0,)  # each seed: its own initial dictionary, x_0 and batch order
    n_atoms: int = 50
    batch_size: int = 200
    iterations: int = 100
    lr_scale: float = 0.001  # η = lr_scale / ‖D‖₂²
    dict_update: str = "aggregated"  # "aggregated" (Mairal) or "per_sample" (the paper's code)
    log_init: str = "independent"  # "independent": u_0 = σ(z_1), v_0 = σ(−z_2) (the paper's code); "shared": z_2 = z_1
    image_size: int = 64  # 64 = paper; smaller sizes average-pool the faces
    n_images: int = 400
    sparsity_tol: float = 1e-2
    stationary_tol: float = 1e-3  # ‖X‖∗ is stationary once |Δ‖X‖∗|/‖X‖∗ < tol per iteration ...
    stationary_window: int = 5  # ... for this many consecutive iterations
    dtype: str = "float64"
    device: str = "auto"  # "auto": cuda when available, else cpu
    threads: int = 1  # torch intra-op threads and the per-sample kernel's threads (0 = torch's default)

    def validate(self) -> None:
        require(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        require(len(self.ks) > 0, "ks must list at least one k")
        for k in self.ks:
            require(1 <= k <= 50, f"ks must be integers in 1..50, got {k}")
        require(len(self.alphas) > 0, "alphas must list at least one value")
        for a in self.alphas:
            require(math.isfinite(a) and a >= 0, f"alphas must be non-negative numbers, got {a}")
        require(
            len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
            f"seeds must list distinct integers, got {','.join(map(str, self.seeds))}",
        )
        require(all(s >= 0 for s in self.seeds), f"seeds must be non-negative, got {','.join(map(str, self.seeds))}")
        require(self.n_atoms > 0, f"n_atoms must be positive, got {self.n_atoms}")
        require(1 <= self.n_images <= 400, f"n_images must be in 1..400, got {self.n_images}")
        require(
            0 < self.batch_size <= self.n_images,
            f"batch_size must be in 1..n_images={self.n_images}, got {self.batch_size}",
        )
        require(self.iterations > 0, f"iterations must be positive, got {self.iterations}")
        require(math.isfinite(self.lr_scale) and self.lr_scale > 0, f"lr_scale must be positive, got {self.lr_scale}")
        require(
            self.dict_update in DICT_UPDATES,
            f"dict_update must be one of {', '.join(DICT_UPDATES)}, got {self.dict_update!r}",
        )
        require(
            self.dict_update != "per_sample" or self.n_images % self.batch_size == 0,
            f"dict_update=per_sample needs batch_size dividing n_images={self.n_images} (one A[i], B[i] per "
            f"batch position), got batch_size={self.batch_size}",
        )
        require(self.log_init in LOG_INITS, f"log_init must be one of {', '.join(LOG_INITS)}, got {self.log_init!r}")
        require(
            self.image_size in IMAGE_SIZES,
            f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {self.image_size}",
        )
        require(self.sparsity_tol > 0, f"sparsity_tol must be positive, got {self.sparsity_tol}")
        require(self.stationary_tol > 0, f"stationary_tol must be positive, got {self.stationary_tol}")
        require(self.stationary_window >= 1, f"stationary_window must be at least 1, got {self.stationary_window}")
        resolve_dtype(self.dtype)  # ConfigError naming 'dtype'
        resolve_device(self.device)  # ConfigError for cuda on a machine without CUDA (outside a dry run's planning)
        require(self.threads >= 0, f"threads must be non-negative (0 = torch's default), got {self.threads}")

    def points(self) -> list[tuple[int, float]]:
        """The (k, α) points of the sweep (k is 1 and unused for ``log``)."""
        ks = self.ks if self.param == "power" else (1,)
        return [(k, a) for k in ks for a in self.alphas]

    def grid(self) -> list[tuple[int, int, float]]:
        """The (seed, k, α) configurations of this run, seed-major."""
        return [(s, k, a) for s in self.seeds for k, a in self.points()]

    def point_labels(self) -> list[str]:
        if self.param == "log":
            return [f"α={a:g}" for _, a in self.points()]
        if len(self.alphas) == 1:
            return [f"k={k}" for k, _ in self.points()]
        return [f"k={k}, α={a:g}" for k, a in self.points()]

    def labels(self) -> list[str]:
        """One label per configuration (the point's label, with the seed when there are several)."""
        pl = self.point_labels()
        if len(self.seeds) == 1:
            return pl
        return [f"{lab}, seed={s}" for s in self.seeds for lab in pl]
