"""A DDR4 channel behind a wide AXI port: the parameters (:class:`DDR4Timing`) and a small, fast scheduler
(:class:`DRAMChannel`) that both the cocotb memory (:class:`sat.sim.axi_memory.AxiMemory`) and the cycle model
(:func:`sat.sw.perfmodel.unit_cycles`) use in place of a memory that answers every beat at once.

The model is deliberately not a cycle-exact DRAM simulator. It keeps four things of a DDR4 channel behind the
Xilinx DDR4 IP (PG150) that change how long a DMA engine waits (``docs/dram.md`` gives every number and its
source):

* **latency**: a read burst's first beat reaches the port a fixed time after its address was accepted (the card's
  interconnect, the IP's AXI front end and controller, ``tRCD + CL`` of a closed row, the PHY), a write's response
  a fixed time after its last beat (the controller posts writes);
* **one data bus per channel**, shared by reads and writes: each 64-byte beat holds the DRAM bus for
  ``64 B / (data rate * 8 B)`` (0.83 cycles of a 250 MHz port at DDR4-2400), so a channel moves at most 1.2 beats
  per port cycle, reads and writes together;
* **read/write turnaround**: switching the bus from reads to writes leaves it idle for the ``tRTW`` gap, from
  writes to reads for ``tWTR_L + CL``; reads have priority (the card's ``RD_PRI_REG``), posted writes go when no
  read is waiting, or once ``write_batch`` of them wait;
* **refresh**: every ``tREFI`` the bus is unavailable for ``tRP + tRFC`` (all banks precharged, then refreshed).

Row-buffer hits and misses are not tracked: the card's IP closes every row after its 128-byte access
(``AUTO_AP_COL_A3`` with ``ROW_COLUMN_BANK_INTLV``), so every access pays the closed-row latency (``tRCD``, in the
read latency) and none pays a row conflict (``tRP``), whatever the address pattern.

Times are in cycles of the AXI port's clock, as floats; a beat is presented at the first whole cycle at or after
its time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass

__all__ = ["DDR4Timing", "DRAMCycles", "DRAMChannel", "DDR4_2400", "TRFC_NS", "dram_from_env", "parse_dram", "DRAM_ENV"]

#: ``tRFC1`` (ns) per die density (JESD79-4): the time one REFRESH command blocks the rank.
TRFC_NS: dict[str, float] = {"2Gb": 160.0, "4Gb": 260.0, "8Gb": 350.0, "16Gb": 550.0}

#: Environment variable that selects the simulation's memory model (:func:`dram_from_env`).
DRAM_ENV = "SAT_DRAM"


@dataclass(frozen=True)
class DDR4Timing:
    """Parameters of one DDR4 channel and the path to it (defaults: the VCU1525's DIMM slots, ``docs/dram.md``).

    Device and speed bin (JEDEC JESD79-4, Micron MTA18ASF2G72PZ-2G3: 16 GB single-rank x4 RDIMM of 8 Gb dies,
    DDR4-2400 CL17), in clock cycles ``tCK`` of the DRAM (``2000 / data_rate_mts`` ns) unless named ``_ns``:

    Parameters
    ----------
    data_rate_mts : int
        Transfers per second per pin (millions): 2400 for DDR4-2400 (``tCK`` = 0.833 ns).
    bus_bytes : int
        Data bytes per transfer (64 data bits; the ECC byte carries no data).
    cl, cwl : int
        CAS (read) and CAS write latency (the IP preset: 17 and 12).
    trcd, trp : int
        Activate-to-read and precharge time (17 and 17 at DDR4-2400 CL17, 14.16 ns).
    twtr_l, trtw_gap : int
        Write-to-read delay (same bank group, ``max(4 tCK, 7.5 ns)``) and the idle data-bus time of a
        read-to-write switch (``RL + BL/2 - WL + 2`` command spacing leaves 2 tCK between the bursts).
    burst_length : int
        BL8: one 64-byte access moves ``burst_length * bus_bytes`` bytes in ``burst_length / 2`` tCK.
    page_bytes, banks : int
        Row size of the rank (16 x4 devices of 512 B) and banks (4 groups of 4): documented, not used (rows are
        closed after every access, see the module docstring).
    trefi_ns : float
        Average refresh interval (7.8 us at 0-85 C).
    die : str
        Die density, for ``tRFC1`` (:data:`TRFC_NS`): "8Gb" on the stock RDIMM, "16Gb" on 32 GB DIMMs.
    interconnect_cycles : float
        Port-clock cycles through the card's SmartConnect (250 MHz to the IP's 300 MHz ``ui_clk``), each way.
    read_controller_ns : float
        The IP's read latency at its AXI port for an idle channel and a closed row: AXI front end, controller,
        ACTIVATE, ``tRCD``, READ, ``CL``, PHY and back (Shuhai's measurements of the same IP on an Alveo U280,
        see ``docs/dram.md``).
    read_command_ns : float
        Part of ``read_controller_ns`` before the read reaches the DRAM data bus (AXI front end and scheduling):
        only decides how reads and writes meet on the bus.
    write_response_ns : float
        From the last write beat at the IP's AXI port to its ``B`` response: the controller takes the write into
        its write data buffer and answers (posted write).
    write_command_ns : float
        From the last write beat to the write being ready for the DRAM bus.
    write_batch : int
        Posted writes waiting before they take the bus even though reads wait (the starvation limit of the
        read-priority arbitration).
    """

    data_rate_mts: int = 2400
    bus_bytes: int = 8
    cl: int = 17
    cwl: int = 12
    trcd: int = 17
    trp: int = 17
    twtr_l: int = 9
    trtw_gap: int = 2
    burst_length: int = 8
    page_bytes: int = 8192
    banks: int = 16
    trefi_ns: float = 7800.0
    die: str = "8Gb"
    interconnect_cycles: float = 5.0
    read_controller_ns: float = 90.0
    read_command_ns: float = 20.0
    write_response_ns: float = 33.3
    write_command_ns: float = 20.0
    write_batch: int = 16

    def __post_init__(self) -> None:
        if self.die not in TRFC_NS:
            raise ValueError(f"die must be one of {sorted(TRFC_NS)}, not {self.die!r}")
        for name in ("data_rate_mts", "bus_bytes", "cl", "cwl", "burst_length", "write_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("trcd", "trp", "twtr_l", "trtw_gap", "page_bytes", "banks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        for name in ("trefi_ns", "interconnect_cycles", "read_controller_ns", "read_command_ns",
                     "write_response_ns", "write_command_ns"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ValueError(f"{name} must be a non-negative number, not {value!r}")
        if self.read_command_ns > self.read_controller_ns:
            raise ValueError(f"read_command_ns ({self.read_command_ns}) is part of read_controller_ns "
                             f"({self.read_controller_ns}) and cannot exceed it")

    # ------------------------------------------------------------------------------------------ derived figures
    @property
    def tck_ns(self) -> float:
        """DRAM clock period (two transfers per clock)."""
        return 2000.0 / self.data_rate_mts

    @property
    def trfc_ns(self) -> float:
        return TRFC_NS[self.die]

    @property
    def peak_bytes_per_s(self) -> float:
        """Data rate of the channel's bus: 19.2 GB/s at DDR4-2400 x64."""
        return self.data_rate_mts * 1e6 * self.bus_bytes

    @property
    def refresh_ns(self) -> float:
        """Bus time lost per refresh: precharge all banks, then ``tRFC``."""
        return self.trp * self.tck_ns + self.trfc_ns

    @property
    def refresh_fraction(self) -> float:
        """Share of time the channel is refreshing (4.7 % with 8 Gb dies)."""
        return self.refresh_ns / self.trefi_ns if self.trefi_ns else 0.0

    @property
    def wtr_gap_ns(self) -> float:
        """Idle data-bus time from the last write data to the first read data: ``tWTR_L`` after the write's
        data, then the read command's ``CL``."""
        return (self.twtr_l + self.cl) * self.tck_ns

    @property
    def rtw_gap_ns(self) -> float:
        return self.trtw_gap * self.tck_ns

    def sustained_bytes_per_s(self, read_share: float = 1.0, batch_bytes: float = 4096.0) -> float:
        """Sustained bandwidth of the DRAM bus for a mix with ``read_share`` of the bytes read, reads and writes
        alternating in runs of ``batch_bytes`` written (one turnaround each way per run), with refresh.

        Raises
        ------
        ValueError
            For a share outside [0, 1] or a run that is not positive.
        """
        if not 0.0 <= read_share <= 1.0:
            raise ValueError(f"read_share must lie in [0, 1], not {read_share!r}")
        if batch_bytes <= 0:
            raise ValueError(f"batch_bytes must be positive, not {batch_bytes!r}")
        ns_per_byte = 1e9 / self.peak_bytes_per_s
        if 0.0 < read_share < 1.0:
            write_bytes = batch_bytes
            read_bytes = batch_bytes * read_share / (1.0 - read_share)
            ns = (read_bytes + write_bytes) * ns_per_byte + self.wtr_gap_ns + self.rtw_gap_ns
            rate = (read_bytes + write_bytes) / ns * 1e9
        else:
            rate = self.peak_bytes_per_s
        return rate * (1.0 - self.refresh_fraction)

    def cycles(self, clock_hz: float = 250e6, port_bytes: int = 64) -> DRAMCycles:
        """The parameters in cycles of an AXI port of ``port_bytes`` per beat at ``clock_hz``.

        Raises
        ------
        ValueError
            For a clock or a beat size that is not positive.
        """
        if not clock_hz > 0 or not isinstance(port_bytes, int) or port_bytes < 1:
            raise ValueError(f"need a positive clock and beat size, not {clock_hz!r} Hz, {port_bytes!r} bytes")
        ns = 1e9 / clock_hz
        beat = port_bytes / self.peak_bytes_per_s * clock_hz
        ic = self.interconnect_cycles
        return DRAMCycles(
            beat=beat,
            read_command=ic + self.read_command_ns / ns,
            read_data=ic + (self.read_controller_ns - self.read_command_ns) / ns - beat,
            write_command=ic + self.write_command_ns / ns,
            write_response=2 * ic + self.write_response_ns / ns,
            rtw=self.rtw_gap_ns / ns,
            wtr=self.wtr_gap_ns / ns,
            refresh_period=self.trefi_ns / ns if self.trefi_ns else math.inf,
            refresh=self.refresh_ns / ns if self.trefi_ns else 0.0,
            write_batch=self.write_batch,
        )

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DDR4Timing:
        return cls(**d)


