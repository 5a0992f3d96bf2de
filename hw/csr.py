"""The AXI4-Lite register block, generated from ``register_map(config)`` (``sat.sw.regmap``).

Each register of the map becomes hardware by its access type and name:

* ``ro`` registers driven by the core (:data:`LIVE`): a 32-bit input port named after the register
  (``status``, ``error_code``...).
* ``ro`` performance counters (``sat.sw.regmap.PERF_COUNTERS``, a ``<NAME>_LO`` / ``<NAME>_HI`` pair): one 64-bit
  input port ``<name>``; reading
  ``_LO`` returns bits 31:0 and latches bits 63:32, which the next ``_HI`` read returns (a ``_HI`` read with
  nothing latched since reset or since ``latch_clear`` returns the live bits 63:32; the core pulses
  ``latch_clear`` when a list starts and clears the counters).
* every other ``ro`` register (identity: ``ID``, ``VERSION``, ``CONFIG``, ``NM_SET_*``, ``CONFIG_HASH``,
  ``MEM_SIZE_*``, ``MEM_CHANNELS``, ``CLOCK_KHZ``): a constant equal to its reset value in
  ``register_map(config, memory_bytes, channels=memory_channels)``.
* ``rw``: a register (reset value from the map) driving a 32-bit output port of the same name.
* ``wo`` (``CONTROL``): reads return 0; a write drives ``<name>_data`` for one cycle with ``<name>_write``
  set (self-clearing command bits).
* ``w1c`` (``IRQ_STATUS``): a register with a ``<name>_set`` input (bits set each cycle, winning over a
  simultaneous clear) and an output port of its value; writing 1 clears a bit.

Byte strobes apply to every write (a byte with ``wstrb`` low is written as unchanged / 0 for command bits).
Registers are decoded by 32-bit word (address bits 1:0 are ignored, as AXI4-Lite masters put a byte address
on ``awaddr`` for a narrow write and mark the bytes with ``wstrb``). A word address the map does not decode answers
OKAY: reads return 0, writes are ignored. (Not SLVERR: XDMA turns an SLVERR on its AXI-Lite master into a PCIe
completer abort, and its Linux driver probes BAR0 + 0x2000 and + 0x3000 on every load.) AW and W are accepted
independently in any order and held until both are present; a write
or read response is held until ``bready``/``rready``, and no new address is accepted on that side meanwhile.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sat.sw.config import SATConfig
from sat.sw.regmap import DEFAULT_MEMORY_BYTES, PERF_COUNTERS, Register, RegisterMap, register_map

__all__ = ["LIVE", "axil_slave_signature", "CSRBlock", "port_name"]

#: Read-only registers driven by the core (input ports); every other read-only register that is not a
#: performance counter is a build constant (ID, VERSION, CONFIG, NM_SET_*, CONFIG_HASH, MEM_SIZE_*, CLOCK_KHZ...).
LIVE = ("STATUS", "ERROR_CODE", "ERROR_INDEX", "CMD_DONE", "LAST_TAG")


def axil_slave_signature(addr_width: int) -> wiring.Signature:
    """AXI4-Lite slave ports (32-bit data), without a prefix, as seen from the slave."""
    if not isinstance(addr_width, int) or not 8 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer between 8 and 64, not {addr_width!r}")
    return wiring.Signature({
        "awaddr": In(addr_width), "awprot": In(3), "awvalid": In(1), "awready": Out(1),
        "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
        "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
        "araddr": In(addr_width), "arprot": In(3), "arvalid": In(1), "arready": Out(1),
        "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
    })


def port_name(register: Register) -> str:
    """Port name of a register: its name in lower case (``CMD_ADDR_LO`` -> ``cmd_addr_lo``)."""
    return register.name.lower()


def _counters(regmap: RegisterMap) -> dict[str, tuple[Register, Register]]:
    """``{base name: (_LO, _HI)}`` for every performance counter of the map.

    Raises
    ------
    ValueError
        If a counter is not a read-only ``_LO``/``_HI`` pair at consecutive offsets.
    """
    out = {}
    for name, _ in PERF_COUNTERS:
        lo, hi = regmap[f"{name}_LO"], regmap[f"{name}_HI"]
        if lo.access != "ro" or hi.access != "ro" or hi.offset != lo.offset + 4:
            raise ValueError(f"counter {name} must be a read-only _LO/_HI pair at consecutive offsets")
        out[name] = (lo, hi)
    return out


class CSRBlock(wiring.Component):
    """AXI4-Lite slave exposing the register map of ``config`` (see the module docstring for the ports).

    Parameters
    ----------
    config : SATConfig
        The build; identity registers carry its parameters.
    memory_bytes : int
        Device memory size, reported in ``MEM_SIZE_LO``/``MEM_SIZE_HI``.
    memory_channels : int
        Channels the device memory is split into (equal windows from address 0), reported in ``MEM_CHANNELS``.
    addr_width : int
        Width of ``awaddr``/``araddr`` (all bits are decoded: offsets outside the map read 0, writes there are
        ignored).

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    ValueError
        For an ``addr_width`` that cannot hold the map, or a register map this block cannot build.
    """

    def __init__(self, config: SATConfig, *, memory_bytes: int = DEFAULT_MEMORY_BYTES, memory_channels: int = 1,
                 addr_width: int = 32) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if not isinstance(memory_bytes, int) or not 0 < memory_bytes < 1 << 64:
            raise ValueError(f"memory_bytes must be a positive integer below 2**64, not {memory_bytes!r}")
        regmap = register_map(config, memory_bytes, channels=memory_channels)
        if not isinstance(addr_width, int) or not (regmap.size - 1).bit_length() <= addr_width <= 64:
            raise ValueError(f"addr_width must be an integer between {(regmap.size - 1).bit_length()} and 64, "
                             f"not {addr_width!r}")
        self._config = config
        self._regmap = regmap
        self._addr_width = addr_width
        self._counter_pairs = _counters(regmap)
        counter_regs = {r.name for pair in self._counter_pairs.values() for r in pair}
        members: dict[str, wiring.Member] = dict(axil_slave_signature(addr_width).members)
        for name in self._counter_pairs:
            members[name.lower()] = In(64)
        members["latch_clear"] = In(1)
        for r in regmap.registers:
            if r.name in counter_regs or r.access == "ro" and r.name not in LIVE:
                continue
            if r.access == "ro":
                members[port_name(r)] = In(32)
            elif r.access == "rw":
                members[port_name(r)] = Out(32, init=r.reset)
            elif r.access == "wo":
                members[f"{port_name(r)}_data"] = Out(32)
                members[f"{port_name(r)}_write"] = Out(1)
            elif r.access == "w1c":
                members[f"{port_name(r)}_set"] = In(32)
                members[port_name(r)] = Out(32, init=r.reset)
            else:
                raise ValueError(f"register {r.name} has unknown access {r.access!r}")
        for name in LIVE:
            if regmap[name].access != "ro":
                raise ValueError(f"register {name} must be read-only")
        super().__init__(members)

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def regmap(self) -> RegisterMap:
        return self._regmap

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def elaborate(self, platform) -> Module:
        m = Module()
        regmap = self._regmap
        counter_of = {lo.name: (name, 0) for name, (lo, hi) in self._counter_pairs.items()}
        counter_of.update({hi.name: (name, 1) for name, (lo, hi) in self._counter_pairs.items()})
        latched = {name: Signal(32, name=f"{name.lower()}_hi_latch") for name in self._counter_pairs}
        latch_valid = {name: Signal(name=f"{name.lower()}_hi_latched") for name in self._counter_pairs}

        # ------------------------------------------------------------------------------------ writes
        aw_addr = Signal(self._addr_width, name="aw_addr")
        aw_full = Signal(name="aw_full")
        w_data = Signal(32, name="w_data")
        w_strb = Signal(4, name="w_strb")
        w_full = Signal(name="w_full")
        m.d.comb += [self.awready.eq(~aw_full), self.wready.eq(~w_full)]
        with m.If(self.awvalid & self.awready):
            m.d.sync += [aw_addr.eq(self.awaddr), aw_full.eq(1)]
        with m.If(self.wvalid & self.wready):
            m.d.sync += [w_data.eq(self.wdata), w_strb.eq(self.wstrb), w_full.eq(1)]
        with m.If(self.bvalid & self.bready):
            m.d.sync += self.bvalid.eq(0)

        # the register is addressed by the 32-bit word: byte addresses inside a word select it, with strobes
        aw_word = Signal(self._addr_width, name="aw_word")
        ar_word = Signal(self._addr_width, name="ar_word")
        m.d.comb += [aw_word.eq(Cat(C(0, 2), aw_addr[2:])), ar_word.eq(Cat(C(0, 2), self.araddr[2:]))]
        mask = Signal(32, name="w_mask")
        m.d.comb += mask.eq(Cat(*[bit.replicate(8) for bit in w_strb]))
        do_write = Signal(name="do_write")
        m.d.comb += do_write.eq(aw_full & w_full & (~self.bvalid | self.bready))

        for r in regmap.registers:
            if r.access in ("wo", "w1c"):
                continue
            if r.access == "rw":
                reg = getattr(self, port_name(r))
                with m.If(do_write & (aw_word == r.offset)):
                    m.d.sync += reg.eq((reg & ~mask) | (w_data & mask))
        # command bits: one-cycle pulse
        for r in regmap.registers:
            if r.access == "wo":
                m.d.sync += [getattr(self, f"{port_name(r)}_write").eq(0), getattr(self, f"{port_name(r)}_data").eq(0)]
                with m.If(do_write & (aw_word == r.offset)):
                    m.d.sync += [
                        getattr(self, f"{port_name(r)}_write").eq(1),
                        getattr(self, f"{port_name(r)}_data").eq(w_data & mask),
                    ]
            elif r.access == "w1c":
                reg = getattr(self, port_name(r))
                clear = Signal(32, name=f"{port_name(r)}_clear")
                with m.If(do_write & (aw_word == r.offset)):
                    m.d.comb += clear.eq(w_data & mask)
                m.d.sync += reg.eq((reg & ~clear) | getattr(self, f"{port_name(r)}_set"))

        with m.If(do_write):   # OKAY for every address: a write the map does not decode is ignored
            m.d.sync += [aw_full.eq(0), w_full.eq(0), self.bvalid.eq(1), self.bresp.eq(0)]

        # ------------------------------------------------------------------------------------ reads
        with m.If(self.latch_clear):
            m.d.sync += [v.eq(0) for v in latch_valid.values()]
        m.d.comb += self.arready.eq(~self.rvalid)
        with m.If(self.rvalid & self.rready):
            m.d.sync += self.rvalid.eq(0)
        with m.If(self.arvalid & self.arready):
            m.d.sync += [self.rvalid.eq(1), self.rresp.eq(0), self.rdata.eq(0)]   # undecoded: OKAY, 0
            with m.Switch(ar_word):
                for r in regmap.registers:
                    with m.Case(r.offset):
                        if r.name in counter_of:
                            base, half = counter_of[r.name]
                            value = getattr(self, base.lower())
                            if half == 0:
                                m.d.sync += [
                                    self.rdata.eq(value[:32]), latched[base].eq(value[32:]),
                                    latch_valid[base].eq(1),
                                ]
                            else:
                                with m.If(latch_valid[base]):
                                    m.d.sync += self.rdata.eq(latched[base])
                                with m.Else():
                                    m.d.sync += self.rdata.eq(value[32:])
                        elif r.access == "ro" and r.name not in LIVE:
                            m.d.sync += self.rdata.eq(r.reset)
                        elif r.access == "wo":
                            m.d.sync += self.rdata.eq(0)
                        else:
                            m.d.sync += self.rdata.eq(getattr(self, port_name(r)))
        return m
