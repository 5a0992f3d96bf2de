"""cocotb testbench of the processing element ``sat.hw.pe.PE`` (interleave mapping, run-time N:M lane select).

The testbench plays the feeder of the PE's class docstring: outputs of small random GEMMs are spread over the
``L`` accumulator slots (step ``t`` since reset belongs to slot ``t mod L``); every slot works through its own
queue of outputs, one operand per step, ``first`` on an output's first operand and ``last`` on its last. Dense
outputs use lane 0 with ``idx = 0``; N:M outputs keep an ``M``-wide activation group on lanes ``0..M-1`` while
the ``N`` kept weights of the group go by with their in-group indices. Unused lanes, and every input during
bubbles (``valid`` low) and stalls (``en`` low), carry random garbage.

Checked, against :func:`sat.sw.numerics.matmul` / :func:`~sat.sw.numerics.matmul_sparse` bit for bit:

* every output arrives once on ``result`` with a one-cycle ``result_valid``, in the order of the ``last`` steps,
  exactly ``latency`` steps after its ``last`` operand;
* ``act_out``/``wgt_out``/``idx_out``/``valid_out``/``first_out``/``last_out`` repeat the previous step's inputs;
* ``cycle_count`` counts steps and ``mac_count`` counts valid steps; with an interleaved stream and no bubbles
  or stalls both advance by exactly one per clock cycle (one MAC per cycle in steady state).

Parameters (``SAT_TB_PARAMS``): ``config`` (SATConfig JSON dict), ``latency``, ``seed``, ``rows``, ``cols``,
``k`` (reduction length), ``special`` (fraction of operands replaced by special values), ``prenormalized``
(FP16: the PE as the systolic array builds it, ``PE(config, prenormalized=True)``; the testbench then drives
every lane and weight as the array's edge normalizers would, :func:`sat.sim.tb_fp.normalized_fp16_operands`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import cocotb
import numpy as np

from sat.sw.config import SATConfig
from sat.sw.numerics import encode, fp32_bits, get_format, matmul, matmul_sparse

from .tb import FP32Scoreboard, idle_inserter, reset, rng_for, start_clock, tb_params
from .tb_fp import normalized_fp16_operands

__all__ = [
    "Output", "gemm_outputs", "random_operands", "pe_dense", "pe_sparse", "pe_mixed", "pe_steady_state",
]

_PARAMS = tb_params()
_NM_SET = SATConfig.from_dict(_PARAMS["config"]).nm_set if "config" in _PARAMS else ()


@dataclass
class Output:
    """One PE output: its operand steps and its golden FP32 bit pattern."""

    label: str
    row: int
    col: int
    acts: list[list[int]]  # per step: the lanes that matter (lane 0 for dense, M lanes for N:M)
    wgts: list[int]
    idxs: list[int]
    expected: int


def random_operands(rng: np.random.Generator, shape: tuple[int, ...], fmt: str, special: float) -> np.ndarray:
    """Operand bit patterns: values over a few binades of both signs (FP16: 10 % in the subnormal range), with a
    fraction ``special`` replaced by zeros, subnormals, extreme normals, Inf and NaN."""
    f = get_format(fmt)
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-4, 5, shape))
    if f.subnormals:
        tiny = rng.random(shape) < 0.10
        x[tiny] = rng.standard_normal(int(tiny.sum())) * 2.0**-18
    bits = encode(x.astype(np.float32), f)
    emax = (1 << f.exp_bits) - 1
    specials = np.array([0, f.sign_mask, 1, f.sign_mask | f.man_mask, (emax - 1) << f.man_bits | f.man_mask,
                         1 << f.man_bits, f.exp_mask, f.exp_mask | f.sign_mask, f.canonical_nan], dtype=np.uint16)
    mask = rng.random(shape) < special
    bits[mask] = rng.choice(specials, int(mask.sum()))
    return bits


def gemm_outputs(rng: np.random.Generator, fmt: str, n: int, m: int, rows: int, cols: int, k: int,
                 special: float) -> list[Output]:
    """All ``rows x cols`` outputs of a random GEMM ``X (rows, k) @ B (k, cols)``.

    ``n == m`` is dense (golden :func:`matmul`); otherwise ``B`` is N:M-sparse along ``k`` in compressed form,
    ``k`` zero-padded to a multiple of ``m`` (golden :func:`matmul_sparse`).
    """
    x = random_operands(rng, (rows, k), fmt, special)
    label = "dense" if n == m else f"{n}:{m}"
    outputs = []
    if n == m:
        w = random_operands(rng, (k, cols), fmt, special)
        y = fp32_bits(matmul(x, w, fmt))
        for r in range(rows):
            for c in range(cols):
                outputs.append(Output(label, r, c, [[int(v)] for v in x[r]], [int(v) for v in w[:, c]],
                                      [0] * k, int(y[r, c])))
        return outputs
    groups = -(-k // m)
    vals = random_operands(rng, (groups, n, cols), fmt, special)
    idx = np.sort(np.argsort(rng.random((groups, m, cols)), axis=1)[:, :n, :], axis=1)
    y = fp32_bits(matmul_sparse(x, vals, idx, m, fmt))
    xp = np.zeros((rows, groups * m), dtype=np.uint16)
    xp[:, :k] = x
    for r in range(rows):
        for c in range(cols):
            acts, wgts, idxs = [], [], []
            for g in range(groups):
                for j in range(n):
                    acts.append([int(v) for v in xp[r, g * m:(g + 1) * m]])
                    wgts.append(int(vals[g, j, c]))
                    idxs.append(int(idx[g, j, c]))
            outputs.append(Output(label, r, c, acts, wgts, idxs, int(y[r, c])))
    return outputs


def _pack(lanes: list[int], garbage: np.ndarray, width: int = 16) -> int:
    word = 0
    for lane in range(garbage.size):
        value = lanes[lane] if lane < len(lanes) else int(garbage[lane])
        word |= value << (width * lane)
    return word


def _normalized(out: Output) -> Output:
    """``out`` with every activation lane and weight as the array's edge normalizers deliver them (17 bits)."""
    def norm(values: list[int]) -> list[int]:
        return [int(v) for v in normalized_fp16_operands(np.array(values, dtype=np.uint16))] if values else []

    return replace(out, acts=[norm(step) for step in out.acts], wgts=norm(out.wgts))


