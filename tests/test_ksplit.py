"""K splitting: reductions longer than the GEMM unit's buffers run as K chunks whose FP32 partials the host adds
in chunk order with the array's adder semantics; GoldenBackend(k_limit=...) splits identically (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw import numerics
from sat.sw.bdwp import GoldenBackend, k_chunks, nm_mask, sparse_chunk, sum_partials
from sat.sw.config import SATConfig
from sat.sw.driver import DeviceBackend, SATDevice
from sat.sw.driver.model import ModelTransport
from sat.sw.nmformat import compress
from sat.sw.tiling import max_reduction

F32 = np.float32


def _bits(x: np.ndarray) -> np.ndarray:
    return numerics.fp32_bits(np.asarray(x, F32))


def test_k_chunks():
    assert k_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert k_chunks(8, 8) == [(0, 8)]
    assert k_chunks(20, 13, 4) == [(0, 12), (12, 20)]         # group-aligned: 12, not 13
    assert k_chunks(3, 100, 8) == [(0, 3)]
    with pytest.raises(ValueError, match="cannot hold one group of 8"):
        k_chunks(16, 6, 8)


def test_sum_partials_fp32_semantics():
    """Chunk order, RNE, FTZ of subnormal sums to +0, canonical NaN: worked values, not numpy's own sum."""
    one = F32(1.0)
    ulp = F32(2.0 ** -23)
    # ((1 + 2^-24) + 2^-24): each add is a tie to even, so 1 stays 1; the other order would give 1 + 2^-23
    half = F32(2.0 ** -24)
    got = sum_partials([np.array([one]), np.array([half]), np.array([half])])
    assert _bits(got)[0] == _bits(np.array([one]))[0]
    got = sum_partials([np.array([half]), np.array([half]), np.array([one])])
    assert _bits(got)[0] == _bits(np.array([one + ulp]))[0]
    # a normal minus a slightly smaller normal lands below 2^-126: flushed to +0 (IEEE would keep a subnormal)
    a, b = F32(1.5 * 2.0 ** -126), F32(-1.0 * 2.0 ** -126)
    assert (a + b) != 0
    assert _bits(sum_partials([np.array([a]), np.array([b])]))[0] == 0
    # Inf - Inf: the canonical quiet NaN 0x7FC00000
    nan = sum_partials([np.array([np.inf], F32), np.array([-np.inf], F32)])
    assert nan.view(np.uint32)[0] == 0x7FC00000
    with pytest.raises(ValueError, match="no K-chunk partials"):
        sum_partials([])
    with pytest.raises(ValueError, match="different shapes"):
        sum_partials([np.zeros((2, 2), F32), np.zeros((2, 3), F32)])


def test_sparse_chunk_matches_slice():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((40, 5)).astype(F32)
    op = compress(b, 2, 8, nm_mask(b, 2, 8, axis=0))
    part = sparse_chunk(op, 16, 40)
    assert (part.k, part.cols, part.n, part.m) == (24, 5, 2, 8)
    dense = np.zeros_like(b)
    for g in range(op.values.shape[0]):
        for s in range(op.n):
            rows = g * op.m + op.indices[g, s]
            dense[rows, np.arange(5)] = op.values[g, s]
    part_dense = np.zeros((24, 5), F32)
    for g in range(part.values.shape[0]):
        for s in range(part.n):
            part_dense[g * 8 + part.indices[g, s], np.arange(5)] = part.values[g, s]
    np.testing.assert_array_equal(part_dense, dense[16:40])
    with pytest.raises(ValueError, match="group-aligned"):
        sparse_chunk(op, 4, 40)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_golden_split_is_chunk_products_added(fmt):
    """GoldenBackend(k_limit) = the unsplit golden of every chunk, added in order with numerics.fp32_add."""
    rng = np.random.default_rng(1)
    a = numerics.quantize(rng.standard_normal((6, 70)), fmt)
    b = numerics.quantize(rng.standard_normal((70, 5)), fmt)
    got = GoldenBackend(k_limit=32).dense(a, b, fmt)
    want = numerics.fp32_add(numerics.fp32_add(numerics.matmul(a[:, :32], b[:32], fmt),
                                               numerics.matmul(a[:, 32:64], b[32:64], fmt)),
                             numerics.matmul(a[:, 64:], b[64:], fmt))
    np.testing.assert_array_equal(_bits(got), _bits(want))
    assert not np.array_equal(_bits(got), _bits(GoldenBackend().dense(a, b, fmt))), \
        "the split should change some roundings (else this test cannot tell the two apart)"
    op = compress(b, 2, 8, nm_mask(b, 2, 8, axis=0))
    got = GoldenBackend(k_limit=lambda n, m: 24 if n else 1000).sparse(a, op, fmt)
    parts = [numerics.matmul_sparse(a[:, k0:k1], c.values, c.indices, 8, fmt)
             for k0, k1 in ((0, 24), (24, 48), (48, 70)) for c in [sparse_chunk(op, k0, k1)]]
    want = numerics.fp32_add(numerics.fp32_add(parts[0], parts[1]), parts[2])
    np.testing.assert_array_equal(_bits(got), _bits(want))
    with pytest.raises(ValueError, match="k_limit must be positive"):
        GoldenBackend(k_limit=0)


def test_device_backend_splits_k_bit_exact():
    """DeviceBackend with small buffers: one descriptor per chunk, bit for bit equal to the golden model with the
    same k_limit (dense, sparse and a reduction that fits)."""
    cfg = SATConfig(rows=2, cols=2, a_depth=2, b_depth=32)
    dev = SATDevice(ModelTransport(cfg, 1 << 22), cfg)
    backend = DeviceBackend(dev)
    assert backend.k_limit() == max_reduction(cfg) == 32
    assert backend.k_limit(2, 8) == max_reduction(cfg, 2, 8) == 64
    golden = GoldenBackend(k_limit=backend.k_limit)
    rng = np.random.default_rng(2)
    a = numerics.quantize(rng.standard_normal((9, 150)), "fp16")
    b = numerics.quantize(rng.standard_normal((150, 7)), "fp16")
    got = backend.dense(a, b, "fp16")
    # five K chunks: every partial stays FP32 (only a result one descriptor computes in full may be narrow)
    assert backend.stats == {"gemms": 1, "descriptors": 5, "narrow": 0, "cycles": backend.stats["cycles"]}
    np.testing.assert_array_equal(_bits(got), _bits(golden.dense(a, b, "fp16")))
    op = compress(b, 2, 8, nm_mask(b, 2, 8, axis=0))
    got = backend.sparse(a, op, "fp16")
    assert backend.stats["descriptors"] == 5 + 3
    np.testing.assert_array_equal(_bits(got), _bits(golden.sparse(a, op, "fp16")))
    got = backend.dense(a[:, :20], b[:20], "fp16")
    assert backend.stats["descriptors"] == 9
    np.testing.assert_array_equal(_bits(got), _bits(numerics.matmul(a[:, :20], b[:20], "fp16")))
    # the depths are the core's: a driver that opens the device without a configuration reads them back
    assert SATDevice(ModelTransport(cfg, 1 << 22)).config == cfg
