"""``ConvLines``: the implicit-GEMM half of the read issuer. It lowers a convolution's operand on the fly, from the
channels-last tensor in device memory, into the line records and DMA reads of :class:`~sat.hw.issuer.ReadIssuer`
(``docs/conv.md``).

A lowered row is a run of *pieces*, one per kernel tap it touches: the channels of one pixel of the tensor, which
are contiguous in memory. FF and WU (``im2col``) take tap ``(i, j)`` of output pixel ``(y, x)`` from tensor pixel
``(y*s - p + i, x*s - p + j)``; BP (the transposed convolution) from ``((y + p - i) / s, (x + p - j) / s)`` when
both divide. A tap outside the tensor, a stride gap or a padded channel (BP's ``C_out`` rounded up to ``M``) is a
*zero* piece: a record without a read, which the loader turns into zero writes. The first piece of a row carries
the row's destination in the buffer; the others continue where the previous one ended. A data piece that starts
the pixel after the previous data piece in memory (the next tap of the same tensor row, FF and WU, when a pixel is
as wide as its channels) is merged into that piece's record: one longer read, e.g. one read per kernel row for
the stem's 3-channel image instead of one per tap, and fewer, longer DRAM bursts for 64-channel layers.

Loads of one command follow each other in order, so the generator never divides: FF and BP rows continue from row
tile to row tile (the first starts at pixel 0), WU's column tiles from where the previous tile's first row ended
(the first at tap 0), and the chunk's start (``s0, s1, s2``) comes checked from the command processor.

Three pipeline stages: the piece (coordinates, length, validity), the address products (registered for timing,
and whether the piece continues the previous one), the address and the record, which is held until the next piece
shows whether it grows. One piece per cycle when the loader keeps up.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH, ConvPass

from .dma import request_layout
from .issuer import line_record_layout
from .sequencer import buffer_addr_width, context_layout, load_job_layout

__all__ = ["ConvLines"]


class ConvLines(wiring.Component):
    """Line records and DMA reads of one implicit convolution operand load (see the module docstring).

    Parameters
    ----------
    config : SATConfig
    beats_width : int
        Width of DMA request lengths.

    Attributes
    ----------
    job : In(stream(load_job_layout))
        An implicit load: A of FF or BP (rows ``r0 .. r0+rt-1``), or B of WU (columns ``c0 .. c0+ct-1``).
    context : In(context_layout)
        The command's values, its ``conv`` part included.
    rd_req : Out(stream(request_layout))
    lines : Out(stream(line_record_layout))
        A record goes out with its read in the same cycle; a zero piece's record goes out alone.
    busy : Out(1)
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

    def elaborate(self, platform) -> Module:  # noqa: C901 (one pipeline)
        m = Module()
        cfg = self._config
        R = cfg.rows
        aw = cfg.axi_addr_width
        dw_buf = buffer_addr_width(cfg)
        ctx = self.context
        cv = ctx.conv
        bp = cv.pass_ == ConvPass.BP

        job = Signal(load_job_layout(cfg), name="job")
        run = Signal(name="generating")
        rows_left = Signal(DIM_WIDTH + 1, name="rows_left")
        # the row's pixel (persists across loads: FF and BP rows continue from row tile to row tile)
        pb = Signal(16, name="pixel_b")
        py = Signal(16, name="pixel_y")
        px = Signal(16, name="pixel_x")
        # the row's first tap and channel, and WU's continuation for the next column tile
        i0 = Signal(16, name="tap_i0")
        j0 = Signal(16, name="tap_j0")
        ch0 = Signal(DIM_WIDTH, name="chan0")
        next_i = Signal(16, name="next_tile_i")
        next_j = Signal(16, name="next_tile_j")
        next_ch = Signal(DIM_WIDTH, name="next_tile_chan")
        first_row = Signal(name="first_row")
        row_len = Signal(DIM_WIDTH + 1, name="row_len")
        # the current piece's position
        ti = Signal(16, name="tap_i")
        tj = Signal(16, name="tap_j")
        ch = Signal(DIM_WIDTH, name="chan")
        remaining = Signal(DIM_WIDTH + 1, name="remaining")
        row_first = Signal(name="row_first_piece")
        # the row's destination in the buffer (A: bank and word of row q; B: word of reduction row)
        bank = Signal(range(R), name="dest_bank")
        da = Signal(dw_buf, name="dest_word")

        # ---------------------------------------------------------------- stage 0: the piece
        s_log2 = cv.stride_log2
        smask = (Const(1, 4) << s_log2) - 1
        ty = Signal(signed(22), name="ty")
        tx = Signal(signed(22), name="tx")
        valid_tap = Signal(name="valid_tap")
        hn = Signal(signed(22), name="h_num")
        wn = Signal(signed(22), name="w_num")
        m.d.comb += [hn.eq(py + cv.padding - ti), wn.eq(px + cv.padding - tj)]
        with m.If(bp):
            m.d.comb += [
                ty.eq(hn >> s_log2), tx.eq(wn >> s_log2),
                valid_tap.eq((hn >= 0) & (wn >= 0) & ((hn.as_unsigned() & smask) == 0)
                             & ((wn.as_unsigned() & smask) == 0) & (ty < cv.ty) & (tx < cv.tx)),
            ]
        with m.Else():
            m.d.comb += [
                ty.eq((py << s_log2) - cv.padding + ti), tx.eq((px << s_log2) - cv.padding + tj),
                valid_tap.eq((ty >= 0) & (tx >= 0) & (ty < cv.ty) & (tx < cv.tx)),
            ]
        in_data = ch < cv.cvalid
        limit = Mux(in_data, cv.cvalid, cv.chan)
        room = Signal(DIM_WIDTH + 1, name="piece_room")
        m.d.comb += room.eq(limit - ch)
        plen = Signal(DIM_WIDTH + 1, name="piece_len")
        m.d.comb += plen.eq(Mux(remaining < room, remaining, room))
        row_end = plen == remaining
        load_end = row_end & (rows_left == 1)

        # stage registers: v1 after stage 0, v2 after stage 1, v3 = the output
        p1 = Signal(data.StructLayout({
            "b": 16, "ty": 22, "tx": 22, "ch": DIM_WIDTH, "len": DIM_WIDTH + 1, "zero": 1, "first": 1,
            "bank": range(R), "addr": dw_buf, "last": 1,
        }), name="piece")
        v1 = Signal(name="piece_valid")
        p2 = Signal.like(p1, name="piece2")
        v2 = Signal(name="piece2_valid")
        prod_b = Signal(aw + 16, name="prod_image")
        prod_y = Signal(DIM_WIDTH + 19 + 22, name="prod_row")
        prod_x = Signal(DIM_WIDTH + 2 + 22, name="prod_pixel")
        rec = self.lines.p
        v3 = Signal(name="record_valid")
        zero3 = Signal(name="record_zero")
        addr3 = Signal(aw, name="record_addr")

        # Stage 3 holds a record until the piece after it is known: a data piece that continues it in memory is
        # merged into it (one longer read instead of two; e.g. the taps of a row of a 3-channel image), anything
        # else lets it go out. It goes out without a next piece only at the end of the load.
        contig2 = Signal(name="piece2_contiguous")
        first_beat3 = Signal(aw - 6, name="record_first_beat")
        merge = Signal(name="merge")
        emit = Signal(name="record_out")
        sent = Signal(name="record_sent")
        take3 = Signal(name="stage3_takes")
        out_ok = Signal(name="advance")
        m.d.comb += [
            merge.eq(v3 & ~zero3 & ~rec.last & v2 & contig2),
            emit.eq(v3 & ~merge & (v2 | rec.last | ~(run | v1))),
            sent.eq(emit & self.lines.ready & (zero3 | self.rd_req.ready)),
            take3.eq(~v3 | sent),
            out_ok.eq(~v2 | merge | take3),
        ]

        # ---------------------------------------------------------------- the generator's state
        with m.If(out_ok):
            m.d.sync += v1.eq(run)
            with m.If(run):
                m.d.sync += [
                    p1.b.eq(pb), p1.ty.eq(ty), p1.tx.eq(tx), p1.ch.eq(ch), p1.len.eq(plen),
                    p1.zero.eq(~valid_tap | ~in_data), p1.first.eq(row_first), p1.bank.eq(bank), p1.addr.eq(da),
                    p1.last.eq(load_end),
                    row_first.eq(0), remaining.eq(remaining - plen),
                ]
                with m.If(ch + plen == cv.chan):
                    m.d.sync += ch.eq(0)
                    with m.If(tj == cv.kw - 1):
                        m.d.sync += [tj.eq(0), ti.eq(ti + 1)]
                    with m.Else():
                        m.d.sync += tj.eq(tj + 1)
                with m.Else():
                    m.d.sync += ch.eq(ch + plen)
                with m.If(row_end):
                    # WU: the next column tile starts where this tile's first row ended
                    with m.If(first_row):
                        m.d.sync += first_row.eq(0)
                        with m.If(ch + plen == cv.chan):
                            m.d.sync += next_ch.eq(0)
                            with m.If(tj == cv.kw - 1):
                                m.d.sync += [next_j.eq(0), next_i.eq(ti + 1)]
                            with m.Else():
                                m.d.sync += [next_j.eq(tj + 1), next_i.eq(ti)]
                        with m.Else():
                            m.d.sync += [next_ch.eq(ch + plen), next_j.eq(tj), next_i.eq(ti)]
                    m.d.sync += [rows_left.eq(rows_left - 1), ti.eq(i0), tj.eq(j0), ch.eq(ch0),
                                 remaining.eq(row_len), row_first.eq(1)]
                    with m.If(px == cv.rx - 1):
                        m.d.sync += px.eq(0)
                        with m.If(py == cv.ry - 1):
                            m.d.sync += [py.eq(0), pb.eq(pb + 1)]
                        with m.Else():
                            m.d.sync += py.eq(py + 1)
                    with m.Else():
                        m.d.sync += px.eq(px + 1)
                    with m.If(job.a):
                        with m.If(bank == R - 1):
                            m.d.sync += [bank.eq(0), da.eq(da + ctx.kw)]
                        with m.Else():
                            m.d.sync += bank.eq(bank + 1)
                    with m.Else():
                        m.d.sync += da.eq(da + 1)
                    with m.If(rows_left == 1):
                        m.d.sync += run.eq(0)

            # ------------------------------------------------------------ stage 1: address products
            # the piece continues the previous one in memory: the next pixel of the same tensor row, from its
            # channel 0, after a piece that ended at the last channel of a pixel as wide as the channels
            m.d.sync += contig2.eq(v2 & ~p1.first & ~p1.zero & ~p2.zero & (p1.ch == 0)
                                   & (p2.ch + p2.len == cv.chan) & (cv.pix == (cv.chan << 1))
                                   & (p1.ty == p2.ty) & (p1.tx == p2.tx + 1))
            m.d.sync += [v2.eq(v1), p2.eq(p1),
                         prod_b.eq(p1.b * cv.img_pitch), prod_y.eq(p1.ty.as_unsigned() * cv.row_pitch),
                         prod_x.eq(p1.tx.as_unsigned() * cv.pix)]
            # ------------------------------------------------------------ stage 2: address, record
            lo = Signal(aw, name="piece_lo")
            m.d.comb += lo.eq(cv.tensor + prod_b + prod_y + prod_x + (p2.ch << 1))
            hi = lo + (p2.len << 1)
            with m.If(merge):
                # one read for both: the record held in stage 3 grows by this piece
                m.d.sync += [
                    rec.beats.eq(((hi - 1) >> 6) - first_beat3 + 1), rec.count.eq(rec.count + p2.len),
                    rec.last.eq(p2.last),
                ]
            with m.Elif(take3):
                m.d.sync += [
                    v3.eq(v2), zero3.eq(p2.zero), addr3.eq(Cat(Const(0, 6), lo[6:])), first_beat3.eq(lo >> 6),
                    rec.beats.eq(Mux(p2.zero, (p2.len + 31) >> 5, ((hi - 1) >> 6) - (lo >> 6) + 1)),
                    rec.off.eq(Mux(p2.zero, 0, lo[1:6])), rec.count.eq(p2.len),
                    rec.lane.eq(0), rec.addr.eq(p2.addr), rec.bank.eq(p2.bank), rec.vcols.eq(0),
                    rec.last.eq(p2.last), rec.a.eq(job.a), rec.trans.eq(0), rec.sparse.eq(0), rec.first.eq(0),
                    rec.zero.eq(p2.zero), rec.cont.eq(~p2.first),
                ]

        # ---------------------------------------------------------------- a new load
        new = self.job.p
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [job.eq(new), run.eq(1), row_first.eq(1), first_row.eq(1), bank.eq(0), da.eq(new.base)]
            with m.If(new.a):
                # rows r0..r0+rt-1 of FF or BP: each from the chunk's start tap and channel over red elements
                m.d.sync += [rows_left.eq(new.rt), row_len.eq(ctx.red),
                             i0.eq(cv.s0), j0.eq(cv.s1), ch0.eq(cv.s2),
                             ti.eq(cv.s0), tj.eq(cv.s1), ch.eq(cv.s2), remaining.eq(ctx.red)]
                with m.If(new.r0 == 0):
                    m.d.sync += [pb.eq(0), py.eq(0), px.eq(0)]
            with m.Else():
                # WU's B: reduction rows (pixels from the chunk's start), columns c0..c0+ct-1 of (tap, channel)
                m.d.sync += [rows_left.eq(ctx.red), row_len.eq(new.ct), remaining.eq(new.ct),
                             pb.eq(cv.s0), py.eq(cv.s1), px.eq(cv.s2)]
                with m.If(new.c0 == 0):
                    m.d.sync += [i0.eq(0), j0.eq(0), ch0.eq(0), ti.eq(0), tj.eq(0), ch.eq(0)]
                with m.Else():
                    m.d.sync += [i0.eq(next_i), j0.eq(next_j), ch0.eq(next_ch),
                                 ti.eq(next_i), tj.eq(next_j), ch.eq(next_ch)]

        m.d.comb += [
            self.job.ready.eq(~run & ~v1 & ~v2 & ~v3),
            self.busy.eq(run | v1 | v2 | v3),
            self.rd_req.p.addr.eq(addr3), self.rd_req.p.beats.eq(rec.beats),
            self.rd_req.valid.eq(emit & ~zero3 & self.lines.ready),
            self.lines.valid.eq(emit & (zero3 | self.rd_req.ready)),
        ]
        return m
