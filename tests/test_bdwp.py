"""BDWP golden model: masks, FF/BP/WU lowering of linear and conv layers, policies, SR-STE, loss scaling.

References are independent of the code under test: masks from a stable argsort, layers from float64 einsum /
direct convolution loops, input and weight gradients from finite differences of float64 functions.
"""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw import numerics
from sat.sw.bdwp import (
    SGD,
    BDWPSettings,
    Conv2d,
    Flatten,
    GemmBackend,
    GoldenBackend,
    Linear,
    LossScaler,
    Sequential,
    bp_weights,
    col2im,
    ff_weights,
    get_backend,
    im2col,
    nm_mask,
    parse_nm,
    pass_is_sparse,
    prune,
    softmax_cross_entropy,
)
from sat.sw.numerics import result_values

NMS = [(2, 4), (2, 8), (1, 8)]


def ref_mask(w: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Independent N:M mask: stable argsort of -|w| per zero-padded group (equal magnitudes: lower index first)."""
    moved = np.moveaxis(np.abs(np.asarray(w, np.float64)), axis, -1)
    length = moved.shape[-1]
    pad = -length % m
    padded = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,))], axis=-1)
    flat = padded.reshape(-1, m)
    keep = np.zeros(flat.shape, bool)
    for r, group in enumerate(flat):
        keep[r, np.argsort(-group, kind="stable")[:n]] = True
    keep = keep.reshape(padded.shape)[..., :length]
    return np.moveaxis(keep, -1, axis)


def grid_values(rng: np.random.Generator, shape: tuple[int, ...], lo: int = -8, hi: int = 8) -> np.ndarray:
    """Multiples of 1/4 in [lo/4, hi/4]: exact in FP16 and BF16, with many magnitude ties."""
    return (rng.integers(lo, hi + 1, shape) / 4.0).astype(np.float32)


class RecordingBackend:
    """Golden backend that records every GEMM (kind and the dense view of the weight operand)."""

    def __init__(self) -> None:
        self.golden = GoldenBackend()
        self.calls: list[tuple[str, tuple[int, ...], np.ndarray]] = []

    def dense(self, a, b, fmt):
        self.calls.append(("dense", a.shape, np.array(b)))
        return self.golden.dense(a, b, fmt)

    def sparse(self, a, b, fmt):
        self.calls.append(("sparse", a.shape, b.to_dense()))
        return self.golden.sparse(a, b, fmt)


# --------------------------------------------------------------------------------------------- masks

@pytest.mark.parametrize("n,m", NMS)
@pytest.mark.parametrize("axis", [0, 1])
def test_masks_along_k_and_cout_match_reference_with_ties(n, m, axis):
    rng = np.random.default_rng(n * 10 + m + axis)
    w = grid_values(rng, (20, 24), -3, 3)  # magnitudes 0..0.75 in 4 levels: ties everywhere; 20 is ragged for M=8
    mask = nm_mask(w, n, m, axis=axis)
    np.testing.assert_array_equal(mask, ref_mask(w, n, m, axis))
    counts = np.add.reduceat(mask.astype(int), np.arange(0, w.shape[axis], m), axis=axis)
    assert counts.max() <= n
    np.testing.assert_array_equal(ff_weights(w, (n, m)), prune(w, n, m, axis=1))


@pytest.mark.parametrize("layout", ["C", "F", "transposed_view", "3d"])
def test_mask_does_not_depend_on_memory_layout(layout):
    """nm_mask takes a different path for groups along the innermost axis and along an outer one: both equal
    the reference for every axis, whatever the memory layout."""
    rng = np.random.default_rng(5)
    w = grid_values(rng, (3, 20, 12) if layout == "3d" else (20, 12), -3, 3)
    if layout == "F":
        w = np.asfortranarray(w)
    elif layout == "transposed_view":
        w = np.ascontiguousarray(w.T).T
    for axis in range(-w.ndim, w.ndim):
        flat = np.moveaxis(w, axis, -1)
        ref = np.moveaxis(ref_mask(flat.reshape(-1, flat.shape[-1]), 2, 8, 1).reshape(flat.shape), -1, axis)
        np.testing.assert_array_equal(nm_mask(w, 2, 8, axis=axis), ref, err_msg=f"{layout} axis {axis}")


def test_nested_and_independent_bp_weights_are_defined_as_specified():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    nm = (2, 8)
    w_ff = ff_weights(w, nm)
    ind = bp_weights(w, w_ff, nm, "independent")
    nest = bp_weights(w, w_ff, nm, "nested")
    np.testing.assert_array_equal(ind, np.where(ref_mask(w, 2, 8, 0), w, 0))
    np.testing.assert_array_equal(nest, np.where(ref_mask(w_ff, 2, 8, 0), w_ff, 0))
    assert not np.array_equal(ind, nest)  # they differ on random weights
    assert np.all(nest[nest != 0] == w_ff[nest != 0])  # nested keeps only weights that survived FF pruning
    assert (ind != 0).sum() == 16 // 8 * 2 * 32  # independent: exactly N per group along C_out
    assert (nest != 0).sum() < (ind != 0).sum()  # nested groups can have fewer than N nonzeros
    with pytest.raises(ValueError, match="bp_mask"):
        bp_weights(w, w_ff, nm, "sideways")


# --------------------------------------------------------------------------------------------- linear

def _linear_reference(x, w, b, dy, nm, bp_mask, act_fmt="fp32"):
    x64, w64, dy64 = (np.asarray(v, np.float64) for v in (x, w, dy))
    if nm is None:
        w_ff, w_bp = w64, w64
    else:
        w_ff = np.where(ref_mask(w64, *nm, axis=1), w64, 0)
        base = w_ff if bp_mask == "nested" else w64
        w_bp = np.where(ref_mask(base, *nm, axis=0), base, 0)
    # an exact FP32 chain result rounded once to the operand format (narrow results), the bias added after
    y = result_values(np.einsum("rk,ok->ro", x64, w_ff).astype(np.float32), act_fmt) + b
    dx = result_values(np.einsum("ro,ok->rk", dy64, w_bp).astype(np.float32), act_fmt)
    dw = np.einsum("ro,rk->ok", dy64, x64)
    return y, dx, dw


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("nm", [None, *NMS])
@pytest.mark.parametrize("bp_mask", ["independent", "nested"])
def test_linear_ff_bp_wu_exact_on_representable_data(fmt, nm, bp_mask, narrow):
    """On grid data every operand is exact in FP16/BF16 and every partial sum is exact in FP32
    (|sum| < 2**10 on a 1/16 grid needs < 15 bits), so golden FF/BP/WU must equal float64 exactly; with narrow
    results, FF and BP equal the float64 result rounded once to the operand format (WU stays FP32)."""
    rng = np.random.default_rng(7)
    layer = Linear(32, 16, name="fc", rng=rng)
    layer.weight[:] = grid_values(rng, layer.weight.shape)
    layer.bias[:] = grid_values(rng, layer.bias.shape)
    x = grid_values(rng, (5, 32))
    dy = grid_values(rng, (5, 16))
    s = BDWPSettings(nm, fmt, bp_mask, narrow=narrow)
    y = layer.forward(x, s)
    dx = layer.backward(dy, s)
    y_ref, dx_ref, dw_ref = _linear_reference(x, layer.weight, layer.bias, dy, nm, bp_mask, s.act_fmt)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(layer.grad_weight, dw_ref)
    np.testing.assert_array_equal(layer.grad_bias, dy.sum(axis=0))
    assert y.dtype == dx.dtype == layer.grad_weight.dtype == np.float32


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("nm", [None, (2, 8)])
def test_linear_random_data_within_rounding_bound(fmt, nm):
    """|golden - float64| <= ((1+u)^2 (1+g_K) - 1) * sum|x||w|: operand rounding u (2^-11 FP16, 2^-8 BF16)
    on each factor, exact products, and K sequential FP32 adds (g_K = K 2^-24 / (1 - K 2^-24))."""
    rng = np.random.default_rng(11)

    def draw(shape):  # magnitudes in [0.1, 2]: no subnormals, no overflow
        return (rng.uniform(0.1, 2.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)

    k = 64
    layer = Linear(k, 24, name="fc", bias=False, rng=rng)
    layer.weight[:] = draw(layer.weight.shape)
    x, dy = draw((9, k)), draw((9, 24))
    s = BDWPSettings(nm, fmt)
    y = layer.forward(x, s)
    dx = layer.backward(dy, s)
    y_ref, dx_ref, dw_ref = _linear_reference(x, layer.weight, 0.0, dy, nm, "independent")
    u = 2.0**-11 if fmt == "fp16" else 2.0**-8
    w64 = np.asarray(layer.weight, np.float64)
    w_ff = w64 if nm is None else np.where(ref_mask(w64, *nm, axis=1), w64, 0)
    w_bp = w64 if nm is None else np.where(ref_mask(w64, *nm, axis=0), w64, 0)
    for got, ref, mag, length in [
        (y, y_ref, np.abs(x) @ np.abs(w_ff).T, k),
        (dx, dx_ref, np.abs(dy) @ np.abs(w_bp), 24),
        (layer.grad_weight, dw_ref, np.abs(dy).T @ np.abs(x), 9),
    ]:
        g = length * 2.0**-24 / (1 - length * 2.0**-24)
        bound = ((1 + u) ** 2 * (1 + g) - 1) * mag
        assert np.all(np.abs(got - ref) <= bound)
        assert np.abs(got - ref).max() > 0  # the data is not exact: the bound is exercised


# --------------------------------------------------------------------------------------------- conv

def direct_conv(x: np.ndarray, kernel: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """float64 NHWC convolution by explicit loops over output pixels (no im2col)."""
    b, h, w, _ = x.shape
    c_out, kh, kw, _ = kernel.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    out = np.zeros((b, oh, ow, c_out))
    for r in range(oh):
        for c in range(ow):
            patch = xp[:, r * stride:r * stride + kh, c * stride:c * stride + kw, :]
            out[:, r, c, :] = np.einsum("bijc,oijc->bo", patch, kernel)
    return out


def test_im2col_column_order_is_kh_kw_cin_with_cin_fastest():
    x = np.arange(1 * 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    cols = im2col(x, 3, 3, stride=1, padding=1)
    assert cols.shape == (16, 27)
    oh, ow = 2, 1  # output pixel (2, 1) -> row 2*4+1
    for i in range(3):
        for j in range(3):
            for c in range(3):
                r, q = oh - 1 + i, ow - 1 + j
                expect = x[0, r, q, c] if 0 <= r < 4 and 0 <= q < 4 else 0.0
                assert cols[2 * 4 + 1, (i * 3 + j) * 3 + c] == expect


def test_col2im_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(5)
    x = rng.integers(-4, 5, (2, 7, 6, 3)).astype(np.float64)
    cols = im2col(x, 3, 3, stride=2, padding=1)
    g = rng.integers(-4, 5, cols.shape).astype(np.float32)
    back = col2im(g, x.shape, 3, 3, stride=2, padding=1)
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.sum(cols * g) == np.sum(x * back)  # <im2col x, g> = <x, col2im g>, exact on integers
    with pytest.raises(ValueError, match="do not match"):
        col2im(g[:-1], x.shape, 3, 3, stride=2, padding=1)


@pytest.mark.parametrize("nm,bp_mask", [(None, "independent"), ((2, 8), "independent"), ((2, 4), "nested"),
                                        ((1, 8), "independent")])
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_conv_ff_bp_wu_against_direct_conv_and_finite_differences(nm, bp_mask, fmt):
    """FF equals a direct float64 convolution with W_ff; dX and dW equal finite differences of the linear
    functionals L(x) = <G, conv(x, W_bp)> and L(W) = <G, conv(x, W)> (unit steps are exact for linear maps
    on grid data, and so is the golden arithmetic); FF and BP results are narrow (the exact value rounded once to
    the operand format), WU results FP32."""
    rng = np.random.default_rng(17)
    stride, padding = 2, 1
    layer = Conv2d(8, 8, 3, stride=stride, padding=padding, name="conv", bias=False, rng=rng)
    layer.weight[:] = grid_values(rng, layer.weight.shape)
    x = grid_values(rng, (2, 5, 5, 8))
    g = grid_values(rng, (2, 3, 3, 8))
    s = BDWPSettings(nm, fmt, bp_mask)
    assert layer.ff_sparse(nm) == layer.bp_sparse(nm) == (nm is not None)  # K=72, C_out=8
    y = layer.forward(x, s)
    dx = layer.backward(g, s)
    kernel = np.asarray(layer.kernel, np.float64)
    if nm is None:
        k_ff = k_bp = kernel
    else:
        w2 = kernel.reshape(8, -1)
        w_ff = np.where(ref_mask(w2, *nm, axis=1), w2, 0)
        base = w_ff if bp_mask == "nested" else w2
        k_ff = w_ff.reshape(kernel.shape)
        k_bp = np.where(ref_mask(base, *nm, axis=0), base, 0).reshape(kernel.shape)
    np.testing.assert_array_equal(y, result_values(direct_conv(x, k_ff, stride, padding).astype(np.float32),
                                                   s.act_fmt))

    def fd(f, v):
        base_val, out = f(v), np.zeros(v.shape)
        for idx in np.ndindex(v.shape):
            e = v.astype(np.float64).copy()
            e[idx] += 1.0
            out[idx] = f(e) - base_val
        return out

    dx_fd = fd(lambda xv: np.sum(g * direct_conv(xv, k_bp, stride, padding)), x)
    np.testing.assert_array_equal(dx, result_values(dx_fd.astype(np.float32), s.act_fmt))
    dw_fd = fd(lambda kv: np.sum(g * direct_conv(x, kv, stride, padding)), kernel)
    np.testing.assert_array_equal(layer.grad_weight, dw_fd.reshape(8, -1))


# --------------------------------------------------------------------------------------------- policy

def test_auto_policy_rule():
    assert pass_is_sparse("auto", 64, (2, 8))
    assert not pass_is_sparse("auto", 10, (2, 8))  # classifier C_out=10: ragged
    assert not pass_is_sparse("auto", 27, (2, 4))  # first conv, 3 input channels: K = 27
    assert not pass_is_sparse("auto", 4, (2, 8))  # shorter than M
    assert not pass_is_sparse("auto", 64, (4, 4))  # N = M saves nothing
    assert not pass_is_sparse("auto", 64, None)  # dense training
    assert pass_is_sparse("sparse", 10, (2, 8))  # forced: the ragged group is zero-padded
    assert not pass_is_sparse("dense", 64, (2, 8))
    with pytest.raises(ValueError, match="pass policy"):
        pass_is_sparse("maybe", 64, (2, 8))


def _cnn(rng):
    return Sequential([Conv2d(3, 16, 3, padding=1, relu=True, name="conv1", rng=rng),
                       Conv2d(16, 16, 3, stride=2, padding=1, relu=True, name="conv2", rng=rng),
                       Flatten(), Linear(4 * 4 * 16, 10, name="fc", rng=rng)])


def test_dense_policy_decides_which_gemms_run_sparse():
    rng = np.random.default_rng(0)
    net = _cnn(rng)
    modes = net.pass_modes((2, 8))
    assert modes == {"conv1": {"ff": "dense", "bp": "skipped", "wu": "dense"},
                     "conv2": {"ff": "sparse", "bp": "sparse", "wu": "dense"},
                     "fc": {"ff": "sparse", "bp": "dense", "wu": "dense"}}
    net.set_policy("conv1", ff="sparse")
    net.set_policy("fc", bp="sparse")
    net.set_policy("conv2", ff="dense")
    rec = RecordingBackend()
    s = BDWPSettings((2, 8), "bf16", backend=rec)
    x = rng.random((2, 8, 8, 3)).astype(np.float32)
    w_fc = net.layer("fc").weight.copy()  # train_step updates it after BP
    net.train_step(x, np.array([1, 2]), s, SGD(), LossScaler.for_format("bf16"))
    kinds = [kind for kind, _, _ in rec.calls]
    # FF conv1, conv2, fc; then fc WU, BP; conv2 WU, BP; conv1 WU (no BP for the first layer)
    assert kinds == ["sparse", "dense", "sparse", "dense", "sparse", "dense", "sparse", "dense"]
    w_fc_bp = rec.calls[4][2]  # fc BP operand W_bp (10 x 256), forced sparse along C_out (padded to 16)
    assert w_fc_bp.shape == (10, 256)
    np.testing.assert_array_equal(w_fc_bp != 0, ref_mask(w_fc, 2, 8, axis=0))
    with pytest.raises(ValueError, match="pass policy"):
        net.set_policy("fc", ff="half")
    with pytest.raises(KeyError, match="no layer named"):
        net.set_policy("fc9", ff="dense")


def test_sparse_operands_handed_to_backend_are_the_bdwp_weights():
    rng = np.random.default_rng(1)
    net = Sequential([Linear(16, 32, relu=True, name="a", rng=rng), Linear(32, 16, name="b", rng=rng)])
    for bp_mask in ("independent", "nested"):
        rec = RecordingBackend()
        s = BDWPSettings((2, 4), "fp16", bp_mask, backend=rec)
        w = net.layer("b").weight.copy()
        net.forward(rng.random((3, 16)).astype(np.float32), s)
        net.backward(rng.random((3, 16)).astype(np.float32), s)
        ff_op = rec.calls[1][2]  # (K x C_out) = W_ff^T
        bp_op = rec.calls[3][2]  # (C_out x K) = W_bp
        w_ff = np.where(ref_mask(w, 2, 4, 1), w, 0)
        base = w_ff if bp_mask == "nested" else w
        np.testing.assert_array_equal(ff_op, numerics.quantize(w_ff, "fp16").T)
        np.testing.assert_array_equal(bp_op, numerics.quantize(np.where(ref_mask(base, 2, 4, 0), base, 0),
                                                               "fp16"))


# --------------------------------------------------------------------------------------------- update

def test_sgd_momentum_and_sr_ste_term():
    rng = np.random.default_rng(2)
    layer = Linear(16, 8, name="fc", rng=rng)
    s = BDWPSettings((2, 8), "bf16")
    layer.forward(rng.random((4, 16)).astype(np.float32), s)
    layer.backward(rng.random((4, 8)).astype(np.float32), s)
    w0 = layer.weight.astype(np.float64)
    mask = ref_mask(w0, 2, 8, axis=1)
    np.testing.assert_array_equal(layer.mask_ff, mask)
    lam, wd, lr, mu, inv = 0.25, 0.01, 0.5, 0.9, 0.5
    opt = SGD(lr=lr, momentum=mu, weight_decay=wd, lambda_w=lam)
    g1 = layer.grad_weight * inv + lam * (~mask) * w0 + wd * w0
    opt.step([layer], inv_scale=inv)
    np.testing.assert_allclose(layer.weight, w0 - lr * g1, rtol=1e-6, atol=1e-7)
    assert np.all(layer.weight[mask] - (w0 - lr * (layer.grad_weight * inv + wd * w0))[mask] < 1e-6)
    w1 = layer.weight.astype(np.float64)
    g2 = layer.grad_weight * inv + lam * (~mask) * w1 + wd * w1
    opt.step([layer], inv_scale=inv)
    np.testing.assert_allclose(layer.weight, w1 - lr * (mu * g1 + g2), rtol=1e-6, atol=1e-7)


def test_sr_ste_pulls_pruned_weights_toward_zero_and_is_off_for_dense_layers():
    rng = np.random.default_rng(4)
    layer = Linear(8, 4, name="fc", rng=rng)
    layer.grad_weight = np.zeros_like(layer.weight)
    layer.grad_bias = np.zeros_like(layer.bias)
    layer.mask_ff = ref_mask(layer.weight, 1, 8, axis=1)
    w0 = layer.weight.copy()
    SGD(lr=1.0, momentum=0.0, lambda_w=0.5).step([layer])
    np.testing.assert_array_equal(layer.weight[layer.mask_ff], w0[layer.mask_ff])  # kept: untouched
    np.testing.assert_allclose(layer.weight[~layer.mask_ff], 0.5 * w0[~layer.mask_ff])  # pruned: decayed
    layer.mask_ff = None  # a dense FF pass: no SR-STE term
    w1 = layer.weight.copy()
    SGD(lr=1.0, momentum=0.0, lambda_w=0.5).step([layer])
    np.testing.assert_array_equal(layer.weight, w1)


def test_masks_are_recomputed_from_updated_weights():
    rng = np.random.default_rng(6)
    net = Sequential([Linear(16, 16, relu=True, name="a", rng=rng), Linear(16, 10, name="b", rng=rng)])
    s = BDWPSettings((1, 8), "bf16")
    opt, scaler = SGD(lr=0.5), LossScaler.for_format("bf16")
    x, y = rng.random((32, 16)).astype(np.float32), rng.integers(0, 10, 32)
    layer = net.layer("a")
    seen = set()
    for _ in range(8):
        w_before = layer.weight.copy()
        net.train_step(x, y, s, opt, scaler)
        np.testing.assert_array_equal(layer.mask_ff, ref_mask(w_before, 1, 8, 1))
        seen.add(layer.mask_ff.tobytes())
    assert len(seen) > 1  # with a large learning rate the selection changes between iterations


# --------------------------------------------------------------------------------------------- loss scaling

def test_dynamic_loss_scaler_halves_on_overflow_and_grows_after_window():
    sc = LossScaler(1024.0, growth_interval=3)
    assert sc.update(True) and sc.update(True)
    assert sc.scale == 1024.0
    assert sc.update(True) and sc.scale == 2048.0  # third good step in a row: grow
    assert not sc.update(False)  # overflow: skip and halve
    assert sc.scale == 1024.0 and sc.skipped == 1 and sc.good_steps == 0
    for _ in range(2):
        sc.update(True)
    assert sc.scale == 1024.0  # the window restarted after the overflow
    static = LossScaler(128.0, dynamic=False)
    assert not static.update(False) and static.scale == 128.0 and static.skipped == 1
    assert LossScaler.for_format("bf16").scale == 1.0 and not LossScaler.for_format("bf16").dynamic
    assert LossScaler.for_format("fp16", 64).scale == 64.0
    with pytest.raises(ValueError, match="positive"):
        LossScaler(0.0)


def test_fp16_overflow_skips_the_step_and_halves_the_scale():
    rng = np.random.default_rng(8)
    net = Sequential([Linear(16, 16, relu=True, name="a", rng=rng), Linear(16, 10, name="b", rng=rng)])
    s = BDWPSettings((2, 8), "fp16")
    x, y = rng.random((4, 16)).astype(np.float32), rng.integers(0, 10, 4)
    opt = SGD(lr=0.1)
    scaler = LossScaler(2.0**30)  # |dlogits| <= 1/4, times 2^30 is far above FP16's 65504: Inf operands
    before = [layer.weight.copy() for layer in net.gemm_layers]
    out = net.train_step(x, y, s, opt, scaler)
    assert not out["applied"] and out["scale"] == 2.0**30
    assert scaler.scale == 2.0**29 and scaler.skipped == 1
    for layer, w in zip(net.gemm_layers, before, strict=True):
        np.testing.assert_array_equal(layer.weight, w)
    scaler.scale = 2.0**10
    out = net.train_step(x, y, s, opt, scaler)
    assert out["applied"]
    assert not np.array_equal(net.layer("a").weight, before[0])


def test_loss_scaling_rescues_small_fp16_gradients():
    """Gradients below FP16's range (under half its smallest subnormal, 2^-25) vanish unscaled; with a 2^12
    scale they survive and the unscaled weight gradient matches the BF16 (wide exponent) gradient to FP16
    precision. Gradients in FP16's subnormal range survive even unscaled (gradual underflow)."""
    rng = np.random.default_rng(9)
    layer = Linear(8, 4, name="fc", bias=False, rng=rng)
    x = rng.uniform(0.5, 1.0, (2, 8)).astype(np.float32)
    s16, sb = BDWPSettings(None, "fp16"), BDWPSettings(None, "bf16")

    def grad(dy, settings):
        layer.forward(x, settings)
        layer.backward(dy, settings)
        return layer.grad_weight.copy()

    tiny = np.full((2, 4), 2.0**-26, np.float32)    # rounds to zero in FP16
    assert not grad(tiny, s16).any()
    scaled = grad(tiny * np.float32(2.0**12), s16) / np.float32(2.0**12)
    np.testing.assert_allclose(scaled, grad(tiny, sb), rtol=2 * 2.0**-8)
    sub = np.full((2, 4), 2.0**-20, np.float32)     # an FP16 subnormal, kept
    np.testing.assert_allclose(grad(sub, s16), grad(sub, sb), rtol=2 * 2.0**-8)


# --------------------------------------------------------------------------------------------- misc

def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3])
    loss, grad = softmax_cross_entropy(logits, labels)

    def f(z):
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(4), labels])

    z64 = logits.astype(np.float64)
    assert abs(loss - f(z64)) < 1e-6
    fd = np.zeros_like(z64)
    for idx in np.ndindex(z64.shape):
        e = np.zeros_like(z64)
        e[idx] = 1e-6
        fd[idx] = (f(z64 + e) - f(z64 - e)) / 2e-6
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    with pytest.raises(ValueError, match="labels must lie"):
        softmax_cross_entropy(logits, np.array([0, 1, 2, 10]))


def test_backend_protocol_and_registry():
    assert isinstance(GoldenBackend(), GemmBackend)
    assert isinstance(RecordingBackend(), GemmBackend)
    assert isinstance(get_backend("golden"), GoldenBackend)
    with pytest.raises(ValueError, match="unknown GEMM backend"):
        get_backend("warp-drive")
    with pytest.raises(ValueError, match="backend must provide"):
        BDWPSettings((2, 8), "fp16", backend=object())


def test_settings_and_nm_parsing_validate():
    assert parse_nm("2:8") == (2, 8) and parse_nm("dense") is None
    for bad in ("2:6", "9:8", "two:eight", "2-8"):
        with pytest.raises(ValueError):
            parse_nm(bad)
    with pytest.raises(ValueError, match="bp_mask"):
        BDWPSettings((2, 8), "fp16", "both")
    with pytest.raises(ValueError, match="operand format"):
        BDWPSettings((2, 8), "fp8")
    with pytest.raises(RuntimeError, match="forward"):
        Linear(4, 4, name="x").backward(np.zeros((1, 4), np.float32), BDWPSettings())
