"""``ReadIssuer``: turns an operand load of the GEMM unit into DMA read requests, one per stored line, and a line
record per request that tells :class:`~sat.hw.loader.OperandLoader` where the line's elements go.

A *line* is a run of one stored row restricted to the tile: a row of A (``red`` elements), a stored row of A^T
(the tile's ``rt`` rows at one ``k``), a row of dense B (the tile's ``ct`` columns), a stored row of B^T (one
column, ``red`` elements), or, for a packed N:M B, one packed 32-column tile (its ``S + ceil(S/4)`` beats) cut to
the columns of the tile. A request goes out only together with its record (both streams take it in the same
cycle), so records and the DMA's beats stay in order.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH, ConvPass
from sat.sw.nmformat import LANES
from sat.sw.tiling import A_WORD_LANES

from .dma import request_layout
from .sequencer import buffer_addr_width, context_layout, load_job_layout

__all__ = ["ReadIssuer", "line_record_layout"]


def line_record_layout(config: SATConfig, beats_width: int = 32) -> data.StructLayout:
    """One DMA line for the loader.

    ``beats``: beats of the request; ``off``: first element's position in the first beat (for a packed tile:
    its first column's lane); ``count``: elements (columns of a packed tile); ``lane``, ``addr``, ``bank``: where
    the first element goes (for a packed tile ``addr`` is the buffer half's base); ``vcols``: real columns of a
    packed tile (lanes whose indices are checked); ``last``: last line of the load; ``a``, ``trans``, ``sparse``:
    the load's kind; ``first``: first line of the load; ``zero``: no read, write ``count`` zeros
    (:class:`~sat.hw.convlines.ConvLines`' padding); ``cont``: the elements continue where the previous record's
    ended (``lane``, ``addr``, ``bank`` unused).
    """
    wm = max(A_WORD_LANES, config.cols)
    return data.StructLayout({
        "beats": beats_width, "off": 5, "count": DIM_WIDTH + 1, "lane": range(wm),
        "addr": buffer_addr_width(config), "bank": range(config.rows), "vcols": 6, "last": 1,
        "a": 1, "trans": 1, "sparse": 1, "first": 1, "zero": 1, "cont": 1,
    })


class ReadIssuer(wiring.Component):
    """DMA read requests and line records of one operand load at a time (see the module docstring).

    Parameters
    ----------
    config : SATConfig
    beats_width : int
        Width of DMA request lengths.

    Attributes
    ----------
    job : In(stream(load_job_layout))
        A load; taken while no load is being issued.
    context : In(context_layout)
        The command's values (addresses, strides, ``red``, ``kw``, ``steps``).
    rd_req : Out(stream(request_layout))
        DMA read requests (aligned beats).
    lines : Out(stream(line_record_layout))
        One record per request, transferred in the same cycle as the request.
    busy : Out(1)
        A load is being issued.
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        self._beats_width = beats_width
        super().__init__({
            "job": In(stream.Signature(load_job_layout(config))),
            "context": In(context_layout(config)),
            "rd_req": Out(stream.Signature(request_layout(config.axi_addr_width, beats_width))),
            "lines": Out(stream.Signature(line_record_layout(config, beats_width))),
            "busy": Out(1),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        R, C = cfg.rows, cfg.cols
        lg_w = exact_log2(A_WORD_LANES)
        aw = cfg.axi_addr_width
        dw_buf = buffer_addr_width(cfg)
        c = self.context
        rec = Signal(line_record_layout(cfg, self._beats_width), name="record")
        req = Signal(request_layout(aw, self._beats_width), name="request")
        from .convlines import ConvLines  # it uses this module's record layout

        m.submodules.conv_lines = conv = ConvLines(cfg, beats_width=self._beats_width)
        m.d.comb += conv.context.eq(c)
        # a convolution's implicit operand (A of FF and BP, B of WU) is lowered by ConvLines
        implicit = Signal(name="implicit_load")
        wu = c.conv.pass_ == ConvPass.WU
        m.d.comb += implicit.eq(c.conv.enable & Mux(self.job.p.a, ~wu, wu))

        job = Signal(load_job_layout(cfg), name="job")
        run = Signal(name="issuing")
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
        m.d.comb += c_end.eq(job.c0 + job.ct)
        m.d.comb += [
            e_lo.eq(Mux(job.c0 > pt_col, job.c0, pt_col)),
            e_hi.eq(Mux(c_end < pt_col + LANES, c_end, pt_col + LANES)),
        ]
        with m.If(job.a):
            with m.If(job.trans):
                m.d.comb += [lo.eq(a_line_addr + (job.r0 << 1)), count.eq(job.rt), last.eq(line == c.red - 1),
                             rec.lane.eq(line[:lg_w]), rec.addr.eq((line >> lg_w) + job.base),
                             rec.bank.eq(0)]
            with m.Else():
                m.d.comb += [lo.eq(a_line_addr), count.eq(c.red), last.eq(line == job.rt - 1),
                             rec.lane.eq(0), rec.addr.eq(a_da), rec.bank.eq(a_bank)]
        with m.Elif(job.sparse):
            m.d.comb += [lo.eq(pt_addr), count.eq(e_hi - e_lo), last.eq(e_hi == c_end), rec.addr.eq(job.base)]
        with m.Elif(job.trans):
            m.d.comb += [lo.eq(b_line_addr), count.eq(c.red), last.eq(line == job.ct - 1),
                         rec.lane.eq(b_lane), rec.addr.eq(b_da)]
        with m.Else():
            m.d.comb += [lo.eq(b_line_addr + (job.c0 << 1)), count.eq(job.ct), last.eq(line == c.red - 1),
                         rec.lane.eq(0), rec.addr.eq(line + job.base)]
        m.d.comb += hi.eq(lo + (count << 1))
        dense_beats = ((hi - 1) >> 6) - (lo >> 6) + 1
        vcols_full = c.cols - pt_col
        packed = job.sparse & ~job.a
        m.d.comb += [
            rec.beats.eq(Mux(packed, c.steps + ((c.steps + 3) >> 2), dense_beats)),
            rec.off.eq(Mux(packed, (e_lo - pt_col)[:5], lo[1:6])),
            rec.count.eq(count),
            rec.vcols.eq(Mux(vcols_full >= LANES, LANES, vcols_full)),
            rec.last.eq(last),
            rec.a.eq(job.a), rec.trans.eq(job.trans), rec.sparse.eq(job.sparse), rec.first.eq(line == 0),
            req.addr.eq(Cat(Const(0, 6), lo[6:])),
            req.beats.eq(rec.beats),
        ]
        with m.If(run):
            with m.If(self.rd_req.ready & self.lines.ready):
                m.d.sync += line.eq(line + 1)
                with m.If(last):
                    m.d.sync += run.eq(0)
                with m.If(job.a):
                    m.d.sync += a_line_addr.eq(a_line_addr + c.a_stride)
                    with m.If(a_bank == R - 1):
                        m.d.sync += [a_bank.eq(0), a_da.eq(a_da + c.kw)]
                    with m.Else():
                        m.d.sync += a_bank.eq(a_bank + 1)
                with m.Elif(job.sparse):
                    with m.If(e_hi == pt_col + LANES):
                        m.d.sync += [pt_col.eq(pt_col + LANES), pt_addr.eq(pt_addr + c.tile_bytes)]
                with m.Else():
                    m.d.sync += b_line_addr.eq(b_line_addr + c.b_stride)
                    with m.If(b_lane == C - 1):
                        m.d.sync += [b_lane.eq(0), b_da.eq(b_da + c.steps)]
                    with m.Else():
                        m.d.sync += b_lane.eq(b_lane + 1)
        new = self.job.p
        with m.If(self.job.valid & self.job.ready & ~implicit):
            m.d.sync += [job.eq(new), run.eq(1), line.eq(0), a_bank.eq(0), a_da.eq(new.base), b_lane.eq(0),
                         b_da.eq(new.base)]
            # Row-major A continues from row to row across row tiles (rows are loaded in order from r0 = 0);
            # A^T restarts at k = 0 for every row tile; B^T continues across the column tiles of a row tile.
            with m.If(new.a & (new.trans | (new.r0 == 0))):
                m.d.sync += a_line_addr.eq(c.a_addr)
            with m.If(~new.a):
                with m.If(~new.trans | (new.c0 == 0)):
                    m.d.sync += b_line_addr.eq(c.b_addr)
                with m.If(new.c0 == 0):
                    m.d.sync += [pt_addr.eq(c.b_addr), pt_col.eq(0)]

        # plain assignments (see TileSequencer): a request goes out together with its record
        m.d.comb += [
            self.job.ready.eq(~run & ~conv.busy & (~implicit | conv.job.ready)),
            conv.job.valid.eq(self.job.valid & implicit & ~run),
            conv.job.payload.eq(self.job.payload),
            self.busy.eq(run | conv.busy),
        ]
        with m.If(conv.busy):
            m.d.comb += [self.rd_req.p.eq(conv.rd_req.p), self.rd_req.valid.eq(conv.rd_req.valid),
                         conv.rd_req.ready.eq(self.rd_req.ready),
                         self.lines.p.eq(conv.lines.p), self.lines.valid.eq(conv.lines.valid),
                         conv.lines.ready.eq(self.lines.ready)]
        with m.Else():
            m.d.comb += [self.rd_req.p.eq(req), self.rd_req.valid.eq(run & self.lines.ready),
                         self.lines.p.eq(rec), self.lines.valid.eq(run & self.rd_req.ready)]
        return m
