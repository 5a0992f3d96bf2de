"""XdmaTransport against file-backed stand-ins for the XDMA character devices.

``<prefix>_user`` is a regular file the size of the register map; ``_h2c_0`` and ``_c2h_0`` are symlinks to one
"device memory" file, so a DMA write can be read back; ``_events_0`` is a FIFO. The semantics checked are those
of the XDMA driver's source (``vcu1525.md`` section 4.1, ``docs/driver.md``): DMA at explicit file offsets with plain
``pwrite``/``pread`` (never vectored I/O, which the driver routes to its broken ``read_iter`` path: every test here
runs with ``os.preadv``/``readv``/``pwritev``/``writev`` made to fail), chunks below ``0x7ffff000``, host buffers
congruent to the AXI address modulo the engine's alignment, 4-byte register words, 4-byte event reads after
``poll``, an exclusive lock on the user node, and error messages that tell a timeout from a signal.

``FileCard`` puts the software model behind such stand-ins, so ``sat board selftest --device`` runs end to end
through the real transport.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sat.sw.config import SATConfig
from sat.sw.driver import ModelTransport, SATDevice, TransportError, XdmaTransport, xdma
from sat.sw.driver.xdma import PAGE_BYTES, RW_MAX_SIZE
from sat.sw.numerics import encode, quantize
from sat.sw.regmap import register_map

MAP = register_map(SATConfig())
DEV_MEM = 1 << 16


@pytest.fixture
def nodes(tmp_path):
    prefix = str(tmp_path / "xdma0")
    with open(prefix + "_user", "wb") as f:
        f.write(bytes(MAP.size))
    with open(tmp_path / "ddr", "wb") as f:
        f.write(bytes(DEV_MEM))
    os.symlink(tmp_path / "ddr", prefix + "_h2c_0")
    os.symlink(tmp_path / "ddr", prefix + "_c2h_0")
    os.mkfifo(prefix + "_events_0")
    return prefix


def ddr(prefix: str) -> bytes:
    with open(os.path.join(os.path.dirname(prefix), "ddr"), "rb") as f:
        return f.read()


class VectoredIO(Exception):
    """Raised by the stand-ins of os.preadv/readv/pwritev/writev (not an OSError, so nothing can swallow it)."""


@pytest.fixture(autouse=True)
def no_vectored_io(monkeypatch):
    """Vectored I/O reaches the XDMA driver's read_iter/write_iter path (reads AXI address 0, oopses the host on a
    synchronous call: dma_ip_drivers #113): make every form of it fail in every test of this file."""
    def refuse(name):
        def call(*args, **kwargs):
            raise VectoredIO(f"os.{name} used: the XDMA driver routes vectored I/O to its broken read_iter path")
        return call

    for name in ("preadv", "readv", "pwritev", "writev"):
        monkeypatch.setattr(os, name, refuse(name))


class WriteRecorder:
    """Wraps os.pwrite, recording (fd, length, offset, buffer address) of every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[int, int, int, int]] = []

    def __call__(self, fd, buf, offset):
        arr = np.frombuffer(buf, dtype=np.uint8)
        self.calls.append((fd, arr.size, offset, arr.ctypes.data))
        del arr
        return self.fn(fd, buf, offset)


class ReadRecorder:
    """Wraps os.pread, recording (fd, length, offset) of every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, fd, n, offset):
        self.calls.append((fd, n, offset))
        return self.fn(fd, n, offset)


