"""Transport over the Xilinx XDMA character devices of a programmed VCU1525 card (``/dev/xdma0_*``).

Every access follows the source of Xilinx's driver (``dma_ip_drivers``, ``XDMA/linux-kernel/xdma``):

* **Registers**: ``<prefix>_user`` is the PCIe-to-AXI4-Lite master (SAT's register block). It is mmap-ed and read
  and written as single 32-bit words; if mmap fails the transport falls back to the driver's ``pread``/``pwrite``
  of exactly 4 bytes at the register offset. The node is locked (``flock``, exclusive, non-blocking) while the
  transport is open: two processes driving one card overwrite each other's command lists, so a second opener
  gets a :class:`TransportError` naming the holder.
* **DMA**: ``<prefix>_h2c_<ch>`` (host to card) and ``<prefix>_c2h_<ch>`` (card to host) take the AXI address as
  the file offset and never advance the file position, so every transfer is an ``os.pwrite`` / ``os.pread`` with
  an explicit offset. **Never vectored I/O** (``preadv``, ``readv``, ``pwritev``, ``writev``): the driver routes it
  to its asynchronous ``read_iter``/``write_iter`` path, which takes the AXI address from the iovec offset (0)
  instead of the file position and, for a synchronous call, ends in a kernel ``BUG_ON`` / NULL ``ki_complete``
  (dma_ip_drivers issue #113, PRs #381/#382). Plain ``pread``/``pwrite`` take the driver's ``.read``/``.write``.
* **Alignment**: the driver accepts a transfer when the host buffer address equals the AXI address modulo the
  engine's ``addr_align`` (``check_transfer_align``, incremental AXI-MM mode); XDMA's AXI-MM engines report
  ``addr_align`` 1. Writes go through a page-aligned bounce buffer at offset ``addr % 4096``, which meets the
  rule for any ``addr_align`` up to 4096. Reads use ``os.pread``, whose buffer Python allocates, which is right
  for ``addr_align`` 1; if the engine reports more (``IOCTL_XDMA_ALIGN_GET`` at open), reads go through libc's
  ``pread`` into the bounce buffer at the congruent offset instead (still one plain ``pread`` per chunk).
* **Chunks and timeouts**: one call moves at most ``chunk_size`` bytes (the driver moves at most ``0x7ffff000``).
  Inside one call the driver splits the buffer into transfers of up to 2048 descriptors and waits for each up to
  ``h2c_timeout``/``c2h_timeout`` seconds (module parameters, default 10 s, 0 = forever), so the timeout applies per
  2048-descriptor chunk, not per call. A transfer that times out, fails or is interrupted by a signal (Ctrl-C)
  comes back as ``ETIMEDOUT`` (nothing done) or as a short count (the chunks before it); the error message says
  which, and whether it came before the driver's timeout (a signal) or after it (the engine).
* **Interrupt**: ``<prefix>_events_<n>`` counts nothing: the driver keeps one flag per user interrupt, set by the
  interrupt (an MSI sent on a rising edge of ``usr_irq_req``) and cleared by a 4-byte ``read``, which returns the
  constant 1. That ``read`` sleeps until the flag is set whatever ``O_NONBLOCK`` says, so the timeout comes from
  ``poll`` and the word is read only once ``poll`` reported it.

Facts and sources: ``/work/shared/reference/vcu1525.md`` section 4.1, ``docs/driver.md`` ("XDMA notes").
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import mmap
import os
import select
import struct
import time
from pathlib import Path
from types import TracebackType

import numpy as np

from ..config import SATConfig
from ..memmap import CARD_MEMORY
from ..regmap import register_map
from .transport import TransportError

__all__ = [
    "XdmaTransport", "RW_MAX_SIZE", "PAGE_BYTES", "DEFAULT_CHUNK", "DEFAULT_MEMORY_BYTES", "XFER_MAX_DESC",
    "DEFAULT_DRIVER_TIMEOUT_S", "IOCTL_XDMA_ALIGN_GET",
]

#: Largest single read/write the XDMA driver moves (``RW_MAX_SIZE`` in Xilinx's ``dma_utils.c``).
RW_MAX_SIZE = 0x7FFFF000
#: Alignment of the host bounce buffer.
PAGE_BYTES = 4096
#: Default chunk (and bounce buffer) size: 64 MiB.
DEFAULT_CHUNK = 64 << 20
#: Device memory SAT's AXI master and the DMA engines reach on the card: four 16 GB DDR4 RDIMMs (C0..C3, 16 GiB
#: windows side by side, ``sat.sw.memmap.CARD_MEMORY``).
DEFAULT_MEMORY_BYTES = CARD_MEMORY.size
#: Descriptors per driver transfer (``XDMA_ENGINE_XFER_MAX_DESC``): the driver's timeout applies to each such chunk.
XFER_MAX_DESC = 0x800
#: ``h2c_timeout`` / ``c2h_timeout`` when the module parameters cannot be read (the driver's default, seconds).
DEFAULT_DRIVER_TIMEOUT_S = 10
#: ``_IOR('q', 6, int)`` of ``cdev_sgdma.h``: the engine's ``addr_align``.
IOCTL_XDMA_ALIGN_GET = (2 << 30) | (4 << 16) | (ord("q") << 8) | 6

#: Where the kernel publishes module parameters and device classes (a test may point it elsewhere).
_SYSFS = Path("/sys")


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


def _driver_timeout(name: str) -> int | None:
    """The XDMA module parameter ``name`` (``h2c_timeout``/``c2h_timeout``, seconds), or None if unreadable."""
    try:
        return int((_SYSFS / "module" / "xdma" / "parameters" / name).read_text().strip())
    except (OSError, ValueError):
        return None


def _addr_align(fd: int) -> int:
    """The engine's ``addr_align`` (``IOCTL_XDMA_ALIGN_GET``); 1 where the node does not answer it (not XDMA)."""
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, IOCTL_XDMA_ALIGN_GET, buf)
    except OSError:
        return 1
    align = int.from_bytes(buf, "little", signed=True)
    return align if align > 0 and align & (align - 1) == 0 else 1


