# amaranth: UnusedElaboratable=no
# (the validation test builds PEs that are rejected on purpose)
"""Amaranth-simulator tests of ``sat.hw.pe.PE`` against ``sat.sw.numerics.matmul`` / ``matmul_sparse``.

A PE computes a small GEMM tile: every output ``Y[r, c]`` is assigned to one of the ``L`` accumulator slots,
each slot works through its outputs one after another, and the stream interleaves the slots (step ``t`` belongs
to slot ``t mod L``). Random bubbles (a slot skips a step) and random ``en`` stalls are inserted; every result
must equal the golden model bit for bit, and with neither, the PE issues one MAC per cycle.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from sat.hw.pe import PE
from sat.sim.tb_fp import normalized_fp16_operands
from sat.sw.config import SATConfig
from sat.sw.numerics import encode, fp32_bits, matmul, matmul_sparse


@dataclass
class Op:
    act: list[int]     # max_m lanes of bit patterns
    wgt: int
    idx: int
    first: bool
    last: bool
    output: tuple[int, int]


def _random_operands(rng, shape, fmt: str, specials: bool = False) -> np.ndarray:
    """Operand bit patterns: normal values of mixed magnitude, plus (optionally) zeros, subnormals, big values."""
    bits = encode(rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape)), fmt)
    if specials:
        pick = rng.random(shape)
        raw = rng.integers(0, 1 << 16, shape, dtype=np.uint16)
        exp_mask, exp_lsb = (0x7C00, 0x0400) if fmt == "fp16" else (0x7F80, 0x0080)
        sub = raw & np.uint16(~exp_mask & 0xFFFF)                  # subnormal or zero, random sign
        big = (raw & np.uint16(~exp_mask & 0xFFFF)) | np.uint16(exp_mask - exp_lsb)  # largest exponent
        bits = np.where(pick < 0.05, sub, np.where(pick < 0.08, big, bits)).astype(np.uint16)
    return bits


def _dense_outputs(rng, a, b, max_m) -> dict[tuple[int, int], list[Op]]:
    rows, k = a.shape
    ops = {}
    for r in range(rows):
        for c in range(b.shape[1]):
            junk = rng.integers(0, 1 << 16, (k, max_m))
            ops[r, c] = [Op([int(a[r, i])] + [int(x) for x in junk[i, 1:]], int(b[i, c]), 0,
                            i == 0, i == k - 1, (r, c)) for i in range(k)]
    return ops


def _sparse_outputs(rng, a, vals, idx, m, max_m) -> dict[tuple[int, int], list[Op]]:
    rows, k = a.shape
    groups, n, cols = vals.shape
    a_pad = np.zeros((rows, groups * m), dtype=np.uint16)
    a_pad[:, :k] = a
    ops = {}
    for r in range(rows):
        for c in range(cols):
            seq = []
            for g in range(groups):
                group = [int(x) for x in a_pad[r, g * m:(g + 1) * m]]
                lanes = group + [int(x) for x in rng.integers(0, 1 << 16, max_m - m)]
                for j in range(n):
                    seq.append(Op(lanes, int(vals[g, j, c]), int(idx[g, j, c]), False, False, (r, c)))
            seq[0].first = True
            seq[-1].last = True
            ops[r, c] = seq
    return ops


def _schedule(outputs: dict, slots: int, bubble_prob: float, rng) -> list[Op | None]:
    """Interleave: output number o goes to slot o mod L; step t serves slot t mod L (None = bubble)."""
    queues = [[] for _ in range(slots)]
    for o, key in enumerate(sorted(outputs)):
        queues[o % slots].extend(outputs[key])
    steps: list[Op | None] = []
    t = 0
    while any(queues):
        q = queues[t % slots]
        if q and rng.random() >= bubble_prob:
            steps.append(q.pop(0))
        else:
            steps.append(None)
        t += 1
    return steps


def _run_pe(pe: PE, steps: list[Op | None], stall_prob: float, rng) -> dict:
    """Drive the schedule; return results by output, the result order and the final counters."""
    max_m = pe.max_m
    got: dict[tuple[int, int], int] = {}
    finishing: list[tuple[int, int]] = []
    order: list[tuple[int, int]] = []
    counters = {}

    async def testbench(ctx):
        t = 0
        quiet = 0
        while t < len(steps) or quiet < pe.latency + 2:
            en = 0 if rng.random() < stall_prob else 1
            ctx.set(pe.en, en)
            op = steps[t] if t < len(steps) else None
            if op is None:
                ctx.set(pe.valid, 0)
                ctx.set(pe.first, int(rng.integers(0, 2)))  # ignored without valid
                ctx.set(pe.last, int(rng.integers(0, 2)))
                ctx.set(pe.wgt, int(rng.integers(0, 1 << 16)))
            else:
                ctx.set(pe.valid, 1)
                ctx.set(pe.act, op.act if max_m > 1 else op.act[:1])
                ctx.set(pe.wgt, op.wgt)
                ctx.set(pe.idx, op.idx)
                ctx.set(pe.first, int(op.first))
                ctx.set(pe.last, int(op.last))
            await ctx.tick()
            if ctx.get(pe.result_valid):
                key = finishing[len(order)]
                order.append(key)
                got[key] = ctx.get(pe.result)
            if en:
                if op is not None and op.last:
                    finishing.append(op.output)
                if t < len(steps):
                    if op is not None:
                        assert ctx.get(pe.wgt_out) == op.wgt and ctx.get(pe.valid_out) == 1
                        assert ctx.get(pe.idx_out) == op.idx and ctx.get(pe.last_out) == int(op.last)
                        assert ctx.get(pe.act_out)[op.idx if max_m > 1 else 0] == op.act[op.idx]
                    t += 1
                else:
                    quiet += 1
        counters["mac"] = ctx.get(pe.mac_count)
        counters["cycle"] = ctx.get(pe.cycle_count)

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return {"got": got, "order": order, "finishing": finishing, "counters": counters}


def _check(result: dict, golden: np.ndarray) -> None:
    assert result["order"] == result["finishing"], "results must leave in the order of their last operands"
    want = fp32_bits(golden)
    bad = [(key, f"{v:08x}", f"{int(want[key]):08x}") for key, v in result["got"].items() if v != want[key]]
    assert len(result["got"]) == golden.size
    assert not bad, f"{len(bad)} outputs differ (output, rtl, golden): {bad[:8]}"


def _sparse_operand(rng, k, cols, n, m, fmt):
    """Compressed N:M operand: random kept positions (ascending) and values per group and column."""
    groups = -(-k // m)
    idx = np.stack([np.stack([np.sort(rng.choice(m, n, replace=False)) for _ in range(cols)], axis=-1)
                    for _ in range(groups)])
    vals = _random_operands(rng, idx.shape, fmt)
    return vals, idx


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("nm", [None, (1, 4), (2, 4), (1, 8), (2, 8), (4, 8)],
                         ids=lambda nm: "dense" if nm is None else f"{nm[0]}of{nm[1]}")
def test_pe_gemm_matches_golden(fmt, nm):
    config = SATConfig(fmt=fmt)
    rng = np.random.default_rng([1 if fmt == "fp16" else 2, 0 if nm is None else nm[0] * 10 + nm[1]])
    rows, cols = 2, 3
    pe = PE(config)
    if nm is None:
        k = int(rng.integers(6, 13))
        a = _random_operands(rng, (rows, k), fmt, specials=True)
        b = _random_operands(rng, (k, cols), fmt, specials=True)
        outputs = _dense_outputs(rng, a, b, pe.max_m)
        golden = matmul(a, b, fmt)
    else:
        n, m = nm
        assert config.supports(n, m)
        k = int(rng.integers(2, 4)) * m - int(rng.integers(0, 2))  # sometimes a padded last group
        a = _random_operands(rng, (rows, k), fmt, specials=True)
        vals, idx = _sparse_operand(rng, k, cols, n, m, fmt)
        outputs = _sparse_outputs(rng, a, vals, idx, m, pe.max_m)
        golden = matmul_sparse(a, vals, idx, m, fmt)
    steps = _schedule(outputs, pe.interleave, bubble_prob=0.15, rng=rng)
    _check(_run_pe(pe, steps, stall_prob=0.2, rng=rng), golden)


@pytest.mark.parametrize("latency", [1, 2, 3, 6])
def test_pe_other_adder_latencies(latency):
    fmt = "bf16" if latency % 2 else "fp16"
    config = SATConfig(fmt=fmt, adder_latency=latency, nm_set=((2, 4),))
    rng = np.random.default_rng(latency)
    pe = PE(config)
    assert pe.max_m == 4 and pe.idx_width == 2 and pe.latency == 3 + latency
    a = _random_operands(rng, (2, 7), fmt, specials=True)
    b = _random_operands(rng, (7, 4), fmt, specials=True)
    steps = _schedule(_dense_outputs(rng, a, b, pe.max_m), pe.interleave, bubble_prob=0.1, rng=rng)
    _check(_run_pe(pe, steps, stall_prob=0.15, rng=rng), matmul(a, b, fmt))


@pytest.mark.parametrize("nm", [None, (2, 8)], ids=["dense", "2of8"])
def test_pe_fp16_subnormal_gradients(nm):
    """FP16 gradients in the subnormal range (below 2**-14) times normal weights: the outputs (sums of products
    near 2**-20) match the golden model bit for bit and are not the zeros that flushing the operands gave."""
    fmt = "fp16"
    config = SATConfig(fmt=fmt)
    rng = np.random.default_rng(21 if nm is None else 28)
    pe = PE(config)
    rows, cols = 2, 3
    k = 16
    a = encode(rng.standard_normal((rows, k)) * 2.0**-17, fmt)                 # mostly subnormal
    assert np.mean((a & 0x7C00) == 0) > 0.8
    a_flushed = np.where((a & 0x7C00) == 0, a & 0x8000, a).astype(np.uint16)  # the old DAZ reading
    if nm is None:
        b = _random_operands(rng, (k, cols), fmt)
        outputs, golden = _dense_outputs(rng, a, b, pe.max_m), matmul(a, b, fmt)
        flushed = matmul(a_flushed, b, fmt)
    else:
        vals, idx = _sparse_operand(rng, k, cols, *nm, fmt)
        outputs, golden = _sparse_outputs(rng, a, vals, idx, nm[1], pe.max_m), matmul_sparse(a, vals, idx, nm[1], fmt)
        flushed = matmul_sparse(a_flushed, vals, idx, nm[1], fmt)
    assert np.count_nonzero(golden) > np.count_nonzero(flushed), "the operands must matter"
    steps = _schedule(outputs, pe.interleave, bubble_prob=0.1, rng=rng)
    _check(_run_pe(pe, steps, stall_prob=0.15, rng=rng), golden)


@pytest.mark.parametrize("nm", [None, (2, 4), (2, 8)], ids=["dense", "2of4", "2of8"])
def test_pe_prenormalized_matches_golden(nm):
    """The PE as the systolic array builds it for FP16 (``prenormalized``): fed the operands normalized as the
    array's edge does (every lane and the weight, as 17-bit values), with zeros, subnormals, large values and
    subnormal gradients, its outputs equal the golden model of the FP16 operands bit for bit."""
    fmt = "fp16"
    config = SATConfig(fmt=fmt)
    rng = np.random.default_rng([17, 0 if nm is None else nm[0] * 10 + nm[1]])
    pe = PE(config, prenormalized=True)
    assert pe.prenormalized and pe.operand_width == 17 and pe.latency == PE(config).latency
    rows, cols, k = 2, 3, 12
    a = _random_operands(rng, (rows, k), fmt, specials=True)
    a[0] = encode(rng.standard_normal(k) * 2.0**-17, fmt)                     # a row of subnormal gradients
    if nm is None:
        b = _random_operands(rng, (k, cols), fmt, specials=True)
        outputs, golden = _dense_outputs(rng, a, b, pe.max_m), matmul(a, b, fmt)
    else:
        vals, idx = _sparse_operand(rng, k, cols, *nm, fmt)
        outputs = _sparse_outputs(rng, a, vals, idx, nm[1], pe.max_m)
        golden = matmul_sparse(a, vals, idx, nm[1], fmt)
    for ops in outputs.values():
        for op in ops:
            op.act = [int(x) for x in normalized_fp16_operands(np.array(op.act, np.uint16))]
            op.wgt = int(normalized_fp16_operands(np.array([op.wgt], np.uint16))[0])
    steps = _schedule(outputs, pe.interleave, bubble_prob=0.1, rng=rng)
    _check(_run_pe(pe, steps, stall_prob=0.15, rng=rng), golden)


def test_pe_prenormalized_is_fp16_only():
    with pytest.raises(ValueError, match=r"prenormalized operands are FP16 only \(bf16 has no subnormals\)"):
        PE(SATConfig(fmt="bf16"), prenormalized=True)


def test_pe_mixed_modes_in_flight():
    """Dense and several N:M outputs share the PE at the same time: the mode belongs to the operand stream."""
    fmt = "fp16"
    config = SATConfig(fmt=fmt)
    rng = np.random.default_rng(11)
    pe = PE(config)
    outputs, golden = {}, {}
    for mode, nm in enumerate([None, (2, 4), (1, 8), (4, 8), (1, 4), None]):
        k = int(rng.integers(5, 17))
        a = _random_operands(rng, (1, k), fmt, specials=True)
        if nm is None:
            b = _random_operands(rng, (k, 1), fmt, specials=True)
            ops, ref = _dense_outputs(rng, a, b, pe.max_m), matmul(a, b, fmt)
        else:
            vals, idx = _sparse_operand(rng, k, 1, *nm, fmt)
            ops, ref = _sparse_outputs(rng, a, vals, idx, nm[1], pe.max_m), matmul_sparse(a, vals, idx, nm[1], fmt)
        for op in ops[0, 0]:
            op.output = (mode, 0)
        outputs[mode, 0] = ops[0, 0]
        golden[mode, 0] = ref[0, 0]
    steps = _schedule(outputs, pe.interleave, bubble_prob=0.1, rng=rng)
    want = np.array([[golden[mode, 0]] for mode in range(len(golden))], dtype=np.float32)
    _check(_run_pe(pe, steps, stall_prob=0.2, rng=rng), want)


def test_pe_one_mac_per_cycle_in_steady_state():
    """With no bubbles and no stalls every step is a MAC: mac_count == cycle_count == operands issued."""
    config = SATConfig()
    rng = np.random.default_rng(7)
    pe = PE(config)
    a = _random_operands(rng, (2, 10), "fp16")
    b = _random_operands(rng, (10, 4), "fp16")    # 8 outputs = 2 interleave groups of L = 4
    steps = _schedule(_dense_outputs(rng, a, b, pe.max_m), pe.interleave, bubble_prob=0.0, rng=rng)
    assert None not in steps
    result = _run_pe(pe, steps, stall_prob=0.0, rng=rng)
    _check(result, matmul(a, b, "fp16"))
    issued = a.shape[0] * b.shape[1] * a.shape[1]
    assert len(steps) == issued
    # the run ends latency + 2 idle steps after the last operand (valid low there)
    assert result["counters"]["mac"] == issued
    assert result["counters"]["cycle"] == issued + pe.latency + 2


def test_pe_dense_only_config_has_one_lane():
    config = SATConfig(nm_set=(), adder_latency=2)
    rng = np.random.default_rng(3)
    pe = PE(config)
    assert pe.max_m == 1 and pe.idx_width == 1
    a = _random_operands(rng, (1, 5), "fp16")
    b = _random_operands(rng, (5, 3), "fp16")
    steps = _schedule(_dense_outputs(rng, a, b, 1), pe.interleave, bubble_prob=0.2, rng=rng)
    _check(_run_pe(pe, steps, stall_prob=0.2, rng=rng), matmul(a, b, "fp16"))


def test_pe_rejects_bad_config():
    with pytest.raises(TypeError, match="config must be a SATConfig, not 'fp16'"):
        PE("fp16")


@pytest.mark.parametrize("config", [SATConfig(), SATConfig(fmt="bf16", adder_latency=6), SATConfig(nm_set=())],
                         ids=["default", "bf16-L6", "dense"])
def test_pe_verilog_converts(config):
    text = verilog.convert(PE(config), name="sat_pe")
    assert "module sat_pe" in text and "multiplier" in text and "adder" in text


def test_pe_prenormalized_verilog_has_17_bit_operands():
    text = verilog.convert(PE(SATConfig(), prenormalized=True), name="sat_pe")
    assert "input [16:0] wgt;" in text and "output [16:0] wgt_out;" in text
