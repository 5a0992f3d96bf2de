"""Helpers for Amaranth-simulator tests of SAT's blocks: stream put/get, random stalls, and a memory that answers
the DMA client streams of the engine interface (``rd_req``/``rd_data``, ``wr_req``/``wr_data``/``wr_done``).

:class:`AxiMemory` is an AXI4 slave memory for the Amaranth simulator (the cocotb one is
:class:`sat.sim.axi_memory.AxiMemory`); :class:`DmaStreamMemory` sits one level higher, where the GEMM unit meets
the DMA reader and writer, so a unit can be simulated without the core around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: AXI bursts never cross a 4 KiB boundary.
PAGE = 4096

__all__ = ["stream_put", "stream_get", "DmaStreamMemory", "AxiMemory", "Stalls"]


async def stream_put(ctx: Any, stream: Any, payload: Any) -> None:
    """Transfer one ``payload`` on ``stream`` (valid until ready), from a testbench."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx: Any, stream: Any) -> Any:
    """Receive one payload from ``stream`` (ready until valid), from a testbench."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


class Stalls:
    """Random stall decisions with probability ``p`` (a fresh draw per call)."""

    def __init__(self, rng: np.random.Generator, p: float) -> None:
        self.rng, self.p = rng, p

    def __call__(self) -> bool:
        return bool(self.p and self.rng.random() < self.p)


class DmaStreamMemory:
    """A byte memory behind a DMA client's streams (``request_layout`` / ``read_beat_layout`` /
    ``write_beat_layout`` / ``write_done_layout`` of :mod:`sat.hw.dma`), for the Amaranth simulator.

    Read requests are answered in order, one beat per cycle unless stalled; ``error`` is set on beats of a
    request that touches ``read_faults``. Write requests take their beats in order (strobed bytes written unless
    the beat touches ``write_faults``) and complete with ``error`` set if any beat hit a fault.

    Parameters
    ----------
    size : int
        Bytes.
    beat_bytes : int
        Bytes of a beat (64 for the 512-bit bus).
    rng : numpy Generator
        Source of the random stalls.
    stall : float
        Probability of a stall cycle on each stream.
    """

    def __init__(self, size: int, beat_bytes: int, rng: np.random.Generator, stall: float = 0.0) -> None:
        self.mem = bytearray(size)
        self.beat = beat_bytes
        self.stalls = Stalls(rng, stall)
        self.read_faults: list[tuple[int, int]] = []
        self.write_faults: list[tuple[int, int]] = []
        self.reads: list[tuple[int, int]] = []      # (addr, beats) of every read request, in order
        self.writes: list[tuple[int, int]] = []

    def _hits(self, faults: list[tuple[int, int]], addr: int, length: int) -> bool:
        return any(addr < hi and lo < addr + length for lo, hi in faults)

    def reader(self, req: Any, data: Any) -> Callable:
        """A simulator process serving ``req`` (In to the memory) and ``data`` (Out of it)."""
        async def run(ctx: Any) -> None:
            pending: list[list[int]] = []        # [addr, beats left, error]
            ctx.set(req.ready, 1)
            async for _, _, rv, rr, raddr, rbeats, dv, dr in ctx.tick().sample(
                    req.valid, req.ready, req.payload.addr, req.payload.beats, data.valid, data.ready):
                if rv and rr:
                    self.reads.append((raddr, rbeats))
                    err = self._hits(self.read_faults, raddr, rbeats * self.beat)
                    pending.append([raddr, rbeats, int(err)])
                if dv and dr:
                    pending[0][0] += self.beat
                    pending[0][1] -= 1
                    if pending[0][1] == 0:
                        pending.pop(0)
                if pending and not self.stalls():
                    addr, left, err = pending[0]
                    word = int.from_bytes(self.mem[addr:addr + self.beat], "little")
                    ctx.set(data.valid, 1)
                    ctx.set(data.payload.data, word)
                    ctx.set(data.payload.last, int(left == 1))
                    ctx.set(data.payload.error, err)
                else:
                    ctx.set(data.valid, 0)
                ctx.set(req.ready, int(not self.stalls()))
        return run

    def writer(self, req: Any, data: Any, done: Any) -> Callable:
        """A simulator process serving a writer's ``req``, ``data`` and ``done`` streams."""
        async def run(ctx: Any) -> None:
            bursts: list[list[int]] = []         # [addr, beats left, error]
            answers: list[int] = []
            ctx.set(req.ready, 1)
            async for _, _, rv, rr, raddr, rbeats, dv, dr, wdata, wstrb, ov, orr in ctx.tick().sample(
                    req.valid, req.ready, req.payload.addr, req.payload.beats, data.valid, data.ready,
                    data.payload.data, data.payload.strb, done.valid, done.ready):
                if rv and rr:
                    self.writes.append((raddr, rbeats))
                    bursts.append([raddr, rbeats, 0])
                if dv and dr:
                    addr = bursts[0][0]
                    if self._hits(self.write_faults, addr, self.beat):
                        bursts[0][2] = 1
                    else:
                        raw = int(wdata).to_bytes(self.beat, "little")
                        for j in range(self.beat):
                            if wstrb >> j & 1:
                                self.mem[addr + j] = raw[j]
                    bursts[0][0] += self.beat
                    bursts[0][1] -= 1
                    if bursts[0][1] == 0:
                        answers.append(bursts.pop(0)[2])
                if ov and orr:
                    answers.pop(0)
                if answers and not self.stalls():
                    ctx.set(done.valid, 1)
                    ctx.set(done.payload.error, answers[0])
                else:
                    ctx.set(done.valid, 0)
                ctx.set(req.ready, int(not self.stalls()))
                ctx.set(data.ready, int(bool(bursts) and not self.stalls()))
        return run


