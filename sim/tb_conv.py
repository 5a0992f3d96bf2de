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

from .tb import tb_params, without_host_lowering
from .tb_system import _open, _values

__all__ = ["conv_operands", "run_conv", "run_conv_case"]


def conv_operands(pass_: str, shape: Any, fmt: str, x: np.ndarray | None, dy: np.ndarray | None,
                  w: np.ndarray | None, nm: tuple[int, int] | None, mask: str = "independent") -> tuple[Any, Any]:
    """The two operands of a conv pass as BDWP feeds them: FF ``(X, W_ff^T)`` pruned along ``K``, BP
    ``(dY, W_bp)`` pruned along ``C_out`` from the master (``independent``) or from ``W_ff`` (``nested``), WU
    ``(dY, X)``; ``w`` is the dense master weight ``(C_out, kh, kw, C_in)`` (or ``(C_out, K)``)."""
    from sat.sw.bdwp import ff_weights
    from sat.sw.conv import bp_operand, ff_operand
    from sat.sw.nm import nm_mask

    if pass_ == "wu":
        return dy, x
    w2 = np.asarray(w, np.float32).reshape(shape.c_out, shape.k)
    if pass_ == "ff":
        return x, (ff_operand(w2, shape, fmt, nm, nm_mask(w2, *nm, axis=1)) if nm else ff_operand(w2, shape, fmt))
    if not nm:
        return dy, bp_operand(w2, shape, fmt)
    base = ff_weights(w2, nm) if mask == "nested" else w2
    keep = nm_mask(base, *nm, axis=0)              # N:M along C_out, for every (kh, kw, ci)
    return dy, bp_operand(np.where(keep, base, 0), shape, fmt, nm, keep)


def run_conv_case(backend: Any, config: Any, case: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One conv pass of ``case`` on ``backend`` and on the golden model; returns ``(got, want)``."""
    from sat.sw.conv import ConvShape

    shape = ConvShape(*case["shape"])
    nm = tuple(case["nm"]) if case.get("nm") else None
    fmt = config.fmt
    q = numerics.quantize
    x = q(_values(rng, (shape.in_pixels, shape.c_in)).reshape(shape.x_shape), fmt)
    dy = q(_values(rng, (shape.pixels, shape.c_out)).reshape(shape.y_shape), fmt)
    w = _values(rng, (shape.c_out, shape.k))
    a, b = conv_operands(case["pass"], shape, fmt, x, dy, w, nm, case.get("mask", "independent"))
    return run_conv(backend, case["pass"], shape, fmt, a, b)


def run_conv(backend: Any, pass_: str, shape: Any, fmt: str, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(device result, golden result)`` of one conv pass; the device path must not lower on the host."""
    from sat.sw.backend import GoldenBackend
    from sat.sw.conv import conv_pass

    got = without_host_lowering(lambda: conv_pass(backend, pass_, a, b, shape, fmt))
    want = conv_pass(GoldenBackend(k_limit=backend.k_limit), pass_, a, b, shape, fmt)
    return got, want


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


@cocotb.test()
async def cli_conv(dut: Any) -> None:
    """One conv pass for ``sat sim conv``: parameters in ``conv``, results and a JSON report written."""
    import json

    from cocotb.task import bridge

    from sat.sw.conv import ConvShape
    from sat.sw.driver.device import DeviceBackend

    params = tb_params()
    c = params.get("conv")
    if not c:
        return
    _, config, rng, transport, device = await _open(dut, "cli", pause=float(params.get("pause", 0.0)))
    backend = DeviceBackend(device, timeout_s=36000.0)
    shape = ConvShape(*c["shape"])
    nm = tuple(c["nm"]) if c.get("nm") else None
    arrays = {k: (np.load(v) if v else None) for k, v in c["arrays"].items()}
    a, b = conv_operands(c["pass"], shape, config.fmt, arrays["x"], arrays["dy"], arrays["w"], nm)
    start = transport.cycle()
    got, want = await bridge(lambda: run_conv(backend, c["pass"], shape, config.fmt, a, b))()
    cnt = backend.last_result.counters
    np.save(c["out"], got)
    mismatches = int(np.count_nonzero(numerics.fp32_bits(got) != numerics.fp32_bits(want)))
    report = {
        "pass": c["pass"], "shape": dict(zip(("batch", "height", "width", "c_in", "c_out", "kh", "kw", "stride",
                                                "padding"), c["shape"], strict=True)),
        "nm": f"{nm[0]}:{nm[1]}" if nm else "dense", "fmt": config.fmt, "array": [config.rows, config.cols],
        "descriptors": len(device.last_descriptors), "cycles": backend.stats["cycles"],
        "counters": {k.lower(): int(v) for k, v in cnt.items()}, "bit_identical": mismatches == 0,
        "mismatches": mismatches, "sim_cycles": transport.cycle() - start,
    }
    with open(c["report"], "w") as f:
        json.dump(report, f)


@cocotb.test()
async def conv_timing(dut: Any) -> None:
    """The passes of ``timing_cases`` with no AXI pauses: results bit for bit, and for each the unit's counters and
    its descriptors, written as JSON to ``timing_report`` (``tests/test_conv_rtl.py`` compares them with
    ``sat.sw.perfmodel.unit_cycles``)."""
    import json

    from cocotb.task import bridge

    from sat.sw.driver.device import DeviceBackend

    params = tb_params()
    cases = params.get("timing_cases")
    if not cases:
        return
    _, config, rng, transport, device = await _open(dut, "conv_timing", pause=0.0)
    backend = DeviceBackend(device, timeout_s=36000.0)
    report = []
    for case in cases:
        got, want = await bridge(lambda case=case: run_conv_case(backend, config, case, rng))()
        assert np.array_equal(numerics.fp32_bits(got), numerics.fp32_bits(want)), case
        cnt = backend.last_result.counters
        report.append({"case": case, "counters": {k: int(v) for k, v in cnt.items()},
                       "descriptors": [d.encode().hex() for d in device.last_descriptors]})
        dut._log.info(f"timing {case}: {cnt}")
    with open(params["timing_report"], "w") as f:
        json.dump(report, f, indent=1)
