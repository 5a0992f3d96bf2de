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

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from .config import LINE_FIFO_DEPTH, READ_TRANSFERS, SATConfig
from .dram import DDR4Timing
from .memmap import default_placement
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
#: Cycles narrow results spend in the result writer's rounding pipeline (``sat.hw.fp.FP32Round.LATENCY``): the
#: last row of a command is written that much later.
ROUND_LATENCY = 2

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
    return _line_profile(offset, count, word, first_lane)[0]


def _dense_line(addr: int, count: int, word: int, first_lane: int = 0) -> int:
    return _line_cycles((addr % 64) // 2, count, word, first_lane)


@functools.lru_cache(maxsize=1 << 16)
def _load_cycles(config: SATConfig, kind: str, r0: int, rt: int, c0: int, ct: int, red: int, n: int, m: int,
                 trans: bool, stride: int) -> int:
    """Time of one operand load (start to ``load_done``) from an ideal memory: latency plus the line pipeline
    (:func:`_load_pipeline`: the consumer's cycles of every line, chained lines overlapped)."""
    lines = _load_profile(config, kind, r0, rt, c0, ct, red, n, m, trans, stride)
    return LOAD_LATENCY - 1 + _load_pipeline(lines, _ideal_read, chain=not _packed(kind, n, m))[0]


def _packed(kind: str, n: int, m: int) -> bool:
    """A load of packed N:M tiles (the loader chains none of its lines)."""
    return kind == "b" and bool(n and m and n != m)


def _line_sum_cycles(config: SATConfig, kind: str, r0: int, rt: int, c0: int, ct: int, red: int, n: int, m: int,
                     trans: bool, stride: int) -> int:
    """The consumer's cycles of every line of a load taken one after the other (no chaining): the loader before
    it chained lines, and the cross-check of :func:`_load_profile`."""
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


@functools.lru_cache(maxsize=1 << 12)
def _conv_load_cycles(config: SATConfig, conv, kind: str, r0: int, rt: int, c0: int, ct: int,
                      wu_start: tuple[int, int, int]) -> int:
    """Cycles of a convolution's implicit operand load (``hw/convlines.py``) from an ideal memory: its pieces
    through the line pipeline (:func:`_load_pipeline`, pieces chained)."""
    lines = _conv_load_profile(config, conv, kind, r0, rt, c0, ct, wu_start)
    return _load_pipeline(lines, _ideal_read)[0] - 1


def _conv_line_sum_cycles(config: SATConfig, conv, kind: str, r0: int, rt: int, c0: int, ct: int,
                          wu_start: tuple[int, int, int]) -> int:
    """Consumer cycles of a convolution's implicit operand load taken piece by piece (no chaining, no merged
    pieces: what the loader takes for BP, and took for FF and WU before ``hw/convlines.py`` merged them): per piece a
    record cycle, a first-beat cycle for a data piece, and its writes; the pieces of a row continue each other's
    lanes."""
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
                   row0: int, c_item: int = 4) -> int:
    """Engine time of one tile, accept to done, with the result writer's back-pressure on the drain.

    :func:`gemm_counters`' pass recurrence, with the drain of a pass taking ``WRITE_ROW`` plus the write's
    beats for each result row it writes (one cycle for a row beyond ``rt``) instead of one cycle per row. Narrow
    results (``c_item = 2``) pass through the writer's two rounding stages, which hold two rows: the engine hands
    over the last two rows of a tile a cycle each instead of waiting for their writes.
    """
    R, C, L = config.rows, config.cols, config.adder_latency
    RL = R * L
    S = steps_per_output(red, n, m)
    fill = fill_cycles(config)
    drains = []
    costs: list[int] = []
    for rb in range(0, rt, RL):
        for cb in range(0, ct, C):
            nv = min(C, ct - cb)
            d = 0
            costs = []
            for i in range(RL):
                if rb + i < rt:
                    off = ((row0 + rb + i) * c_stride + c_item * (c0 + cb)) % 64
                    costs.append(WRITE_ROW + (off + c_item * nv - 1) // 64 + 1)
                    d += costs[-1]
                else:
                    d += 1
            drains.append(max(d, RL))
    if c_item == 2 and drains:
        # the rounding pipeline takes the last two rows while earlier ones are written
        drains[-1] = max(drains[-1] - max(0, sum(costs[-2:]) - 2), RL)
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
                single: bool = False, conv=None, dram: DDR4Timing | None = None, narrow: bool = False,
                dram_channels: int = 1) -> UnitTiming:
    """Predicted time of one descriptor on the GEMM unit: its ``busy + stall`` counters.

    The model walks the unit's tiles (:func:`sat.sw.tiling.tile_plan`) as ``sat.hw.gemm_unit`` runs them:

    * a **load** takes :data:`LOAD_LATENCY` plus the line pipeline (:func:`_load_pipeline`) of its DMA lines
      (one cycle for the line record and one for its first beat unless both are taken with the previous
      line's last write (chained), one per buffer write, later beats taken with the previous beat's last
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
    ``a_trans``, ``2 * rows``; ``b_stride = 2 * cols`` or ``2 * red`` with ``b_trans``; ``c_stride = 4 * cols``, or
    ``2 * cols`` for narrow results). Narrow results (the descriptor's RESULT field) write 2 bytes per element, so
    a row has about half the beats, and reach the writer :data:`ROUND_LATENCY` cycles later.
    The fixed costs were fitted to the RTL's counters; the model is within a few cycles of them
    (``tests/test_system_rtl.py::test_unit_timing``), slower memory than the test's wait-free one only adds
    cycles: ``dram`` adds those of a DDR4 channel (the DRAM terms at the end of this module, ``docs/dram.md``).

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
    dram : sat.sw.dram.DDR4Timing, optional
        The device memory's DDR4 timing (its latency on every DMA line, the bus shared with the result writes
        unless ``dram_channels`` puts them apart, refresh, the last response); ``None`` for a memory that answers
        every beat at once.
    narrow : bool
        Results rounded to the operand format (2 bytes each) instead of FP32.
    dram_channels : int
        DDR4 channels of the device memory, each with ``dram``'s timing, the tensors placed on them by
        :func:`sat.sw.memmap.default_placement` (the card: 4, operands on C1, results on C2). With one channel
        the reads and the result writes share its bus; with two or more they are on different channels: the
        reads never wait behind writes and the read channel never turns around, each channel's bus carries its
        own direction (with its own refresh), and only the last write's response latency is left of the writes.

    Raises
    ------
    ValueError
        If the reduction does not fit the buffers, or for a channel count out of range.
    """
    placement = default_placement(dram_channels)
    sparse = bool(n and m and n != m)
    plan = tile_plan(config, rows, red, cols, n, m, single=single)
    tiles, a_double, b_double = plan.tiles, plan.a_double, plan.b_double
    a_stride = a_stride or 2 * (rows if a_trans else red)
    b_stride = b_stride or 2 * (red if b_trans else cols)
    c_item = 2 if narrow else 4
    c_stride = c_stride or c_item * cols
    single_col_tile = plan.single_column_tile
    busy = sum(gemm_counters(config, rt, red, ct, n, m).busy_cycles for _, rt, _, ct in tiles)
    writes_apart = placement["c"] not in (placement["a"], placement["b"])
    mem = _DRAMTerms(config, dram, c_stride, c_item, writes_apart=writes_apart) if dram is not None else None
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
                if mem is not None:
                    load += mem.conv_load(t, load, conv, "a", r0, rt, c0, ct, None)
            else:
                load += _load_cycles(config, "a", r0, rt, c0, ct, red, n, m, a_trans, a_stride)
                if mem is not None:
                    load += mem.load(t, load, "a", r0, rt, c0, ct, red, n, m, a_trans, a_stride)
        if not (single_col_tile and i):
            if not b_double:
                t = max(t, eng_done - load)   # B's load starts once A's is done and the engine too
            if implicit_b:
                start = (0, 0, 0) if c0 == 0 else wu_next
                b_load = LOAD_LATENCY + CONV_LOAD_LATENCY + _conv_load_cycles(config, conv, "b", r0, rt, c0, ct,
                                                                              start)
                load += b_load
                if mem is not None:
                    load += mem.conv_load(t + load - b_load, b_load, conv, "b", r0, rt, c0, ct, start)
                end = _tap_pieces(conv.c_in, conv.c_in, conv.kw, start, ct)[-1]
                ch_end = end[2] + end[3]
                wu_next = ((end[0], end[1], ch_end) if ch_end < conv.c_in else
                           ((end[0], end[1] + 1, 0) if end[1] + 1 < conv.kw else (end[0] + 1, 0, 0)))
            else:
                b_load = _load_cycles(config, "b", r0, rt, c0, ct, red, n, m, b_trans and not sparse, b_stride)
                load += b_load
                if mem is not None:
                    load += mem.load(t + load - b_load, b_load, "b", r0, rt, c0, ct, red, n, m,
                                     b_trans and not sparse, b_stride)
        prev_r0 = r0
        loads += load
        accept = max(t + load + TILE_CONTROL, eng_done)
        e = _engine_cycles(config, rt, red, c0, ct, n, m, c_stride, r0, c_item)
        engines += e
        eng_done = accept + e
        t = accept
        if mem is not None:
            mem.engine(accept, e, rt, c0, ct, r0)
    end = eng_done + UNIT_FIXED + (ROUND_LATENCY if narrow else 0)
    if mem is not None:
        end += mem.command_extra()
    return UnitTiming(cycles=end, busy_cycles=busy, load_cycles=loads, engine_cycles=engines,
                      tiles=len(tiles), a_double=a_double, b_double=b_double)


