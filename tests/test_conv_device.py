"""The driver's conv entry point (``SATDevice.conv`` / ``DeviceBackend.conv``) on the software device model:
bit for bit equal to the golden conv passes (``sat.sw.conv``) splitting K alike, on resident tensors, with the
one convolution descriptor per K chunk, no lowering on the host, and every allocation freed."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw import numerics
from sat.sw.bdwp import GoldenBackend, sparse_chunk
from sat.sw.config import SATConfig
from sat.sw.conv import ConvShape, bp_operand, conv_pass, ff_operand
from sat.sw.descriptor import ConvDescriptor
from sat.sw.driver import DeviceBackend, ModelTransport, SATDevice

CFG = SATConfig(rows=2, cols=2, a_depth=8, b_depth=32)    # short buffers: long reductions split into K chunks
SHAPES = [ConvShape(2, 5, 5, 8, 16, 3, 3, 2, 1), ConvShape(1, 6, 5, 3, 8, 3, 3, 1, 0),
          ConvShape(2, 4, 4, 8, 8, 1, 1, 2, 0), ConvShape.linear(3, 20, 10)]


def _bits(x):
    return numerics.fp32_bits(np.asarray(x, np.float32))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("nm", [None, (2, 8), (1, 4)])
def test_device_conv_equals_golden_with_k_chunks(shape, nm):
    dev = SATDevice(ModelTransport(CFG, 1 << 24), CFG)
    backend = DeviceBackend(dev)
    golden = GoldenBackend(k_limit=backend.k_limit)
    rng = np.random.default_rng(hash((str(shape), nm)) % 2**32)
    x = numerics.quantize(rng.standard_normal(shape.x_shape), "fp16")
    dy = numerics.quantize(rng.standard_normal(shape.y_shape), "fp16")
    w = rng.standard_normal(shape.w_shape).astype(np.float32)
    xh, dyh = backend.put(x, "fp16"), backend.put(dy, "fp16")        # resident, reused by several passes
    for pass_, a, b, ah in (("ff", x, ff_operand(w, shape, "fp16", nm), xh),
                            ("bp", dy, bp_operand(w, shape, "fp16", nm), dyh), ("wu", dy, x, dyh)):
        if pass_ == "wu":
            got = conv_pass(backend, "wu", ah, xh, shape, "fp16")
        else:
            got = conv_pass(backend, pass_, ah, b, shape, "fp16")
        want = conv_pass(golden, pass_, a, b, shape, "fp16")
        assert got.shape == want.shape
        np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=pass_)
    longest = max(shape.k, shape.bp_k(nm[1] if nm else 1), shape.pixels)
    assert backend.stats["gemms"] == 3
    assert (backend.stats["descriptors"] > 3) == (longest > backend.k_limit(*(nm or (0, 0))) or shape.pixels > 32)
    assert all(isinstance(d, ConvDescriptor) for d in dev.last_descriptors)
    backend.release(xh)
    backend.release(dyh)
    assert dev.free_bytes == dev.memory_bytes


def test_device_conv_checks_its_operands():
    dev = SATDevice(ModelTransport(CFG, 1 << 22), CFG)
    sh = SHAPES[0]
    x = dev.write_nhwc(np.zeros(sh.x_shape, np.float32))
    w = dev.write_tensor(np.zeros((sh.k, sh.c_out), np.float32))
    with pytest.raises(ValueError, match="one of 'ff'"):
        dev.conv("xx", sh, x, w)
    with pytest.raises(ValueError, match="activation tensor"):
        dev.conv("bp", sh, x, w)
    with pytest.raises(ValueError, match="second operand"):
        dev.conv("ff", sh, x, x)
    rng = np.random.default_rng(3)
    wv = rng.standard_normal(sh.w_shape).astype(np.float32)
    xv = numerics.quantize(rng.standard_normal(sh.x_shape), "fp16")
    op = ff_operand(wv, sh, "fp16", (2, 8))
    parts = [dev.upload_operand(sparse_chunk(op, k0, k1)) for k0, k1 in ((0, 40), (40, 72))]
    with pytest.raises(ValueError, match="one operand per chunk"):
        dev.conv("ff", sh, x, parts, k_limit=32)
    assert dev.conv_chunks("ff", sh, 2, 8, 40) == [(0, 40), (40, 72)]
    y = dev.conv("ff", sh, dev.write_nhwc(xv), parts, k_limit=40)
    want = conv_pass(GoldenBackend(k_limit=40), "ff", xv, op, sh, "fp16").reshape(sh.pixels, sh.c_out)
    np.testing.assert_array_equal(_bits(dev.read_tensor(y)), _bits(want))
