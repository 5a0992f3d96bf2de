"""``SATCore``: the accelerator core as the card top level sees it (AXI4-Lite slave, AXI4 master, interrupt).

Block diagram (``docs/core.md``)::

    s_axil_* <-> CSRBlock (csr) <-> CommandProcessor (cmdproc) <-> engine (cmd / done / abort)
                 |                      | descriptor fetch            | operand reads      | result writes
                 irq                    v (client 0)                  v (client 1)         v
                               ReadArbiter (read_arbiter) --> DMAReader (dma_read)    DMAWriter (dma_write)
                                                                 | AR/R                  | AW/W/B
                                                                 +--------> m_axi_* <----+

The engine slot takes any component with the ports of :class:`LoopbackEngine`. Until the GEMM engine
(``sat.hw.gemm``) is wrapped with its operand loader and result writer, the default engine is
:class:`LoopbackEngine`, a **test double** that exercises the DMA paths with a defined, checkable result; it does
not compute a GEMM.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.regmap import DEFAULT_MEMORY_BYTES, ErrorCode

from .cmdproc import ERROR_WIDTH, CommandProcessor, engine_signature
from .csr import CSRBlock, axil_slave_signature
from .dma import (
    DMAReader,
    DMAWriter,
    ReadArbiter,
    axi4_read_signature,
    axi4_write_signature,
    read_beat_layout,
    request_layout,
    write_beat_layout,
    write_done_layout,
)

__all__ = ["SATCore", "LoopbackEngine", "engine_members", "core_ports"]


def engine_members(config: SATConfig, beats_width: int = 32) -> dict[str, wiring.Member]:
    """Ports every engine plugged into :class:`SATCore` has, as seen from the engine.

    ``control``: the command processor interface (:func:`sat.hw.cmdproc.engine_signature`, flipped).
    ``rd_req`` / ``rd_data``: a DMA read client (requests of whole aligned beats; beats with ``last``/``error``).
    ``wr_req`` / ``wr_data`` / ``wr_done``: the DMA writer (requests, beats with byte strobes, completion).
    """
    aw, dw = config.axi_addr_width, config.axi_data_width
    return {
        "control": In(engine_signature(aw)),
        "rd_req": Out(stream.Signature(request_layout(aw, beats_width))),
        "rd_data": In(stream.Signature(read_beat_layout(dw))),
        "wr_req": Out(stream.Signature(request_layout(aw, beats_width))),
        "wr_data": Out(stream.Signature(write_beat_layout(dw))),
        "wr_done": In(stream.Signature(write_done_layout())),
    }


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


def core_ports(config: SATConfig, *, axil_addr_width: int = 32, id_width: int = 4) -> dict[str, wiring.Member]:
    """The flat top-level ports of :class:`SATCore` (``clk``/``rst`` are added by the ``sync`` domain)."""
    ports: dict[str, wiring.Member] = {}
    for name, member in axil_slave_signature(axil_addr_width).members.items():
        ports[f"s_axil_{name}"] = member
    aw, dw = config.axi_addr_width, config.axi_data_width
    for sig in (axi4_write_signature(aw, dw, id_width), axi4_read_signature(aw, dw, id_width)):
        for name, member in sig.members.items():
            ports[f"m_axi_{name}"] = member
    ports["irq"] = Out(1)
    return ports


class SATCore(wiring.Component):
    """The SAT core: register block, command processor, DMA and engine, with flat XDMA-style ports.

    Ports (all on the ``sync`` clock ``clk``, synchronous active-high ``rst``): ``s_axil_*`` (AXI4-Lite slave,
    32-bit data, ``axil_addr_width`` address), ``m_axi_*`` (AXI4 master with IDs, ``config.axi_data_width`` data,
    ``config.axi_addr_width`` address), ``irq`` (level, ``|(IRQ_STATUS & IRQ_ENABLE)``, registered). The exact
    list is in ``docs/core.md``.

    Parameters
    ----------
    config : SATConfig
    memory_bytes : int, optional
        Device memory the command processor checks operand extents against and ``MEM_SIZE`` reports (default
        16 GiB, one VCU1525 DDR4 channel, or 4 GiB in a 32-bit build).
    axil_addr_width : int
        Address width of the AXI4-Lite slave (XDMA's user BAR master has 32).
    id_width : int
        AXI ID width of ``m_axi`` (the core drives ID 0 and ignores returned IDs).
    max_burst : int
        Longest DMA burst in beats.
    engine : callable, optional
        ``engine(config, beats_width=...)`` returning a component with :func:`engine_members`; default
        :class:`LoopbackEngine` (a test double, see the module docstring).

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    ValueError
        For parameters out of range (see the submodules).
    """

    def __init__(self, config: SATConfig, *, memory_bytes: int | None = None, axil_addr_width: int = 32,
                 id_width: int = 4, max_burst: int = 256,
                 engine: Callable[..., wiring.Component] | None = None) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if not isinstance(id_width, int) or not 1 <= id_width <= 16:
            raise ValueError(f"id_width must be an integer between 1 and 16, not {id_width!r}")
        if memory_bytes is None:
            memory_bytes = min(DEFAULT_MEMORY_BYTES, 1 << config.axi_addr_width)
        self._config = config
        self._memory_bytes = memory_bytes
        self._axil_addr_width = axil_addr_width
        self._id_width = id_width
        self._max_burst = max_burst
        self._engine = engine or LoopbackEngine
        # build the submodules now so that parameter errors surface at construction
        self._beats_width = 32
        self._cmdproc = CommandProcessor(config, memory_bytes=memory_bytes, beats_width=self._beats_width)
        self._csr = CSRBlock(config, memory_bytes=memory_bytes, addr_width=axil_addr_width)
        aw, dw = config.axi_addr_width, config.axi_data_width
        self._reader = DMAReader(aw, dw, beats_width=self._beats_width, max_burst=max_burst)
        self._writer = DMAWriter(aw, dw, beats_width=self._beats_width, max_burst=max_burst)
        self._arbiter = ReadArbiter(2, aw, dw, beats_width=self._beats_width)
        self._engine_inst = self._engine(config, beats_width=self._beats_width)
        super().__init__(core_ports(config, axil_addr_width=axil_addr_width, id_width=id_width))

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def memory_bytes(self) -> int:
        return self._memory_bytes

    @property
    def id_width(self) -> int:
        return self._id_width

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.csr = csr = self._csr
        m.submodules.cmdproc = cmdproc = self._cmdproc
        m.submodules.read_arbiter = arbiter = self._arbiter
        m.submodules.dma_read = reader = self._reader
        m.submodules.dma_write = writer = self._writer
        m.submodules.engine = engine = self._engine_inst

        # AXI4-Lite slave
        for name, member in axil_slave_signature(self._axil_addr_width).members.items():
            top, sub = getattr(self, f"s_axil_{name}"), getattr(csr, name)
            m.d.comb += (sub.eq(top) if member.flow == In else top.eq(sub))
        # AXI4 master: reader on AR/R, writer on AW/W/B (independent channels; IDs are 0)
        for block, sig in ((reader, reader.axi.signature), (writer, writer.axi.signature)):
            for name, member in sig.members.items():
                top, sub = getattr(self, f"m_axi_{name}"), getattr(block.axi, name)
                if name in ("arid", "rid", "awid", "bid"):
                    if member.flow == Out:
                        m.d.comb += top.eq(0)
                    continue
                m.d.comb += (top.eq(sub) if member.flow == Out else sub.eq(top))

        # registers <-> command processor
        control = csr.control_data
        m.d.comb += [
            cmdproc.start.eq(csr.control_write & control[0]),
            cmdproc.abort.eq(csr.control_write & control[1]),
            cmdproc.clear.eq(csr.control_write & control[2]),
            cmdproc.cmd_addr.eq(Cat(csr.cmd_addr_lo, csr.cmd_addr_hi)),
            cmdproc.cmd_count.eq(csr.cmd_count),
            csr.status.eq(Cat(cmdproc.busy, cmdproc.done, cmdproc.error)),
            csr.error_code.eq(cmdproc.error_code),
            csr.error_index.eq(cmdproc.error_index),
            csr.cmd_done.eq(cmdproc.cmd_done),
            csr.last_tag.eq(cmdproc.last_tag),
            csr.irq_status_set.eq(Cat(cmdproc.irq_done, cmdproc.irq_error)),
            csr.latch_clear.eq(cmdproc.counters_clear),
            csr.cycles.eq(cmdproc.cycles),
            csr.compute_cycles.eq(cmdproc.compute_cycles),
            csr.stall_cycles.eq(cmdproc.stall_cycles),
            csr.macs.eq(cmdproc.macs),
        ]
        m.d.sync += self.irq.eq((csr.irq_status & csr.irq_enable) != 0)

        # DMA: descriptor fetch = read client 0, engine operands = read client 1, engine results = writer
        wiring.connect(m, arbiter.req, reader.req)
        wiring.connect(m, reader.data, arbiter.data)
        wiring.connect(m, cmdproc.fetch_req, arbiter.client0_req)
        wiring.connect(m, arbiter.client0_data, cmdproc.fetch_data)
        wiring.connect(m, engine.rd_req, arbiter.client1_req)
        wiring.connect(m, arbiter.client1_data, engine.rd_data)
        wiring.connect(m, engine.wr_req, writer.req)
        wiring.connect(m, engine.wr_data, writer.data)
        wiring.connect(m, writer.done, engine.wr_done)
        wiring.connect(m, cmdproc.engine, engine.control)
        return m
