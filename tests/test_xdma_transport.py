"""XdmaTransport against file-backed stand-ins for the XDMA character devices.

``<prefix>_user`` is a regular file the size of the register map; ``_h2c_0`` and ``_c2h_0`` are symlinks to one
"device memory" file, so a DMA write can be read back; ``_events_0`` is a FIFO. The semantics checked are those
of the reference (``vcu1525.md`` section 4.1): DMA at explicit file offsets (``pwrite``/``preadv``, never the file
position), chunks below ``0x7ffff000``, 4 KiB-aligned host buffers, 4-byte register words, 4-byte event reads.
"""

from __future__ import annotations

import os
import struct
import threading

import numpy as np
import pytest

from sat.sw.config import SATConfig
from sat.sw.driver import ModelTransport, SATDevice, TransportError, XdmaTransport
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


class Recorder:
    """Wraps an os function, recording (fd, length, offset, buffer address) of every call."""

    def __init__(self, fn, buffer_arg: int):
        self.fn = fn
        self.buffer_arg = buffer_arg
        self.calls: list[tuple[int, int, int, int]] = []

    def __call__(self, fd, buf, offset):
        view = buf[0] if isinstance(buf, list) else buf
        arr = np.frombuffer(view, dtype=np.uint8)
        self.calls.append((fd, arr.size, offset, arr.ctypes.data))
        del arr
        return self.fn(fd, buf, offset)


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
    rec = Recorder(os.pwrite, 1)
    monkeypatch.setattr(os, "pwrite", rec)
    with XdmaTransport(nodes, use_mmap=False) as t:
        t.write32(0x4C, 0x11223344)
    assert [(n, off) for _, n, off, _ in rec.calls] == [(4, 0x4C)]


@pytest.mark.parametrize("addr,size,chunk", [(0, 100, 4096), (0x1234, 10000, 4096), (3, 9000, 1000),
                                             (0x8000, 3 * 4096 + 1, 4096)])
def test_dma_loops_back_at_explicit_offsets_in_chunks(nodes, monkeypatch, addr, size, chunk):
    rng = np.random.default_rng(size)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    writes, reads = Recorder(os.pwrite, 1), Recorder(os.preadv, 1)
    monkeypatch.setattr(os, "pwrite", writes)
    monkeypatch.setattr(os, "preadv", reads)
    with XdmaTransport(nodes, chunk_size=chunk) as t:
        t.dma_write(addr, data)
        back = t.dma_read(addr, size)
        # the driver never moves the file position: explicit offsets only
        assert os.lseek(t._h2c, 0, os.SEEK_CUR) == 0 and os.lseek(t._c2h, 0, os.SEEK_CUR) == 0
    assert back == data.tobytes()
    mem = ddr(nodes)
    assert mem[addr:addr + size] == data.tobytes()
    assert mem[:addr].count(0) == addr and mem[addr + size:].count(0) == DEV_MEM - addr - size
    n_chunks = -(-size // chunk)
    for calls in (writes.calls, reads.calls):
        assert len(calls) == n_chunks
        assert [off for _, _, off, _ in calls] == [addr + i * chunk for i in range(n_chunks)]
        assert [n for _, n, _, _ in calls] == [min(chunk, size - i * chunk) for i in range(n_chunks)]
        assert all(ptr % PAGE_BYTES == 0 for _, _, _, ptr in calls), "host DMA buffers must be 4 KiB aligned"


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
