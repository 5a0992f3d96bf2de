"""The GEMM engine: on-chip operand buffers, a feeder that walks a GEMM over the systolic array, and counters.

Buffer layouts (the contract with whoever fills the buffers: the testbenches now, the AXI DMA next) are defined
here and produced in software by :func:`a_buffer_writes`, :func:`b_dense_writes` and :func:`b_sparse_writes`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH
from sat.sw.tiling import A_WORD_LANES, a_words_per_row, steps_per_output

from .array import SystolicArray

__all__ = [
    "GemmEngine", "COUNTER_WIDTH", "B_LANE_LAYOUT",
    "command_layout", "a_write_layout", "b_write_layout", "result_layout",
    "a_buffer_writes", "b_dense_writes", "b_sparse_writes", "buffer_words", "engine_command", "done_layout",
]

#: Width of the performance counters.
COUNTER_WIDTH = 48


#: One lane of a B word: a 16-bit value and its 4-bit in-group index (0 for dense).
B_LANE_LAYOUT = data.StructLayout({"value": 16, "idx": 4})


def command_layout(a_addr_width: int, b_addr_width: int) -> data.StructLayout:
    """Payload of ``GemmEngine.cmd``: shape, N:M mode and buffer bases."""
    return data.StructLayout({
        "rows": DIM_WIDTH, "red": DIM_WIDTH, "cols": DIM_WIDTH,
        "sparse": 1, "n": 5, "m": 5,
        "a_base": a_addr_width, "b_base": b_addr_width,
    })


def a_write_layout(config: SATConfig, a_addr_width: int) -> data.StructLayout:
    """Payload of ``GemmEngine.a_write``: one word address for all ``R`` banks, 32 lanes (a whole beat) per bank
    and a lane mask per bank (a row-major beat writes lanes of one bank, an ``A^T`` beat one lane of many
    banks)."""
    return data.StructLayout({
        "addr": a_addr_width,
        "data": data.ArrayLayout(data.ArrayLayout(16, A_WORD_LANES), config.rows),
        "lanes": data.ArrayLayout(A_WORD_LANES, config.rows),
    })


def b_write_layout(config: SATConfig, b_addr_width: int) -> data.StructLayout:
    """Payload of ``GemmEngine.b_write``: word address, ``C`` lanes of (value, idx) and a lane mask."""
    return data.StructLayout({
        "addr": b_addr_width, "data": data.ArrayLayout(B_LANE_LAYOUT, config.cols), "lanes": config.cols,
    })


def result_layout(config: SATConfig) -> data.StructLayout:
    """Payload of ``GemmEngine.result``: output row, first column of the tile, ``C`` FP32 lanes, lane mask."""
    return data.StructLayout({
        "row": DIM_WIDTH, "col": DIM_WIDTH, "data": data.ArrayLayout(32, config.cols), "lanes": config.cols,
        "last": 1,
    })


def done_layout() -> data.StructLayout:
    """Payload of ``GemmEngine.done``: ``error`` (the command was invalid) and the command's counters."""
    return data.StructLayout({
        "error": 1, "cycles": COUNTER_WIDTH, "busy_cycles": COUNTER_WIDTH, "stall_cycles": COUNTER_WIDTH,
        "macs": COUNTER_WIDTH,
    })


