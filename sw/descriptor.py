"""GEMM descriptors: the commands the SAT command processor fetches from device memory.

One descriptor is one 64-byte record (one 512-bit AXI beat), little-endian. A command list is ``count``
consecutive descriptors starting at a 64-byte aligned device address; the host writes the list, sets
``CMD_ADDR`` / ``CMD_COUNT`` and starts the core (``sat.sw.regmap``). The same encoder/decoder serves the host
driver, the software device model and the testbenches, and ``validate`` is the software statement of the checks
the hardware makes before it touches memory.

Layout (byte offsets)::

    0x00 u8   opcode      1 = GEMM; anything else is an error (ERR_BAD_OPCODE)
    0x01 u8   flags       bit0 SPARSE (B is an N:M operand in the packed format of docs/format.md)
                          bit1 A_TRANS (A is stored K x rows: element (i, k) at a_addr + k*a_stride + 2*i)
                          bit2 B_TRANS (dense B is stored cols x K: element (k, j) at b_addr + j*b_stride + 2*k)
                          bit3 IRQ (raise the interrupt when this descriptor completes)
                          bits 4-5 RESULT, the format of C: 0 FP32, 1 the operand format (FP16/BF16: each
                                   FP32 chain result rounded once, numerics.round_result); 2, 3 reserved
                          bits 6-7 reserved, must be 0
    0x02 u8   nm          bits 0-3: N, bits 4-7: log2(M) (both 0 for dense); N:M must be in the build's nm_set
    0x03 u8   reserved    0 (nonzero: ERR_BAD_FLAGS)
    0x04 u32  rows        output rows  (the "M" of an M x K x N GEMM)
    0x08 u32  red         reduction length K
    0x0C u32  cols        output columns N
    0x10 u64  a_addr      operand A (FP16/BF16), 2-byte aligned
    0x18 u64  b_addr      operand B: dense FP16/BF16, or the packed N:M stream (64-byte aligned)
    0x20 u64  c_addr      result C, row-major: element (i, j) at c_addr + i*c_stride + e*j, e-byte aligned, where
                          e = 4 (FP32 results) or 2 (RESULT = 1: narrow results in the operand format)
    0x28 u32  a_stride    bytes between consecutive rows of A as stored (rows, or K if A_TRANS)
    0x2C u32  b_stride    bytes between consecutive rows of dense B as stored (K, or cols if B_TRANS); must be 0
                          if SPARSE (the packed layout fixes it; nonzero: ERR_BAD_SHAPE)
    0x30 u32  c_stride    bytes between rows of C (e-byte aligned)
    0x34 u32  tag         free for software; the core reports the tag of the last completed descriptor
    0x38 u64  reserved    0 (nonzero: ERR_BAD_FLAGS)

A reserved RESULT code (or flag bit) gives ERR_BAD_FLAGS. Narrow results are meant for final results: a K chunk's
partial sum, which the host adds to others, stays FP32 (the core cannot know; the scheduler and driver keep the rule,
``docs/numerics.md``).

Addresses must lie below ``2**axi_addr_width`` and, with their whole extent, inside device memory
(the card's size, reported in ``MEM_SIZE``), else ERR_BAD_ADDRESS. The checks run in the order of
``GemmDescriptor.validate`` and the first failing one gives the error code.

The three BDWP GEMMs of a layer with weights ``W`` (``C_out x K``), activations ``X`` (``B x K``) and output
gradients ``dY`` (``B x C_out``), all row-major:

* FF ``Y = X . W_ff^T``: A = X, B = ``pack(compress_ff(W))`` (SPARSE), or dense ``W`` with B_TRANS.
* BP ``dX = dY . W_bp``: A = dY, B = ``pack(compress_bp(W))`` (SPARSE), or dense ``W``.
* WU ``dW = dY^T . X``: A = dY with A_TRANS, B = X (dense).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from amaranth.lib import data, enum

from .config import SATConfig

__all__ = [
    "DESCRIPTOR_BYTES", "OP_GEMM", "FLAG_SPARSE", "FLAG_A_TRANS", "FLAG_B_TRANS", "FLAG_IRQ", "FLAGS_DEFINED",
    "RESULT_SHIFT", "RESULT_FP32", "RESULT_NARROW", "FLAG_NARROW", "result_flags",
    "DIM_WIDTH", "MAX_DIM", "DESCRIPTOR_LAYOUT", "FLAGS_LAYOUT", "GemmDescriptor", "DescriptorError",
    "OP_CONV", "CONV_LAYOUT", "CONV_PASSES", "ConvPass", "ConvDescriptor", "decode", "encode_list", "decode_list",
]

DESCRIPTOR_BYTES = 64
OP_GEMM = 1
OP_CONV = 2
FLAG_SPARSE = 1 << 0
FLAG_A_TRANS = 1 << 1
FLAG_B_TRANS = 1 << 2
FLAG_IRQ = 1 << 3
#: The RESULT field (flags bits 4-5): the format of C. Codes 2 and 3 are reserved (ERR_BAD_FLAGS).
RESULT_SHIFT = 4
RESULT_FP32 = 0
RESULT_NARROW = 1
FLAG_NARROW = RESULT_NARROW << RESULT_SHIFT
FLAGS_DEFINED = FLAG_SPARSE | FLAG_A_TRANS | FLAG_B_TRANS | FLAG_IRQ | FLAG_NARROW
#: Width of the rows / red / cols the hardware accepts, on every interface that carries them; larger shapes are
#: tiled by the scheduler.
DIM_WIDTH = 24
MAX_DIM = (1 << DIM_WIDTH) - 1

#: The flags byte, field by field.
FLAGS_LAYOUT = data.StructLayout({"sparse": 1, "a_trans": 1, "b_trans": 1, "irq": 1, "result": 2, "reserved": 2})
#: The 64-byte descriptor as one little-endian 512-bit word (the module docstring's byte layout): the host encodes
#: with ``DESCRIPTOR_LAYOUT.const(...)``, the command processor decodes a fetched beat through a ``View`` of it.
DESCRIPTOR_LAYOUT = data.StructLayout({
    "opcode": 8, "flags": FLAGS_LAYOUT, "n": 4, "m_log2": 4, "reserved0": 8,
    "rows": 32, "red": 32, "cols": 32, "a_addr": 64, "b_addr": 64, "c_addr": 64,
    "a_stride": 32, "b_stride": 32, "c_stride": 32, "tag": 32, "reserved1": 64,
})
assert DESCRIPTOR_LAYOUT.size == 8 * DESCRIPTOR_BYTES
assert all(1 << FLAGS_LAYOUT[name].offset == flag for name, flag in (
    ("sparse", FLAG_SPARSE), ("a_trans", FLAG_A_TRANS), ("b_trans", FLAG_B_TRANS), ("irq", FLAG_IRQ)))
assert FLAGS_LAYOUT["result"].offset == RESULT_SHIFT


def result_flags(out_fmt: str, operand_fmt: str) -> int:
    """The flag bits that ask for results in ``out_fmt`` on a build whose operands are ``operand_fmt``.

    Raises
    ------
    ValueError
        If ``out_fmt`` is neither "fp32" nor the operand format (the core rounds only to its operand format).
    """
    if out_fmt == "fp32":
        return 0
    if out_fmt != operand_fmt:
        raise ValueError(f"results are FP32 or in the core's operand format ({operand_fmt}), not {out_fmt!r}")
    return FLAG_NARROW


def _flag_fields(flags: int) -> dict[str, int]:
    """The flags byte as ``FLAGS_LAYOUT`` fields."""
    return {"sparse": flags & 1, "a_trans": flags >> 1 & 1, "b_trans": flags >> 2 & 1, "irq": flags >> 3 & 1,
            "result": flags >> RESULT_SHIFT & 3, "reserved": flags >> 6}


class DescriptorError(ValueError):
    """A descriptor the core would reject; ``code`` is the error code the hardware reports for it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class _ResultFormat:
    """The RESULT field of a descriptor's ``flags`` (bits 4-5), shared by the GEMM and convolution descriptors."""

    flags: int

    @property
    def narrow(self) -> bool:
        """Results in the operand format (RESULT = 1), 2 bytes each; else FP32."""
        return (self.flags >> RESULT_SHIFT & 3) == RESULT_NARROW

    @property
    def c_item(self) -> int:
        """Bytes per result element: 2 narrow, 4 FP32."""
        return 2 if self.narrow else 4


