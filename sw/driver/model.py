"""A pure-software SAT device: the register map and command processor of ``sat.sw.regmap`` over a byte array.

:class:`ModelTransport` is a :class:`~sat.sw.driver.transport.Transport`, so :class:`~sat.sw.driver.device.SATDevice`
drives it exactly as it drives the card. It implements:

* every register of ``register_map(config)``, with the access rules of the map: reads of ``wo`` registers give
  0, writes to ``ro`` registers are ignored, ``IRQ_STATUS`` is write-1-to-clear, reading a 64-bit counter's
  ``_LO`` half latches its ``_HI`` half; an aligned offset the map does not decode reads 0 and ignores writes, as
  the gateware answers OKAY there (the XDMA driver probes BAR0 + 0x2000 and + 0x3000 on every load, and an
  SLVERR would become a PCIe completer abort); an unaligned offset raises
  :class:`~sat.sw.driver.transport.TransportError` (the XDMA driver refuses it with ``EPROTO``);
* the interrupt as XDMA delivers it with MSI: an event is a rising edge of the line ``IRQ_STATUS & IRQ_ENABLE``;
  events do not queue (one pending event at most, as the driver's per-interrupt flag) and :meth:`wait_irq`
  consumes it;
* the command processor: ``CONTROL.START`` fetches ``CMD_COUNT`` descriptors from ``CMD_ADDR``, validates each
  with :meth:`GemmDescriptor.validate` / :meth:`ConvDescriptor.validate` (the software statement of the hardware
  checks) and executes it with the bit-exact :mod:`sat.sw.numerics` (dense A/B with strides and A_TRANS/B_TRANS;
  sparse B read from the packed stream with :func:`sat.sw.nmformat.unpack`; a convolution's operand lowered from
  the channels-last tensor in memory), writing FP32 C. The first rejected descriptor stops the list
  with its error code and index; nothing of it (or after it) is written.

Timing: by default a list runs **synchronously inside the write of CONTROL.START** (``STATUS.BUSY`` is set for
the duration of that call, so a host never observes it). With ``execute_on_start=False`` an accepted START only
raises BUSY, and the list runs when :meth:`ModelTransport.complete` is called (from a test, or another thread),
which is how a test sees ``ERR_BUSY``, ``ABORT`` and an interrupt in the middle of a list
(``complete(descriptors=1)`` runs one descriptor and leaves the rest pending).

Performance counters come from the GEMM engine's cycle model (:func:`sat.sw.perfmodel.descriptor_counters`),
summed over the descriptors of the list: ``CYCLES`` += ``cycles``, ``COMPUTE_CYCLES`` += ``busy_cycles``,
``STALL_CYCLES`` += ``stall_cycles``, ``MACS`` += ``macs``. That model is exact for the engine alone; the command
processor's descriptor fetch and the operand/result DMA are not modelled yet, so ``CYCLES`` is an **estimate**
(a lower bound) of what the card's counter will show.

Status rules the model follows where the register map leaves room (see docs/driver.md):

* an accepted START clears ``STATUS.DONE``, ``CMD_DONE`` and the performance counters; ``STATUS.ERROR``,
  ``ERROR_CODE`` and ``ERROR_INDEX`` are sticky until ``CONTROL.CLEAR`` ("first error since CLEAR");
* a refused START (``ERR_BUSY``, or ``ERR_BAD_COUNT`` for ``CMD_COUNT == 0`` or a ``CMD_ADDR`` that is not
  64-byte aligned) sets ``STATUS.ERROR`` and ``IRQ_STATUS.ERROR``; ``ERROR_INDEX`` is the index of the
  descriptor running at the time (``CMD_DONE``) for BUSY, 0 for BAD_COUNT;
* ``IRQ_STATUS.DONE`` is set when a list completes and when a descriptor with ``FLAG_IRQ`` completes;
  ``IRQ_STATUS.ERROR`` when a list stops on an error.
"""

from __future__ import annotations

import threading
from types import TracebackType

import numpy as np

