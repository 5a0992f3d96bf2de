"""``TileSequencer``: the GEMM unit's control. It takes a command of the command processor, plans its tiles
(the rule of :func:`sat.sw.tiling.tile_plan`, computed in hardware), orders the operand loads, hands each tile to
the engine and the result writer, and answers the command with its error code and counters.

Its streams (``docs/system.md``, "GEMM unit") connect it to :class:`~sat.hw.issuer.ReadIssuer` (``load``),
:class:`~sat.hw.loader.OperandLoader` (``loaded``), :class:`~sat.hw.gemm.GemmEngine` (``engine_cmd``,
``engine_done``) and :class:`~sat.hw.writer.ResultWriter` (``tile``); the command-wide values they need
(strides, addresses, reduction length, steps) are on ``context``, constant from the setup of a command to its end.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.descriptor import DIM_WIDTH
from sat.sw.regmap import ErrorCode
from sat.sw.tiling import A_WORD_LANES

from .cmdproc import ENGINE_COUNTER_WIDTH, conv_command_layout, engine_command_layout, engine_done_layout
from .gemm import command_layout as engine_cmd_layout
from .gemm import done_layout as engine_answer_layout

__all__ = ["TileSequencer", "context_layout", "load_job_layout", "loaded_layout", "writer_tile_layout",
           "buffer_addr_width"]


def buffer_addr_width(config: SATConfig) -> int:
    """Width of a buffer word address that covers both buffers (A bank or B), plus one."""
    return max(exact_log2(config.a_depth), exact_log2(config.b_depth)) + 1


def context_layout(config: SATConfig) -> data.StructLayout:
    """Command-wide values the sequencer sets up and holds until the command is answered.

    ``kw``: A-buffer words per row; ``steps``: engine steps per output (``S``); ``m_val``: ``M`` (1 dense);
    ``tile_bytes``: bytes of one packed N:M column tile; ``rl_cstride``: bytes of ``R * L`` rows of C; ``narrow``:
    results rounded to the operand format, 2 bytes each (the descriptor's RESULT field); ``conv``: the convolution's
    lowering parameters (``enable`` 0 for a GEMM).
    """
    aw = config.axi_addr_width
    return data.StructLayout({
        "red": DIM_WIDTH, "cols": DIM_WIDTH, "n": 4, "m_val": 5, "m_log2": 4, "sparse": 1,
        "a_addr": aw, "b_addr": aw, "a_stride": 32, "b_stride": 32, "c_stride": 32,
        "kw": DIM_WIDTH, "steps": DIM_WIDTH + 4, "tile_bytes": aw, "rl_cstride": aw, "narrow": 1,
        "conv": conv_command_layout(aw),
    })


def load_job_layout(config: SATConfig) -> data.StructLayout:
    """One operand load: ``a`` (else B), ``trans`` (``A_TRANS`` / ``B_TRANS``), ``sparse`` (packed N:M B), the
    loader's tile ``(r0, rt, c0, ct)`` and ``base``, the buffer half it fills."""
    return data.StructLayout({
        "a": 1, "trans": 1, "sparse": 1,
        "r0": DIM_WIDTH + 1, "rt": DIM_WIDTH + 1, "c0": DIM_WIDTH + 1, "ct": DIM_WIDTH + 1,
        "base": buffer_addr_width(config),
    })


def loaded_layout() -> data.StructLayout:
    """The end of a load: a read error on any of its beats, a malformed packed operand."""
    return data.StructLayout({"read_error": 1, "bad_operand": 1})


def writer_tile_layout(config: SATConfig) -> data.StructLayout:
    """The tile whose results come next: its first column, columns, and the C address of its row tile."""
    return data.StructLayout({"c0": DIM_WIDTH + 1, "ct": DIM_WIDTH + 1, "c_rowtile_addr": config.axi_addr_width})


class TileSequencer(wiring.Component):
    """Plans and runs the tiles of one GEMM unit command (see the module docstring and ``docs/system.md``).

    Parameters
    ----------
    config : SATConfig
        ``a_depth`` / ``b_depth`` size the buffers the plan must fit.

    Attributes
    ----------
    cmd : In(stream)
        Commands of the command processor (:func:`sat.hw.cmdproc.engine_command_layout`).
    done : Out(stream)
        One answer per command (:func:`sat.hw.cmdproc.engine_done_layout`).
    abort : In(1)
        Stop at the next tile boundary.
    context : Out(context_layout)
        Command-wide values for the issuer, loader and writer.
    load : Out(stream(load_job_layout))
        Operand loads, in order; ``loaded`` answers each.
    engine_cmd, engine_done
        The engine's command and completion streams.
    tile : Out(stream(writer_tile_layout))
        The tile the engine starts, for the result writer (always ready).
    start : Out(1)
        Pulses when a command is accepted (the writer clears its error then).
    issuer_busy : In(1)
        The read issuer is still issuing a load's requests.
    writer_idle, writer_error : In(1)
        The writer has nothing outstanding; a write got an error response in this command.
    """

    def __init__(self, config: SATConfig) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        aw = config.axi_addr_width
        super().__init__({
            "cmd": In(stream.Signature(engine_command_layout(aw))),
            "done": Out(stream.Signature(engine_done_layout())),
            "abort": In(1),
            "context": Out(context_layout(config)),
            "load": Out(stream.Signature(load_job_layout(config))),
            "loaded": In(stream.Signature(loaded_layout())),
            "engine_cmd": Out(stream.Signature(engine_cmd_layout(exact_log2(config.a_depth),
                                                                 exact_log2(config.b_depth)))),
            "engine_done": In(stream.Signature(engine_answer_layout())),
            "tile": Out(stream.Signature(writer_tile_layout(config))),
            "start": Out(1),
            "issuer_busy": In(1),
            "writer_idle": In(1),
            "writer_error": In(1),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        R, C, L = cfg.rows, cfg.cols, cfg.adder_latency
        lg_l = (L - 1).bit_length()      # ceil(log2(L)): a row tile of R * 2**p rows fills a pass when p >= lg_l
        a_depth, b_depth = cfg.a_depth, cfg.b_depth
        a_aw, b_aw = exact_log2(a_depth), exact_log2(b_depth)
        cmd, done, ctx = self.cmd, self.done, self.context

        c = Signal(engine_command_layout(cfg.axi_addr_width), name="c")
        pa = Signal(range(a_aw + 1), name="pa")
        pb = Signal(range(b_aw + 1), name="pb")
        fits = Signal(name="fits")
        rt_max = Signal(DIM_WIDTH + 21, name="rt_max")
        ct_max = Signal(DIM_WIDTH + 21, name="ct_max")
        rt_cstride = Signal(cfg.axi_addr_width, name="rt_cstride")
        m_val = Signal(5, name="m_val")
        kw = Signal(DIM_WIDTH, name="kw")
        steps = Signal(DIM_WIDTH + 4, name="steps")
        tile_bytes = Signal(cfg.axi_addr_width, name="packed_tile_bytes")
        rl_cstride = Signal(cfg.axi_addr_width, name="rl_cstride")
        m.d.comb += [
            ctx.red.eq(c.red), ctx.cols.eq(c.cols), ctx.n.eq(c.n), ctx.m_val.eq(m_val), ctx.m_log2.eq(c.m_log2),
            ctx.sparse.eq(c.sparse), ctx.a_addr.eq(c.a_addr), ctx.b_addr.eq(c.b_addr),
            ctx.a_stride.eq(c.a_stride), ctx.b_stride.eq(c.b_stride), ctx.c_stride.eq(c.c_stride),
            ctx.kw.eq(kw), ctx.steps.eq(steps), ctx.tile_bytes.eq(tile_bytes), ctx.rl_cstride.eq(rl_cstride),
            ctx.narrow.eq(c.narrow), ctx.conv.eq(c.conv),
        ]

        # the loader's tile
        r0 = Signal(DIM_WIDTH + 1, name="r0")
        rt = Signal(DIM_WIDTH + 1, name="rt")
        c0 = Signal(DIM_WIDTH + 1, name="c0")
        ct = Signal(DIM_WIDTH + 1, name="ct")
        c_rt_addr = Signal(cfg.axi_addr_width, name="c_rowtile_addr")
        b_loaded = Signal(name="b_loaded")
        # The engine is idle (and takes a valid command) exactly when it is not running a tile or is answering
        # one. Used instead of its cmd.ready, which Icarus leaves X until the engine's state first changes (a
        # combinational output of its FSM).
        eng_running = Signal(name="eng_running")
        eng_free = Signal(name="eng_free")
        # Double buffering, per operand: the half of each buffer that holds the loader's tile (always 0 for an
        # operand that is single buffered).
        a_dbl = Signal(name="a_double_buffered")
        b_dbl = Signal(name="b_double_buffered")
        a_half = Signal(name="a_half")
        b_half = Signal(name="b_half")
        a_base = Signal(a_aw, name="a_half_base")
        b_base = Signal(b_aw, name="b_half_base")
        m.d.comb += [a_base.eq(Mux(a_half, a_depth >> 1, 0)), b_base.eq(Mux(b_half, b_depth >> 1, 0))]
        job = Signal(load_job_layout(cfg), name="job")     # the next load (kind set when it is chosen)
        m.d.comb += [job.r0.eq(r0), job.rt.eq(rt), job.c0.eq(c0), job.ct.eq(ct),
                     job.base.eq(Mux(job.a, a_base, b_base)), self.load.p.eq(job)]

        # errors and counters
        rd_error = Signal(name="rd_error")
        bad_op = Signal(name="bad_operand")
        code = Signal(ErrorCode, name="code")
        cycles = Signal(ENGINE_COUNTER_WIDTH, name="cycles")
        busy_acc = Signal(ENGINE_COUNTER_WIDTH, name="busy_acc")
        macs_acc = Signal(ENGINE_COUNTER_WIDTH, name="macs_acc")
        active = Signal(name="active")
        with m.If(active):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.loaded.valid):
            m.d.sync += [rd_error.eq(rd_error | self.loaded.p.read_error),
                         bad_op.eq(bad_op | self.loaded.p.bad_operand)]

        groups = Signal(DIM_WIDTH + 1, name="groups")
        m.d.comb += groups.eq((c.red + m_val - 1) >> c.m_log2)
        with m.FSM(name="control") as ctl_fsm:
            with m.State("IDLE"):
                with m.If(cmd.valid):
                    m.d.comb += self.start.eq(1)
                    m.d.sync += [
                        c.eq(cmd.p), m_val.eq(Const(1, 5) << cmd.p.m_log2),
                        rd_error.eq(0), bad_op.eq(0), code.eq(ErrorCode.NONE),
                        cycles.eq(1), busy_acc.eq(0), macs_acc.eq(0), active.eq(1),
                        r0.eq(0), c0.eq(0), b_loaded.eq(0), c_rt_addr.eq(cmd.p.c_addr),
                    ]
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.sync += [
                    kw.eq((c.red + A_WORD_LANES - 1) >> exact_log2(A_WORD_LANES)),
                    steps.eq(Mux(c.sparse, groups * c.n, c.red)),
                    rl_cstride.eq(c.c_stride * (R * L)),
                ]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.sync += tile_bytes.eq((steps + ((steps + 3) >> 2)) << 6)
                fa = Signal(name="fits_a")
                fb = Signal(name="fits_b")
                for p in range(a_aw + 1):
                    with m.If(kw <= (a_depth >> p)):
                        m.d.sync += pa.eq(p)
                        m.d.comb += fa.eq(1)
                for p in range(b_aw + 1):
                    with m.If(steps <= (b_depth >> p)):
                        m.d.sync += pb.eq(p)
                        m.d.comb += fb.eq(1)
                m.d.sync += fits.eq(fa & fb)
                m.next = "SETUP3"
            with m.State("SETUP3"):
                # sat.sw.tiling.tile_plan: B double buffered when it fits twice and is reloaded; A when it fits
                # twice, a half row tile fills a pass or holds all rows, and B is loaded once or double buffered.
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
            # A load of a single-buffered operand waits until the engine is done with the previous tile; of a
            # double-buffered one, it starts as soon as the engine has accepted that tile, into the other half.
            with m.State("ROW_TILE"):
                left = c.rows - r0
                m.d.sync += rt.eq(Mux(left > rt_max, rt_max, left))
                with m.If(self.abort | self.writer_error):
                    m.next = "FINISH"
                with m.Elif(a_dbl | ~eng_running):
                    m.d.sync += [job.a.eq(1), job.trans.eq(c.a_trans), job.sparse.eq(0), a_half.eq(a_half ^ a_dbl)]
                    m.next = "LOAD_A"
            with m.State("LOAD_A"):
                with m.If(self.load.ready):
                    m.next = "LOAD_A_WAIT"
            with m.State("LOAD_A_WAIT"):
                with m.If(self.loaded.valid):
                    m.next = "COL_TILE"
            with m.State("COL_TILE"):
                left = c.cols - c0
                m.d.sync += ct.eq(Mux(left > ct_max, ct_max, left))
                with m.If(self.abort | self.writer_error):
                    m.next = "FINISH"
                with m.Elif(b_loaded):
                    m.next = "CHECK"
                with m.Elif(b_dbl | ~eng_running):
                    m.d.sync += [job.a.eq(0), job.trans.eq(c.b_trans), job.sparse.eq(c.sparse),
                                 b_loaded.eq(ct_max >= c.cols), b_half.eq(b_half ^ b_dbl)]
                    m.next = "LOAD_B"
            with m.State("LOAD_B"):
                with m.If(self.load.ready):
                    m.next = "LOAD_B_WAIT"
            with m.State("LOAD_B_WAIT"):
                with m.If(self.loaded.valid):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(rd_error | bad_op):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                # waits here until the engine is done with the previous tile: one tile of look-ahead
                ep = self.engine_cmd.p
                m.d.comb += [ep.rows.eq(rt), ep.red.eq(c.red), ep.cols.eq(ct),
                             ep.sparse.eq(c.sparse), ep.n.eq(Mux(c.sparse, c.n, 0)),
                             ep.m.eq(Mux(c.sparse, m_val, 0)), ep.a_base.eq(a_base), ep.b_base.eq(b_base),
                             self.tile.p.c0.eq(c0), self.tile.p.ct.eq(ct), self.tile.p.c_rowtile_addr.eq(c_rt_addr)]
                with m.If(eng_free):
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
                with m.If(self.writer_idle & ~self.issuer_busy & ~eng_running):
                    with m.If(rd_error):
                        m.d.sync += code.eq(ErrorCode.AXI_READ)
                    with m.Elif(bad_op):
                        m.d.sync += code.eq(ErrorCode.BAD_OPERAND)
                    with m.Elif(code != ErrorCode.NONE):
                        pass
                    with m.Elif(self.writer_error):
                        m.d.sync += code.eq(ErrorCode.AXI_WRITE)
                    with m.Elif((r0 < c.rows) & self.abort):
                        m.d.sync += code.eq(ErrorCode.ABORTED)
                    m.d.sync += active.eq(0)
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [done.p.error.eq(code), done.p.busy_cycles.eq(busy_acc),
                             done.p.stall_cycles.eq(cycles - busy_acc), done.p.macs.eq(macs_acc)]
                with m.If(done.ready):
                    m.next = "IDLE"
        # The engine's tile: counters summed when it answers (the writer has then taken its last result), running
        # until then (a tile accepted in the cycle of the answer keeps it set).
        with m.If(self.engine_done.valid):
            m.d.sync += [eng_running.eq(0), busy_acc.eq(busy_acc + self.engine_done.p.busy_cycles),
                         macs_acc.eq(macs_acc + self.engine_done.p.macs)]
        with m.If(self.engine_cmd.valid):
            m.d.sync += eng_running.eq(1)

        # handshakes as plain assignments of FSM states (Icarus leaves outputs of never-triggered combinational
        # case blocks X after reset)
        m.d.comb += [
            cmd.ready.eq(ctl_fsm.ongoing("IDLE")),
            self.load.valid.eq(ctl_fsm.ongoing("LOAD_A") | ctl_fsm.ongoing("LOAD_B")),
            self.loaded.ready.eq(ctl_fsm.ongoing("LOAD_A_WAIT") | ctl_fsm.ongoing("LOAD_B_WAIT")),
            eng_free.eq(~eng_running | self.engine_done.valid),
            self.engine_done.ready.eq(1),
            self.engine_cmd.valid.eq(ctl_fsm.ongoing("RUN") & eng_free),
            self.tile.valid.eq(ctl_fsm.ongoing("RUN") & eng_free),
            done.valid.eq(ctl_fsm.ongoing("DONE")),
        ]
        return m