@pytest.mark.parametrize("use_mmap", [True, False])
def test_registers_at_their_offsets(nodes, use_mmap):
    with XdmaTransport(nodes, use_mmap=use_mmap) as t:
        assert t.mmapped == use_mmap
        t.write32(MAP.offset("SCRATCH"), 0xDEADBEEF)
        t.write32(MAP.offset("CMD_COUNT"), 7)
        with open(nodes + "_user", "rb") as f:
            raw = f.read()
        assert struct.unpack_from("<I", raw, MAP.offset("SCRATCH"))[0] == 0xDEADBEEF
        assert struct.unpack_from("<I", raw, MAP.offset("CMD_COUNT"))[0] == 7
        assert raw.count(0) == len(raw) - 5  # nothing else written (0xDEADBEEF + 7: five nonzero bytes)
        with open(nodes + "_user", "r+b") as f:
            f.seek(MAP.offset("ID"))
            f.write(struct.pack("<I", 0x53415431))
        assert t.read32(MAP.offset("ID")) == 0x53415431
        assert t.read32(MAP.offset("SCRATCH")) == 0xDEADBEEF
        for bad in (2, MAP.size, -4):
            with pytest.raises(ValueError, match="multiple of 4"):
                t.read32(bad)
        with pytest.raises(ValueError, match="32 bits"):
            t.write32(0, 1 << 32)
    with pytest.raises(TransportError, match="closed"):
        t.read32(0)


def test_mmap_failure_falls_back_to_pread(nodes, monkeypatch):
    with open(nodes + "_user", "r+b") as f:
        f.truncate(8)  # too short to map MAP.size bytes: mmap refuses
    with XdmaTransport(nodes) as t:
        assert not t.mmapped
        t.write32(4, 0x01020304)
        assert t.read32(4) == 0x01020304
        with pytest.raises(TransportError, match="short register read"):
            t.read32(0x40)  # beyond the 8-byte stand-in: the driver would return fewer than 4 bytes


def test_register_writes_are_single_4_byte_pwrites(nodes, monkeypatch):
    rec = WriteRecorder(os.pwrite)
    monkeypatch.setattr(os, "pwrite", rec)
    with XdmaTransport(nodes, use_mmap=False) as t:
        t.write32(0x4C, 0x11223344)
    assert [(n, off) for _, n, off, _ in rec.calls] == [(4, 0x4C)]


@pytest.mark.parametrize("addr,size,chunk", [(0, 100, 4096), (0x1234, 10000, 4096), (3, 9000, 1000),
                                             (0x8000, 3 * 4096 + 1, 4096)])
