"""Transport over the Xilinx XDMA character devices of a programmed VCU1525 card (``/dev/xdma0_*``).

* Registers: ``<prefix>_user`` is the PCIe-to-AXI4-Lite master (SAT's register block). It is mmap-ed and read
  and written as single 32-bit words; if mmap fails the transport falls back to the driver's
  ``pread``/``pwrite`` of exactly 4 bytes at the register offset.
* DMA: ``<prefix>_h2c_<ch>`` (host to card) and ``<prefix>_c2h_<ch>`` (card to host) take the AXI address as the
  file offset and never advance the file position, so every transfer is an ``os.pwrite`` / ``os.preadv`` with an
  explicit offset. Data goes through a 4 KiB-aligned bounce buffer (anonymous mmap) and is split into chunks of
  at most ``chunk_size`` bytes (the driver moves at most ``0x7ffff000`` per call). A short transfer raises.
* Interrupt: ``<prefix>_events_<n>`` blocks on ``read`` of 4 bytes until user interrupt ``n`` fires; it is
  ``poll``-ed for the timeout first.

Facts and sources: ``/work/shared/reference/vcu1525.md`` section 4.1 and ``docs/driver.md``.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
from types import TracebackType

import numpy as np

from ..config import SATConfig
from ..regmap import register_map
from .transport import TransportError

__all__ = ["XdmaTransport", "RW_MAX_SIZE", "PAGE_BYTES", "DEFAULT_CHUNK", "DEFAULT_MEMORY_BYTES"]

#: Largest single read/write the XDMA driver moves (``RW_MAX_SIZE`` in Xilinx's ``dma_utils.c``).
RW_MAX_SIZE = 0x7FFFF000
#: Alignment of the host bounce buffers.
PAGE_BYTES = 4096
#: Default chunk (and bounce buffer) size: 64 MiB.
DEFAULT_CHUNK = 64 << 20
#: Device memory SAT's AXI master reaches on the card by default: one 16 GB DDR4 RDIMM (channel C0).
DEFAULT_MEMORY_BYTES = 16 << 30


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise TransportError(f"{path} not found: is the XDMA driver loaded and the card programmed? "
                             f"(see docs/board.md)") from None
    except PermissionError:
        raise TransportError(f"{path}: permission denied: run as root or install a udev rule that gives your "
                             f"user read/write access to the xdma device nodes (see docs/driver.md)") from None
    except OSError as e:
        raise TransportError(f"cannot open {path}: {os.strerror(e.errno or 0)} (errno {e.errno})") from None


def _as_bytes_view(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("DMA data must be C-contiguous")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class XdmaTransport:
    """SAT's transport over the XDMA character devices.

    Parameters
    ----------
    prefix : str
        Device node prefix: ``/dev/xdma0`` for the first card.
    channel : int
        DMA channel (``_h2c_<channel>`` / ``_c2h_<channel>``).
    map_size : int, optional
        Bytes of the register block to map (default: the size of ``register_map(SATConfig())``).
    chunk_size : int
        Largest bytes moved by one ``pwrite``/``preadv``, and the bounce buffer size; 1 to ``RW_MAX_SIZE``.
    event : int
        User interrupt line (``_events_<event>``) SAT's interrupt is wired to.
    use_mmap : bool
        Map the register BAR (default); False forces the 4-byte ``pread``/``pwrite`` path.
    memory_bytes : int
        Size of the device memory behind the DMA engines (used by :class:`SATDevice`'s allocator).

    Raises
    ------
    TransportError
        If a device node is missing or not accessible (the message says what to check).
    ValueError
        For a bad ``channel``, ``map_size`` or ``chunk_size``.
    """

    def __init__(self, prefix: str = "/dev/xdma0", channel: int = 0, map_size: int | None = None, *,
                 chunk_size: int = DEFAULT_CHUNK, event: int = 0, use_mmap: bool = True,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if map_size is None:
            map_size = register_map(SATConfig()).size
        if not isinstance(channel, int) or channel < 0:
            raise ValueError(f"channel must be a non-negative integer, not {channel!r}")
        if not isinstance(map_size, int) or map_size < 4 or map_size % 4:
            raise ValueError(f"map_size must be a positive multiple of 4, not {map_size!r}")
        if not isinstance(chunk_size, int) or not 1 <= chunk_size <= RW_MAX_SIZE:
            raise ValueError(f"chunk_size must be between 1 and 0x{RW_MAX_SIZE:x} bytes, not {chunk_size!r}")
        self.prefix = prefix
        self.channel = channel
        self.map_size = map_size
        self.chunk_size = chunk_size
        self.memory_bytes = memory_bytes
        self.user_path = f"{prefix}_user"
        self.h2c_path = f"{prefix}_h2c_{channel}"
        self.c2h_path = f"{prefix}_c2h_{channel}"
        self.events_path = f"{prefix}_events_{event}"
        self._fds: list[int] = []
        self._mm: mmap.mmap | None = None
        self._regs: np.ndarray | None = None
        self._bounce: mmap.mmap | None = None
        self._bounce_view: memoryview | None = None
        try:
            self._user = self._track(_open(self.user_path, os.O_RDWR | os.O_SYNC))
            self._h2c = self._track(_open(self.h2c_path, os.O_WRONLY))
            self._c2h = self._track(_open(self.c2h_path, os.O_RDONLY))
            self._events = self._track(_open(self.events_path, os.O_RDONLY | os.O_NONBLOCK))
        except BaseException:
            self.close()
            raise
        if use_mmap:
            try:
                self._mm = mmap.mmap(self._user, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except (OSError, ValueError):
                self._mm = None  # the 4-byte pread/pwrite path below works on every XDMA driver version
            else:
                self._regs = np.frombuffer(self._mm, dtype="<u4", count=map_size // 4)

    def _track(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def mmapped(self) -> bool:
        """True when registers are accessed through the mmap-ed BAR, False on the pread/pwrite fallback."""
        return self._regs is not None

    def _check_open(self) -> None:
        if not self._fds:
            raise TransportError(f"XdmaTransport({self.prefix!r}) is closed")

    def _check_offset(self, offset: int) -> None:
        if not isinstance(offset, int) or offset % 4 or not 0 <= offset < self.map_size:
            raise ValueError(f"register offset {offset!r} must be a multiple of 4 in [0, 0x{self.map_size:x})")

    # registers -----------------------------------------------------------------------------------------------

    def read32(self, offset: int) -> int:
        """Read the 32-bit register at ``offset``.

        Parameters
        ----------
        offset : int
            Byte offset, a multiple of 4 below ``map_size``.

        Raises
        ------
        ValueError
            For a misaligned or out-of-range offset.
        TransportError
            If the transport is closed or the driver returns fewer than 4 bytes.
        """
        self._check_open()
        self._check_offset(offset)
        if self._regs is not None:
            return int(self._regs[offset // 4])  # one 32-bit load from the BAR
        raw = os.pread(self._user, 4, offset)
        if len(raw) != 4:
            raise TransportError(f"short register read at 0x{offset:x} of {self.user_path}: got {len(raw)} of 4 "
                                 f"bytes")
        return struct.unpack("<I", raw)[0]

    def write32(self, offset: int, value: int) -> None:
        """Write the 32-bit ``value`` to the register at ``offset``.

        Parameters
        ----------
        offset : int
            Byte offset, a multiple of 4 below ``map_size``.
        value : int
            0 to 2**32 - 1.

        Raises
        ------
        ValueError
            For a misaligned or out-of-range offset or a value that does not fit 32 bits.
        TransportError
            If the transport is closed or the driver accepts fewer than 4 bytes.
        """
        self._check_open()
        self._check_offset(offset)
        if not isinstance(value, int | np.integer) or not 0 <= value < 1 << 32:
            raise ValueError(f"register value {value!r} does not fit in 32 bits")
        if self._regs is not None:
            self._regs[offset // 4] = value  # one 32-bit store to the BAR
            return
        n = os.pwrite(self._user, struct.pack("<I", int(value)), offset)
        if n != 4:
            raise TransportError(f"short register write at 0x{offset:x} of {self.user_path}: {n} of 4 bytes")

    # DMA -------------------------------------------------------------------------------------------------------

    def _bounce_buffer(self) -> memoryview:
        if self._bounce_view is None:
            size = -(-self.chunk_size // PAGE_BYTES) * PAGE_BYTES
            self._bounce = mmap.mmap(-1, size)  # anonymous mappings start on a page boundary
            self._bounce_view = memoryview(self._bounce)
        return self._bounce_view

    def _check_range(self, addr: int, nbytes: int) -> None:
        if not isinstance(addr, int) or addr < 0 or addr + nbytes > 1 << 64:
            raise ValueError(f"device address {addr!r} (+{nbytes} bytes) is outside the 64-bit AXI address space")

    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        """Copy ``data`` to device memory at ``addr`` through the H2C engine.

        Parameters
        ----------
        addr : int
            AXI byte address (the file offset of ``pwrite``).
        data : bytes-like
            Any C-contiguous buffer (bytes, bytearray, memoryview, NumPy array).

        Raises
        ------
        TransportError
            On a short write or a driver error (e.g. the DMA timed out: see ``h2c_timeout`` in docs/driver.md).
        """
        self._check_open()
        src = _as_bytes_view(data)
        total = src.nbytes
        self._check_range(addr, total)
        bounce = self._bounce_buffer()
        done = 0
        while done < total:
            n = min(self.chunk_size, total - done)
            bounce[:n] = src[done:done + n]
            try:
                got = os.pwrite(self._h2c, bounce[:n], addr + done)
            except OSError as e:
                raise TransportError(f"DMA write of {n} bytes to 0x{addr + done:x} via {self.h2c_path} failed: "
                                     f"{os.strerror(e.errno or 0)}{_dma_hint(e)}") from None
            if got != n:
                raise TransportError(f"short DMA write via {self.h2c_path}: {got} of {n} bytes at 0x{addr + done:x}"
                                     f" (is the address inside device memory?)")
            done += n

    def dma_read(self, addr: int, nbytes: int) -> bytes:
        """Read ``nbytes`` of device memory from ``addr`` through the C2H engine.

        Parameters
        ----------
        addr : int
            AXI byte address (the file offset of ``preadv``).
        nbytes : int
            Bytes to read.

        Raises
        ------
        TransportError
            On a short read or a driver error.
        """
        self._check_open()
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be a non-negative integer, not {nbytes!r}")
        self._check_range(addr, nbytes)
        out = bytearray(nbytes)
        bounce = self._bounce_buffer()
        done = 0
        while done < nbytes:
            n = min(self.chunk_size, nbytes - done)
            try:
                got = os.preadv(self._c2h, [bounce[:n]], addr + done)
            except OSError as e:
                raise TransportError(f"DMA read of {n} bytes from 0x{addr + done:x} via {self.c2h_path} failed: "
                                     f"{os.strerror(e.errno or 0)}{_dma_hint(e)}") from None
            if got != n:
                raise TransportError(f"short DMA read via {self.c2h_path}: {got} of {n} bytes at 0x{addr + done:x}"
                                     f" (is the address inside device memory?)")
            out[done:done + n] = bounce[:n]
            done += n
        return bytes(out)

    # interrupt -------------------------------------------------------------------------------------------------

    def wait_irq(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the user interrupt; True if it fired (its event word is consumed).

        Raises
        ------
        TransportError
            If the events node returns end-of-file or a read that is not 4 bytes.
        """
        self._check_open()
        poller = select.poll()
        poller.register(self._events, select.POLLIN | select.POLLPRI)
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
        if not poller.poll(timeout_ms):
            return False
        try:
            raw = os.read(self._events, 4)
        except BlockingIOError:
            return False
        if len(raw) == 0:
            raise TransportError(f"{self.events_path} returned end-of-file: is it an XDMA events node?")
        if len(raw) != 4:
            raise TransportError(f"{self.events_path} returned {len(raw)} bytes, expected a 4-byte event word")
        return True

    # lifetime --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the registers, free the bounce buffer and close the device nodes (idempotent)."""
        self._regs = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._bounce_view is not None:
            self._bounce_view.release()
            self._bounce_view = None
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> XdmaTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if not self._fds else ("mmap" if self.mmapped else "pread/pwrite")
        return f"XdmaTransport({self.prefix!r}, channel={self.channel}, {state})"


def _dma_hint(e: OSError) -> str:
    if e.errno == errno.ETIMEDOUT:
        return " (the XDMA engine timed out: is the core's AXI slave answering? see h2c_timeout/c2h_timeout)"
    if e.errno == errno.EINVAL:
        return " (check the address alignment and the XDMA engine's alignment rules in docs/driver.md)"
    return ""