async def _run(dut, name: str, outputs: list[Output], *, en_stall: float, bubble: float,
               check_steady: bool = False) -> None:
    """Feed ``outputs`` through the PE and check everything listed in the module docstring."""
    from cocotb.triggers import FallingEdge

    cfg = SATConfig.from_dict(_PARAMS["config"])
    L = cfg.adder_latency
    latency = int(_PARAMS["latency"])
    lanes = cfg.max_m
    idx_width = max(1, (lanes - 1).bit_length())
    rng = rng_for(_PARAMS, name)
    width = 16
    if _PARAMS.get("prenormalized"):
        width = 17
        outputs = [_normalized(o) for o in outputs]
    await reset(dut, en=0, valid=0, first=0, last=0)

    # slot queues of (output id, step) pairs, outputs dealt round-robin to slots in random order
    order = rng.permutation(len(outputs))
    queues: list[deque] = [deque() for _ in range(L)]
    for pos, o in enumerate(order):
        queues[pos % L].extend((int(o), s) for s in range(len(outputs[o].wgts)))
    remaining = sum(len(q) for q in queues)

    stalls = idle_inserter(rng, en_stall, 4) if en_stall else None
    bubbles = idle_inserter(rng, bubble, 3) if bubble else None
    fe = FallingEdge(dut.clk)
    t = 0          # steps issued since reset
    macs = 0       # valid steps issued
    last_step: dict[int, int] = {}
    arrivals: list[tuple[int, int]] = []   # (result bits, step count when seen)
    prev_inputs: tuple[int, ...] | None = None
    passthrough_errors: list[str] = []
    cycles = 0
    steady: list[tuple[int, int, int]] = []  # (clock cycle, cycle_count, mac_count) samples
    deadline = None

    while True:
        await fe
        cycles += 1
        if int(dut.result_valid.value):
            arrivals.append((int(dut.result.value), t))
        if prev_inputs is not None and len(passthrough_errors) < 5:
            seen = (int(dut.act_out.value), int(dut.wgt_out.value),
                    int(dut.idx_out.value), int(dut.valid_out.value), int(dut.first_out.value),
                    int(dut.last_out.value))
            if seen != prev_inputs:
                passthrough_errors.append(f"step {t}: pass-through outputs {seen} != previous inputs {prev_inputs}")
        if check_steady:
            steady.append((cycles, int(dut.cycle_count.value), int(dut.mac_count.value)))
        if remaining == 0:
            if deadline is None:
                deadline = t + latency + 2
            if t >= deadline and len(arrivals) >= len(outputs):
                break
            if t > deadline + 50:
                break
        garbage = rng.integers(0, 1 << width, lanes, dtype=np.uint64)
        if stalls is not None and next(stalls):
            dut.en.value = 0
            dut.valid.value = int(rng.integers(0, 2))
            dut.first.value = int(rng.integers(0, 2))
            dut.last.value = int(rng.integers(0, 2))
            dut.act.value = _pack([], garbage, width)
            dut.wgt.value = int(rng.integers(0, 1 << width))
            dut.idx.value = int(rng.integers(0, 1 << idx_width))
            continue
        slot = t % L
        dut.en.value = 1
        bubble_now = bubbles is not None and next(bubbles)
        if bubble_now or not queues[slot]:
            inputs = (_pack([], garbage, width), int(rng.integers(0, 1 << width)), int(rng.integers(0, 1 << idx_width)),
                      0, int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        else:
            o, s = queues[slot].popleft()
            out = outputs[o]
            first = int(s == 0)
            last = int(s == len(out.wgts) - 1)
            inputs = (_pack(out.acts[s], garbage, width), out.wgts[s], out.idxs[s], 1, first, last)
            remaining -= 1
            macs += 1
            if last:
                last_step[o] = t
        dut.act.value, dut.wgt.value, dut.idx.value = inputs[0], inputs[1], inputs[2]
        dut.valid.value, dut.first.value, dut.last.value = inputs[3], inputs[4], inputs[5]
        prev_inputs = inputs
        t += 1

    # final counters: every issued step has been clocked in by now
    cycle_count = int(dut.cycle_count.value)
    mac_count = int(dut.mac_count.value)

    fmt = cfg.fmt
    expected_order = sorted(last_step, key=last_step.get)
    sb = FP32Scoreboard(f"PE({fmt}, L={L}) {name}", fmt=fmt)
    n = min(len(arrivals), len(expected_order))
    got = np.array([a[0] for a in arrivals[:n]], dtype=np.uint64)
    exp = np.array([outputs[o].expected for o in expected_order[:n]], dtype=np.uint32)
    labels = np.array([f"{outputs[o].label}[{outputs[o].row},{outputs[o].col}]" for o in expected_order[:n]],
                      dtype=object)
    if n:
        sb.compare(got, exp, output=labels)
    problems = []
    if sb.mismatches or not n:
        problems.append(sb.report())
    if len(arrivals) != len(outputs):
        problems.append(f"{len(arrivals)} results arrived for {len(outputs)} outputs")
    offsets = {a[1] - last_step[o] for a, o in zip(arrivals, expected_order, strict=False)}
    if offsets - {latency}:
        problems.append(f"results arrived {sorted(offsets)} steps after their last operand, not {latency}")
    if cycle_count != t:
        problems.append(f"cycle_count = {cycle_count}, but {t} steps were issued")
    if mac_count != macs:
        problems.append(f"mac_count = {mac_count}, but {macs} valid operands were issued")
    problems += passthrough_errors
    if check_steady:
        # window between the first and the last operand: every clock cycle is a step and a MAC
        # from the first clocked step to the last MAC, every clock cycle must be a step and a MAC
        c0, cc0, mc0 = next(s for s in steady if s[1] >= 1)
        c1, cc1, mc1 = next(s for s in steady if s[2] >= macs)
        dut._log.info("steady state: %d clock cycles, %d steps, %d MACs", c1 - c0, cc1 - cc0, mc1 - mc0)
        if not (c1 - c0 == cc1 - cc0 == mc1 - mc0 == macs - mc0):
            problems.append(f"steady state: {c1 - c0} clock cycles but {cc1 - cc0} steps and {mc1 - mc0} MACs "
                            "(expected one MAC per cycle)")
    dut._log.info("%s: %d outputs, %d steps, %d MACs, %d results compared, %d mismatches", name, len(outputs),
                  t, macs, sb.checked, sb.mismatches)
    assert not problems, "\n".join(problems)


def _config() -> SATConfig:
    return SATConfig.from_dict(_PARAMS["config"])


def _sizes() -> tuple[int, int, int, float]:
    p = _PARAMS
    return int(p.get("rows", 3)), int(p.get("cols", 3)), int(p.get("k", 19)), float(p.get("special", 0.01))


@cocotb.test()
async def pe_dense(dut) -> None:
    """Dense GEMM outputs, random ``en`` stalls and bubbles."""
    cfg = _config()
    rows, cols, k, special = _sizes()
    rng = rng_for(_PARAMS, "pe_dense_vectors")
    outputs = gemm_outputs(rng, cfg.fmt, 1, 1, rows, cols, k, special)
    await start_clock(dut)
    await _run(dut, "pe_dense", outputs, en_stall=0.2, bubble=0.2)


@cocotb.test(skip=not _NM_SET)
async def pe_sparse(dut) -> None:
    """For every N:M of ``config.nm_set`` one GEMM (stalls and bubbles), run back to back without reset."""
    cfg = _config()
    rows, cols, k, special = _sizes()
    await start_clock(dut)
    for n, m in cfg.nm_set:
        rng = rng_for(_PARAMS, f"pe_sparse_{n}_{m}")
        outputs = gemm_outputs(rng, cfg.fmt, n, m, rows, cols, k, special)
        await _run(dut, f"pe_sparse_{n}:{m}", outputs, en_stall=0.2, bubble=0.2)


@cocotb.test()
async def pe_mixed(dut) -> None:
    """Outputs of dense and every N:M GEMM interleaved in the same slots (mode changes per output)."""
    cfg = _config()
    rows, cols, k, special = _sizes()
    rng = rng_for(_PARAMS, "pe_mixed_vectors")
    outputs = []
    for n, m in [(1, 1), *cfg.nm_set]:
        outputs += gemm_outputs(rng, cfg.fmt, n, m, 2, 2, int(rng.integers(1, k + 1)), special)
    await start_clock(dut)
    await _run(dut, "pe_mixed", outputs, en_stall=0.1, bubble=0.1)


@cocotb.test()
async def pe_steady_state(dut) -> None:
    """``L`` interleaved dense outputs, no stalls or bubbles: one MAC per clock cycle, from the counters."""
    cfg = _config()
    _, _, k, _ = _sizes()
    rng = rng_for(_PARAMS, "pe_steady_vectors")
    outputs = gemm_outputs(rng, cfg.fmt, 1, 1, 1, cfg.adder_latency, 4 * k, 0.0)
    await start_clock(dut)
    await _run(dut, "pe_steady_state", outputs, en_stall=0.0, bubble=0.0, check_steady=True)
