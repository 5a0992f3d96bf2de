"""cocotb testbench of the systolic array ``sat.hw.array.SystolicArray`` on its own: the testbench is the feeder.

A random GEMM ``A . B`` (dense, or N:M-sparse ``B`` for every pattern of the build) is cut into passes of
``(R*L) x C`` output tiles. For each pass the testbench sends ``S`` groups of ``L`` steps (group ``k``, slot ``i``:
activations of tile rows ``i*R + r``, the weight of group ``k`` per column), following the feeder rule of the
array: before the last group of a pass it waits (bubble groups) until ``transfers`` has caught up. On top of
that it inserts random bubble groups and random ``en`` stalls (garbage on every input while ``en`` is low or
``valid`` is low), and back-pressures the ``drain`` stream at random. Every drained tile row is checked
against :mod:`sat.sw.numerics` bit for bit; every output must arrive exactly once.

Dense steps put ``A[row, k]`` in lane ``k mod max_m`` with ``idx = k mod max_m``; N:M steps put the ``M``-wide
group in lanes ``(g*M mod max_m) ..`` with ``idx`` = that offset plus the kept weight's in-group index, as the
GEMM engine's buffers do. Unused lanes carry garbage.

Parameters (``SAT_TB_PARAMS``): ``config`` (SATConfig dict), ``seed``, ``rows``, ``red``, ``cols``,
``en_stall``, ``bubble``, ``backpressure`` (probabilities).
"""

from __future__ import annotations

import cocotb
import numpy as np

from sat.sw.config import SATConfig
from sat.sw.nmformat import compress
from sat.sw.numerics import encode, fp32_bits, matmul, matmul_sparse

from .tb import FP32Scoreboard, backpressure, idle_inserter, reset, rng_for, start_clock, tb_params

__all__ = ["array_steps", "array_dense", "array_sparse"]

_PARAMS = tb_params()


def array_steps(config: SATConfig, a: np.ndarray, b_vals: np.ndarray, b_idx: np.ndarray, m: int,
                row_base: int, col_base: int) -> list[list[tuple[list[int | None], list[int], list[int]]]]:
    """Groups of one pass: per group, ``L`` steps of (lanes per row, weight per column, idx per column).

    ``b_vals``/``b_idx`` are ``(S, cols)`` in step order (dense: ``B`` itself with zero indices, ``m = 1``).
    Lanes are ``None`` where the testbench puts garbage.
    """
    R, C, L, lanes = config.rows, config.cols, config.adder_latency, config.max_m
    rows, red = a.shape
    steps, cols = b_vals.shape
    n = steps // -(-red // m) if m > 1 else 1
    groups = []
    for s in range(steps):
        g = s // n
        k0 = g * m                       # reduction index of the group's first element
        offset = k0 % lanes
        group = []
        for i in range(L):
            acts = []
            for r in range(R):
                row = row_base + i * R + r
                word: list[int | None] = [None] * lanes
                for j in range(m):
                    k = k0 + j
                    word[offset + j] = int(a[row, k]) if row < rows and k < red else 0
                acts.append(word)
            wgts = [int(b_vals[s, col_base + c]) if col_base + c < cols else 0 for c in range(C)]
            idxs = [offset + (int(b_idx[s, col_base + c]) if col_base + c < cols else 0) for c in range(C)]
            group.append((acts, wgts, idxs))
        groups.append(group)
    return groups


def _pack(values: list[int], width: int) -> int:
    word = 0
    for j, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (width * j)
    return word


