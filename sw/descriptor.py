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
                          bits 4-7 reserved, must be 0
    0x02 u8   nm          bits 0-3: N, bits 4-7: log2(M) (both 0 for dense); N:M must be in the build's nm_set
    0x03 u8   reserved    0 (nonzero: ERR_BAD_FLAGS)
    0x04 u32  rows        output rows  (the "M" of an M x K x N GEMM)
    0x08 u32  red         reduction length K
    0x0C u32  cols        output columns N
    0x10 u64  a_addr      operand A (FP16/BF16), 2-byte aligned
    0x18 u64  b_addr      operand B: dense FP16/BF16, or the packed N:M stream (64-byte aligned)
    0x20 u64  c_addr      result C (FP32, row-major: element (i, j) at c_addr + i*c_stride + 4*j), 4-byte aligned
    0x28 u32  a_stride    bytes between consecutive rows of A as stored (rows, or K if A_TRANS)
    0x2C u32  b_stride    bytes between consecutive rows of dense B as stored (K, or cols if B_TRANS); must be 0
                          if SPARSE (the packed layout fixes it; nonzero: ERR_BAD_SHAPE)
    0x30 u32  c_stride    bytes between rows of C
    0x34 u32  tag         free for software; the core reports the tag of the last completed descriptor
    0x38 u64  reserved    0 (nonzero: ERR_BAD_FLAGS)

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

import struct
from dataclasses import dataclass, fields

from .config import SATConfig

__all__ = [
    "DESCRIPTOR_BYTES", "OP_GEMM", "FLAG_SPARSE", "FLAG_A_TRANS", "FLAG_B_TRANS", "FLAG_IRQ", "FLAGS_DEFINED",
    "DIM_WIDTH", "MAX_DIM", "GemmDescriptor", "DescriptorError", "encode_list", "decode_list",
]

DESCRIPTOR_BYTES = 64
OP_GEMM = 1
FLAG_SPARSE = 1 << 0
FLAG_A_TRANS = 1 << 1
FLAG_B_TRANS = 1 << 2
FLAG_IRQ = 1 << 3
FLAGS_DEFINED = FLAG_SPARSE | FLAG_A_TRANS | FLAG_B_TRANS | FLAG_IRQ
#: Largest rows / red / cols the hardware accepts (24 bits): larger shapes are tiled by the scheduler.
#: Width of the rows / red / cols fields, in the descriptor and on every interface that carries them.
DIM_WIDTH = 24
MAX_DIM = (1 << DIM_WIDTH) - 1

_STRUCT = struct.Struct("<BBBBIIIQQQIIIIQ")
assert _STRUCT.size == DESCRIPTOR_BYTES


class DescriptorError(ValueError):
    """A descriptor the core would reject; ``code`` is the error code the hardware reports for it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GemmDescriptor:
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
        return _STRUCT.pack(self.opcode, self.flags, self.n | (m_log2 << 4), self.reserved & 0xFF, self.rows,
                            self.red, self.cols, self.a_addr, self.b_addr, self.c_addr, self.a_stride,
                            self.b_stride, self.c_stride, self.tag, self.reserved >> 8)

    @classmethod
    def decode(cls, raw: bytes) -> GemmDescriptor:
        """Parse 64 bytes (reserved fields are not checked here; :meth:`validate` does)."""
        if len(raw) != DESCRIPTOR_BYTES:
            raise ValueError(f"a descriptor is {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
        (opcode, flags, nm, r0, rows, red, cols, a_addr, b_addr, c_addr, a_stride, b_stride, c_stride, tag,
         r1) = _STRUCT.unpack(raw)
        n, m_log2 = nm & 0xF, nm >> 4
        m = 0 if n == 0 and m_log2 == 0 else 1 << m_log2
        return cls(rows=rows, red=red, cols=cols, a_addr=a_addr, b_addr=b_addr, c_addr=c_addr,
                   a_stride=a_stride, b_stride=b_stride, c_stride=c_stride, n=n, m=m,
                   flags=flags, tag=tag, opcode=opcode, reserved=r0 | (r1 << 8))

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
            raise DescriptorError(f"reserved flag bits set in 0x{self.flags:02x}", ErrorCode.BAD_FLAGS)
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
        for name, align in (("a_addr", 2), ("b_addr", 64 if self.sparse else 2), ("c_addr", 4),
                            ("a_stride", 2), ("b_stride", 2), ("c_stride", 4)):
            if getattr(self, name) % align:
                raise DescriptorError(f"{name}=0x{getattr(self, name):x} is not {align}-byte aligned",
                                      ErrorCode.BAD_ADDRESS)
        a_lines, a_len = (self.red, self.rows) if self.flags & FLAG_A_TRANS else (self.rows, self.red)
        strided = [("a_stride", a_lines, 2 * a_len), ("c_stride", self.rows, 4 * self.cols)]
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
        c = ("C", self.c_addr, self.c_addr + (self.rows - 1) * self.c_stride + 4 * self.cols)
        return [a, b, c]

    def replace(self, **changes) -> GemmDescriptor:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return GemmDescriptor(**values)


def encode_list(descriptors: list[GemmDescriptor]) -> bytes:
    """A command list: the descriptors back to back."""
    return b"".join(d.encode() for d in descriptors)


def decode_list(raw: bytes) -> list[GemmDescriptor]:
    if len(raw) % DESCRIPTOR_BYTES:
        raise ValueError(f"a command list is a multiple of {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
    return [GemmDescriptor.decode(raw[i:i + DESCRIPTOR_BYTES]) for i in range(0, len(raw), DESCRIPTOR_BYTES)]
