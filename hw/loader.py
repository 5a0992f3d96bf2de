"""``OperandLoader``: writes the DMA beats of the lines :class:`~sat.hw.issuer.ReadIssuer` requested into the
engine's operand buffers, in the layouts of :mod:`sat.hw.gemm`, and checks packed N:M operands.

One buffer write takes a run of a beat's elements that share a buffer word (``docs/system.md``, "Loader"):

* row-major A / dense B: consecutive elements of one word (A words are 32 lanes, a whole beat: a row-major A beat
  aligned to its word is one write; B words are ``C`` lanes);
* B^T: one element (its neighbours in the line are consecutive words of one lane);
* A^T: the rows of one word group: the same word and lane of consecutive banks, one ``a_write`` with a lane mask
  of that lane for each of their banks.

One shifted copy of the beat serves every kind of write, so there is no data multiplexer per bank. A line costs
one cycle for its record, one for its first beat, then one per write; a later beat is taken in the cycle of the
current beat's last write. A dense line's record and first beat are taken in the cycle of the previous line's
last write when they are there (*chained*): then a line costs its writes alone, and contiguous row-major lines
and convolution pieces load at one beat per cycle. The first line of a load and packed tiles are not chained.

A packed value beat's in-group indices are checked as it is taken (``BAD_OPERAND``: an index ``>= M`` or not
ascending within a group, on the lanes of real columns).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH
from sat.sw.nmformat import LANES
from sat.sw.tiling import A_WORD_LANES

from .dma import read_beat_layout
from .gemm import a_write_layout, b_write_layout
from .issuer import line_record_layout
from .sequencer import buffer_addr_width, context_layout, loaded_layout

__all__ = ["OperandLoader"]


class OperandLoader(wiring.Component):
    """Line records and DMA beats in, buffer writes out, one ``loaded`` answer per load.

    Parameters
    ----------
    config : SATConfig
        Needs ``axi_data_width == 512`` (the packed format is defined on 64-byte beats).
    beats_width : int
        Width of DMA request lengths.

    Attributes
    ----------
    lines : In(stream(line_record_layout))
    rd_data : In(stream(read_beat_layout))
    context : In(context_layout)
        ``kw``, ``steps``, ``n`` and ``m_val`` of the command.
    a_write, b_write : Out(stream)
        The engine's buffer write ports (the engine takes a write every cycle).
    loaded : Out(stream(loaded_layout))
        After the last write of a load: whether a beat had a read error, whether a packed operand was malformed.
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512:
            raise ValueError(f"the operand loader reads the packed N:M format in 64-byte beats and needs "
                             f"axi_data_width=512, not {config.axi_data_width}")
        self._config = config
        self._beats_width = beats_width
        a_aw, b_aw = exact_log2(config.a_depth), exact_log2(config.b_depth)
        super().__init__({
            "lines": In(stream.Signature(line_record_layout(config, beats_width))),
            "rd_data": In(stream.Signature(read_beat_layout(config.axi_data_width))),
            "context": In(context_layout(config)),
            "a_write": Out(stream.Signature(a_write_layout(config, a_aw))),
            "b_write": Out(stream.Signature(b_write_layout(config, b_aw))),
            "loaded": Out(stream.Signature(loaded_layout())),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    def elaborate(self, platform) -> Module:  # noqa: C901 (one FSM and its datapath)
        m = Module()
        cfg = self._config
        R, C, mm = cfg.rows, cfg.cols, A_WORD_LANES       # mm: lanes of an A word
        wm = max(mm, C)
        dw_buf = buffer_addr_width(cfg)
        ctx = self.context
        rd = self.rd_data

        rec = Signal(line_record_layout(cfg, self._beats_width), name="rec")
        rec_in = self.lines.p
        beats_left = Signal(self._beats_width, name="beats_left")
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
        line_dl = Signal.like(dl, name="line_dl")      # first element of the current packed tile
        line_da = Signal.like(da, name="line_da")
        carry_dl = Signal.like(dl, name="carry_dl")    # first element of the next packed tile
        carry_da = Signal.like(da, name="carry_da")
        rd_error = Signal(name="read_error")
        bad_op = Signal(name="bad_operand")
        loaded = Signal(name="loaded_valid")

        trans_a = Signal(name="trans_a")
        m.d.comb += trans_a.eq(rec.a & rec.trans)
        w_room = Mux(rec.trans, Mux(rec.a, R - bank, 1), Mux(rec.a, mm, C) - dl)
        ln0 = Signal(7, name="chunk_room")
        m.d.comb += ln0.eq(Mux(32 - src < w_room, 32 - src, w_room))
        ln = Signal(7, name="chunk_len")
        m.d.comb += ln.eq(Mux(e_left < ln0, e_left, ln0))
        # The shared shifter: lane j holds element src - dl - bank + j (bank 0 for B). Bank b of A reads lanes
        # b..b+max_m-1: for row-major A (only bank `bank` written) element src lands on lane dl; for A^T lane dl
        # of bank b holds element src - bank + b, the row of bank b in the run. B reads lanes 0..C-1.
        a_bank = Signal.like(bank, name="a_write_bank")
        m.d.comb += a_bank.eq(Mux(rec.a, bank, 0))
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

        aw_p = self.a_write.p
        bw_p = self.b_write.p
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
                         bw_p.data[j].idx.eq(Mux(rec.sparse, out_i[4 * j:4 * j + 4], 0)),
                         bw_p.lanes[j].eq(mask[j])]

        # index checks of a value beat being taken (quarter blk-1 of the index beat; a quarter of its own, since a
        # beat may be taken while the previous value beat's last write routes quarter blk-2)
        chk_quarter = Signal(128, name="check_quarter")
        m.d.comb += chk_quarter.eq(idx_beat.word_select((blk - 1)[:2], 128))
        bad_lanes = Signal(LANES, name="bad_lanes")
        for lane in range(LANES):
            nib = chk_quarter[4 * lane:4 * lane + 4]
            pnib = prev[4 * lane:4 * lane + 4]
            m.d.comb += bad_lanes[lane].eq((lane < rec.vcols)
                                           & ((nib >= ctx.m_val) | ((slot != 0) & (nib <= pnib))))

        # The current beat's last write: the next beat of the line, if any, is taken in the same cycle.
        beat_end = Signal(name="beat_end")
        m.d.comb += beat_end.eq((src + ln == 32) | (e_left == ln))

        def take_beat(after_value_beat: bool) -> None:
            """Take the DMA beat on rd_data (valid and ready): an index beat (then wait in BEAT for its first
            value beat) or a value / dense beat (then write it)."""
            m.d.sync += [beat.eq(rd.p.data), beats_left.eq(beats_left - 1), rd_error.eq(rd_error | rd.p.error)]
            with m.If(rec.sparse & (blk == 0)):
                m.d.sync += [idx_beat.eq(rd.p.data), blk.eq(1)]
                m.next = "BEAT"
            with m.Else():
                with m.If(rec.sparse):
                    with m.If(bad_lanes != 0):
                        m.d.sync += bad_op.eq(1)
                    # taken in the previous value beat's last write, step counts that beat only from the next cycle
                    step_now = step + 1 if after_value_beat else step
                    m.d.sync += [
                        prev.eq(chk_quarter),
                        slot.eq(Mux(slot == ctx.n - 1, 0, slot + 1)),
                        blk.eq(Mux(blk == 4, 0, blk + 1)),
                        dl.eq(line_dl), da.eq(line_da + step_now), src.eq(rec.off), e_left.eq(rec.count),
                    ]
                m.next = "WRITE"

        def take_record() -> None:
            """Take the line record on ``lines`` (valid and ready): a zero piece goes on to its writes, a line
            with a read waits in BEAT for its first beat."""
            m.d.sync += [rec.eq(rec_in), beats_left.eq(rec_in.beats), e_left.eq(rec_in.count),
                         src.eq(rec_in.off), blk.eq(0), step.eq(0), slot.eq(0)]
            with m.If(~rec_in.cont):
                m.d.sync += bank.eq(rec_in.bank)
            with m.If(rec_in.sparse):
                # a packed tile's first column continues where the previous tile of the load ended
                m.d.sync += [line_dl.eq(Mux(rec_in.first, 0, carry_dl)),
                             line_da.eq(Mux(rec_in.first, rec_in.addr, carry_da))]
            with m.Elif(~rec_in.cont):
                m.d.sync += [dl.eq(rec_in.lane), da.eq(rec_in.addr)]
            with m.If(rec_in.zero):
                # no read: write zeros, a beat's worth (32) at a time
                m.d.sync += [beat.eq(0), beats_left.eq(rec_in.beats - 1)]
                m.next = "WRITE"
            with m.Else():
                m.next = "BEAT"

        # A dense line's last write takes the next line's record of the same load, and its first beat when it is
        # there (``chain``): a line costs its writes alone. Packed tiles (index beats, a carried column) and the
        # first line of a load still pass through LINE (and BEAT), so a load's flags stay its own.
        chain = Signal(name="chain")
        m.d.comb += chain.eq(beat_end & (beats_left == 0) & ~rec.last & ~rec.sparse)

        with m.FSM(name="load") as load_fsm:
            with m.State("LINE"):
                with m.If(self.lines.valid):
                    take_record()
            with m.State("BEAT"):
                with m.If(rd.valid):
                    take_beat(after_value_beat=False)
            with m.State("WRITE"):
                # blk already advanced past the value beat: its quarter is blk - 2 (3 when blk wrapped to 0)
                m.d.comb += qsel.eq(Mux(blk == 0, 3, blk - 2))
                new_dl = Signal.like(dl, name="new_dl")
                new_da = Signal.like(da, name="new_da")
                m.d.comb += [new_dl.eq(dl), new_da.eq(da)]
                with m.If(rec.trans):
                    with m.If(rec.a):
                        with m.If(bank + ln == R):
                            m.d.sync += bank.eq(0)
                            m.d.comb += new_da.eq(da + ctx.kw)
                        with m.Else():
                            m.d.sync += bank.eq(bank + ln)
                    with m.Else():
                        m.d.comb += new_da.eq(da + 1)
                with m.Else():
                    with m.If(dl + ln == Mux(rec.a, mm, C)):
                        m.d.comb += [new_dl.eq(0), new_da.eq(da + Mux(rec.a, 1, ctx.steps))]
                    with m.Else():
                        m.d.comb += new_dl.eq(dl + ln)
                m.d.sync += [dl.eq(new_dl), da.eq(new_da), e_left.eq(e_left - ln), src.eq(src + ln)]
                with m.If(beat_end):
                    m.d.sync += src.eq(0)
                    with m.If(rec.sparse):
                        m.d.sync += step.eq(step + 1)
                        with m.If(step == 0):
                            m.d.sync += [carry_dl.eq(new_dl), carry_da.eq(new_da)]
                    with m.If(beats_left == 0):
                        with m.If(rec.last):
                            m.d.sync += loaded.eq(1)
                        m.next = "LINE"
                        with m.If(chain & self.lines.valid):
                            take_record()           # (its assignments override the ones above)
                            with m.If(~rec_in.zero & rd.valid):
                                m.d.sync += [beat.eq(rd.p.data), beats_left.eq(rec_in.beats - 1),
                                             rd_error.eq(rd_error | rd.p.error)]
                                m.next = "WRITE"
                    with m.Elif(rec.zero):
                        m.d.sync += beats_left.eq(beats_left - 1)
                    with m.Elif(rd.valid):
                        take_beat(after_value_beat=True)     # (its assignments override the ones above)
                    with m.Else():
                        m.next = "BEAT"
        # the answer of a load holds until taken; its flags then start afresh for the next load
        with m.If(self.loaded.valid & self.loaded.ready):
            m.d.sync += [loaded.eq(0), rd_error.eq(0), bad_op.eq(0)]

        # plain assignments (see TileSequencer)
        m.d.comb += [
            self.lines.ready.eq(load_fsm.ongoing("LINE") | (load_fsm.ongoing("WRITE") & chain)),
            rd.ready.eq(load_fsm.ongoing("BEAT")
                        | (load_fsm.ongoing("WRITE") & beat_end & (beats_left != 0) & ~rec.zero)
                        | (load_fsm.ongoing("WRITE") & chain & self.lines.valid & ~rec_in.zero)),
            self.a_write.valid.eq(load_fsm.ongoing("WRITE") & rec.a),
            self.b_write.valid.eq(load_fsm.ongoing("WRITE") & ~rec.a),
            self.loaded.valid.eq(loaded),
            self.loaded.p.read_error.eq(rd_error),
            self.loaded.p.bad_operand.eq(bad_op),
        ]
        return m
