"""``GemmUnit``: the engine of the core. :class:`~sat.hw.gemm.GemmEngine` with the components that feed it from
device memory and write its results back, behind the engine interface of :class:`~sat.hw.core.SATCore`
(:func:`sat.hw.cmdproc.engine_members`)::

    control.cmd --> TileSequencer --load--> ReadIssuer --rd_req--> (DMA read)
                     |  ^    |  ^  \\             | lines (FIFO)
                     |  |    |  |   context       v
                     |  |    |  +---loaded--- OperandLoader <--rd_data-- (DMA read)
                     |  |    |                   | a_write, b_write
                     |  |    +--engine_cmd--> GemmEngine
                     |  +------engine_done------/   | result
                     +--------tile-------------> ResultWriter --wr_req, wr_data--> (DMA write)

For each command the sequencer plans the tiles (:func:`sat.sw.tiling.tile_plan`) and, tile by tile, has the
issuer and loader fill the engine's buffers (one tile ahead of the engine when an operand is double buffered),
starts the engine on the tile and tells the writer where its rows go. ``docs/system.md`` ("GEMM unit") describes
the tiling, double buffering, loader rates, errors and counters.

Requires 512-bit AXI data (the packed N:M format is defined on 64-byte beats).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import fifo, wiring

from sat.sw.config import LINE_FIFO_DEPTH, SATConfig

from .cmdproc import engine_members
from .gemm import GemmEngine
from .issuer import ReadIssuer, line_record_layout
from .loader import OperandLoader
from .sequencer import TileSequencer
from .writer import ResultWriter

__all__ = ["GemmUnit"]



class GemmUnit(wiring.Component):
    """The core's GEMM engine with its operand loader, result writer and tiling (see the module docstring).

    Ports: :func:`sat.hw.cmdproc.engine_members` (``control``, ``rd_req``/``rd_data``, ``wr_req``/``wr_data``/
    ``wr_done``).

    Parameters
    ----------
    config : SATConfig
        Needs ``axi_data_width == 512``; ``a_depth`` / ``b_depth`` size the engine's buffers.
    beats_width : int
        Width of DMA request lengths.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`SATConfig`.
    ValueError
        For another AXI data width.
    """

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512:
            raise ValueError(f"GemmUnit reads the packed N:M format in 64-byte beats and needs "
                             f"axi_data_width=512, not {config.axi_data_width}")
        self._config = config
        self._beats_width = beats_width
        # built here so that parameter errors surface at construction
        self._sequencer = TileSequencer(config)
        self._issuer = ReadIssuer(config, beats_width=beats_width)
        self._loader = OperandLoader(config, beats_width=beats_width)
        self._engine = GemmEngine(config)
        self._writer = ResultWriter(config, beats_width=beats_width)
        super().__init__(engine_members(config, beats_width))

    @property
    def config(self) -> SATConfig:
        return self._config

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.sequencer = seq = self._sequencer
        m.submodules.issuer = issuer = self._issuer
        m.submodules.loader = loader = self._loader
        m.submodules.gemm = engine = self._engine
        m.submodules.writer = writer = self._writer
        m.submodules.lines = lines = fifo.SyncFIFOBuffered(
            width=line_record_layout(self._config, self._beats_width).size, depth=LINE_FIFO_DEPTH)

        # command processor <-> sequencer
        wiring.connect(m, wiring.flipped(self.control.cmd), seq.cmd)
        wiring.connect(m, seq.done, wiring.flipped(self.control.done))
        m.d.comb += seq.abort.eq(self.control.abort)

        # command-wide values
        for block in (issuer, loader, writer):
            m.d.comb += block.context.eq(seq.context)

        # loads: sequencer -> issuer -> (DMA read, line FIFO) -> loader -> engine buffers, answer to the sequencer
        wiring.connect(m, seq.load, issuer.job)
        wiring.connect(m, issuer.rd_req, wiring.flipped(self.rd_req))
        m.d.comb += [lines.w_stream.valid.eq(issuer.lines.valid), lines.w_stream.payload.eq(issuer.lines.payload),
                     issuer.lines.ready.eq(lines.w_stream.ready),
                     loader.lines.valid.eq(lines.r_stream.valid), loader.lines.payload.eq(lines.r_stream.payload),
                     lines.r_stream.ready.eq(loader.lines.ready)]
        wiring.connect(m, wiring.flipped(self.rd_data), loader.rd_data)
        wiring.connect(m, loader.a_write, engine.a_write)
        wiring.connect(m, loader.b_write, engine.b_write)
        wiring.connect(m, loader.loaded, seq.loaded)
        m.d.comb += seq.issuer_busy.eq(issuer.busy)

        # engine tiles and their results
        wiring.connect(m, seq.engine_cmd, engine.cmd)
        wiring.connect(m, engine.done, seq.engine_done)
        wiring.connect(m, seq.tile, writer.tile)
        wiring.connect(m, engine.result, writer.result)
        wiring.connect(m, writer.wr_req, wiring.flipped(self.wr_req))
        wiring.connect(m, writer.wr_data, wiring.flipped(self.wr_data))
        wiring.connect(m, wiring.flipped(self.wr_done), writer.wr_done)
        m.d.comb += [writer.clear.eq(seq.start), seq.writer_idle.eq(writer.idle),
                     seq.writer_error.eq(writer.error)]
        return m