#: The VCU1525's channels: DDR4-2400 CL17 RDIMM (MTA18ASF2G72PZ-2G3, 8 Gb x4 dies) behind SmartConnect.
DDR4_2400 = DDR4Timing()


@dataclass(frozen=True)
class DRAMCycles:
    """:class:`DDR4Timing` in port cycles (:meth:`DDR4Timing.cycles`).

    ``beat``: bus time of one port beat; ``read_command`` / ``read_data``: from the address handshake to the
    read's bus slot, and from the end of a beat's bus slot to that beat at the port (so an idle channel answers
    after ``read_command + beat + read_data`` cycles, :attr:`read_latency`); ``write_command``: from the last
    write beat to the write's earliest bus slot; ``write_response``: from the last write beat to ``B``;
    ``rtw`` / ``wtr``: idle bus between a read and a write and between a write and a read; ``refresh`` cycles
    lost every ``refresh_period``; ``write_batch``: see :class:`DDR4Timing`.
    """

    beat: float
    read_command: float
    read_data: float
    write_command: float
    write_response: float
    rtw: float
    wtr: float
    refresh_period: float
    refresh: float
    write_batch: int

    @property
    def read_latency(self) -> float:
        """Cycles from a read's address handshake to its first beat, channel idle."""
        return self.read_command + self.beat + self.read_data


