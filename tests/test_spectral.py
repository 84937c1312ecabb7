"""product_singular_values / spectral_metrics against explicit SVDs (float64, 1e-10 relative)."""

import math

import pytest
import torch

from mirrorflow.training.spectral import batched_spectral_metrics, product_singular_values, spectral_metrics


def _factors(batch, m, r, n, rank=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(*batch, m, r, generator=g, dtype=dtype)
    R = torch.randn(*batch, r, n, generator=g, dtype=dtype)
    if rank is not None:  # force rank(L) = rank < r: L = U V with inner dimension `rank`
        U = torch.randn(*batch, m, rank, generator=g, dtype=dtype)
        V = torch.randn(*batch, rank, r, generator=g, dtype=dtype)
        L = U @ V
    return L, R


@pytest.mark.parametrize(
    "batch,m,r,n,rank",
    [
        ((), 50, 5, 40, None),  # thin: QR path
        ((), 7, 3, 90, None),  # wide product
        ((), 64, 8, 64, 3),  # rank-deficient factor (rank 3 < r = 8)
        ((), 30, 30, 20, None),  # r ≥ min(m, n): explicit path
        ((), 12, 16, 40, None),  # r > m
        ((3, 2), 25, 4, 18, None),  # batched over two leading dims
        ((5,), 40, 6, 33, 2),  # batched and rank-deficient
    ],
)
def test_matches_svdvals_of_explicit_product(batch, m, r, n, rank):
    L, R = _factors(batch, m, r, n, rank)
    s = product_singular_values(L, R)
    ref = torch.linalg.svdvals(L @ R)
    k = min(m, n, r)
    assert s.shape == (*batch, k)
    assert s.dtype == torch.float64
    err = (s - ref[..., :k]).norm(dim=-1) / ref.norm(dim=-1)
    assert float(err.max()) < 1e-10
    # the explicit product has no further non-zero singular values
    tail = ref[..., k:]
    if tail.shape[-1]:
        assert float((tail.norm(dim=-1) / ref.norm(dim=-1)).max()) < 1e-12
    if rank is not None:  # rank-deficient: exactly `rank` non-negligible values
        assert float((s[..., rank:] / s[..., :1]).max()) < 1e-12
        assert float((s[..., rank - 1] / s[..., 0]).min()) > 1e-6


def test_scale_multiplies_singular_values_by_its_absolute_value():
    L, R = _factors((), 20, 3, 15)
    s = product_singular_values(L, R)
    assert torch.allclose(product_singular_values(L, R, scale=-2.5), 2.5 * s, rtol=1e-14)


def test_float32_factors_agree_with_float64_reference():
    L, R = _factors((), 300, 8, 200, dtype=torch.float32)
    s = product_singular_values(L, R)
    assert s.dtype == torch.float32
    ref = torch.linalg.svdvals(L.double() @ R.double())[:8]
    assert float((s.double() - ref).norm() / ref.norm()) < 1e-5


def test_half_precision_is_computed_in_float32():
    L, R = _factors((), 30, 4, 20, dtype=torch.bfloat16)
    s = product_singular_values(L, R)
    assert s.dtype == torch.float32
    ref = torch.linalg.svdvals(L.double() @ R.double())[:4]
    assert float((s.double() - ref).norm() / ref.norm()) < 1e-5


def test_inner_dimension_mismatch_is_an_error():
    with pytest.raises(ValueError, match="inner dimensions"):
        product_singular_values(torch.randn(4, 3), torch.randn(2, 5))


def test_metrics_of_a_known_spectrum():
    s = torch.tensor([4.0, 2.0, 2.0, 0.0], dtype=torch.float64)
    m = spectral_metrics(s)
    assert m["nuclear"] == 8.0
    assert m["frobenius"] == pytest.approx(math.sqrt(24.0), rel=1e-15)
    assert m["rho"] == pytest.approx(8.0 / math.sqrt(24.0), rel=1e-15)
    assert m["spectral"] == 4.0
    assert m["stable_rank"] == pytest.approx(24.0 / 16.0, rel=1e-15)
    p = [0.5, 0.25, 0.25]
    assert m["effective_rank"] == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)), rel=1e-14)


def test_metrics_match_explicit_matrix_norms():
    L, R = _factors((), 40, 5, 30, seed=3)
    W = L @ R
    m = spectral_metrics(product_singular_values(L, R))
    assert m["nuclear"] == pytest.approx(float(torch.linalg.matrix_norm(W, "nuc")), rel=1e-12)
    assert m["frobenius"] == pytest.approx(float(torch.linalg.matrix_norm(W, "fro")), rel=1e-12)
    assert m["spectral"] == pytest.approx(float(torch.linalg.matrix_norm(W, 2)), rel=1e-12)
    assert 1.0 <= m["rho"] <= math.sqrt(5) + 1e-12
    assert 1.0 <= m["stable_rank"] <= m["effective_rank"] + 1e-12 <= 5 + 1e-12


def test_rank_one_and_isotropic_extremes_of_rho():
    u = torch.randn(10, 1, dtype=torch.float64)
    v = torch.randn(1, 12, dtype=torch.float64)
    assert spectral_metrics(product_singular_values(u, v))["rho"] == pytest.approx(1.0, abs=1e-12)
    Q = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64))[0]
    m = spectral_metrics(product_singular_values(Q, Q.T))
    assert m["rho"] == pytest.approx(2.0, rel=1e-12)  # √rank for equal singular values
    assert m["effective_rank"] == pytest.approx(4.0, rel=1e-12)


def test_zero_product_has_nan_rho_and_zero_ranks():
    m = spectral_metrics(product_singular_values(torch.zeros(8, 2), torch.randn(2, 6)))
    assert m["nuclear"] == 0.0 and m["frobenius"] == 0.0
    assert math.isnan(m["rho"])
    assert m["effective_rank"] == 0.0 and m["stable_rank"] == 0.0


def test_batched_metrics_equal_single_metrics():
    L, R = _factors((4,), 20, 3, 16, seed=5)
    S = product_singular_values(L, R)
    S = torch.cat([S, torch.zeros(1, 3, dtype=S.dtype)])  # plus a zero product
    batched = batched_spectral_metrics(S)
    for i in range(S.shape[0]):
        single = spectral_metrics(S[i])
        for k, v in single.items():
            b = float(batched[k][i])
            assert (math.isnan(v) and math.isnan(b)) or b == pytest.approx(v, rel=1e-13, abs=0.0)


def test_a_batch_of_factor_pairs_gets_per_matrix_metrics_not_one_merged_matrix():
    """spectral_metrics refuses a (B, k) batch (it used to merge the batch into one matrix);
    batched_spectral_metrics gives each matrix its own ρ, equal to spectral_metrics of that matrix alone."""
    from mirrorflow.training.spectral import batched_spectral_metrics

    g = torch.Generator().manual_seed(0)
    B = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    A = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    s = product_singular_values(B, A)
    assert s.shape[0] == 3
    with pytest.raises(ValueError, match="batched_spectral_metrics"):
        spectral_metrics(s)
    rho = batched_spectral_metrics(s)["rho"]
    for i in range(3):
        assert float(rho[i]) == pytest.approx(spectral_metrics(product_singular_values(B[i], A[i]))["rho"], rel=1e-12)
