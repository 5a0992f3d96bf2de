"""``SATDevice``: the synchronous host API of a SAT core, over any :class:`~sat.sw.driver.transport.Transport`.

Opening a device reads the identity registers and checks them against the expected :class:`SATConfig` (or
reconstructs the configuration from them). The device then manages device memory (a first-fit allocator per
memory channel, which places tensors by role: on the card A, B, results and command lists each get their own DDR4
channel, :func:`sat.sw.memmap.default_placement`), moves
operands in (FP16/BF16, encoded with :func:`sat.sw.numerics.encode`) and results out (FP32), uploads
pre-generated compressed N:M weights (:mod:`sat.sw.nmformat`), builds GEMM descriptors for the FF, BP and WU
passes of a layer (the mapping in :mod:`sat.sw.descriptor`), runs command lists and turns the core's status into
Python exceptions. :class:`DeviceBackend` plugs a device into BDWP training as a
:class:`~sat.sw.bdwp.GemmBackend`. See ``docs/driver.md`` for a worked example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import SATConfig
from ..conv import ConvShape
from ..descriptor import (
    DESCRIPTOR_BYTES,
    FLAG_A_TRANS,
    FLAG_B_TRANS,
    FLAG_IRQ,
    FLAG_SPARSE,
    MAX_DIM,
    ConvDescriptor,
    DescriptorError,
    GemmDescriptor,
    encode_list,
    result_flags,
)
from ..memmap import MemoryMap, default_placement
from ..nmformat import NMOperand, compress_bp, compress_ff, pack
from ..numerics import decode, encode, get_format
from ..regmap import (
    CONTROL_ABORT,
    CONTROL_CLEAR,
    CONTROL_START,
    IRQ_DONE,
    IRQ_ERROR,
    PERF_COUNTERS,
    SAT_ID,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    VERSION,
    ErrorCode,
    RegisterMap,
    register_map,
)
from ..validate import real_array
from .transport import Transport

__all__ = [
    "SATDevice", "DeviceBackend", "Tensor", "SparseWeights", "RunResult", "PendingRun",
    "SATError", "SATDeviceError", "SATTimeout", "SATConfigMismatch", "SATMemoryError",
    "config_from_registers",
]

OperandDtype = Literal["fp16", "bf16", "fp32"]
KLimit = Callable[[int, int], int]


class SATError(RuntimeError):
    """Base class of the driver's errors."""


class SATDeviceError(SATError):
    """The core reported an error for a command list.

    Parameters
    ----------
    code : ErrorCode
        The ``ERROR_CODE`` register.
    index : int
        The ``ERROR_INDEX`` register: the 0-based descriptor that caused it.
    message : str
        What went wrong and what to change.
    """

    def __init__(self, code: int, index: int, message: str):
        super().__init__(message)
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.index = index


class SATTimeout(SATError, TimeoutError):
    """A command list did not finish in time; ``registers`` holds the register dump shown in the message."""

    def __init__(self, message: str, registers: dict[str, int]):
        super().__init__(message)
        self.registers = registers


class SATConfigMismatch(SATError):
    """The core's identity registers do not match the expected build."""


class SATMemoryError(SATError, MemoryError):
    """Device memory is exhausted (or an address is not an allocation)."""


@dataclass(frozen=True)
class Tensor:
    """A 2-D matrix in device memory, row-major with ``stride`` bytes between rows.

    ``dtype`` is the operand format (``"fp16"``/``"bf16"``, 2 bytes per element) or ``"fp32"`` (results).
    """

    addr: int
    shape: tuple[int, int]
    dtype: OperandDtype
    stride: int

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "fp32" else 2

    @property
    def nbytes(self) -> int:
        """Bytes spanned in device memory."""
        rows, cols = self.shape
        return (rows - 1) * self.stride + cols * self.itemsize if rows and cols else 0


@dataclass(frozen=True)
class SparseWeights:
    """A packed N:M operand ``B`` (``k x cols``, grouped along ``k``) in device memory.

    ``which`` says how it was built from a weight matrix ``W`` (``C_out x K``): ``"ff"`` (``B = W_ff^T``,
    ``k = K``, ``cols = C_out``), ``"bp"`` (``B = W_bp``, ``k = C_out``, ``cols = K``) or ``""`` (any operand).
    """

    addr: int
    n: int
    m: int
    k: int
    cols: int
    nbytes: int
    fmt: str
    which: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return (self.k, self.cols)


@dataclass(frozen=True, eq=False)
class PendingRun:
    """A command list started by :meth:`SATDevice.start`: its device address and descriptors."""

    addr: int
    descriptors: tuple[GemmDescriptor, ...]


@dataclass(frozen=True)
class RunResult:
    """What a finished command list reports: ``CMD_DONE``, ``LAST_TAG`` and the performance counters."""

    cmd_done: int
    last_tag: int
    counters: dict[str, int]


