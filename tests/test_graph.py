"""Host layers (``sat.sw.hostops``) against finite differences, and the graph model (``sat.sw.graph``): fan-out
gradients add up, the first layer's BP is never issued, eval mode uses the running statistics."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw.bdwp import BDWPSettings, Conv2d
from sat.sw.graph import Graph
from sat.sw.hostops import Add, BatchNorm, GlobalAvgPool, MaxPool, ReLU
from sat.sw.network import NetworkBuilder

S = BDWPSettings(None, "fp16")


def _fd(f, x: np.ndarray, eps: float = 1e-2) -> np.ndarray:
    """Central differences of a scalar function of a float32 array, evaluated in float64."""
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        e = np.zeros(x.shape, np.float32)
        e[idx] = eps
        out[idx] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def test_batchnorm_train_gradients_and_running_statistics():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 2, 4)).astype(np.float32) * 2 + 1
    g = rng.standard_normal(x.shape).astype(np.float32)
    bn = BatchNorm(4, momentum=0.5)
    bn.weight[:] = [1.0, 2.0, 0.5, -1.0]
    bn.bias[:] = [0.0, 1.0, -1.0, 0.5]
    y = bn.forward(x, S)
    flat = x.reshape(-1, 4).astype(np.float64)
    ref = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5) * bn.weight + bn.bias
    np.testing.assert_allclose(y.reshape(-1, 4), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * flat.var(0, ddof=1), rtol=1e-5)
    dx = bn.backward(g, S)

    def loss(xv):
        b2 = BatchNorm(4)
        b2.weight[:], b2.bias[:] = bn.weight, bn.bias
        return float(np.sum(g.astype(np.float64) * b2.forward(xv, S)))

    np.testing.assert_allclose(dx, _fd(loss, x), rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(bn.grad_bias, g.reshape(-1, 4).sum(0), rtol=1e-5)
    np.testing.assert_allclose(bn.grad_weight, (g.reshape(-1, 4) * (ref - bn.bias) / bn.weight).sum(0),
                               rtol=1e-4, atol=1e-4)
    # eval mode: the running statistics, not the batch's
    y_eval = bn.forward(x, S, train=False)
    want = (flat - bn.running_mean) / np.sqrt(bn.running_var + 1e-5) * bn.weight + bn.bias
    np.testing.assert_allclose(y_eval.reshape(-1, 4), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        bn.forward(x[..., :3], S)


def test_pooling_relu_add_gradients():
    rng = np.random.default_rng(1)
    x = (rng.permutation(2 * 5 * 5 * 3).reshape(2, 5, 5, 3) * 0.1 - 7).astype(np.float32)   # no near-ties (kinks)
    for pool in (MaxPool(2), MaxPool(3, 2, 1), GlobalAvgPool()):
        y = pool.forward(x, S)
        g = rng.standard_normal(y.shape).astype(np.float32)
        dx = pool.backward(g, S)
        np.testing.assert_allclose(dx, _fd(lambda v, p=pool, g=g: float(np.sum(g * p.forward(v, S, False))), x),
                                   rtol=1e-3, atol=1e-3)
    mp = MaxPool(3, 2, 1)
    y = mp.forward(x, S)
    assert y.shape == (2, 3, 3, 3) and y[0, 0, 0, 0] == x[0, :2, :2, 0].max()       # padding never wins
    r = ReLU()
    np.testing.assert_array_equal(r.forward(x, S), np.maximum(x, 0))
    np.testing.assert_array_equal(r.backward(np.ones_like(x), S), (x > 0).astype(np.float32))
    a = Add()
    assert np.array_equal(a.forward(x, 2 * x, S), 3 * x)
    with pytest.raises(ValueError, match="differ"):
        a.forward(x, x[:1], S)


def test_maxpool_ties_go_to_the_first_tap():
    x = np.ones((1, 2, 2, 1), np.float32)
    mp = MaxPool(2)
    mp.forward(x, S)
    np.testing.assert_array_equal(mp.backward(np.full((1, 1, 1, 1), 5, np.float32), S)[0, :, :, 0],
                                  [[5, 0], [0, 0]])


def test_graph_adds_fan_out_gradients_and_skips_the_first_bp():
    """A residual block x -> conv -> bn -> relu -> add(x'): the graph's gradient at the block input is the sum of
    both paths, computed here by calling the same layer objects by hand."""
    net = (NetworkBuilder("block", 4, 4, 2).conv("stem", 8, 3).bn("bn0").relu("r0").save("in").conv("c1", 8, 3)
           .bn("bn1").relu("r1").add("in", "add").avgpool(name="gap").flatten("flat").linear("fc", 3).build())
    model = Graph.from_network(net, 0)
    assert model.layer("stem").needs_input_grad is False and model.layer("c1").needs_input_grad is True
    assert model.pass_modes(None)["stem"]["bp"] == "skipped"
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 4, 2)).astype(np.float32)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    model.forward(x, S)
    model.backward(dy, S)
    got = {la.name: la.grad_weight.copy() for la in model.param_layers}
    L = {la.name: la for la in model.layers}
    # by hand, same objects (their state is overwritten)
    h = L["r0"].forward(L["bn0"].forward(L["stem"].forward(x, S), S), S)
    b = L["r1"].forward(L["bn1"].forward(L["c1"].forward(h, S), S), S)
    z = L["fc"].forward(L["flat"].forward(L["gap"].forward(b + h, S), S), S)
    assert z.shape == (2, 3)
    ds = L["gap"].backward(L["flat"].backward(L["fc"].backward(dy, S), S), S)
    dh = ds + L["c1"].backward(L["bn1"].backward(L["r1"].backward(ds, S), S), S)
    assert L["stem"].backward(L["bn0"].backward(L["r0"].backward(dh, S), S), S) is None
    for name, gw in got.items():
        np.testing.assert_array_equal(gw, L[name].grad_weight, err_msg=name)
    assert isinstance(L["c1"], Conv2d)
