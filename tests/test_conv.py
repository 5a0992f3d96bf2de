"""The convolution golden model (``sat.sw.conv``, SPEC section 1.1) against direct per-output chains.

The references below never lower anything: each walks the contract's chain for every output (FF over
``(kh, kw, ci)``, BP over ``(kh, kw, co)`` with only the kept ``co``, WU over ``(b, oh, ow)``), one exact product
and one ``numerics.fp32_add`` per step (vectorized across outputs only), restarting at +0 at every K-chunk
boundary and adding the chunks' partials in order. They must agree bit for bit; a float64 einsum bounds the error.
"""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw import numerics
from sat.sw.bdwp import GoldenBackend, k_chunks, nm_mask
from sat.sw.config import SATConfig
from sat.sw.conv import (
    ConvShape,
    bp_lower,
    bp_operand,
    conv_bp,
    conv_ff,
    conv_pass,
    conv_wu,
    ff_operand,
    im2col,
)

NM_SET = SATConfig().nm_set   # every N:M of the default build


def _bits(x):
    return numerics.fp32_bits(np.asarray(x, np.float32))


def _chain(positions, k_total, limit, granule, step):
    """Walk a chain: ``step(t)`` -> (product, kept) for lowered index t; partial sums restart at chunk starts."""
    bounds = k_chunks(k_total, limit, granule) if limit else [(0, k_total)]
    partials = []
    for k0, k1 in bounds:
        acc = None
        for t in positions:
            if not k0 <= t < k1:
                continue
            p, kept = step(t)
            if acc is None:
                acc = np.zeros(p.shape, np.float32)
            acc = np.where(kept, numerics.fp32_add(acc, p), acc)
        partials.append(acc)
    total = partials[0]
    for p in partials[1:]:
        total = numerics.fp32_add(total, p)
    return total


def ref_ff(x, w, mask, sh: ConvShape, fmt, limit=None, m=1):
    """Y[b,oh,ow,co]: chain over (kh, kw, ci) ascending; only FF-kept weights when ``mask`` is given."""
    s, p = sh.stride, sh.padding
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))

    def step(t):
        i, rest = divmod(t, sh.kw * sh.c_in)
        j, ci = divmod(rest, sh.c_in)
        tap = xp[:, i:i + s * (sh.oh - 1) + 1:s, j:j + s * (sh.ow - 1) + 1:s, ci]        # (B, OH, OW)
        prod = numerics.fp_mul(tap[..., None], w[None, None, None, :, i, j, ci], fmt)     # (B, OH, OW, Co)
        kept = True if mask is None else mask[:, i, j, ci]
        return prod, kept

    return _chain(range(sh.k), sh.k, limit, m, step)


