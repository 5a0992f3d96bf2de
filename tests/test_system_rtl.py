"""End-to-end RTL tests (``sim/tb_system.py``): the unchanged host driver ``SATDevice`` over the cocotb
transport against ``SATCore`` with the GEMM unit (``sat.hw.gemm_unit.sat_core``) on a 2x2 array (L = 2):
GEMMs of every BDWP pass bit for bit against ``sat.sw.numerics`` under random AXI pauses, with the unit's
tiling and counters; two BDWP training iterations of a tiny MLP equal to GoldenBackend and ModelTransport;
error codes through the real engine; the GEMM unit's time against ``sat.sw.perfmodel.unit_cycles``, from an
ideal memory and from the DDR4 channel model (``sat.sw.dram``).

The device memory is the DDR4 channel model (the default of ``attach``, ``$SAT_DRAM``) unless a test asks for the
ideal one, so every system test is bit-exact with the DRAM's latencies under random AXI pauses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tops import system_top
from sat.sw.config import SATConfig
from sat.sw.dram import DDR4_2400, DDR4Timing
from sat.sw.perfmodel import unit_cycles

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_system"
MEMORY_BYTES = 1 << 20
#: Small buffers, so that the test shapes are tiled (rows and columns) and a long K overflows them.
CONFIG = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128)


#: Slow-only builds: odd array shapes (C not dividing 32: general lane routing), L = 1 and 3, BF16, other nm_set.
SLOW_CONFIGS = {
    "3x3_fp16_l1": SATConfig(rows=3, cols=3, adder_latency=1, nm_set=((2, 4), (1, 8), (2, 8)), a_depth=4,
                             b_depth=256),
    "1x5_bf16_l3": SATConfig(rows=1, cols=5, fmt="bf16", adder_latency=3, nm_set=((1, 4), (2, 4), (4, 8)),
                             a_depth=4, b_depth=256),
}


def run_system(testcase: str | list[str], seed: int, config: SATConfig = CONFIG, **params) -> None:
    top = system_top(config, memory_bytes=MEMORY_BYTES)
    run_cocotb(top, TB, params={"config": config.to_dict(), "memory_bytes": MEMORY_BYTES, "seed": seed, **params},
               testcase=testcase)


def test_system_gemms(sim_seed: int) -> None:
    """FF sparse 2:8 and 2:4, BP sparse, WU (A_TRANS), FF dense (B_TRANS), plain dense; ragged, tiled."""
    run_system("gemms", sim_seed, nm=[[2, 8], [2, 4]])


def test_system_training(sim_seed: int) -> None:
    """Two BDWP iterations (2:4) of a 16-8-4 MLP: RTL == GoldenBackend == ModelTransport, bit for bit."""
    run_system("training", sim_seed)


def test_system_errors(sim_seed: int) -> None:
    run_system("errors", sim_seed)


# BF16 needs its own system build; its rounding is also checked by tb_fp (FP32Round) and the Amaranth writer test
@pytest.mark.parametrize("fmt", ["fp16", pytest.param("bf16", marks=pytest.mark.slow)])
def test_system_narrow_results(fmt: str, sim_seed: int) -> None:
    """GEMM and convolution descriptors with narrow results (FP16: into the subnormal range and to Inf), bit for
    bit ``numerics.round_result`` of the golden FP32 result; reserved RESULT codes give BAD_FLAGS."""
    run_system("narrow", sim_seed, CONFIG.replace(fmt=fmt))


@pytest.mark.slow
@pytest.mark.parametrize("seed_offset", [1, 2])
def test_system_gemms_more(sim_seed: int, seed_offset: int) -> None:
    """More seeds, heavier pauses, other N:M."""
    run_system("gemms", sim_seed + seed_offset, nm=[[1, 4], [4, 8], [1, 8]], pause=0.4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CONFIGS))
def test_system_other_arrays(name: str, sim_seed: int) -> None:
    """GEMMs, training and errors on odd array shapes (other buffer depths)."""
    config = SLOW_CONFIGS[name]
    nms = [list(p) for p in config.nm_set[:2]]
    run_system(["gemms", "errors"], sim_seed + 3, config, nm=nms)


#: GEMMs whose unit time is checked against the model: ``[kind, rows, red, cols, [n, m] or None]`` (kinds of
#: ``tb_system.run_gemm``: "gemm" row-major A and B or packed B, "wu" A_TRANS, "ff" dense B_TRANS). On the 2x2
#: build they cover one tile, double buffered tiles bound by loads and by compute, single buffered tiles
#: (red 100 and 120 do not fit the buffers twice) and every load path; a sixth item ``True`` asks for narrow
#: results (half the write beats; the writer-bound 40x8x30 among them).
TIMING_SHAPES = [
    ["gemm", 2, 8, 2, None], ["gemm", 13, 40, 9, None], ["gemm", 40, 8, 30, None], ["gemm", 8, 100, 6, None],
    ["wu", 30, 20, 30, None], ["wu", 9, 100, 7, None], ["ff", 11, 40, 7, None], ["ff", 9, 120, 3, None],
    ["gemm", 24, 48, 33, [1, 4]], ["gemm", 7, 256, 9, [2, 8]],
    ["gemm", 40, 8, 30, None, True], ["gemm", 13, 40, 9, None, True], ["gemm", 24, 48, 33, [1, 4], True],
]
#: Tolerance of the unit timing model: relative, and in cycles for tiny GEMMs.
TIMING_RTOL = 0.02
TIMING_ATOL = 4
#: Slow-only 4x4 build (L = 4) with other buffer depths for the timing model.
TIMING_4X4 = (SATConfig(rows=4, cols=4, adder_latency=4, a_depth=16, b_depth=256), [
    ["gemm", 16, 32, 16, None], ["gemm", 37, 100, 21, None], ["gemm", 8, 200, 8, None], ["wu", 32, 48, 24, None],
    ["ff", 24, 64, 40, None], ["gemm", 40, 128, 36, [2, 4]], ["gemm", 20, 256, 50, [2, 8]],
    ["gemm", 100, 16, 100, None],
])


#: The DDR4 channel without refresh: deterministic, for a tight check of the latency and bus terms.
DDR4_NO_REFRESH = dataclasses.replace(DDR4_2400, trefi_ns=0.0)
#: Tolerance of the whole model with refresh: its refresh term is an expectation over the refresh phase, so a
#: GEMM may differ by up to one refresh window (tRP + tRFC) per refresh period it spans; the sum over the GEMMs of
#: a run by at most this fraction.
TIMING_TOTAL_RTOL = 0.01


def _check_unit_timing(tmp_path: Path, seed: int, config: SATConfig, shapes: list,
                       dram: DDR4Timing | None = None) -> None:
    """Run ``shapes`` on the RTL with ``dram`` (``None``: an ideal memory) and compare the unit's time with
    ``unit_cycles(..., dram=dram)``: per GEMM within :data:`TIMING_RTOL` (or :data:`TIMING_ATOL` cycles), plus
    a refresh window per refresh period when the model has refresh; then the sum within
    :data:`TIMING_TOTAL_RTOL`."""
    report = tmp_path / "timing.json"
    run_system("unit_timing", seed, config, timing_shapes=shapes, timing_report=str(report),
               dram=dram.as_dict() if dram is not None else "ideal")
    refresh = period = 0.0
    if dram is not None and dram.trefi_ns:
        c = dram.cycles(config.clock_hz, config.axi_data_width // 8)
        refresh, period = c.refresh, c.refresh_period
    bad = []
    total_rtl = total_model = 0
    for r in json.loads(report.read_text()):
        nm = r["nm"] or (0, 0)
        model = unit_cycles(config, r["rows"], r["red"], r["cols"], *nm, a_trans=r["kind"] == "wu",
                            b_trans=r["kind"] == "ff" and not r["nm"], dram=dram, narrow=r["narrow"])
        assert r["COMPUTE_CYCLES"] == model.busy_cycles, r
        rtl = r["unit_cycles"]
        total_rtl += rtl
        total_model += model.cycles
        line = (f"{r['kind']} {r['rows']}x{r['red']}x{r['cols']} {r['nm'] or 'dense'}"
                f"{' narrow' if r['narrow'] else ''}: RTL {rtl}, model "
                f"{model.cycles} ({100 * (model.cycles / rtl - 1):+.1f} %, {'double' if model.double else 'single'}"
                f" buffered, {model.tiles} tiles)")
        print(line)
        atol = TIMING_ATOL + (refresh * -(-rtl // period) if refresh else 0)
        if abs(model.cycles - rtl) > max(atol, TIMING_RTOL * rtl):
            bad.append(line)
    print(f"total: RTL {total_rtl}, model {total_model} ({100 * (total_model / total_rtl - 1):+.2f} %)")
    assert not bad, "unit timing model outside tolerance:\n" + "\n".join(bad)
    assert abs(total_model - total_rtl) <= TIMING_TOTAL_RTOL * total_rtl, (total_model, total_rtl)


@pytest.mark.slow  # test_unit_timing_dram runs the same shapes from the DDR4 model, whose terms add to this one's
def test_unit_timing(tmp_path: Path, sim_seed: int) -> None:
    """The GEMM unit's whole time (``COMPUTE + STALL`` counters, no AXI pauses, ideal memory) equals
    ``perfmodel.unit_cycles`` within 2 % (4 cycles for tiny GEMMs), results bit for bit."""
    _check_unit_timing(tmp_path, sim_seed, CONFIG, TIMING_SHAPES)


def test_unit_timing_dram(tmp_path: Path, sim_seed: int) -> None:
    """The same GEMMs from the DDR4 channel model without refresh (latency, the shared bus, turnarounds):
    ``unit_cycles(..., dram=...)`` within 2 % (4 cycles), although the DRAM makes them up to 2.9x slower."""
    _check_unit_timing(tmp_path, sim_seed, CONFIG, TIMING_SHAPES, DDR4_NO_REFRESH)


def resnet18_sample(config: SATConfig, layers: tuple[str, ...]) -> list:
    """Distinct descriptor shapes of sampled ResNet-18 layers (every pass, K chunks included) as the scheduler
    emits them for a 2:8 iteration on ``config``, scaled down to run on the RTL: 16x16 images, batch 1 and
    channels 4, 8, 16, 32 (``resnet18_cifar(width=4)``), normal orientation (no ``B_TRANS`` in it)."""
    from sat.sw.descriptor import FLAG_A_TRANS, FLAG_B_TRANS, ConvDescriptor
    from sat.sw.schedule import resnet18_cifar, schedule_iteration

    s = schedule_iteration(resnet18_cifar(image=16, width=4), 1, config, (2, 8), orientation="normal")
    shapes: list = []
    for g in s.gemms:
        if g.layer not in layers:
            continue
        for d in g.descriptors:
            assert not d.flags & FLAG_B_TRANS
            # a convolution's descriptor as the plain GEMM of its view (its conv loader is timed by
            # tests/test_conv_rtl.py::test_conv_timing_model)
            a_trans = d.pass_ == "wu" if isinstance(d, ConvDescriptor) else d.flags & FLAG_A_TRANS
            shape = ["wu" if a_trans else "gemm", d.rows, d.red, d.cols,
                     [d.n, d.m] if d.sparse else None]
            if shape not in shapes:
                shapes.append(shape)
    return shapes


RESNET18_SAMPLE = ("conv1", "layer1.0.conv1", "layer2.0.conv1", "layer2.0.downsample", "layer3.1.conv2",
                   "layer4.1.conv2", "fc")


@pytest.mark.slow  # the default suite runs the same sample from the DDR4 model, whose terms add to this one's
def test_unit_timing_resnet18_sample(tmp_path: Path, sim_seed: int) -> None:
    """The cycle model against the RTL on a sample of ResNet-18's layers, scaled down (``resnet18_sample``): the
    stem, one convolution per stage, a shortcut and the classifier, FF / BP / WU with their K chunks (21 GEMMs,
    about 100k cycles), ideal memory: within the same tolerance, results bit for bit."""
    shapes = resnet18_sample(CONFIG, RESNET18_SAMPLE)
    assert {s[0] for s in shapes} == {"gemm", "wu"} and any(s[4] for s in shapes) and len(shapes) >= 15
    _check_unit_timing(tmp_path, sim_seed, CONFIG, shapes)


def test_unit_timing_dram_resnet18_sample(tmp_path: Path, sim_seed: int) -> None:
    """The ResNet-18 sample from the full DDR4 channel model (refresh included): each GEMM within 2 % or 4 cycles
    plus a refresh window (91 cycles) per 1950 cycles of ``unit_cycles(..., dram=DDR4_2400)``, the sum within
    1 %, results bit for bit."""
    _check_unit_timing(tmp_path, sim_seed, CONFIG, resnet18_sample(CONFIG, RESNET18_SAMPLE), DDR4_2400)


@pytest.mark.slow
def test_unit_timing_4x4(tmp_path: Path, sim_seed: int) -> None:
    """The timing model on a 4x4 array (L = 4) with 64/256-word buffers (constants fitted on the 2x2)."""
    _check_unit_timing(tmp_path, sim_seed, *TIMING_4X4)


@pytest.mark.slow
@pytest.mark.parametrize("dram", [DDR4_NO_REFRESH, DDR4_2400], ids=["ddr4-no-refresh", "ddr4"])
def test_unit_timing_dram_4x4(tmp_path: Path, sim_seed: int, dram: DDR4Timing) -> None:
    """The DRAM terms on the 4x4 build (fitted on the 2x2)."""
    _check_unit_timing(tmp_path, sim_seed, *TIMING_4X4, dram)