def test_dma_loops_back_at_explicit_offsets_in_chunks(nodes, monkeypatch, addr, size, chunk):
    rng = np.random.default_rng(size)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    writes, reads = WriteRecorder(os.pwrite), ReadRecorder(os.pread)
    monkeypatch.setattr(os, "pwrite", writes)
    monkeypatch.setattr(os, "pread", reads)
    with XdmaTransport(nodes, chunk_size=chunk) as t:
        t.dma_write(addr, data)
        back = t.dma_read(addr, size)
        # the driver never moves the file position: explicit offsets only
        assert os.lseek(t._h2c, 0, os.SEEK_CUR) == 0 and os.lseek(t._c2h, 0, os.SEEK_CUR) == 0
        h2c, c2h = t._h2c, t._c2h
    assert back == data.tobytes()
    mem = ddr(nodes)
    assert mem[addr:addr + size] == data.tobytes()
    assert mem[:addr].count(0) == addr and mem[addr + size:].count(0) == DEV_MEM - addr - size
    n_chunks = -(-size // chunk)
    chunks = [(addr + i * chunk, min(chunk, size - i * chunk)) for i in range(n_chunks)]
    assert [(fd, off, n) for fd, n, off, _ in writes.calls] == [(h2c, o, n) for o, n in chunks]
    assert [(fd, off, n) for fd, n, off in reads.calls] == [(c2h, o, n) for o, n in chunks]
    # the driver's rule: host buffer address == AXI address modulo the engine's addr_align (any power of two
    # up to a page here)
    assert all(ptr % PAGE_BYTES == off % PAGE_BYTES for _, _, off, ptr in writes.calls), writes.calls


def test_vectored_io_is_refused_here(nodes):
    """The autouse stand-ins really fail (otherwise the other tests here would prove nothing)."""
    with XdmaTransport(nodes) as t:
        for call in (lambda: os.preadv(t._c2h, [bytearray(4)], 0), lambda: os.readv(t._c2h, [bytearray(4)]),
                     lambda: os.pwritev(t._h2c, [b"abcd"], 0), lambda: os.writev(t._h2c, [b"abcd"])):
            with pytest.raises(VectoredIO):
                call()
        t.dma_write(8, b"abcd")
        assert t.dma_read(8, 4) == b"abcd"


def test_engine_alignment_above_one_reads_into_a_congruent_buffer(nodes, monkeypatch):
    """An engine that reports addr_align 64: reads go through libc pread into the bounce buffer at the AXI
    address's offset in the page (os.pread's own buffer could break the driver's rule); data is unchanged."""
    monkeypatch.setattr(xdma, "_addr_align", lambda fd: 64)
    calls = []
    real = xdma._libc_pread()

    def recording(fd, ptr, n, offset):
        calls.append((ptr, n, offset))
        return real(fd, ptr, n, offset)

    monkeypatch.setattr(xdma, "_libc_pread", lambda: recording)

    def no_os_pread(*args):
        raise AssertionError("os.pread used although its buffer cannot meet addr_align 64")

    data = np.random.default_rng(3).integers(0, 256, 9000, dtype=np.uint8).tobytes()
    with XdmaTransport(nodes, chunk_size=4096) as t:
        assert (t.h2c_addr_align, t.c2h_addr_align) == (64, 64)
        t.dma_write(0x1233, data)
        monkeypatch.setattr(os, "pread", no_os_pread)
        assert t.dma_read(0x1233, 9000) == data
        with pytest.raises(TransportError, match="short DMA read"):
            t.dma_read(DEV_MEM - 10, 20)
    assert [(n, off) for _, n, off in calls[:3]] == [(4096, 0x1233), (4096, 0x2233), (808, 0x3233)]
    assert all(ptr % PAGE_BYTES == off % PAGE_BYTES for ptr, _, off in calls)


def test_dma_accepts_bytes_and_memoryview_and_unaligned_sources(nodes):
    src = bytearray(range(256)) * 4
    with XdmaTransport(nodes) as t:
        t.dma_write(64, memoryview(src)[1:1001])
        t.dma_write(2048, bytes(src[:5]))
        t.dma_write(4096, np.arange(8, dtype="<u4"))
        assert t.dma_read(64, 1000) == bytes(src[1:1001])
        assert t.dma_read(2048, 5) == bytes(src[:5])
        assert t.dma_read(4096, 32) == np.arange(8, dtype="<u4").tobytes()
        assert t.dma_read(0, 0) == b""


def test_short_dma_is_an_error(nodes, monkeypatch):
    with XdmaTransport(nodes, chunk_size=4096) as t:
        with pytest.raises(TransportError, match="short DMA read"):
            t.dma_read(DEV_MEM - 100, 200)  # the stand-in ends: pread returns fewer bytes
        monkeypatch.setattr(os, "pwrite", lambda fd, buf, off: len(buf) - 1)
        with pytest.raises(TransportError, match="short DMA write.*4095 of 4096"):
            t.dma_write(0, bytes(5000))


def test_chunk_size_limits(nodes):
    with pytest.raises(ValueError, match="chunk_size"):
        XdmaTransport(nodes, chunk_size=RW_MAX_SIZE + 1)
    with pytest.raises(ValueError, match="chunk_size"):
        XdmaTransport(nodes, chunk_size=0)


def test_missing_nodes_say_what_to_check(tmp_path, nodes):
    with pytest.raises(TransportError) as err:
        XdmaTransport(str(tmp_path / "xdma7"))
    assert str(err.value) == (f"{tmp_path / 'xdma7'}_user not found: is the XDMA driver loaded and the card "
                              f"programmed? (see docs/board.md)")
    with pytest.raises(TransportError, match="_h2c_1 not found"):
        XdmaTransport(nodes, channel=1)


def test_permission_error_names_the_fix(nodes, monkeypatch):
    real_open = os.open

    def deny(path, flags, *args):
        if str(path).endswith("_user"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(TransportError, match=r"xdma0_user: permission denied.*udev rule"):
        XdmaTransport(nodes)


def test_events_wait_times_out_and_reads_4_byte_words(nodes):
    with XdmaTransport(nodes) as t:
        wfd = os.open(nodes + "_events_0", os.O_WRONLY | os.O_NONBLOCK)
        try:
            assert t.wait_irq(0.02) is False
            os.write(wfd, struct.pack("<I", 1))
            assert t.wait_irq(1.0) is True
            assert t.wait_irq(0.02) is False  # the event word was consumed
            threading.Timer(0.05, os.write, (wfd, struct.pack("<I", 1))).start()
            assert t.wait_irq(5.0) is True
            os.write(wfd, b"\x01\x00")
            with pytest.raises(TransportError, match="2 bytes"):
                t.wait_irq(1.0)
        finally:
            os.close(wfd)


class _ModelBehindUserNode:
    """Copies a ModelTransport's identity registers into the ``_user`` stand-in so SATDevice can open it."""

    def __init__(self, prefix: str, cfg: SATConfig):
        model = ModelTransport(cfg, 4096)
        with open(prefix + "_user", "r+b") as f:
            for r in register_map(cfg).registers:
                f.seek(r.offset)
                f.write(struct.pack("<I", model.read32(r.offset)))


def test_satdevice_opens_over_xdma_and_moves_tensors(nodes):
    cfg = SATConfig(fmt="bf16")
    _ModelBehindUserNode(nodes, cfg)
    with XdmaTransport(nodes, chunk_size=4096, memory_bytes=DEV_MEM) as t:
        dev = SATDevice(t, cfg)
        x = np.linspace(-3, 3, 40 * 30, dtype=np.float32).reshape(40, 30)
        tensor = dev.write_tensor(x)
        np.testing.assert_array_equal(dev.read_tensor(tensor), quantize(x, "bf16"))
        raw = ddr(nodes)[tensor.addr:tensor.addr + tensor.nbytes]
        np.testing.assert_array_equal(np.frombuffer(raw, "<u2").reshape(40, 30), encode(x, "bf16"))
        assert SATDevice(t).config == cfg


# ---------------------------------------------------------------------------------------------------------- errors


def test_dma_timeout_and_signal_are_told_apart(nodes, monkeypatch):
    """The driver returns ETIMEDOUT for a timed-out chunk and for a signal (Ctrl-C) alike: the message says which,
    from when the error came back against the driver's timeout."""
    with XdmaTransport(nodes) as t:
        t.c2h_timeout_s = 10

        def interrupted(fd, n, offset):
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))

        monkeypatch.setattr(os, "pread", interrupted)
        with pytest.raises(TransportError) as err:
            t.dma_read(0x40, 64)
        msg = str(err.value)
        assert "ETIMEDOUT" in msg and "signal (e.g. Ctrl-C) interrupted the transfer" in msg
        assert "c2h_timeout = 10 s per chunk of up to 2048 descriptors" in msg and "did not finish" not in msg

        t.c2h_timeout_s = 0.05

        def timed_out(fd, n, offset):
            time.sleep(0.06)
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))

        monkeypatch.setattr(os, "pread", timed_out)
        with pytest.raises(TransportError, match=r"ETIMEDOUT.*the engine did not finish in time \(c2h_timeout"):
            t.dma_read(0x40, 64)

        t.h2c_timeout_s = 0   # 0 = no timeout: an ETIMEDOUT can only be a signal
        def interrupted_write(fd, buf, offset):
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))

        monkeypatch.setattr(os, "pwrite", interrupted_write)
        with pytest.raises(TransportError, match=r"DMA write .*waits forever \(h2c_timeout = 0: no timeout\), so a "):
            t.dma_write(0, b"x" * 100)