from ..config import SATConfig
from ..conv import ConvShape
from ..conv import bp_lower as _device_bp_lower
from ..conv import im2col as _device_im2col
from ..descriptor import (
    DESCRIPTOR_BYTES,
    FLAG_A_TRANS,
    FLAG_B_TRANS,
    FLAG_IRQ,
    ConvDescriptor,
    DescriptorError,
    GemmDescriptor,
    decode,
)
from ..nmformat import packed_nbytes, unpack
from ..numerics import fp32_bits, matmul, matmul_sparse, round_result
from ..perfmodel import descriptor_counters
from ..regmap import (
    CONTROL_ABORT,
    CONTROL_CLEAR,
    CONTROL_START,
    IRQ_DONE,
    IRQ_ERROR,
    PERF_COUNTERS,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    ErrorCode,
    register_map,
)
from .transport import AxiError, TransportError

__all__ = ["ModelTransport", "DEFAULT_MODEL_MEMORY"]

#: Default device memory of the model: 64 MiB (allocated lazily by the OS).
DEFAULT_MODEL_MEMORY = 64 << 20


def _strided(mem: np.ndarray, addr: int, lines: int, length: int, stride: int, dtype: str) -> np.ndarray:
    """A (lines, length) view of ``dtype`` elements at ``addr`` with ``stride`` bytes between lines."""
    item = np.dtype(dtype).itemsize
    nbytes = (lines - 1) * stride + length * item
    flat = mem[addr:addr + nbytes].view(dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(lines, length), strides=(stride, item))


