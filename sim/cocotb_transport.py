"""A cocotb :class:`~sat.sw.driver.transport.Transport`: the unchanged host driver against the simulated core.

:func:`attach` starts the clock, builds a cocotbext-axi ``AxiLiteMaster`` on ``s_axil_*`` and a memory on
``m_axi_*`` (the lean :class:`sat.sim.axi_memory.AxiMemory` by default, or cocotbext-axi's ``AxiSlave`` over a
:class:`FaultyMemory`; both optionally with random pauses on every channel and SLVERR fault injection by address
range; the lean memory is a DDR4 channel by default, :mod:`sat.sw.dram`), resets the core and returns a
:class:`CocotbTransport`. The driver then runs in a thread started with
``cocotb.task.bridge`` while every register access blocks on ``cocotb.task.resume``::

    transport = await attach(dut, config, memory_bytes=1 << 20, pause=0.2, rng=rng)
    device = await bridge(lambda: SATDevice(transport, config))()
    y = await bridge(lambda: device.read_tensor(device.ff(x, w)))()

Host DMA (``dma_write``/``dma_read``) goes straight into the memory (on the card XDMA's DMA does not pass
through the core either). The interrupt behaves as XDMA's events node with MSI: a rising edge of the ``irq``
output sets one pending event (further edges before it is consumed are not counted), and ``wait_irq`` consumes it
or waits for it for at most ``irq_cycles`` clock cycles of simulated time per call, so a driver timeout is bounded
in simulated time as well. A level-sensitive ``wait_irq`` would hide a host that forgets to re-arm.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from sat.sw.config import SATConfig
from sat.sw.dram import DDR4Timing, dram_from_env, parse_dram
from sat.sw.memmap import MemoryMap

__all__ = ["CocotbTransport", "FaultyMemory", "attach", "MEMORIES"]


def _val(handle: Any) -> int:
    v = handle.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


class CocotbTransport:
    """The driver's transport over a simulated ``SATCore`` (see the module docstring).

    Attributes
    ----------
    dut, axil, ram
        The cocotb top, the ``AxiLiteMaster`` and the memory (``AxiMemory`` or ``FaultyMemory``: ``read(addr, n)``,
        ``write(addr, data)``).
    memory_bytes : int
        Size of the RAM (``SATDevice`` uses it as the default device memory).
    faults : list of (lo, hi)
        Byte ranges where the RAM answers SLVERR to the core (reads and writes); host DMA is not affected.
    irq_cycles : int
        Longest wait for the interrupt per ``wait_irq`` call, in clock cycles.
    irq_events : int
        Rising edges of ``irq`` seen since :func:`attach` (counted by :meth:`watch_irq`).
    """

    def __init__(self, dut: Any, axil: Any, ram: Any, memory_bytes: int, irq_cycles: int = 20000) -> None:
        self.dut = dut
        self.axil = axil
        self.ram = ram
        self.memory_bytes = memory_bytes
        self.irq_cycles = irq_cycles
        self.faults: list[tuple[int, int]] = []
        self.irq_events = 0
        self._pending_event = False
        self._event_trigger: Any = None

    async def watch_irq(self) -> None:
        """Coroutine (started by :func:`attach`): one pending event per rising edge of ``irq``, as XDMA with MSI."""
        from cocotb.triggers import Event, RisingEdge

        self._event_trigger = Event()
        while True:
            await RisingEdge(self.dut.irq)
            self.irq_events += 1
            self._pending_event = True
            self._event_trigger.set()

    def _hit(self, addr: int, length: int) -> bool:
        return any(addr < hi and lo < addr + length for lo, hi in self.faults)

    def read32(self, offset: int) -> int:
        from cocotb.task import resume

        from sat.sw.driver.transport import AxiError

        resp = resume(self.axil.read)(offset, 4)
        if int(resp.resp):
            raise AxiError(f"SLVERR reading register offset 0x{offset:x}", offset, False)
        return int.from_bytes(resp.data, "little")

    def write32(self, offset: int, value: int) -> None:
        from cocotb.task import resume

        from sat.sw.driver.transport import AxiError

        resp = resume(self.axil.write)(offset, int(value).to_bytes(4, "little"))
        if int(resp.resp):
            raise AxiError(f"SLVERR writing register offset 0x{offset:x}", offset, True)

    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        self.ram.write(addr, bytes(data))

    def dma_read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self.ram.read(addr, nbytes))

    def wait_irq(self, timeout_s: float) -> bool:
        """Consume the pending interrupt event, waiting for one for at most ``irq_cycles`` clock cycles.

        Raises
        ------
        RuntimeError
            If :meth:`watch_irq` is not running (the transport was not made by :func:`attach`).
        """
        from cocotb.task import resume

        if self._event_trigger is None:
            raise RuntimeError("CocotbTransport.watch_irq is not running: create the transport with attach()")

        async def wait() -> bool:
            from cocotb.triggers import First, Timer

            from .tb import CLOCK_PERIOD_NS

            if not self._pending_event:
                self._event_trigger.clear()
                # a Timer, not ClockCycles: one callback instead of a Python wake-up per clock cycle
                await First(self._event_trigger.wait(), Timer(self.irq_cycles * CLOCK_PERIOD_NS, "ns"))
            got, self._pending_event = self._pending_event, False
            return got

        return resume(wait)()

    def cycle(self) -> int:
        """Clock cycles since :func:`attach` (simulated time / period)."""
        from cocotb.utils import get_sim_time

        from .tb import CLOCK_PERIOD_NS

        return int(get_sim_time("ns") // CLOCK_PERIOD_NS)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"CocotbTransport({self.dut._name}, {self.memory_bytes} bytes)"


MEMORIES = ("lean", "axiram")


class FaultyMemory:
    """Device memory behind cocotbext-axi's ``AxiSlave``, injecting faults through the slave's public ``target``
    interface: a read or write that touches a faulty byte range raises, and ``AxiSlave`` answers it with SLVERR.

    ``read`` / ``write`` are the host's accesses (no AXI traffic, no faults); :attr:`target` is what the slave
    calls.
    """

    class _Target:
        def __init__(self, memory: FaultyMemory) -> None:
            self._memory = memory

        async def read(self, address: int, length: int, **_: Any) -> bytes:
            if self._memory.fault(address, length):
                raise OSError(f"injected read fault at 0x{address:x}")
            return self._memory.read(address, length)

        async def write(self, address: int, data: bytes, **_: Any) -> None:
            if self._memory.fault(address, len(data)):
                raise OSError(f"injected write fault at 0x{address:x}")
            self._memory.write(address, data)

    def __init__(self, size: int, fault: Callable[[int, int], bool]) -> None:
        self.mem = bytearray(size)
        self.fault = fault
        self.target = self._Target(self)

    def read(self, address: int, length: int) -> bytes:
        if not 0 <= address <= address + length <= len(self.mem):
            raise ValueError(f"[0x{address:x}, +{length}) is outside the {len(self.mem)}-byte memory")
        return bytes(self.mem[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        if not 0 <= address <= address + len(data) <= len(self.mem):
            raise ValueError(f"[0x{address:x}, +{len(data)}) is outside the {len(self.mem)}-byte memory")
        self.mem[address:address + len(data)] = data


async def attach(dut: Any, config: SATConfig, *, memory_bytes: int, pause: float = 0.0,
                 rng: np.random.Generator | None = None, irq_cycles: int = 20000, memory: str | None = None,
                 dram: DDR4Timing | str | None = "env", log_level: int | str = logging.WARNING,
                 channels: int = 1) -> CocotbTransport:
    """Clock, AXI-Lite master, AXI memory (random pauses with probability ``pause`` on all ten channels, fault
    injection through :attr:`CocotbTransport.faults`) and reset; returns the transport.

    Parameters
    ----------
    dut
        cocotb handle of a ``SATCore`` top (``clk``, ``rst``, ``s_axil_*``, ``m_axi_*``, ``irq``).
    config : SATConfig
        The build (only used for the data width check).
    memory_bytes : int
        RAM size; build the core with the same ``memory_bytes``.
    pause : float
        Fraction of paused cycles per channel (0: none).
    rng : numpy Generator, optional
        Source of the pause patterns.
    irq_cycles : int
        Longest wait per ``wait_irq`` call, in clock cycles.
    memory : "lean" or "axiram", optional
        The AXI slave on ``m_axi``: :class:`sat.sim.axi_memory.AxiMemory` (``"lean"``, the default, several
        times faster) or cocotbext-axi's ``AxiRam``; default ``$SAT_AXI_MEMORY`` or ``"lean"``.
    dram : DDR4Timing, "ddr4", "ideal", None or "env"
        Timing of the lean memory (:mod:`sat.sw.dram`, ``docs/dram.md``): a DDR4-2400 channel (``"ddr4"``, the
        default through ``"env"`` = ``$SAT_DRAM`` or ``ddr4``) or an ideal memory answering every beat at once
        (``"ideal"`` or ``None``). ``AxiRam`` is always ideal.
    log_level : int or str
        Level of the cocotbext-axi loggers of this top (default WARNING: at INFO they log every burst).
    channels : int
        Memory channels: ``memory_bytes`` in that many equal windows (:class:`sat.sw.memmap.MemoryMap`), each its
        own DRAM channel in the lean memory (``AxiMemory(channel_bytes=...)``), as the card's four; 1: one channel
        for everything. Open the driver with the same ``channels`` so that it places tensors by role.

    Raises
    ------
    ValueError
        For an unknown ``memory`` or ``dram``, a DRAM model with ``AxiRam``, a ``pause`` outside ``[0, 1)`` (1 would
        stall every channel forever), a memory that does not split into ``channels`` windows (or several channels
        with ``AxiRam``) or a top whose ``m_axi`` data width differs from the config's.
    """
    import cocotb
    from cocotb.triggers import ClockCycles
    from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiSlave

    from .axi_memory import AxiMemory
    from .tb import CLOCK_PERIOD_NS, backpressure, idle_inserter, start_clock

    if isinstance(pause, bool) or not isinstance(pause, (int, float)) or not 0 <= pause < 1:
        raise ValueError(f"pause probability must be a number in [0, 1), not {pause!r}")
    memory = (memory or os.environ.get("SAT_AXI_MEMORY", "") or "lean").strip().lower()
    if memory not in MEMORIES:
        raise ValueError(f"the AXI memory model (memory= or $SAT_AXI_MEMORY) must be one of {', '.join(MEMORIES)}, "
                         f"not {memory!r}")
    if isinstance(dram, str) and dram == "env":
        timing = dram_from_env() if memory == "lean" else None
    else:
        timing = parse_dram(dram)
        if timing is not None and memory != "lean":
            raise ValueError("the DRAM model needs the lean memory (memory='lean'); AxiRam answers at once")
    window = MemoryMap.split(memory_bytes, channels).window_bytes      # ValueError names a bad split
    if channels > 1 and memory != "lean":
        raise ValueError("several memory channels need the lean memory (memory='lean'); AxiRam is one memory")
    if len(dut.m_axi_wdata) != config.axi_data_width:
        raise ValueError(f"the top has {len(dut.m_axi_wdata)}-bit m_axi data, the config {config.axi_data_width}")
    for bus in ("s_axil", "m_axi"):
        logging.getLogger(f"cocotb.{dut._name}.{bus}").setLevel(log_level)
    await start_clock(dut)
    dut.rst.value = 1
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    rng = rng if rng is not None else np.random.default_rng(0)

    def gen(kind) -> Iterator[bool]:
        return kind(np.random.default_rng(rng.integers(1 << 62)), pause, 3)

    if pause:
        for ch in (axil.write_if.aw_channel, axil.write_if.w_channel, axil.read_if.ar_channel):
            ch.set_pause_generator(gen(idle_inserter))
        for ch in (axil.write_if.b_channel, axil.read_if.r_channel):
            ch.set_pause_generator(gen(backpressure))
    transport = CocotbTransport(dut, axil, None, memory_bytes, irq_cycles)
    if memory == "lean":
        pauses = {}
        if pause:
            pauses = {"r": gen(idle_inserter), "b": gen(idle_inserter), "aw": gen(backpressure),
                      "w": gen(backpressure), "ar": gen(backpressure)}
        ram = AxiMemory(dut, "m_axi", dut.clk, memory_bytes, rst=dut.rst, fault=transport._hit, pauses=pauses,
                        dram=timing, clock_hz=1e9 / CLOCK_PERIOD_NS,
                        channel_bytes=window if channels > 1 else None)
        ram.start()
    else:
        ram = FaultyMemory(memory_bytes, transport._hit)
        slave = AxiSlave(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, target=ram.target)
        if pause:
            for ch in (slave.read_if.r_channel, slave.write_if.b_channel):
                ch.set_pause_generator(gen(idle_inserter))
            for ch in (slave.write_if.aw_channel, slave.write_if.w_channel, slave.read_if.ar_channel):
                ch.set_pause_generator(gen(backpressure))
    transport.ram = ram
    cocotb.start_soon(transport.watch_irq())
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return transport
