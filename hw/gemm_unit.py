"""``GemmUnit``: the GEMM engine of the core, :class:`~sat.hw.gemm.GemmEngine` with its operand loader, result
writer and tiling, behind the engine interface of :class:`~sat.hw.core.SATCore` (``engine_members``).

For each command of the command processor (``docs/system.md``, "End to end")::

    for each row tile (r0, rt) of A:                  rt <= rt_max rows (A buffer)
        load A rows r0..r0+rt-1 (or, A_TRANS, the stored rows k with their elements r0..r0+rt-1)
        for each column tile (c0, ct) of B:           ct <= ct_max columns (B buffer)
            load B columns c0..c0+ct-1 (dense rows, B_TRANS rows, or the packed N:M tiles covering them);
                B is loaded once when it has a single column tile
            run GemmEngine on the (rt x red) . (red x ct) tile; write its C rows (FP32, byte strobes)

* **Tile sizes** are powers of two times the array size. With ``pa`` the largest ``p`` such that
  ``2**p * ceil(red / max_m) <= a_depth`` and ``pb`` the largest with ``2**pb * S <= b_depth`` (``S = red``
  dense, ``ceil(red / M) * N`` sparse), each operand is

  - **double buffered** when it fits its buffer twice and halving it pays: B when ``pb >= 1`` and it is
    reloaded (``cols > C * 2**pb``: several full-size column tiles), with ``ct_max = C * 2**(pb-1)`` and halves
    at words ``0`` and ``b_depth / 2``; A when ``pa >= 1``, a half row tile ``R * 2**(pa-1)`` still fills an
    array pass (``R * L`` rows) or holds all ``rows``, and B is loaded once or double buffered, with
    ``rt_max = R * 2**(pa-1)`` and halves at ``0`` and ``a_depth / 2``;
  - **single buffered** otherwise, as before double buffering: ``rt_max = R * 2**pa`` / ``ct_max = C * 2**pb``,
    at base 0, each load waiting until the engine is done with the previous tile.

  (The design asked for halving both operands whenever both fit twice. Halving an operand that is loaded once
  only makes it reloaded; a row tile of fewer than ``R * L`` rows wastes part of every pass; and halving A
  while B is reloaded single buffered gains nothing, since every tile waits for B's load. On 356 random shapes
  ``sat.sw.perfmodel.unit_cycles`` gives this rule 6.6 % fewer cycles (geometric mean) than halving both, at
  most 2 % more on 4 of them.) :func:`tile_plan` states the same in Python (``TilePlan.a_double``,
  ``b_double``).
* **Double buffering.** The loader runs one tile ahead of the engine: once the engine has accepted tile ``t``,
  the loader loads tile ``t+1``'s operands (A if it starts a new row tile, B unless B has a single column tile
  and is already loaded) while ``t`` computes, then waits until the engine is done with ``t`` and hands it
  ``t+1``; the load of a single-buffered operand first waits for the engine to be done. The A half flips on
  every A load of a double-buffered A, the B half likewise. This is safe because a load into a half starts
  only after the engine accepted tile ``t``, i.e. after tile ``t-1`` was done: tile ``t`` reads the halves last
  loaded (for ``t`` or, when ``t`` did not reload an operand, an earlier tile), a flip writes the other half,
  which only tiles up to ``t-1`` read, and ``t+2``'s loads wait for ``t+1`` to be accepted (``t`` done) in turn.
* **Registers.** The loader has its own tile (``r0, rt, c0, ct``, C row-tile address); the engine and the
  result writer use a copy (``eng_c0, eng_ct, eng_c_rowtile_addr``) taken when the engine accepts a tile. The
  engine pulses ``done`` two cycles after it popped the last pass's last drain row, which happens when the
  writer accepted that row (or dropped it beyond ``rows``; earlier rows come first), and only then accepts the
  next tile; so every result of a tile reaches the writer before its copy changes. The writer computes the
  address, beats and strobes of a row when it takes it and keeps them in its own registers while its write is
  outstanding.
* **Result writer**: a write register (request, then one cycle per beat) and a holding register in front of
  it. A result is taken whenever the holding register is empty: into the write registers when they are free
  (idle, or in the cycle of the current row's last beat), else into the holding register, which moves to the
  write registers in the last beat's cycle; so the next row's request follows the current row's last beat at
  once. With ``DMAWriter`` (request taken between transfers, then an address cycle) a row of ``k`` beats costs
  ``k + 2`` cycles (``sat.sw.perfmodel.WRITE_ROW``), one less than without the holding register.
* **The reduction is never split** (partial sums would need a read-modify-write of C): a command whose
  ``ceil(red / max_m)`` exceeds ``a_depth`` or whose ``S`` exceeds ``b_depth`` ends at once, before any DMA,
  with ``BAD_SHAPE`` (reported by the engine: the descriptor checks of the command processor do not know the
  buffer sizes; ``sat.sw.regmap`` defines this use). The scheduler / driver must tile ``K``;
  :func:`max_reduction` gives the limit (unchanged by double buffering, which only runs when both operands fit
  twice).
* **Loader**: one DMA read per stored line (a row of A, A^T, B or B^T, restricted to the tile's elements) or
  per packed N:M column tile of 32 columns (its ``S + ceil(S/4)`` beats), up to 4 in flight. The consumer takes
  a line record in one cycle and the line's first beat in one cycle, then writes one buffer word per cycle; it
  takes the line's next beat in the cycle of the current beat's last write, so a beat costs its writes (a value
  beat right after an index beat still costs one cycle of its own, an index beat none after the first). One
  write takes a run of the beat's elements that share a buffer word:

  - row-major A / dense B: consecutive elements of one word (up to ``min(max_m or C, 32)``);
  - B^T: one element (its neighbours in the line are consecutive words of one lane);
  - A^T: the rows of one word group. Row ``r`` of the tile in stored line ``k`` goes to bank ``r mod R``, word
    ``(r div R) * kw + k div max_m`` (plus the half base), lane ``k mod max_m``: the rows with the same
    ``r div R`` share word and lane and differ only in bank, so they are one ``a_write`` with a lane mask of
    that one lane for each of their banks, bank ``b`` taking the beat element ``src - bank + b``. One shifter
    serves all writes: lane ``j`` of the shifted beat holds element ``src - dl - bank + j`` and bank ``b``
    reads lanes ``b..b+max_m-1``, which is the run of a row-major write for bank ``bank`` and the row of each
    bank on lane ``dl`` for A^T (no data mux per bank). A beat takes one write per word group it touches: an
    aligned 32-row beat on 32 banks one, an unaligned one two.

  So A^T loads at up to ``min(R, 32)`` elements per cycle, row-major A at up to ``min(max_m, 32)``, dense B at
  up to ``min(C, 32)``, B^T at one. ``sat.sw.perfmodel.unit_cycles`` models the unit's time with it.
* **BAD_OPERAND** for a packed operand: an in-group index ``>= M`` or indices not strictly ascending within
  a group, checked on every value beat over the lanes of real columns of the packed tile (padding lanes are
  not checked, unlike ``nmformat.unpack`` in the software model). The load completes (every DMA beat is
  consumed), nothing is computed or written for that tile, and the command ends with ``BAD_OPERAND``.
* **Errors**: a read error (any beat) ends the command after the load with ``AXI_READ`` (nothing of that
  tile is computed); a write error with ``AXI_WRITE`` at the next tile boundary; ``abort`` is honoured at
  tile boundaries with ``ABORTED``. Double buffered, the "tile boundary" is the start of the next tile's load
  and an error of a prefetched tile is seen after its load: in every case the tile the engine computes
  meanwhile finishes and is written, nothing of later tiles is computed. Outstanding writes always drain and
  the engine finishes before ``done``. C may be partly written after an error (earlier tiles).
* **Counters** (``done``): ``macs`` and ``busy_cycles`` are the sums of the engine's (useful MACs
  ``rows * cols * S``; steps with operands); ``stall_cycles`` is every other cycle from accepting the
  command to ``done`` (loads not hidden behind compute, writes, array fill and drain), so ``busy + stall`` is
  the unit's whole time.

Requires 512-bit AXI data (the packed N:M format is defined on 64-byte beats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.regmap import ErrorCode

from .cmdproc import DIM_WIDTH, ENGINE_COUNTER_WIDTH, ERROR_WIDTH, engine_command_layout
from .core import SATCore, engine_members
from .gemm import GemmEngine

__all__ = ["GemmUnit", "TilePlan", "tile_plan", "max_reduction", "gemm_unit", "sat_core",
           "DEFAULT_A_DEPTH", "DEFAULT_B_DEPTH"]

DEFAULT_A_DEPTH = 1024
DEFAULT_B_DEPTH = 1024
BEAT_BYTES = 64
LANES = 32


def _steps(red: int, n: int, m: int) -> int:
    return -(-red // m) * n if (n and m and n != m) else red


def _pow2_fit(words: int, depth: int) -> int:
    """Largest ``p`` with ``2**p * words <= depth`` (-1 if ``words > depth``)."""
    p = -1
    while words << (p + 1) <= depth:
        p += 1
    return p


@dataclass(frozen=True)
class TilePlan:
    """How :class:`GemmUnit` splits one command: tile sizes, the tiles ``(r0, rt, c0, ct)`` in order, and which
    operands are double buffered (tiles sized for half that buffer, loaded while the previous tile computes)."""

    rt_max: int
    ct_max: int
    tiles: tuple[tuple[int, int, int, int], ...]
    a_double: bool = False
    b_double: bool = False

    @property
    def double(self) -> bool:
        """Whether the command overlaps any load with compute (either operand double buffered)."""
        return self.a_double or self.b_double

    @property
    def b_loads(self) -> int:
        """How often B is loaded (once when there is a single column tile)."""
        col_tiles = len({c0 for _, _, c0, _ in self.tiles})
        return 1 if col_tiles == 1 else len(self.tiles)


def tile_plan(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0, *,
              a_depth: int = DEFAULT_A_DEPTH, b_depth: int = DEFAULT_B_DEPTH) -> TilePlan:
    """The tiling :class:`GemmUnit` applies to a ``rows x red x cols`` command (``n:m`` sparse or dense).

    With ``pa``, ``pb`` the largest ``p`` such that ``2**p * ceil(red / max_m) <= a_depth`` and
    ``2**p * S <= b_depth``: B is double buffered (``ct_max = C * 2**(pb-1)``, else ``C * 2**pb``) if
    ``pb >= 1`` and ``cols > C * 2**pb`` (B is reloaded); A (``rt_max = R * 2**(pa-1)``, else ``R * 2**pa``)
    if ``pa >= 1``, a half row tile ``R * 2**(pa-1)`` holds an array pass (``R * L`` rows) or all ``rows``,
    and B is loaded once or double buffered.

    Raises
    ------
    ValueError
        If the reduction does not fit the buffers (the unit answers ``BAD_SHAPE``): tile ``K`` below
        :func:`max_reduction`.
    """
    kw = -(-red // config.max_m)
    s = _steps(red, n, m)
    pa, pb = _pow2_fit(kw, a_depth), _pow2_fit(s, b_depth)
    if pa < 0 or pb < 0:
        raise ValueError(f"a reduction of {red} does not fit the engine buffers (A: {kw} of {a_depth} words per "
                         f"bank, B: {s} of {b_depth} steps): split K into chunks of at most "
                         f"{max_reduction(config, n, m, a_depth=a_depth, b_depth=b_depth)}")
    a_double, b_double = _double_buffered(config, rows, cols, pa, pb)
    rt_max, ct_max = config.rows << (pa - a_double), config.cols << (pb - b_double)
    tiles = []
    for r0 in range(0, rows, rt_max):
        for c0 in range(0, cols, ct_max):
            tiles.append((r0, min(rt_max, rows - r0), c0, min(ct_max, cols - c0)))
    return TilePlan(rt_max, ct_max, tuple(tiles), a_double, b_double)


def _double_buffered(config: SATConfig, rows: int, cols: int, pa: int, pb: int) -> tuple[bool, bool]:
    """Which operands :class:`GemmUnit` double-buffers when they fit ``2**pa`` / ``2**pb`` times: ``(A, B)``."""
    b_reloaded = cols > config.cols << pb
    b_double = pb >= 1 and b_reloaded
    half_rows = config.rows << max(pa - 1, 0)
    fills_pass = half_rows >= config.rows * config.adder_latency or rows <= half_rows
    a_double = pa >= 1 and fills_pass and (b_double or not b_reloaded)
    return a_double, b_double


def max_reduction(config: SATConfig, n: int = 0, m: int = 0, *, a_depth: int = DEFAULT_A_DEPTH,
                  b_depth: int = DEFAULT_B_DEPTH) -> int:
    """Longest reduction ``K`` a command may have on a unit with these buffers (dense, or ``n:m`` sparse)."""
    by_a = a_depth * config.max_m
    by_b = b_depth if not (n and m and n != m) else (b_depth // n) * m
    return min(by_a, by_b)


class GemmUnit(wiring.Component):
    """The engine slot's GEMM unit: DMA operand loader, :class:`GemmEngine`, result writer, tiling.

    Ports: :func:`sat.hw.core.engine_members` (``control``, ``rd_req``/``rd_data``, ``wr_req``/``wr_data``/
    ``wr_done``). Behaviour: see the module docstring.

    Parameters
    ----------
    config : SATConfig
        Needs ``axi_data_width == 512``.
    beats_width : int
        Width of DMA request lengths.
    a_depth, b_depth : int
        Buffer depths of the engine (words per A bank, words of B; powers of two).

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`SATConfig`.
    ValueError
        For another AXI data width or invalid depths (see :class:`GemmEngine`).
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32, a_depth: int = DEFAULT_A_DEPTH,
                 b_depth: int = DEFAULT_B_DEPTH) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512:
            raise ValueError(f"GemmUnit reads the packed N:M format in 64-byte beats and needs "
                             f"axi_data_width=512, not {config.axi_data_width}")
        self._config = config
        self._beats_width = beats_width
        self._engine = GemmEngine(config, a_depth=a_depth, b_depth=b_depth)
        # The engine is elaborated only as part of this unit; an unused unit already warns for itself, so the
        # engine must not add its own "created but never used" warning (it fired at random points in tests).
        self._engine._MustUse__silence = True
        self._a_depth, self._b_depth = a_depth, b_depth
        super().__init__(engine_members(config, beats_width))

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def a_depth(self) -> int:
        return self._a_depth

    @property
    def b_depth(self) -> int:
        return self._b_depth

    def elaborate(self, platform) -> Module:  # noqa: C901 (one FSM per concern, kept together)
        m = Module()
        cfg = self._config
        R, C, L, mm = cfg.rows, cfg.cols, cfg.adder_latency, cfg.max_m
        lg_mm = exact_log2(mm)
        lg_l = (L - 1).bit_length()      # ceil(log2(L)): a row tile of R * 2**p rows fills a pass when p >= lg_l
        wm = max(mm, C)
        aw = cfg.axi_addr_width
        bw = self._beats_width
        m.submodules.gemm = eng = self._engine
        a_aw, b_aw = exact_log2(self._a_depth), exact_log2(self._b_depth)
        dw_buf = max(a_aw, b_aw) + 1
        cmd = self.control.cmd
        done = self.control.done

        # ------------------------------------------------------------------ command and derived values
        c = Signal(engine_command_layout(aw), name="c")
        kw = Signal(DIM_WIDTH, name="kw")
        steps = Signal(DIM_WIDTH + 4, name="steps")
        m_val = Signal(5, name="m_val")
        tile_bytes = Signal(aw, name="packed_tile_bytes")
        pa = Signal(range(a_aw + 1), name="pa")
        pb = Signal(range(b_aw + 1), name="pb")
        fits = Signal(name="fits")
        rt_max = Signal(DIM_WIDTH + 21, name="rt_max")
        ct_max = Signal(DIM_WIDTH + 21, name="ct_max")
        rt_cstride = Signal(aw, name="rt_cstride")
        rl_cstride = Signal(aw, name="rl_cstride")

        # tile loop
        r0 = Signal(DIM_WIDTH + 1, name="r0")
        rt = Signal(DIM_WIDTH + 1, name="rt")
        c0 = Signal(DIM_WIDTH + 1, name="c0")
        ct = Signal(DIM_WIDTH + 1, name="ct")
        c_rt_addr = Signal(aw, name="c_rowtile_addr")
        b_loaded = Signal(name="b_loaded")
        # The tile the engine computes and the writer writes: the loader's registers above move on to the next
        # tile as soon as the engine has accepted this one.
        eng_c0 = Signal(DIM_WIDTH + 1, name="eng_c0")
        eng_ct = Signal(DIM_WIDTH + 1, name="eng_ct")
        eng_c_rt_addr = Signal(aw, name="eng_c_rowtile_addr")
        eng_running = Signal(name="eng_running")
        # The engine is idle (and takes a valid command) exactly when it is not running a tile or is signalling
        # done. Used instead of its cmd.ready, which Icarus leaves X until the engine's state first changes (a
        # combinational output of its FSM): the unit then missed the first handshake while the engine took it.
        eng_free = Signal(name="eng_free")
        # Double buffering, per operand: the half of each buffer that holds the loader's tile (always 0 for an
        # operand that is single buffered)
        a_dbl = Signal(name="a_double_buffered")
        b_dbl = Signal(name="b_double_buffered")
        a_half = Signal(name="a_half")
        b_half = Signal(name="b_half")
        a_base = Signal(a_aw, name="a_half_base")
        b_base = Signal(b_aw, name="b_half_base")
        m.d.comb += [a_base.eq(Mux(a_half, self._a_depth >> 1, 0)), b_base.eq(Mux(b_half, self._b_depth >> 1, 0))]

        # errors and counters
        rd_error = Signal(name="rd_error")
        bad_op = Signal(name="bad_operand")
        wr_error = Signal(name="wr_error")
        code = Signal(ERROR_WIDTH, name="code")
        cycles = Signal(ENGINE_COUNTER_WIDTH, name="cycles")
        busy_acc = Signal(ENGINE_COUNTER_WIDTH, name="busy_acc")
        macs_acc = Signal(ENGINE_COUNTER_WIDTH, name="macs_acc")
        active = Signal(name="active")
        with m.If(active):
            m.d.sync += cycles.eq(cycles + 1)

        # ------------------------------------------------------------------ load phase interface
        ph_a = Signal(name="phase_a")          # loading A (else B)
        ph_trans = Signal(name="phase_trans")
        ph_sparse = Signal(name="phase_sparse")
        iss_run = Signal(name="issue_run")
        load_start = Signal(name="load_start")  # comb pulse from control
        load_done = Signal(name="load_done")    # sync pulse from the consumer

        rec_layout = data.StructLayout({
            "beats": bw, "off": 5, "count": DIM_WIDTH + 1, "lane": range(wm), "addr": dw_buf,
            "bank": range(R), "vcols": 6, "last": 1,
        })
        m.submodules.lines = lines = fifo.SyncFIFOBuffered(width=rec_layout.size, depth=4)
        rec_in = Signal(rec_layout, name="rec_in")
        rec_out = Signal(rec_layout, name="rec_out")
        m.d.comb += [lines.w_data.eq(rec_in), rec_out.eq(lines.r_data)]

        # ------------------------------------------------------------------ issuer (one DMA read per line)
        line = Signal(DIM_WIDTH + 1, name="line")
        a_line_addr = Signal(aw, name="a_line_addr")
        a_bank = Signal(range(R), name="a_bank")
        a_da = Signal(dw_buf, name="a_dest")
        b_line_addr = Signal(aw, name="b_line_addr")
        b_lane = Signal(range(C), name="b_lane")
        b_da = Signal(dw_buf, name="b_dest")
        pt_addr = Signal(aw, name="pt_addr")
        pt_col = Signal(DIM_WIDTH + 6, name="pt_col")

        lo = Signal(aw, name="line_lo")
        count = Signal(DIM_WIDTH + 1, name="line_count")
        hi = Signal(aw + 1, name="line_hi")
        last = Signal(name="line_last")
        e_lo = Signal(DIM_WIDTH + 6, name="sp_e_lo")
        e_hi = Signal(DIM_WIDTH + 6, name="sp_e_hi")
        c_end = Signal(DIM_WIDTH + 6, name="c_end")
        m.d.comb += c_end.eq(c0 + ct)
        m.d.comb += [
            e_lo.eq(Mux(c0 > pt_col, c0, pt_col)),
            e_hi.eq(Mux(c_end < pt_col + LANES, c_end, pt_col + LANES)),
        ]
        with m.If(ph_a):
            with m.If(ph_trans):
                m.d.comb += [lo.eq(a_line_addr + (r0 << 1)), count.eq(rt), last.eq(line == c.red - 1),
                             rec_in.lane.eq(line[:lg_mm] if lg_mm else 0), rec_in.addr.eq((line >> lg_mm) + a_base),
                             rec_in.bank.eq(0)]
            with m.Else():
                m.d.comb += [lo.eq(a_line_addr), count.eq(c.red), last.eq(line == rt - 1),
                             rec_in.lane.eq(0), rec_in.addr.eq(a_da), rec_in.bank.eq(a_bank)]
        with m.Elif(ph_sparse):
            m.d.comb += [lo.eq(pt_addr), count.eq(e_hi - e_lo), last.eq(e_hi == c_end)]
        with m.Elif(ph_trans):
            m.d.comb += [lo.eq(b_line_addr), count.eq(c.red), last.eq(line == ct - 1),
                         rec_in.lane.eq(b_lane), rec_in.addr.eq(b_da)]
        with m.Else():
            m.d.comb += [lo.eq(b_line_addr + (c0 << 1)), count.eq(ct), last.eq(line == c.red - 1),
                         rec_in.lane.eq(0), rec_in.addr.eq(line + b_base)]
        m.d.comb += hi.eq(lo + (count << 1))
        dense_beats = ((hi - 1) >> 6) - (lo >> 6) + 1
        vcols_full = c.cols - pt_col
        m.d.comb += [
            rec_in.beats.eq(Mux(ph_sparse & ~ph_a, steps + ((steps + 3) >> 2), dense_beats)),
            rec_in.off.eq(Mux(ph_sparse & ~ph_a, (e_lo - pt_col)[:5], lo[1:6])),
            rec_in.count.eq(count),
            rec_in.vcols.eq(Mux(vcols_full >= LANES, LANES, vcols_full)),
            rec_in.last.eq(last),
            self.rd_req.p.addr.eq(Cat(Const(0, 6), lo[6:])),
            self.rd_req.p.beats.eq(rec_in.beats),
        ]
        with m.If(iss_run):
            with m.If(self.rd_req.ready & lines.w_rdy):
                m.d.sync += line.eq(line + 1)
                with m.If(last):
                    m.d.sync += iss_run.eq(0)
                with m.If(ph_a):
                    m.d.sync += a_line_addr.eq(a_line_addr + c.a_stride)
                    with m.If(a_bank == R - 1):
                        m.d.sync += [a_bank.eq(0), a_da.eq(a_da + kw)]
                    with m.Else():
                        m.d.sync += a_bank.eq(a_bank + 1)
                with m.Elif(ph_sparse):
                    with m.If(e_hi == pt_col + LANES):
                        m.d.sync += [pt_col.eq(pt_col + LANES), pt_addr.eq(pt_addr + tile_bytes)]
                with m.Else():
                    m.d.sync += b_line_addr.eq(b_line_addr + c.b_stride)
                    with m.If(b_lane == C - 1):
                        m.d.sync += [b_lane.eq(0), b_da.eq(b_da + steps)]
                    with m.Else():
                        m.d.sync += b_lane.eq(b_lane + 1)
        with m.If(load_start):
            m.d.sync += [iss_run.eq(1), line.eq(0), a_bank.eq(0), a_da.eq(a_base), b_lane.eq(0), b_da.eq(b_base)]
            with m.If(ph_a & ph_trans):
                m.d.sync += a_line_addr.eq(c.a_addr)
            with m.If(~ph_a):
                with m.If(~ph_trans | (c0 == 0)):
                    m.d.sync += b_line_addr.eq(c.b_addr)
                with m.If(c0 == 0):
                    m.d.sync += [pt_addr.eq(c.b_addr), pt_col.eq(0)]

        # ------------------------------------------------------------------ consumer (beats -> buffer words)
        rec = Signal(rec_layout, name="rec")
        beats_left = Signal(bw, name="beats_left")
        e_left = Signal(DIM_WIDTH + 1, name="e_left")
        src = Signal(6, name="src")
        dl = Signal(range(wm + 1), name="dl")
        da = Signal(dw_buf, name="da")
        bank = Signal(range(R), name="bank")
        beat = Signal(512, name="beat")
        idx_beat = Signal(512, name="idx_beat")
        blk = Signal(3, name="blk")
        step = Signal(DIM_WIDTH + 4, name="step")
        slot = Signal(5, name="slot")
        prev = Signal(128, name="prev_idx")
        first_line = Signal(name="first_line")
        line_dl = Signal.like(dl, name="line_dl")      # first element of the current packed tile
        line_da = Signal.like(da, name="line_da")
        carry_dl = Signal.like(dl, name="carry_dl")    # first element of the next packed tile
        carry_da = Signal.like(da, name="carry_da")

        # One buffer write takes a run of the beat's elements that share a buffer word: consecutive lanes of one
        # word (row-major A, dense B), one element (B^T: its neighbours are consecutive words of the same lane),
        # or, for A^T, consecutive rows of one word group (the same word and lane of banks bank..R-1: the a_write
        # port has a lane mask per bank).
        trans_a = Signal(name="trans_a")
        m.d.comb += trans_a.eq(ph_a & ph_trans)
        w_room = Mux(ph_trans, Mux(ph_a, R - bank, 1), Mux(ph_a, mm, C) - dl)
        ln0 = Signal(7, name="chunk_room")
        m.d.comb += ln0.eq(Mux(32 - src < w_room, 32 - src, w_room))
        ln = Signal(7, name="chunk_len")
        m.d.comb += ln.eq(Mux(e_left < ln0, e_left, ln0))
        # One shifted copy of the beat serves every kind of write, without a mux per bank: lane j holds element
        # src - dl - bank + j (bank 0 for B). Bank b of A reads lanes b..b+max_m-1: for row-major A (only bank
        # `bank` written) element src lands on lane dl; for A^T lane dl of bank b holds element src - bank + b,
        # the row of bank b in the run. B reads lanes 0..C-1 (element src on lane dl).
        a_bank = Signal.like(bank, name="a_write_bank")
        m.d.comb += a_bank.eq(Mux(ph_a, bank, 0))
        pad = max(R + mm - 2, C - 1)        # largest dl + bank
        wo = max(C, R + mm - 1)
        sh = Signal(range(pad + 33), name="shift")
        m.d.comb += sh.eq(src + pad - dl - a_bank)
        ext = Cat(Const(0, 16 * pad), beat, Const(0, 16 * wo))
        out = Signal(16 * wo, name="chunk_data")
        m.d.comb += out.eq(ext.bit_select(sh * 16, 16 * wo))
        qsel = Signal(2, name="quarter")
        quarter = idx_beat.word_select(qsel, 128)
        ext_i = Cat(Const(0, 4 * pad), quarter, Const(0, 4 * wm))
        out_i = Signal(4 * wm, name="chunk_idx")
        m.d.comb += out_i.eq(ext_i.bit_select(sh * 4, 4 * wm))
        mask = Signal(wm, name="chunk_mask")
        m.d.comb += mask.eq((((Const(1, wm + 40) << ln) - 1) << dl)[:wm])

        aw_p = self._engine.a_write.p
        bw_p = self._engine.b_write.p
        m.d.comb += aw_p.addr.eq(da)
        # A^T writes lane dl of the banks in the run bank..bank+ln-1; row-major A the run's lanes of bank `bank`.
        one_lane = Signal(mm, name="one_lane")
        m.d.comb += one_lane.eq((Const(1, mm) << dl)[:mm])
        for r in range(R):
            in_run = (bank + ln > r) & ((bank <= r) if r < R - 1 else 1)    # (bank <= R - 1 always holds)
            m.d.comb += [
                aw_p.data[r].eq(out[16 * r:16 * (r + mm)]),
                aw_p.lanes[r].eq(Mux(trans_a, Mux(in_run, one_lane, 0), Mux(bank == r, mask[:mm], 0))),
            ]
        m.d.comb += bw_p.addr.eq(da)
        for j in range(C):
            m.d.comb += [bw_p.data[j].value.eq(out[16 * j:16 * j + 16]),
                         bw_p.data[j].idx.eq(Mux(ph_sparse, out_i[4 * j:4 * j + 4], 0)),
                         bw_p.lanes[j].eq(mask[j])]

        # index checks of a value beat being taken (quarter blk-1 of the index beat; a quarter of its own, since a
        # beat may be taken while the previous value beat's last write routes quarter blk-2)
        chk_quarter = Signal(128, name="check_quarter")
        m.d.comb += chk_quarter.eq(idx_beat.word_select((blk - 1)[:2], 128))
        bad_lanes = Signal(LANES, name="bad_lanes")
        for lane in range(LANES):
            nib = chk_quarter[4 * lane:4 * lane + 4]
            pnib = prev[4 * lane:4 * lane + 4]
            m.d.comb += bad_lanes[lane].eq((lane < rec.vcols) & ((nib >= m_val) | ((slot != 0) & (nib <= pnib))))

        # The current beat's last write: the next beat of the line, if any, is taken in the same cycle.
        beat_end = Signal(name="beat_end")
        m.d.comb += beat_end.eq((src + ln == 32) | (e_left == ln))

        def take_beat(after_value_beat: bool) -> None:
            """Take the DMA beat on rd_data (valid and ready): an index beat (then wait in BEAT for its first
            value beat) or a value / dense beat (then write it)."""
            m.d.sync += [beat.eq(self.rd_data.p.data), beats_left.eq(beats_left - 1),
                         rd_error.eq(rd_error | self.rd_data.p.error)]
            with m.If(ph_sparse & (blk == 0)):
                m.d.sync += [idx_beat.eq(self.rd_data.p.data), blk.eq(1)]
                m.next = "BEAT"
            with m.Else():
                with m.If(ph_sparse):
                    with m.If(bad_lanes != 0):
                        m.d.sync += bad_op.eq(1)
                    # taken in the previous value beat's last write, step counts that beat only from the next cycle
                    step_now = step + 1 if after_value_beat else step
                    m.d.sync += [
                        prev.eq(chk_quarter),
                        slot.eq(Mux(slot == c.n - 1, 0, slot + 1)),
                        blk.eq(Mux(blk == 4, 0, blk + 1)),
                        dl.eq(line_dl), da.eq(line_da + step_now), src.eq(rec.off), e_left.eq(rec.count),
                    ]
                m.next = "WRITE"

        m.d.sync += load_done.eq(0)
        with m.FSM(name="load") as load_fsm:
            with m.State("LINE"):
                with m.If(lines.r_rdy):
                    r_ = rec_out
                    m.d.sync += [rec.eq(r_), beats_left.eq(r_.beats), e_left.eq(r_.count), src.eq(r_.off),
                                 blk.eq(0), step.eq(0), slot.eq(0), bank.eq(r_.bank)]
                    with m.If(ph_sparse):
                        m.d.sync += [line_dl.eq(Mux(first_line, 0, carry_dl)),
                                     line_da.eq(Mux(first_line, b_base, carry_da)), first_line.eq(0)]
                    with m.Else():
                        m.d.sync += [dl.eq(r_.lane), da.eq(r_.addr)]
                    m.next = "BEAT"
            with m.State("BEAT"):
                with m.If(self.rd_data.valid):
                    take_beat(after_value_beat=False)
            with m.State("WRITE"):
                # blk already advanced past the value beat: its quarter is blk - 2 (3 when blk wrapped to 0)
                m.d.comb += qsel.eq(Mux(blk == 0, 3, blk - 2))
                new_dl = Signal.like(dl, name="new_dl")
                new_da = Signal.like(da, name="new_da")
                m.d.comb += [new_dl.eq(dl), new_da.eq(da)]
                with m.If(ph_trans):
                    with m.If(ph_a):
                        with m.If(bank + ln == R):
                            m.d.sync += bank.eq(0)
                            m.d.comb += new_da.eq(da + kw)
                        with m.Else():
                            m.d.sync += bank.eq(bank + ln)
                    with m.Else():
                        m.d.comb += new_da.eq(da + 1)
                with m.Else():
                    with m.If(dl + ln == Mux(ph_a, mm, C)):
                        m.d.comb += [new_dl.eq(0), new_da.eq(da + Mux(ph_a, 1, steps))]
                    with m.Else():
                        m.d.comb += new_dl.eq(dl + ln)
                m.d.sync += [dl.eq(new_dl), da.eq(new_da), e_left.eq(e_left - ln), src.eq(src + ln)]
                with m.If(beat_end):
                    m.d.sync += src.eq(0)
                    with m.If(ph_sparse):
                        m.d.sync += step.eq(step + 1)
                        with m.If(step == 0):
                            m.d.sync += [carry_dl.eq(new_dl), carry_da.eq(new_da)]
                    with m.If(beats_left == 0):
                        with m.If(rec.last):
                            m.d.sync += load_done.eq(1)
                        m.next = "LINE"
                    with m.Elif(self.rd_data.valid):
                        take_beat(after_value_beat=True)     # (its assignments override the ones above)
                    with m.Else():
                        m.next = "BEAT"
        with m.If(load_start):
            m.d.sync += first_line.eq(1)

        # ------------------------------------------------------------------ result writer
        res = eng.result
        pass_row = Signal(DIM_WIDTH + 1, name="pass_row")
        pass_addr = Signal(aw, name="pass_addr")
        row_addr = Signal(aw, name="row_addr")
        first_res = Signal(name="first_result")
        set_tile = Signal(name="set_tile")      # comb pulse from control when the engine command is issued
        tile_c_addr = Signal(aw, name="tile_c_addr")
        m.d.comb += tile_c_addr.eq(eng_c_rt_addr + (eng_c0 << 2))
        used = Signal(aw, name="row_used")
        with m.If(first_res | (res.p.row == pass_row)):
            m.d.comb += used.eq(Mux(first_res, tile_c_addr, pass_addr))
        with m.Elif(res.p.row == pass_row + R * L):
            m.d.comb += used.eq(pass_addr + rl_cstride)
        with m.Else():
            m.d.comb += used.eq(row_addr + c.c_stride)
        waddr = Signal(aw, name="waddr")
        m.d.comb += waddr.eq(used + (res.p.col << 2))
        nv = Signal(range(C + 1), name="valid_lanes")
        m.d.comb += nv.eq(Mux(eng_ct - res.p.col >= C, C, eng_ct - res.p.col))
        off = waddr[:6]
        max_beats = -(-(60 + 4 * C) // 64)
        wide = Signal(512 * max_beats, name="wide")
        wide_strb = Signal(64 * max_beats, name="wide_strb")
        w_beats = Signal(range(max_beats + 1), name="w_beats")
        w_beat = Signal(range(max_beats + 1), name="w_beat")
        w_base = Signal(aw, name="w_base")
        outstanding = Signal(8, name="outstanding")
        bytemask = Signal(4 * C, name="bytemask")
        m.d.comb += bytemask.eq(((Const(1, 4 * C + 1) << (nv << 2)) - 1)[:4 * C])
        w_busy = Signal(name="writer_busy")
        res_data = Cat(*[res.p.data[j] for j in range(C)])
        # A result is taken (res.ready = ~h_valid) into the write registers when they are free (writer idle, or
        # the current row's last beat goes out this cycle) and into the holding registers otherwise, so the next
        # row is ready to request as soon as the current one's beats are out.
        h_valid = Signal(name="hold_valid")
        h_wide = Signal.like(wide, name="hold_wide")
        h_strb = Signal.like(wide_strb, name="hold_strb")
        h_beats = Signal.like(w_beats, name="hold_beats")
        h_base = Signal.like(w_base, name="hold_base")
        take = Signal(name="result_take")
        m.d.comb += take.eq(res.valid & ~h_valid)
        n_wide = res_data << (off << 3)
        n_strb = bytemask << off
        n_beats = ((off + (nv << 2) - 1) >> 6) + 1
        n_base = Cat(Const(0, 6), waddr[6:])
        with m.If(take):
            m.d.sync += [row_addr.eq(used), first_res.eq(0)]
            with m.If(first_res):
                m.d.sync += [pass_row.eq(0), pass_addr.eq(tile_c_addr)]
            with m.Elif((res.p.row != pass_row) & (res.p.row == pass_row + R * L)):
                m.d.sync += [pass_row.eq(res.p.row), pass_addr.eq(used)]

        def next_row():
            # the write registers are free next cycle: the held row, else a result taken now, else idle
            with m.If(h_valid):
                m.d.sync += [wide.eq(h_wide), wide_strb.eq(h_strb), w_beats.eq(h_beats), w_beat.eq(0),
                             w_base.eq(h_base), h_valid.eq(0)]
                m.next = "WREQ"
            with m.Elif(take):
                m.d.sync += [wide.eq(n_wide), wide_strb.eq(n_strb), w_beats.eq(n_beats), w_beat.eq(0),
                             w_base.eq(n_base)]
                m.next = "WREQ"
            with m.Else():
                m.next = "WIDLE"

        def hold_row():
            with m.If(take):
                m.d.sync += [h_wide.eq(n_wide), h_strb.eq(n_strb), h_beats.eq(n_beats), h_base.eq(n_base),
                             h_valid.eq(1)]

        with m.FSM(name="writer") as writer_fsm:
            with m.State("WIDLE"):
                next_row()
            with m.State("WREQ"):
                m.d.comb += w_busy.eq(1)
                m.d.comb += [self.wr_req.p.addr.eq(w_base),
                             self.wr_req.p.beats.eq(w_beats)]
                hold_row()
                with m.If(self.wr_req.ready & (outstanding != 255)):
                    m.next = "WDATA"
            with m.State("WDATA"):
                m.d.comb += w_busy.eq(1)
                m.d.comb += [self.wr_data.p.data.eq(wide.word_select(w_beat, 512)),
                             self.wr_data.p.strb.eq(wide_strb.word_select(w_beat, 64))]
                with m.If(self.wr_data.ready & (w_beat == w_beats - 1)):
                    next_row()
                with m.Else():
                    hold_row()
                    with m.If(self.wr_data.ready):
                        m.d.sync += w_beat.eq(w_beat + 1)
        with m.If(set_tile):
            m.d.sync += first_res.eq(1)
        m.d.comb += self.wr_done.ready.eq(1)
        inc = self.wr_req.valid & self.wr_req.ready
        dec = self.wr_done.valid
        with m.If(inc & ~dec):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(dec & ~inc):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(dec & self.wr_done.p.error):
            m.d.sync += wr_error.eq(1)
        writer_idle = Signal(name="writer_idle")
        m.d.comb += writer_idle.eq(~w_busy & ~h_valid & ~res.valid)

        # ------------------------------------------------------------------ control
        groups = Signal(DIM_WIDTH + 1, name="groups")
        m.d.comb += groups.eq((c.red + m_val - 1) >> c.m_log2)
        with m.FSM(name="control") as ctl_fsm:
            with m.State("IDLE"):
                with m.If(cmd.valid):
                    m.d.sync += [
                        c.eq(cmd.p), m_val.eq(Const(1, 5) << cmd.p.m_log2),
                        rd_error.eq(0), bad_op.eq(0), wr_error.eq(0), code.eq(0),
                        cycles.eq(1), busy_acc.eq(0), macs_acc.eq(0), active.eq(1),
                        r0.eq(0), c0.eq(0), b_loaded.eq(0), c_rt_addr.eq(cmd.p.c_addr),
                        a_line_addr.eq(cmd.p.a_addr),
                    ]
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.sync += [
                    kw.eq((c.red + mm - 1) >> lg_mm),
                    steps.eq(Mux(c.sparse, groups * c.n, c.red)),
                    rl_cstride.eq(c.c_stride * (R * L)),
                ]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.sync += tile_bytes.eq((steps + ((steps + 3) >> 2)) << 6)
                fa = Signal(name="fits_a")
                fb = Signal(name="fits_b")
                for p in range(a_aw + 1):
                    with m.If(kw <= (self._a_depth >> p)):
                        m.d.sync += pa.eq(p)
                        m.d.comb += fa.eq(1)
                for p in range(b_aw + 1):
                    with m.If(steps <= (self._b_depth >> p)):
                        m.d.sync += pb.eq(p)
                        m.d.comb += fb.eq(1)
                m.d.sync += fits.eq(fa & fb)
                m.next = "SETUP3"
            with m.State("SETUP3"):
                # B is double buffered when it fits twice and is reloaded (several full-size column tiles); A when
                # it fits twice, a half row tile still fills an array pass (R*L rows, else the halved tiles would
                # waste passes) or holds all rows, and B is either loaded once or double buffered too (else every
                # tile waits for B's load anyway). Halving an operand that is loaded once would only reload it.
                pa_half = Signal.like(pa, name="pa_half")
                pb_half = Signal.like(pb, name="pb_half")
                m.d.comb += [pa_half.eq(pa - 1), pb_half.eq(pb - 1)]
                fills_pass = (pa >= 1 + lg_l) | (c.rows <= (Const(R, DIM_WIDTH + 1) << pa_half))
                b_reloaded = c.cols > (Const(C, DIM_WIDTH + 1) << pb)
                use_b = Signal(name="use_b_double")
                use_a = Signal(name="use_a_double")
                m.d.comb += [use_b.eq((pb != 0) & b_reloaded),
                             use_a.eq((pa != 0) & fills_pass & (use_b | ~b_reloaded))]
                pa_used = Mux(use_a, pa_half, pa)
                pb_used = Mux(use_b, pb_half, pb)
                m.d.sync += [rt_max.eq(Const(R, DIM_WIDTH + 21) << pa_used),
                             ct_max.eq(Const(C, DIM_WIDTH + 21) << pb_used),
                             rt_cstride.eq((c.c_stride * R) << pa_used),
                             # the first load flips to half 0
                             a_dbl.eq(use_a), b_dbl.eq(use_b), a_half.eq(use_a), b_half.eq(use_b)]
                with m.If(fits):
                    m.next = "ROW_TILE"
                with m.Else():
                    m.d.sync += code.eq(ErrorCode.BAD_SHAPE)
                    m.next = "FINISH"
            # The loader's tile loop. A load of a single-buffered operand waits until the engine is done with the
            # previous tile; of a double-buffered one, it starts as soon as the engine has accepted that tile
            # (RUN), into the other half.
            with m.State("ROW_TILE"):
                left = c.rows - r0
                m.d.sync += rt.eq(Mux(left > rt_max, rt_max, left))
                with m.If(self.control.abort | wr_error):
                    m.next = "FINISH"
                with m.Elif(a_dbl | ~eng_running):
                    m.d.sync += [ph_a.eq(1), ph_trans.eq(c.a_trans), ph_sparse.eq(0), a_half.eq(a_half ^ a_dbl)]
                    m.next = "LOAD_A"
            with m.State("LOAD_A"):
                m.d.comb += load_start.eq(1)
                m.next = "LOAD_A_WAIT"
            with m.State("LOAD_A_WAIT"):
                with m.If(load_done):
                    m.next = "COL_TILE"
            with m.State("COL_TILE"):
                left = c.cols - c0
                m.d.sync += ct.eq(Mux(left > ct_max, ct_max, left))
                with m.If(self.control.abort | wr_error):
                    m.next = "FINISH"
                with m.Elif(b_loaded):
                    m.next = "CHECK"
                with m.Elif(b_dbl | ~eng_running):
                    m.d.sync += [ph_a.eq(0), ph_trans.eq(c.b_trans), ph_sparse.eq(c.sparse),
                                 b_loaded.eq(ct_max >= c.cols), b_half.eq(b_half ^ b_dbl)]
                    m.next = "LOAD_B"
            with m.State("LOAD_B"):
                m.d.comb += load_start.eq(1)
                m.next = "LOAD_B_WAIT"
            with m.State("LOAD_B_WAIT"):
                with m.If(load_done):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(rd_error | bad_op):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                # waits here until the engine is done with the previous tile: one tile of look-ahead
                ep = eng.cmd.p
                m.d.comb += [ep.rows.eq(rt), ep.red.eq(c.red), ep.cols.eq(ct),
                             ep.sparse.eq(c.sparse), ep.n.eq(Mux(c.sparse, c.n, 0)),
                             ep.m.eq(Mux(c.sparse, m_val, 0)), ep.a_base.eq(a_base), ep.b_base.eq(b_base)]
                with m.If(eng_free):
                    m.d.comb += set_tile.eq(1)
                    m.d.sync += [eng_c0.eq(c0), eng_ct.eq(ct), eng_c_rt_addr.eq(c_rt_addr)]
                    with m.If(c0 + ct >= c.cols):
                        m.d.sync += [c0.eq(0), r0.eq(r0 + rt), c_rt_addr.eq(c_rt_addr + rt_cstride)]
                        with m.If(r0 + rt >= c.rows):
                            m.next = "FINISH"
                        with m.Else():
                            m.next = "ROW_TILE"
                    with m.Else():
                        m.d.sync += c0.eq(c0 + ct)
                        m.next = "COL_TILE"
            with m.State("FINISH"):
                with m.If(writer_idle & (outstanding == 0) & ~iss_run & ~eng_running):
                    with m.If(rd_error):
                        m.d.sync += code.eq(ErrorCode.AXI_READ)
                    with m.Elif(bad_op):
                        m.d.sync += code.eq(ErrorCode.BAD_OPERAND)
                    with m.Elif(code != 0):
                        pass
                    with m.Elif(wr_error):
                        m.d.sync += code.eq(ErrorCode.AXI_WRITE)
                    with m.Elif((r0 < c.rows) & self.control.abort):
                        m.d.sync += code.eq(ErrorCode.ABORTED)
                    m.d.sync += active.eq(0)
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [done.p.error.eq(code), done.p.busy_cycles.eq(busy_acc),
                             done.p.stall_cycles.eq(cycles - busy_acc), done.p.macs.eq(macs_acc)]
                with m.If(done.ready):
                    m.next = "IDLE"
        # The engine's tile: counters summed when it is done (the writer has then taken its last result, see
        # the module docstring), running until then (a tile accepted in the cycle of done keeps it set).
        with m.If(eng.done):
            m.d.sync += [eng_running.eq(0), busy_acc.eq(busy_acc + eng.busy_cycles),
                         macs_acc.eq(macs_acc + eng.macs)]
        with m.If(eng.cmd.valid):
            m.d.sync += eng_running.eq(1)

        # handshakes as plain assignments of FSM states (Icarus leaves outputs of never-triggered
        # combinational case blocks X after reset)
        m.d.comb += [
            self.rd_req.valid.eq(iss_run & lines.w_rdy),
            lines.w_en.eq(iss_run & self.rd_req.ready),
            lines.r_en.eq(load_fsm.ongoing("LINE") & lines.r_rdy),
            self.rd_data.ready.eq(load_fsm.ongoing("BEAT")
                                  | (load_fsm.ongoing("WRITE") & beat_end & (beats_left != 0))),
            self._engine.a_write.valid.eq(load_fsm.ongoing("WRITE") & ph_a),
            self._engine.b_write.valid.eq(load_fsm.ongoing("WRITE") & ~ph_a),
            res.ready.eq(~h_valid),
            self.wr_req.valid.eq(writer_fsm.ongoing("WREQ") & (outstanding != 255)),
            self.wr_data.valid.eq(writer_fsm.ongoing("WDATA")),
            cmd.ready.eq(ctl_fsm.ongoing("IDLE")),
            eng_free.eq(~eng_running | eng.done),
            eng.cmd.valid.eq(ctl_fsm.ongoing("RUN") & eng_free),
            done.valid.eq(ctl_fsm.ongoing("DONE")),
        ]
        return m


def gemm_unit(*, a_depth: int = DEFAULT_A_DEPTH, b_depth: int = DEFAULT_B_DEPTH) -> Callable[..., GemmUnit]:
    """An engine factory for ``SATCore(config, engine=...)`` with the given buffer depths."""
    return partial(GemmUnit, a_depth=a_depth, b_depth=b_depth)


def sat_core(config: SATConfig, *, a_depth: int = DEFAULT_A_DEPTH, b_depth: int = DEFAULT_B_DEPTH,
             **kwargs) -> SATCore:
    """The SAT core with the GEMM unit in its engine slot: ``SATCore(config, engine=GemmUnit, **kwargs)``."""
    return SATCore(config, engine=gemm_unit(a_depth=a_depth, b_depth=b_depth), **kwargs)

