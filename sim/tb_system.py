"""System testbench: the unchanged host driver (``SATDevice``) over :mod:`sat.sim.cocotb_transport` against
``SATCore`` with the GEMM unit (:class:`sat.hw.gemm_unit.GemmUnit`), end to end.

* ``gemms``: FF sparse (every N:M of the case list), BP sparse, WU dense (``A_TRANS``), FF dense (``B_TRANS``)
  and plain dense GEMMs of ragged shapes, several tiled by the unit, under random AXI pauses, FP16 operands
  partly in the subnormal range (one output row entirely from them); every result bit
  for bit against :mod:`sat.sw.numerics`; ``MACS`` equal to the useful MACs and ``COMPUTE_CYCLES`` to the
  engine cycle model summed over the unit's tiles (:func:`sat.hw.gemm_unit.tile_plan`).
* ``training``: BDWP iterations of a tiny MLP through ``DeviceBackend(SATDevice(cocotb transport))`` (FF, BP,
  WU on the RTL; loss, update, re-pruning and re-upload on the host), weights and losses equal bit for bit to
  the same iterations on ``GoldenBackend`` and on ``ModelTransport``.
* ``errors``: a bad descriptor, an AXI read and write fault, a malformed packed operand (BAD_OPERAND) and a
  reduction too long for the buffers end with the right code and index; a read fault and a bad operand in a
  prefetched tile leave the tiles before it computed and written and nothing of it; a write fault and ABORT in
  a tiled GEMM.
* ``narrow``: GEMM and convolution descriptors with narrow results (RESULT = 1), bit for bit
  ``numerics.round_result`` of the golden FP32 result (FP16 subnormal and overflowing results among them), C rows
  2-byte aligned with gaps the core must not write; reserved RESULT codes end the list with BAD_FLAGS.
* ``cli_gemm``: one GEMM for ``sat sim gemm`` (operands from ``.npy`` files or random), report as JSON.
* ``unit_timing``: GEMMs of ``timing_shapes`` without AXI pauses, bit for bit, their counters written as JSON to
  ``timing_report`` (``tests/test_system_rtl.py`` compares them with :func:`sat.sw.perfmodel.unit_cycles`).

Parameters (``SAT_TB_PARAMS``): ``config`` (with the buffer depths), ``memory_bytes``, ``seed``, ``pause``,
``dram`` (:func:`sat.sim.tb.dram_param`: the memory's timing, default ``$SAT_DRAM`` or a DDR4-2400 channel),
``channels`` (memory channels, default 1: with more, ``memory_bytes`` is that many windows, each its own DRAM
channel, and the driver places A and B, C and the command lists by role as on the card,
:func:`sat.sw.memmap.default_placement`),
``gemm`` (for ``cli_gemm``), ``timing_shapes``, ``timing_report`` and ``memory_report`` (optional: the DRAM
channels' ``stats`` after the run) for ``unit_timing``.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import cocotb
import numpy as np

from sat.sw import nmformat, numerics
from sat.sw.config import SATConfig
from sat.sw.perfmodel import gemm_counters, steps_per_output, unit_cycles
from sat.sw.regmap import ErrorCode
from sat.sw.tiling import max_reduction, tile_plan

from .cocotb_transport import attach
from .tb import dram_param, error_to_report, rng_for, tb_params

__all__ = ["expected_counters", "run_gemm"]


def expected_counters(config: SATConfig, rows: int, red: int, cols: int, n: int, m: int) -> dict[str, int]:
    """``MACS`` and ``COMPUTE_CYCLES`` the core must report for one GEMM (engine model over the unit's tiles)."""
    plan = tile_plan(config, rows, red, cols, n, m)
    busy = sum(gemm_counters(config, rt, red, ct, n, m).busy_cycles for _, rt, _, ct in plan.tiles)
    return {"MACS": rows * cols * steps_per_output(red, n, m), "COMPUTE_CYCLES": busy, "tiles": len(plan.tiles)}


def _values(rng: np.random.Generator, shape: tuple[int, int], fmt: str | None = None) -> np.ndarray:
    """Values over a few binades with 5 % zeros; with ``fmt`` "fp16" also 10 % in FP16's subnormal range
    (below 2**-14), which operands keep (gradual underflow)."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-2, 3, shape))
    if fmt is not None and numerics.get_format(fmt).subnormals:
        tiny = rng.random(shape) < 0.10
        x[tiny] = rng.standard_normal(int(tiny.sum())) * 2.0**-18
    x[rng.random(shape) < 0.05] = 0.0
    return x.astype(np.float32)


def run_gemm(device: Any, kind: str, a: np.ndarray, b: np.ndarray, nm: tuple[int, int] | None,
             out: Any = None) -> tuple:
    """Run one GEMM of ``kind`` through the driver; returns ``(result, golden, (rows, red, cols, n, m),
    RunResult)``.

    ``kind``: ``"ff"`` (``a`` = X, ``b`` = W (C_out x K); sparse with ``nm``, else dense ``B_TRANS``),
    ``"bp"`` (``a`` = dY, ``b`` = W; sparse with ``nm``, else dense), ``"wu"`` (``a`` = dY, ``b`` = X, dense
    with ``A_TRANS``), ``"gemm"`` (``a . b`` dense, or ``b`` compressed along its rows with ``nm``). ``out``: the
    result tensor (its dtype sets the result format; kept), else a new FP32 one.
    """
    fmt = device.config.fmt
    def q(v: np.ndarray) -> np.ndarray:
        return numerics.quantize(v, fmt)

    live = []
    try:
        if kind == "wu":
            at, bt = device.write_tensor(a, channel="a"), device.write_tensor(b, channel="b")
            live += [at, bt]
            c = out if out is not None else device.alloc_tensor((a.shape[1], b.shape[1]), channel="c")
            live.append(c)
            desc = device.wu_descriptor(at, bt, c)
            golden = numerics.matmul(np.ascontiguousarray(q(a).T), q(b), fmt)
            n = mm = 0
        else:
            at = device.write_tensor(a, channel="a")
            live.append(at)
            if kind == "ff":
                op = nmformat.compress_ff(b, *nm) if nm else None
                wt = device.upload_operand(op, "ff") if nm else device.upload_weights_dense(b)
                cols = b.shape[0]
                golden = (nmformat.matmul_nm(q(a), op, fmt) if nm
                          else numerics.matmul(q(a), np.ascontiguousarray(q(b).T), fmt))
            elif kind == "bp":
                op = nmformat.compress_bp(b, *nm) if nm else None
                wt = device.upload_operand(op, "bp") if nm else device.upload_weights_dense(b)
                cols = b.shape[1]
                golden = nmformat.matmul_nm(q(a), op, fmt) if nm else numerics.matmul(q(a), q(b), fmt)
            elif kind == "gemm":
                op = nmformat.compress(b, *nm) if nm else None
                wt = device.upload_operand(op) if nm else device.write_tensor(b, channel="b")
                cols = b.shape[1]
                golden = nmformat.matmul_nm(q(a), op, fmt) if nm else numerics.matmul(q(a), q(b), fmt)
            else:
                raise ValueError(f"unknown GEMM kind {kind!r}")
            live.append(wt)
            c = out if out is not None else device.alloc_tensor((a.shape[0], cols), channel="c")
            live.append(c)
            if kind == "ff":
                desc = device.ff_descriptor(at, wt, c)
            elif kind == "bp":
                desc = device.bp_descriptor(at, wt, c)
            else:
                desc = device.gemm_descriptor(at, wt, c)
            n, mm = (nm if nm else (0, 0))
        result = device.run([desc], timeout_s=600.0)
        got = device.read_tensor(c)
        return got, golden, (desc.rows, desc.red, desc.cols, n, mm), result
    finally:
        for t in live:
            if t is not out:
                device.free(t)


async def _open(dut: Any, salt: str, pause: float | None = None):
    from cocotb.task import bridge

    from sat.sw.driver.device import SATDevice

    params = tb_params()
    config = SATConfig.from_dict(params["config"])
    rng = rng_for(params, salt)
    p = float(params.get("pause", 0.2)) if pause is None else pause
    channels = int(params.get("channels", 1))
    transport = await attach(dut, config, memory_bytes=int(params["memory_bytes"]), pause=p,
                             rng=rng_for(params, salt + "/pauses"), dram=dram_param(params), channels=channels)
    # the core's MEM_CHANNELS says one channel (the build is the same); tell the driver the simulated layout
    split = {"memory_bytes": int(params["memory_bytes"]), "channels": channels} if channels > 1 else {}
    device = await bridge(lambda: SATDevice(transport, config, **split))()
    return params, config, rng, transport, device


def _bits_equal(got: np.ndarray, want: np.ndarray) -> bool:
    return np.array_equal(numerics.fp32_bits(np.asarray(got, np.float32)),
                          numerics.fp32_bits(np.asarray(want, np.float32)))


def _untouched(c: np.ndarray) -> bool:
    """Whether every element of ``c`` still holds the all-ones bytes written before the GEMM."""
    return bool((np.ascontiguousarray(c, np.float32).view(np.uint32) == 0xFFFFFFFF).all())


@cocotb.test()
async def gemms(dut: Any) -> None:
    """FF/BP sparse, WU (A_TRANS), FF dense (B_TRANS) and plain GEMMs, ragged and tiled, bit for bit."""
    from cocotb.task import bridge

    params, config, rng, transport, device = await _open(dut, "gemms")
    nms = [tuple(p) for p in params.get("nm", [[2, 8], [2, 4]])]
    cases: list[tuple[str, tuple[int, int, int], tuple[int, int] | None]] = []
    for nm in nms:
        cases += [("ff", (5, 24, 7), nm), ("bp", (3, 8, 20), nm)]
    cases += [("ff", (13, 40, 9), nms[0]), ("wu", (6, 5, 11), None), ("ff", (4, 9, 5), None),
              ("gemm", (3, 17, 6), None), ("bp", (7, 6, 10), None),
              # tiled by the unit (row and column tiles, B reloaded per tile, packed tiles split)
              ("gemm", (13, 40, 9), None), ("ff", (11, 40, 7), None), ("wu", (13, 40, 9), None),
              ("bp", (3, 40, 40), nms[-1])]
    totals = {"MACS": 0, "COMPUTE_CYCLES": 0}
    values = partial(_values, rng, fmt=config.fmt)
    tiny_row = config.fmt == "fp16"  # one output row from operands entirely in FP16's subnormal range
    for kind, (rows, red, cols), nm in cases:
        if kind == "ff":       # X (rows x K), W (C_out x K)
            a, b = values((rows, red)), values((cols, red))
        elif kind == "bp":     # dY (rows x C_out), W (C_out x K)
            a, b = values((rows, red)), values((red, cols))
        elif kind == "wu":     # dY (B x C_out), X (B x K): dW (C_out x K), reduction over B
            a, b = values((red, rows)), values((red, cols))
        else:
            a, b = values((rows, red)), values((red, cols))
        if tiny_row:
            (a[:, 0] if kind == "wu" else a[0])[:] *= np.float32(2.0**-17)
        got, golden, shape, result = await bridge(
            lambda kind=kind, a=a, b=b, nm=nm: run_gemm(device, kind, a, b, nm))()
        label = f"{kind} {rows}x{red}x{cols} {f'{nm[0]}:{nm[1]}' if nm else 'dense'}"
        assert got.shape == golden.shape, (label, got.shape, golden.shape)
        bad = np.argwhere(numerics.fp32_bits(got) != numerics.fp32_bits(golden))[:5].tolist()
        assert _bits_equal(got, golden), f"{label}: RTL differs from the golden model at {bad}"
        want = expected_counters(config, *shape)
        cnt = result.counters
        assert cnt["MACS"] == want["MACS"], (label, cnt, want)
        assert cnt["COMPUTE_CYCLES"] == want["COMPUTE_CYCLES"], (label, cnt, want)
        assert cnt["COMPUTE_CYCLES"] + cnt["STALL_CYCLES"] <= cnt["CYCLES"], (label, cnt)
        for k in totals:
            totals[k] += want[k]
        dut._log.info(f"{label}: {want['tiles']} tiles, counters {cnt}")


@cocotb.test()
async def training(dut: Any) -> None:
    """Two BDWP iterations of a 16-8-4 MLP (batch 4, 2:4: FF sparse in both layers, BP sparse in the second)
    on the RTL, on GoldenBackend and on ModelTransport: losses and weights bit for bit equal."""
    from cocotb.task import bridge

    from sat.sw.bdwp import SGD, BDWPSettings, GoldenBackend, Linear, LossScaler, Sequential
    from sat.sw.driver.device import DeviceBackend, SATDevice
    from sat.sw.driver.model import ModelTransport

    params, config, rng, transport, device = await _open(dut, "training")
    nm = tuple(params.get("train_nm", (2, 4)))
    x = rng.standard_normal((4, 16)).astype(np.float32)
    labels = rng.integers(0, 4, 4)

    def make():
        net = Sequential([Linear(16, 8, name="fc1", relu=True, rng=np.random.default_rng(3)),
                          Linear(8, 4, name="fc2", rng=np.random.default_rng(4))])
        return net, SGD(lr=0.05, momentum=0.9), LossScaler.for_format(config.fmt)

    model_dev = SATDevice(ModelTransport(config, int(params["memory_bytes"])), config)
    backends = {"golden": GoldenBackend(), "model": DeviceBackend(model_dev), "rtl": DeviceBackend(device)}
    runs = {}
    for name, backend in backends.items():
        net, opt, scaler = make()
        s = BDWPSettings(nm=nm, fmt=config.fmt, backend=backend)
        modes = net.pass_modes(s.nm)
        assert modes["fc1"]["ff"] == "sparse" and modes["fc2"]["ff"] == "sparse" and modes["fc2"]["bp"] == "sparse"

        def iterate(net=net, opt=opt, scaler=scaler, s=s):
            return [net.train_step(x, labels, s, opt, scaler) for _ in range(2)]

        stats = await bridge(iterate)() if name == "rtl" else iterate()
        runs[name] = (stats, [layer.weight.copy() for layer in net.gemm_layers],
                      [layer.bias.copy() for layer in net.gemm_layers])
    for name in ("model", "rtl"):
        for i, (w_ref, w) in enumerate(zip(runs["golden"][1], runs[name][1], strict=True)):
            assert np.array_equal(w_ref.view(np.uint32), w.view(np.uint32)), f"{name}: layer {i} weights differ"
        for i, (b_ref, bb) in enumerate(zip(runs["golden"][2], runs[name][2], strict=True)):
            assert np.array_equal(b_ref.view(np.uint32), bb.view(np.uint32)), f"{name}: layer {i} bias differs"
        assert [st["loss"] for st in runs[name][0]] == [st["loss"] for st in runs["golden"][0]], name
    assert all(st["applied"] for st in runs["golden"][0]), "an update was skipped (loss-scale overflow)"
    w0 = make()[0].gemm_layers
    assert all(not np.array_equal(a.weight, b) for a, b in zip(w0, runs["rtl"][1], strict=True)), \
        "the weights did not change"
    dut._log.info(f"training: losses {[st['loss'] for st in runs['rtl'][0]]}")


@cocotb.test()
async def errors(dut: Any) -> None:
    """Errors through the real engine: bad descriptor, AXI read/write faults, BAD_OPERAND (malformed packed
    operand; reduction too long for the buffers), ABORT, each with the right code and index; the core then
    computes correctly again."""
    from cocotb.task import bridge

    from sat.sw.driver.device import SATDeviceError

    params, config, rng, transport, device = await _open(dut, "errors", pause=0.1)
    n, m = config.nm_set[-1]

    def expect(descs, code, index):
        try:
            device.run(descs, timeout_s=600.0)
        except SATDeviceError as e:
            assert (int(e.code), e.index) == (int(code), index), (e, code, index)
        else:
            raise AssertionError(f"expected {ErrorCode(code).name} at {index}")

    def expect_aborted(descs):
        """Start ``descs``, abort at once: the list must end ABORTED at one of its descriptors."""
        pending = device.start(descs)
        device.abort()
        try:
            device.wait(pending, timeout_s=600.0)
        except SATDeviceError as e:
            assert int(e.code) == ErrorCode.ABORTED and e.index < len(descs), e
        else:
            raise AssertionError("an aborted list reported success")

    def scenario():
        x = device.write_tensor(_values(rng, (5, 16)))
        w = _values(rng, (6, 16))
        wt = device.upload_weights(w, n, m, "ff")
        y = device.alloc_tensor((5, 6))
        good = device.ff_descriptor(x, wt, y, tag=7)
        # 1. invalid descriptor (validation in the command processor) after a good one
        expect([good, good.replace(opcode=3)], ErrorCode.BAD_OPCODE, 1)
        # 2. AXI read fault on A, 3. write fault on C
        transport.faults[:] = [(x.addr + 40, x.addr + 42)]
        expect([good, good], ErrorCode.AXI_READ, 0)
        transport.faults[:] = [(y.addr + 4, y.addr + 8)]
        expect([good], ErrorCode.AXI_WRITE, 0)
        transport.faults[:] = []
        # 4. malformed packed operand: an index >= M (padding lanes and other steps untouched)
        raw = bytearray(transport.dma_read(wt.addr, wt.nbytes))
        good_raw = bytes(raw)
        raw[0] = (raw[0] & 0xF0) | (m & 0xF if m < 16 else 0)    # step 0, column 0: index M
        if m < 16:
            transport.dma_write(wt.addr, bytes(raw))
            expect([good], ErrorCode.BAD_OPERAND, 0)
        # 5. non-ascending indices in a group (slot 1 <= slot 0), column 1
        if n >= 2:
            raw = bytearray(good_raw)
            lo0, hi1 = raw[0] >> 4, raw[16] >> 4          # column 1: step 0 index, step 1 index
            raw[16] = (raw[16] & 0x0F) | (lo0 << 4)
            assert lo0 != hi1
            transport.dma_write(wt.addr, bytes(raw))
            expect([good, good], ErrorCode.BAD_OPERAND, 0)
        transport.dma_write(wt.addr, good_raw)
        # 6. reduction too long for the buffers: BAD_SHAPE (from the engine) before any operand read
        k_big = min(2 * max_reduction(config), 4000)
        assert k_big > max_reduction(config)
        xa = device.alloc_tensor((2, k_big), config.fmt)
        wb = device.alloc_tensor((k_big, 2), config.fmt)
        yc = device.alloc_tensor((2, 2))
        expect([good, device.gemm_descriptor(xa, wb, yc)], ErrorCode.BAD_SHAPE, 1)
        # 7. ABORT while a list runs: the engine stops at a tile boundary, drains its writes, ABORTED
        expect_aborted([good] * 6)
        # 8. AXI read fault on a prefetched tile (A of the last row tile): the tiles before it are computed and
        # written, nothing of the faulty one (its C rows keep their old bytes)
        rows, red, cols = 13, 40, 9
        a, b = _values(rng, (rows, red)), _values(rng, (red, cols))
        plan = tile_plan(config, rows, red, cols)
        r_bad = plan.tiles[-1][0]
        assert r_bad > 0, plan
        at, bt, ct = device.write_tensor(a), device.write_tensor(b), device.alloc_tensor((rows, cols))
        transport.dma_write(ct.addr, b"\xff" * ct.nbytes)
        desc = device.gemm_descriptor(at, bt, ct)
        transport.faults[:] = [(desc.a_addr + r_bad * desc.a_stride, desc.a_addr + r_bad * desc.a_stride + 2)]
        expect([desc], ErrorCode.AXI_READ, 0)
        transport.faults[:] = []
        got = device.read_tensor(ct)
        q = partial(numerics.quantize, fmt=config.fmt)
        assert _bits_equal(got[:r_bad], numerics.matmul(q(a), q(b), config.fmt)[:r_bad]), "tiles before the fault"
        assert _untouched(got[r_bad:]), "the faulty row tile was written"
        # 9. BAD_OPERAND in a prefetched tile: a bad index in the first packed tile (32 columns) that starts in a
        # later column tile than the first, in a GEMM of one row tile
        n2, m2 = (2, 4) if (2, 4) in config.nm_set else next(p for p in config.nm_set if p[1] < 16)
        rows, red = config.rows, 40
        for p_bad in range(1, 9):          # B wide enough that packed tile p_bad starts in a later column tile
            cols = 32 * p_bad + 8
            plan = tile_plan(config, rows, red, cols, n2, m2)
            t_bad = next(i for i, (_, _, c0, ctile) in enumerate(plan.tiles) if c0 + ctile > 32 * p_bad)
            if t_bad > 0:
                break
        c_bad = plan.tiles[t_bad][2]
        assert t_bad > 0 and plan.tiles[-1][0] == 0, plan
        a, b = _values(rng, (rows, red)), _values(rng, (red, cols))
        op = nmformat.compress(b, n2, m2)
        at, wt, ct = device.write_tensor(a), device.upload_operand(op), device.alloc_tensor((rows, cols))
        transport.dma_write(ct.addr, b"\xff" * ct.nbytes)
        steps = steps_per_output(red, n2, m2)
        packed_tile = (steps + -(-steps // 4)) * 64
        raw = bytearray(transport.dma_read(wt.addr, wt.nbytes))
        bad = p_bad * packed_tile                                    # index beat 0 of packed tile p_bad
        raw[bad] = (raw[bad] & 0xF0) | m2                            # step 0 of its first column: index M
        transport.dma_write(wt.addr, bytes(raw))
        expect([device.gemm_descriptor(at, wt, ct)], ErrorCode.BAD_OPERAND, 0)
        got = device.read_tensor(ct)
        golden = nmformat.matmul_nm(q(a), op, config.fmt)
        assert _bits_equal(got[:, :c_bad], golden[:, :c_bad]), "tiles before the bad operand"
        assert _untouched(got[:, c_bad:]), "the bad tile was written"
        # 10. write fault in a tiled GEMM (a C row of a later row tile): AXI_WRITE, the unit drains and stops
        rows, red, cols = 13, 40, 9
        a, b = _values(rng, (rows, red)), _values(rng, (red, cols))
        at, bt, ct = device.write_tensor(a), device.write_tensor(b), device.alloc_tensor((rows, cols))
        tiled = device.gemm_descriptor(at, bt, ct)
        transport.faults[:] = [(ct.addr + 8 * ct.stride, ct.addr + 8 * ct.stride + 4)]
        expect([tiled, tiled], ErrorCode.AXI_WRITE, 0)
        transport.faults[:] = []
        # 11. ABORT while a tiled GEMM computes (one tile computing, the next one loading): ABORTED, then the
        # same GEMM runs correctly
        expect_aborted([tiled] * 3)
        device.run([tiled], timeout_s=600.0)
        assert _bits_equal(device.read_tensor(ct), numerics.matmul(q(a), q(b), config.fmt))
        # the core still computes correctly afterwards
        res = device.run([good], timeout_s=600.0)
        assert res.cmd_done == 1 and res.last_tag == 7
        golden = nmformat.matmul_nm(numerics.quantize(device.read_tensor(x), config.fmt),
                                    nmformat.compress_ff(w, n, m), config.fmt)
        assert _bits_equal(device.read_tensor(y), golden)

    await bridge(scenario)()


@cocotb.test()
async def cli_gemm(dut: Any) -> None:
    """One GEMM for ``sat sim gemm``: parameters in ``gemm``, JSON report written to ``gemm["report"]``."""
    from cocotb.task import bridge

    params = tb_params()
    g = params.get("gemm")
    if not g:
        return
    with error_to_report(g["report"]):
        _, config, rng, transport, device = await _open(dut, "cli", pause=float(params.get("pause", 0.0)))
        nm = tuple(g["nm"]) if g.get("nm") else None
        rows, red, cols = g["m"], g["k"], g["n"]
        grng = np.random.default_rng(g.get("seed", 0))
        a = np.load(g["a"]).astype(np.float32) if g.get("a") else _values(grng, (rows, red))
        b = np.load(g["b"]).astype(np.float32) if g.get("b") else _values(grng, (red, cols))
        channel = getattr(transport.ram, "channel", None)
        timing = channel.timing if channel is not None else None
        start = transport.cycle()
        got, golden, shape, result = await bridge(lambda: run_gemm(device, "gemm", a, b, nm))()
        cnt = result.counters
        n, m = shape[3], shape[4]
        report = {
            "rows": rows, "red": red, "cols": cols, "nm": f"{n}:{m}" if nm else "dense", "fmt": config.fmt,
            "array": [config.rows, config.cols], "adder_latency": config.adder_latency,
            "cycles": cnt["CYCLES"], "compute_cycles": cnt["COMPUTE_CYCLES"], "stall_cycles": cnt["STALL_CYCLES"],
            "macs": cnt["MACS"],
            "utilization": cnt["MACS"] / (config.rows * config.cols * cnt["CYCLES"]) if cnt["CYCLES"] else 0.0,
            "engine_model_cycles": gemm_counters(config, rows, red, cols, n, m).cycles,
            "unit_cycles": cnt["COMPUTE_CYCLES"] + cnt["STALL_CYCLES"],
            "unit_model_cycles": unit_cycles(config, rows, red, cols, n, m, dram=timing).cycles,
            "memory": "ddr4" if timing is not None else "ideal",
            "bit_identical": bool(_bits_equal(got, golden)),
            "mismatches": int(np.count_nonzero(numerics.fp32_bits(got) != numerics.fp32_bits(golden))),
            "sim_cycles": transport.cycle() - start,
            "expected": expected_counters(config, rows, red, cols, n, m),
        }
        if g.get("out"):
            np.save(g["out"], got)
        with open(g["report"], "w") as f:
            json.dump(report, f)


@cocotb.test()
async def unit_timing(dut: Any) -> None:
    """GEMMs of ``timing_shapes`` (``[kind, rows, red, cols, [n, m] or null]``, kinds as :func:`run_gemm`, and an
    optional sixth item ``true`` for narrow results) with no AXI pauses: results bit for bit, counters (the unit's
    whole time is ``COMPUTE + STALL``) to ``timing_report``."""
    from cocotb.task import bridge

    params = tb_params()
    shapes = params.get("timing_shapes")
    if not shapes:
        return
    _, config, rng, transport, device = await _open(dut, "timing", pause=0.0)
    report = []
    for kind, rows, red, cols, nm, *rest in shapes:
        nm = tuple(nm) if nm else None
        narrow = bool(rest and rest[0])
        if kind == "ff":
            a, b = _values(rng, (rows, red)), _values(rng, (cols, red))
        elif kind == "wu":
            a, b = _values(rng, (red, rows)), _values(rng, (red, cols))
        else:
            a, b = _values(rng, (rows, red)), _values(rng, (red, cols))

        def run(kind=kind, a=a, b=b, nm=nm, rows=rows, cols=cols, narrow=narrow):
            out = device.alloc_tensor((rows, cols), config.fmt, channel="c") if narrow else None
            try:
                return run_gemm(device, kind, a, b, nm, out=out)
            finally:
                if out is not None:
                    device.free(out)

        got, golden, shape, result = await bridge(run)()
        if narrow:
            golden = numerics.result_values(golden, config.fmt)
        assert _bits_equal(got, golden), f"{kind} {rows}x{red}x{cols} {nm}: RTL differs from the golden model"
        cnt = result.counters
        report.append({"kind": kind, "rows": rows, "red": red, "cols": cols, "nm": list(nm) if nm else None,
                       "narrow": narrow, "unit_cycles": cnt["COMPUTE_CYCLES"] + cnt["STALL_CYCLES"], **cnt})
        dut._log.info(f"timing {kind} {rows}x{red}x{cols} {nm}: {cnt}")
    with open(params["timing_report"], "w") as f:
        json.dump(report, f, indent=1)
    if params.get("memory_report"):
        # what each DRAM channel served (bursts, beats, turnarounds, refresh waits), channel 0 first
        ram = transport.ram
        with open(params["memory_report"], "w") as f:
            json.dump({"placement": device.placement, "crossings": getattr(ram, "crossings", 0),
                       "channels": [ch.stats for ch in getattr(ram, "channels", [])]}, f, indent=1)


def _extremes(kind: str, a: np.ndarray, b: np.ndarray) -> None:
    """Operands whose results reach the ends of FP16's range: one output row from operands scaled by ``2**-17``
    (results in FP16's subnormal range) and one output ``K * 2**14`` (past 65504: Inf) from exact constants."""
    if kind == "wu":           # a: dY (B x C_out), b: X (B x K); dW[i, j] reduces over B
        a[:, 0] *= np.float32(2.0**-17)
        a[:, 1], b[:, 0] = 2.0**10, 16.0
    elif kind == "ff":         # a: X (rows x K), b: W (C_out x K)
        a[0] *= np.float32(2.0**-17)
        a[1], b[0] = 2.0**10, 16.0
    else:                      # a: rows x K, b: K x cols
        a[0] *= np.float32(2.0**-17)
        a[1], b[:, 0] = 2.0**10, 16.0


def run_narrow_gemm(device: Any, kind: str, a: np.ndarray, b: np.ndarray, nm: tuple[int, int] | None,
                    pad: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One GEMM of ``kind`` (as :func:`run_gemm`) with narrow results into a C whose rows are ``pad`` bytes
    longer than the row (2-byte aligned, so rows start off 4-byte boundaries); C is filled with 0xFF first.
    Returns ``(got, want, gaps)``: the 16-bit results, ``numerics.round_result`` of the golden FP32 result, and
    the bytes between the rows (which the core must not write)."""
    from sat.sw.driver.device import Tensor

    fmt = device.config.fmt
    rows = a.shape[1] if kind == "wu" else a.shape[0]
    cols = {"ff": b.shape[0], "wu": b.shape[1]}.get(kind, b.shape[1])
    stride = 2 * cols + pad
    base = device.alloc(rows * stride + 2)
    c = Tensor(base + 2, (rows, cols), fmt, stride)              # 2-byte aligned, not 4
    device._dma_write(base, b"\xff" * (rows * stride + 2))
    try:
        _, golden, _, _ = run_gemm(device, kind, a, b, nm, out=c)
        raw = np.frombuffer(bytes(device._dma_read(base, rows * stride + 2)), np.uint8)
    finally:
        device.free(base)
    lines = np.lib.stride_tricks.as_strided(raw[2:], (rows, stride), (stride, 1))
    got = np.ascontiguousarray(lines[:, :2 * cols]).view("<u2").astype(np.uint16)
    gaps = np.concatenate([raw[:2], np.ascontiguousarray(lines[:, 2 * cols:]).reshape(-1)])
    return got, numerics.round_result(numerics.fp32_bits(golden), fmt).astype(np.uint16), gaps


@cocotb.test()
async def narrow(dut: Any) -> None:
    """Narrow results (the descriptors' RESULT field): GEMM descriptors (sparse FF, WU, dense and tiled GEMMs, C
    rows on 2-byte boundaries with gaps between them) and convolution descriptors (FF sparse, BP, WU) write each
    FP32 chain result rounded once to the operand format, bit for bit ``numerics.round_result`` of the golden
    FP32 result, FP16 results in the subnormal range and overflowing to Inf among them; nothing outside C is
    written. Reserved RESULT codes (2, 3) end the list with BAD_FLAGS, and the core computes again afterwards."""
    from cocotb.task import bridge

    from sat.sw.backend import GoldenBackend
    from sat.sw.conv import ConvShape, conv_pass
    from sat.sw.descriptor import RESULT_SHIFT
    from sat.sw.driver.device import DeviceBackend, SATDeviceError

    from .tb_conv import conv_operands

    params, config, rng, transport, device = await _open(dut, "narrow")
    fmt = config.fmt
    f16 = fmt == "fp16"
    seen = {"subnormal": 0, "inf": 0}

    def tally(bits: np.ndarray) -> None:
        if f16:
            mag = bits & 0x7FFF
            seen["subnormal"] += int(((mag > 0) & (mag < 0x0400)).sum())
            seen["inf"] += int((mag == 0x7C00).sum())

    nm = tuple(config.nm_set[-1])
    cases = [("ff", (5, 24, 7), nm), ("wu", (6, 5, 11), None), ("gemm", (3, 17, 6), None),
             ("ff", (4, 9, 5), None), ("gemm", (13, 40, 9), None)]     # the last one tiled (rows and columns)
    for kind, (rows, red, cols), cnm in cases:
        if kind == "ff":
            a, b = _values(rng, (rows, red), fmt), _values(rng, (cols, red), fmt)
        elif kind == "wu":
            a, b = _values(rng, (red, rows), fmt), _values(rng, (red, cols), fmt)
        else:
            a, b = _values(rng, (rows, red), fmt), _values(rng, (red, cols), fmt)
        _extremes(kind, a, b)
        got, want, gaps = await bridge(lambda kind=kind, a=a, b=b, cnm=cnm: run_narrow_gemm(device, kind, a, b, cnm))()
        label = f"narrow {kind} {rows}x{red}x{cols} {f'{cnm[0]}:{cnm[1]}' if cnm else 'dense'}"
        bad = np.argwhere(got != want)[:5].tolist()
        assert np.array_equal(got, want), f"{label}: RTL differs from round_result of the golden model at {bad}"
        assert (gaps == 0xFF).all(), f"{label}: bytes outside C's rows were written"
        tally(want)
        dut._log.info(f"{label}: bit-exact")

    backend = DeviceBackend(device, timeout_s=3600.0)
    shape = ConvShape(1, 4, 4, 8, 8, 3, 3, 1, 1)
    x = numerics.quantize(_values(rng, (shape.in_pixels, shape.c_in), fmt).reshape(shape.x_shape), fmt)
    x[0, 0] *= np.float32(2.0**-17)
    x[0, 3] = 2.0**10
    dy = numerics.quantize(_values(rng, (shape.pixels, shape.c_out), fmt).reshape(shape.y_shape), fmt)
    dy[0, 0] *= np.float32(2.0**-17)
    dy[0, 3] = 2.0**10
    w = _values(rng, (shape.c_out, shape.k), fmt)
    w[0] = 16.0
    for pass_, cnm in (("ff", nm), ("bp", None), ("bp", nm), ("wu", None)):
        a, b = conv_operands(pass_, shape, fmt, x, dy, w, cnm)
        got = await bridge(lambda pass_=pass_, a=a, b=b: conv_pass(backend, pass_, a, b, shape, fmt, fmt))()
        want = conv_pass(GoldenBackend(k_limit=backend.k_limit), pass_, a, b, shape, fmt, fmt)
        assert device.last_descriptors and all(d.narrow for d in device.last_descriptors), "narrow descriptors"
        label = f"narrow conv {pass_} {f'{cnm[0]}:{cnm[1]}' if cnm else 'dense'}"
        assert _bits_equal(got, want), f"{label}: RTL differs from the golden model"
        tally(numerics.encode(want, fmt))
        dut._log.info(f"{label}: bit-exact")
    if f16:
        assert seen["subnormal"] and seen["inf"], f"the cases must reach FP16's subnormals and Inf: {seen}"

    def reserved() -> None:
        xt = device.write_tensor(_values(rng, (3, 16), fmt))
        wt = device.write_tensor(_values(rng, (16, 4), fmt))
        ct = device.alloc_tensor((3, 4), fmt)
        good = device.gemm_descriptor(xt, wt, ct)
        conv = device.conv_descriptor("ff", ConvShape.linear(3, 16, 4), xt, wt, ct)
        for bad, index in (([good, good.replace(flags=good.flags & ~(3 << RESULT_SHIFT) | 2 << RESULT_SHIFT)], 1),
                           ([conv.replace(flags=conv.flags | 3 << RESULT_SHIFT)], 0)):
            try:
                device.run(bad, timeout_s=600.0)
            except SATDeviceError as e:
                assert (int(e.code), e.index) == (int(ErrorCode.BAD_FLAGS), index), e
            else:
                raise AssertionError("a reserved RESULT code was accepted")
        device.run([good], timeout_s=600.0)          # and the core still computes, narrow
        got = device.read_tensor(ct)
        want = numerics.result_values(numerics.matmul(numerics.quantize(device.read_tensor(xt), fmt),
                                                      device.read_tensor(wt), fmt), fmt)
        assert _bits_equal(got, want)
        for t in (xt, wt, ct):
            device.free(t)

    await bridge(reserved)()