def buffer_words(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0) -> tuple[int, int]:
    """Buffer space a command needs: ``(words per A bank, words of B)`` from its bases.

    The engine does not check that a command fits (addresses wrap modulo the depth); whoever issues commands
    (the command processor) must.
    """
    return (-(-rows // config.rows) * a_words_per_row(red, config),
            -(-cols // config.cols) * steps_per_output(red, n, m))


def engine_command(desc, a_base: int = 0, b_base: int = 0) -> dict:
    """The ``cmd`` payload (as a dict for ``command_layout(...).const``) for a
    :class:`sat.sw.descriptor.GemmDescriptor` whose operands were loaded at ``a_base`` / ``b_base``.

    ``A_TRANS`` / ``B_TRANS`` do not appear: they only change how the buffers are filled
    (:func:`a_buffer_writes`, :func:`b_dense_writes`).
    """
    return {"rows": desc.rows, "red": desc.red, "cols": desc.cols, "sparse": int(desc.sparse),
            "n": desc.n if desc.sparse else 0, "m": desc.m if desc.sparse else 0, "a_base": a_base, "b_base": b_base}


class GemmEngine(wiring.Component):
    """Computes ``C = A . B`` (``rows x red`` times ``red x cols``) on a :class:`SystolicArray`.

    **Buffers.** ``A`` lives in ``R`` banks (one per array row) of 32-lane words (a 512-bit beat, so a loader
    writes a row-major beat in one cycle); element ``(i, k)`` of a command with base ``a_base`` is bank
    ``i mod R``, address ``a_base + (i div R) * KW + k div 32``, lane ``k mod 32`` (``KW = ceil(red / 32)``); the
    feeder reads a word and selects its ``max_m``-lane group. ``B`` lives in one memory of ``C``-lane words, each lane
    a 16-bit value and a 4-bit index; for column tile ``t`` (columns ``t*C .. t*C+C-1``) and step ``s`` the
    word is at ``b_base + t * S + s``: dense, ``S = red`` and step ``s`` is row ``k = s`` of ``B``; sparse N:M,
    ``S = ceil(red / M) * N`` and step ``s`` is the ``s``-th value beat of the packed format
    (``docs/format.md``), with its indices. Every write has a lane mask, so a DMA fills either operand order
    at one beat per cycle per bank: a beat of ``A`` (32 consecutive ``k`` of one row) is one or more words of
    one bank; a beat of ``A^T`` (``A_TRANS``: 32 consecutive rows at one ``k``) is one lane in each of the
    banks at one address; likewise ``B`` (a row of ``B`` is one word) and ``B^T`` (``B_TRANS``). The feeder
    reads one fixed layout, so ``A_TRANS`` / ``B_TRANS`` cost nothing at compute time. Buffers are plain
    dual-port memories: a DMA may fill one address range while a command computes from another
    (double buffering by ``a_base`` / ``b_base``).

    **Command.** ``cmd`` carries ``rows, red, cols`` (>= 1), ``sparse`` with ``n, m`` (a pair of the build's
    ``nm_set``) and the buffer bases. A command outside these rules completes at once with ``error`` set.
    The engine does not check that the operands fit the buffers (addresses wrap modulo the depth): the issuer
    checks :func:`buffer_words`.

    **Sequencing.** Row tiles of ``R*L`` rows (outer) times column tiles of ``C`` columns (inner), one array
    pass each; a pass is ``S`` groups of ``L`` steps (see :class:`SystolicArray`), issued back to back across
    passes, except that the last group of a pass waits (bubble groups) while the previous pass still occupies
    the capture banks. Results leave on ``result``, one tile row (``C`` lanes) per beat, rows beyond ``rows``
    dropped, with the output row, the tile's first column and a lane mask for ``cols``.

    **Answer.** Every accepted command gets one ``done`` transfer (:func:`done_layout`): ``error`` and the
    counters (cleared when a command is accepted): ``cycles`` (accept to done),
    ``busy_cycles`` (steps with operands), ``stall_cycles`` (bubble steps while issuing), ``macs`` (useful
    multiply-accumulates: ``rows * cols * S``).

    Parameters
    ----------
    config : SATConfig
        ``a_depth`` (words per A bank) and ``b_depth`` (words of the B memory) size the buffers.

    Attributes
    ----------
    cmd : In(stream.Signature(command_layout(...)))
        GEMM commands; accepted only while idle.
    a_write, b_write : In(stream.Signature(a_write_layout(...) / b_write_layout(...)))
        Buffer writes (always ready, one per cycle each, lane masks).
    result : Out(stream.Signature(result_layout(config)))
        Output rows: ``row``, ``col`` (first column of the tile), ``data`` (``C`` FP32), ``lanes``, ``last``.
    done : Out(stream.Signature(done_layout()))
        One answer per command, held until taken; the next command is taken only with or after it.
    busy : Out(1)
        From accept to done.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    """

    def __init__(self, config: SATConfig) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        self._a_depth = config.a_depth
        self._b_depth = config.b_depth
        self._a_addr_width = exact_log2(config.a_depth)
        self._b_addr_width = exact_log2(config.b_depth)
        self.cmd_layout = command_layout(self._a_addr_width, self._b_addr_width)
        self.a_write_layout = a_write_layout(config, self._a_addr_width)
        self.b_lane_layout = B_LANE_LAYOUT
        self.b_write_layout = b_write_layout(config, self._b_addr_width)
        self.result_layout = result_layout(config)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "a_write": In(stream.Signature(self.a_write_layout)),
            "b_write": In(stream.Signature(self.b_write_layout)),
            "result": Out(stream.Signature(self.result_layout)),
            "done": Out(stream.Signature(done_layout())),
            "busy": Out(1),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def a_depth(self) -> int:
        return self._a_depth

    @property
    def b_depth(self) -> int:
        return self._b_depth

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        R, C, L, lanes = cfg.rows, cfg.cols, cfg.adder_latency, cfg.max_m
        RL = R * L
        lane_bits = exact_log2(lanes)
        group_bits = exact_log2(A_WORD_LANES) - lane_bits      # max_m-lane groups in an A word

        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.pass_info = pass_info = fifo.SyncFIFO(width=2 * DIM_WIDTH, depth=4)

        # ---------------------------------------------------------------------------------- buffers
        a_banks = []
        for r in range(R):
            mem = memory.Memory(shape=data.ArrayLayout(16, A_WORD_LANES), depth=self._a_depth, init=[])
            m.submodules[f"a_bank{r}"] = mem
            wr = mem.write_port(granularity=1)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.a_write.p.addr),
                wr.data.eq(self.a_write.p.data[r]),
                wr.en.eq(Mux(self.a_write.valid, self.a_write.p.lanes[r], 0)),
            ]
            a_banks.append(rd)
        b_mem = memory.Memory(shape=data.ArrayLayout(self.b_lane_layout, C), depth=self._b_depth, init=[])
        m.submodules.b_buffer = b_mem
        m.d.comb += [self.a_write.ready.eq(1), self.b_write.ready.eq(1)]   # one write per cycle, always
        b_wr = b_mem.write_port(granularity=1)
        b_rd = b_mem.read_port()
        m.d.comb += [
            b_wr.addr.eq(self.b_write.p.addr),
            b_wr.data.eq(self.b_write.p.data),
            b_wr.en.eq(Mux(self.b_write.valid, self.b_write.p.lanes, 0)),
        ]

        # ---------------------------------------------------------------------------------- command
        cmd = Signal(self.cmd_layout, name="command")
        n_reg = Signal(5, name="n")          # dense runs as 1:1
        m_reg = Signal(5, name="m")
        ks = Signal(DIM_WIDTH + 4, name="steps_per_pass")    # S: groups of L steps per pass
        kw = Signal(DIM_WIDTH, name="a_words_per_row")       # KW: 32-lane words
        kg = Signal(DIM_WIDTH, name="a_groups_per_row")      # max_m-lane groups
        a_stride = Signal(DIM_WIDTH + 4, name="a_tile_stride")  # L * KW
        red_rem = Signal(range(lanes), name="red_rem")

        supported = Signal(name="nm_supported")
        with m.Switch(Mux(self.cmd.p.sparse, self.cmd.p.n | (self.cmd.p.m << 5), 0)):
            for n, mm in ((0, 0), *cfg.nm_set):
                with m.Case(n | (mm << 5)):
                    m.d.comb += supported.eq(1)
        shape_ok = (self.cmd.p.rows != 0) & (self.cmd.p.red != 0) & (self.cmd.p.cols != 0)

        # ---------------------------------------------------------------------------------- counters
        i = Signal(range(L), name="slot")
        k = Signal(DIM_WIDTH + 4, name="step")
        s = Signal(5, name="group_slot")
        gm = Signal(DIM_WIDTH + 4, name="group_base")     # g * M: reduction index of the group's lane 0
        row_base = Signal(DIM_WIDTH + 1, name="row_base")
        col_base = Signal(DIM_WIDTH + 1, name="col_base")
        a_tile = Signal(self._a_addr_width, name="a_tile")
        a_row = Signal(self._a_addr_width, name="a_row")
        b_tile = Signal(self._b_addr_width, name="b_tile")
        group_real = Signal(name="group_real")
        issued_lasts = Signal(SystolicArray.TRANSFER_COUNTER_WIDTH, name="issued_lasts")

        is_last_group = k == ks - 1
        blocked = is_last_group & (issued_lasts != array.transfers)
        real = Signal(name="issue")
        group = (gm >> lane_bits)[:DIM_WIDTH]
        word = (gm >> exact_log2(A_WORD_LANES))[:DIM_WIDTH]
        group_sel = group[:group_bits] if group_bits else Const(0, 1)
        offset = gm[:lane_bits] if lanes > 1 else Const(0, 1)

        nrows = Signal(range(RL + 1), name="pass_rows")
        ncols = Signal(range(C + 1), name="pass_cols")
        m.d.comb += [
            nrows.eq(Mux(cmd.rows - row_base >= RL, RL, cmd.rows - row_base)),
            ncols.eq(Mux(cmd.cols - col_base >= C, C, cmd.cols - col_base)),
        ]

        # stage-A outputs, registered into stage B alongside the memory reads
        valid_b = Signal(name="valid_b")
        first_b = Signal(name="first_b")
        last_b = Signal(name="last_b")
        offset_b = Signal(max(1, lane_bits), name="offset_b")
        lane_mask_b = Signal(lanes, name="lane_mask_b")
        sparse_b = Signal(name="sparse_b")
        lane_mask = Signal(lanes, name="lane_mask")
        group_b = Signal(max(1, group_bits), name="group_b")
        m.d.comb += lane_mask.eq(Mux((group == kg - 1) & (red_rem != 0), (Const(1, lanes + 1) << red_rem) - 1,
                                     (1 << lanes) - 1))

        a_row_addr = Signal(self._a_addr_width, name="a_read_addr")
        m.d.comb += [
            a_row_addr.eq(a_row + word),
            b_rd.addr.eq(b_tile + k),
        ]
        for rd in a_banks:
            m.d.comb += rd.addr.eq(a_row_addr)
        m.d.sync += [
            valid_b.eq(real),
            first_b.eq(real & (k == 0)),
            last_b.eq(real & is_last_group),
            offset_b.eq(offset),
            lane_mask_b.eq(lane_mask),
            group_b.eq(group_sel),
        ]

        # array inputs (stage B)
        for r in range(R):
            for lane in range(lanes):
                word_data = a_banks[r].data.as_value()
                group_data = word_data.word_select(group_b, 16 * lanes) if group_bits else word_data
                m.d.comb += array.act[r][lane].eq(Mux(lane_mask_b[lane], group_data[16 * lane:16 * lane + 16], 0))
        for c in range(C):
            m.d.comb += [
                array.wgt[c].eq(b_rd.data[c].value),
                array.idx[c].eq(offset_b + Mux(sparse_b, b_rd.data[c].idx, 0)),
            ]
        m.d.comb += [
            array.en.eq(1),
            array.valid.eq(valid_b),
            array.first.eq(first_b),
            array.last.eq(last_b),
        ]

        # ---------------------------------------------------------------------------------- control
        issued_all = Signal(name="issued_all")
        # The answer of a command: its counters and error, held until taken (a command is taken meanwhile only
        # together with the answer).
        answer = self.done.p
        done_valid = Signal(name="done_valid")
        m.d.comb += self.done.valid.eq(done_valid)
        with m.If(self.done.ready):
            m.d.sync += done_valid.eq(0)
        with m.FSM(name="control"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~done_valid | self.done.ready)
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [
                        cmd.eq(self.cmd.p),
                        answer.error.eq(0),
                        answer.cycles.eq(0), answer.busy_cycles.eq(0), answer.stall_cycles.eq(0), answer.macs.eq(0),
                    ]
                    with m.If(supported & shape_ok):
                        m.next = "SETUP"
                    with m.Else():
                        m.d.sync += [answer.error.eq(1), done_valid.eq(1)]
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += answer.cycles.eq(answer.cycles + 1)
                groups = Signal(DIM_WIDTH + 1, name="groups")
                with m.If(cmd.sparse):
                    m.d.sync += [n_reg.eq(cmd.n), m_reg.eq(cmd.m), sparse_b.eq(1)]
                    with m.Switch(cmd.m):
                        for mm in sorted({mm for _, mm in cfg.nm_set}):
                            with m.Case(mm):
                                m.d.comb += groups.eq((cmd.red + mm - 1) >> exact_log2(mm))
                    m.d.sync += ks.eq(groups * cmd.n)
                with m.Else():
                    m.d.sync += [n_reg.eq(1), m_reg.eq(1), sparse_b.eq(0), ks.eq(cmd.red)]
                words = (cmd.red + A_WORD_LANES - 1) >> exact_log2(A_WORD_LANES)
                m.d.sync += [
                    kw.eq(words), kg.eq((cmd.red + lanes - 1) >> lane_bits),
                    a_stride.eq(words * L),
                    red_rem.eq(cmd.red[:lane_bits] if lanes > 1 else 0),
                    i.eq(0), k.eq(0), s.eq(0), gm.eq(0),
                    row_base.eq(0), col_base.eq(0),
                    a_tile.eq(cmd.a_base), a_row.eq(cmd.a_base), b_tile.eq(cmd.b_base),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += answer.cycles.eq(answer.cycles + 1)
                with m.If(i == 0):
                    m.d.comb += real.eq(~blocked)
                    m.d.sync += group_real.eq(~blocked)
                    with m.If(~blocked):
                        m.d.sync += answer.macs.eq(answer.macs + nrows * ncols)
                        with m.If(is_last_group):
                            m.d.sync += issued_lasts.eq(issued_lasts + 1)
                        with m.If(k == 0):
                            m.d.comb += [pass_info.w_en.eq(1),
                                         pass_info.w_data.eq(Cat(row_base[:DIM_WIDTH], col_base[:DIM_WIDTH]))]
                with m.Else():
                    m.d.comb += real.eq(group_real)
                with m.If(real):
                    m.d.sync += answer.busy_cycles.eq(answer.busy_cycles + 1)
                with m.Else():
                    m.d.sync += answer.stall_cycles.eq(answer.stall_cycles + 1)
                with m.If(i == L - 1):
                    m.d.sync += [i.eq(0), a_row.eq(a_tile)]
                    with m.If(real):
                        with m.If(is_last_group):
                            m.d.sync += [k.eq(0), s.eq(0), gm.eq(0)]
                            with m.If(col_base + C >= cmd.cols):
                                m.d.sync += [
                                    col_base.eq(0), b_tile.eq(cmd.b_base),
                                    row_base.eq(row_base + RL),
                                    a_tile.eq(a_tile + a_stride), a_row.eq(a_tile + a_stride),
                                ]
                                with m.If(row_base + RL >= cmd.rows):
                                    m.next = "WAIT"
                            with m.Else():
                                m.d.sync += [col_base.eq(col_base + C), b_tile.eq(b_tile + ks)]
                        with m.Else():
                            m.d.sync += k.eq(k + 1)
                            with m.If(s == n_reg - 1):
                                m.d.sync += [s.eq(0), gm.eq(gm + m_reg)]
                            with m.Else():
                                m.d.sync += s.eq(s + 1)
                with m.Else():
                    m.d.sync += [i.eq(i + 1), a_row.eq(a_row + kw)]
            with m.State("WAIT"):
                m.d.comb += [self.busy.eq(1), issued_all.eq(1)]
                m.d.sync += answer.cycles.eq(answer.cycles + 1)
                with m.If(~pass_info.r_rdy):
                    m.d.sync += done_valid.eq(1)
                    m.next = "IDLE"

        # ---------------------------------------------------------------------------------- results
        drain = array.drain
        info_row = pass_info.r_data[:DIM_WIDTH]
        info_col = pass_info.r_data[DIM_WIDTH:]
        out_row = Signal(DIM_WIDTH + 1, name="out_row")
        m.d.comb += out_row.eq(info_row + drain.p.row)
        row_ok = out_row < cmd.rows
        final_pass = issued_all & (pass_info.level == 1)
        m.d.comb += [
            self.result.valid.eq(drain.valid & row_ok),
            drain.ready.eq(self.result.ready | ~row_ok),
            self.result.p.row.eq(out_row),
            self.result.p.col.eq(info_col),
            self.result.p.data.eq(drain.p.data),
            self.result.p.last.eq(final_pass & (out_row == cmd.rows - 1)),
            pass_info.r_en.eq(drain.valid & drain.ready & (drain.p.row == RL - 1)),
        ]
        for c in range(C):
            m.d.comb += self.result.p.lanes[c].eq(info_col + c < cmd.cols)
        return m


# ------------------------------------------------------------------------------------- buffer fill (software)

def a_buffer_writes(a_bits: np.ndarray, config: SATConfig, a_base: int = 0, *,
                    trans: bool = False) -> Iterator[dict]:
    """Write transactions (``a_write`` payloads) that place operand ``A`` in the A banks.

    Parameters
    ----------
    a_bits : uint16 array
        ``A`` as stored in memory: ``rows x red``, or ``red x rows`` when ``trans`` (``A_TRANS``).
    config : SATConfig
    a_base : int
        Word address of row 0.
    trans : bool
        ``A`` is stored transposed; the writes then come in stored order, as a DMA streaming ``A^T``
        produces them: ``R`` consecutive elements of a stored row (rows ``i..i+R-1`` of ``A`` at one ``k``)
        are one write, one lane in each bank.

    Yields
    ------
    dict with ``addr``, ``data`` (``R`` lists of 32 ints) and ``lanes`` (``R`` lane masks).
    """
    R, lanes = config.rows, A_WORD_LANES
    a_bits = np.asarray(a_bits, dtype=np.uint16)
    rows, red = (a_bits.shape[1], a_bits.shape[0]) if trans else a_bits.shape
    kw = a_words_per_row(red, config)
    empty = [[0] * lanes for _ in range(R)]
    if not trans:
        for i in range(rows):
            for w in range(kw):
                chunk = [int(x) for x in a_bits[i, w * lanes:(w + 1) * lanes]]
                data = [list(x) for x in empty]
                data[i % R] = chunk + [0] * (lanes - len(chunk))
                masks = [0] * R
                masks[i % R] = (1 << lanes) - 1
                yield {"addr": a_base + (i // R) * kw + w, "data": data, "lanes": masks}
    else:
        for kk in range(red):
            for i0 in range(0, rows, R):
                data = [list(x) for x in empty]
                masks = [0] * R
                for r in range(min(R, rows - i0)):
                    data[r][kk % lanes] = int(a_bits[kk, i0 + r])
                    masks[r] = 1 << (kk % lanes)
                yield {"addr": a_base + (i0 // R) * kw + kk // lanes, "data": data, "lanes": masks}


def b_dense_writes(b_bits: np.ndarray, config: SATConfig, b_base: int = 0, *,
                   trans: bool = False) -> Iterator[dict]:
    """Write transactions (``b_write`` payloads) that place a dense ``B`` (``red x cols``) in the B memory.

    With ``trans`` (``B_TRANS``) ``b_bits`` is stored ``cols x red`` and the writes come in stored order
    (one element per write, lane ``j mod C``).
    """
    C = config.cols
    b_bits = np.asarray(b_bits, dtype=np.uint16)
    red, cols = (b_bits.shape[1], b_bits.shape[0]) if trans else b_bits.shape
    tiles = -(-cols // C)
    if not trans:
        for t in range(tiles):
            for kk in range(red):
                chunk = [int(x) for x in b_bits[kk, t * C:(t + 1) * C]]
                yield {"addr": b_base + t * red + kk,
                       "data": [{"value": v, "idx": 0} for v in chunk + [0] * (C - len(chunk))],
                       "lanes": (1 << C) - 1}
    else:
        for j in range(cols):
            for kk in range(red):
                data = [{"value": 0, "idx": 0} for _ in range(C)]
                data[j % C] = {"value": int(b_bits[j, kk]), "idx": 0}
                yield {"addr": b_base + (j // C) * red + kk, "data": data, "lanes": 1 << (j % C)}


def b_sparse_writes(values_bits: np.ndarray, indices: np.ndarray, config: SATConfig,
                    b_base: int = 0) -> Iterator[dict]:
    """Write transactions for a compressed N:M ``B``: ``values_bits``/``indices`` of shape ``(G, N, cols)``.

    Step ``s = g*N + slot`` of column tile ``t`` goes to word ``b_base + t * G*N + s`` (the packed format's
    value beat ``s`` with the indices of its index beat).
    """
    C = config.cols
    values_bits = np.asarray(values_bits, dtype=np.uint16)
    groups, n, cols = values_bits.shape
    steps = groups * n
    tiles = -(-cols // C)
    v = values_bits.reshape(steps, cols)
    x = np.asarray(indices).reshape(steps, cols)
    for t in range(tiles):
        for st in range(steps):
            lanes = [{"value": int(v[st, j]), "idx": int(x[st, j])} if j < cols else {"value": 0, "idx": 0}
                     for j in range(t * C, t * C + C)]
            yield {"addr": b_base + t * steps + st, "data": lanes, "lanes": (1 << C) - 1}
