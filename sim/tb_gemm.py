"""cocotb testbench of the GEMM engine ``sat.hw.gemm.GemmEngine``: the three BDWP GEMMs of random layers.

For every case the testbench builds the operands of one training GEMM of a random layer (weights ``W`` of
``C_out x K``, activations ``X`` of ``B x K``, output gradients ``dY`` of ``B x C_out``), fills the engine's
buffers through ``a_write`` / ``b_write`` in the order a DMA would (stored operand order, lane masks), issues the
command, collects ``result`` and compares every output with :mod:`sat.sw.numerics` bit for bit:

* ``ff``: ``Y = X . W_ff^T``; sparse: ``B = compress_ff(W)`` (N:M along ``K``); dense: ``W`` stored
  ``C_out x K`` (``B_TRANS``).
* ``bp``: ``dX = dY . W_bp``; sparse: ``B = compress_bp(W)`` (N:M along ``C_out``); dense: ``W`` as stored.
* ``wu``: ``dW = dY^T . X``, dense, ``A = dY`` stored ``B x C_out`` (``A_TRANS``).

The next case's operands are loaded into the other half of each buffer while the current case computes
(double buffering by base address). Write streams get random idle cycles, the result stream random
back-pressure (``stalls``). The engine's counters are compared with :func:`sat.sw.perfmodel.gemm_counters`:
all four exactly when the result stream is always ready, ``busy_cycles`` and ``macs`` exactly and ``cycles``
as a lower bound under back-pressure.

Parameters (``SAT_TB_PARAMS``): ``config`` (SATConfig dict, with the buffer depths), ``seed``, ``cases``
(list of ``{"kind", "batch", "c_out", "k", "nm", "stalls"}``; ``nm`` is ``[n, m]`` or null for dense),
``report`` (optional path: one JSON line per case with the RTL counters and the model's).
"""

from __future__ import annotations

import json

import cocotb
import numpy as np

from sat.hw.gemm import (
    a_buffer_writes,
    a_write_layout,
    b_dense_writes,
    b_sparse_writes,
    b_write_layout,
    command_layout,
    done_layout,
    result_layout,
)
from sat.sw.config import SATConfig
from sat.sw.nmformat import compress_bp, compress_ff
from sat.sw.numerics import encode, fp32_bits, get_format, matmul, matmul_sparse
from sat.sw.perfmodel import gemm_counters

from .tb import FP32Scoreboard, backpressure, idle_inserter, reset, rng_for, start_clock, tb_params

__all__ = ["GemmCase", "make_case", "gemm_cases"]

_PARAMS = tb_params()


class GemmCase:
    """One GEMM command with its buffer writes and golden result.

    Attributes
    ----------
    label : str
    rows, red, cols, n, m : int
        Command shape and N:M (``n = m = 0`` dense).
    a_writes, b_writes : list of dict
        ``a_write`` / ``b_write`` payloads (bases already applied).
    expected : uint32 array (rows, cols)
    """

    def __init__(self, label, rows, red, cols, n, m, a_writes, b_writes, expected):
        self.label = label
        self.rows, self.red, self.cols, self.n, self.m = rows, red, cols, n, m
        self.a_writes, self.b_writes = a_writes, b_writes
        self.expected = expected