# ------------------------------------------------------------------------------------------------------------
# DRAM terms: what a DDR4 channel (sat.sw.dram) adds to the unit's time at ideal memory. Kept apart from the
# loader and writer accounting above, as differences of two runs of the same pipeline recurrence (ideal memory
# and DRAM), so that either side can be re-fitted alone; fitted to the RTL with the cocotb DRAM model on the
# 2x2 and 4x4 builds (tests/test_system_rtl.py::test_unit_timing_dram).

#: DMA read transfers in flight (``DMAReader(transfers=READ_TRANSFERS)``): a line's request waits until the
#: line that many before it has been taken in full.
READ_WINDOW = READ_TRANSFERS
#: Cycles from the request of a load's first line to the loader taking that line's record.
RECORD_DELAY = 2
#: Cycles from a transfer's last beat being taken (or a record, for the line FIFO) to the request that reuses
#: its slot.
WINDOW_DELAY = 1
#: Records in flight between the issuer and the loader (``sat.sw.config.LINE_FIFO_DEPTH``).
LINE_FIFO = LINE_FIFO_DEPTH
#: Cycle of the last result row's last write beat relative to the first request of a load that starts when the
#: engine is done (single buffering), and how far back the rows written before it still meet the load's reads.
TAIL_OFFSET = 0
TAIL_WINDOW = 32
#: Edges from an AR handshake to the first R handshake of an ideal memory.
IDEAL_READ_LATENCY = 1