def test_short_count_names_the_chunks_and_the_cause(nodes, monkeypatch):
    with XdmaTransport(nodes, chunk_size=1 << 16) as t:
        t.c2h_timeout_s = 10
        monkeypatch.setattr(os, "pread", lambda fd, n, off: bytes(n // 2))
        with pytest.raises(TransportError) as err:
            t.dma_read(0, 4096)
    msg = str(err.value)
    assert msg.startswith(f"short DMA read from 0x0 via {nodes}_c2h_0: 2048 of 4096 bytes")
    assert "2048-descriptor chunks" in msg and "signal" in msg


# ---------------------------------------------------------------------------------------------------------- lock


def test_second_opener_in_this_process_is_refused(nodes):
    with XdmaTransport(nodes) as first:
        with pytest.raises(TransportError, match=r"_user is in use by this process"):
            XdmaTransport(nodes)
        with XdmaTransport(nodes, exclusive=False) as monitor:   # reading registers alongside is allowed
            first.write32(0x4C, 7)
            assert monitor.read32(0x4C) == 7
    with XdmaTransport(nodes) as again:   # closing released the lock
        assert again.read32(0x4C) == 7


def test_lock_held_against_another_process(nodes):
    code = (f"import sys; from sat.sw.driver import XdmaTransport; t = XdmaTransport({nodes!r}); "
            f"print('ready', flush=True); sys.stdin.readline(); t.close()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(TransportError) as err:
            XdmaTransport(nodes)
        assert f"_user is in use by process {proc.pid} (" in str(err.value)
        assert "one card takes one driver at a time" in str(err.value)
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
    XdmaTransport(nodes).close()   # free again once the holder is gone


# ---------------------------------------------------------------------------------------------------------- events


def test_events_timeout_comes_from_poll_not_from_a_nonblocking_read(nodes):
    """The driver's events read sleeps until an event whatever O_NONBLOCK says: with the stand-in's read made
    blocking too, wait_irq must still time out on time (it reads only after poll said an event is there)."""
    with XdmaTransport(nodes) as t:
        flags = fcntl.fcntl(t._events, fcntl.F_GETFL)
        fcntl.fcntl(t._events, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        wfd = os.open(nodes + "_events_0", os.O_WRONLY | os.O_NONBLOCK)
        rescue = threading.Timer(3.0, os.write, (wfd, struct.pack("<I", 1)))   # unblocks a read that should not be
        rescue.start()
        try:
            start = time.monotonic()
            assert t.wait_irq(0.1) is False
            assert time.monotonic() - start < 1.5
        finally:
            rescue.cancel()
            rescue.join()
        os.write(wfd, struct.pack("<I", 1))   # the driver's event word is the constant 1
        assert t.wait_irq(1.0) is True
        os.close(wfd)   # the writer hangs up: poll reports it, no read of an empty node
        with pytest.raises(TransportError, match="hung up"):
            t.wait_irq(1.0)


@pytest.mark.parametrize("kinds,mode", [(["msi"], "msi"), (["msix", "msix"], "msix"), (None, "legacy")])
def test_interrupt_mode_from_sysfs(nodes, tmp_path, monkeypatch, kinds, mode):
    device = tmp_path / "sys" / "class" / "xdma" / "xdma0_user" / "device"
    device.mkdir(parents=True)
    if kinds is not None:
        (device / "msi_irqs").mkdir()
        for i, kind in enumerate(kinds):
            (device / "msi_irqs" / str(40 + i)).write_text(kind + "\n")
    with XdmaTransport(nodes) as t:
        assert t.interrupt_mode is None   # the real /sys knows nothing of a stand-in
        monkeypatch.setattr(xdma, "_SYSFS", tmp_path / "sys")
        assert t.interrupt_mode == mode


def test_selftest_fails_on_legacy_interrupts(tmp_path, monkeypatch, capsys):
    from sat.boards.cli import selftest

    card = FileCard(tmp_path, monkeypatch)
    (tmp_path / "sys" / "class" / "xdma" / "xdma0_user" / "device").mkdir(parents=True)
    monkeypatch.setattr(xdma, "_SYSFS", tmp_path / "sys")
    with XdmaTransport(card.prefix, chunk_size=1 << 16) as t:
        result = selftest(t, dma_bytes=1 << 16)
    name, ok, detail = result.checks[-1]
    assert name == "interrupt mode" and not ok and "interrupt_mode=1" in detail, result.report()


# ---------------------------------------------------------------------------------------------------------- selftest


class FileCard:
    """The software model of a SAT card behind file stand-ins of the XDMA nodes, for the real XdmaTransport.

    * ``_h2c_0`` and ``_c2h_0`` are symlinks to one file, which is also the model's device memory (a NumPy
      memmap), so the transport's ``pwrite``/``pread`` and the core see the same bytes;
    * ``_events_0`` is a FIFO; a rising edge of the model's interrupt line writes the event word 1 unless one is
      still unread (the driver's flag does not count);
    * ``_user`` is an empty file, so mmap fails and the transport uses the 4-byte ``pread``/``pwrite`` path, and
      those calls on it go to the model's registers, which is what the driver's ``ioread32``/``iowrite32`` do
      (with its ``EPROTO`` for other sizes or unaligned offsets). Everything else is real file I/O.
    """

    def __init__(self, directory, monkeypatch, config: SATConfig | None = None, memory_bytes: int = 4 << 20):
        self.prefix = str(directory / "xdma0")
        with open(self.prefix + "_user", "wb"):
            pass
        memory = directory / "card_ddr"
        with open(memory, "wb") as f:
            f.truncate(memory_bytes)
        os.symlink(memory, self.prefix + "_h2c_0")
        os.symlink(memory, self.prefix + "_c2h_0")
        os.mkfifo(self.prefix + "_events_0")
        self.model = ModelTransport(config or SATConfig(), memory_bytes)
        self.model.memory = np.memmap(memory, dtype=np.uint8, mode="r+", shape=(memory_bytes,))
        self._pending = os.open(self.prefix + "_events_0", os.O_RDONLY | os.O_NONBLOCK)   # to see unread words
        self._events = os.open(self.prefix + "_events_0", os.O_WRONLY | os.O_NONBLOCK)
        self._user_ino = os.stat(self.prefix + "_user").st_ino
        self.register_calls = 0
        real_pread, real_pwrite = os.pread, os.pwrite

        def is_user(fd: int) -> bool:
            return os.fstat(fd).st_ino == self._user_ino

        def pread(fd, n, offset):
            if not is_user(fd):
                return real_pread(fd, n, offset)
            self._check(n, offset)
            return struct.pack("<I", self.model.read32(offset))

        def pwrite(fd, data, offset):
            if not is_user(fd):
                return real_pwrite(fd, data, offset)
            self._check(len(data), offset)
            self.model.write32(offset, struct.unpack("<I", bytes(data))[0])
            if self.model.wait_irq(0):   # a rising edge of the line: one MSI, one event word unless one is unread
                if not select.select([self._pending], [], [], 0)[0]:
                    os.write(self._events, struct.pack("<I", 1))
            return 4

        monkeypatch.setattr(os, "pread", pread)
        monkeypatch.setattr(os, "pwrite", pwrite)

    def _check(self, n: int, offset: int) -> None:
        self.register_calls += 1
        if n != 4 or offset & 3:
            raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))

    def close(self) -> None:
        os.close(self._events)
        os.close(self._pending)


def test_selftest_cli_passes_on_file_stand_ins_without_vectored_io(tmp_path, monkeypatch, capsys):
    """``sat board selftest --device`` through the real XdmaTransport: registers, a 1 MiB DMA loop-back through the
    h2c/c2h files, and a GEMM whose operands, list and result all cross those files, its end signalled through
    the events FIFO; os.preadv/readv/pwritev/writev fail throughout (autouse fixture)."""
    from sat.sw.cli import main

    card = FileCard(tmp_path, monkeypatch)
    try:
        assert main(["board", "selftest", "--device", card.prefix]) == 0, capsys.readouterr()
    finally:
        card.close()
    out = capsys.readouterr().out
    assert "selftest passed" in out
    for check in ("ID register", "identity / configuration", "SCRATCH write/read", "DMA loop-back",
                  "dense GEMM vs golden model"):
        assert f"[PASS] {check}" in out, out
    assert "1048576 bytes at 0x" in out and card.model.executed == 1 and card.register_calls > 20
