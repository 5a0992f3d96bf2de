"""Sparse GEMM on the compressed operand equals the dense GEMM on the pruned operand, bit for bit.

``matmul(a, prune(b))`` (dense, K products per output) and ``matmul_nm(a, compress(b))`` (sparse, only the
kept products) must agree exactly for finite inputs: the products that the sparse form skips are exact
zeros, and adding a zero to an FP32 accumulator that starts at +0 never changes it. Both are also checked
against a float64 reference with the error bound of sequential FP32 summation derived below.

Error bound. Operands are quantized (``qa``, ``qb``); each product ``p_i = qa_i * qb_i`` is exact in FP32
(<= 11-bit significands), except that a BF16 product below 2**-126 is flushed to zero (error < 2**-126).
Each add is ``fl(s + p) = (s + p)(1 + d)``, ``|d| <= u = 2**-24`` (RNE), followed by flush-to-zero of
results below 2**-126 (error < 2**-126). For ``n`` terms the usual recursive-summation analysis (Higham,
*Accuracy and Stability*, 4.2) gives

    |y - sum p_i| <= gamma_{n-1} * sum |p_i| + 2 n 2**-126 (1 + u)**n,    gamma_j = j u / (1 - j u),

and the float64 reference itself is off by at most ``gamma64_{n-1} * sum |p_i|`` (``u64 = 2**-53``).
Using the dense ``n = K`` (adding zeros is exact) bounds the sparse result as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sat.sw.bdwp import prune
from sat.sw.nmformat import compress, compress_bp, compress_ff, matmul_nm, pack, unpack
from sat.sw.numerics import matmul, matmul_sparse, quantize

PATTERNS = [(1, 4), (2, 4), (2, 8), (1, 8), (4, 8)]
FORMATS = ["fp16", "bf16"]
# exponent ranges that keep every operand and every partial sum finite in the format
EXP_RANGE = {"fp16": (-8, 5), "bf16": (-70, 40)}


def operand(rng: np.random.Generator, shape: tuple[int, int], fmt: str, zeros: float) -> np.ndarray:
    """Finite float32 values with magnitudes spread over many binades (BF16: some products underflow)."""
    lo, hi = EXP_RANGE[fmt]
    x = rng.standard_normal(shape) * np.exp2(rng.integers(lo, hi, shape))
    x[rng.random(shape) < zeros] = 0.0
    return x.astype(np.float32)


def error_bound(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Per-output bound on |FP32 sequential sum - float64 reference| (see the module docstring)."""
    n = qa.shape[1]
    u, u64 = 2.0**-24, 2.0**-53
    gamma = (n - 1) * u / (1 - (n - 1) * u)
    gamma64 = (n - 1) * u64 / (1 - (n - 1) * u64)
    s_abs = np.abs(qa.astype(np.float64)) @ np.abs(qb.astype(np.float64))
    return (gamma + gamma64) * s_abs + 2 * n * 2.0**-126 * (1 + u) ** n


def check_against_float64(y: np.ndarray, a: np.ndarray, b_dense: np.ndarray, fmt: str) -> None:
    qa, qb = quantize(a, fmt), quantize(b_dense, fmt)
    ref = qa.astype(np.float64) @ qb.astype(np.float64)
    assert np.all(np.isfinite(y))
    err = np.abs(y.astype(np.float64) - ref)
    bound = error_bound(qa, qb)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)} over the bound"


@st.composite
def gemm_cases(draw):
    n, m = draw(st.sampled_from(PATTERNS))
    fmt = draw(st.sampled_from(FORMATS))
    rows = draw(st.integers(1, 6))
    k = draw(st.integers(1, 50))
    cols = draw(st.integers(1, 40))
    zeros = draw(st.sampled_from([0.0, 0.3, 0.9]))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, m, fmt, rows, k, cols, zeros, seed


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(gemm_cases())
def test_plain_operand(case):
    n, m, fmt, rows, k, cols, zeros, seed = case
    rng = np.random.default_rng(seed)
    a = operand(rng, (rows, k), fmt, 0.1)
    b = operand(rng, (k, cols), fmt, zeros)
    b_pruned = prune(b, n, m, axis=0)
    dense = matmul(a, b_pruned, fmt)
    op = compress(b, n, m)
    sparse = matmul_nm(a, op, fmt)
    assert np.array_equal(dense.view(np.uint32), sparse.view(np.uint32))
    # the same through matmul_sparse directly and through the packed beats
    direct = matmul_sparse(a, op.values, op.indices, m, fmt)
    assert np.array_equal(direct.view(np.uint32), dense.view(np.uint32))
    packed = unpack(pack(op, fmt), n, m, k, cols, fmt)
    assert np.array_equal(matmul_nm(a, packed, fmt).view(np.uint32), dense.view(np.uint32))
    check_against_float64(sparse, a, b_pruned, fmt)


@SETTINGS
@given(gemm_cases())
def test_ff_form(case):
    """Y = X . W_ff^T with W (C_out x K) pruned along K."""
    n, m, fmt, rows, k, c_out, zeros, seed = case
    rng = np.random.default_rng(seed)
    x = operand(rng, (rows, k), fmt, 0.1)
    w = operand(rng, (c_out, k), fmt, zeros)
    w_ff = prune(w, n, m, axis=1)
    dense = matmul(x, w_ff.T, fmt)
    sparse = matmul_nm(x, compress_ff(w, n, m), fmt)
    assert np.array_equal(dense.view(np.uint32), sparse.view(np.uint32))
    check_against_float64(sparse, x, w_ff.T, fmt)


@SETTINGS
@given(gemm_cases())
def test_bp_form(case):
    """dX = dY . W_bp with W (C_out x K) pruned along C_out (the reduction axis of BP)."""
    n, m, fmt, rows, c_out, k, zeros, seed = case
    rng = np.random.default_rng(seed)
    dy = operand(rng, (rows, c_out), fmt, 0.1)
    w = operand(rng, (c_out, k), fmt, zeros)
    w_bp = prune(w, n, m, axis=0)
    dense = matmul(dy, w_bp, fmt)
    sparse = matmul_nm(dy, compress_bp(w, n, m), fmt)
    assert np.array_equal(dense.view(np.uint32), sparse.view(np.uint32))
    check_against_float64(sparse, dy, w_bp, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n, m", PATTERNS)
def test_larger_ragged_gemm(n, m, fmt):
    rng = np.random.default_rng(1000 * n + m)
    a = operand(rng, (8, 301), fmt, 0.0)
    b = operand(rng, (301, 67), fmt, 0.2)
    b_pruned = prune(b, n, m, axis=0)
    sparse = matmul_nm(a, compress(b, n, m), fmt)
    assert np.array_equal(matmul(a, b_pruned, fmt).view(np.uint32), sparse.view(np.uint32))
    check_against_float64(sparse, a, b_pruned, fmt)


def test_bound_is_tight_enough_to_catch_a_wrong_index():
    """The float64 check is not vacuous: one kept value read at a neighbouring row breaks it."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    b = rng.standard_normal((64, 8)).astype(np.float32)
    b_pruned = prune(b, 2, 8, axis=0)
    op = compress(b, 2, 8)
    g, j = 3, 0
    row = g * 8 + int(op.indices[g, 0, j])
    other = g * 8 + next(r for r in range(8) if r not in op.indices[g, :, j])
    wrong = b_pruned.copy()
    wrong[[row, other], j] = wrong[[other, row], j]
    y = matmul(a, wrong, "fp16")
    with pytest.raises(AssertionError, match="over the bound"):
        check_against_float64(y, a, b_pruned, "fp16")