@functools.lru_cache(maxsize=65536)
def _line_profile(offset: int, count: int, word: int, first_lane: int) -> tuple[int, int, int]:
    """``(cycles, beats, take)`` of one dense DMA line: :func:`_line_cycles`, its beats, and the cycles from
    the loader taking its first beat to taking its last (a later beat is taken with the previous beat's last
    write)."""
    cycles, beats, take = 2, 1, 0  # record, first beat
    src, lane, left = offset, first_lane, count
    while left:
        run = min(_LANES - src, word - lane, left)
        cycles += 1
        left -= run
        lane = (lane + run) % word
        src += run
        if src == _LANES:
            src = 0           # next beat, taken with this write
            if left:
                beats += 1
                take = cycles - 2
    return cycles, beats, take


def _load_profile(config: SATConfig, kind: str, r0: int, rt: int, c0: int, ct: int, red: int, n: int, m: int,
                  trans: bool, stride: int) -> list[tuple[int, int, int, int]]:
    """The lines of one operand load, as :func:`_load_cycles` walks them: ``(cycles, beats, take, address)``
    per line (``sum(cycles) + LOAD_LATENCY == _line_sum_cycles(...)``)."""
    mm, C = A_WORD_LANES, config.cols
    out = []
    if kind == "a":
        if trans:
            for k in range(red):
                addr = k * stride + 2 * r0
                out.append((*_line_profile((addr % 64) // 2, rt, config.rows, 0), addr))
        else:
            for i in range(r0, r0 + rt):
                addr = i * stride
                out.append((*_line_profile((addr % 64) // 2, red, mm, 0), addr))
    elif n and m and n != m:
        s = steps_per_output(red, n, m)
        beats = s + -(-s // 4)
        for pt in range(c0 // _LANES * _LANES, c0 + ct, _LANES):
            lo, hi = max(c0, pt), min(c0 + ct, pt + _LANES)
            writes = _line_cycles(lo - pt, hi - lo, C, (lo - c0) % C) - 2
            cycles = 2 + -(-s // 4) + s * writes
            out.append((cycles, beats, cycles - 2 - writes, (pt // _LANES) * beats * 64))
    elif trans:
        for j in range(c0, c0 + ct):
            addr = j * stride
            out.append((*_line_profile((addr % 64) // 2, red, 1, 0), addr))
    else:
        for k in range(red):
            addr = k * stride + 2 * c0
            out.append((*_line_profile((addr % 64) // 2, ct, C, 0), addr))
    return out


def _load_pipeline(lines: list[tuple[int, int, int, int]], read, refresh: float = 0.0, *,
                   chain: bool = True) -> tuple[int, float]:
    """Cycles from a load's first request to the loader's last write, ``read(t, beats)`` giving the edge of a
    burst's first beat for its address handshake at edge ``t``.

    The issuer puts out a record a cycle after the previous one, or two (one more per extra 4 KiB burst) after a
    record with a read; a record with a read also waits until the read :data:`READ_WINDOW` reads before it has
    been taken in full (:data:`WINDOW_DELAY`), and every record until the one :data:`LINE_FIFO` records before
    it has been taken (the line FIFO); the address handshake follows by a cycle. The loader takes a record
    :data:`RECORD_DELAY` cycles after it was put out at the earliest and the cycle after its previous line's last
    write, a line's first beat the cycle after that or when it arrives, then writes (``cycles - 2`` writes; a
    zero piece of a convolution, ``beats == 0``, has no read and ``cycles - 1`` writes; a convolution record of
    several merged pieces, ``line[4]``, is not put out before its pieces were generated, one per cycle). With
    ``chain`` (every
    load but packed tiles), a record that is there by the previous line's last write is taken in that cycle, and
    so is its first beat if it has arrived: the record and first-beat cycles overlap the previous line's writes.

    Returns that time and the cycles a refresh of ``refresh`` cycles costs the load, summed over the cycles of
    the load (divide by the refresh period for the expected cost): a refresh that starts while line ``i`` is
    the next to be taken delays its data by up to ``refresh``, of which the time the data would have waited for
    the loader anyway is hidden."""
    W, F = READ_WINDOW, LINE_FIFO
    taken: list[int] = []                    # per read: cycle its last beat was taken
    records: list[int] = []                  # per record: cycle the loader took it
    q = 0
    e = None                                 # the loader's last busy cycle
    exposure = 0.0
    prev_f = None
    gap = 0                                  # cycles from the previous record
    for j, line in enumerate(lines):
        cycles, beats, take, addr = line[:4]
        # a convolution record of several pieces (line[4]) waits for its pieces, one per cycle
        q += max(gap, line[4] - (j == 0)) if len(line) > 4 else gap
        if j >= F:
            q = max(q, records[j - F] + WINDOW_DELAY)
        if beats:
            reads = len(taken)
            if reads >= W:
                q = max(q, taken[reads - W] + WINDOW_DELAY)
            gap = 1 + (addr % 4096 + 64 * beats + 4095) // 4096
        else:
            gap = 1
        if e is None:
            rho = q + RECORD_DELAY
        elif chain and q + RECORD_DELAY <= e:
            rho = e                          # taken with the previous line's last write
        else:
            rho = max(e + 1, q + RECORD_DELAY)
        records.append(rho)
        if not beats:                        # a zero piece of a convolution: a record and writes, no read
            e = rho + cycles - 1
            continue
        first = read(q + 1, beats)
        f = max(rho + (0 if rho == e else 1), first)
        if refresh:
            start = RECORD_DELAY if prev_f is None else prev_f
            exposure += (f - start) * max(0.0, refresh - (f - first))
        prev_f = f
        e = f + cycles - 2
        taken.append(f + take)
    return (RECORD_DELAY - 1 if e is None else e), exposure


def _ideal_read(t: float, beats: int) -> float:
    return t + IDEAL_READ_LATENCY


@functools.lru_cache(maxsize=1 << 16)
def _dram_load_extra(config: SATConfig, dram: DDR4Timing, kind: str, r0: int, rt: int, c0: int, ct: int,
                     red: int, n: int, m: int, trans: bool, stride: int, delay: float = 0.0,
                     tail: tuple[tuple[int, int], ...] = ()) -> tuple[float, int]:
    """``(cycles, beats)``: how much longer one load takes from a DDR4 channel (``dram``, a
    :class:`sat.sw.dram.DDR4Timing`) than from an ideal memory, and the beats it reads.

    Its lines' pipeline (:func:`_load_pipeline`) runs with the channel's read latency plus ``delay`` per read
    (waits behind concurrent writes) and without, after the writes ``tail`` (``(last beat's cycle, beats)``
    relative to the load's first request) have reached the channel; the expected refresh cost is added
    (``exposure / tREFI``)."""
    lines = _load_profile(config, kind, r0, rt, c0, ct, red, n, m, trans, stride)
    return _dram_pipeline_extra(config, dram, lines, delay, tail, chain=not _packed(kind, n, m))


@functools.lru_cache(maxsize=1 << 12)
def _dram_conv_load_extra(config: SATConfig, dram: DDR4Timing, conv, kind: str, r0: int, rt: int, c0: int,
                          ct: int, wu_start: tuple[int, int, int] | None, delay: float = 0.0,
                          tail: tuple[tuple[int, int], ...] = ()) -> tuple[float, int]:
    """:func:`_dram_load_extra` of a convolution's implicit load (:func:`_conv_load_profile`)."""
    lines = _conv_load_profile(config, conv, kind, r0, rt, c0, ct, wu_start)
    return _dram_pipeline_extra(config, dram, lines, delay, tail)


def _dram_pipeline_extra(config: SATConfig, dram: DDR4Timing, lines: list[tuple[int, int, int, int]],
                         delay: float, tail: tuple[tuple[int, int], ...] = (), *,
                         chain: bool = True) -> tuple[float, int]:
    import math

    from .dram import DRAMChannel

    channel = DRAMChannel(dataclasses.replace(dram, trefi_ns=0.0), config.clock_hz, config.axi_data_width // 8)
    c = dram.cycles(config.clock_hz, config.axi_data_width // 8)

    writes = list(tail)

    def read(t: float, beats: int) -> float:
        while writes and writes[0][0] < t:           # writes of earlier cycles reach the channel first
            channel.write(*writes.pop(0))
        return max(t + IDEAL_READ_LATENCY, math.ceil(channel.read(t, beats))) + delay

    t_dram, exposure = _load_pipeline(lines, read, c.refresh if dram.trefi_ns else 0.0, chain=chain)
    t_ideal, _ = _load_pipeline(lines, _ideal_read, chain=chain)
    refresh = exposure / c.refresh_period if dram.trefi_ns else 0.0
    return t_dram - t_ideal + refresh, sum(line[1] for line in lines)


def _conv_load_profile(config: SATConfig, conv, kind: str, r0: int, rt: int, c0: int, ct: int,
                       wu_start: tuple[int, int, int] | None) -> list[tuple[int, int, int, int]]:
    """The pieces of a convolution's implicit load in the order ``hw/convlines.py`` issues them (row by row, a
    row's pieces in tap order), as :func:`_load_profile`'s lines plus the pieces of each record:
    ``(cycles, beats, take, address, pieces)``, ``beats`` 0 for a zero piece. A data piece that starts at channel
    0 of the pixel after the previous data piece's last one, in the same tensor row, extends that piece's read (FF
    and WU, where a pixel's channels are its whole width; BP's taps run backwards in memory). Unmerged (BP),
    ``sum(cycles) == _conv_line_sum_cycles(...)``."""
    bp = conv.pass_ == "bp"
    chan = conv.co_pad if bp else conv.c_in
    cvalid = conv.c_out if bp else chan
    if kind == "a":
        pieces = _tap_pieces(chan, cvalid, conv.kw, conv.start_of(conv.k0), conv.red)
        b, y, x = _conv_rows(conv, r0, rt)
        word = A_WORD_LANES
    else:
        pieces = _tap_pieces(chan, cvalid, conv.kw, wu_start, ct)
        b, y, x = _conv_rows(conv, conv.k0, conv.red)
        word = config.cols
    s, pad = conv.stride, conv.padding
    ty_dim, tx_dim = (conv.oh, conv.ow) if bp else (conv.height, conv.width)
    pix = 2 * (conv.c_out if bp else conv.c_in)
    row_pitch = tx_dim * pix
    img = ty_dim * row_pitch
    # per piece, for every row: (first lane, count, address or -1 for a zero piece, ty, tx, channel)
    columns: list[list[tuple[int, int, int, int, int, int]]] = []
    lane = 0
    for i, j, ch, n, always_zero in pieces:
        first_lane = lane % word
        lane += n
        if always_zero:
            columns.append([(first_lane, n, -1, 0, 0, ch)] * len(b))
            continue
        if bp:
            hn, wn = y + pad - i, x + pad - j
            valid = (hn >= 0) & (wn >= 0) & (hn % s == 0) & (wn % s == 0) & (hn // s < ty_dim) & (wn // s < tx_dim)
            ty, tx = hn // s, wn // s
        else:
            ty, tx = y * s - pad + i, x * s - pad + j
            valid = (ty >= 0) & (tx >= 0) & (ty < ty_dim) & (tx < tx_dim)
        addr = b * img + ty * row_pitch + tx * pix + 2 * ch
        columns.append([(first_lane, n, int(a) if v else -1, yy, xx, ch) for a, v, yy, xx in
                        zip(addr.tolist(), valid.tolist(), ty.tolist(), tx.tolist(), strict=True)])
    out = []
    contiguous_pixels = pix == 2 * chan
    for r in range(len(b)):
        merged: list[list[int]] = []
        prev = None
        for first_lane, n, a, yy, xx, ch in (column[r] for column in columns):
            if (contiguous_pixels and prev is not None and a >= 0 and prev[2] >= 0 and ch == 0
                    and prev[5] + prev[1] == chan and yy == prev[3] and xx == prev[4] + 1):
                merged[-1][1] += n   # the next pixel of the same tensor row: one longer read (hw/convlines.py)
                merged[-1][3] += 1
            else:
                merged.append([first_lane, n, a, 1])
            prev = (first_lane, n, a, yy, xx, ch)
        for first_lane, n, a, count in merged:
            out.append((*_line_profile((a % 64) // 2, n, word, first_lane), a, count) if a >= 0 else
                       (_line_cycles(0, n, word, first_lane) - 1, 0, 0, 0, 1))
    return out


@functools.lru_cache(maxsize=1 << 16)
def _tile_writes(config: SATConfig, rt: int, c0: int, ct: int, c_stride: int,
                 row0: int, c_item: int = 4) -> tuple[int, int, int, tuple[int, ...]]:
    """``(bursts, beats, cycles, last)`` of one engine tile's result writes: a burst per real result row, its
    beats, the result writer's cycles for them (``WRITE_ROW`` plus the beats, as in :func:`_engine_cycles`), and
    the beats of the last pass's rows in the order they are written."""
    RL, C = config.rows * config.adder_latency, config.cols
    bursts = beats = 0
    last: list[int] = []
    for rb in range(0, rt, RL):
        for cb in range(0, ct, C):
            nv = min(C, ct - cb)
            last = []
            for i in range(min(RL, rt - rb)):
                off = ((row0 + rb + i) * c_stride + c_item * (c0 + cb)) % 64
                bursts += 1
                last.append((off + c_item * nv - 1) // 64 + 1)
                beats += last[-1]
    return bursts, beats, bursts * WRITE_ROW + beats, tuple(last)


class _DRAMTerms:
    """The DRAM terms of one command (:func:`unit_cycles` with ``dram``).

    * :meth:`load`: the extra time of an operand load (:func:`_dram_load_extra`), with its reads waiting behind
      the result writes of the engine tile that runs meanwhile (double buffering): a write burst of ``b`` beats
      every ``p`` cycles holds the bus for ``D = b * beat + tWTR`` before a read can follow, an expected wait of
      ``D^2 / 2p`` (``D - p/2`` when ``D > p``) per read, weighted by the share of the engine's time it writes
      and of the load it overlaps; and at least the bus time of its reads and those writes (a saturated bus,
      writes in batches of ``write_batch`` with one turnaround each way, refresh);
    * :meth:`command_extra`: the last write's response latency.

    With ``writes_apart`` the result writes go to another channel than the operand reads (the card's placement,
    :func:`sat.sw.memmap.default_placement`): a load's reads never wait behind them nor turn the read bus around,
    and a load takes at least the larger of the two buses' busy times (each with refresh).
    """

    def __init__(self, config: SATConfig, dram: DDR4Timing, c_stride: int, c_item: int = 4, *,
                 writes_apart: bool = False) -> None:
        self.config = config
        self.dram = dram
        self.writes_apart = writes_apart
        self.c = dram.cycles(config.clock_hz, config.axi_data_width // 8)
        self.c_stride = c_stride
        self.c_item = c_item
        self.writes: tuple[int, int, int, int, int, tuple[int, ...]] | None = None

    def engine(self, accept: int, cycles: int, rt: int, c0: int, ct: int, r0: int) -> None:
        """The engine takes a tile at ``accept`` for ``cycles``: its writes overlap the next tile's loads."""
        self.writes = (accept, accept + cycles, *_tile_writes(self.config, rt, c0, ct, self.c_stride, r0,
                                                                   self.c_item))

    def load(self, start: int, ideal: int, kind: str, *args) -> int:
        """Extra cycles of a load that starts at ``start`` and takes ``ideal`` cycles from an ideal memory."""
        return self._extra(start, ideal, _dram_load_extra, kind, *args)

    def conv_load(self, start: int, ideal: int, conv, kind: str, *args) -> int:
        """:meth:`load` of a convolution's implicit operand."""
        return self._extra(start, ideal, _dram_conv_load_extra, conv, kind, *args)

    def _extra(self, start: int, ideal: int, extra_of, *args) -> int:
        if self.writes is None:
            return round(extra_of(self.config, self.dram, *args)[0])
        w_start, w_end, bursts, wbeats, wbusy, last = self.writes
        if start >= w_end and self.writes_apart:
            # the last rows' writes went to the result channel: nothing of them is ahead of this load's reads
            return round(extra_of(self.config, self.dram, *args)[0])
        if start >= w_end:
            # a load after the engine's tile (single buffering) meets the writes of its last rows, which the
            # writer puts out around the engine's done: they go to the channel ahead of the load's reads
            t = w_end - start + TAIL_OFFSET
            tail = []
            for beats in reversed(last):
                if t < -TAIL_WINDOW:
                    break
                tail.append((t, beats))
                t -= WRITE_ROW + beats
            return round(extra_of(self.config, self.dram, *args, 0.0, tuple(reversed(tail)))[0])
        extra, rbeats = extra_of(self.config, self.dram, *args)
        if not bursts:
            return round(extra)
        c = self.c
        span = max(1, w_end - w_start)
        dur = ideal + extra
        overlap = min(w_end - start, dur)
        if self.writes_apart:
            # each channel's bus carries one direction: the load waits for no write, and takes at least the
            # busier bus's time (reads on the operand channel, the overlapping writes on the result channel)
            available = 1 - c.refresh / c.refresh_period
            bus = max(rbeats, wbeats * overlap / span) * c.beat / available
            return round(max(extra, bus - ideal))
        p = wbusy / bursts
        d = wbeats / bursts * c.beat + c.wtr
        wait = d * d / (2 * p) if d <= p else d - p / 2
        delay = wait * min(1.0, wbusy / span) * (overlap / dur)
        if delay >= 0.0625:
            extra, _ = extra_of(self.config, self.dram, *args, round(delay * 16) / 16)
        # the bus carries this load's reads and the writes that overlap it
        w_over = wbeats * overlap / span
        batches = w_over / (wbeats / bursts) / c.write_batch
        bus = ((rbeats + w_over) * c.beat + batches * (c.wtr + c.rtw)) / (1 - c.refresh / c.refresh_period)
        return round(max(extra, bus - ideal))

    def command_extra(self) -> int:
        """The last write's response comes after the channel's write latency instead of at once."""
        import math

        return max(0, math.ceil(self.c.write_response) - 1)