def ref_bp(dy, w, mask, sh: ConvShape, fmt, limit=None, m=1):
    """dX[b,ih,iw,ci]: chain over (kh, kw, co) ascending, co fastest, over existing taps; kept co only."""
    s, p = sh.stride, sh.padding
    cp = sh.co_pad(m)
    ih = np.arange(sh.height)
    iw = np.arange(sh.width)

    def step(t):
        tap, co = divmod(t, cp)
        i, j = divmod(tap, sh.kw)
        if co >= sh.c_out:      # a padded channel: nothing kept
            return np.zeros((sh.batch, sh.height, sh.width, sh.c_in), np.float32), False
        oh_num, ow_num = ih + p - i, iw + p - j
        ok_h = (oh_num % s == 0) & (oh_num // s >= 0) & (oh_num // s < sh.oh)
        ok_w = (ow_num % s == 0) & (ow_num // s >= 0) & (ow_num // s < sh.ow)
        oh = np.clip(oh_num // s, 0, sh.oh - 1)
        ow = np.clip(ow_num // s, 0, sh.ow - 1)
        act = dy[:, oh[:, None], ow[None, :], co] * (ok_h[:, None] & ok_w[None, :])       # (B, H, W), 0 = no tap
        prod = numerics.fp_mul(act[..., None], w[co, i, j, :], fmt)                          # (B, H, W, Ci)
        kept = True if mask is None else mask[co, i, j, :]
        return prod, kept

    return _chain(range(sh.kh * sh.kw * cp), sh.bp_k(m), limit, m, step)


def ref_wu(dy, x, sh: ConvShape, fmt, limit=None):
    """dW[co,kh,kw,ci]: chain over (b, oh, ow) ascending (dense)."""
    s, p = sh.stride, sh.padding
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))

    def step(t):
        b, rest = divmod(t, sh.oh * sh.ow)
        oh, ow = divmod(rest, sh.ow)
        patch = xp[b, oh * s:oh * s + sh.kh, ow * s:ow * s + sh.kw, :]                    # (kh, kw, Ci)
        return numerics.fp_mul(dy[b, oh, ow, :, None, None, None], patch[None], fmt), True

    return _chain(range(sh.pixels), sh.pixels, limit, 1, step)


def f64_conv(x, w, sh: ConvShape):
    return np.einsum("pk,ok->po", im2col(x.astype(np.float64), sh.kh, sh.kw, sh.stride, sh.padding),
                     w.reshape(sh.c_out, -1).astype(np.float64)).reshape(sh.y_shape)


def _case(rng, fmt):
    k = int(rng.choice([1, 3]))
    stride, padding = int(rng.choice([1, 2])), int(rng.choice([0, 1]))
    h = int(rng.choice([3, 5, 7])) + (k == 3 and padding == 0)
    w = int(rng.choice([3, 4, 5]))
    w = max(w, k - 2 * padding)
    sh = ConvShape(int(rng.integers(1, 3)), h, w, int(rng.choice([1, 3, 8])), int(rng.choice([4, 6, 8, 16])), k, k,
                   stride, padding)
    x = numerics.quantize(rng.standard_normal(sh.x_shape), fmt)
    wt = rng.standard_normal(sh.w_shape).astype(np.float32)
    dy = numerics.quantize(rng.standard_normal(sh.y_shape), fmt)
    return sh, x, wt, dy


def _masks(w, nm, bp_mask):
    """FF mask (along K of the C_out x K view) and BP weights/mask (along C_out) as BDWP defines them."""
    co = w.shape[0]
    w2 = w.reshape(co, -1)
    mff = nm_mask(w2, *nm, axis=1)
    wff = np.where(mff, w2, 0).astype(np.float32)
    base = wff if bp_mask == "nested" else w2
    mbp = nm_mask(base, *nm, axis=0)
    wbp = np.where(mbp, base, 0).astype(np.float32)
    return (wff.reshape(w.shape), mff.reshape(w.shape), wbp.reshape(w.shape), mbp.reshape(w.shape))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("nm", NM_SET)
@pytest.mark.parametrize("bp_mask", ["independent", "nested"])
def test_conv_passes_equal_direct_chains(fmt, nm, bp_mask):
    """FF, BP (sparse, both BP-mask variants) and WU on random geometries, bit for bit, with and without K chunks;
    and within the FP32 rounding bound of a float64 reference."""
    rng = np.random.default_rng(hash((fmt, nm, bp_mask)) % 2**32)
    for trial in range(3):
        sh, x, w, dy = _case(rng, fmt)
        n, m = nm
        wff, mff, wbp, mbp = _masks(w, nm, bp_mask)
        wq_ff, wq_bp = numerics.quantize(wff, fmt), numerics.quantize(wbp, fmt)
        limit = None if trial == 0 else int(rng.integers(m, 3 * m)) // m * m     # chunks on group boundaries
        backend = GoldenBackend(k_limit=limit)
        # FF sparse along K
        y = conv_ff(x, ff_operand(wff, sh, fmt, nm, mff), sh, fmt, backend)
        np.testing.assert_array_equal(_bits(y), _bits(ref_ff(x, wq_ff, mff, sh, fmt, limit, m)))
        err = np.abs(y - f64_conv(x, wq_ff, sh))
        bound = sh.k * 2.0**-23 * f64_conv(np.abs(x), np.abs(wq_ff), sh) + 1e-30
        assert np.all(err <= bound), (sh, float(np.max(err / bound)))
        # BP sparse along C_out: a transposed convolution over the kept co of every tap
        dx = conv_bp(dy, bp_operand(wbp, sh, fmt, nm, mbp), sh, fmt, backend)
        np.testing.assert_array_equal(_bits(dx), _bits(ref_bp(dy, wq_bp, mbp, sh, fmt, limit, m)))
        # WU dense over (b, oh, ow)
        lim_wu = None if trial == 0 else int(rng.integers(1, 9))
        dw = conv_wu(dy, x, sh, fmt, GoldenBackend(k_limit=lim_wu))
        np.testing.assert_array_equal(_bits(dw), _bits(ref_wu(dy, x, sh, fmt, lim_wu)))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_dense_passes_and_wu_chunks(fmt):
    """Dense FF/BP/WU (and WU split over (b, oh, ow) into chunks) on stride 2 / padding 1 / odd sizes."""
    rng = np.random.default_rng(3 if fmt == "fp16" else 4)
    for trial in range(6):
        sh, x, w, dy = _case(rng, fmt)
        wq = numerics.quantize(w, fmt)
        limit = None if trial % 2 == 0 else int(rng.integers(1, 7))
        g = GoldenBackend(k_limit=limit)
        np.testing.assert_array_equal(_bits(conv_ff(x, ff_operand(w, sh, fmt), sh, fmt, g)),
                                      _bits(ref_ff(x, wq, None, sh, fmt, limit)))
        np.testing.assert_array_equal(_bits(conv_bp(dy, bp_operand(w, sh, fmt), sh, fmt, g)),
                                      _bits(ref_bp(dy, wq, None, sh, fmt, limit)))
        dw = conv_wu(dy, x, sh, fmt, g)
        np.testing.assert_array_equal(_bits(dw), _bits(ref_wu(dy, x, sh, fmt, limit)))
        exact = np.einsum("po,pk->ok", dy.reshape(sh.pixels, -1).astype(np.float64),
                          im2col(x.astype(np.float64), sh.kh, sh.kw, sh.stride, sh.padding))
        mag = np.einsum("po,pk->ok", np.abs(dy.reshape(sh.pixels, -1)).astype(np.float64),
                        np.abs(im2col(x, sh.kh, sh.kw, sh.stride, sh.padding)).astype(np.float64))
        assert np.all(np.abs(dw.reshape(sh.c_out, -1) - exact) <= sh.pixels * 2.0**-23 * mag + 1e-30)


def test_bp_is_the_adjoint_of_ff():
    """<conv(x, W), dY> = <x, conv_bp(dY, W)> exactly on small integers (the transposed convolution), for
    stride 2, padding 1 and a ragged C_out padded per tap for 2:8."""
    rng = np.random.default_rng(5)
    sh = ConvShape(2, 7, 6, 3, 6, 3, 3, 2, 1)
    x = rng.integers(-3, 4, sh.x_shape).astype(np.float32)
    w = rng.integers(-3, 4, sh.w_shape).astype(np.float32)
    dy = rng.integers(-3, 4, sh.y_shape).astype(np.float32)
    y = conv_ff(x, ff_operand(w, sh, "fp16"), sh, "fp16")
    dx = conv_bp(dy, bp_operand(w, sh, "fp16"), sh, "fp16")
    assert np.sum(y.astype(np.float64) * dy) == np.sum(x.astype(np.float64) * dx)
    assert sh.co_pad(8) == 8 and bp_lower(dy, sh, 8).shape == (2 * 7 * 6, 9 * 8)
    dx8 = conv_bp(dy, bp_operand(w, sh, "fp16", (8, 8)), sh, "fp16")       # 8:8 keeps all: same values
    np.testing.assert_array_equal(dx8, dx)


def test_linear_is_the_one_by_one_case():
    """A linear layer's passes are the plain GEMMs (lowerings are the identity; C_out is not padded)."""
    rng = np.random.default_rng(6)
    sh = ConvShape.linear(5, 20, 10)
    x = numerics.quantize(rng.standard_normal((5, 20)), "fp16")
    w = rng.standard_normal((10, 20)).astype(np.float32)
    dy = numerics.quantize(rng.standard_normal((5, 10)), "fp16")
    wq = numerics.quantize(w, "fp16")
    np.testing.assert_array_equal(conv_ff(x.reshape(sh.x_shape), ff_operand(w, sh, "fp16"), sh, "fp16")
                                  .reshape(5, 10), numerics.matmul(x, wq.T, "fp16"))
    op = bp_operand(w, sh, "fp16", (2, 8))
    assert op.k == 10 and sh.co_pad(8) == 10
    np.testing.assert_array_equal(conv_bp(dy.reshape(sh.y_shape), op, sh, "fp16").reshape(5, 20),
                                  numerics.matmul(dy, numerics.quantize(np.where(nm_mask(w, 2, 8, 0), w, 0),
                                                                        "fp16"), "fp16"))
    np.testing.assert_array_equal(conv_wu(dy.reshape(sh.y_shape), x.reshape(sh.x_shape), sh, "fp16")
                                  .reshape(10, 20), numerics.matmul(dy.T, x, "fp16"))


def test_conv_pass_prefers_the_backend_entry_point_and_validates():
    calls = []

    class WithConv(GoldenBackend):
        def conv(self, pass_, a, b, shape, fmt):
            calls.append(pass_)
            return conv_pass(GoldenBackend(), pass_, a, b, shape, fmt)

    sh = ConvShape(1, 4, 4, 2, 4, 3, 3, 1, 1)
    x = np.ones(sh.x_shape, np.float32)
    y = conv_pass(WithConv(), "ff", x, ff_operand(np.ones(sh.w_shape), sh, "fp16"), sh, "fp16")
    assert calls == ["ff"] and y[0, 1, 1, 0] == 18.0 and y[0, 0, 0, 0] == 8.0
    with pytest.raises(ValueError, match="one of"):
        conv_pass(None, "xx", x, x, sh, "fp16")
    with pytest.raises(ValueError, match="X has shape"):
        conv_ff(x[:, :3], ff_operand(np.ones(sh.w_shape), sh, "fp16"), sh, "fp16")
    with pytest.raises(ValueError, match="does not fit"):
        ConvShape(1, 2, 2, 1, 1, 5, 5)
    with pytest.raises(ValueError, match="stride must be an integer"):
        ConvShape(1, 4, 4, 1, 1, 3, 3, 0)


def test_fast_backend_is_close_but_not_the_contract():
    """Float32Backend (accuracy sweeps only) sums in BLAS order: within the FP32 bound of float64, not bit-exact."""
    from sat.sw.bdwp import Float32Backend

    rng = np.random.default_rng(8)
    sh = ConvShape(2, 7, 7, 16, 16, 3, 3, 1, 1)
    x = numerics.quantize(rng.standard_normal(sh.x_shape), "fp16")
    w = numerics.quantize(rng.standard_normal(sh.w_shape), "fp16")
    fast = conv_ff(x, ff_operand(w, sh, "fp16"), sh, "fp16", Float32Backend())
    bound = sh.k * 2.0**-23 * f64_conv(np.abs(x), np.abs(w), sh) + 1e-30
    assert np.all(np.abs(fast - f64_conv(x, w, sh)) <= bound)