def config_from_registers(config_word: int, nm_bits: int, buffers_word: int | None = None) -> SATConfig:
    """Rebuild a :class:`SATConfig` from the ``CONFIG``, ``NM_SET_LO``/``NM_SET_HI`` and ``CONFIG_BUFFERS``
    registers.

    ``nm_bits`` is the 64-bit ``NM_SET_HI:NM_SET_LO``; ``buffers_word`` is ``CONFIG_BUFFERS`` (``None``: the
    default depths). ``clock_hz`` is not rebuilt and keeps its default; compare ``CONFIG_HASH`` to know whether
    the result is the exact build.

    Raises
    ------
    SATConfigMismatch
        If the words do not decode to a valid configuration (wrong bitstream, or not a SAT core).
    """
    generic = register_map(SATConfig())
    f = generic["CONFIG"].unpack(config_word)
    nm_set = [(bit % 16 + 1, 1 << (bit // 16 + 1)) for bit in range(64) if nm_bits >> bit & 1]
    depths = {}
    if buffers_word is not None:
        b = generic["CONFIG_BUFFERS"].unpack(buffers_word)
        depths = {"a_depth": 1 << b["a_depth_log2"], "b_depth": 1 << b["b_depth_log2"]}
    try:
        return SATConfig(rows=f["rows_m1"] + 1, cols=f["cols_m1"] + 1, fmt="bf16" if f["bf16"] else "fp16",
                         adder_latency=f["adder_latency_m1"] + 1,
                         axi_data_width=64 << (f["data_width_code"] - 1) if f["data_width_code"] else 0,
                         axi_addr_width=64 if f["addr64"] else 32, nm_set=tuple(nm_set), **depths)
    except ValueError as e:
        raise SATConfigMismatch(f"CONFIG=0x{config_word:08x} NM_SET=0x{nm_bits:016x} do not describe a valid SAT "
                                f"build ({e}): is the card programmed with a SAT bitstream? (see docs/board.md)"
                                ) from None


class _Allocator:
    """First-fit allocator over ``[base, base + size)`` with explicit alignment (one memory channel's window)."""

    def __init__(self, size: int, base: int = 0):
        self.size = size
        self.base = base
        self.free_blocks: list[tuple[int, int]] = [(base, base + size)]   # sorted, coalesced (start, end)
        self.used: dict[int, tuple[int, int]] = {}                       # addr -> (block start, block end)

    @property
    def free_bytes(self) -> int:
        return sum(e - s for s, e in self.free_blocks)

    @property
    def largest_free(self) -> int:
        return max((e - s for s, e in self.free_blocks), default=0)

    def alloc(self, nbytes: int, align: int) -> int | None:
        """The address of a fresh block, or None if no free block is large enough."""
        nbytes = max(int(nbytes), 1)
        for i, (s, e) in enumerate(self.free_blocks):
            a = -(-s // align) * align
            if a + nbytes <= e:
                pieces = [p for p in ((s, a), (a + nbytes, e)) if p[1] > p[0]]
                self.free_blocks[i:i + 1] = pieces
                self.used[a] = (a, a + nbytes)
                return a
        return None

    def free(self, addr: int) -> None:
        try:
            s, e = self.used.pop(addr)
        except KeyError:
            raise SATMemoryError(f"0x{addr:x} is not the address of an allocation (double free?)") from None
        blocks = self.free_blocks
        blocks.append((s, e))
        blocks.sort()
        merged: list[tuple[int, int]] = []
        for bs, be in blocks:
            if merged and merged[-1][1] == bs:
                merged[-1] = (merged[-1][0], be)
            else:
                merged.append((bs, be))
        self.free_blocks = merged


class SATDevice:
    """A SAT core reached through ``transport``.

    Parameters
    ----------
    transport : Transport
        :class:`~sat.sw.driver.xdma.XdmaTransport`, :class:`~sat.sw.driver.model.ModelTransport`, or the
        simulation transport.
    config : SATConfig, optional
        The build this script expects. Opening fails with :class:`SATConfigMismatch` if the core is a different
        build. ``None``: use the core's build, rebuilt from its ``CONFIG``/``NM_SET_LO``/``NM_SET_HI`` registers.
    memory_bytes : int, optional
        Size of device memory; default: the core's ``MEM_SIZE`` registers.
    channels : int, optional
        Memory channels that memory is split into (equal windows from address 0, :class:`MemoryMap`); default: the
        core's ``MEM_CHANNELS`` register (a core older than that register reads 0 there: one channel), or one
        channel when ``memory_bytes`` is given.
    use_irq : bool
        Wait for the interrupt (default; on the card the XDMA driver must use MSI, docs/board.md). After each
        interrupt the device acknowledges ``IRQ_STATUS`` and reads ``STATUS`` again, so an interrupt raised by a
        descriptor with ``FLAG_IRQ`` in the middle of a list does not hide the end of the list. False polls
        ``STATUS`` instead (e.g. if the interrupt is not wired).
    poll_interval_s : float
        Sleep between ``STATUS`` polls when ``use_irq`` is False.

    Raises
    ------
    SATConfigMismatch
        If ``ID``/``VERSION`` show no compatible SAT core, or the build differs from ``config``.
    ValueError
        If the device memory size is unknown, or does not split into the channels.

    Attributes
    ----------
    memory : MemoryMap
        Device memory: ``memory.channels`` windows of ``memory.window_bytes`` (four of 16 GiB on the card).
    placement : dict of str to int
        Preferred channel per role (``"a"``, ``"b"``, ``"c"``, ``"cmd"``; :func:`sat.sw.memmap.default_placement`),
        used when an allocation names a role instead of a channel. Change it freely.
    """

    def __init__(self, transport: Transport, config: SATConfig | None = None, *, memory_bytes: int | None = None,
                 channels: int | None = None, use_irq: bool = True, poll_interval_s: float = 1e-3) -> None:
        self.transport = transport
        self.use_irq = use_irq
        self.poll_interval_s = poll_interval_s
        generic = register_map(config if config is not None else SATConfig())
        ident = transport.read32(generic.offset("ID"))
        if ident != SAT_ID:
            hint = ("the card does not answer (all ones): is the PCIe link up and the FPGA programmed?"
                    if ident == 0xFFFFFFFF else "this is not a SAT core: program a SAT bitstream")
            raise SATConfigMismatch(f"ID register reads 0x{ident:08x}, expected 0x{SAT_ID:08x} ('SAT1'): {hint} "
                                    f"(see docs/board.md)")
        version = transport.read32(generic.offset("VERSION"))
        if version >> 16 != VERSION >> 16 or (version >> 8 & 0xFF) < (VERSION >> 8 & 0xFF):
            raise SATConfigMismatch(f"the core implements register map version {_version(version)}, this driver "
                                    f"needs {_version(VERSION)} (same major, minor at least as new): rebuild the "
                                    f"bitstream from this checkout or use a matching driver")
        words = {name: transport.read32(generic.offset(name))
                 for name in ("CONFIG", "NM_SET_LO", "NM_SET_HI", "CONFIG_HASH", "CONFIG_BUFFERS")}
        nm_bits = words["NM_SET_LO"] | words["NM_SET_HI"] << 32
        if config is None:
            config = config_from_registers(words["CONFIG"], nm_bits, words["CONFIG_BUFFERS"])
            #: True when CONFIG_HASH confirms the reconstructed configuration (False: e.g. clock_hz differs).
            self.config_verified = int(config.digest()[:8], 16) == words["CONFIG_HASH"]
        else:
            expected = {name: generic[name].reset for name in words}
            if words != expected:
                diff = ", ".join(f"{n}=0x{words[n]:08x} (expected 0x{expected[n]:08x})" for n in words
                                 if words[n] != expected[n])
                try:
                    card = repr(config_from_registers(words["CONFIG"], nm_bits, words["CONFIG_BUFFERS"]))
                except SATConfigMismatch:
                    card = "an unknown build"
                raise SATConfigMismatch(
                    f"the core is a different SAT build: {diff}. The card runs {card}; this script expects "
                    f"{config!r} (digest {config.digest()}). Program the bitstream built from this SATConfig "
                    f"(its config JSON sits beside the bitstream), or open with config=None to use the card's build")
            self.config_verified = True
        self.config = config
        self.regmap: RegisterMap = register_map(config)
        from_core = memory_bytes is None
        if memory_bytes is None:
            memory_bytes = (transport.read32(generic.offset("MEM_SIZE_LO"))
                            | transport.read32(generic.offset("MEM_SIZE_HI")) << 32) or None
        if not isinstance(memory_bytes, int) or memory_bytes <= 0:
            raise ValueError("the device memory size is unknown: pass memory_bytes=... (bytes of device memory "
                             "the core's AXI master reaches)")
        if channels is None and not from_core:
            channels = 1        # a memory size of the caller's: one flat window unless channels are given too
        self.memory = self._memory_map(transport.read32(generic.offset("MEM_CHANNELS")), memory_bytes, channels)
        self.memory_bytes = memory_bytes
        self._mem = [_Allocator(end - base, base) for base, end in self.memory.windows()]
        self.placement: dict[str, int] = default_placement(self.memory.channels)
        self._pending: PendingRun | None = None
        #: RunResult of the last :meth:`conv`.
        self.last_run: RunResult | None = None
        #: The descriptors of the last command list started.
        self.last_descriptors: tuple[GemmDescriptor | ConvDescriptor, ...] = ()
        #: Bytes moved by DMA, host to card (``h2c``) and card to host (``c2h``), command lists included. Reset it
        #: freely.
        self.traffic: dict[str, dict[str, int]] = {"host": {"h2c": 0, "c2h": 0}}

    @staticmethod
    def _memory_map(word: int, memory_bytes: int, channels: int | None) -> MemoryMap:
        """The channel map from the ``MEM_CHANNELS`` register word (or ``channels``) and the memory size; when both
        come from the core (``channels`` None), they must agree."""
        fields = register_map(SATConfig())["MEM_CHANNELS"].unpack(word)
        from_core = channels is None
        if from_core:
            channels = fields["channels"] or 1
        try:
            memory = MemoryMap.split(memory_bytes, channels)
        except ValueError as exc:
            raise ValueError(f"device memory of {memory_bytes} bytes does not split into {channels} channel windows "
                             f"({exc}): pass memory_bytes and channels that match the card") from None
        if from_core and fields["window_log2"] and 1 << fields["window_log2"] != memory.window_bytes:
            raise SATConfigMismatch(f"MEM_CHANNELS reports {channels} channels of 2**{fields['window_log2']} bytes, "
                                    f"but MEM_SIZE ({memory_bytes} bytes) makes windows of {memory.window_bytes}: "
                                    f"the core's registers disagree; pass memory_bytes and channels explicitly")
        return memory

    # registers -------------------------------------------------------------------------------------------------

    def read_reg(self, name: str) -> int:
        """Read the register called ``name`` (see ``docs/driver.md``)."""
        return self.transport.read32(self.regmap.offset(name))

    def write_reg(self, name: str, value: int) -> None:
        """Write the register called ``name``."""
        self.transport.write32(self.regmap.offset(name), value)

    def dump_registers(self) -> dict[str, int]:
        """Every register by name (write-only ones read as 0), in offset order."""
        out = {}
        for r in sorted(self.regmap.registers, key=lambda r: r.offset):
            out[r.name] = 0 if r.access == "wo" else self.transport.read32(r.offset)
        return out

    @staticmethod
    def format_registers(regs: dict[str, int]) -> str:
        """A register dump as aligned ``NAME = 0x........`` lines (``ERROR_CODE`` also by name)."""
        lines = []
        for name, value in regs.items():
            extra = ""
            if name == "ERROR_CODE" and value in ErrorCode._value2member_map_:
                extra = f"  ({ErrorCode(value).name})"
            lines.append(f"  {name:<20} = 0x{value:08x}{extra}")
        return "\n".join(lines)

    def counters(self) -> dict[str, int]:
        """The 64-bit performance counters of the last command list (``_LO`` read first: it latches ``_HI``)."""
        out = {}
        for name, _ in PERF_COUNTERS:
            lo = self.read_reg(f"{name}_LO")
            out[name] = lo | (self.read_reg(f"{name}_HI") << 32)
        return out

    # device memory ---------------------------------------------------------------------------------------------

    def alloc(self, nbytes: int, align: int = 64, *, channel: int | str | None = None) -> int:
        """Reserve ``nbytes`` of device memory aligned to ``align`` bytes; returns the address.

        Parameters
        ----------
        nbytes : int
        align : int
            A power of two.
        channel : int, str or None
            Where: a channel number (only that channel: it fails when that channel is full), a role (``"a"``,
            ``"b"``, ``"c"``, ``"cmd"``: the channel :attr:`placement` gives it, else the others, most free first),
            or None (the channel with the most free bytes). An allocation never spans two channels.

        Raises
        ------
        SATMemoryError
            If no free block is large enough (the message says how much is left, per channel).
        ValueError
            For a negative size, an alignment that is not a power of two, or an unknown channel or role.
        """
        if nbytes < 0:
            raise ValueError(f"cannot allocate a negative size ({nbytes})")
        if align < 1 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align}")
        order, strict = self._channel_order(channel)
        for k in order:
            addr = self._mem[k].alloc(nbytes, align)
            if addr is not None:
                return addr
        what = f"{max(int(nbytes), 1)} bytes ({align}-byte aligned)"
        if strict:
            m = self._mem[order[0]]
            raise SATMemoryError(
                f"channel {order[0]} is full: cannot allocate {what} on it; {m.free_bytes} of {m.size} bytes are free "
                f"there, its largest free block is {m.largest_free} bytes (free per channel: {self._usage()}): free "
                f"tensors on channel {order[0]} (SATDevice.free), choose another channel, or pass channel=None to "
                f"use any")
        raise SATMemoryError(
            f"device memory exhausted: cannot allocate {what}; {self.free_bytes} of {self.memory_bytes} bytes are "
            f"free, the largest free block is {max(m.largest_free for m in self._mem)} bytes"
            + (f" (free per channel: {self._usage()})" if len(self._mem) > 1 else "")
            + ": free tensors you no longer need (SATDevice.free) or use smaller batches")

    def _channel_order(self, channel: int | str | None) -> tuple[list[int], bool]:
        """Channels to try for an allocation, and whether only the first one may be used."""
        by_free = sorted(range(len(self._mem)), key=lambda k: (-self._mem[k].free_bytes, k))
        if channel is None:
            return by_free, False
        if isinstance(channel, str):
            if channel not in self.placement:
                raise ValueError(f"unknown role {channel!r}: roles are {sorted(self.placement)} (or pass a channel "
                                 f"number 0..{self.memory.channels - 1}, or None)")
            first = self.memory.check_channel(self.placement[channel])
            return [first] + [k for k in by_free if k != first], False
        return [self.memory.check_channel(channel)], True

    def _usage(self) -> str:
        return ", ".join(f"C{k} {m.free_bytes}" for k, m in enumerate(self._mem))

    def free(self, what: int | Tensor | SparseWeights) -> None:
        """Release an allocation (by address, :class:`Tensor` or :class:`SparseWeights`).

        Raises
        ------
        SATMemoryError
            If the address is not a live allocation.
        """
        addr = what if isinstance(what, int) else what.addr
        if not 0 <= addr < self.memory.size:
            raise SATMemoryError(f"0x{addr:x} is not the address of an allocation (outside device memory)")
        self._mem[self.memory.channel_of(addr)].free(addr)

    @property
    def free_bytes(self) -> int:
        """Bytes of device memory not allocated (all channels)."""
        return sum(m.free_bytes for m in self._mem)

    def free_bytes_on(self, channel: int) -> int:
        """Bytes not allocated on one channel."""
        return self._mem[self.memory.check_channel(channel)].free_bytes

    def channel_of(self, what: int | Tensor | SparseWeights) -> int:
        """The memory channel an address, tensor or weight upload lives on."""
        return self.memory.channel_of(what if isinstance(what, int) else what.addr)

    def _dma_write(self, addr: int, data) -> None:
        self.traffic["host"]["h2c"] += len(data) if isinstance(data, (bytes, bytearray)) else int(
            np.asarray(data).nbytes)
        self.transport.dma_write(addr, data)

    def _dma_read(self, addr: int, nbytes: int):
        self.traffic["host"]["c2h"] += int(nbytes)
        return self.transport.dma_read(addr, nbytes)

    def _operand_fmt(self, fmt: str | None) -> str:
        name = get_format(fmt if fmt is not None else self.config.fmt).name
        if name != self.config.fmt:
            raise ValueError(f"this core was built for {self.config.fmt} operands, not {name}: use a "
                             f"SATConfig(fmt={name!r}) build or convert the data")
        return name

    def alloc_tensor(self, shape: tuple[int, int], dtype: OperandDtype = "fp32", *,
                     channel: int | str | None = None) -> Tensor:
        """Reserve a row-major ``shape`` matrix (64-byte aligned, rows packed) without writing it, on ``channel``
        (see :meth:`alloc`)."""
        rows, cols = (int(s) for s in shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"tensor shape must be positive, got {shape}")
        item = 4 if dtype == "fp32" else 2
        if dtype != "fp32":
            dtype = self._operand_fmt(dtype)
        return Tensor(self.alloc(rows * cols * item, channel=channel), (rows, cols), dtype, cols * item)

    def write_tensor(self, x: np.ndarray, *, dtype: OperandDtype | None = None, out: Tensor | None = None,
                     channel: int | str | None = None) -> Tensor:
        """Encode a 2-D array and copy it to device memory.

        Parameters
        ----------
        x : array (rows, cols)
            Values (a 1-D array is one row).
        dtype : "fp16", "bf16" or "fp32", optional
            Storage format; default the core's operand format (values are rounded with ``numerics.encode``).
        out : Tensor, optional
            Write into this tensor (same shape and dtype) instead of allocating one.
        channel : int, str or None
            Where to allocate it (see :meth:`alloc`): e.g. ``"a"`` for a left operand, ``"b"`` for a right one.

        Raises
        ------
        ValueError
            For values that are not real numbers (complex, strings, objects), a shape mismatch with ``out`` or an
            operand format the core was not built for.
        """
        x = real_array(x, "the tensor").astype(np.float32, copy=False)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"write_tensor needs a 1-D or 2-D array, got shape {x.shape}")
        dtype = out.dtype if out is not None else (dtype or self.config.fmt)
        if out is None:
            out = self.alloc_tensor(x.shape, dtype, channel=channel)
        elif out.shape != x.shape:
            raise ValueError(f"array shape {x.shape} does not match the tensor's {out.shape}")
        raw = np.ascontiguousarray(x.astype("<f4") if dtype == "fp32" else encode(x, out.dtype).astype("<u2"))
        self._write_rows(out, raw.view(np.uint8).reshape(x.shape[0], -1))
        return out

    def _write_rows(self, t: Tensor, rows: np.ndarray) -> None:
        if t.stride == rows.shape[1]:
            self._dma_write(t.addr, np.ascontiguousarray(rows).reshape(-1))
        else:
            for i, row in enumerate(rows):
                self._dma_write(t.addr + i * t.stride, np.ascontiguousarray(row))

    def read_tensor(self, t: Tensor) -> np.ndarray:
        """Copy a tensor back as float32 (FP32 results bit for bit; operands decoded)."""
        rows, cols = t.shape
        raw = np.frombuffer(self._dma_read(t.addr, t.nbytes), dtype=np.uint8)
        if t.stride != cols * t.itemsize:
            raw = np.lib.stride_tricks.as_strided(raw, (rows, cols * t.itemsize), (t.stride, 1))
        raw = np.ascontiguousarray(raw).reshape(rows, cols * t.itemsize)
        if t.dtype == "fp32":
            return raw.view("<u4").astype(np.uint32).view(np.float32).reshape(rows, cols)
        return decode(raw.view("<u2").astype(np.uint16), t.dtype).reshape(rows, cols)

    def upload_operand(self, op: NMOperand, which: str = "", *, channel: int | str | None = "b") -> SparseWeights:
        """Pack a compressed operand (``nmformat.pack``) into device memory (64-byte aligned), by default on the
        channel of right operands (``"b"``, see :meth:`alloc`).

        Raises
        ------
        ValueError
            If ``op.n:op.m`` is not built into this core.
        """
        if (op.n, op.m) not in self.config.nm_set:
            raise ValueError(f"{op.n}:{op.m} is not built into this core (nm_set {self.config.nm_set}): run the "
                             f"pass dense or use a build that includes it")
        data = pack(op, self.config.fmt)
        addr = self.alloc(data.size, 64, channel=channel)
        self._dma_write(addr, data)
        return SparseWeights(addr, op.n, op.m, op.k, op.cols, int(data.size), self.config.fmt, which)

    def upload_weights(self, w: np.ndarray, n: int, m: int, which: Literal["ff", "bp"] = "ff",
                       mask: np.ndarray | None = None, *, channel: int | str | None = "b") -> SparseWeights:
        """Pre-generate and upload the compressed FF or BP copy of a weight matrix ``W`` (``C_out x K``).

        Parameters
        ----------
        w : array (C_out, K)
            FP32 master weights.
        n, m : int
            The N:M pattern (must be in the build's ``nm_set``).
        which : "ff" or "bp"
            ``"ff"``: ``compress_ff`` (pruned along ``K``, for :meth:`ff`); ``"bp"``: ``compress_bp`` (along
            ``C_out``, for :meth:`bp`).
        mask : bool array (C_out, K), optional
            The selection to use instead of the default N:M mask.
        channel : int, str or None
            Where (see :meth:`alloc`); default the right operands' channel.

        Raises
        ------
        ValueError
            For an unknown ``which`` or an N:M pattern the core does not support.
        """
        if which == "ff":
            op = compress_ff(w, n, m, mask)
        elif which == "bp":
            op = compress_bp(w, n, m, mask)
        else:
            raise ValueError(f"which must be 'ff' or 'bp', not {which!r}")
        return self.upload_operand(op, which, channel=channel)

    def upload_weights_dense(self, w: np.ndarray, *, channel: int | str | None = "b") -> Tensor:
        """Upload ``W`` (``C_out x K``) dense, for the dense variants of :meth:`ff` and :meth:`bp` (by default on
        the right operands' channel)."""
        return self.write_tensor(w, channel=channel)

    # descriptors -----------------------------------------------------------------------------------------------

    def gemm_descriptor(self, a: Tensor, b: Tensor | SparseWeights, c: Tensor, *, a_trans: bool = False,
                        b_trans: bool = False, irq: bool = False, tag: int = 0) -> GemmDescriptor:
        """The descriptor of ``C = op(A) . op(B)`` on tensors already in device memory.

        Parameters
        ----------
        a : Tensor
            Stored ``rows x K`` (or ``K x rows`` with ``a_trans``).
        b : Tensor or SparseWeights
            Dense: stored ``K x cols`` (or ``cols x K`` with ``b_trans``); sparse: a ``K x cols`` packed operand.
        c : Tensor
            ``rows x cols`` result: an ``"fp32"`` tensor, or one in the operand format for narrow results (the
            descriptor's RESULT field: each FP32 chain result rounded once, ``numerics.round_result``).

        Raises
        ------
        ValueError
            If the shapes or formats do not fit together, or ``b_trans`` is combined with a sparse ``b``.
        """
        self._operand_fmt(a.dtype)
        rows, red = (a.shape[1], a.shape[0]) if a_trans else a.shape
        flags = (FLAG_A_TRANS if a_trans else 0) | (FLAG_IRQ if irq else 0)
        if isinstance(b, SparseWeights):
            if b_trans:
                raise ValueError("a sparse operand cannot be transposed: pack the transposed matrix instead")
            self._operand_fmt(b.fmt)
            b_red, cols, n, m, b_stride = b.k, b.cols, b.n, b.m, 0
            flags |= FLAG_SPARSE
        else:
            self._operand_fmt(b.dtype)
            b_red, cols = (b.shape[1], b.shape[0]) if b_trans else b.shape
            n = m = 0
            b_stride = b.stride
            flags |= FLAG_B_TRANS if b_trans else 0
        if b_red != red:
            raise ValueError(f"reduction lengths differ: A gives K={red}, B gives K={b_red}")
        if c.dtype not in ("fp32", self.config.fmt) or c.shape != (rows, cols):
            raise ValueError(f"C must be an fp32 or {self.config.fmt} tensor of shape {(rows, cols)}, got {c.dtype} "
                             f"{c.shape}")
        flags |= result_flags(c.dtype, self.config.fmt)
        return GemmDescriptor(rows=rows, red=red, cols=cols, a_addr=a.addr, b_addr=b.addr, c_addr=c.addr,
                              a_stride=a.stride, b_stride=b_stride, c_stride=c.stride, n=n, m=m, flags=flags,
                              tag=tag)

    def ff_descriptor(self, x: Tensor, w: Tensor | SparseWeights, y: Tensor, tag: int = 0) -> GemmDescriptor:
        """FF ``Y = X . W_ff^T``: ``x`` (B x K); ``w`` an ``"ff"`` upload, or dense ``W`` (C_out x K, B_TRANS)."""
        if isinstance(w, SparseWeights) and w.which == "bp":
            raise ValueError("FF needs the FF copy of the weights (upload_weights(..., which='ff'))")
        return self.gemm_descriptor(x, w, y, b_trans=isinstance(w, Tensor), tag=tag)

    def bp_descriptor(self, dy: Tensor, w: Tensor | SparseWeights, dx: Tensor, tag: int = 0) -> GemmDescriptor:
        """BP ``dX = dY . W_bp``: ``dy`` (B x C_out); ``w`` a ``"bp"`` upload, or dense ``W`` (C_out x K)."""
        if isinstance(w, SparseWeights) and w.which == "ff":
            raise ValueError("BP needs the BP copy of the weights (upload_weights(..., which='bp'))")
        return self.gemm_descriptor(dy, w, dx, tag=tag)

    def wu_descriptor(self, dy: Tensor, x: Tensor, dw: Tensor, tag: int = 0) -> GemmDescriptor:
        """WU ``dW = dY^T . X``: ``dy`` (B x C_out) read with A_TRANS, ``x`` (B x K) dense."""
        return self.gemm_descriptor(dy, x, dw, a_trans=True, tag=tag)

    def _run_one(self, make, rows: int, cols: int, out: Tensor | None, timeout_s: float,
                 out_fmt: str = "fp32") -> Tensor:
        c = out if out is not None else self.alloc_tensor((rows, cols), out_fmt, channel="c")
        try:
            self.run([make(c)], timeout_s)
        except BaseException:
            if out is None:
                self.free(c)
            raise
        return c

    def gemm(self, a: Tensor, b: Tensor | SparseWeights, c: Tensor | None = None, *, a_trans: bool = False,
             b_trans: bool = False, out_fmt: str = "fp32", timeout_s: float = 10.0) -> Tensor:
        """Run one GEMM (see :meth:`gemm_descriptor`); allocates ``c`` (``out_fmt``: "fp32", or the operand format
        for narrow results) when not given and returns it."""
        rows = a.shape[1] if a_trans else a.shape[0]
        cols = b.cols if isinstance(b, SparseWeights) else (b.shape[0] if b_trans else b.shape[1])
        return self._run_one(lambda c: self.gemm_descriptor(a, b, c, a_trans=a_trans, b_trans=b_trans),
                             rows, cols, c, timeout_s, out_fmt)

    def ff(self, x: Tensor, w: Tensor | SparseWeights, y: Tensor | None = None, timeout_s: float = 10.0, *,
           out_fmt: str = "fp32") -> Tensor:
        """Run the FF GEMM of a layer (see :meth:`ff_descriptor`); returns ``Y`` (B x C_out, FP32 or, with
        ``out_fmt`` the operand format, narrow)."""
        c_out = w.cols if isinstance(w, SparseWeights) else w.shape[0]
        return self._run_one(lambda c: self.ff_descriptor(x, w, c), x.shape[0], c_out, y, timeout_s, out_fmt)

    def bp(self, dy: Tensor, w: Tensor | SparseWeights, dx: Tensor | None = None, timeout_s: float = 10.0, *,
           out_fmt: str = "fp32") -> Tensor:
        """Run the BP GEMM of a layer (see :meth:`bp_descriptor`); returns ``dX`` (B x K, FP32 or, with
        ``out_fmt`` the operand format, narrow)."""
        k = w.cols if isinstance(w, SparseWeights) else w.shape[1]
        return self._run_one(lambda c: self.bp_descriptor(dy, w, c), dy.shape[0], k, dx, timeout_s, out_fmt)

    def wu(self, dy: Tensor, x: Tensor, dw: Tensor | None = None, timeout_s: float = 10.0) -> Tensor:
        """Run the WU GEMM of a layer (see :meth:`wu_descriptor`); returns ``dW`` (C_out x K, FP32)."""
        return self._run_one(lambda c: self.wu_descriptor(dy, x, c), dy.shape[1], x.shape[1], dw, timeout_s)

    # convolutions --------------------------------------------------------------------------------------------

    def write_nhwc(self, x: np.ndarray, *, dtype: OperandDtype | None = None,
                   channel: int | str | None = "a") -> Tensor:
        """Copy a channels-last tensor ``(B, H, W, C)`` (or any ``(..., C)``) to device memory as the row-major
        matrix ``(B*H*W, C)`` the conv passes read; default dtype the core's operand format, default channel that
        of left operands (see :meth:`alloc`)."""
        x = np.asarray(x, np.float32)
        if x.ndim < 1:
            raise ValueError("write_nhwc needs an array with a channel axis")
        return self.write_tensor(x.reshape(-1, x.shape[-1]), dtype=dtype, channel=channel)

    @staticmethod
    def conv_chunks(pass_: str, shape: ConvShape, n: int = 0, m: int = 0,
                    k_limit: int | KLimit | None = None) -> list[tuple[int, int]]:
        """The K chunks of a conv pass's lowered reduction (``sat.sw.bdwp.k_chunks``; SPEC 1.1): FF over ``K``,
        BP over ``K'`` (``co_pad(m)`` channels per tap), WU over ``B*OH*OW``; ``n = m = 0`` for dense.
        Upload sparse weights one operand per chunk (``sat.sw.bdwp.sparse_chunk``)."""
        from ..bdwp import k_chunks

        red = {"ff": shape.k, "bp": shape.bp_k(m or 1), "wu": shape.pixels}[pass_]
        if k_limit is None:
            return [(0, red)]
        limit = k_limit if isinstance(k_limit, int) else int(k_limit(n, m))
        return k_chunks(red, limit, m or 1)

    def conv(self, pass_: str, shape: ConvShape, a: Tensor, b: Tensor | SparseWeights | Sequence[SparseWeights],
             out: Tensor | None = None, *, k_limit: int | KLimit | None = None, out_fmt: str | None = None,
             timeout_s: float = 10.0) -> Tensor:
        """One pass of a convolution on tensors resident in device memory (SPEC section 1.1); returns ``out``.

        Activations are channels-last matrices (:meth:`write_nhwc`): ``X`` is ``B*H*W x C_in``, ``Y`` and ``dY``
        ``B*OH*OW x C_out``. A linear layer is ``ConvShape.linear(B, C_in, C_out)``.

        * ``"ff"``: ``a`` = X, ``b`` = ``W_ff^T`` (``K x C_out``: dense operand tensor, or the FF upload of
          :meth:`upload_weights` / ``upload_operand(sat.sw.conv.ff_operand(...))``); ``out`` = Y, FP32.
        * ``"bp"``: ``a`` = dY, ``b`` = ``W_bp`` as ``K' x C_in`` (``sat.sw.conv.bp_operand``: dense, or N:M along
          ``K'``); ``out`` = dX (``B*H*W x C_in``), FP32.
        * ``"wu"``: ``a`` = dY, ``b`` = X; ``out`` = dW (``C_out x K``, ``K = (kh, kw, c_in)``), FP32.

        Reductions longer than ``k_limit(n, m)`` (the GEMM unit's :meth:`DeviceBackend.k_limit`) run in the
        chunks of :meth:`conv_chunks`, whose FP32 partials the host adds in chunk order; a sparse ``b`` is then
        one uploaded operand per chunk. The result equals ``sat.sw.conv.conv_ff`` / ``conv_bp`` / ``conv_wu`` on
        ``GoldenBackend(k_limit=k_limit)`` bit for bit.

        Narrow results: ``out`` (or ``out_fmt``, when ``out`` is not given) in the operand format. A single
        descriptor has the core round each result (the RESULT field); chunk partials stay FP32 and the host rounds
        their sum once (``numerics.round_result``): the same bits either way.

        Each chunk is one convolution descriptor (:meth:`conv_descriptor`): the core reads the channels-last
        tensors and lowers them on the fly; the host lowers nothing.

        Raises
        ------
        ValueError
            For an unknown pass, or tensors whose shapes or formats do not fit ``shape``.
        """
        if pass_ not in ("ff", "bp", "wu"):
            raise ValueError(f"a convolution pass is one of 'ff', 'bp', 'wu', not {pass_!r}")
        parts = list(b) if isinstance(b, (list, tuple)) else [b]
        first = parts[0]
        n, m = (first.n, first.m) if isinstance(first, SparseWeights) else (0, 0)
        a_rows, a_cols = {"ff": (shape.in_pixels, shape.c_in), "bp": (shape.pixels, shape.c_out),
                          "wu": (shape.pixels, shape.c_out)}[pass_]
        b_shape = {"ff": (shape.k, shape.c_out), "bp": (shape.bp_k(m or 1), shape.c_in),
                   "wu": (shape.in_pixels, shape.c_in)}[pass_]
        c_shape = {"ff": (shape.pixels, shape.c_out), "bp": (shape.in_pixels, shape.c_in),
                   "wu": (shape.c_out, shape.k)}[pass_]
        if a.shape != (a_rows, a_cols):
            raise ValueError(f"conv {pass_}: the activation tensor is {a.shape}, {shape} needs {(a_rows, a_cols)}")
        whole = (sum(p.k for p in parts), first.cols) if isinstance(first, SparseWeights) else first.shape
        if whole != b_shape:
            raise ValueError(f"conv {pass_}: the second operand is {whole}, {shape} needs {b_shape}")
        if pass_ == "wu" and isinstance(first, SparseWeights):
            raise ValueError("conv wu is dense: pass X as a tensor, not packed weights")
        out_fmt = out.dtype if out is not None else (out_fmt or "fp32")
        result_flags(out_fmt, self.config.fmt)              # fp32 or the operand format
        if out is not None and out.shape != c_shape:
            raise ValueError(f"conv {pass_}: out must be a tensor of shape {c_shape}, got {out.shape}")
        chunks = self.conv_chunks(pass_, shape, n, m, k_limit)
        if isinstance(first, SparseWeights):
            if len(parts) != len(chunks) or any(p.k != k1 - k0 for p, (k0, k1) in zip(parts, chunks, strict=False)):
                raise ValueError(f"conv {pass_}: the sparse weights come as {[p.k for p in parts]} rows, the "
                                 f"reduction runs in chunks {chunks}: upload one operand per chunk "
                                 "(SATDevice.conv_chunks)")
        elif len(parts) != 1:
            raise ValueError(f"conv {pass_}: a dense operand is one tensor, not {len(parts)}")
        c = out if out is not None else self.alloc_tensor(c_shape, out_fmt, channel="c")
        try:
            self._conv_on_core(pass_, shape, a, parts, c, chunks, timeout_s)
        except BaseException:
            if out is None:
                self.free(c)
            raise
        return c

    def conv_descriptor(self, pass_: str, shape: ConvShape, a: Tensor, b: Tensor | SparseWeights, c: Tensor,
                        k0: int = 0, k1: int | None = None, *, irq: bool = False, tag: int = 0) -> ConvDescriptor:
        """The descriptor of one convolution pass (or its reduction chunk ``[k0, k1)``) on resident tensors.

        ``a``, ``b``, ``c`` as in :meth:`conv`; for a chunk, ``b`` is that chunk's operand (a sparse upload of its
        own, or the whole dense operand, whose chunk rows this method addresses) and ``c`` its partial result.

        Raises
        ------
        ValueError
            If a tensor is not packed row-major (the core reads channels-last tensors without strides).
        """
        sparse = isinstance(b, SparseWeights)
        n, m = (b.n, b.m) if sparse else (0, 0)
        for name, t in (("activation", a), ("result", c)) + ((("operand", b),) if not sparse else ()):
            if t.stride != t.shape[1] * t.itemsize:
                raise ValueError(f"conv {pass_}: the {name} tensor has {t.stride}-byte rows of {t.shape[1]} "
                                 "elements: the core reads packed channels-last tensors")
        d = ConvDescriptor(pass_, batch=shape.batch, height=shape.height, width=shape.width, c_in=shape.c_in,
                           c_out=shape.c_out, kh=shape.kh, kw=shape.kw, stride=shape.stride, padding=shape.padding,
                           a_addr=a.addr, b_addr=b.addr, c_addr=c.addr, k0=k0, n=n, m=m,
                           flags=(FLAG_SPARSE if sparse else 0) | (FLAG_IRQ if irq else 0)
                           | result_flags(c.dtype, self.config.fmt), tag=tag)
        k1 = d.reduction if k1 is None else k1
        d = d.replace(red=k1 - k0)
        if pass_ == "wu":                                   # dY's pixels k0.. (A^T lines)
            d = d.replace(a_addr=a.addr + k0 * a.stride)
        elif not sparse:                                    # the chunk's rows of the dense weight operand
            d = d.replace(b_addr=b.addr + k0 * b.stride)
        return d

    def _conv_on_core(self, pass_: str, shape: ConvShape, a: Tensor, parts: list, c: Tensor,
                      chunks: list[tuple[int, int]], timeout_s: float) -> None:
        """One convolution descriptor per K chunk (the core lowers the operand itself, ``docs/conv.md``); the host
        adds the chunks' FP32 partials in chunk order (and rounds the sum to a narrow ``c``)."""
        from ..backend import sum_partials

        first = parts[0]
        live: list[Tensor] = []
        try:
            outs, descs = [], []
            for j, (k0, k1) in enumerate(chunks):
                cj = c if len(chunks) == 1 else self.alloc_tensor(c.shape, channel="c")
                if len(chunks) > 1:
                    live.append(cj)
                outs.append(cj)
                bj = parts[j] if isinstance(first, SparseWeights) else first
                descs.append(self.conv_descriptor(pass_, shape, a, bj, cj, k0, k1, tag=j))
            self.last_run = self.run(descs, timeout_s)
            if len(chunks) > 1:
                self.write_tensor(sum_partials(self.read_tensor(p) for p in outs), out=c)
        finally:
            for t in live:
                self.free(t)

    # command lists ---------------------------------------------------------------------------------------------

    def abort(self) -> None:
        """Ask the core to stop the running list (it reports ``ERR_ABORTED``)."""
        self.write_reg("CONTROL", CONTROL_ABORT)

    def start(self, descriptors: Sequence[GemmDescriptor]) -> PendingRun:
        """Write a command list to fresh device memory and start it; returns at once.

        While the list runs the host may keep moving data (e.g. upload the next layer's weights); :meth:`wait`
        collects the result. One list runs at a time.

        Parameters
        ----------
        descriptors : sequence of GemmDescriptor
            Executed in order.

        Raises
        ------
        SATError
            If a list started by this device has not been waited for.
        ValueError
            For an empty list.
        """
        if self._pending is not None:
            raise SATError("a command list is still running: wait() for it (or abort() and wait()) before "
                           "starting another")
        descriptors = list(descriptors)
        if not descriptors:
            raise ValueError("a command list needs at least one descriptor")
        raw = encode_list(descriptors)
        addr = self.alloc(len(raw), DESCRIPTOR_BYTES, channel="cmd")
        try:
            self._dma_write(addr, raw)
            self.write_reg("CONTROL", CONTROL_CLEAR)
            self.write_reg("IRQ_STATUS", IRQ_DONE | IRQ_ERROR)
            self.write_reg("IRQ_ENABLE", (IRQ_DONE | IRQ_ERROR) if self.use_irq else 0)
            self.write_reg("CMD_ADDR_LO", addr & 0xFFFFFFFF)
            self.write_reg("CMD_ADDR_HI", addr >> 32)
            self.write_reg("CMD_COUNT", len(descriptors))
        except BaseException:
            self.free(addr)
            raise
        self._pending = PendingRun(addr, tuple(descriptors))
        self.last_descriptors = self._pending.descriptors
        self.write_reg("CONTROL", CONTROL_START)
        return self._pending

    def wait(self, pending: PendingRun, timeout_s: float = 10.0) -> RunResult:
        """Wait for a list from :meth:`start` to finish.

        Parameters
        ----------
        pending : PendingRun
            What :meth:`start` returned.
        timeout_s : float
            Give up after this many seconds.

        Returns
        -------
        RunResult
            ``CMD_DONE``, ``LAST_TAG`` and the performance counters.

        Raises
        ------
        SATDeviceError
            If the core reports an error (``code``, ``index`` and a message naming the cause).
        SATTimeout
            If the list has not finished after ``timeout_s``. The message holds a register dump; the list stays
            running and allocated, so ``wait`` may be called again (or :meth:`abort`, then ``wait``).
        SATError
            If ``pending`` is not the running list.
        """
        if pending is not self._pending:
            raise SATError("this command list is not running on the device (already waited for?)")
        status = self._wait(len(pending.descriptors), timeout_s)
        self._pending = None
        try:
            self.write_reg("IRQ_STATUS", IRQ_DONE | IRQ_ERROR)
            if status & STATUS_ERROR:
                raise self._error(list(pending.descriptors))
            return RunResult(cmd_done=self.read_reg("CMD_DONE"), last_tag=self.read_reg("LAST_TAG"),
                             counters=self.counters())
        finally:
            self.free(pending.addr)

    @property
    def pending(self) -> PendingRun | None:
        """The list started and not yet waited for (e.g. after a :class:`SATTimeout`), or None."""
        return self._pending

    def run(self, descriptors: Sequence[GemmDescriptor], timeout_s: float = 10.0) -> RunResult:
        """Run a command list and wait for it: :meth:`start` then :meth:`wait` (same parameters and errors)."""
        return self.wait(self.start(descriptors), timeout_s)

    def _finished(self) -> int | None:
        status = self.read_reg("STATUS")
        return status if not status & STATUS_BUSY and status & (STATUS_DONE | STATUS_ERROR) else None

    def _wait(self, count: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self._finished()
            if status is not None:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.use_irq:
                if self.transport.wait_irq(remaining):
                    # Re-arm, then look again. An event is a rising edge of the core's interrupt line (XDMA sends
                    # its MSI on the edge of usr_irq_req), and the line stays high while any IRQ_STATUS bit is set:
                    # after a descriptor with FLAG_IRQ in the middle of the list, the end of the list would make
                    # no new edge. Acknowledging drops the line, so the next IRQ_STATUS bit raises it again; a
                    # list that ended before the acknowledgement shows in STATUS at the top of the loop.
                    self.write_reg("IRQ_STATUS", IRQ_DONE | IRQ_ERROR)
            else:
                time.sleep(min(self.poll_interval_s, remaining))
        regs = self.dump_registers()
        raise SATTimeout(
            f"the command list ({count} descriptors) did not finish within {timeout_s} s: CMD_DONE="
            f"{regs['CMD_DONE']}, STATUS=0x{regs['STATUS']:x}. "
            + ("No interrupt arrived: is the XDMA driver using MSI (interrupt_mode=1, docs/board.md)? Or open the "
               "device with use_irq=False to poll STATUS. " if self.use_irq else "")
            + "The list may still be running: wait(device.pending) again, or abort() and then wait. Registers:\n"
            + self.format_registers(regs), regs)

    def _error(self, descriptors: list[GemmDescriptor]) -> SATDeviceError:
        code = self.read_reg("ERROR_CODE")
        index = self.read_reg("ERROR_INDEX")
        name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else f"unknown code {code}"
        detail = ""
        if code == ErrorCode.BAD_COUNT:
            detail = "CMD_COUNT was 0 or CMD_ADDR not 64-byte aligned"
        elif code == ErrorCode.BUSY:
            detail = "START arrived while a list was running (another process using the core?)"
        elif code in (ErrorCode.AXI_READ, ErrorCode.AXI_WRITE):
            detail = "an AXI error answered a device-memory access: check the addresses against device memory"
        elif code == ErrorCode.ABORTED:
            detail = "the list was aborted"
        elif 0 <= index < len(descriptors):
            try:
                descriptors[index].validate(self.config, self.memory_bytes)
            except DescriptorError as e:
                detail = str(e)
            else:
                if code == ErrorCode.BAD_SHAPE:
                    detail = ("the reduction does not fit the core's on-chip buffers: split K into chunks "
                              "(sat.sw.tiling.max_reduction gives the limit; see docs/system.md)")
                elif code == ErrorCode.BAD_OPERAND:
                    d = descriptors[index]
                    detail = (f"the packed N:M operand B at 0x{d.b_addr:x} is malformed (an in-group index >= "
                              f"M={d.m}, indices not ascending within a group, or nonzero padding): write it with "
                              f"upload_weights / upload_operand (sat.sw.nmformat.pack), and check that nothing "
                              f"overwrote it (see docs/format.md)")
                    reason = getattr(self.transport, "last_error_message", "")
                    if reason:
                        detail += f"; the device says: {reason}"
                else:
                    detail = "the host-side check accepts this descriptor: the core and the driver disagree"
        tag = f" (tag {descriptors[index].tag})" if 0 <= index < len(descriptors) else ""
        return SATDeviceError(code, index, f"descriptor {index}{tag} failed with ERR_{name} ({code}): {detail}")

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()

    def __enter__(self) -> SATDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SATDevice({self.transport!r}, {self.config!r})"


def _version(v: int) -> str:
    return f"{v >> 16 & 0xFF}.{v >> 8 & 0xFF}.{v & 0xFF}"


class DeviceBackend:
    """A :class:`~sat.sw.bdwp.GemmBackend` that runs every GEMM on a :class:`SATDevice`.

    Each call uploads the operands, runs one descriptor per K chunk, reads ``C`` back and frees the memory, so
    results are bit-identical to :class:`~sat.sw.bdwp.GoldenBackend` (with the same ``k_limit``) on a correct
    core.

    A reduction longer than the GEMM unit's buffers hold (:meth:`k_limit`: :func:`sat.sw.tiling.max_reduction`
    of the device's configuration, whose buffer depths the core reports in ``CONFIG_BUFFERS``) is split into chunks
    (:func:`sat.sw.bdwp.k_chunks`, on N:M group boundaries for sparse operands), each chunk runs as its own
    descriptor (all of one GEMM in one command list) and the FP32 partials are added on the host in chunk order
    with the array's adder semantics (:func:`sat.sw.bdwp.sum_partials`). ``GoldenBackend(k_limit=backend.k_limit)``
    splits identically.

    Parameters
    ----------
    device : SATDevice
    timeout_s : float
        Per-GEMM timeout.
    """

    name = "device"

    def __init__(self, device: SATDevice, timeout_s: float = 60.0) -> None:
        self.device = device
        self.timeout_s = timeout_s
        #: RunResult of the most recent GEMM.
        self.last_result: RunResult | None = None
        #: GEMMs run, descriptors run (one per K chunk), descriptors with narrow results and core cycles
        #: (``CYCLES``) summed over all GEMMs.
        self.stats = {"gemms": 0, "descriptors": 0, "narrow": 0, "cycles": 0}

    def k_limit(self, n: int = 0, m: int = 0) -> int:
        """Longest reduction of one descriptor: dense (``n = m = 0``) or ``n:m`` sparse."""
        from ..tiling import max_reduction

        return max_reduction(self.device.config, n, m)

    def _check(self, a: np.ndarray, k: int, cols: int, fmt: str) -> None:
        self.device._operand_fmt(fmt)
        if a.ndim != 2 or a.shape[1] != k:
            raise ValueError(f"GEMM operands do not fit: a is {a.shape}, B is {k} x {cols}")
        for name, value in (("rows", a.shape[0]), ("K", k), ("cols", cols)):
            if value > MAX_DIM:
                raise ValueError(f"{name}={value} exceeds the core's limit {MAX_DIM}: tile the GEMM")

    def _run(self, a: np.ndarray, chunks: list[tuple[int, int]], b_upload, rows: int,
             cols: int) -> np.ndarray:
        from ..backend import sum_partials

        dev = self.device
        live: list[Tensor | SparseWeights] = []
        try:
            descs, outs = [], []
            for k0, k1 in chunks:
                at = dev.write_tensor(np.ascontiguousarray(a[:, k0:k1]) if len(chunks) > 1 else a, channel="a")
                live.append(at)
                bt = b_upload(k0, k1)
                live.append(bt)
                c = dev.alloc_tensor((rows, cols), channel="c")
                live.append(c)
                descs.append(dev.gemm_descriptor(at, bt, c))
                outs.append(c)
            self.last_result = dev.run(descs, self.timeout_s)
            self.stats["gemms"] += 1
            self.stats["descriptors"] += len(descs)
            self.stats["cycles"] += int(self.last_result.counters.get("CYCLES", 0))
            parts = [dev.read_tensor(c) for c in outs]
            return parts[0] if len(parts) == 1 else sum_partials(parts)
        finally:
            for t in live:
                dev.free(t)

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        """``a @ b`` on the device (``a`` rows x K, ``b`` K x cols, values already quantized to ``fmt``)."""
        from ..backend import k_chunks

        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if b.ndim != 2:
            raise ValueError(f"b must be 2-D, got shape {b.shape}")
        self._check(a, b.shape[0], b.shape[1], fmt)
        if 0 in a.shape or 0 in b.shape:
            return np.zeros((a.shape[0], b.shape[1]), np.float32)
        chunks = k_chunks(b.shape[0], self.k_limit())
        return self._run(a, chunks, lambda k0, k1: self.device.write_tensor(
            b if len(chunks) == 1 else np.ascontiguousarray(b[k0:k1]), channel="b"), a.shape[0], b.shape[1])

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        """``a @ B`` on the device with ``B`` uploaded in the packed N:M format."""
        from ..backend import k_chunks, sparse_chunk

        a = np.asarray(a, np.float32)
        self._check(a, b.k, b.cols, fmt)
        if a.shape[0] == 0:
            return np.zeros((0, b.cols), np.float32)
        chunks = k_chunks(b.k, self.k_limit(b.n, b.m), b.m)
        return self._run(a, chunks, lambda k0, k1: self.device.upload_operand(
            b if len(chunks) == 1 else sparse_chunk(b, k0, k1)), a.shape[0], b.cols)

    # the conv / linear pass entry point (sat.sw.conv.conv_pass uses it) ----------------------------------------

    def put(self, x: np.ndarray, fmt: str) -> Tensor:
        """Keep an activation tensor (values in operand format ``fmt``, channels last) resident in device memory;
        pass the handle to :meth:`conv` as often as needed, then :meth:`release` it."""
        return self.device.write_nhwc(np.asarray(x, np.float32), dtype=self.device._operand_fmt(fmt))

    def release(self, t: Tensor) -> None:
        """Free a tensor from :meth:`put`."""
        self.device.free(t)

    def conv(self, pass_: str, a, b, shape: ConvShape, fmt: str, out_fmt: str = "fp32") -> np.ndarray:
        """One conv (or linear, ``1 x 1``) pass on the device: :meth:`SATDevice.conv`, the result read back
        (FP32, or narrow in ``out_fmt`` = ``fmt``: rounded by the core, or by the host after a chunk sum).

        ``a`` and, for WU, ``b`` are arrays (uploaded for this call) or handles from :meth:`put`; ``b`` of FF
        and BP is the weight operand of ``sat.sw.conv.ff_operand`` / ``bp_operand`` (dense array or N:M
        operand), uploaded per K chunk. Same arguments and results as ``sat.sw.conv.conv_pass`` on
        ``GoldenBackend(k_limit=self.k_limit)``, bit for bit.
        """
        from ..bdwp import sparse_chunk

        dev = self.device
        dev._operand_fmt(fmt)
        live: list[Tensor | SparseWeights] = []

        def resident(v, role: str) -> Tensor:
            if isinstance(v, Tensor):
                return v
            t = dev.write_nhwc(np.asarray(v, np.float32), channel=role)
            live.append(t)
            return t

        try:
            at = resident(a, "a")
            if pass_ == "wu":
                bt = resident(b, "b")
                n = m = 0
            elif isinstance(b, NMOperand):
                n, m = b.n, b.m
                chunks = dev.conv_chunks(pass_, shape, n, m, self.k_limit)
                bt = [dev.upload_operand(b if len(chunks) == 1 else sparse_chunk(b, k0, k1), pass_)
                      for k0, k1 in chunks]
                live.extend(bt)
            else:
                n = m = 0
                bt = dev.write_tensor(np.asarray(b, np.float32), channel="b")
                live.append(bt)
            out = dev.conv(pass_, shape, at, bt, k_limit=self.k_limit, out_fmt=out_fmt, timeout_s=self.timeout_s)
            live.append(out)
            self.last_result = dev.last_run
            self.stats["gemms"] += 1
            self.stats["descriptors"] += len(dev.conv_chunks(pass_, shape, n, m, self.k_limit))
            self.stats["narrow"] += sum(bool(getattr(d, "narrow", False)) for d in dev.last_descriptors)
            self.stats["cycles"] += int(dev.last_run.counters.get("CYCLES", 0)) if dev.last_run else 0
            result_shape = {"ff": shape.y_shape, "bp": shape.x_shape, "wu": shape.w_shape}[pass_]
            return dev.read_tensor(out).reshape(result_shape)
        finally:
            for t in live:
                dev.free(t)

    def __repr__(self) -> str:
        return f"DeviceBackend({self.device!r})"


def _rows(t: Tensor, r0: int, r1: int) -> Tensor:
    """Rows ``r0..r1`` of a row-major tensor, as a tensor (no copy)."""
    return Tensor(t.addr + r0 * t.stride, (r1 - r0, t.shape[1]), t.dtype, t.stride)


def _cols(t: Tensor, c0: int, c1: int) -> Tensor:
    """Columns ``c0..c1`` of a row-major tensor, as a strided tensor (no copy)."""
    return Tensor(t.addr + c0 * t.itemsize, (t.shape[0], c1 - c0), t.dtype, t.stride)