class _ListError(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


class ModelTransport:
    """A software SAT core behind the :class:`~sat.sw.driver.transport.Transport` interface.

    Parameters
    ----------
    config : SATConfig, optional
        The build the model pretends to be (default ``SATConfig()``); it sets the identity registers, the
        accepted N:M patterns, the operand format and the cycle estimate.
    memory_bytes : int
        Size of device memory (a zeroed byte array).
    channels : int
        Memory channels the model reports in ``MEM_CHANNELS`` (equal windows of ``memory_bytes``; one flat array
        holds them all, at the same addresses as on the card: channel ``k`` at ``k * memory_bytes / channels``).
    execute_on_start : bool
        True (default): a START runs the whole list inside the register write. False: START only raises BUSY
        and :meth:`complete` runs the list.

    Raises
    ------
    ValueError
        For a non-positive ``memory_bytes``, or one that does not split into ``channels`` windows.
    """

    def __init__(self, config: SATConfig | None = None, memory_bytes: int = DEFAULT_MODEL_MEMORY, *,
                 channels: int = 1, execute_on_start: bool = True) -> None:
        if not isinstance(memory_bytes, int) or memory_bytes < DESCRIPTOR_BYTES:
            raise ValueError(f"memory_bytes must be an integer of at least {DESCRIPTOR_BYTES}, not {memory_bytes!r}")
        self.config = config if config is not None else SATConfig()
        self.regmap = register_map(self.config, memory_bytes, channels=channels)
        self.memory_bytes = memory_bytes
        self.channels = channels
        self.memory = np.zeros(memory_bytes, dtype=np.uint8)
        self.execute_on_start = execute_on_start
        self._regs = {r.offset: r.reset for r in self.regmap.registers}
        self._latched: dict[int, int] = {}   # _HI offset -> value latched by reading _LO
        self._counters = {name: 0 for name, _ in PERF_COUNTERS}
        self._pending: tuple[int, int, int] | None = None   # (list address, count, next descriptor)
        self._line = False    # the interrupt line IRQ_STATUS & IRQ_ENABLE != 0, as last seen
        self._event = False   # a rising edge of the line not yet consumed by wait_irq
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        #: Why the last list stopped (a model-only diagnostic; the hardware has only ERROR_CODE/ERROR_INDEX).
        self.last_error_message = ""
        #: Descriptors executed since construction (for tests).
        self.executed = 0
        self._faults: list[tuple[int, int]] = []

    def inject_axi_error(self, addr: int, nbytes: int) -> None:
        """Make the core's own accesses to ``[addr, addr + nbytes)`` answer SLVERR (a hole in the address map).

        A descriptor fetch or operand read touching the range stops the list with ``ERR_AXI_READ``, a result
        write with ``ERR_AXI_WRITE``. Host DMA is not affected (it does not go through the core).

        Parameters
        ----------
        addr, nbytes : int
            The faulty range.
        """
        self._faults.append((addr, addr + nbytes))

    def _check_faults(self, lo: int, hi: int, code: ErrorCode, what: str) -> None:
        for f_lo, f_hi in self._faults:
            if lo < f_hi and f_lo < hi:
                raise _ListError(code, f"SLVERR on the {what} [0x{lo:x}, 0x{hi:x}) (injected fault "
                                       f"[0x{f_lo:x}, 0x{f_hi:x}))")

    # register helpers ------------------------------------------------------------------------------------------

    def _get(self, name: str) -> int:
        return self._regs[self.regmap.offset(name)]

    def _set(self, name: str, value: int) -> None:
        self._regs[self.regmap.offset(name)] = value & 0xFFFFFFFF

    def _or(self, name: str, bits: int) -> None:
        self._set(name, self._get(name) | bits)

    def _irq_line(self) -> bool:
        return bool(self._get("IRQ_STATUS") & self._get("IRQ_ENABLE"))

    def _update_irq(self) -> None:
        """Latch an event on a rising edge of the interrupt line (XDMA sends its MSI on the edge of usr_irq_req)."""
        line = self._irq_line()
        if line and not self._line:
            self._event = True
        self._line = line
        self._cond.notify_all()

    def _register(self, offset: int, write: bool):
        """The register at ``offset``, or None for an aligned offset the map does not decode."""
        if self._closed:
            raise TransportError("ModelTransport is closed")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset % 4 or not 0 <= offset < 1 << 32:
            kind = "write to" if write else "read from"
            raise TransportError(f"{kind} register offset {offset!r}: offsets are multiples of 4 below 2**32 (the "
                                 f"XDMA driver refuses unaligned ones with EPROTO; see docs/driver.md for the map)")
        return self.regmap.by_offset.get(offset)

    # Transport -------------------------------------------------------------------------------------------------

    def read32(self, offset: int) -> int:
        """Read a register (see the class docstring for the access rules).

        Raises
        ------
        TransportError
            For an unaligned offset (an aligned offset the map does not decode reads 0).
        """
        with self._cond:
            reg = self._register(offset, write=False)
            if reg is None or reg.access == "wo":
                return 0
            if reg.name.endswith("_LO") and reg.name[:-3] in self._counters:
                value = self._counters[reg.name[:-3]]
                self._latched[offset + 4] = (value >> 32) & 0xFFFFFFFF
                return value & 0xFFFFFFFF
            if reg.name.endswith("_HI") and reg.name[:-3] in self._counters:
                return self._latched.get(offset, (self._counters[reg.name[:-3]] >> 32) & 0xFFFFFFFF)
            return self._regs[offset]

    def write32(self, offset: int, value: int) -> None:
        """Write a register; writing ``CONTROL.START`` runs the command list (see the class docstring).

        Raises
        ------
        TransportError
            For an unaligned offset (writes to an aligned offset the map does not decode are ignored).
        ValueError
            For a value that does not fit in 32 bits.
        """
        if not 0 <= int(value) < 1 << 32:
            raise ValueError(f"register value {value!r} does not fit in 32 bits")
        value = int(value)
        with self._cond:
            reg = self._register(offset, write=True)
            if reg is None or reg.access == "ro":
                return
            if reg.access == "w1c":
                self._regs[offset] &= ~value & 0xFFFFFFFF
                self._update_irq()
                return
            if reg.name != "CONTROL":
                self._regs[offset] = value
                self._update_irq()
                return
            if value & CONTROL_CLEAR:
                self._set("STATUS", self._get("STATUS") & ~(STATUS_DONE | STATUS_ERROR))
                self._set("ERROR_CODE", 0)
                self._set("ERROR_INDEX", 0)
            if value & CONTROL_ABORT and self._pending is not None:
                self._pending = None
                self._finish_error(ErrorCode.ABORTED, self._get("CMD_DONE"), "CONTROL.ABORT stopped the list")
            if value & CONTROL_START:
                self._start()
            self._update_irq()

    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        """Copy ``data`` into device memory at ``addr``.

        Raises
        ------
        AxiError
            If the range reaches outside device memory (DECERR).
        """
        src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        with self._cond:
            self._check_range(addr, src.size, write=True)
            self.memory[addr:addr + src.size] = src

    def dma_read(self, addr: int, nbytes: int) -> bytes:
        """``nbytes`` of device memory from ``addr``.

        Raises
        ------
        AxiError
            If the range reaches outside device memory (DECERR).
        """
        with self._cond:
            self._check_range(addr, nbytes, write=False)
            return self.memory[addr:addr + nbytes].tobytes()

    def wait_irq(self, timeout_s: float | None) -> bool:
        """Wait up to ``timeout_s`` seconds (None: forever) for an interrupt event and consume it; True if one came.

        An event is a rising edge of ``IRQ_STATUS & IRQ_ENABLE`` since the last consumed event, as the XDMA
        driver's events node reports it with MSI. The line stays high until the host clears ``IRQ_STATUS``, and
        while it is high no further event can come.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._event, timeout=None if timeout_s is None
                                       else max(0.0, timeout_s)):
                return False
            self._event = False
            return True

    def close(self) -> None:
        """Mark the model closed (its memory is kept for inspection)."""
        self._closed = True

    def __enter__(self) -> ModelTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelTransport({self.config!r}, memory_bytes={self.memory_bytes})"

    # command processor -----------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._get("STATUS") & STATUS_BUSY)

    def _check_range(self, addr: int, nbytes: int, write: bool) -> None:
        if self._closed:
            raise TransportError("ModelTransport is closed")
        if not isinstance(addr, int) or addr < 0 or nbytes < 0 or addr + nbytes > self.memory_bytes:
            raise AxiError(f"DECERR: DMA {'write' if write else 'read'} of {nbytes} bytes at {addr!r} reaches past "
                           f"device memory (0x{self.memory_bytes:x} bytes)", addr if isinstance(addr, int) else -1,
                           write)

    def _finish_error(self, code: ErrorCode, index: int, message: str) -> None:
        status = self._get("STATUS") & ~STATUS_BUSY
        if not status & STATUS_ERROR:  # ERROR_CODE/INDEX keep the first error since CLEAR
            self._set("ERROR_CODE", int(code))
            self._set("ERROR_INDEX", index)
            self.last_error_message = message
        self._set("STATUS", status | STATUS_ERROR)
        self._or("IRQ_STATUS", IRQ_ERROR)

    def _start(self) -> None:
        if self.busy:
            # refused; the running list is not disturbed
            if not self._get("STATUS") & STATUS_ERROR:
                self._set("ERROR_CODE", int(ErrorCode.BUSY))
                self._set("ERROR_INDEX", self._get("CMD_DONE"))
                self.last_error_message = "START while a command list was running"
            self._or("STATUS", STATUS_ERROR)
            self._or("IRQ_STATUS", IRQ_ERROR)
            return
        addr = self._get("CMD_ADDR_LO") | (self._get("CMD_ADDR_HI") << 32)
        count = self._get("CMD_COUNT")
        if count == 0 or addr % DESCRIPTOR_BYTES:
            why = "CMD_COUNT is 0" if count == 0 else f"CMD_ADDR 0x{addr:x} is not {DESCRIPTOR_BYTES}-byte aligned"
            self._finish_error(ErrorCode.BAD_COUNT, 0, why)
            return
        self._set("STATUS", (self._get("STATUS") & ~STATUS_DONE) | STATUS_BUSY)
        self._set("CMD_DONE", 0)
        for name in self._counters:
            self._counters[name] = 0
        self._latched.clear()
        self._pending = (addr, count, 0)
        if self.execute_on_start:
            self.complete()

    def complete(self, descriptors: int | None = None) -> None:
        """Run the pending command list (``execute_on_start=False``); does nothing when none is pending.

        Parameters
        ----------
        descriptors : int, optional
            Run at most this many of the list's remaining descriptors and leave the rest pending (``BUSY`` stays
            set), e.g. to see the interrupt of a descriptor with ``FLAG_IRQ`` before the end of the list.
            Default: all of them.
        """
        if descriptors is not None and (isinstance(descriptors, bool) or not isinstance(descriptors, int)
                                        or descriptors < 1):
            raise ValueError(f"descriptors must be a positive integer or None, not {descriptors!r}")
        with self._cond:
            if self._pending is None:
                return
            addr, count, first = self._pending
            last = count if descriptors is None else min(count, first + descriptors)
            self._pending = None
            for i in range(first, last):
                try:
                    d = self._fetch(addr + i * DESCRIPTOR_BYTES)
                    d.validate(self.config, self.memory_bytes)
                    self._execute(d)
                except DescriptorError as e:
                    self._finish_error(ErrorCode(e.code), i, f"descriptor {i}: {e}")
                    break
                except _ListError as e:
                    self._finish_error(e.code, i, f"descriptor {i}: {e}")
                    break
                est = descriptor_counters(d, self.config)
                self._counters["CYCLES"] += est.cycles
                self._counters["COMPUTE_CYCLES"] += est.busy_cycles
                self._counters["STALL_CYCLES"] += est.stall_cycles
                self._counters["MACS"] += est.macs
                self._set("CMD_DONE", i + 1)
                self._set("LAST_TAG", d.tag)
                self.executed += 1
                if d.flags & FLAG_IRQ:
                    self._or("IRQ_STATUS", IRQ_DONE)
                    self._update_irq()
            else:
                if last < count:
                    self._pending = (addr, count, last)
                else:
                    self._set("STATUS", (self._get("STATUS") & ~STATUS_BUSY) | STATUS_DONE)
                    self._or("IRQ_STATUS", IRQ_DONE)
            self._update_irq()

    def _fetch(self, addr: int) -> GemmDescriptor | ConvDescriptor:
        if addr + DESCRIPTOR_BYTES > self.memory_bytes:
            raise _ListError(ErrorCode.AXI_READ, f"descriptor fetch at 0x{addr:x} is past device memory "
                                                 f"(0x{self.memory_bytes:x} bytes): DECERR")
        self._check_faults(addr, addr + DESCRIPTOR_BYTES, ErrorCode.AXI_READ, "descriptor fetch")
        try:
            return decode(self.memory[addr:addr + DESCRIPTOR_BYTES].tobytes())
        except ValueError as e:           # a convolution descriptor with an undefined pass code
            raise DescriptorError(str(e), ErrorCode.BAD_FLAGS) from None

    def _execute(self, d: GemmDescriptor | ConvDescriptor) -> None:
        if isinstance(d, ConvDescriptor):
            self._execute_conv(d)
            return
        fmt = self.config.fmt
        mem = self.memory
        (_, a_lo, a_hi), (_, b_lo, b_hi), (_, c_lo, c_hi) = d.extents()
        self._check_faults(a_lo, a_hi, ErrorCode.AXI_READ, "read of operand A")
        self._check_faults(b_lo, b_hi, ErrorCode.AXI_READ, "read of operand B")
        self._check_faults(c_lo, c_hi, ErrorCode.AXI_WRITE, "write of result C")
        if d.flags & FLAG_A_TRANS:
            a = _strided(mem, d.a_addr, d.red, d.rows, d.a_stride, "<u2").T
        else:
            a = _strided(mem, d.a_addr, d.rows, d.red, d.a_stride, "<u2")
        a = np.ascontiguousarray(a, dtype=np.uint16)
        if d.sparse:
            raw = mem[d.b_addr:d.b_addr + packed_nbytes(d.n, d.m, d.red, d.cols)].copy()
            try:
                op = unpack(raw, d.n, d.m, d.red, d.cols, fmt)
            except ValueError as e:
                raise _ListError(ErrorCode.BAD_OPERAND,
                                 f"malformed packed N:M operand at 0x{d.b_addr:x}: {e}") from None
            c = matmul_sparse(a, op.values, op.indices, d.m, fmt)
        else:
            if d.flags & FLAG_B_TRANS:
                b = _strided(mem, d.b_addr, d.cols, d.red, d.b_stride, "<u2").T
            else:
                b = _strided(mem, d.b_addr, d.red, d.cols, d.b_stride, "<u2")
            c = matmul(a, np.ascontiguousarray(b, dtype=np.uint16), fmt)
        self._store(d, c, d.c_stride)

    def _execute_conv(self, d: ConvDescriptor) -> None:
        """A convolution descriptor: the lowered operand's chunk (the device's own lowering of the tensor's bit
        patterns, zero bits for missing taps), then the GEMM of the chunk, as the core computes it."""
        fmt = self.config.fmt
        mem = self.memory
        (_, a_lo, a_hi), (_, b_lo, b_hi), (_, c_lo, c_hi) = d.extents()
        self._check_faults(a_lo, a_hi, ErrorCode.AXI_READ, "read of operand A")
        self._check_faults(b_lo, b_hi, ErrorCode.AXI_READ, "read of operand B")
        self._check_faults(c_lo, c_hi, ErrorCode.AXI_WRITE, "write of result C")
        shape = ConvShape(d.batch, d.height, d.width, d.c_in, d.c_out, d.kh, d.kw, d.stride, d.padding)
        k0, k1 = d.k0, d.k0 + d.red

        def bits(addr: int, rows: int, cols: int) -> np.ndarray:
            return _strided(mem, addr, rows, cols, 2 * cols, "<u2").astype(np.float32)   # exact: integers < 2**16

        if d.pass_ == "ff":
            x = bits(d.a_addr, shape.in_pixels, d.c_in).reshape(shape.x_shape)
            a = _device_im2col(x, d.kh, d.kw, d.stride, d.padding)[:, k0:k1]
        elif d.pass_ == "bp":
            dy = bits(d.a_addr, shape.pixels, d.c_out).reshape(shape.y_shape)
            a = _device_bp_lower(dy, shape, d.m if d.sparse else 1)[:, k0:k1]
        else:
            a = bits(d.a_addr, d.red, d.c_out).T
            x = bits(d.b_addr, shape.in_pixels, d.c_in).reshape(shape.x_shape)
            b = _device_im2col(x, d.kh, d.kw, d.stride, d.padding)[k0:k1]
        a = np.ascontiguousarray(a).astype(np.uint16)
        if d.sparse:
            raw = mem[d.b_addr:d.b_addr + packed_nbytes(d.n, d.m, d.red, d.cols)].copy()
            try:
                op = unpack(raw, d.n, d.m, d.red, d.cols, fmt)
            except ValueError as e:
                raise _ListError(ErrorCode.BAD_OPERAND,
                                 f"malformed packed N:M operand at 0x{d.b_addr:x}: {e}") from None
            c = matmul_sparse(a, op.values, op.indices, d.m, fmt)
        else:
            if d.pass_ != "wu":
                if d.flags & FLAG_B_TRANS:
                    b = _strided(mem, d.b_addr, d.cols, d.red, d.b_stride, "<u2").T
                else:
                    b = _strided(mem, d.b_addr, d.red, d.cols, d.b_stride, "<u2")
            c = matmul(a, np.ascontiguousarray(b).astype(np.uint16), fmt)
        self._store(d, c, d.c_stride)

    def _store(self, d: GemmDescriptor | ConvDescriptor, c: np.ndarray, c_stride: int) -> None:
        """Write the FP32 chain results ``c`` as the descriptor's RESULT field asks: FP32, or each rounded once to
        the operand format (``numerics.round_result``, 2 bytes)."""
        if d.narrow:
            _strided(self.memory, d.c_addr, d.rows, d.cols, c_stride, "<u2")[...] = round_result(
                fp32_bits(c), self.config.fmt)
        else:
            _strided(self.memory, d.c_addr, d.rows, d.cols, c_stride, "<u4")[...] = fp32_bits(c)