class DRAMChannel:
    """The state of one channel's data bus: reservations in arrival order, reads first (see the module
    docstring).

    :meth:`read` and :meth:`write` must be called in non-decreasing order of their time argument (the order in
    which the bursts reach the controller); each returns when the port sees the result.

    Parameters
    ----------
    timing : DDR4Timing
    clock_hz : float
        Port clock.
    port_bytes : int
        Bytes per port beat.
    refresh_phase : float
        Port cycle of the first refresh (refreshes every ``refresh_period`` cycles from there).
    """

    def __init__(self, timing: DDR4Timing = DDR4_2400, clock_hz: float = 250e6, port_bytes: int = 64, *,
                 refresh_phase: float = 0.0) -> None:
        self.timing = timing
        self.c = timing.cycles(clock_hz, port_bytes)
        self.refresh_phase = float(refresh_phase)
        self.bus_free = -math.inf     # end of the last reservation
        self.last_write = False       # direction of the last reservation
        self.pending: deque[tuple[float, int]] = deque()   # posted writes: (earliest bus slot, beats)
        self._waited = False          # the last slot was moved past a refresh
        self._inbox: list[tuple[int, int, int, list[float] | None]] = []   # posted, not yet taken
        #: Bursts and beats served, turnarounds, bursts moved past a refresh (for reports).
        self.stats = {"reads": 0, "writes": 0, "read_beats": 0, "write_beats": 0, "turnarounds": 0,
                      "refresh_waits": 0}

    def _slot(self, t: float, write: bool) -> float:
        """Earliest start of a reservation ready at ``t``: after the bus is free (and turned around), outside
        refresh."""
        c = self.c
        free = self.bus_free
        if write != self.last_write:
            free += c.rtw if write else c.wtr
        s = t if t > free else free
        off = (s - self.refresh_phase) % c.refresh_period
        self._waited = off < c.refresh
        if self._waited:
            s += c.refresh - off
        return s

    def _reserve(self, s: float, beats: int, write: bool) -> None:
        if write != self.last_write and self.bus_free > -math.inf:
            self.stats["turnarounds"] += 1
        if self._waited:
            self.stats["refresh_waits"] += 1
        self.bus_free = s + beats * self.c.beat
        self.last_write = write

    def _drain(self, until: float, force: bool = False) -> None:
        """Give the bus to the posted writes that would have started before ``until`` (all of them if
        ``force``)."""
        pending = self.pending
        while pending:
            t, beats = pending[0]
            s = self._slot(t, True)
            if s > until and not force:
                return
            pending.popleft()
            self._reserve(s, beats, True)

    def read(self, t: float, beats: int) -> float:
        """A read burst of ``beats`` whose address was accepted at ``t``: returns when its first beat reaches
        the port (beat ``k`` at that time ``+ k * beat``)."""
        c = self.c
        ready = t + c.read_command
        if self.pending:
            self._drain(ready)        # writes that started before this read arrived
        s = self._slot(ready, False)
        self._reserve(s, beats, False)
        self.stats["reads"] += 1
        self.stats["read_beats"] += beats
        return s + c.beat + c.read_data

    def write(self, t: float, beats: int) -> float:
        """A write burst of ``beats`` whose last beat was accepted at ``t``: returns when its response is
        sent."""
        c = self.c
        ready = t + c.write_command
        if self.pending:
            self._drain(ready)
        self.pending.append((ready, beats))
        if len(self.pending) >= c.write_batch:
            self._drain(ready, force=True)
        self.stats["writes"] += 1
        self.stats["write_beats"] += beats
        return t + c.write_response

    # ------------------------------------------------------------------------------ bursts seen cycle by cycle
    def post_read(self, t: int, beats: int) -> list[float]:
        """Queue a read whose address was accepted in cycle ``t``; its first beat's time is known once
        :meth:`settle` has passed ``t`` (``handle[0]``, infinite until then).

        Bursts of one cycle are taken reads first, whatever order the caller posts them in, so a simulation's
        timing does not depend on the order its coroutines run in."""
        handle = [math.inf]
        self._inbox.append((t, 0, beats, handle))
        return handle

    def post_write(self, t: int, beats: int) -> float:
        """Queue a write whose last beat was accepted in cycle ``t``; returns when its response is sent."""
        self._inbox.append((t, 1, beats, None))
        return t + self.c.write_response

    def settle(self, now: int) -> None:
        """Take the queued bursts of the cycles before ``now``, in cycle order, reads first."""
        inbox = self._inbox
        if not inbox or min(e[0] for e in inbox) >= now:
            return
        due = sorted((e for e in inbox if e[0] < now), key=lambda e: (e[0], e[1]))
        self._inbox = [e for e in inbox if e[0] >= now]
        for t, kind, beats, handle in due:
            if kind:
                self.write(t, beats)
            else:
                handle[0] = self.read(t, beats)

    def __repr__(self) -> str:
        return f"DRAMChannel({self.timing.data_rate_mts} MT/s, beat {self.c.beat:.3f} cycles)"


def parse_dram(value: DDR4Timing | str | None) -> DDR4Timing | None:
    """A memory model given as a :class:`DDR4Timing`, ``None`` (ideal) or a name: ``"ddr4"`` (:data:`DDR4_2400`)
    or ``"ideal"``.

    Raises
    ------
    ValueError
        For another name, naming the accepted ones.
    """
    if value is None or isinstance(value, DDR4Timing):
        return value
    name = str(value).strip().lower()
    if name in ("ddr4", "ddr4-2400", "on", "1"):
        return DDR4_2400
    if name in ("ideal", "off", "none", "0"):
        return None
    raise ValueError(f"unknown memory model {value!r}: use 'ddr4' (DDR4-2400 channel model) or 'ideal' "
                     f"(no wait states)")


def dram_from_env(default: str = "ddr4") -> DDR4Timing | None:
    """The simulation's memory model from ``$SAT_DRAM`` (:func:`parse_dram`; ``ddr4`` when unset).

    Raises
    ------
    ValueError
        For a value :func:`parse_dram` does not know.
    """
    import os

    value = os.environ.get(DRAM_ENV, "") or default
    try:
        return parse_dram(value)
    except ValueError as e:
        raise ValueError(f"${DRAM_ENV}: {e}") from None
