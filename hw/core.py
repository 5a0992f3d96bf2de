"""``SATCore``: the accelerator core as the card top level sees it (AXI4-Lite slave, AXI4 master, interrupt).

Block diagram (``docs/core.md``)::

    s_axil_* <-> CSRBlock (csr) <-> CommandProcessor (cmdproc) <-> engine (cmd / done / abort)
                 |                      | descriptor fetch            | operand reads      | result writes
                 irq                    v (client 0)                  v (client 1)         v
                               ReadArbiter (read_arbiter) --> DMAReader (dma_read)    DMAWriter (dma_write)
                                                                 | AR/R                  | AW/W/B
                                                                 +--------> m_axi_* <----+

The engine slot takes any component with the ports of :func:`sat.hw.cmdproc.engine_members`; by default it holds
the :class:`~sat.hw.gemm_unit.GemmUnit`. (Tests of the command processor and DMA plug in a test double,
``sat.sim.loopback.LoopbackEngine``.)
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Cat, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sat.sw.config import READ_TRANSFERS, SATConfig
from sat.sw.regmap import DEFAULT_MEMORY_BYTES

from .cmdproc import CommandProcessor
from .csr import CSRBlock, axil_slave_signature
from .dma import DMAReader, DMAWriter, ReadArbiter, axi4_read_signature, axi4_write_signature
from .gemm_unit import GemmUnit

__all__ = ["SATCore", "core_ports"]


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
        ``engine(config, beats_width=...)`` returning a component with :func:`sat.hw.cmdproc.engine_members`;
        default :class:`~sat.hw.gemm_unit.GemmUnit`.

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
        self._engine = engine or GemmUnit
        # build the submodules now so that parameter errors surface at construction
        self._beats_width = 32
        self._cmdproc = CommandProcessor(config, memory_bytes=memory_bytes, beats_width=self._beats_width)
        self._csr = CSRBlock(config, memory_bytes=memory_bytes, addr_width=axil_addr_width)
        aw, dw = config.axi_addr_width, config.axi_data_width
        self._reader = DMAReader(aw, dw, beats_width=self._beats_width, max_burst=max_burst,
                                 transfers=READ_TRANSFERS)
        self._writer = DMAWriter(aw, dw, beats_width=self._beats_width, max_burst=max_burst)
        self._arbiter = ReadArbiter(2, aw, dw, beats_width=self._beats_width, transfers=READ_TRANSFERS)
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
        regs = csr.regmap
        control = data.View(regs["CONTROL"].layout(), csr.control_data)
        status = data.View(regs["STATUS"].layout(), csr.status)
        irq_set = data.View(regs["IRQ_STATUS"].layout(), csr.irq_status_set)
        m.d.comb += [
            cmdproc.start.eq(csr.control_write & control.start),
            cmdproc.abort.eq(csr.control_write & control.abort),
            cmdproc.clear.eq(csr.control_write & control.clear),
            cmdproc.cmd_addr.eq(Cat(csr.cmd_addr_lo, csr.cmd_addr_hi)),
            cmdproc.cmd_count.eq(csr.cmd_count),
            status.busy.eq(cmdproc.busy), status.done.eq(cmdproc.done), status.error.eq(cmdproc.error),
            csr.error_code.eq(cmdproc.error_code),
            csr.error_index.eq(cmdproc.error_index),
            csr.cmd_done.eq(cmdproc.cmd_done),
            csr.last_tag.eq(cmdproc.last_tag),
            irq_set.done.eq(cmdproc.irq_done), irq_set.error.eq(cmdproc.irq_error),
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
