"""``LoopbackEngine``: a test double for the engine slot of :class:`~sat.hw.core.SATCore`.

It exercises the command processor, the DMA read and write paths and the error codes with a defined, checkable
result, and computes no GEMM. ``tests/test_core_rtl.py`` runs the core with it (``sim/tb_core.py``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.utils import exact_log2

from sat.hw.cmdproc import ERROR_WIDTH, engine_members
from sat.sw.config import SATConfig
from sat.sw.regmap import ErrorCode

__all__ = ["LoopbackEngine"]


class LoopbackEngine(wiring.Component):
    """Test double for the engine slot: exercises operand reads and result writes, computes no GEMM.

    For each command: read every beat covering B ``[b_addr, b_end)`` (discarded; a read error ends the command
    with ``AXI_READ``); if ``abort`` is high then, end with ``ABORTED``; otherwise write the beats covering C
    ``[c_addr, c_end)``, beat ``i`` of them being beat ``i`` of the beats covering A ``[a_addr, a_end)`` (zeros
    past A's last beat; A beats past C's last are read and dropped), with byte strobes limited to
    ``[c_addr, c_end)``. Result: ``AXI_READ`` if an A beat had an error, else ``AXI_WRITE`` if a B response
    had one, else 0. Counters: ``busy_cycles`` = beats moved in the copy phase (``max(beats(A), beats(C))``),
    ``stall_cycles`` = copy-phase cycles without a beat, ``macs`` = 0.

    Parameters
    ----------
    config : SATConfig
    beats_width : int
        Width of DMA request lengths.
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        self._beats_width = beats_width
        super().__init__(engine_members(config, beats_width))

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        aw, dw = cfg.axi_addr_width, cfg.axi_data_width
        bb = dw // 8
        shift = exact_log2(bb)
        bw = self._beats_width
        cmd = self.control.cmd
        done = self.control.done

        a_addr = Signal(aw, name="a_addr")
        b_addr = Signal(aw, name="b_addr")
        c_addr = Signal(aw, name="c_addr")
        n_a = Signal(bw, name="a_beats")
        n_b = Signal(bw, name="b_beats")
        n_c = Signal(bw, name="c_beats")
        c_last = Signal(shift, name="c_last_byte")
        i = Signal(bw, name="beat")
        rd_error = Signal(name="read_error")
        code = Signal(ERROR_WIDTH, name="code")
        busy_cycles = Signal(48, name="busy_cycles")
        stall_cycles = Signal(48, name="stall_cycles")

        def beats(lo, end):
            return ((end - 1) >> shift) - (lo >> shift) + 1

        with m.FSM(name="loopback") as fsm:
            with m.State("IDLE"):
                with m.If(cmd.valid):
                    p = cmd.p
                    m.d.sync += [
                        a_addr.eq(p.a_addr), b_addr.eq(p.b_addr), c_addr.eq(p.c_addr),
                        n_a.eq(beats(p.a_addr, p.a_end)), n_b.eq(beats(p.b_addr, p.b_end)),
                        n_c.eq(beats(p.c_addr, p.c_end)), c_last.eq((p.c_end - 1)[:shift]),
                        rd_error.eq(0), busy_cycles.eq(0), stall_cycles.eq(0), i.eq(0),
                    ]
                    m.next = "B_REQUEST"
            with m.State("B_REQUEST"):
                m.d.comb += [self.rd_req.valid.eq(1), self.rd_req.p.addr.eq(b_addr), self.rd_req.p.beats.eq(n_b)]
                with m.If(self.rd_req.ready):
                    m.next = "B_DRAIN"
            with m.State("B_DRAIN"):
                m.d.comb += self.rd_data.ready.eq(1)
                with m.If(self.rd_data.valid & self.rd_data.p.last):
                    with m.If(self.rd_data.p.error):
                        m.d.sync += code.eq(ErrorCode.AXI_READ)
                        m.next = "DONE"
                    with m.Elif(self.control.abort):
                        m.d.sync += code.eq(ErrorCode.ABORTED)
                        m.next = "DONE"
                    with m.Else():
                        m.next = "C_REQUEST"
            with m.State("C_REQUEST"):
                m.d.comb += [self.wr_req.valid.eq(1), self.wr_req.p.addr.eq(c_addr), self.wr_req.p.beats.eq(n_c)]
                with m.If(self.wr_req.ready):
                    m.next = "A_REQUEST"
            with m.State("A_REQUEST"):
                m.d.comb += [self.rd_req.valid.eq(1), self.rd_req.p.addr.eq(a_addr), self.rd_req.p.beats.eq(n_a)]
                with m.If(self.rd_req.ready):
                    m.next = "COPY"
            with m.State("COPY"):
                need_a = i < n_a
                need_c = i < n_c
                lo = Mux(i == 0, c_addr[:shift], 0)
                hi = Mux(i == n_c - 1, c_last, bb - 1)
                ones = (1 << bb) - 1
                m.d.comb += [
                    self.rd_data.ready.eq(need_a & (~need_c | self.wr_data.ready)),
                    self.wr_data.valid.eq(need_c & (~need_a | self.rd_data.valid)),
                    self.wr_data.p.data.eq(Mux(need_a, self.rd_data.p.data, 0)),
                    self.wr_data.p.strb.eq(((ones << lo) & ((2 << hi) - 1))[:bb]),
                ]
                move = (~need_a | self.rd_data.valid) & (~need_c | self.wr_data.ready)
                with m.If(~need_a & ~need_c):
                    m.next = "C_WAIT"
                with m.Elif(move):
                    m.d.sync += [i.eq(i + 1), busy_cycles.eq(busy_cycles + 1)]
                    with m.If(need_a & self.rd_data.p.error):
                        m.d.sync += rd_error.eq(1)
                with m.Else():
                    m.d.sync += stall_cycles.eq(stall_cycles + 1)
            with m.State("C_WAIT"):
                m.d.comb += self.wr_done.ready.eq(1)
                with m.If(self.wr_done.valid):
                    m.d.sync += code.eq(Mux(rd_error, ErrorCode.AXI_READ,
                                            Mux(self.wr_done.p.error, ErrorCode.AXI_WRITE, 0)))
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [
                    done.valid.eq(1), done.p.error.eq(code), done.p.busy_cycles.eq(busy_cycles),
                    done.p.stall_cycles.eq(stall_cycles), done.p.macs.eq(0),
                ]
                with m.If(done.ready):
                    m.next = "IDLE"
        # a plain assignment, defined from time 0 in every simulator (Icarus does not run an `always @*` block
        # whose inputs never change, so a ready set inside the IDLE case stayed X until the first command)
        m.d.comb += cmd.ready.eq(fsm.ongoing("IDLE"))
        return m
