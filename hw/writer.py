"""``ResultWriter``: writes the engine's result rows (``C`` FP32 lanes each) to C in device memory, one DMA write
per row with byte strobes for the tile's real columns.

A command with narrow results (the descriptor's RESULT field, ``context.narrow``) first rounds every lane once to
the operand format (:class:`~sat.hw.fp.FP32Round`, ``C`` of them, two pipeline stages that advance whenever their
output is taken or empty) and writes 2 bytes per element: half the bytes and beats of an FP32 row. FP32 commands
bypass the rounders, so their timing is unchanged; a narrow command's rows reach the write registers two cycles
later.

A write register (request, then one cycle per beat) has a holding register in front of it: a result is taken
whenever the holding register is empty, into the write registers when they are free (idle, or in the cycle of
the current row's last beat) and into the holding register otherwise. So the next row's request follows the
current row's last beat at once, and a row of ``k`` beats costs ``k + 2`` cycles with ``DMAWriter`` (its request
and address cycles; ``sat.sw.perfmodel.WRITE_ROW``).

The row's address is ``c_rowtile_addr + (row - r0) * c_stride + e * (c0 + col)`` (``e`` = 4, or 2 narrow), computed
without a multiplier:
rows arrive in order within a pass (``R * L`` rows) and passes in order, so each address is the previous row's
plus ``c_stride`` or the pass start's plus ``R * L * c_stride``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH

from .dma import request_layout, write_beat_layout, write_done_layout
from .fp import FP32Round
from .gemm import result_layout
from .sequencer import context_layout, writer_tile_layout

__all__ = ["ResultWriter", "MAX_OUTSTANDING"]

#: Write requests in flight before the writer waits for responses.
MAX_OUTSTANDING = 255


class ResultWriter(wiring.Component):
    """Result rows in, DMA writes out (see the module docstring).

    Parameters
    ----------
    config : SATConfig
        Needs ``axi_data_width == 512``.
    beats_width : int
        Width of DMA request lengths.

    Attributes
    ----------
    result : In(stream(result_layout))
        The engine's result rows.
    tile : In(stream(writer_tile_layout))
        The tile the engine starts (always ready); its rows come next on ``result``.
    context : In(context_layout)
        ``c_stride``, ``rl_cstride`` and ``narrow`` of the command.
    clear : In(1)
        A new command: forget the previous command's write error.
    wr_req, wr_data, wr_done
        The DMA writer's request, beat and completion streams.
    error : Out(1)
        A write of this command got an error response.
    idle : Out(1)
        Nothing taken is unwritten and every write has completed.
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512:
            raise ValueError(f"the result writer packs rows into 64-byte beats and needs axi_data_width=512, "
                             f"not {config.axi_data_width}")
        self._config = config
        aw, dw = config.axi_addr_width, config.axi_data_width
        super().__init__({
            "result": In(stream.Signature(result_layout(config))),
            "tile": In(stream.Signature(writer_tile_layout(config))),
            "context": In(context_layout(config)),
            "clear": In(1),
            "wr_req": Out(stream.Signature(request_layout(aw, beats_width))),
            "wr_data": Out(stream.Signature(write_beat_layout(dw))),
            "wr_done": In(stream.Signature(write_done_layout())),
            "error": Out(1),
            "idle": Out(1),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        R, C, L = cfg.rows, cfg.cols, cfg.adder_latency
        aw = cfg.axi_addr_width
        ctx = self.context
        narrow = ctx.narrow
        h_valid = Signal(name="hold_valid")
        pend_valid = Signal(name="tile_pending")

        # Narrow results: the rounding pipeline (two stages, FP32Round.LATENCY), bypassed for FP32 results. It
        # advances when its last stage is empty or taken (the holding register is empty).
        src = self.result
        meta = data.StructLayout({"row": DIM_WIDTH, "col": DIM_WIDTH})
        assert FP32Round.LATENCY == 2
        rnd_v1, rnd_v2 = Signal(name="round_valid1"), Signal(name="round_valid2")
        rnd_m1, rnd_m2 = Signal(meta, name="round_meta1"), Signal(meta, name="round_meta2")
        advance = Signal(name="round_advance")
        m.d.comb += advance.eq(~rnd_v2 | ~h_valid)
        rounded = []
        for j in range(C):
            rnd = FP32Round(cfg.fmt)
            m.submodules[f"round{j}"] = rnd
            m.d.comb += [rnd.a.eq(src.p.data[j]), rnd.en.eq(advance)]
            rounded.append(rnd.r)
        with m.If(advance):
            m.d.sync += [rnd_v1.eq(src.valid & narrow & ~pend_valid), rnd_m1.row.eq(src.p.row),
                         rnd_m1.col.eq(src.p.col),
                         rnd_v2.eq(rnd_v1), rnd_m2.eq(rnd_m1)]
        # the result row the writer takes: rounded (narrow) or as it comes (FP32)
        res_valid = Signal(name="res_valid")
        res_row = Signal(DIM_WIDTH, name="res_row")
        res_col = Signal(DIM_WIDTH, name="res_col")
        res_data = Signal(32 * C, name="res_data")
        m.d.comb += [
            res_valid.eq(Mux(narrow, rnd_v2, src.valid)),
            res_row.eq(Mux(narrow, rnd_m2.row, src.p.row)),
            res_col.eq(Mux(narrow, rnd_m2.col, src.p.col)),
            res_data.eq(Mux(narrow, Cat(*rounded), Cat(*[src.p.data[j] for j in range(C)]))),
        ]

        # The tile whose rows arrive. Rows still in the rounding pipeline belong to the previous tile: a tile that
        # comes while some are there waits in ``pend`` (and no new row enters) until they are taken. FP32 results
        # never wait: the pipeline is empty.
        t_c0 = Signal(DIM_WIDTH + 1, name="tile_c0")
        t_ct = Signal(DIM_WIDTH + 1, name="tile_ct")
        t_rt_addr = Signal(aw, name="tile_c_rowtile_addr")
        pend = Signal(writer_tile_layout(cfg), name="tile_pend")
        drained = Signal(name="round_drained")
        m.d.comb += drained.eq(~rnd_v1 & ~rnd_v2)     # the engine has passed on every row of a tile it answers
        new_tile = Signal(name="tile_apply")
        tile_p = Signal(writer_tile_layout(cfg), name="tile_next")
        m.d.comb += [new_tile.eq((self.tile.valid | pend_valid) & drained),
                     tile_p.eq(Mux(self.tile.valid, self.tile.p, pend))]
        with m.If(new_tile):
            m.d.sync += [t_c0.eq(tile_p.c0), t_ct.eq(tile_p.ct), t_rt_addr.eq(tile_p.c_rowtile_addr),
                         pend_valid.eq(0)]
        with m.Elif(self.tile.valid):
            m.d.sync += [pend.eq(self.tile.p), pend_valid.eq(1)]

        pass_row = Signal(DIM_WIDTH + 1, name="pass_row")
        pass_addr = Signal(aw, name="pass_addr")
        row_addr = Signal(aw, name="row_addr")
        first_res = Signal(name="first_result")
        tile_c_addr = Signal(aw, name="tile_c_addr")
        m.d.comb += tile_c_addr.eq(t_rt_addr + Mux(narrow, t_c0 << 1, t_c0 << 2))
        used = Signal(aw, name="row_used")
        with m.If(first_res | (res_row == pass_row)):
            m.d.comb += used.eq(Mux(first_res, tile_c_addr, pass_addr))
        with m.Elif(res_row == pass_row + R * L):
            m.d.comb += used.eq(pass_addr + ctx.rl_cstride)
        with m.Else():
            m.d.comb += used.eq(row_addr + ctx.c_stride)
        waddr = Signal(aw, name="waddr")
        m.d.comb += waddr.eq(used + Mux(narrow, res_col << 1, res_col << 2))
        nv = Signal(range(C + 1), name="valid_lanes")
        m.d.comb += nv.eq(Mux(t_ct - res_col >= C, C, t_ct - res_col))
        nbytes = Signal(range(4 * C + 1), name="row_bytes")
        m.d.comb += nbytes.eq(Mux(narrow, nv << 1, nv << 2))
        off = waddr[:6]
        max_beats = -(-(60 + 4 * C) // 64)
        wide = Signal(512 * max_beats, name="wide")
        wide_strb = Signal(64 * max_beats, name="wide_strb")
        w_beats = Signal(range(max_beats + 1), name="w_beats")
        w_beat = Signal(range(max_beats + 1), name="w_beat")
        w_base = Signal(aw, name="w_base")
        outstanding = Signal(range(MAX_OUTSTANDING + 1), name="outstanding")
        bytemask = Signal(4 * C, name="bytemask")
        m.d.comb += bytemask.eq(((Const(1, 4 * C + 1) << nbytes) - 1)[:4 * C])
        w_busy = Signal(name="writer_busy")
        h_wide = Signal.like(wide, name="hold_wide")
        h_strb = Signal.like(wide_strb, name="hold_strb")
        h_beats = Signal.like(w_beats, name="hold_beats")
        h_base = Signal.like(w_base, name="hold_base")
        take = Signal(name="result_take")
        m.d.comb += take.eq(res_valid & ~h_valid)
        n_wide = res_data << (off << 3)
        n_strb = bytemask << off
        n_beats = ((off + nbytes - 1) >> 6) + 1
        n_base = Cat(Const(0, 6), waddr[6:])
        with m.If(take):
            m.d.sync += [row_addr.eq(used), first_res.eq(0)]
            with m.If(first_res):
                m.d.sync += [pass_row.eq(0), pass_addr.eq(tile_c_addr)]
            with m.Elif((res_row != pass_row) & (res_row == pass_row + R * L)):
                m.d.sync += [pass_row.eq(res_row), pass_addr.eq(used)]
        with m.If(new_tile):
            m.d.sync += first_res.eq(1)

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
                m.d.comb += [self.wr_req.p.addr.eq(w_base), self.wr_req.p.beats.eq(w_beats)]
                hold_row()
                with m.If(self.wr_req.ready & (outstanding != MAX_OUTSTANDING)):
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
        inc = self.wr_req.valid & self.wr_req.ready
        dec = self.wr_done.valid
        with m.If(inc & ~dec):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(dec & ~inc):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.If(dec & self.wr_done.p.error):
            m.d.sync += self.error.eq(1)

        # plain assignments (see TileSequencer)
        m.d.comb += [
            src.ready.eq(Mux(narrow, advance & ~pend_valid, ~h_valid)),
            self.tile.ready.eq(1),
            self.wr_done.ready.eq(1),
            self.wr_req.valid.eq(writer_fsm.ongoing("WREQ") & (outstanding != MAX_OUTSTANDING)),
            self.wr_data.valid.eq(writer_fsm.ongoing("WDATA")),
            self.idle.eq(~w_busy & ~h_valid & ~src.valid & ~rnd_v1 & ~rnd_v2 & ~pend_valid
                      & (outstanding == 0)),
        ]
        return m
