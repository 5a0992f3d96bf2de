"""Convolutions on the RTL (``sim/tb_conv.py``): FF, BP (both BP masks) and WU of random convolutions through the
unchanged driver on ``SATCore`` with the GEMM unit (2x2 array, small buffers, so K splits into chunks and the
unit tiles rows and columns), every result bit for bit equal to the golden conv passes, no lowering on the host:
stride 1 and 2, padding 0 and 1, 1x1 and 3x3 kernels, odd sizes, every N:M of the default set."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tops import system_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

MEMORY_BYTES = 1 << 20
CONFIG = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128)


def conv_cases(seed: int, count: int, config: SATConfig = CONFIG) -> list[dict]:
    """Random conv passes: shapes small enough for the RTL, every pass, N:M and BP mask, stride 1 and 2, padding
    0 and 1, 1x1 and 3x3 kernels (and a 2x3 one)."""
    rng = np.random.default_rng(seed)
    cases = []
    patterns = [None, *config.nm_set]
    for i in range(count):
        kh, kw = [(1, 1), (3, 3), (3, 3), (2, 3)][i % 4]
        stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        h, w = int(rng.integers(max(kh - 2 * padding, 1), 7)), int(rng.integers(max(kw - 2 * padding, 1), 7))
        shape = [int(rng.integers(1, 3)), h, w, int(rng.integers(1, 12)), int(rng.integers(1, 12)), kh, kw,
                 stride, padding]
        nm = patterns[i % len(patterns)]
        for pass_ in ("ff", "bp", "wu"):
            if pass_ == "wu" and nm is not None and i % 2:
                continue
            cases.append({"pass": pass_, "shape": shape, "nm": list(nm) if nm and pass_ != "wu" else None,
                          "mask": "nested" if i % 3 == 0 else "independent"})
    return cases


def run_convs(seed: int, cases: list[dict], config: SATConfig = CONFIG, pause: float = 0.2) -> None:
    top = system_top(config, memory_bytes=MEMORY_BYTES)
    run_cocotb(top, "sat.sim.tb_conv", params={"config": config.to_dict(), "memory_bytes": MEMORY_BYTES,
                                               "seed": seed, "pause": pause, "cases": cases}, testcase="convs")


#: Larger passes: K split into chunks (FF 144 > 128 dense B steps; WU over 162 pixels), many row tiles (FF and
#: BP rows continue from tile to tile), WU's column tiles (taps and channels continue from tile to tile).
TILED_CASES = [
    {"pass": "ff", "shape": [2, 6, 6, 16, 10, 3, 3, 1, 1], "nm": None},
    {"pass": "ff", "shape": [2, 6, 6, 16, 10, 3, 3, 2, 1], "nm": [2, 8]},
    {"pass": "bp", "shape": [2, 6, 6, 12, 16, 3, 3, 2, 1], "nm": [2, 8], "mask": "independent"},
    {"pass": "wu", "shape": [2, 6, 6, 4, 6, 3, 3, 1, 1], "nm": None},
]
#: More of them for the slow test.
TILED_CASES_MORE = [
    {"pass": "bp", "shape": [1, 7, 5, 6, 20, 3, 3, 1, 1], "nm": None},
    {"pass": "wu", "shape": [2, 9, 9, 3, 4, 3, 3, 1, 1], "nm": None},
]


def test_conv_passes_on_the_rtl(sim_seed: int) -> None:
    run_convs(sim_seed, conv_cases(sim_seed, 4) + TILED_CASES)


@pytest.mark.slow
def test_conv_passes_on_the_rtl_more(sim_seed: int) -> None:
    run_convs(sim_seed + 1, conv_cases(sim_seed + 1, 24) + TILED_CASES_MORE, pause=0.3)


@pytest.mark.slow
def test_conv_passes_bf16(sim_seed: int) -> None:
    config = CONFIG.replace(fmt="bf16")
    run_convs(sim_seed + 2, conv_cases(sim_seed + 2, 8, config), config)


#: ResNet-18's kinds of convolution, scaled to the RTL: a 3x3 stride-1 conv (stage), a 3x3 stride-2 conv and its
#: 1x1 stride-2 downsample (stage entry), the stem (3 input channels); FF, BP and WU, dense and 2:8.
TIMING_CASES = [
    {"pass": "ff", "shape": [1, 6, 6, 8, 8, 3, 3, 1, 1], "nm": [2, 8]},
    {"pass": "bp", "shape": [1, 6, 6, 8, 8, 3, 3, 1, 1], "nm": [2, 8]},
    {"pass": "wu", "shape": [1, 6, 6, 8, 8, 3, 3, 1, 1], "nm": None},
    {"pass": "ff", "shape": [1, 8, 8, 8, 16, 3, 3, 2, 1], "nm": None},
    {"pass": "bp", "shape": [1, 8, 8, 8, 16, 3, 3, 2, 1], "nm": [2, 8]},
    {"pass": "wu", "shape": [1, 8, 8, 8, 16, 3, 3, 2, 1], "nm": None},
    {"pass": "ff", "shape": [1, 8, 8, 8, 16, 1, 1, 2, 0], "nm": [2, 8]},
    {"pass": "bp", "shape": [1, 8, 8, 8, 16, 1, 1, 2, 0], "nm": None},
    {"pass": "wu", "shape": [1, 8, 8, 8, 16, 1, 1, 2, 0], "nm": None},
    {"pass": "ff", "shape": [1, 8, 8, 3, 8, 3, 3, 1, 1], "nm": None},
    {"pass": "wu", "shape": [1, 8, 8, 3, 8, 3, 3, 1, 1], "nm": None},
]
#: Tolerance of the conv loader's timing model against the RTL: relative, and in cycles for tiny passes.
CONV_TIMING_RTOL = 0.03
CONV_TIMING_ATOL = 10


def _check_conv_timing(tmp_path, seed: int, dram=None) -> None:
    """Run :data:`TIMING_CASES` on the RTL with ``dram`` (``None``: an ideal memory) and compare each pass's unit
    time with ``unit_cycles(..., conv=descriptor, dram=dram)`` summed over its descriptors, and with a DRAM the
    sum within 1 %."""
    import json

    from sat.sw.descriptor import ConvDescriptor
    from sat.sw.perfmodel import unit_cycles

    report = tmp_path / "timing.json"
    top = system_top(CONFIG, memory_bytes=MEMORY_BYTES)
    run_cocotb(top, "sat.sim.tb_conv", params={"config": CONFIG.to_dict(), "memory_bytes": MEMORY_BYTES,
                                               "seed": seed, "timing_cases": TIMING_CASES,
                                               "timing_report": str(report),
                                               "dram": dram.as_dict() if dram is not None else "ideal"},
               testcase="conv_timing")
    atol = CONV_TIMING_ATOL
    bad = []
    totals = [0, 0]
    for r in json.loads(report.read_text()):
        descs = [ConvDescriptor.decode(bytes.fromhex(h)) for h in r["descriptors"]]
        model = sum(unit_cycles(CONFIG, d.rows, d.red, d.cols, d.n, d.m, a_trans=d.pass_ == "wu",
                                b_trans=False, a_stride=2 * d.c_out if d.pass_ == "wu" else 0,
                                b_stride=d.b_stride or None, c_stride=d.c_stride, conv=d, dram=dram).cycles
                    for d in descs)
        rtl = r["counters"]["COMPUTE_CYCLES"] + r["counters"]["STALL_CYCLES"]
        totals[0] += rtl
        totals[1] += model
        line = f"{r['case']}: RTL {rtl}, model {model} ({100 * (model / rtl - 1):+.1f} %)"
        print(line)
        if abs(model - rtl) > max(atol, CONV_TIMING_RTOL * rtl):
            bad.append(line)
    print(f"total: RTL {totals[0]}, model {totals[1]} ({100 * (totals[1] / totals[0] - 1):+.2f} %)")
    assert not bad, "conv timing model outside tolerance:\n" + "\n".join(bad)
    if dram is not None:
        assert abs(totals[1] - totals[0]) <= 0.01 * totals[0], totals


@pytest.mark.slow  # the default suite runs the same passes from the DDR4 model (test_conv_timing_model_dram)
def test_conv_timing_model(tmp_path, sim_seed: int) -> None:
    """``perfmodel.unit_cycles(..., conv=descriptor)`` (the conv loader's pieces) against the RTL's counters
    (``COMPUTE + STALL``, no AXI pauses, ideal memory) on ResNet-18's kinds of convolution, summed over each
    pass's descriptors: within 3 % (10 cycles for tiny passes)."""
    _check_conv_timing(tmp_path, sim_seed)


def test_conv_timing_model_dram(tmp_path, sim_seed: int) -> None:
    """The same passes from the DDR4 channel model without refresh (``sat.sw.dram``; latency, the shared bus,
    turnarounds: deterministic) against ``unit_cycles(..., dram=...)``: within 3 % (10 cycles), 1 % in sum.
    The model with refresh is checked on the GEMMs of ``tests/test_system_rtl.py``."""
    import dataclasses

    from sat.sw.dram import DDR4_2400

    _check_conv_timing(tmp_path, sim_seed, dataclasses.replace(DDR4_2400, trefi_ns=0.0))