def _operands(rng: np.random.Generator, shape: tuple[int, ...], fmt: str) -> np.ndarray:
    """Bit patterns of values over several binades, both signs, with a few zeros; for FP16 also 10 % values in
    the subnormal range (below 2**-14, gradual underflow) and a first row entirely there (a small gradient)."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-3, 4, shape))
    if get_format(fmt).subnormals:
        tiny = rng.random(shape) < 0.10
        x[tiny] = rng.standard_normal(int(tiny.sum())) * 2.0**-18
        x[0] *= 2.0**-17
    x[rng.random(shape) < 0.03] = 0.0
    return encode(x.astype(np.float32), fmt)


def make_case(rng: np.random.Generator, config: SATConfig, kind: str, batch: int, c_out: int, k: int,
              nm: tuple[int, int] | None, a_base: int, b_base: int) -> GemmCase:
    """Operands, buffer writes and golden output of one training GEMM of a ``c_out x k`` layer."""
    fmt = config.fmt
    w = rng.standard_normal((c_out, k)).astype(np.float32) * np.float32(0.5)
    label = f"{kind} B={batch} C_out={c_out} K={k} {'dense' if nm is None else f'{nm[0]}:{nm[1]}'}"
    n, m = nm if nm is not None else (0, 0)
    if kind == "ff":
        a = _operands(rng, (batch, k), fmt)
        rows, red, cols = batch, k, c_out
        if nm is None:
            wb = encode(w, fmt)
            expected = matmul(a, wb.T, fmt)
            b_writes = list(b_dense_writes(wb, config, b_base, trans=True))
        else:
            op = compress_ff(w, n, m)
            vals = encode(op.values, fmt)
            expected = matmul_sparse(a, vals, op.indices, m, fmt)
            b_writes = list(b_sparse_writes(vals, op.indices, config, b_base))
        a_writes = list(a_buffer_writes(a, config, a_base))
    elif kind == "bp":
        a = _operands(rng, (batch, c_out), fmt)
        rows, red, cols = batch, c_out, k
        if nm is None:
            wb = encode(w, fmt)
            expected = matmul(a, wb, fmt)
            b_writes = list(b_dense_writes(wb, config, b_base))
        else:
            op = compress_bp(w, n, m)
            vals = encode(op.values, fmt)
            expected = matmul_sparse(a, vals, op.indices, m, fmt)
            b_writes = list(b_sparse_writes(vals, op.indices, config, b_base))
        a_writes = list(a_buffer_writes(a, config, a_base))
    elif kind == "wu":
        if nm is not None:
            raise ValueError("WU is dense")
        dy = _operands(rng, (batch, c_out), fmt)
        x = _operands(rng, (batch, k), fmt)
        rows, red, cols = c_out, batch, k
        expected = matmul(dy.T, x, fmt)
        a_writes = list(a_buffer_writes(dy, config, a_base, trans=True))
        b_writes = list(b_dense_writes(x, config, b_base))
    else:
        raise ValueError(f"kind must be ff, bp or wu, not {kind!r}")
    return GemmCase(label, rows, red, cols, n, m, a_writes, b_writes, fp32_bits(expected))


def gemm_cases(config: SATConfig, specs: list[dict], seed: int, a_depth: int, b_depth: int) -> list[GemmCase]:
    """Build the cases of ``specs``, alternating between the two halves of each buffer."""
    rng = np.random.default_rng([seed, 77])
    cases = []
    for j, spec in enumerate(specs):
        nm = tuple(spec["nm"]) if spec.get("nm") else None
        half = j % 2
        case = make_case(rng, config, spec["kind"], spec["batch"], spec["c_out"], spec["k"], nm,
                         half * a_depth // 2, half * b_depth // 2)
        top_a = max((w["addr"] for w in case.a_writes), default=0)
        top_b = max((w["addr"] for w in case.b_writes), default=0)
        if top_a >= (half + 1) * a_depth // 2 or top_b >= (half + 1) * b_depth // 2:
            raise ValueError(f"case {case.label} does not fit half of the buffers (a {top_a}, b {top_b})")
        cases.append(case)
    return cases


async def _load(dut, port: str, layout, writes: list[dict], stalls) -> None:
    """Drive ``writes`` into ``port`` (valid/payload at falling edges, random idle cycles)."""
    from cocotb.triggers import FallingEdge

    valid = getattr(dut, f"{port}__valid")
    payload = getattr(dut, f"{port}__payload")
    fe = FallingEdge(dut.clk)
    for w in writes:
        while next(stalls):
            valid.value = 0
            await fe
        valid.value = 1
        payload.value = layout.const(w).as_bits()
        await fe
    valid.value = 0


async def _load_case(dut, config: SATConfig, case: GemmCase, rng: np.random.Generator, p_idle: float,
                     a_depth: int, b_depth: int) -> None:
    a_layout = a_write_layout(config, (a_depth - 1).bit_length())
    b_layout = b_write_layout(config, (b_depth - 1).bit_length())
    ta = cocotb.start_soon(_load(dut, "a_write", a_layout, case.a_writes, idle_inserter(rng, p_idle, 3)))
    tb = cocotb.start_soon(_load(dut, "b_write", b_layout, case.b_writes, idle_inserter(rng, p_idle, 3)))
    await ta
    await tb


async def _run_case(dut, config: SATConfig, case: GemmCase, stalls, a_base: int, b_base: int,
                    a_depth: int, b_depth: int) -> tuple[np.ndarray, dict[str, int], int]:
    """Issue the command, collect results until ``done``; return outputs, counters and the result-row count."""
    from cocotb.triggers import FallingEdge

    fe = FallingEdge(dut.clk)
    cmd = command_layout((a_depth - 1).bit_length(), (b_depth - 1).bit_length())
    res = result_layout(config)
    dut.cmd__payload.value = cmd.const({
        "rows": case.rows, "red": case.red, "cols": case.cols, "sparse": int(case.n != 0), "n": case.n,
        "m": case.m, "a_base": a_base, "b_base": b_base}).as_bits()
    dut.cmd__valid.value = 1
    while not int(dut.cmd__ready.value):
        await fe
    await fe
    dut.cmd__valid.value = 0
    got = np.full((case.rows, case.cols), 0xDEADBEEF, dtype=np.uint64)
    seen = np.zeros((case.rows, case.cols), dtype=np.int64)
    beats = 0
    last_flags = 0
    for _ in range(1_000_000):
        ready = 0 if (stalls is not None and next(stalls)) else 1
        dut.result__ready.value = ready
        if int(dut.result__valid.value) and ready:
            p = res.from_bits(dut.result__payload.value.to_unsigned())
            beats += 1
            last_flags += int(p.last)
            for c in range(config.cols):
                if (int(p.lanes) >> c) & 1:
                    got[int(p.row), int(p.col) + c] = int(p.data[c])
                    seen[int(p.row), int(p.col) + c] += 1
        if int(dut.done__valid.value):
            answer = done_layout().from_bits(dut.done__payload.value.to_unsigned())
            break
        await fe
    else:
        raise AssertionError(f"{case.label}: no done after 1e6 cycles")
    counters = {name: int(getattr(answer, name)) for name in ("cycles", "busy_cycles", "stall_cycles", "macs")}
    counters["error"] = int(answer.error)
    problems = []
    if (seen != 1).any():
        problems.append(f"{case.label}: {(seen == 0).sum()} outputs missing, {(seen > 1).sum()} repeated")
    if last_flags != 1:
        problems.append(f"{case.label}: 'last' seen {last_flags} times")
    if problems:
        raise AssertionError("\n".join(problems))
    return got, counters, beats


async def _sweep(dut, name: str) -> None:
    from cocotb.triggers import FallingEdge

    p = _PARAMS
    config = SATConfig.from_dict(p["config"])
    a_depth, b_depth = config.a_depth, config.b_depth
    seed = int(p.get("seed", 1))
    rng = rng_for(p, name)
    specs = p["cases"]
    cases = gemm_cases(config, specs, seed, a_depth, b_depth)
    await start_clock(dut)
    await reset(dut, cmd__valid=0, a_write__valid=0, b_write__valid=0, result__ready=0, done__ready=1)
    fe = FallingEdge(dut.clk)
    sb = FP32Scoreboard(f"GemmEngine {config.rows}x{config.cols} {config.fmt}", fmt=config.fmt)
    problems = []
    await _load_case(dut, config, cases[0], rng, 0.3, a_depth, b_depth)
    for j, (case, spec) in enumerate(zip(cases, specs, strict=True)):
        half = j % 2
        loader = None
        if j + 1 < len(cases):   # fill the other half of the buffers while this GEMM runs
            loader = cocotb.start_soon(_load_case(dut, config, cases[j + 1], rng, 0.3, a_depth, b_depth))
        stalls = backpressure(rng, 0.3, 4) if spec.get("stalls") else None
        got, counters, beats = await _run_case(dut, config, case, stalls, half * a_depth // 2,
                                               half * b_depth // 2, a_depth, b_depth)
        rows_idx, cols_idx = np.indices(case.expected.shape)
        sb.compare(got.ravel(), case.expected.ravel(), row=rows_idx.ravel(), col=cols_idx.ravel())
        model = gemm_counters(config, case.rows, case.red, case.cols, case.n, case.m)
        dut._log.info("%s: %s model %s", case.label, counters, model.as_dict())
        if p.get("report"):
            with open(p["report"], "a") as f:
                f.write(json.dumps({"label": case.label, "kind": spec["kind"], "rows": case.rows, "red": case.red,
                                    "cols": case.cols, "n": case.n, "m": case.m, "stalls": bool(spec.get("stalls")),
                                    "rtl": counters, "model": model.as_dict()}) + "\n")
        if counters["error"]:
            problems.append(f"{case.label}: error flag set")
        if counters["busy_cycles"] != model.busy_cycles or counters["macs"] != model.macs:
            problems.append(f"{case.label}: busy/macs {counters} differ from the model {model.as_dict()}")
        if stalls is None:
            if counters["cycles"] != model.cycles or counters["stall_cycles"] != model.stall_cycles:
                problems.append(f"{case.label}: counters {counters} differ from the model {model.as_dict()}")
        elif counters["cycles"] < model.cycles:
            problems.append(f"{case.label}: {counters['cycles']} cycles under back-pressure, fewer than the "
                            f"model's {model.cycles} without")
        if loader is not None:
            await loader
        await fe
    if sb.mismatches:
        problems.insert(0, sb.report())
    dut._log.info("%s: %d cases, %d outputs compared bit for bit", name, len(cases), sb.checked)
    sb.check()
    assert not problems, "\n".join(problems)


@cocotb.test()
async def gemm_sweep(dut) -> None:
    """Every case of ``cases``: bit-exact results, counters equal to the cycle model."""
    await _sweep(dut, "gemm_sweep")


@cocotb.test()
async def gemm_bad_command(dut) -> None:
    """An N:M pair outside ``nm_set`` and a zero shape complete at once with ``error`` and no results."""
    from cocotb.triggers import FallingEdge

    p = _PARAMS
    config = SATConfig.from_dict(p["config"])
    a_depth, b_depth = config.a_depth, config.b_depth
    cmd = command_layout((a_depth - 1).bit_length(), (b_depth - 1).bit_length())
    await start_clock(dut)
    await reset(dut, cmd__valid=0, a_write__valid=0, b_write__valid=0, result__ready=1, done__ready=1)
    fe = FallingEdge(dut.clk)
    bad = [{"rows": 3, "red": 8, "cols": 3, "sparse": 1, "n": 3, "m": 8},
           {"rows": 0, "red": 8, "cols": 3, "sparse": 0, "n": 0, "m": 0}]
    assert (3, 8) not in config.nm_set
    for fields in bad:
        dut.cmd__payload.value = cmd.const(fields).as_bits()
        dut.cmd__valid.value = 1
        await fe
        dut.cmd__valid.value = 0
        for _ in range(3):
            assert not int(dut.result__valid.value), f"{fields}: results for a bad command"
            if int(dut.done__valid.value):
                break
            await fe
        answer = done_layout().from_bits(dut.done__payload.value.to_unsigned())
        assert int(dut.done__valid.value) and answer.error, f"{fields}: no done+error"
        await fe