def _lock_holder(fd: int) -> str:
    """`` by process PID (NAME)`` for the holder of an flock on ``fd``'s file, from ``/proc/locks``; or ``""``."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        words = line.split()
        if len(words) >= 6 and words[1] == "FLOCK" and words[5] == key:
            pid = int(words[4])
            if pid == os.getpid():
                return " by this process (another XdmaTransport on this card is still open: close it first)"
            try:
                name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                name = ""
            return f" by process {pid}" + (f" ({name.strip()[:80]})" if name.strip() else "")
    return ""


@functools.cache
def _libc_pread():
    """libc's ``pread`` (plain, not vectored) for reading into a buffer of our choosing."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.pread64
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]
    fn.restype = ctypes.c_ssize_t
    return fn


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
        Largest bytes moved by one ``pwrite``/``pread``, and the bounce buffer size; 1 to ``RW_MAX_SIZE``.
    event : int
        User interrupt line (``_events_<event>``) SAT's interrupt is wired to.
    use_mmap : bool
        Map the register BAR (default); False forces the 4-byte ``pread``/``pwrite`` path.
    memory_bytes : int
        Size of the device memory behind the DMA engines, for scripts that use the transport alone;
        :class:`SATDevice` takes the size from the core's ``MEM_SIZE`` registers instead.
    exclusive : bool
        Lock the user node against other openers (default). False opens without the lock, e.g. to read registers
        while another process runs the card; never start command lists that way.

    Raises
    ------
    TransportError
        If a device node is missing or not accessible, or another opener holds the card (the message says what
        to check).
    ValueError
        For a bad ``channel``, ``map_size`` or ``chunk_size``.
    """

    def __init__(self, prefix: str = "/dev/xdma0", channel: int = 0, map_size: int | None = None, *,
                 chunk_size: int = DEFAULT_CHUNK, event: int = 0, use_mmap: bool = True,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES, exclusive: bool = True) -> None:
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
        self._bounce_addr = 0
        try:
            self._user = self._track(_open(self.user_path, os.O_RDWR | os.O_SYNC))
            if exclusive:
                self._lock()
            self._h2c = self._track(_open(self.h2c_path, os.O_WRONLY))
            self._c2h = self._track(_open(self.c2h_path, os.O_RDONLY))
            # The driver's events read ignores O_NONBLOCK (it sleeps until an event); the flag only keeps the
            # open of a FIFO stand-in from waiting for a writer.
            self._events = self._track(_open(self.events_path, os.O_RDONLY | os.O_NONBLOCK))
        except BaseException:
            self.close()
            raise
        #: ``addr_align`` of the H2C and C2H engines (1 where the nodes do not answer the ioctl).
        self.h2c_addr_align = _addr_align(self._h2c)
        self.c2h_addr_align = _addr_align(self._c2h)
        #: The driver's ``h2c_timeout``/``c2h_timeout`` in seconds (None: module parameters not readable).
        self.h2c_timeout_s = _driver_timeout("h2c_timeout")
        self.c2h_timeout_s = _driver_timeout("c2h_timeout")
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

    def _lock(self) -> None:
        try:
            fcntl.flock(self._user, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransportError(
                f"{self.user_path} is in use{_lock_holder(self._user)}: one card takes one driver at a time (two "
                f"would overwrite each other's command lists). Stop the other program or wait for it; "
                f"XdmaTransport(..., exclusive=False) opens without the lock for reading registers only") from None
        except OSError as e:
            raise TransportError(f"cannot lock {self.user_path}: {os.strerror(e.errno or 0)} (errno {e.errno}); "
                                 f"open with exclusive=False to skip the lock") from None

    @property
    def mmapped(self) -> bool:
        """True when registers are accessed through the mmap-ed BAR, False on the pread/pwrite fallback."""
        return self._regs is not None

    @property
    def interrupt_mode(self) -> str | None:
        """How the kernel delivers this card's interrupts: ``"msi"``, ``"msix"``, ``"legacy"`` (INTx), or None when
        unknown (the nodes are not an XDMA device's, or sysfs is not readable).

        SAT needs MSI (or MSI-X): its interrupt line stays high until the host clears ``IRQ_STATUS``, so with legacy
        interrupts the driver's handler, which cannot clear it, runs again and again until then (docs/board.md).
        """
        device = _SYSFS / "class" / "xdma" / os.path.basename(self.user_path) / "device"
        if not device.is_dir():
            return None
        msi = device / "msi_irqs"
        if not msi.is_dir():
            return "legacy"
        try:
            kinds = {entry.read_text().strip() for entry in msi.iterdir()}
        except OSError:
            return None
        return "msix" if "msix" in kinds else "msi" if kinds else "legacy"

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
        """The page-aligned bounce buffer: ``chunk_size`` bytes plus one page for the congruent offset."""
        if self._bounce_view is None:
            size = -(-self.chunk_size // PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES
            self._bounce = mmap.mmap(-1, size)  # anonymous mappings start on a page boundary
            anchor = ctypes.c_char.from_buffer(self._bounce)
            self._bounce_addr = ctypes.addressof(anchor)
            del anchor  # an exported buffer would keep the mmap from closing
            self._bounce_view = memoryview(self._bounce)
        return self._bounce_view

    def _check_range(self, addr: int, nbytes: int) -> None:
        if not isinstance(addr, int) or addr < 0 or addr + nbytes > 1 << 64:
            raise ValueError(f"device address {addr!r} (+{nbytes} bytes) is outside the 64-bit AXI address space")

    def _dma_error(self, write: bool, addr: int, n: int, elapsed: float, *, got: int | None = None,
                   error: OSError | None = None) -> TransportError:
        """The error for a failed or short transfer of one chunk, saying what the driver reported and why."""
        kind, path, param = ("write", self.h2c_path, "h2c_timeout") if write else ("read", self.c2h_path,
                                                                                   "c2h_timeout")
        where = f"{'to' if write else 'from'} 0x{addr:x} via {path}"
        known = self.h2c_timeout_s if write else self.c2h_timeout_s
        timeout = DEFAULT_DRIVER_TIMEOUT_S if known is None else known
        limit = (f"{param} = {timeout} s per chunk of up to {XFER_MAX_DESC} descriptors"
                 + ("" if known is not None else " (driver default; /sys/module/xdma/parameters not readable)")
                 if timeout else f"{param} = 0: no timeout")
        early = timeout == 0 or elapsed < 0.9 * timeout
        signal = (f"it came after {elapsed:.2f} s, "
                  + (f"before the driver's timeout ({limit}), " if timeout else f"and the driver waits forever "
                     f"({limit}), ") + "so a signal (e.g. Ctrl-C) interrupted the transfer")
        if error is not None and error.errno == errno.ETIMEDOUT:
            cause = signal if early else (f"the engine did not finish in time ({limit}, after {elapsed:.2f} s): is "
                                          f"the core's AXI slave answering and DDR4 calibrated? (docs/board.md)")
            return TransportError(f"DMA {kind} of {n} bytes {where} failed with ETIMEDOUT, which the XDMA driver "
                                  f"returns both for a timeout and for a signal: {cause}. The engine was stopped; "
                                  f"the {kind} did not complete: run it again")
        if error is not None:
            return TransportError(f"DMA {kind} of {n} bytes {where} failed: {os.strerror(error.errno or 0)}"
                                  f"{_dma_hint(error)}")
        cause = (signal + ", or the engine reported an error (dmesg says which)") if early else (
            f"a later chunk timed out ({limit}, after {elapsed:.2f} s)")
        return TransportError(f"short DMA {kind} {where}: {got} of {n} bytes. The XDMA driver returns "
                              f"the bytes of the {XFER_MAX_DESC}-descriptor chunks that finished when a later one "
                              f"times out, fails or is interrupted by a signal: {cause}. Check also that the range is "
                              f"inside device memory")

    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        """Copy ``data`` to device memory at ``addr`` through the H2C engine (plain ``pwrite`` per chunk).

        Parameters
        ----------
        addr : int
            AXI byte address (the file offset of ``pwrite``).
        data : bytes-like
            Any C-contiguous buffer (bytes, bytearray, memoryview, NumPy array).

        Raises
        ------
        TransportError
            On a short write or a driver error; the message says whether the driver timed out or a signal
            interrupted it.
        """
        self._check_open()
        src = _as_bytes_view(data)
        total = src.nbytes
        self._check_range(addr, total)
        bounce = self._bounce_buffer()
        done = 0
        while done < total:
            n = min(self.chunk_size, total - done)
            shift = (addr + done) % PAGE_BYTES   # host buffer address == AXI address modulo any addr_align
            bounce[shift:shift + n] = src[done:done + n]
            chunk = bounce[shift:shift + n]
            start = time.monotonic()
            try:
                got = os.pwrite(self._h2c, chunk, addr + done)
            except OSError as e:
                raise self._dma_error(True, addr + done, n, time.monotonic() - start, error=e) from None
            finally:
                chunk.release()   # a traceback that keeps the view must not keep the bounce buffer from closing
            if got != n:
                raise self._dma_error(True, addr + done, n, time.monotonic() - start, got=got)
            done += n

    def _pread(self, addr: int, n: int) -> bytes:
        """One plain ``pread`` of ``n`` bytes at AXI address ``addr`` (never vectored I/O: see the module doc)."""
        if self.c2h_addr_align <= 1:
            return os.pread(self._c2h, n, addr)
        bounce = self._bounce_buffer()
        shift = addr % PAGE_BYTES
        got = _libc_pread()(self._c2h, self._bounce_addr + shift, n, addr)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return bytes(bounce[shift:shift + got])

    def dma_read(self, addr: int, nbytes: int) -> bytes:
        """Read ``nbytes`` of device memory from ``addr`` through the C2H engine (plain ``pread`` per chunk).

        Parameters
        ----------
        addr : int
            AXI byte address (the file offset of ``pread``).
        nbytes : int
            Bytes to read.

        Raises
        ------
        TransportError
            On a short read or a driver error; the message says whether the driver timed out or a signal
            interrupted it.
        """
        self._check_open()
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be a non-negative integer, not {nbytes!r}")
        self._check_range(addr, nbytes)
        parts: list[bytes] = []
        done = 0
        while done < nbytes:
            n = min(self.chunk_size, nbytes - done)
            start = time.monotonic()
            try:
                chunk = self._pread(addr + done, n)
            except OSError as e:
                raise self._dma_error(False, addr + done, n, time.monotonic() - start, error=e) from None
            if len(chunk) != n:
                raise self._dma_error(False, addr + done, n, time.monotonic() - start, got=len(chunk))
            parts.append(chunk)
            done += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # interrupt -------------------------------------------------------------------------------------------------

    def wait_irq(self, timeout_s: float | None) -> bool:
        """Wait up to ``timeout_s`` seconds (None: forever) for the user interrupt; True if it fired.

        ``poll`` gives the timeout (the driver's ``read`` would sleep until an event whatever ``O_NONBLOCK`` says);
        once it reports the node readable, the 4-byte event word (the constant 1) is read, which re-arms the
        driver's flag. A signal during ``poll`` either restarts it with the time left or raises (Ctrl-C:
        ``KeyboardInterrupt``).

        Raises
        ------
        TransportError
            If the events node hangs up, reports an error, or returns a read that is not 4 bytes.
        """
        self._check_open()
        poller = select.poll()
        poller.register(self._events, select.POLLIN)
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
        ready = poller.poll(timeout_ms)
        if not ready:
            return False
        revents = ready[0][1]
        if not revents & select.POLLIN:
            what = "hung up (end of file)" if revents & select.POLLHUP else f"reported poll events 0x{revents:x}"
            raise TransportError(f"{self.events_path} {what}: is it an XDMA events node?")
        try:
            raw = os.read(self._events, 4)
        except BlockingIOError:
            return False  # only a FIFO stand-in gets here: someone else consumed the word
        if len(raw) == 0:
            raise TransportError(f"{self.events_path} returned end-of-file: is it an XDMA events node?")
        if len(raw) != 4:
            raise TransportError(f"{self.events_path} returned {len(raw)} bytes, expected a 4-byte event word")
        return True

    # lifetime --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the registers, free the bounce buffer and close the device nodes, which drops the lock
        (idempotent)."""
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
    if e.errno == errno.EINVAL:
        return (" (the driver checks that the host buffer address equals the AXI address modulo the engine's "
                "addr_align: see docs/driver.md)")
    if e.errno == errno.EIO:
        return " (the engine reported an error: is the address inside device memory? see dmesg)"
    return ""