async def _run(dut, name: str, nm: tuple[int, int] | None, *, clock: bool = True) -> None:
    from cocotb.triggers import FallingEdge

    p = _PARAMS
    config = SATConfig.from_dict(p["config"])
    R, C, L, lanes = config.rows, config.cols, config.adder_latency, config.max_m
    idx_width = max(1, (lanes - 1).bit_length())
    rng = rng_for(p, name)
    rows, red, cols = int(p["rows"]), int(p["red"]), int(p["cols"])
    fmt = config.fmt
    x = rng.standard_normal((rows, red)) * 4
    if fmt == "fp16":  # every third activation row lies in FP16's subnormal range (kept, gradual underflow)
        x[::3] *= 2.0**-18
    a = encode(x, fmt)
    if nm is None:
        b = encode(rng.standard_normal((red, cols)), fmt)
        expected = fp32_bits(matmul(a, b, fmt))
        b_vals, b_idx, m = b, np.zeros(b.shape, dtype=np.int64), 1
    else:
        n, m = nm
        op = compress(rng.standard_normal((red, cols)), n, m)
        vals = encode(op.values, fmt)
        expected = fp32_bits(matmul_sparse(a, vals, op.indices, m, fmt))
        b_vals = vals.reshape(-1, cols)
        b_idx = op.indices.reshape(-1, cols).astype(np.int64)
    passes = [(rb, cb) for rb in range(0, rows, R * L) for cb in range(0, cols, C)]

    if clock:
        await start_clock(dut)
    await reset(dut, en=0, valid=0, first=0, last=0, drain__ready=0)
    fe = FallingEdge(dut.clk)
    en_stalls = idle_inserter(rng, float(p.get("en_stall", 0)), 3)
    bubbles = idle_inserter(rng, float(p.get("bubble", 0)), 2)
    drain_stalls = backpressure(rng, float(p.get("backpressure", 0)), 4)

    got = np.full((rows, cols), 0xDEADBEEF, dtype=np.uint64)
    seen = np.zeros((rows, cols), dtype=np.int64)
    drained: list[int] = []      # pass number of each drained row
    row_in_pass = 0
    lasts_sent = 0
    # the step stream: (pass, group index, slot) or None for a bubble step
    q, gidx, slot = 0, 0, 0
    groups = array_steps(config, a, b_vals, b_idx, m, *passes[0])
    bubble_group = False
    for _cycle in range(200_000):
        # sample the drain (ready was set at the previous falling edge for this cycle's handshake)
        ready = 0 if next(drain_stalls) else 1
        dut.drain__ready.value = ready
        if int(dut.drain__valid.value) and ready:
            raw = dut.drain__payload.value.to_unsigned()
            row_bits = max(1, (R * L - 1).bit_length())
            tile_row = raw & ((1 << row_bits) - 1)
            if tile_row != row_in_pass:
                raise AssertionError(f"drain row {tile_row}, expected {row_in_pass}")
            pq = len(drained) // (R * L)
            rb, cb = passes[pq]
            out_row = rb + tile_row
            for c in range(C):
                if out_row < rows and cb + c < cols:
                    got[out_row, cb + c] = (raw >> (row_bits + 32 * c)) & 0xFFFFFFFF
                    seen[out_row, cb + c] += 1
            drained.append(pq)
            row_in_pass = (row_in_pass + 1) % (R * L)
        if len(drained) == len(passes) * R * L:
            break
        # drive the next step
        if q >= len(passes) or next(en_stalls):
            dut.en.value = 0 if q < len(passes) else 1
            dut.valid.value = int(rng.integers(0, 2)) if q < len(passes) else 0
            dut.first.value = int(rng.integers(0, 2))
            dut.last.value = int(rng.integers(0, 2))
            dut.act.value = int(rng.integers(0, 1 << 62)) << 2
            dut.wgt.value = int(rng.integers(0, 1 << 16))
            await fe
            continue
        dut.en.value = 1
        if slot == 0:
            last_group = gidx == len(groups) - 1
            blocked = last_group and int(dut.transfers.value) != lasts_sent % (1 << 16)
            bubble_group = blocked or next(bubbles)
            if not bubble_group and last_group:
                lasts_sent += 1
        if bubble_group:
            dut.valid.value = 0
            dut.first.value = int(rng.integers(0, 2))
            dut.last.value = int(rng.integers(0, 2))
            dut.act.value = int(rng.integers(0, 1 << 62))
            dut.wgt.value = int(rng.integers(0, 1 << 62)) & ((1 << (16 * C)) - 1)
        else:
            acts, wgts, idxs = groups[gidx][slot]
            garbage = rng.integers(0, 1 << 16, (R, lanes))
            flat = [v if v is not None else int(garbage[r, j]) for r, word in enumerate(acts)
                    for j, v in enumerate(word)]
            dut.act.value = _pack(flat, 16)
            dut.wgt.value = _pack(wgts, 16)
            dut.idx.value = _pack(idxs, idx_width)
            dut.valid.value = 1
            dut.first.value = int(gidx == 0)
            dut.last.value = int(gidx == len(groups) - 1)
        slot += 1
        if slot == L:
            slot = 0
            if not bubble_group:
                gidx += 1
                if gidx == len(groups):
                    gidx = 0
                    q += 1
                    if q < len(passes):
                        groups = array_steps(config, a, b_vals, b_idx, m, *passes[q])
        await fe
    else:
        raise AssertionError(f"{name}: only {len(drained)} of {len(passes) * R * L} tile rows drained")
    sb = FP32Scoreboard(f"SystolicArray {R}x{C} L={L} {fmt} {name}", fmt=fmt)
    rr, cc = np.indices(expected.shape)
    sb.compare(got.ravel(), expected.ravel(), row=rr.ravel(), col=cc.ravel())
    dut._log.info("%s: %d passes, %d outputs compared", name, len(passes), sb.checked)
    sb.check()
    assert (seen == 1).all(), f"{(seen != 1).sum()} outputs missing or repeated"


@cocotb.test()
async def array_dense(dut) -> None:
    """Dense GEMM through the array, with stalls, bubbles and drain back-pressure."""
    await _run(dut, "array_dense", None)


@cocotb.test()
async def array_sparse(dut) -> None:
    """Every N:M pattern of the build, one after another on the same array."""
    config = SATConfig.from_dict(_PARAMS["config"])
    for j, nm in enumerate(config.nm_set):
        await _run(dut, f"array_sparse_{nm[0]}of{nm[1]}", nm, clock=j == 0)