@dataclass(frozen=True)
class GemmDescriptor(_ResultFormat):
    """One GEMM command (see the module docstring for the field meanings and the byte layout)."""

    rows: int
    red: int
    cols: int
    a_addr: int
    b_addr: int
    c_addr: int
    a_stride: int
    b_stride: int
    c_stride: int
    n: int = 0
    m: int = 0
    flags: int = 0
    tag: int = 0
    opcode: int = OP_GEMM
    reserved: int = 0  # byte 0x03 | bytes 0x38-0x3F << 8, as fetched; must be 0

    @property
    def sparse(self) -> bool:
        return bool(self.flags & FLAG_SPARSE)

    def encode(self) -> bytes:
        """The 64 bytes the core fetches; raises ``ValueError`` if a field does not fit its width."""
        if self.m & (self.m - 1) or self.m > (1 << 15):
            raise ValueError(f"descriptor m={self.m} must be 0 (dense) or a power of two up to 2**15")
        for name, bits in (("opcode", 8), ("flags", 8), ("n", 4), ("rows", 32), ("red", 32),
                           ("cols", 32), ("a_addr", 64), ("b_addr", 64), ("c_addr", 64), ("a_stride", 32),
                           ("b_stride", 32), ("c_stride", 32), ("tag", 32), ("reserved", 72)):
            value = getattr(self, name)
            if not 0 <= value < (1 << bits):
                raise ValueError(f"descriptor field {name}={value!r} does not fit in {bits} bits")
        m_log2 = self.m.bit_length() - 1 if self.m else 0
        word = DESCRIPTOR_LAYOUT.const({
            "opcode": self.opcode, "flags": _flag_fields(self.flags), "n": self.n, "m_log2": m_log2,
            "reserved0": self.reserved & 0xFF, "rows": self.rows, "red": self.red, "cols": self.cols,
            "a_addr": self.a_addr, "b_addr": self.b_addr, "c_addr": self.c_addr, "a_stride": self.a_stride,
            "b_stride": self.b_stride, "c_stride": self.c_stride, "tag": self.tag, "reserved1": self.reserved >> 8,
        }).as_bits()
        return word.to_bytes(DESCRIPTOR_BYTES, "little")

    @classmethod
    def decode(cls, raw: bytes) -> GemmDescriptor:
        """Parse 64 bytes (reserved fields are not checked here; :meth:`validate` does)."""
        if len(raw) != DESCRIPTOR_BYTES:
            raise ValueError(f"a descriptor is {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
        d = DESCRIPTOR_LAYOUT.from_bits(int.from_bytes(raw, "little"))
        n, m_log2 = int(d.n), int(d.m_log2)
        m = 0 if n == 0 and m_log2 == 0 else 1 << m_log2
        return cls(rows=int(d.rows), red=int(d.red), cols=int(d.cols), a_addr=int(d.a_addr),
                   b_addr=int(d.b_addr), c_addr=int(d.c_addr), a_stride=int(d.a_stride), b_stride=int(d.b_stride),
                   c_stride=int(d.c_stride), n=n, m=m, flags=raw[1], tag=int(d.tag), opcode=int(d.opcode),
                   reserved=int(d.reserved0) | int(d.reserved1) << 8)

    def validate(self, config: SATConfig, memory_bytes: int | None = None) -> None:
        """Raise :class:`DescriptorError` (with the hardware's error code) if the core would reject this.

        Parameters
        ----------
        config : SATConfig
            The build: its ``nm_set`` decides which N:M patterns are accepted.
        memory_bytes : int, optional
            Size of device memory (a property of the card, not of the core's build; the core gets it as a
            parameter and reports it in ``MEM_SIZE``); operands reaching past it are rejected (ERR_BAD_ADDRESS).
            ``None`` checks only the address width.
        """
        from .regmap import ErrorCode

        if self.opcode != OP_GEMM:
            raise DescriptorError(f"opcode {self.opcode} is not GEMM ({OP_GEMM})", ErrorCode.BAD_OPCODE)
        if self.flags & ~FLAGS_DEFINED & 0xFF:
            raise DescriptorError(f"reserved flag bits set in 0x{self.flags:02x} (RESULT, bits 4-5, is 0 for FP32 or "
                                  "1 for the operand format; bits 6-7 are 0)", ErrorCode.BAD_FLAGS)
        if self.reserved:
            raise DescriptorError("reserved descriptor bytes (0x03, 0x38-0x3F) must be zero", ErrorCode.BAD_FLAGS)
        if self.sparse:
            if (self.n, self.m) not in config.nm_set:
                raise DescriptorError(f"{self.n}:{self.m} is not built into this core (nm_set {config.nm_set})",
                                      ErrorCode.NM_UNSUPPORTED)
            if self.flags & FLAG_B_TRANS:
                raise DescriptorError("B_TRANS cannot be combined with SPARSE", ErrorCode.BAD_FLAGS)
            if self.b_stride:
                raise DescriptorError("b_stride must be 0 for a SPARSE descriptor (the packed layout fixes it)",
                                      ErrorCode.BAD_SHAPE)
        elif self.n or self.m:
            raise DescriptorError("dense descriptors must have n = m = 0", ErrorCode.NM_UNSUPPORTED)
        for name in ("rows", "red", "cols"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_DIM:
                raise DescriptorError(f"{name}={value} must be between 1 and {MAX_DIM}", ErrorCode.BAD_SHAPE)
        e = self.c_item
        for name, align in (("a_addr", 2), ("b_addr", 64 if self.sparse else 2), ("c_addr", e),
                            ("a_stride", 2), ("b_stride", 2), ("c_stride", e)):
            if getattr(self, name) % align:
                raise DescriptorError(f"{name}=0x{getattr(self, name):x} is not {align}-byte aligned",
                                      ErrorCode.BAD_ADDRESS)
        a_lines, a_len = (self.red, self.rows) if self.flags & FLAG_A_TRANS else (self.rows, self.red)
        strided = [("a_stride", a_lines, 2 * a_len), ("c_stride", self.rows, e * self.cols)]
        if not self.sparse:
            b_lines, b_len = (self.cols, self.red) if self.flags & FLAG_B_TRANS else (self.red, self.cols)
            strided.append(("b_stride", b_lines, 2 * b_len))
        for name, lines, row_bytes in strided:
            if lines > 1 and getattr(self, name) < row_bytes:
                raise DescriptorError(f"{name}={getattr(self, name)} is smaller than one stored row "
                                      f"({row_bytes} bytes)", ErrorCode.BAD_SHAPE)
        for name, lo, hi in self.extents():
            if hi > (1 << config.axi_addr_width):
                raise DescriptorError(f"operand {name} [0x{lo:x}, 0x{hi:x}) is beyond the "
                                      f"{config.axi_addr_width}-bit address space", ErrorCode.BAD_ADDRESS)
            if memory_bytes is not None and hi > memory_bytes:
                raise DescriptorError(f"operand {name} [0x{lo:x}, 0x{hi:x}) reaches past device memory "
                                      f"(0x{memory_bytes:x} bytes)", ErrorCode.BAD_ADDRESS)

    def extents(self) -> list[tuple[str, int, int]]:
        """``(operand, first byte, one past the last byte)`` of A, B and C in device memory."""
        from .nmformat import packed_nbytes

        a_lines, a_len = (self.red, self.rows) if self.flags & FLAG_A_TRANS else (self.rows, self.red)
        a = ("A", self.a_addr, self.a_addr + (a_lines - 1) * self.a_stride + 2 * a_len)
        if self.sparse:
            b = ("B", self.b_addr, self.b_addr + packed_nbytes(self.n, self.m, self.red, self.cols))
        else:
            b_lines, b_len = (self.cols, self.red) if self.flags & FLAG_B_TRANS else (self.red, self.cols)
            b = ("B", self.b_addr, self.b_addr + (b_lines - 1) * self.b_stride + 2 * b_len)
        c = ("C", self.c_addr, self.c_addr + (self.rows - 1) * self.c_stride + self.c_item * self.cols)
        return [a, b, c]

    def replace(self, **changes) -> GemmDescriptor:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return GemmDescriptor(**values)


def encode_list(descriptors: list[GemmDescriptor | ConvDescriptor]) -> bytes:
    """A command list: the descriptors back to back."""
    return b"".join(d.encode() for d in descriptors)


def decode_list(raw: bytes) -> list[GemmDescriptor | ConvDescriptor]:
    if len(raw) % DESCRIPTOR_BYTES:
        raise ValueError(f"a command list is a multiple of {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
    return [decode(raw[i:i + DESCRIPTOR_BYTES]) for i in range(0, len(raw), DESCRIPTOR_BYTES)]


# ----------------------------------------------------------------------------------------------------------
# Convolution descriptors (SPEC section 1.1, docs/conv.md)

class ConvPass(enum.IntEnum, shape=2):
    """The pass of a convolution descriptor (its ``pass_`` field); code 3 is undefined (``BAD_FLAGS``)."""

    FF = 0
    BP = 1
    WU = 2


#: The passes of a convolution descriptor by name, in code order.
CONV_PASSES = tuple(p.name.lower() for p in ConvPass)
#: Largest kernel side, padding and stride of a convolution descriptor; strides are powers of two.
MAX_KERNEL, MAX_PADDING, MAX_STRIDE = 15, 15, 8
#: Largest batch, height and width (16-bit fields).
MAX_SPATIAL = (1 << 16) - 1

#: The 64-byte convolution descriptor, little-endian. Opcode, flags, N:M, ``red``, the three addresses and the tag
#: are where a GEMM descriptor has them; the geometry takes the strides' place. ``start`` is where the chunk
#: ``k0`` lies in the lowered reduction, so that the core never divides: ``(s0, s1, s2)`` is ``(kh0, kw0, ch0)`` (tap
#: and channel) for FF and BP, ``(b0, oh0, ow0)`` (output pixel) for WU; the encoder computes it, the core checks it.
CONV_LAYOUT = data.StructLayout({
    "opcode": 8, "flags": FLAGS_LAYOUT, "n": 4, "m_log2": 4, "kh": 4, "kw": 4,
    "s0": 16, "s1": 16, "red": 32, "s2": 32, "a_addr": 64, "b_addr": 64, "c_addr": 64,
    "batch": 16, "height": 16, "width": 16, "stride_log2": 2, "padding": 4, "pass_": 2, "reserved0": 8,
    "c_in": 32, "tag": 32, "c_out": 32, "k0": 32,
})
assert CONV_LAYOUT.size == 8 * DESCRIPTOR_BYTES
assert all(CONV_LAYOUT[f].offset == DESCRIPTOR_LAYOUT[f].offset
           for f in ("opcode", "flags", "n", "m_log2", "red", "a_addr", "b_addr", "c_addr", "tag"))


@dataclass(frozen=True)
class ConvDescriptor(_ResultFormat):
    """One pass of a convolution on channels-last tensors in device memory (implicit GEMM, SPEC section 1.1).

    The core lowers the operand on the fly: FF reads ``X`` (B, H, W, C_in) at ``a_addr`` as the rows of
    ``im2col(X)``; BP reads ``dY`` (B, OH, OW, C_out) at ``a_addr`` as the rows of the transposed-convolution
    lowering; WU reads ``dY`` at ``a_addr`` as ``A^T`` and ``X`` at ``b_addr`` as the rows of ``im2col(X)``.
    The other operand is a plain matrix: FF's ``W_ff^T`` (``K x C_out``, packed N:M along ``K``, or dense: row-major,
    or ``W`` as stored, ``C_out x K``, with ``FLAG_B_TRANS``), BP's ``W_bp`` viewed ``K' x C_in`` (packed N:M or
    dense row-major). Results: FF ``Y`` and BP ``dX`` channels-last, WU ``dW`` as ``C_out x kh x kw x C_in``, FP32
    or (``FLAG_NARROW``) in the operand format, rows packed (``c_stride = c_item * cols``).

    A descriptor computes the reduction chunk ``[k0, k0 + red)`` of the lowered reduction (``K`` of FF, ``K'`` of
    BP, the output pixels ``B*OH*OW`` of WU); the host adds the chunks' partial results in chunk order
    (``sat.sw.backend.k_chunks`` / ``sum_partials``). Chunked plain operands start at their chunk: ``b_addr`` is
    the chunk's packed stream or its first row (``W^T``, ``W_bp``) or column (``B_TRANS``); WU's ``a_addr`` is
    ``dY``'s pixel ``k0``.

    Attributes
    ----------
    pass_ : "ff", "bp" or "wu"
    batch, height, width, c_in, c_out, kh, kw, stride, padding : int
        The geometry of the convolution (its input ``X``), whatever the pass.
    a_addr, b_addr, c_addr : int
    k0, red : int
        The reduction chunk; ``red = 0`` in the constructor means the whole reduction from ``k0``.
    n, m : int
        N:M of the packed weight operand (FF, BP); 0 dense.
    flags : int
        ``FLAG_SPARSE`` (with ``n:m``), ``FLAG_B_TRANS`` (dense FF), ``FLAG_IRQ``, ``FLAG_NARROW``.
    tag : int
    """

    pass_: str
    batch: int
    height: int
    width: int
    c_in: int
    c_out: int
    kh: int
    kw: int
    stride: int
    padding: int
    a_addr: int
    b_addr: int
    c_addr: int
    k0: int = 0
    red: int = 0
    n: int = 0
    m: int = 0
    flags: int = 0
    tag: int = 0
    opcode: int = OP_CONV
    reserved: int = 0
    #: ``start`` as fetched (``None``: as the encoder computes it from ``k0``); the core checks it.
    start: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.pass_ not in CONV_PASSES:
            raise ValueError(f"pass_ must be one of {CONV_PASSES}, not {self.pass_!r}")
        if self.red == 0 and self.k0 >= 0:
            object.__setattr__(self, "red", max(self.reduction - self.k0, 0))

    # ---------------------------------------------------------------------------------------- geometry
    @property
    def sparse(self) -> bool:
        return bool(self.flags & FLAG_SPARSE)

    @property
    def oh(self) -> int:
        return (self.height + 2 * self.padding - self.kh) // max(self.stride, 1) + 1

    @property
    def ow(self) -> int:
        return (self.width + 2 * self.padding - self.kw) // max(self.stride, 1) + 1

    @property
    def co_pad(self) -> int:
        """Channels per tap of BP's reduction ``K'``: ``C_out`` rounded up to a multiple of ``M`` when sparse
        with a multi-tap kernel (no N:M group straddles two taps), else ``C_out``."""
        if self.sparse and self.kh * self.kw > 1 and self.m:
            return -(-self.c_out // self.m) * self.m
        return self.c_out

    @property
    def reduction(self) -> int:
        """Length of the whole lowered reduction: ``K``, ``K'`` or ``B*OH*OW``."""
        if self.pass_ == "ff":
            return self.kh * self.kw * self.c_in
        if self.pass_ == "bp":
            return self.kh * self.kw * self.co_pad
        return self.batch * self.oh * self.ow

    @property
    def rows(self) -> int:
        """Rows of the GEMM view (output rows)."""
        return {"ff": self.batch * self.oh * self.ow, "bp": self.batch * self.height * self.width,
                "wu": self.c_out}[self.pass_]

    @property
    def cols(self) -> int:
        """Columns of the GEMM view (output columns)."""
        return {"ff": self.c_out, "bp": self.c_in, "wu": self.kh * self.kw * self.c_in}[self.pass_]

    @property
    def c_stride(self) -> int:
        return self.c_item * self.cols

    @property
    def b_stride(self) -> int:
        """Bytes between the stored rows of the plain weight operand (dense FF/BP; 0 when packed, WU)."""
        if self.sparse or self.pass_ == "wu":
            return 0
        if self.pass_ == "ff":
            return 2 * (self.reduction if self.flags & FLAG_B_TRANS else self.c_out)
        return 2 * self.c_in

    def start_of(self, k: int) -> tuple[int, int, int]:
        """Where reduction index ``k`` lies: ``(kh, kw, channel)`` for FF and BP (channel ``ci`` of ``K`` or
        ``co`` of ``K'``), the output pixel ``(b, oh, ow)`` for WU."""
        if self.pass_ == "wu":
            q, ow = divmod(k, max(self.ow, 1))
            b, oh = divmod(q, max(self.oh, 1))
            return b, oh, ow
        chan = self.c_in if self.pass_ == "ff" else self.co_pad
        tap, ch = divmod(k, max(chan, 1))
        kh, kw = divmod(tap, max(self.kw, 1))
        return kh, kw, ch

    # ---------------------------------------------------------------------------------------- encoding
    def encode(self) -> bytes:
        """The 64 bytes the core fetches; raises ``ValueError`` if a field does not fit its width."""
        if self.stride < 1 or self.stride & (self.stride - 1) or self.stride > MAX_STRIDE:
            raise ValueError(f"stride must be a power of two up to {MAX_STRIDE}, not {self.stride!r}")
        if self.m & (self.m - 1) or self.m > (1 << 15):
            raise ValueError(f"descriptor m={self.m} must be 0 (dense) or a power of two")
        for name, bits in (("opcode", 8), ("flags", 8), ("n", 4), ("kh", 4), ("kw", 4), ("batch", 16),
                           ("height", 16), ("width", 16), ("padding", 4), ("c_in", 32), ("c_out", 32), ("k0", 32),
                           ("red", 32), ("a_addr", 64), ("b_addr", 64), ("c_addr", 64), ("tag", 32),
                           ("reserved", 8)):
            value = getattr(self, name)
            if not 0 <= value < (1 << bits):
                raise ValueError(f"descriptor field {name}={value!r} does not fit in {bits} bits")
        s0, s1, s2 = self.start if self.start is not None else self.start_of(self.k0)
        word = CONV_LAYOUT.const({
            "opcode": self.opcode, "flags": _flag_fields(self.flags), "n": self.n,
            "m_log2": self.m.bit_length() - 1 if self.m else 0, "kh": self.kh, "kw": self.kw,
            "s0": s0 & 0xFFFF, "s1": s1 & 0xFFFF, "s2": s2 & 0xFFFFFFFF, "red": self.red,
            "a_addr": self.a_addr, "b_addr": self.b_addr, "c_addr": self.c_addr, "batch": self.batch,
            "height": self.height, "width": self.width, "stride_log2": self.stride.bit_length() - 1,
            "padding": self.padding, "pass_": CONV_PASSES.index(self.pass_), "reserved0": self.reserved & 0xFF,
            "c_in": self.c_in, "tag": self.tag, "c_out": self.c_out, "k0": self.k0,
        }).as_bits()
        return word.to_bytes(DESCRIPTOR_BYTES, "little")

    @classmethod
    def decode(cls, raw: bytes) -> ConvDescriptor:
        """Parse 64 bytes of an ``OP_CONV`` descriptor (fields are checked by :meth:`validate`).

        Raises
        ------
        ValueError
            If the pass code is not one of :data:`CONV_PASSES` (the core answers ``BAD_FLAGS``).
        """
        if len(raw) != DESCRIPTOR_BYTES:
            raise ValueError(f"a descriptor is {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
        d = CONV_LAYOUT.from_bits(int.from_bytes(raw, "little"))
        code = int(d.pass_)
        if code >= len(CONV_PASSES):
            raise ValueError(f"convolution pass code {code} is not one of {CONV_PASSES}")
        n, m_log2 = int(d.n), int(d.m_log2)
        return cls(pass_=CONV_PASSES[code], batch=int(d.batch), height=int(d.height), width=int(d.width),
                   c_in=int(d.c_in), c_out=int(d.c_out), kh=int(d.kh), kw=int(d.kw), stride=1 << int(d.stride_log2),
                   padding=int(d.padding), a_addr=int(d.a_addr), b_addr=int(d.b_addr), c_addr=int(d.c_addr),
                   k0=int(d.k0), red=int(d.red) or -1, n=n, m=0 if n == 0 and m_log2 == 0 else 1 << m_log2,
                   flags=raw[1], tag=int(d.tag), reserved=int(d.reserved0),
                   start=(int(d.s0), int(d.s1), int(d.s2)))

    # ---------------------------------------------------------------------------------------- checks
    def validate(self, config: SATConfig, memory_bytes: int | None = None) -> None:
        """Raise :class:`DescriptorError` (with the hardware's error code) if the core would reject this; the
        checks and their order are the command processor's (``docs/conv.md``).
        """
        from .regmap import ErrorCode

        if self.opcode != OP_CONV:
            raise DescriptorError(f"opcode {self.opcode} is not CONV ({OP_CONV})", ErrorCode.BAD_OPCODE)
        if self.flags & ~FLAGS_DEFINED & 0xFF or self.flags & FLAG_A_TRANS:
            raise DescriptorError(f"reserved or A_TRANS flag bits set in 0x{self.flags:02x} (a convolution "
                                  "descriptor knows its operands' layouts; RESULT, bits 4-5, is 0 for FP32 or 1 for "
                                  "the operand format)", ErrorCode.BAD_FLAGS)
        if self.reserved:
            raise DescriptorError("reserved descriptor byte 0x2F must be zero", ErrorCode.BAD_FLAGS)
        if self.sparse:
            if self.pass_ == "wu":
                raise DescriptorError("WU is dense: SPARSE is not allowed on a WU descriptor", ErrorCode.BAD_FLAGS)
            if self.flags & FLAG_B_TRANS:
                raise DescriptorError("B_TRANS cannot be combined with SPARSE", ErrorCode.BAD_FLAGS)
            if (self.n, self.m) not in config.nm_set:
                raise DescriptorError(f"{self.n}:{self.m} is not built into this core (nm_set {config.nm_set})",
                                      ErrorCode.NM_UNSUPPORTED)
        elif self.n or self.m:
            raise DescriptorError("dense descriptors must have n = m = 0", ErrorCode.NM_UNSUPPORTED)
        if self.flags & FLAG_B_TRANS and self.pass_ != "ff":
            raise DescriptorError("B_TRANS applies to a dense FF weight only", ErrorCode.BAD_FLAGS)
        for name, hi in (("batch", MAX_SPATIAL), ("height", MAX_SPATIAL), ("width", MAX_SPATIAL),
                         ("c_in", MAX_DIM), ("c_out", MAX_DIM), ("kh", MAX_KERNEL), ("kw", MAX_KERNEL)):
            if not 1 <= getattr(self, name) <= hi:
                raise DescriptorError(f"{name}={getattr(self, name)} must be between 1 and {hi}", ErrorCode.BAD_SHAPE)
        if self.oh < 1 or self.ow < 1:
            raise DescriptorError(f"a {self.kh}x{self.kw} kernel does not fit a {self.height}x{self.width} input "
                                  f"with padding {self.padding}", ErrorCode.BAD_SHAPE)
        for name in ("rows", "cols"):
            if getattr(self, name) > MAX_DIM:
                raise DescriptorError(f"the GEMM view's {name}={getattr(self, name)} exceeds {MAX_DIM}",
                                      ErrorCode.BAD_SHAPE)
        if self.start is not None and self.red >= 1 and tuple(self.start) != self.start_of(self.k0):
            raise DescriptorError(f"start {tuple(self.start)} is not where k0={self.k0} lies "
                                  f"({self.start_of(self.k0)})", ErrorCode.BAD_SHAPE)
        if not 1 <= self.red <= MAX_DIM or self.k0 + self.red > self.reduction:
            raise DescriptorError(f"reduction chunk [{self.k0}, {self.k0 + self.red}) is not inside the "
                                  f"{self.reduction}-long reduction", ErrorCode.BAD_SHAPE)
        if self.sparse and self.k0 % self.m:
            raise DescriptorError(f"a sparse chunk starts on an N:M group boundary, not at {self.k0}",
                                  ErrorCode.BAD_SHAPE)
        for name, align in (("a_addr", 2), ("b_addr", 64 if self.sparse else 2), ("c_addr", self.c_item)):
            if getattr(self, name) % align:
                raise DescriptorError(f"{name}=0x{getattr(self, name):x} is not {align}-byte aligned",
                                      ErrorCode.BAD_ADDRESS)
        for name, lo, hi in self.extents():
            if hi > (1 << config.axi_addr_width):
                raise DescriptorError(f"operand {name} [0x{lo:x}, 0x{hi:x}) is beyond the "
                                      f"{config.axi_addr_width}-bit address space", ErrorCode.BAD_ADDRESS)
            if memory_bytes is not None and hi > memory_bytes:
                raise DescriptorError(f"operand {name} [0x{lo:x}, 0x{hi:x}) reaches past device memory "
                                      f"(0x{memory_bytes:x} bytes)", ErrorCode.BAD_ADDRESS)

    def extents(self) -> list[tuple[str, int, int]]:
        """``(operand, first byte, one past the last byte)`` of A, B and C in device memory."""
        from .nmformat import packed_nbytes

        x_bytes = 2 * self.batch * self.height * self.width * self.c_in
        dy_bytes = 2 * self.batch * self.oh * self.ow * self.c_out
        if self.pass_ == "ff":
            a = ("A", self.a_addr, self.a_addr + x_bytes)
        elif self.pass_ == "bp":
            a = ("A", self.a_addr, self.a_addr + dy_bytes)
        else:
            a = ("A", self.a_addr, self.a_addr + 2 * self.red * self.c_out)
        if self.pass_ == "wu":
            b = ("B", self.b_addr, self.b_addr + x_bytes)
        elif self.sparse:
            b = ("B", self.b_addr, self.b_addr + packed_nbytes(self.n, self.m, self.red, self.cols))
        elif self.flags & FLAG_B_TRANS:
            b = ("B", self.b_addr, self.b_addr + (self.cols - 1) * self.b_stride + 2 * self.red)
        else:
            b = ("B", self.b_addr, self.b_addr + self.red * self.b_stride)
        c = ("C", self.c_addr, self.c_addr + self.c_item * self.rows * self.cols)
        return [a, b, c]

    def replace(self, **changes) -> ConvDescriptor:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ConvDescriptor(**values)


def decode(raw: bytes) -> GemmDescriptor | ConvDescriptor:
    """A descriptor of either kind, by its opcode (anything but ``OP_CONV`` decodes as a GEMM descriptor, whose
    :meth:`~GemmDescriptor.validate` then rejects an unknown opcode)."""
    if len(raw) == DESCRIPTOR_BYTES and raw[0] == OP_CONV:
        return ConvDescriptor.decode(raw)
    return GemmDescriptor.decode(raw)
