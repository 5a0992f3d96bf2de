"""Cycle model of the GEMM engine (``sat.hw.gemm.GemmEngine``): the counters a GEMM command produces.

The model follows the engine's sequencing pass by pass (``docs/architecture.md``, "Cycle model") and is exact:
the RTL tests compare every counter with it. Time 0 is the cycle in which the engine accepts the command.

* ``S`` = steps per output: ``red`` (dense) or ``ceil(red / M) * N`` (sparse N:M). A pass (one ``(R*L) x C``
  output tile) is ``S`` groups of ``L`` steps; passes = ``ceil(rows / (R*L)) * ceil(cols / C)``.
* The first group is issued (feeder stage A) at cycle ``2`` (accept, setup), groups follow back to back.
* The last group of pass ``q >= 1`` may be issued at cycle ``x`` only if pass ``q-1`` left the capture banks
  (transfer at cycle ``T[q-1]``) by ``x - 1``; otherwise the feeder issues bubble groups (``L`` cycles each,
  counted as stall cycles) until it may.
* Pass ``q`` is captured by PE ``(R-1, C-1)`` at ``Y[q] = x_last[q] + FILL`` with
  ``FILL = (L - 1) + 1 + (R - 1) + (C - 1) + (3 + L)`` (last slot, buffer read, skew, PE latency), and moves to
  the drain chains at ``T[q] = max(Y[q] + 1, T[q-1] + R*L)`` (the drain shifts ``R*L`` rows, one per cycle).
* ``cycles = T[last] + R*L + 1`` (drain of the last pass, then ``done``); ``busy_cycles = passes * S * L``;
  ``macs = rows * cols * S``.

No stall ever happens when ``S*L >= max(R*L, FILL + 2)``: then a pass takes exactly ``S*L`` cycles and the
utilization of a large GEMM tends to ``(rows * cols) / (passes * R*L * C)`` (edge tiles). The model assumes the
result stream is always ready (back-pressure only adds cycles).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from .config import SATConfig
from .network import Conv, Network
from .tiling import A_WORD_LANES, steps_per_output, tile_plan

__all__ = [
    "GemmCounters", "steps_per_output", "gemm_counters", "descriptor_counters", "FIRST_ISSUE", "fill_cycles",
    "GemmShape", "layer_gemms", "network_counters",
    "UnitTiming", "unit_cycles",
]

#: Cycle (after the accept cycle 0 and the setup cycle 1) in which the first group is issued.
FIRST_ISSUE = 2
#: Multiplier latency of the PE (``sat.hw.fp.FPMultiplier.LATENCY``).
MULTIPLIER_LATENCY = 3


@dataclass(frozen=True)
class GemmCounters:
    """Counters of one GEMM command (the engine's ``cycles``, ``busy_cycles``, ``stall_cycles``, ``macs``)."""

    cycles: int
    busy_cycles: int
    stall_cycles: int
    macs: int
    passes: int

    def utilization(self, config: SATConfig) -> float:
        """Useful MACs per PE per cycle: ``macs / (R * C * cycles)``."""
        return self.macs / (config.rows * config.cols * self.cycles)

    def as_dict(self) -> dict[str, int]:
        return {"cycles": self.cycles, "busy_cycles": self.busy_cycles, "stall_cycles": self.stall_cycles,
                "macs": self.macs, "passes": self.passes}


def fill_cycles(config: SATConfig) -> int:
    """``FILL``: cycles from issuing the last group of a pass to its capture by PE ``(R-1, C-1)``."""
    L = config.adder_latency
    return (L - 1) + 1 + (config.rows - 1) + (config.cols - 1) + (MULTIPLIER_LATENCY + L)


def gemm_counters(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0) -> GemmCounters:
    """Predicted counters of one GEMM command ``(rows x red) . (red x cols)``, dense or N:M (``n:m``).

    Parameters
    ----------
    config : SATConfig
        The build (array size, ``adder_latency``).
    rows, red, cols : int
        GEMM shape (each >= 1).
    n, m : int
        N:M pattern of ``B``; 0 (or ``n == m``) for dense.

    Raises
    ------
    ValueError
        For a shape below 1 or an N:M pattern the build does not support.
    """
    for name, value in (("rows", rows), ("red", red), ("cols", cols)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if n and m and n != m and (n, m) not in config.nm_set:
        raise ValueError(f"{n}:{m} is not in this build's nm_set {config.nm_set}")
    R, C, L = config.rows, config.cols, config.adder_latency
    RL = R * L
    S = steps_per_output(red, n, m)
    passes = -(-rows // RL) * -(-cols // C)
    fill = fill_cycles(config)
    x = FIRST_ISSUE           # stage-A cycle of the pass's first group
    t_prev = None             # transfer cycle of the previous pass
    stall = 0
    q = 0
    prev_offset = None
    while q < passes:
        x_last = x + (S - 1) * L
        bubbles = 0
        if t_prev is not None and x_last < t_prev + 1:
            bubbles = -(-(t_prev + 1 - x_last) // L)
            x_last += bubbles * L
        y = x_last + fill
        t = y + 1 if t_prev is None else max(y + 1, t_prev + RL)
        stall += bubbles * L
        x_next = x_last + L
        q += 1
        # Every pass has the same length, so once the offset between the transfer and the next issue repeats,
        # every later pass repeats the same increments: jump to the end.
        offset = t - x_next
        if prev_offset is not None and offset == prev_offset and q < passes:
            left = passes - q
            period = x_next - x
            x_next += left * period
            t += left * period
            stall += left * bubbles * L
            q = passes
        prev_offset = offset
        x, t_prev = x_next, t
    return GemmCounters(cycles=t_prev + RL + 1, busy_cycles=passes * S * L, stall_cycles=stall,
                        macs=rows * cols * S, passes=passes)


def descriptor_counters(desc, config: SATConfig) -> GemmCounters:
    """:func:`gemm_counters` of a :class:`sat.sw.descriptor.GemmDescriptor`."""
    if desc.sparse:
        return gemm_counters(config, desc.rows, desc.red, desc.cols, desc.n, desc.m)
    return gemm_counters(config, desc.rows, desc.red, desc.cols)


@dataclass(frozen=True)
class GemmShape:
    """One GEMM command of a training iteration: ``pass_`` is "ff", "bp" or "wu"; ``n = m = 0`` for dense."""

    layer: str
    pass_: str
    rows: int
    red: int
    cols: int
    n: int = 0
    m: int = 0


def layer_gemms(layer: Conv, batch: int, nm: tuple[int, int] | None) -> list[GemmShape]:
    """FF, BP and WU GEMMs of a network record (``sat.sw.network.Conv``; ``docs/bdwp.md``): FF
    ``(B*HW) x K x C_out`` sparse along ``K``, BP ``(B*HW) x C_out x K`` sparse along ``C_out`` (each as the
    record's pass policy decides), WU ``C_out x (B*HW) x K`` dense."""
    pixels = layer.pixels(batch)
    ff = nm if layer.ff_sparse(nm) else (0, 0)
    bp = nm if layer.bp_sparse(nm) else (0, 0)
    return [
        GemmShape(layer.name, "ff", pixels, layer.k, layer.c_out, *ff),
        GemmShape(layer.name, "bp", pixels, layer.c_out, layer.k, *bp),
        GemmShape(layer.name, "wu", layer.c_out, pixels, layer.k),
    ]


def network_counters(config: SATConfig, network: Network | Sequence[Conv], batch: int,
                     nm: tuple[int, int] | None) -> list[tuple[GemmShape, GemmCounters]]:
    """:func:`gemm_counters` of every GEMM of one training iteration (FF, BP, WU of every GEMM layer of a
    ``sat.sw.network.Network``, or of a list of its layer records)."""
    out = []
    for layer in (network.layers if isinstance(network, Network) else network):
        for g in layer_gemms(layer, batch, nm):
            out.append((g, gemm_counters(config, g.rows, g.red, g.cols, g.n, g.m)))
    return out


# ------------------------------------------------------------------------------------------------------------
# The GEMM unit (sat.hw.gemm_unit): operand loads, engine tiles and result writes of one descriptor

# The fixed costs below were fitted to the RTL's counters (the cocotb ``AxiRam`` answers without wait states) on
# 41 GEMMs of a 2x2 array (L = 2) and checked on a 4x4 array (L = 4); see tests/test_system_rtl.py::test_unit_timing.

#: Fixed cycles of a command: set-up before the first load, and after the engine's last tile the last write's
#: response and the finish and done states.
UNIT_FIXED = 10
#: Cycles of a load besides the consumer's cycles of its lines: its start state and the read latency.
LOAD_LATENCY = 4
#: Control cycles from the end of a tile's loads to the engine's accept (check and run states).
TILE_CONTROL = 3
#: Cycles the result writer spends on one result row besides its data beats (the DMA writer's request and
#: address cycles; the unit takes the next row while the current one's beats go out).
WRITE_ROW = 2
#: Cycles from the last drain of a tile's last pass to the engine taking the next tile (its ``done`` cycle).
ENGINE_HANDOVER = -1

_LANES = 32


@dataclass(frozen=True)
class UnitTiming:
    """Predicted time of one GEMM unit command (``sat.hw.gemm_unit.GemmUnit``).

    ``cycles`` is the unit's whole time (its ``busy_cycles + stall_cycles`` counters), ``busy_cycles`` the
    engine's busy sum, ``load_cycles`` the sum of the operand load times (overlapped or not), ``engine_cycles``
    the sum of the engine's command times (accept to done, result back-pressure included); ``a_double`` and
    ``b_double`` say which operands are double buffered, ``tiles`` how many engine commands it takes.
    """

    cycles: int
    busy_cycles: int
    load_cycles: int
    engine_cycles: int
    tiles: int
    a_double: bool
    b_double: bool

    @property
    def double(self) -> bool:
        """Whether any load overlaps compute (either operand double buffered)."""
        return self.a_double or self.b_double

    @property
    def stall_cycles(self) -> int:
        return self.cycles - self.busy_cycles


@functools.lru_cache(maxsize=65536)
def _line_cycles(offset: int, count: int, word: int, first_lane: int) -> int:
    """Consumer cycles of one DMA line: one for its record, one to take its first beat, then one per buffer
    write (a run of elements in one beat and one buffer word); a later beat is taken in the cycle of the
    previous beat's last write.

    ``offset`` is the first element's position in the first beat, ``count`` the elements, ``word`` the lanes of
    a buffer word (1 for a transposed line), ``first_lane`` the first element's lane in its word.
    """
    cycles = 2                # record, first beat
    src, lane, left = offset, first_lane, count
    while left:
        run = min(_LANES - src, word - lane, left)
        cycles += 1
        left -= run
        lane = (lane + run) % word
        src += run
        if src == _LANES:
            src = 0           # next beat, taken with this write
    return cycles


def _dense_line(addr: int, count: int, word: int, first_lane: int = 0) -> int:
    return _line_cycles((addr % 64) // 2, count, word, first_lane)


def _load_cycles(config: SATConfig, kind: str, r0: int, rt: int, c0: int, ct: int, red: int, n: int, m: int,
                 trans: bool, stride: int) -> int:
    """Time of one operand load (start to ``load_done``): latency plus the consumer's cycles of every line."""
    mm, C = A_WORD_LANES, config.cols
    total = LOAD_LATENCY
    if kind == "a":
        if trans:             # red lines of rt elements, one write per run of rows of one word (R banks)
            total += sum(_dense_line(k * stride + 2 * r0, rt, config.rows) for k in range(red))
        else:                 # rt lines of red elements, 32 lanes per A word
            total += sum(_dense_line(i * stride, red, mm) for i in range(r0, r0 + rt))
    elif n and m and n != m:  # packed tiles of 32 columns covering c0..c0+ct-1
        s = steps_per_output(red, n, m)
        for pt in range(c0 // _LANES * _LANES, c0 + ct, _LANES):
            lo, hi = max(c0, pt), min(c0 + ct, pt + _LANES)
            writes = _line_cycles(lo - pt, hi - lo, C, (lo - c0) % C) - 2     # per value beat
            # record and first index beat; a value beat right after an index beat is taken on its own cycle,
            # every other beat with the previous value beat's last write
            total += 2 + -(-s // 4) + s * writes
    elif trans:               # ct lines of red elements (B^T), one element per write
        total += sum(_dense_line(j * stride, red, 1) for j in range(c0, c0 + ct))
    else:                     # red lines of ct elements, C lanes per word
        total += sum(_dense_line(k * stride + 2 * c0, ct, C) for k in range(red))
    return total


#: Cycles a convolution load adds to :data:`LOAD_LATENCY`: the piece generator's three pipeline stages.
CONV_LOAD_LATENCY = 3


def _tap_pieces(chan: int, cvalid: int, kw: int, start: tuple[int, int, int], length: int
                ) -> list[tuple[int, int, int, int, bool]]:
    """The pieces of one lowered row: ``(i, j, ch, count, always_zero)`` from tap ``start`` over ``length``
    elements (``hw/convlines.py``: a piece ends at a tap's end or where the data channels end)."""
    i, j, ch = start
    out = []
    left = length
    while left:
        limit = cvalid if ch < cvalid else chan
        n = min(left, limit - ch)
        out.append((i, j, ch, n, ch >= cvalid))
        left -= n
        ch += n
        if ch == chan:
            ch = 0
            j += 1
            if j == kw:
                j, i = 0, i + 1
    return out


def _conv_rows(conv, first_pixel: int, count: int):
    """Pixel coordinates ``(b, y, x)`` of ``count`` consecutive lowered rows from ``first_pixel`` (numpy)."""
    import numpy as np

    ry, rx = (conv.height, conv.width) if conv.pass_ == "bp" else (conv.oh, conv.ow)
    p = np.arange(first_pixel, first_pixel + count)
    return p // (ry * rx), (p // rx) % ry, p % rx


def _conv_load_cycles(config: SATConfig, conv, kind: str, r0: int, rt: int, c0: int, ct: int,
                      wu_start: tuple[int, int, int]) -> int:
    """Consumer cycles of a convolution's implicit operand load (``hw/convlines.py``): per piece a record cycle, a
    first-beat cycle for a data piece, and its writes; the pieces of a row continue each other's lanes."""
    import numpy as np

    bp = conv.pass_ == "bp"
    chan = conv.co_pad if bp else conv.c_in
    cvalid = conv.c_out if bp else chan
    if kind == "a":           # FF / BP rows r0.., the chunk [k0, k0 + red) of each
        pieces = _tap_pieces(chan, cvalid, conv.kw, conv.start_of(conv.k0), conv.red)
        b, y, x = _conv_rows(conv, r0, rt)
        word = A_WORD_LANES
    else:                     # WU's B: pixels k0.., columns [c0, c0 + ct)
        pieces = _tap_pieces(chan, cvalid, conv.kw, wu_start, ct)
        b, y, x = _conv_rows(conv, conv.k0, conv.red)
        word = config.cols
    s, pad = conv.stride, conv.padding
    ty_dim, tx_dim = (conv.oh, conv.ow) if bp else (conv.height, conv.width)
    pix = 2 * (conv.c_out if bp else conv.c_in)
    row_pitch = tx_dim * pix
    img = ty_dim * row_pitch
    total = 0
    lane = 0
    for i, j, ch, n, always_zero in pieces:
        first_lane = lane % word
        lane += n
        zero_cost = _line_cycles(0, n, word, first_lane) - 1
        if always_zero:
            total += zero_cost * len(b)
            continue
        if bp:
            hn, wn = y + pad - i, x + pad - j
            valid = (hn >= 0) & (wn >= 0) & (hn % s == 0) & (wn % s == 0) & (hn // s < ty_dim) & (wn // s < tx_dim)
            ty, tx = hn // s, wn // s
        else:
            ty, tx = y * s - pad + i, x * s - pad + j
            valid = (ty >= 0) & (tx >= 0) & (ty < ty_dim) & (tx < tx_dim)
        off = ((b * img + ty * row_pitch + tx * pix + 2 * ch) % 64) // 2
        data_cost = np.array([_line_cycles(o, n, word, first_lane) for o in range(32)])
        total += int(np.where(valid, data_cost[off], zero_cost).sum())
    return total


def _engine_cycles(config: SATConfig, rt: int, red: int, c0: int, ct: int, n: int, m: int, c_stride: int,
                   row0: int) -> int:
    """Engine time of one tile, accept to done, with the result writer's back-pressure on the drain.

    :func:`gemm_counters`' pass recurrence, with the drain of a pass taking ``WRITE_ROW`` plus the write's
    beats for each result row it writes (one cycle for a row beyond ``rt``) instead of one cycle per row.
    """
    R, C, L = config.rows, config.cols, config.adder_latency
    RL = R * L
    S = steps_per_output(red, n, m)
    fill = fill_cycles(config)
    drains = []
    for rb in range(0, rt, RL):
        for cb in range(0, ct, C):
            nv = min(C, ct - cb)
            d = 0
            for i in range(RL):
                if rb + i < rt:
                    off = ((row0 + rb + i) * c_stride + 4 * (c0 + cb)) % 64
                    d += WRITE_ROW + (off + 4 * nv - 1) // 64 + 1
                else:
                    d += 1
            drains.append(max(d, RL))
    x, t_prev, d_prev = FIRST_ISSUE, None, 0
    for d in drains:
        x_last = x + (S - 1) * L
        if t_prev is not None and x_last < t_prev + 1:
            x_last += -(-(t_prev + 1 - x_last) // L) * L
        t = x_last + fill + 1 if t_prev is None else max(x_last + fill + 1, t_prev + d_prev)
        x, t_prev, d_prev = x_last + L, t, d
    return t_prev + d_prev + ENGINE_HANDOVER


def unit_cycles(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0, *,
                a_trans: bool = False, b_trans: bool = False, a_stride: int | None = None,
                b_stride: int | None = None, c_stride: int | None = None,
                single: bool = False, conv=None) -> UnitTiming:
    """Predicted time of one descriptor on the GEMM unit: its ``busy + stall`` counters.

    The model walks the unit's tiles (:func:`sat.sw.tiling.tile_plan`) as ``sat.hw.gemm_unit`` runs them:

    * a **load** takes :data:`LOAD_LATENCY` plus the consumer's cycles for every DMA line (one for the line
      record, one for its first beat, one per buffer write, later beats taken with the previous beat's last
      write: a row-major line writes runs of up to 32 elements (A) or ``min(C, 32)`` (B), an A^T line runs of up to
      ``R`` rows that share a word (one per bank), a B^T line one element; a packed N:M tile one cycle for its
      record and first index beat, one for each value beat that follows an index beat, and its writes per
      value beat); memory delivers a 512-bit beat per cycle and is never the limit;
    * an **engine** tile takes :func:`gemm_counters`' time with every pass's drain stretched by the result
      writer (:data:`WRITE_ROW` plus one cycle per beat per result row, the next row taken while one is written);
    * the load of a **single-buffered** operand waits for the previous tile's engine to be done; of a
      **double-buffered** one it starts when the engine accepts the previous tile; the engine takes a tile when
      both its loads and the previous tile are done; :data:`TILE_CONTROL` per tile and :data:`UNIT_FIXED` per
      command add the cycles of the control states and of the last write.

    Operands are assumed 64-byte aligned; strides default to packed rows (``a_stride = 2 * red`` or, with
    ``a_trans``, ``2 * rows``; ``b_stride = 2 * cols`` or ``2 * red`` with ``b_trans``; ``c_stride = 4 * cols``).
    The fixed costs were fitted to the RTL's counters; the model is within a few cycles of them
    (``tests/test_system_rtl.py::test_unit_timing``), slower memory than the test's wait-free one only adds
    cycles.

    Parameters
    ----------
    config : SATConfig
    rows, red, cols : int
        GEMM shape.
    n, m : int
        N:M pattern of ``B`` (packed operand); 0 for dense.
    a_trans, b_trans : bool
        ``A_TRANS`` / ``B_TRANS`` (dense ``B`` only).
    a_stride, b_stride, c_stride : int, optional
        Row strides in bytes.
    single : bool
        Model the unit single buffered whatever the shape (as before double buffering), for comparisons.
    conv : ConvDescriptor, optional
        The convolution descriptor whose GEMM view this is: its implicit operand (A of FF and BP, B of WU) loads
        as the pieces of ``hw/convlines.py``.

    Raises
    ------
    ValueError
        If the reduction does not fit the buffers.
    """
    sparse = bool(n and m and n != m)
    plan = tile_plan(config, rows, red, cols, n, m, single=single)
    tiles, a_double, b_double = plan.tiles, plan.a_double, plan.b_double
    a_stride = a_stride or 2 * (rows if a_trans else red)
    b_stride = b_stride or 2 * (red if b_trans else cols)
    c_stride = c_stride or 4 * cols
    single_col_tile = plan.single_column_tile
    busy = sum(gemm_counters(config, rt, red, ct, n, m).busy_cycles for _, rt, _, ct in tiles)
    loads = engines = 0
    t = 0                     # loader time: start of the next tile's loads
    eng_done = 0              # cycle the engine takes its next tile (0: idle from the start)
    prev_r0 = None
    implicit_a = conv is not None and conv.pass_ != "wu"
    implicit_b = conv is not None and conv.pass_ == "wu"
    wu_next = (0, 0, 0)       # WU's column tiles continue where the previous tile ended
    for i, (r0, rt, c0, ct) in enumerate(tiles):
        load = 0
        if r0 != prev_r0:
            if not a_double:
                t = max(t, eng_done)
            if implicit_a:
                load += LOAD_LATENCY + CONV_LOAD_LATENCY + _conv_load_cycles(config, conv, "a", r0, rt, c0, ct, None)
            else:
                load += _load_cycles(config, "a", r0, rt, c0, ct, red, n, m, a_trans, a_stride)
        if not (single_col_tile and i):
            if not b_double:
                t = max(t, eng_done - load)   # B's load starts once A's is done and the engine too
            if implicit_b:
                start = (0, 0, 0) if c0 == 0 else wu_next
                load += LOAD_LATENCY + CONV_LOAD_LATENCY + _conv_load_cycles(config, conv, "b", r0, rt, c0, ct,
                                                                              start)
                end = _tap_pieces(conv.c_in, conv.c_in, conv.kw, start, ct)[-1]
                ch_end = end[2] + end[3]
                wu_next = ((end[0], end[1], ch_end) if ch_end < conv.c_in else
                           ((end[0], end[1] + 1, 0) if end[1] + 1 < conv.kw else (end[0] + 1, 0, 0)))
            else:
                load += _load_cycles(config, "b", r0, rt, c0, ct, red, n, m, b_trans and not sparse, b_stride)
        prev_r0 = r0
        loads += load
        accept = max(t + load + TILE_CONTROL, eng_done)
        e = _engine_cycles(config, rt, red, c0, ct, n, m, c_stride, r0)
        engines += e
        eng_done = accept + e
        t = accept
    return UnitTiming(cycles=eng_done + UNIT_FIXED, busy_cycles=busy, load_cycles=loads, engine_cycles=engines,
                      tiles=len(tiles), a_double=a_double, b_double=b_double)
