"""A lean AXI4 slave memory for cocotb: the device memory of the simulated core, fast enough for training.

cocotbext-axi's ``AxiRam`` is general (every burst type, WRAP/FIXED, queues and events per channel, a log line
per burst) and costs several coroutine wake-ups per clock cycle and channel. :class:`AxiMemory` serves exactly
what the SAT DMA issues: INCR bursts (``awsize``/``arsize`` up to the bus width) with byte strobes, over a
``bytearray``, with two coroutines (read side: AR and R; write side: AW, W and B) that sleep while their side is
idle and wake on ``arvalid``/``awvalid``.

Semantics (the same as :func:`sat.sim.cocotb_transport.attach` gives cocotbext-axi's ``AxiSlave``):

* Read bursts are accepted while fewer than ``max_reads`` are outstanding and answered in order, one beat per
  cycle unless paused; ``rid`` echoes ``arid``.
* Write bursts: ``wready`` only once the burst's address has been accepted (AXI allows a slave to wait for AW);
  one ``B`` response per burst, in order; ``bid`` echoes ``awid``.
* Faults: ``fault(addr, length) -> bool`` (e.g. :meth:`CocotbTransport._hit`). A read beat whose bus word hits a
  fault, or lies outside the memory, answers SLVERR (data 0); a write beat whose strobed bytes hit a fault or
  lie outside writes its strobed runs up to the faulty one and makes the burst's response SLVERR.
* Pauses: ``pauses`` maps a channel (``"ar"``, ``"r"``, ``"aw"``, ``"w"``, ``"b"``) to an endless iterator of
  booleans (:func:`sat.sim.tb.idle_inserter` for ``r``/``b``, :func:`sat.sim.tb.backpressure` for the others),
  advanced once per clock cycle in which that side is active; ``True`` holds ``valid`` (R, B) or ``ready``
  (AR, AW, W) low for that cycle.

* Timing: with ``dram`` (a :class:`sat.sw.dram.DDR4Timing`) the memory is one DDR4 channel
  (:class:`sat.sw.dram.DRAMChannel`, ``docs/dram.md``): a read beat is presented no earlier than the channel
  delivers it (latency, the bus shared with writes, turnarounds, refresh), a write's ``B`` no earlier than the
  channel answers it. Without it (``dram=None``) every beat is answered at once, as an ideal memory. The pauses
  come on top.
* Channels: with ``channel_bytes`` the memory is several DDR4 channels side by side, as the card's SmartConnect
  maps its four (:class:`sat.sw.memmap.MemoryMap`): window ``k`` (``[k * channel_bytes, (k + 1) *
  channel_bytes)``) has its own :class:`sat.sw.dram.DRAMChannel`, and a burst is served by the channel of its
  address, so reads of one window never wait behind writes to another. A burst that crosses a window (the
  interconnect decodes one slave per burst) answers SLVERR on every beat and writes nothing.

Reset (``rst``, optional) drops outstanding bursts. Timing follows cocotbext-axi: handshakes are sampled at the
rising edge (values before the edge) and outputs change right after it. Inputs are read through the GPI handle's
bit string (``handle._handle``), several times cheaper than ``handle.value`` (a ``Logic``/``LogicArray`` each).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sat.sw.dram import DDR4Timing, DRAMChannel

__all__ = ["AxiMemory", "CHANNELS"]

CHANNELS = ("ar", "r", "aw", "w", "b")
_AT_ONCE = [0.0]                   # the first beat's time of every burst of an ideal memory
_OKAY, _SLVERR = 0, 2


_X_TO_0 = str.maketrans("xXzZuUwW-lh", "00000000001")


def _u(handle: Any) -> int:
    """Unsigned value of a signal (X/Z bits read as 0)."""
    raw = getattr(handle, "_handle", None)
    if raw is None:                      # pragma: no cover - a cocotb without the GPI handle attribute
        return int(handle.value.to_unsigned())
    bits = raw.get_signal_val_binstr()
    try:
        return int(bits, 2)
    except ValueError:
        return int(bits.translate(_X_TO_0), 2)


def _on(handle: Any) -> bool:
    """A 1-bit signal is 1 (X/Z read as 0)."""
    raw = getattr(handle, "_handle", None)
    if raw is None:                      # pragma: no cover
        return str(handle.value) == "1"
    return raw.get_signal_val_binstr() == "1"


class AxiMemory:
    """AXI4 slave memory on the ``{prefix}_*`` signals of ``dut`` (see the module docstring).

    Parameters
    ----------
    dut
        cocotb top handle.
    prefix : str
        Signal prefix, e.g. ``"m_axi"``.
    clk
        Clock handle.
    rst
        Synchronous active-high reset, optional: while it is high (sampled at rising edges) outstanding bursts
        are dropped and every ``valid``/``ready`` output is low.
    size : int
        Memory size in bytes.
    fault : callable, optional
        ``fault(addr, length) -> bool``: answer SLVERR for bytes ``[addr, addr + length)``.
    pauses : mapping, optional
        Pause pattern per channel name (see the module docstring).
    max_reads : int
        Read bursts accepted before the first is answered (default 32: more than the core keeps in flight,
        ``sat.sw.config.READ_TRANSFERS``, so the core's window, not the memory's, limits it; the card's DDR4 IP
        queues that many in its AXI front end and SmartConnect, an assumption to check on the card,
        docs/dram.md).
    max_writes : int
        Write bursts accepted ahead of their data.
    dram : DDR4Timing, optional
        The timing of each channel behind the port (``None``: an ideal memory).
    clock_hz : float
        The port clock, for the DRAM model's cycles (the testbench clock, :data:`sat.sim.tb.CLOCK_PERIOD_NS`).
    channel_bytes : int, optional
        Bytes of each channel's address window (a power of two); ``None``: one channel for the whole memory.

    Attributes
    ----------
    channels : list of DRAMChannel
        The DRAM model's state per window, channel 0 first (empty for an ideal memory; each one's ``stats``
        count bursts, turnarounds and refresh waits).
    channel : DRAMChannel or None
        The only channel of a one-channel DRAM model (``None`` for an ideal memory or several channels).
    crossings : int
        Bursts answered SLVERR because they crossed a channel window.

    Raises
    ------
    ValueError
        For a size that is not positive, an unknown channel in ``pauses``, a data width that is not a multiple
        of 8 bits, or a ``channel_bytes`` that is not a positive power of two.
    """

    def __init__(self, dut: Any, prefix: str, clk: Any, size: int, *, rst: Any = None,
                 fault: Callable[[int, int], bool] | None = None,
                 pauses: Mapping[str, Iterator[bool]] | None = None, max_reads: int = 32,
                 max_writes: int = 8, dram: DDR4Timing | None = None, clock_hz: float = 250e6,
                 channel_bytes: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"memory size must be positive, not {size!r}")
        if channel_bytes is not None and (isinstance(channel_bytes, bool) or not isinstance(channel_bytes, int)
                                          or channel_bytes < 1 or channel_bytes & (channel_bytes - 1)):
            raise ValueError(f"channel_bytes must be a positive power of two (the interconnect decodes the channel "
                             f"from the address bits above it), not {channel_bytes!r}")
        unknown = set(pauses or ()) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown AXI channel(s) {sorted(unknown)} in pauses: use {CHANNELS}")
        self.size = size
        self.mem = bytearray(size)
        self.fault = fault
        self.pauses = dict(pauses or {})
        self.max_reads = max_reads
        self.max_writes = max_writes
        self.clk = clk
        self.rst = rst
        self.clock_hz = clock_hz
        self._s = {name: getattr(dut, f"{prefix}_{name}") for name in (
            "arid", "araddr", "arlen", "arsize", "arvalid", "arready", "rid", "rdata", "rresp", "rlast", "rvalid",
            "rready", "awid", "awaddr", "awlen", "awsize", "awvalid", "awready", "wdata", "wstrb", "wlast",
            "wvalid", "wready", "bid", "bresp", "bvalid", "bready")}
        width = len(self._s["rdata"])
        if width % 8:
            raise ValueError(f"{prefix}_rdata is {width} bits wide, not a whole number of bytes")
        self.lanes = width // 8
        self.full_strobe = (1 << self.lanes) - 1
        #: bursts served so far: ``{"read": n, "write": n}``
        self.bursts = {"read": 0, "write": 0}
        #: bytes of each channel's window (the whole memory with one channel)
        self.channel_bytes = channel_bytes if channel_bytes is not None else size
        self.windows = -(-size // self.channel_bytes)
        self.channels = [DRAMChannel(dram, clock_hz, self.lanes) for _ in range(self.windows)] \
            if dram is not None else []
        self.channel = self.channels[0] if len(self.channels) == 1 else None
        self.crossings = 0
        self._period_steps = 0
        for name in ("arready", "rvalid", "rlast", "awready", "wready", "bvalid"):
            self._s[name].value = 0
        for name in ("rid", "rresp", "rdata", "bid", "bresp"):
            self._s[name].value = 0

    # ---------------------------------------------------------------------------------------------- host side
    def read(self, addr: int, length: int) -> bytes:
        """Bytes ``[addr, addr + length)`` of the memory (host access, no AXI traffic, no faults).

        Raises
        ------
        ValueError
            For a range outside the memory.
        """
        self._check(addr, length)
        return bytes(self.mem[addr:addr + length])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``addr`` (host access, no AXI traffic, no faults).

        Raises
        ------
        ValueError
            For a range outside the memory.
        """
        self._check(addr, len(data))
        self.mem[addr:addr + len(data)] = data

    def _check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise ValueError(f"bytes 0x{addr:x}..0x{addr + length:x} lie outside the {self.size}-byte memory")

    def start(self) -> None:
        """Start the read and write coroutines (call once, before traffic)."""
        import cocotb
        from cocotb.utils import get_sim_steps

        self._period_steps = get_sim_steps(1e9 / self.clock_hz, "ns", round_mode="round")
        cocotb.start_soon(self._reads())
        cocotb.start_soon(self._writes())

    # --------------------------------------------------------------------------------------------- bus side
    def _bad(self, addr: int, length: int) -> bool:
        return addr + length > self.size or (self.fault is not None and self.fault(addr, length))

    def _window(self, addr: int, beats: int, size: int) -> tuple[int, bool]:
        """The channel window of a burst of ``beats`` of ``size`` bytes from ``addr`` (the last one for an address
        past the memory, which answers SLVERR anyway), and whether the burst crosses into the next window."""
        first = addr // self.channel_bytes
        if self.windows == 1:       # one window: a burst past its end answers SLVERR beat by beat (_bad)
            return 0, False
        last = (addr - addr % size + beats * size - 1) // self.channel_bytes
        return min(first, self.windows - 1), last != first

    def _now(self) -> int:
        """The current clock cycle (simulated time over the period)."""
        from cocotb.utils import get_sim_time

        return int(get_sim_time("step")) // self._period_steps

    def _paused(self, channel: str) -> bool:
        gen = self.pauses.get(channel)
        return bool(next(gen)) if gen is not None else False

    async def _reads(self) -> None:
        from cocotb.triggers import First, RisingEdge, Timer

        s = self._s
        arvalid, arready, rready = s["arvalid"], s["arready"], s["rready"]
        rvalid, rdata, rresp, rlast, rid = s["rvalid"], s["rdata"], s["rresp"], s["rlast"], s["rid"]
        edge, wake, rst = RisingEdge(self.clk), RisingEdge(arvalid), self.rst
        lanes, mem, chans = self.lanes, self.mem, self.channels
        beat_time = chans[0].c.beat if chans else 0.0
        now = 0
        # [next address, beats left, bytes per beat, id, first beat's time (handle), beats sent, crosses a window]
        bursts: deque[list] = deque()
        ar_on = r_on = False
        last_id = 0
        pause_ar, pause_r = "ar" in self.pauses, "r" in self.pauses
        period = 1e9 / self.clock_hz
        while True:
            if not r_on and ar_on and not _on(arvalid):
                if not bursts:
                    await wake                  # idle: arready stays high, nothing to answer
                elif chans:
                    for chan in chans:
                        chan.settle(now)
                    due = bursts[0][4][0] + bursts[0][5] * beat_time
                    if now + 3 < due < math.inf:
                        # the next beat comes at edge ceil(due): sleep until the cycle before (or until an
                        # address handshake comes first), not one wake-up per cycle
                        await First(wake, Timer((math.ceil(due) - now - 1.5) * period, "ns",
                                                round_mode="round"))
            await edge
            if rst is not None and _on(rst):
                bursts.clear()
                if r_on or ar_on:
                    rvalid.value = arready.value = r_on = ar_on = False
                continue
            if chans:
                now = self._now()
            # handshakes of this edge (values before it)
            if r_on and _on(rready):
                r_on = False
            if ar_on and _on(arvalid):
                addr, beats, size = _u(s["araddr"]), _u(s["arlen"]) + 1, 1 << _u(s["arsize"])
                k, crosses = self._window(addr, beats, size)
                ready = chans[k].post_read(now, beats) if chans else _AT_ONCE
                self.crossings += crosses
                bursts.append([addr, beats, size, _u(s["arid"]), ready, 0, crosses])
                self.bursts["read"] += 1
            # outputs until the next edge (a beat presented now is taken at the next edge, now + 1)
            for chan in chans:
                chan.settle(now)
            if not r_on:
                if bursts and now + 1 >= bursts[0][4][0] + bursts[0][5] * beat_time \
                        and not (pause_r and self._paused("r")):
                    burst = bursts[0]
                    addr, size = burst[0], burst[2]
                    word = addr - addr % lanes
                    if burst[6] or self._bad(word, lanes):
                        rdata.value, rresp.value = 0, _SLVERR
                    else:
                        rdata.value = int.from_bytes(mem[word:word + lanes], "little")
                        rresp.value = _OKAY
                    burst[0] = addr - addr % size + size
                    burst[1] -= 1
                    burst[5] += 1
                    rlast.value = burst[1] == 0
                    if burst[3] != last_id:
                        rid.value = last_id = burst[3]
                    if burst[1] == 0:
                        bursts.popleft()
                    rvalid.value = 1
                    r_on = True
                else:
                    rvalid.value = 0
            elif pause_r:
                self._paused("r")
            ar_next = len(bursts) < self.max_reads and not (pause_ar and self._paused("ar"))
            if ar_next != ar_on:
                arready.value = ar_on = ar_next

    async def _writes(self) -> None:
        from cocotb.triggers import First, RisingEdge, Timer

        s = self._s
        awvalid, awready, wvalid, wready = s["awvalid"], s["awready"], s["wvalid"], s["wready"]
        bvalid, bready, bresp, bid = s["bvalid"], s["bready"], s["bresp"], s["bid"]
        edge, wake, rst = RisingEdge(self.clk), RisingEdge(awvalid), self.rst
        lanes, mem, full, chans = self.lanes, self.mem, self.full_strobe, self.channels
        now = 0
        # [next address, beats left, bytes per beat, id, resp, beats, channel, crosses a window]
        bursts: deque[list[int]] = deque()
        responses: deque[tuple[int, int, float]] = deque()     # id, resp, time
        aw_on = w_on = b_on = False
        pause_aw, pause_w, pause_b = "aw" in self.pauses, "w" in self.pauses, "b" in self.pauses
        period = 1e9 / self.clock_hz
        while True:
            if not bursts and not b_on and aw_on and not _on(awvalid):
                if not responses:
                    await wake
                elif responses[0][2] > now + 3:   # the next response is due later: sleep until then
                    due = math.ceil(responses[0][2])
                    await First(wake, Timer((due - now - 1.5) * period, "ns", round_mode="round"))
            await edge
            if chans:
                now = self._now()
            if rst is not None and _on(rst):
                bursts.clear()
                responses.clear()
                if b_on or w_on or aw_on:
                    bvalid.value = wready.value = awready.value = b_on = w_on = aw_on = False
                continue
            if b_on and _on(bready):
                b_on = False
            if w_on and _on(wvalid):
                burst = bursts[0]
                addr, size = burst[0], burst[2]
                word = addr - addr % lanes
                data = _u(s["wdata"]).to_bytes(lanes, "little")
                strb = _u(s["wstrb"])
                if burst[7]:
                    pass                              # crosses a window: SLVERR, no data written
                elif strb == full and not self._bad(word, lanes):
                    mem[word:word + lanes] = data
                elif strb:
                    for lo, hi in _runs(strb, lanes):
                        if self._bad(word + lo, hi - lo):
                            burst[4] = _SLVERR
                            break
                        mem[word + lo:word + hi] = data[lo:hi]
                burst[0] = addr - addr % size + size
                burst[1] -= 1
                if burst[1] == 0:
                    bursts.popleft()
                    when = chans[burst[6]].post_write(now, burst[5]) if chans else 0.0
                    responses.append((burst[3], burst[4], when))
            if aw_on and _on(awvalid):
                addr, beats, size = _u(s["awaddr"]), _u(s["awlen"]) + 1, 1 << _u(s["awsize"])
                k, crosses = self._window(addr, beats, size)
                self.crossings += crosses
                bursts.append([addr, beats, size, _u(s["awid"]), _SLVERR if crosses else _OKAY, beats, k, crosses])
                self.bursts["write"] += 1
            if not b_on:
                if responses and now + 1 >= responses[0][2] and not (pause_b and self._paused("b")):
                    ident, resp, _ = responses.popleft()
                    bid.value, bresp.value, bvalid.value = ident, resp, 1
                    b_on = True
                else:
                    bvalid.value = 0
            elif pause_b:
                self._paused("b")
            w_next = bool(bursts) and not (pause_w and self._paused("w"))
            if w_next != w_on:
                wready.value = w_on = w_next
            aw_next = len(bursts) < self.max_writes and not (pause_aw and self._paused("aw"))
            if aw_next != aw_on:
                awready.value = aw_on = aw_next

    def __repr__(self) -> str:
        memory = "ideal" if not self.channels else (
            "DDR4" if len(self.channels) == 1 else f"{len(self.channels)} DDR4 channels")
        return f"AxiMemory({self.size} bytes, {8 * self.lanes}-bit, {memory})"


def _runs(strb: int, lanes: int) -> list[tuple[int, int]]:
    """Byte ranges ``[lo, hi)`` of consecutive set strobe bits."""
    out = []
    i = 0
    while i < lanes:
        if strb >> i & 1:
            j = i
            while j < lanes and strb >> j & 1:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out