class AxiMemory:
    """A Python AXI4 slave for the Amaranth simulator: one beat per cycle when not paused, optional random
    pauses on every channel, error responses (``resp``) for byte ranges, and a record of every burst."""

    def __init__(self, size: int, data_width: int, rng: np.random.Generator, pause: float = 0.0):
        self.mem = bytearray(size)
        self.bytes = data_width // 8
        self.rng = rng
        self.pause = pause
        self.errors: list[tuple[int, int, int]] = []   # (lo, hi, resp)
        self.bursts: list[tuple[str, int, int]] = []

    def _resp(self, addr: int) -> int:
        if addr + self.bytes > len(self.mem):
            return 3
        for lo, hi, resp in self.errors:
            if addr < hi and lo < addr + self.bytes:
                return resp
        return 0

    def _go(self) -> int:
        return int(self.rng.random() >= self.pause)

    def process(self, axi, prefix: str = ""):
        def s(name):
            return getattr(axi, prefix + name)

        async def run(ctx):
            reads: list[list[int]] = []       # [addr, beats left]
            writes: list[list[int]] = []      # [addr, beats left]
            b_queue: list[int] = []
            w_resp = 0
            sampled = [s(n) for n in ("arvalid", "arready", "araddr", "arlen", "rvalid", "rready",
                                      "awvalid", "awready", "awaddr", "awlen", "wvalid", "wready", "wdata",
                                      "wstrb", "wlast", "bvalid", "bready")]
            ctx.set(s("arready"), 1)
            ctx.set(s("awready"), 1)
            async for _, _, arv, arr, araddr, arlen, rv, rr, awv, awr, awaddr, awlen, wv, wr, wdata, wstrb, \
                    wlast, bv, br in ctx.tick().sample(*sampled):
                if arv and arr:
                    reads.append([araddr, arlen + 1])
                    self.bursts.append(("ar", araddr, arlen + 1))
                if rv and rr:
                    reads[0][0] += self.bytes
                    reads[0][1] -= 1
                    if reads[0][1] == 0:
                        reads.pop(0)
                if awv and awr:
                    writes.append([awaddr, awlen + 1])
                    self.bursts.append(("aw", awaddr, awlen + 1))
                if wv and wr:
                    addr, left = writes[0]
                    assert bool(wlast) == (left == 1), "wlast does not mark the burst's last beat"
                    resp = self._resp(addr)
                    if resp == 0:
                        data = int(wdata).to_bytes(self.bytes, "little")
                        for j in range(self.bytes):
                            if wstrb >> j & 1:
                                self.mem[addr + j] = data[j]
                    w_resp = max(w_resp, resp)
                    writes[0][0] += self.bytes
                    writes[0][1] -= 1
                    if writes[0][1] == 0:
                        writes.pop(0)
                        b_queue.append(w_resp)
                        w_resp = 0
                if bv and br:
                    b_queue.pop(0)
                ctx.set(s("arready"), self._go())
                ctx.set(s("awready"), self._go())
                ctx.set(s("wready"), int(bool(writes)) & self._go())
                if reads and self._go():
                    addr = reads[0][0]
                    resp = self._resp(addr)
                    data = 0 if resp else int.from_bytes(self.mem[addr:addr + self.bytes], "little")
                    ctx.set(s("rvalid"), 1)
                    ctx.set(s("rdata"), data)
                    ctx.set(s("rresp"), resp)
                    ctx.set(s("rlast"), int(reads[0][1] == 1))
                elif not (rv and not rr):      # hold a beat that was not taken
                    ctx.set(s("rvalid"), 0)
                if b_queue and self._go():
                    ctx.set(s("bvalid"), 1)
                    ctx.set(s("bresp"), b_queue[0])
                elif not (bv and not br):
                    ctx.set(s("bvalid"), 0)
        return run

    def check_bursts(self, max_burst: int) -> None:
        for ch, addr, beats in self.bursts:
            assert addr % self.bytes == 0, (ch, hex(addr))
            assert beats <= max_burst, (ch, hex(addr), beats)
            assert addr % PAGE + beats * self.bytes <= PAGE, f"{ch} burst 0x{addr:x} x {beats} crosses 4 KiB"
