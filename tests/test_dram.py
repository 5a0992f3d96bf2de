"""The DDR4 channel model (``sat.sw.dram``) and the DRAM terms of the GEMM unit's cycle model
(``sat.sw.perfmodel.unit_cycles(..., dram=...)``), in pure Python.

The parameters are checked against the figures they stand for (JEDEC DDR4-2400 speed bin and refresh, the card's
512-bit port at 250 MHz), the scheduler against properties a DDR4 channel must have (idle latency, the bus's
peak and its share of refresh, turnarounds, read priority, the starvation limit), and the cycle model's DRAM
terms against the channel they model. The agreement with the RTL is in ``tests/test_system_rtl.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sat.sw import perfmodel
from sat.sw.config import SATConfig
from sat.sw.dram import DDR4_2400, DRAM_ENV, DDR4Timing, DRAMChannel, dram_from_env, parse_dram

NO_REFRESH = dataclasses.replace(DDR4_2400, trefi_ns=0.0)


def test_peak_port_and_speed_bin() -> None:
    t = DDR4_2400
    assert t.peak_bytes_per_s == pytest.approx(19.2e9)              # 2400 MT/s x 8 bytes
    c = t.cycles(250e6, 64)
    port = 64 * 250e6                                                # the 512-bit AXI port: 16 GB/s
    assert port == pytest.approx(16e9)
    assert 1 / c.beat == pytest.approx(t.peak_bytes_per_s / port)    # 1.2 beats per port cycle
    assert t.tck_ns == pytest.approx(0.8333, abs=1e-4)
    # DDR4-2400T (CL17): tAA = tRCD = tRP = 14.16 ns (JESD79-4 speed bin), within one tCK rounding
    for name in ("cl", "trcd", "trp"):
        assert getattr(t, name) * t.tck_ns == pytest.approx(14.16, abs=0.02)
    # refresh: tRP + tRFC1(8 Gb) = 14.16 + 350 ns every 7.8 us
    assert t.refresh_fraction == pytest.approx((14.16 + 350) / 7800, rel=1e-3)
    assert dataclasses.replace(t, die="16Gb").refresh_fraction == pytest.approx((14.16 + 550) / 7800, rel=1e-3)
    # a channel sustains more than the port moves in one direction, less than both directions together
    assert port < t.sustained_bytes_per_s(1.0) < t.peak_bytes_per_s
    assert t.sustained_bytes_per_s(0.5, 4096) < 2 * port


def test_parameters_checked() -> None:
    with pytest.raises(ValueError, match="die must be one of"):
        DDR4Timing(die="12Gb")
    with pytest.raises(ValueError, match="cl must be a positive integer"):
        DDR4Timing(cl=0)
    with pytest.raises(ValueError, match="cannot exceed"):
        DDR4Timing(read_command_ns=200.0)
    with pytest.raises(ValueError, match="read_share"):
        DDR4_2400.sustained_bytes_per_s(1.5)
    assert DDR4Timing.from_dict(DDR4_2400.as_dict()) == DDR4_2400


def test_parse_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_dram("ddr4") is DDR4_2400 and parse_dram("ideal") is None and parse_dram(None) is None
    assert parse_dram(NO_REFRESH) is NO_REFRESH
    with pytest.raises(ValueError, match="use 'ddr4'"):
        parse_dram("sram")
    monkeypatch.delenv(DRAM_ENV, raising=False)
    assert dram_from_env() is DDR4_2400
    monkeypatch.setenv(DRAM_ENV, "ideal")
    assert dram_from_env() is None
    monkeypatch.setenv(DRAM_ENV, "hbm")
    with pytest.raises(ValueError, match=DRAM_ENV):
        dram_from_env()


def test_idle_latency_and_write_response() -> None:
    ch = DRAMChannel(NO_REFRESH)
    c = ch.c
    # idle: the interconnect both ways plus the IP's read latency
    assert c.read_latency == pytest.approx(2 * NO_REFRESH.interconnect_cycles + NO_REFRESH.read_controller_ns / 4)
    assert ch.read(100.0, 1) == pytest.approx(100 + c.read_latency)
    # posted writes: the response does not wait for the bus
    assert ch.write(1000.0, 4) == pytest.approx(1000 + c.write_response)


def test_bus_peak_and_refresh_share() -> None:
    """Reads offered faster than the bus moves them come out at one beat per ``beat`` cycles, less the refresh
    share of the time (a refresh window moves a burst that would start inside it to its end)."""
    for timing, share in ((NO_REFRESH, 0.0), (DDR4_2400, DDR4_2400.refresh_fraction)):
        ch = DRAMChannel(timing)
        bursts, beats = 3000, 64
        last = 0.0
        for i in range(bursts):
            last = ch.read(i * 16.0, beats)          # 4 beats per cycle offered
        first_beat_end = last - ch.c.read_data        # end of the last burst's first bus slot
        rate = (bursts * beats - beats + 1) / (first_beat_end - ch.c.read_command)
        assert rate * ch.c.beat == pytest.approx(1 - share, rel=0.01)


def test_turnarounds_and_read_priority() -> None:
    c = DRAMChannel(NO_REFRESH).c
    # a write that took the idle bus delays the read behind it by its beats and tWTR
    ch = DRAMChannel(NO_REFRESH)
    ch.write(0.0, 2)                                  # ready for the bus at write_command
    first = ch.read(1.0, 1)                           # arrives after the write took the bus
    slot = c.write_command + 2 * c.beat + c.wtr
    assert first == pytest.approx(slot + c.beat + c.read_data)
    assert ch.stats["turnarounds"] == 1
    # a write that waits while reads hold the bus does not delay a later read (reads first)
    ch = DRAMChannel(NO_REFRESH)
    ch.read(0.0, 64)                                  # holds the bus for 64 beats
    ch.write(1.0, 1)
    start = c.read_command + 64 * c.beat              # the next read follows the first, without a turnaround
    assert ch.read(2.0, 1) == pytest.approx(start + c.beat + c.read_data)
    assert ch.pending and ch.stats["turnarounds"] == 0
    # ... until write_batch writes wait: then they take the bus
    for i in range(c.write_batch - 1):
        ch.write(3.0 + i, 1)
    assert not ch.pending and ch.stats["turnarounds"] == 1


def test_load_profile_matches_load_cycles() -> None:
    """The DRAM terms walk a load's lines as the ideal-memory accounting does (a change to one must reach the
    other)."""
    rng = np.random.default_rng(5)
    for config in (SATConfig(rows=2, cols=2, adder_latency=2, a_depth=32, b_depth=128),
                   SATConfig(rows=4, cols=8, adder_latency=4, a_depth=64, b_depth=256)):
        for _ in range(200):
            kind = str(rng.choice(["a", "b"]))
            trans = bool(rng.integers(2))
            n, m = ((0, 0), (2, 4), (2, 8))[rng.integers(3)] if kind == "b" and not trans else (0, 0)
            red, rt, ct = (int(v) for v in rng.integers(1, 70, 3))
            r0, c0 = int(rng.integers(0, 40)), int(rng.integers(0, 70))
            stride = 2 * int(rng.integers(1, 200))
            args = (config, kind, r0, rt, c0, ct, red, n, m, trans, stride)
            lines = perfmodel._load_profile(*args)
            assert sum(line[0] for line in lines) + perfmodel.LOAD_LATENCY == perfmodel._line_sum_cycles(*args), args
            # without memory latency the loader never waits: the pipeline takes exactly its cycles
            end, _ = perfmodel._load_pipeline(lines, perfmodel._ideal_read, chain=False)
            assert end == perfmodel.RECORD_DELAY - 1 + sum(line[0] for line in lines), args
            _check_chained(lines, end, chain=not (kind == "b" and n))


def _check_chained(lines: list, unchained: int, chain: bool = True) -> None:
    """The chaining loader (a line's record and first beat taken with the previous line's last write) is never
    slower than one line after the other, never faster than its writes alone after the first line's record and
    beat, and the same when it may not chain (packed tiles)."""
    end, _ = perfmodel._load_pipeline(lines, perfmodel._ideal_read, chain=chain)
    writes = sum(line[0] - (2 if line[1] else 1) for line in lines)
    if not chain:
        assert end == unchained
        return
    assert end <= unchained
    assert end >= perfmodel.RECORD_DELAY - 1 + (2 if lines[0][1] else 1) + writes


@pytest.mark.parametrize("pass_", ["ff", "bp", "wu"])
@pytest.mark.parametrize("geometry", [(1, 6, 6, 8, 8, 3, 3, 1, 1), (2, 8, 8, 3, 16, 3, 3, 2, 1),
                                      (1, 8, 8, 8, 16, 1, 1, 2, 0)])
def test_conv_load_profile_matches_conv_load_cycles(pass_: str, geometry: tuple) -> None:
    """A convolution's implicit load as the DRAM terms walk it (its pieces, zero pieces without a read) costs
    what the ideal-memory accounting says, in every row tile (and WU column tile) the unit loads."""
    from sat.sw.descriptor import ConvDescriptor

    config = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128)
    nm = (2, 8) if pass_ != "wu" else (0, 0)
    d = ConvDescriptor(pass_, *geometry, a_addr=0, b_addr=0, c_addr=0, n=nm[0], m=nm[1])
    pieces = 0
    for r0, rt, c0, ct in [(0, 2, 0, 2), (4, 4, 0, 2), (0, 2, 2, 4)]:
        kind = "b" if pass_ == "wu" else "a"
        start = (0, 0, 0) if kind == "b" else None
        lines = perfmodel._conv_load_profile(config, d, kind, r0, rt, c0, ct, start)
        if pass_ == "bp":     # BP's taps run backwards in memory: never merged, one record per piece
            assert sum(line[0] for line in lines) == perfmodel._conv_line_sum_cycles(config, d, kind, r0, rt, c0, ct,
                                                                                     start)
        else:                 # FF/WU: one read per run of contiguous elements of a lowered row
            assert sum(1 for line in lines if line[1]) == _contiguous_runs(d, kind, r0, rt, ct)
        pieces += sum(1 for line in lines if not line[1])
        end, _ = perfmodel._load_pipeline(lines, perfmodel._ideal_read, chain=False)
        assert end >= perfmodel.RECORD_DELAY - 1 + sum(line[0] for line in lines)
        _check_chained(lines, end)
    if geometry[-1]:                                  # padding 1: some taps fall outside the tensor
        assert pieces


def _contiguous_runs(d, kind: str, r0: int, rt: int, ct: int) -> int:
    """Runs of consecutive memory elements in the lowered rows a load reads, from the golden im2col of a tensor
    that holds its own element addresses (0: padding)."""
    import numpy as np

    from sat.sw.conv import im2col

    addresses = 1 + np.arange(d.batch * d.height * d.width * d.c_in).reshape(d.batch, d.height, d.width, d.c_in)
    lowered = im2col(addresses, d.kh, d.kw, d.stride, d.padding)
    rows = lowered[r0:r0 + rt, d.k0:d.k0 + d.red] if kind == "a" else lowered[d.k0:d.k0 + d.red, :ct]
    runs = 0
    for row in rows:
        prev = -1
        for v in row.tolist():
            runs += bool(v) and v != prev + 1
            prev = v or -1    # nothing continues padding
    return runs


def _fast_memory() -> DDR4Timing:
    """A 'DDR4' without latency, refresh or bus limits (a huge data rate): the DRAM terms must vanish."""
    return DDR4Timing(data_rate_mts=10 ** 6, interconnect_cycles=0.0, read_controller_ns=0.0, read_command_ns=0.0,
                      write_response_ns=0.0, write_command_ns=0.0, trefi_ns=0.0, twtr_l=0, cl=1, trtw_gap=0)


@pytest.mark.parametrize("shape", [(13, 40, 9, 0, 0), (7, 256, 9, 2, 8), (30, 20, 30, 0, 0), (64, 64, 64, 2, 8)])
def test_unit_cycles_dram_properties(shape: tuple[int, int, int, int, int]) -> None:
    config = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=32, b_depth=128)
    rows, red, cols, n, m = shape
    for a_trans in (False, True):
        ideal = perfmodel.unit_cycles(config, rows, red, cols, n, m, a_trans=a_trans)
        fast = perfmodel.unit_cycles(config, rows, red, cols, n, m, a_trans=a_trans, dram=_fast_memory())
        noref = perfmodel.unit_cycles(config, rows, red, cols, n, m, a_trans=a_trans, dram=NO_REFRESH)
        full = perfmodel.unit_cycles(config, rows, red, cols, n, m, a_trans=a_trans, dram=DDR4_2400)
        assert fast.cycles == ideal.cycles                        # the terms vanish with an ideal DRAM
        assert ideal.cycles < noref.cycles <= full.cycles         # latency costs, refresh adds
        assert full.busy_cycles == ideal.busy_cycles              # the engine's work does not change
        # refresh costs at most its share of the time
        assert full.cycles - noref.cycles <= math.ceil(DDR4_2400.refresh_fraction * full.cycles) + 1


def test_bus_bound_against_channel() -> None:
    """When a load's reads and the result writes it overlaps need more than the bus moves, the cycle model's
    bound equals the channel's own time for the same traffic within a few percent: a packed 2:8 tile (one long
    line the loader takes at its pace) while the writer writes two-beat rows every 2.5 cycles."""
    config = SATConfig(rows=32, cols=32, adder_latency=4)
    terms = perfmodel._DRAMTerms(config, DDR4_2400, 4 * 512)
    wbursts, wbeats, span = 1600, 3200, 4000
    terms.writes = (0, span, wbursts, wbeats, span, ())          # the writer busy all along
    args = ("b", 0, 32, 0, 32, 2048, 2, 8, False, 64)
    lines = perfmodel._load_profile(config, *args)
    rbeats = sum(line[1] for line in lines)
    ideal = perfmodel._load_cycles(config, *args)
    model = ideal + terms.load(0, ideal, *args)
    assert model > ideal * 1.15                                # the bus, not the loader, bounds this load
    # the channel: reads offered at the loader's pace (one beat a burst), writes as the writer makes them
    ch = DRAMChannel(DDR4_2400)
    events = sorted([(k * ideal / rbeats, "r") for k in range(rbeats)]
                    + [(k * span / wbursts, "w") for k in range(wbursts)])
    last = 0.0
    for t, kind in events:
        if kind == "r":
            last = ch.read(t, 1)
        else:
            ch.write(t, wbeats // wbursts)
    assert model == pytest.approx(last - ch.c.read_latency, rel=0.05)
