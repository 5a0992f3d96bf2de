"""Convolutions on the RTL: the unchanged driver (``DeviceBackend.conv`` / ``SATDevice.conv``: one convolution
descriptor per K chunk, no lowering on the host) against ``SATCore`` with the GEMM unit, every result bit for bit
equal to the golden conv passes (``sat.sw.conv.conv_pass`` on ``GoldenBackend`` splitting K alike).

Parameters (``SAT_TB_PARAMS``): ``config``, ``memory_bytes``, ``seed``, ``pause``, ``cases``: a list of
``{"pass": "ff"|"bp"|"wu", "shape": [B, H, W, C_in, C_out, kh, kw, stride, padding], "nm": [n, m] or null,
"mask": "independent"|"nested"}``.
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np

from sat.sw import numerics

from .tb_system import _open, _values

__all__ = ["run_conv_case"]


def run_conv_case(backend: Any, config: Any, case: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One conv pass of ``case`` on ``backend`` and on the golden model; returns ``(got, want)``."""
    from sat.sw.backend import GoldenBackend
    from sat.sw.bdwp import ff_weights
    from sat.sw.conv import ConvShape, bp_operand, conv_pass, ff_operand
    from sat.sw.nm import nm_mask

    shape = ConvShape(*case["shape"])
    nm = tuple(case["nm"]) if case.get("nm") else None
    fmt = config.fmt
    q = numerics.quantize
    x = q(_values(rng, (shape.in_pixels, shape.c_in)).reshape(shape.x_shape), fmt)
    dy = q(_values(rng, (shape.pixels, shape.c_out)).reshape(shape.y_shape), fmt)
    w = _values(rng, (shape.c_out, shape.k))
    pass_ = case["pass"]
    if pass_ == "ff":
        a, b = x, (ff_operand(w, shape, fmt, nm, nm_mask(w, *nm, axis=1)) if nm else ff_operand(w, shape, fmt))
    elif pass_ == "bp":
        a = dy
        if nm:
            base = ff_weights(w, nm) if case.get("mask") == "nested" else w
            mask = nm_mask(base, *nm, axis=0)          # N:M along C_out, for every (kh, kw, ci)
            b = bp_operand(np.where(mask, base, 0), shape, fmt, nm, mask)
        else:
            b = bp_operand(w, shape, fmt)
    else:
        a, b = dy, x
    got = _without_host_lowering(lambda: conv_pass(backend, pass_, a, b, shape, fmt))
    want = conv_pass(GoldenBackend(k_limit=backend.k_limit), pass_, a, b, shape, fmt)
    return got, want


def _without_host_lowering(work):
    """Run ``work`` with the host's lowerings (``sat.sw.conv.im2col`` / ``bp_lower``) refusing to run: the
    device path must not lower on the host (the golden model, run afterwards, does: it is the reference)."""
    import sat.sw.conv as conv_module

    def refuse(*_args, **_kwargs):
        raise AssertionError("the host lowered a convolution")

    saved = conv_module.im2col, conv_module.bp_lower
    conv_module.im2col, conv_module.bp_lower = refuse, refuse
    try:
        return work()
    finally:
        conv_module.im2col, conv_module.bp_lower = saved


@cocotb.test()
async def convs(dut: Any) -> None:
    """Every case: the RTL's result equals the golden conv pass bit for bit; the host lowered nothing."""
    from cocotb.task import bridge

    from sat.sw.descriptor import ConvDescriptor
    from sat.sw.driver.device import DeviceBackend

    params, config, rng, transport, device = await _open(dut, "convs")
    backend = DeviceBackend(device, timeout_s=3600.0)
    for case in params["cases"]:
        label = f"{case['pass']} {case['shape']} {case.get('nm') or 'dense'} {case.get('mask', '')}"
        got, want = await bridge(lambda case=case: run_conv_case(backend, config, case, rng))()
        assert device.last_descriptors and all(isinstance(d, ConvDescriptor) for d in device.last_descriptors), label
        bad = np.argwhere(numerics.fp32_bits(got) != numerics.fp32_bits(want))[:5].tolist()
        assert np.array_equal(numerics.fp32_bits(got), numerics.fp32_bits(want)), \
            f"{label}: RTL differs from the golden model at {bad}"
        dut._log.info(f"{label}: {len(device.last_descriptors)} descriptor(s), {backend.last_result.counters}")
