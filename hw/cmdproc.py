"""The command processor: fetches GEMM descriptors, validates them like ``GemmDescriptor.validate`` and issues them.

State machine (``docs/core.md`` has the diagram)::

    IDLE --START (CMD_COUNT != 0, CMD_ADDR 64-byte aligned)--> FETCH --> RECEIVE --> CHECK1 --> CHECK2 --> CHECK3
      ^                                                           ^                                          |
      |                                                           +----------- next descriptor <-- WAIT <-- ISSUE
      +-- DONE (last descriptor completed) / ERROR (first error: code + index, IRQ) / ABORTED

* ``START`` with ``CMD_COUNT == 0`` or a misaligned ``CMD_ADDR``: ``BAD_COUNT`` at index 0, the core stays idle.
* ``START`` while busy: ``BUSY`` (index = descriptors completed so far) unless an error is already recorded;
  ``STATUS.ERROR`` and the error interrupt rise, the running list carries on undisturbed.
* A descriptor is one 64-byte record, fetched as ``64 / (data_width / 8)`` beats through the DMA reader. A read
  error on it stops the list with ``AXI_READ``; so does a descriptor lying (partly) past ``memory_bytes``, which is
  not fetched at all (as in the software model, and independent of ``axi_addr_width``). Validation checks, in
  exactly the order of :meth:`sat.sw.descriptor.GemmDescriptor.validate`: opcode, reserved flags, N:M (against the
  build's ``nm_set``; the byte holds N and log2(M)), reserved bytes, SPARSE with B_TRANS, SPARSE with a nonzero
  ``b_stride``, shape (1..MAX_DIM), alignment, strides, and operand extents against ``memory_bytes`` (which is at
  most ``2**axi_addr_width``, so the address-width check is included); the first failing check gives the error code.
* A valid descriptor goes to the engine on ``engine.cmd`` (decoded fields plus the operand extents); the engine
  answers on ``engine.done`` with an error code (0, ``AXI_READ``, ``AXI_WRITE``, ``BAD_OPERAND``,
  ``BAD_SHAPE`` (reduction too long for its buffers) or ``ABORTED``) and its
  counters. A completed descriptor increments ``CMD_DONE``, sets ``LAST_TAG`` and, with ``FLAG_IRQ``, raises
  the done interrupt.
* ``ABORT`` while busy: the current AXI transactions drain (a descriptor fetch completes, the engine is told
  with ``engine.abort`` and must answer ``done``), then the list stops with ``ABORTED`` at the index of the
  first descriptor not completed. ``CLEAR`` clears ``STATUS.DONE/ERROR``, ``ERROR_CODE`` and ``ERROR_INDEX``.
* ``ERROR_CODE`` / ``ERROR_INDEX`` keep the first error since ``CLEAR``; an accepted ``START`` clears
  ``STATUS.DONE``, ``CMD_DONE`` and the performance counters (``CYCLES`` counts cycles while busy; the other
  counters add up the engine's per-descriptor counters).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig
from sat.sw.descriptor import (
    CONV_LAYOUT,
    DESCRIPTOR_BYTES,
    DESCRIPTOR_LAYOUT,
    DIM_WIDTH,
    MAX_DIM,
    OP_CONV,
    OP_GEMM,
    ConvPass,
)
from sat.sw.nmformat import BEAT_BYTES, LANES, STEPS_PER_INDEX_BEAT
from sat.sw.regmap import DEFAULT_MEMORY_BYTES, ErrorCode

from .dma import read_beat_layout, request_layout, write_beat_layout, write_done_layout

__all__ = [
    "ENGINE_COUNTER_WIDTH", "engine_command_layout", "conv_command_layout",
    "engine_done_layout",
    "engine_signature", "engine_members", "CommandProcessor",
]

#: Width of the per-descriptor counters an engine reports with ``done``.
ENGINE_COUNTER_WIDTH = 48
ERROR_WIDTH = 4

assert BEAT_BYTES == DESCRIPTOR_BYTES


def engine_command_layout(addr_width: int) -> data.StructLayout:
    """Payload of ``engine.cmd``: one validated descriptor, decoded.

    Fields are the descriptor's (``sat.sw.descriptor``), with the flag bits split out, plus the operand
    extents ``a_end``, ``b_end``, ``c_end``: one past the last byte of A, B (dense, or the packed N:M stream)
    and C, exactly as :meth:`GemmDescriptor.extents` computes them. ``narrow``: RESULT = 1, results rounded to
    the operand format and stored in 2 bytes each.
    """
    return data.StructLayout({
        "sparse": 1, "a_trans": 1, "b_trans": 1, "irq": 1, "narrow": 1,
        "n": 4, "m_log2": 4,
        "rows": DIM_WIDTH, "red": DIM_WIDTH, "cols": DIM_WIDTH,
        "a_addr": addr_width, "b_addr": addr_width, "c_addr": addr_width,
        "a_stride": 32, "b_stride": 32, "c_stride": 32,
        "a_end": addr_width + 1, "b_end": addr_width + 1, "c_end": addr_width + 1,
        "tag": 32,
        "conv": conv_command_layout(addr_width),
    })




def conv_command_layout(addr_width: int) -> data.StructLayout:
    """The convolution part of an engine command (``enable`` 0 for a GEMM descriptor): what the operand loader
    needs to lower the implicit operand on the fly (``docs/conv.md``).

    The lowered operand's rows walk pixels ``(b, y, x)`` over ``ry x rx`` (FF and WU: the output, BP: the input);
    its reduction runs over taps ``(i, j)`` of the ``kh x kw`` kernel and ``chan`` channels per tap, of which the
    first ``cvalid`` come from the tensor (BP pads ``C_out`` to ``chan``). The tensor (``ty x tx`` pixels of
    ``pix`` bytes, rows ``row_pitch`` and images ``img_pitch`` apart) is ``X`` for FF and WU, ``dY`` for BP, at
    ``tensor``. ``s0, s1, s2`` is where the descriptor's chunk starts (FF, BP: tap and channel; WU: pixel).
    """
    return data.StructLayout({
        "enable": 1, "pass_": ConvPass, "kh": 4, "kw": 4, "stride_log2": 2, "padding": 4,
        "ry": 16, "rx": 16, "ty": 16, "tx": 16, "chan": DIM_WIDTH, "cvalid": DIM_WIDTH,
        "s0": 16, "s1": 16, "s2": DIM_WIDTH,
        "pix": DIM_WIDTH + 2, "row_pitch": DIM_WIDTH + 18, "img_pitch": addr_width,
        "tensor": addr_width,
    })


def engine_done_layout() -> data.StructLayout:
    """Payload of ``engine.done``: an :class:`~sat.sw.regmap.ErrorCode` (0 = completed) and counters."""
    return data.StructLayout({
        "error": ERROR_WIDTH,
        "busy_cycles": ENGINE_COUNTER_WIDTH, "stall_cycles": ENGINE_COUNTER_WIDTH, "macs": ENGINE_COUNTER_WIDTH,
    })


def engine_signature(addr_width: int) -> wiring.Signature:
    """The command processor's side of the engine interface (an engine has ``In(engine_signature(...))``).

    ``cmd``: one descriptor per transfer. ``done``: exactly one answer per accepted command. ``abort``: held
    high while the list is being aborted; the engine should finish its outstanding AXI transactions and answer
    ``done`` (with ``ABORTED`` if it stopped early).
    """
    return wiring.Signature({
        "cmd": Out(stream.Signature(engine_command_layout(addr_width))),
        "done": In(stream.Signature(engine_done_layout())),
        "abort": Out(1),
    })


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


class CommandProcessor(wiring.Component):
    """Runs a list of GEMM descriptors (see the module docstring).

    Parameters
    ----------
    config : SATConfig
        The build (``nm_set``, AXI widths).
    memory_bytes : int
        Device memory size; operands reaching past it are rejected with ``BAD_ADDRESS``
        (default :data:`DEFAULT_MEMORY_BYTES`, 16 GiB).
    beats_width : int
        Width of DMA request lengths.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    ValueError
        For a ``memory_bytes`` outside ``[64, 2**axi_addr_width]``.
    """

    def __init__(self, config: SATConfig, *, memory_bytes: int = DEFAULT_MEMORY_BYTES, beats_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        aw = config.axi_addr_width
        if not isinstance(memory_bytes, int) or not DESCRIPTOR_BYTES <= memory_bytes <= 1 << aw:
            raise ValueError(f"memory_bytes must be an integer between {DESCRIPTOR_BYTES} and 2**{aw}, "
                             f"not {memory_bytes!r}")
        self._config = config
        self._memory_bytes = memory_bytes
        self._beats_width = beats_width
        super().__init__({
            "start": In(1), "abort": In(1), "clear": In(1),
            "cmd_addr": In(64), "cmd_count": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(ERROR_WIDTH), "error_index": Out(32),
            "cmd_done": Out(32), "last_tag": Out(32),
            "irq_done": Out(1), "irq_error": Out(1),
            "counters_clear": Out(1),
            "cycles": Out(64), "compute_cycles": Out(64), "stall_cycles": Out(64), "macs": Out(64),
            "fetch_req": Out(stream.Signature(request_layout(aw, beats_width))),
            "fetch_data": In(stream.Signature(read_beat_layout(config.axi_data_width))),
            "engine": Out(engine_signature(aw)),
        })

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def memory_bytes(self) -> int:
        return self._memory_bytes

    def _conv_checks(self, m: Module, raw: Signal, nm_ok: Signal, cmd_r):
        """Checks and derived values of a convolution descriptor (``ConvDescriptor.validate``, in its order), over
        the states CONV1..CONV7; returns the function that adds those states to the control FSM."""
        cv = data.View(CONV_LAYOUT, raw)
        flags = cv.flags
        ff, bp, wu = cv.pass_ == ConvPass.FF, cv.pass_ == ConvPass.BP, cv.pass_ == ConvPass.WU
        sparse, b_trans = flags.sparse, flags.b_trans
        narrow = flags.result[0]        # RESULT 1 (2 and 3 are refused below)
        nm = Cat(cv.n, cv.m_log2)
        wide = 64 + 3

        def reg(name: str, shape) -> Signal:
            return Signal(shape, name=f"conv_{name}")

        # CONV1: output size, taps, padded channels; the first checks
        oh_num, ow_num = reg("oh_num", signed(19)), reg("ow_num", signed(19))
        oh, ow = reg("oh", 17), reg("ow", 17)
        kk = reg("taps", 8)
        m_val = reg("m", 17)
        co_pad = reg("co_pad", 33)
        code_a = reg("code_a", ERROR_WIDTH)
        dims_bad = ((cv.batch == 0) | (cv.height == 0) | (cv.width == 0) | (cv.c_in == 0) | (cv.c_out == 0)
                    | (cv.c_in > MAX_DIM) | (cv.c_out > MAX_DIM) | (cv.kh == 0) | (cv.kw == 0))
        checks_a = [
            ((flags.reserved != 0) | flags.result[1] | flags.a_trans | (cv.reserved0 != 0) | (cv.pass_ == 3),
             ErrorCode.BAD_FLAGS),
            (sparse & wu, ErrorCode.BAD_FLAGS),
            (sparse & b_trans, ErrorCode.BAD_FLAGS),
            (sparse & ~nm_ok, ErrorCode.NM_UNSUPPORTED),
            (~sparse & (nm != 0), ErrorCode.NM_UNSUPPORTED),
            (b_trans & ~ff, ErrorCode.BAD_FLAGS),
            (dims_bad, ErrorCode.BAD_SHAPE),
        ]
        code_a_now = Signal(ERROR_WIDTH, name="conv_code_a_now")
        for cond, code in reversed(checks_a):
            with m.If(cond):
                m.d.comb += code_a_now.eq(code)
        # CONV2: pixel counts and the channels per tap
        pix_out, pix_in = reg("pix_out", 34), reg("pix_in", 32)
        chan = reg("chan", 33)
        # CONV3: rows of FF and BP, the reduction of a tap row, the chunk start's first product
        rows_ff, rows_bp = reg("rows_ff", 50), reg("rows_bp", 48)
        k_taps = reg("k_taps", 41)
        t1 = reg("start_t1", 34)
        # CONV4: the GEMM view, the start's value, pitches
        rows, cols, reduction = reg("rows", 50), reg("cols", 41), reg("reduction", 50)
        start_val = reg("start_val", 68)
        start_rng = reg("start_range_ok", 1)
        pix = reg("pix", DIM_WIDTH + 2)
        tx, ty = reg("tx", 17), reg("ty", 17)
        # CONV5: more products, the second checks
        row_pitch = reg("row_pitch", DIM_WIDTH + 19)
        x_bytes, dy_bytes = reg("x_bytes", 75), reg("dy_bytes", 77)
        c_bytes = reg("c_bytes", 93)
        b_stride, a_stride = reg("b_stride", 42), reg("a_stride", 27)
        steps = reg("steps", DIM_WIDTH + 5)
        code_b = reg("code_b", ERROR_WIDTH)
        # CONV6: pitch of an image, extents
        img_pitch = reg("img_pitch", 62)
        a_end, b_end = reg("a_end", wide + 14), reg("b_end", wide + 30)

        def states(fail, index) -> None:
            with m.State("CONV1"):
                m.d.sync += [
                    oh_num.eq(cv.height + 2 * cv.padding - cv.kh), ow_num.eq(cv.width + 2 * cv.padding - cv.kw),
                    kk.eq(cv.kh * cv.kw), m_val.eq(Const(1, 17) << cv.m_log2), code_a.eq(code_a_now),
                ]
                m.next = "CONV2"
            with m.State("CONV2"):
                m.d.sync += [
                    oh.eq((oh_num >> cv.stride_log2) + 1), ow.eq((ow_num >> cv.stride_log2) + 1),
                    co_pad.eq(Mux(sparse & (kk > 1), ((cv.c_out + m_val - 1) >> cv.m_log2) << cv.m_log2, cv.c_out)),
                    pix_in.eq(cv.height * cv.width),
                ]
                with m.If((code_a == 0) & ((oh_num < 0) | (ow_num < 0))):
                    m.d.sync += code_a.eq(ErrorCode.BAD_SHAPE)
                m.next = "CONV3"
            with m.State("CONV3"):
                m.d.sync += [
                    pix_out.eq(oh * ow), chan.eq(Mux(bp, co_pad, cv.c_in)),
                    rows_bp.eq(cv.batch * pix_in),
                    t1.eq(Mux(wu, cv.s0 * oh + cv.s1, cv.s0 * cv.kw + cv.s1)),
                    start_rng.eq(Mux(wu, (cv.s0 < cv.batch) & (cv.s1 < oh) & (cv.s2 < ow),
                                     (cv.s0 < cv.kh) & (cv.s1 < cv.kw))),
                ]
                m.next = "CONV4"
            with m.State("CONV4"):
                m.d.sync += [
                    rows_ff.eq(cv.batch * pix_out), k_taps.eq(kk * chan),
                    start_val.eq(Mux(wu, t1 * ow, t1 * chan) + cv.s2),
                    start_rng.eq(start_rng & (wu | (cv.s2 < chan))),
                    pix.eq(Mux(bp, cv.c_out << 1, cv.c_in << 1)),
                    tx.eq(Mux(bp, ow, cv.width)), ty.eq(Mux(bp, oh, cv.height)),
                ]
                m.next = "CONV5"
            with m.State("CONV5"):
                rows_now = Mux(ff, rows_ff, Mux(bp, rows_bp, cv.c_out))
                cols_now = Mux(ff, cv.c_out, Mux(bp, cv.c_in, k_taps))
                red_now = Mux(wu, rows_ff, k_taps)
                m.d.sync += [
                    rows.eq(rows_now), cols.eq(cols_now), reduction.eq(red_now),
                    row_pitch.eq(tx * pix),
                    x_bytes.eq((rows_bp * cv.c_in) << 1), dy_bytes.eq((rows_ff * cv.c_out) << 1),
                    b_stride.eq(Mux(wu | sparse, 0, Mux(ff, Mux(b_trans, k_taps, cv.c_out), cv.c_in) << 1)),
                    a_stride.eq(Mux(wu, cv.c_out << 1, 0)),
                    steps.eq(((cv.red[:DIM_WIDTH] + m_val - 1) >> cv.m_log2) * cv.n),
                ]
                misaligned = (cv.a_addr[0] | Mux(sparse, cv.b_addr[:6] != 0, cv.b_addr[0])
                              | Mux(narrow, cv.c_addr[0], cv.c_addr[:2] != 0))
                checks_b = [
                    ((rows_now > MAX_DIM) | (cols_now > MAX_DIM), ErrorCode.BAD_SHAPE),
                    ((cv.red == 0) | (cv.red > MAX_DIM) | (cv.k0 + cv.red > red_now), ErrorCode.BAD_SHAPE),
                    (sparse & ((cv.k0 & (m_val - 1)) != 0), ErrorCode.BAD_SHAPE),
                    (~start_rng | (start_val != cv.k0), ErrorCode.BAD_SHAPE),
                    (misaligned, ErrorCode.BAD_ADDRESS),
                ]
                code_b_now = Signal(ERROR_WIDTH, name="conv_code_b_now")
                for cond, code in reversed(checks_b):
                    with m.If(cond):
                        m.d.comb += code_b_now.eq(code)
                m.d.sync += code_b.eq(code_b_now)
                m.next = "CONV6"
            with m.State("CONV6"):
                tiles = (cols[:DIM_WIDTH] + LANES - 1) >> exact_log2(LANES)
                per_tile = steps + ((steps + STEPS_PER_INDEX_BEAT - 1) >> exact_log2(STEPS_PER_INDEX_BEAT))
                red = cv.red[:DIM_WIDTH]
                m.d.sync += [
                    img_pitch.eq(ty * row_pitch),
                    c_bytes.eq(Mux(narrow, (rows[:DIM_WIDTH + 1] * cols[:DIM_WIDTH + 1]) << 1,
                                   (rows[:DIM_WIDTH + 1] * cols[:DIM_WIDTH + 1]) << 2)),
                    a_end.eq(cv.a_addr + Mux(ff, x_bytes, Mux(bp, dy_bytes, red * (cv.c_out << 1)))),
                    b_end.eq(cv.b_addr + Mux(wu, x_bytes,
                                             Mux(sparse, (tiles * per_tile) << exact_log2(BEAT_BYTES),
                                                 Mux(b_trans, (cols - 1) * b_stride + (red << 1),
                                                     red * b_stride)))),
                ]
                m.next = "CONV7"
            with m.State("CONV7"):
                c_end_now = cv.c_addr + c_bytes
                mem = self._memory_bytes
                with m.If(code_a != 0):
                    fail(code_a, index)
                    m.next = "IDLE"
                with m.Elif(code_b != 0):
                    fail(code_b, index)
                    m.next = "IDLE"
                with m.Elif((a_end > mem) | (b_end > mem) | (c_end_now > mem)):
                    fail(ErrorCode.BAD_ADDRESS, index)
                    m.next = "IDLE"
                with m.Else():
                    c = cmd_r.conv
                    tensor = Mux(wu, cv.b_addr, cv.a_addr)
                    m.d.sync += [
                        cmd_r.sparse.eq(sparse), cmd_r.a_trans.eq(wu), cmd_r.b_trans.eq(b_trans),
                        cmd_r.irq.eq(flags.irq), cmd_r.narrow.eq(narrow), cmd_r.n.eq(cv.n),
                        cmd_r.m_log2.eq(cv.m_log2),
                        cmd_r.rows.eq(rows), cmd_r.red.eq(cv.red), cmd_r.cols.eq(cols),
                        cmd_r.a_addr.eq(cv.a_addr), cmd_r.b_addr.eq(cv.b_addr), cmd_r.c_addr.eq(cv.c_addr),
                        cmd_r.a_stride.eq(a_stride), cmd_r.b_stride.eq(b_stride),
                        cmd_r.c_stride.eq(Mux(narrow, cols << 1, cols << 2)),
                        cmd_r.a_end.eq(a_end), cmd_r.b_end.eq(b_end), cmd_r.c_end.eq(c_end_now),
                        cmd_r.tag.eq(cv.tag),
                        c.enable.eq(1), c.pass_.eq(cv.pass_), c.kh.eq(cv.kh), c.kw.eq(cv.kw),
                        c.stride_log2.eq(cv.stride_log2), c.padding.eq(cv.padding),
                        c.ry.eq(Mux(bp, cv.height, oh)), c.rx.eq(Mux(bp, cv.width, ow)), c.ty.eq(ty), c.tx.eq(tx),
                        c.chan.eq(chan), c.cvalid.eq(Mux(bp, cv.c_out, chan)),
                        c.s0.eq(cv.s0), c.s1.eq(cv.s1), c.s2.eq(cv.s2),
                        c.pix.eq(pix), c.row_pitch.eq(row_pitch), c.img_pitch.eq(img_pitch), c.tensor.eq(tensor),
                    ]
                    m.next = "ISSUE"

        return states

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._config
        aw = cfg.axi_addr_width
        dw = cfg.axi_data_width
        beats_per_desc = DESCRIPTOR_BYTES * 8 // dw
        wide = 64 + 3     # extents: 64-bit address field + (2**24-1) * (2**32-1) (56 bits) + 2**26, no overflow

        count = Signal(32, name="count")
        index = Signal(32, name="index")
        addr = Signal(65, name="desc_addr")     # full 64-bit CMD_ADDR + 64 * index, no wrap
        abort_pending = Signal(name="abort_pending")
        raw = Signal(DESCRIPTOR_BYTES * 8, name="descriptor")
        beat = Signal(range(beats_per_desc + 1), name="beat")
        fetch_error = Signal(name="fetch_error")

        m.d.sync += [self.irq_done.eq(0), self.irq_error.eq(0), self.counters_clear.eq(0)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # ------------------------------------------------------------------ control bits (FSM events win below)
        with m.If(self.clear):
            m.d.sync += [self.done.eq(0), self.error.eq(0), self.error_code.eq(0), self.error_index.eq(0)]
        with m.If(self.abort & self.busy):
            m.d.sync += abort_pending.eq(1)

        def fail(code: int | Signal, at) -> None:
            """Stop the list (or refuse a START) with an error."""
            m.d.sync += [self.busy.eq(0), self.error.eq(1), self.irq_error.eq(1), abort_pending.eq(0)]
            with m.If(~self.error | self.clear):
                m.d.sync += [self.error_code.eq(code), self.error_index.eq(at)]

        with m.If(self.start & self.busy):
            m.d.sync += [self.error.eq(1), self.irq_error.eq(1)]
            with m.If(~self.error | self.clear):
                m.d.sync += [self.error_code.eq(ErrorCode.BUSY), self.error_index.eq(self.cmd_done)]

        # ------------------------------------------------------------------ decoded descriptor fields
        desc = data.View(DESCRIPTOR_LAYOUT, raw)
        opcode, flags = desc.opcode, desc.flags
        n, m_log2 = desc.n, desc.m_log2
        nm = Cat(n, m_log2)
        rows, red, cols = desc.rows, desc.red, desc.cols
        a_addr64, b_addr64, c_addr64 = desc.a_addr, desc.b_addr, desc.c_addr
        a_addr, b_addr, c_addr = a_addr64[:aw], b_addr64[:aw], c_addr64[:aw]
        a_stride, b_stride, c_stride = desc.a_stride, desc.b_stride, desc.c_stride
        tag = desc.tag
        sparse, a_trans, b_trans, irq_flag = flags.sparse, flags.a_trans, flags.b_trans, flags.irq
        narrow = flags.result[0]        # RESULT 1: results in the operand format, 2 bytes (2 and 3 are refused)
        c_row = Mux(narrow, cols << 1, cols << 2)

        # ------------------------------------------------------------------ validation, stage 1 (CHECK1)
        nm_ok = Signal(name="nm_supported")
        with m.Switch(nm):      # N in bits 0-3, log2(M) in bits 4-7
            for nn, mmm in cfg.nm_set:
                with m.Case(nn | (exact_log2(mmm) << 4)):
                    m.d.comb += nm_ok.eq(1)

        def dim_bad(v):
            return (v == 0) | (v[DIM_WIDTH:] != 0)

        a_lines = Signal(32, name="a_lines")
        a_len = Signal(32, name="a_len")
        b_lines = Signal(32, name="b_lines")
        b_len = Signal(32, name="b_len")
        m.d.comb += [
            a_lines.eq(Mux(a_trans, red, rows)), a_len.eq(Mux(a_trans, rows, red)),
            b_lines.eq(Mux(b_trans, cols, red)), b_len.eq(Mux(b_trans, red, cols)),
        ]
        reserved = Cat(desc.reserved0, desc.reserved1)
        checks = [
            (opcode != OP_GEMM, ErrorCode.BAD_OPCODE),
            ((flags.reserved != 0) | flags.result[1], ErrorCode.BAD_FLAGS),
            (reserved != 0, ErrorCode.BAD_FLAGS),
            (sparse & ~nm_ok, ErrorCode.NM_UNSUPPORTED),
            (sparse & b_trans, ErrorCode.BAD_FLAGS),
            (sparse & (b_stride != 0), ErrorCode.BAD_SHAPE),
            (~sparse & (nm != 0), ErrorCode.NM_UNSUPPORTED),
            (dim_bad(rows) | dim_bad(red) | dim_bad(cols), ErrorCode.BAD_SHAPE),
            (a_addr64[0] | Mux(sparse, b_addr64[:6] != 0, b_addr64[0])
             | a_stride[0] | b_stride[0]
             | Mux(narrow, c_addr64[0] | c_stride[0], (c_addr64[:2] != 0) | (c_stride[:2] != 0)),
             ErrorCode.BAD_ADDRESS),
            (((a_lines > 1) & (a_stride < (a_len << 1)))
             | ((rows > 1) & (c_stride < c_row))
             | (~sparse & (b_lines > 1) & (b_stride < (b_len << 1))), ErrorCode.BAD_SHAPE),
        ]
        code1 = Signal(ERROR_WIDTH, name="check1_code")
        for cond, code in reversed(checks):
            with m.If(cond):
                m.d.comb += code1.eq(code)
        code1_r = Signal(ERROR_WIDTH, name="check1_code_r")

        a_span = Signal(wide, name="a_span")       # (lines - 1) * stride
        b_span = Signal(wide, name="b_span")
        c_span = Signal(wide, name="c_span")
        steps = Signal(DIM_WIDTH + 4, name="nm_steps")    # S = ceil(red / M) * N
        groups = Signal(DIM_WIDTH, name="nm_groups")
        with m.Switch(m_log2):
            for mmm in sorted({mmm for _, mmm in cfg.nm_set}):
                with m.Case(exact_log2(mmm)):
                    m.d.comb += groups.eq((red[:DIM_WIDTH] + mmm - 1) >> exact_log2(mmm))

        # ------------------------------------------------------------------ validation, stage 2 (CHECK2)
        tiles = Signal(DIM_WIDTH, name="nm_tiles")
        per_tile = Signal(DIM_WIDTH + 5, name="nm_beats_per_tile")
        spb_log2 = exact_log2(STEPS_PER_INDEX_BEAT)
        m.d.comb += [
            tiles.eq((cols[:DIM_WIDTH] + LANES - 1) >> exact_log2(LANES)),
            per_tile.eq(steps + ((steps + STEPS_PER_INDEX_BEAT - 1) >> spb_log2)),
        ]
        packed = Signal(wide, name="nm_packed_bytes")
        a_end = Signal(wide, name="a_end")
        b_end = Signal(wide, name="b_end")
        c_end = Signal(wide, name="c_end")

        engine_cmd = self.engine.cmd
        # the command is registered when its checks pass (GEMM: CHECK3, convolution: CONV7)
        cmd_r = Signal(engine_command_layout(aw), name="engine_command")
        m.d.comb += engine_cmd.p.eq(cmd_r)
        gemm_cmd = [
            cmd_r.sparse.eq(sparse), cmd_r.a_trans.eq(a_trans), cmd_r.b_trans.eq(b_trans), cmd_r.irq.eq(irq_flag),
            cmd_r.narrow.eq(narrow),
            cmd_r.n.eq(n), cmd_r.m_log2.eq(m_log2), cmd_r.rows.eq(rows), cmd_r.red.eq(red), cmd_r.cols.eq(cols),
            cmd_r.a_addr.eq(a_addr), cmd_r.b_addr.eq(b_addr), cmd_r.c_addr.eq(c_addr),
            cmd_r.a_stride.eq(a_stride), cmd_r.b_stride.eq(b_stride), cmd_r.c_stride.eq(c_stride),
            cmd_r.a_end.eq(a_end), cmd_r.c_end.eq(c_end), cmd_r.tag.eq(tag), cmd_r.conv.enable.eq(0),
        ]
        conv_states = self._conv_checks(m, raw, nm_ok, cmd_r)

        done = self.engine.done
        past_memory = Signal(name="fetch_past_memory")
        m.d.comb += past_memory.eq(addr + DESCRIPTOR_BYTES > self._memory_bytes)
        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If((self.cmd_count == 0) | (self.cmd_addr[:6] != 0)):
                        fail(ErrorCode.BAD_COUNT, 0)
                    with m.Else():
                        m.d.sync += [
                            self.busy.eq(1), self.done.eq(0), self.cmd_done.eq(0),
                            self.cycles.eq(0), self.compute_cycles.eq(0), self.stall_cycles.eq(0),
                            self.macs.eq(0), self.counters_clear.eq(1),
                            index.eq(0), count.eq(self.cmd_count), addr.eq(self.cmd_addr),
                            abort_pending.eq(0),
                        ]
                        m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(abort_pending):
                    fail(ErrorCode.ABORTED, index)
                    m.next = "IDLE"
                with m.Elif(past_memory):
                    # past device memory: the answer a DECERR would give, without sending the read
                    fail(ErrorCode.AXI_READ, index)
                    m.next = "IDLE"
                with m.Else():
                    with m.If(self.fetch_req.ready):
                        m.d.sync += [beat.eq(0), fetch_error.eq(0)]
                        m.next = "RECEIVE"
            with m.State("RECEIVE"):
                with m.If(self.fetch_data.valid):
                    if beats_per_desc == 1:
                        m.d.sync += raw.eq(self.fetch_data.p.data)
                    else:
                        m.d.sync += raw.eq(Cat(raw[dw:], self.fetch_data.p.data))
                    m.d.sync += [beat.eq(beat + 1), fetch_error.eq(fetch_error | self.fetch_data.p.error)]
                    with m.If(self.fetch_data.p.last):
                        with m.If(fetch_error | self.fetch_data.p.error):
                            fail(ErrorCode.AXI_READ, index)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.sync += [
                    code1_r.eq(code1),
                    a_span.eq((a_lines[:DIM_WIDTH] - 1) * a_stride),
                    b_span.eq((b_lines[:DIM_WIDTH] - 1) * b_stride),
                    c_span.eq((rows[:DIM_WIDTH] - 1) * c_stride),
                    steps.eq(groups * n),
                ]
                with m.If(opcode == OP_CONV):
                    m.next = "CONV1"
                with m.Else():
                    m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.sync += [
                    packed.eq((tiles * per_tile) << exact_log2(BEAT_BYTES)),
                    a_end.eq(a_addr64 + a_span + (a_len[:DIM_WIDTH] << 1)),
                    c_end.eq(c_addr64 + c_span + Mux(narrow, cols[:DIM_WIDTH] << 1, cols[:DIM_WIDTH] << 2)),
                    b_end.eq(b_addr64 + b_span + (b_len[:DIM_WIDTH] << 1)),
                ]
                m.next = "CHECK3"
            with m.State("CHECK3"):
                b_hi = Mux(sparse, b_addr64 + packed, b_end)
                with m.If(code1_r != 0):
                    fail(code1_r, index)
                    m.next = "IDLE"
                with m.Elif((a_end > self._memory_bytes) | (b_hi > self._memory_bytes)
                            | (c_end > self._memory_bytes)):
                    fail(ErrorCode.BAD_ADDRESS, index)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [*gemm_cmd, cmd_r.b_end.eq(b_hi)]
                    m.next = "ISSUE"
            conv_states(fail, index)
            with m.State("ISSUE"):
                with m.If(abort_pending):
                    fail(ErrorCode.ABORTED, index)
                    m.next = "IDLE"
                with m.Else():
                    with m.If(engine_cmd.ready):
                        m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(done.valid):
                    m.d.sync += [
                        self.compute_cycles.eq(self.compute_cycles + done.p.busy_cycles),
                        self.stall_cycles.eq(self.stall_cycles + done.p.stall_cycles),
                        self.macs.eq(self.macs + done.p.macs),
                    ]
                    with m.If(done.p.error != 0):
                        fail(done.p.error, index)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [
                            self.cmd_done.eq(index + 1), self.last_tag.eq(tag), index.eq(index + 1),
                            addr.eq(addr + DESCRIPTOR_BYTES),
                        ]
                        with m.If(irq_flag):
                            m.d.sync += self.irq_done.eq(1)
                        with m.If(index + 1 == count):
                            m.d.sync += [self.busy.eq(0), self.done.eq(1), self.irq_done.eq(1),
                                         abort_pending.eq(0)]
                            m.next = "IDLE"
                        with m.Elif(abort_pending):
                            fail(ErrorCode.ABORTED, index + 1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "FETCH"

        # handshake outputs as plain assignments of the state (defined from time 0 in every simulator: Icarus does
        # not run an `always @*` block whose inputs never change, so outputs set inside FSM cases could stay X)
        m.d.comb += [
            self.fetch_req.valid.eq(fsm.ongoing("FETCH") & ~abort_pending & ~past_memory),
            self.fetch_req.p.addr.eq(addr[:aw]),
            self.fetch_req.p.beats.eq(beats_per_desc),
            self.fetch_data.ready.eq(fsm.ongoing("RECEIVE")),
            engine_cmd.valid.eq(fsm.ongoing("ISSUE") & ~abort_pending),
            done.ready.eq(fsm.ongoing("WAIT")),
            self.engine.abort.eq(fsm.ongoing("WAIT") & abort_pending),
        ]
        return m
