"""The card's four DDR4 channels: the cycle model with the results on a channel of their own
(``perfmodel.unit_cycles(..., dram_channels=4)``) against the one-channel model and against the RTL on a
four-window cocotb memory (``AxiMemory(channel_bytes=...)``, each window its own ``DRAMChannel``), A and B on
channel 1, C on channel 2, command lists on channel 3, as the driver places them on the card
(``sat.sw.memmap.default_placement``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sat.sw.config import SATConfig
from sat.sw.dram import DDR4_2400
from sat.sw.memmap import CARD_MEMORY, default_placement
from sat.sw.perfmodel import unit_cycles

#: The 2x2 build and memory of ``tests/test_system_rtl.py`` (the same Verilog, built once and reused).
CONFIG = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128)
MEMORY_BYTES = 1 << 20
CHANNELS = CARD_MEMORY.channels
#: Deterministic DRAM timing (no refresh) for a per-GEMM check, as ``test_unit_timing_dram``.
DDR4_NO_REFRESH = dataclasses.replace(DDR4_2400, trefi_ns=0.0)
#: Tolerance of ``test_unit_timing_dram`` (one channel): 2 %, 4 cycles for tiny GEMMs; with refresh (an expectation
#: in the model) one refresh window more per refresh period a GEMM spans, and the sum within 1 %.
TIMING_RTOL = 0.02
TIMING_ATOL = 4
TIMING_TOTAL_RTOL = 0.01

#: Sampled shapes (``[kind, rows, red, cols, [n, m] or None]``, kinds of ``sim/tb_system.run_gemm``): a tiled
#: dense GEMM whose loads overlap the previous tile's writes, a WU (A_TRANS) of single-buffered tiles, and a
#: packed 2:8 GEMM with two-column tiles where the one-channel model puts its reads behind the writes (the four
#: channels take 2.9 % off it, more than the tolerance).
SHAPES = [["gemm", 13, 40, 9, None], ["wu", 9, 100, 7, None], ["gemm", 40, 100, 2, [2, 8]]]


def _model(shape: list, dram=DDR4_NO_REFRESH, channels: int = CHANNELS) -> int:
    kind, rows, red, cols, nm = shape
    return unit_cycles(CONFIG, rows, red, cols, *(nm or (0, 0)), a_trans=kind == "wu", b_trans=kind == "ff",
                       dram=dram, dram_channels=channels).cycles


# --- the cycle model ---------------------------------------------------------------------------------------------

#: Shapes of every load path on the 2x2 build: one tile, tiles bound by loads and by compute, single-buffered
#: tiles (red 100), A_TRANS, B_TRANS, packed N:M.
MODEL_SHAPES = [
    ["gemm", 2, 8, 2, None], ["gemm", 13, 40, 9, None], ["gemm", 40, 8, 30, None], ["gemm", 8, 100, 6, None],
    ["wu", 30, 20, 30, None], ["wu", 9, 100, 7, None], ["ff", 11, 40, 7, None], ["ff", 9, 120, 3, None],
    ["gemm", 24, 48, 33, [1, 4]], ["gemm", 7, 256, 9, [2, 8]], ["gemm", 40, 100, 2, [2, 8]],
]


@pytest.mark.parametrize("dram", [DDR4_NO_REFRESH, DDR4_2400], ids=["no-refresh", "refresh"])
def test_four_channels_never_slower_and_never_faster_than_ideal(dram) -> None:
    """Results on their own channel take waits off the loads, never add any: ideal memory <= four channels <=
    one channel, GEMM by GEMM; two channels (operands and results apart too) are the same as four."""
    gained = 0
    for shape in MODEL_SHAPES:
        ideal, one, four = _model(shape, None, 1), _model(shape, dram, 1), _model(shape, dram, 4)
        assert ideal < four <= one, (shape, ideal, four, one)
        assert _model(shape, dram, 2) == four, shape
        gained += four < one
    assert gained >= len(MODEL_SHAPES) // 2      # the overlap with writes is common, not a corner case


def test_four_channels_equal_one_without_writes_to_overlap() -> None:
    """A GEMM of one engine tile has no result writes while it loads: the same time on one channel and on four."""
    for shape in (["gemm", 2, 8, 2, None], ["gemm", 4, 64, 2, [2, 8]], ["wu", 4, 32, 2, None]):
        assert _model(shape, DDR4_2400, 1) == _model(shape, DDR4_2400, CHANNELS), shape


def test_four_channels_ignore_what_only_mixed_traffic_costs() -> None:
    """With the writes on their own channel the read/write turnarounds, the write batch and the writes' path to
    the bus change nothing (they do on one channel); the last write's response latency still ends the command."""
    shapes = [["gemm", 13, 40, 9, None], ["gemm", 40, 100, 2, [2, 8]], ["wu", 30, 20, 30, None]]
    mixed = dataclasses.replace(DDR4_NO_REFRESH, twtr_l=40, trtw_gap=20, write_batch=2, write_command_ns=4.0)
    for shape in shapes:
        assert _model(shape, mixed, CHANNELS) == _model(shape, DDR4_NO_REFRESH, CHANNELS), shape
    assert any(_model(s, mixed, 1) > _model(s, DDR4_NO_REFRESH, 1) for s in shapes)
    # 40 ns more to the B response: 10 port cycles more at the command's end, nothing else
    slow_b = dataclasses.replace(DDR4_NO_REFRESH, write_response_ns=DDR4_NO_REFRESH.write_response_ns + 40.0)
    for shape in shapes:
        assert _model(shape, slow_b, CHANNELS) == _model(shape, DDR4_NO_REFRESH, CHANNELS) + 10, shape


def test_channel_count_checked() -> None:
    with pytest.raises(ValueError, match="channels must be an integer between 1 and 255"):
        unit_cycles(CONFIG, 2, 8, 2, dram=DDR4_2400, dram_channels=0)


# --- the RTL on four channels --------------------------------------------------------------------------------------

@pytest.mark.rtl
@pytest.mark.parametrize("dram", [DDR4_NO_REFRESH, DDR4_2400], ids=["no-refresh", "refresh"])
def test_unit_timing_four_channels(tmp_path: Path, sim_seed: int, dram) -> None:
    """The sampled GEMMs on the 2x2 RTL with a four-window DDR4 memory, operands on channel 1 and results on
    channel 2: results bit for bit (the testbench checks them against the golden model), each channel served only
    its role's bursts (no turnaround on the operand channel), and the unit's time within the one-channel tests'
    tolerance of ``unit_cycles(..., dram_channels=4)`` (``test_unit_timing_dram`` without refresh,
    ``test_unit_timing_dram_resnet18_sample`` with it)."""
    from sat.sim.runner import run_cocotb
    from sat.sim.tops import system_top

    timing, memory = tmp_path / "timing.json", tmp_path / "memory.json"
    run_cocotb(system_top(CONFIG, memory_bytes=MEMORY_BYTES), "sat.sim.tb_system",
               params={"config": CONFIG.to_dict(), "memory_bytes": MEMORY_BYTES, "seed": sim_seed,
                       "timing_shapes": SHAPES, "timing_report": str(timing), "memory_report": str(memory),
                       "dram": dram.as_dict(), "channels": CHANNELS},
               testcase="unit_timing")
    place = default_placement(CHANNELS)
    mem = json.loads(memory.read_text())
    assert mem["placement"] == place and mem["crossings"] == 0
    stats = mem["channels"]
    assert len(stats) == CHANNELS
    operands, results, commands = stats[place["a"]], stats[place["c"]], stats[place["cmd"]]
    assert operands["reads"] > 0 and operands["writes"] == 0 and operands["turnarounds"] == 0
    assert results["writes"] > 0 and results["reads"] == 0 and results["turnarounds"] == 0
    assert commands["reads"] >= len(SHAPES) and commands["writes"] == 0
    assert sum(s["reads"] + s["writes"] for s in stats) == (operands["reads"] + results["writes"]
                                                             + commands["reads"])
    c = dram.cycles(CONFIG.clock_hz, CONFIG.axi_data_width // 8)
    bad = []
    total_rtl = total_model = 0
    for r in json.loads(timing.read_text()):
        shape = [r["kind"], r["rows"], r["red"], r["cols"], r["nm"]]
        model, one = _model(shape, dram), _model(shape, dram, channels=1)
        rtl = r["unit_cycles"]
        total_rtl += rtl
        total_model += model
        line = f"{shape}: RTL {rtl}, model {model} ({100 * (model / rtl - 1):+.1f} %), one-channel model {one}"
        print(line)
        atol = TIMING_ATOL + (c.refresh * -(-rtl // c.refresh_period) if dram.trefi_ns else 0)
        if abs(model - rtl) > max(atol, TIMING_RTOL * rtl):
            bad.append(line)
        if shape == SHAPES[-1] and not dram.trefi_ns:
            # the check tells the layouts apart: one shared channel would be outside the tolerance here
            assert abs(one - rtl) > TIMING_RTOL * rtl, line
    assert not bad, "four-channel timing model outside tolerance:\n" + "\n".join(bad)
    assert abs(total_model - total_rtl) <= TIMING_TOTAL_RTOL * total_rtl, (total_model, total_rtl)


# --- the cocotb memory's channel map (no simulator: a stand-in for the top's signals) ------------------------------

class _Signal:
    def __init__(self, width: int = 1) -> None:
        self.width, self.value = width, 0

    def __len__(self) -> int:
        return self.width


class _Top:
    """Just enough of a top for ``AxiMemory``'s constructor: ``m_axi_*`` signals, 512-bit data."""

    def __getattr__(self, name: str) -> _Signal:
        signal = _Signal(512 if name.endswith("data") else 1)
        setattr(self, name, signal)
        return signal


def _memory(**kw):
    from sat.sim.axi_memory import AxiMemory

    return AxiMemory(_Top(), "m_axi", None, MEMORY_BYTES, **kw)


def test_axi_memory_channel_windows() -> None:
    """One DRAM channel per window, a burst served by its address's window; a burst into the next window is
    flagged (it answers SLVERR); one window keeps the one-channel attribute and never flags a burst."""
    window = MEMORY_BYTES // CHANNELS
    four = _memory(dram=DDR4_2400, channel_bytes=window)
    assert len(four.channels) == CHANNELS and four.channel is None
    assert len({id(c) for c in four.channels}) == CHANNELS
    assert four._window(0, 1, 64) == (0, False)
    assert four._window(window + 64, 64, 64) == (1, False)            # 4 KiB inside window 1
    assert four._window(2 * window - 64, 1, 64) == (1, False)         # its last beat
    assert four._window(2 * window - 64, 2, 64) == (1, True)          # its last beat and the next window's first
    assert four._window(3 * window + 100, 1, 4) == (3, False)
    one = _memory(dram=DDR4_2400)
    assert one.channels == [one.channel] and one.channel is not None
    assert one._window(MEMORY_BYTES - 64, 4, 64) == (0, False)        # past the end: SLVERR beat by beat instead
    ideal = _memory(channel_bytes=window)
    assert ideal.channels == [] and ideal.channel is None and ideal._window(window - 64, 2, 64) == (0, True)


@pytest.mark.parametrize("bad", [0, -4096, 3 << 12, 1.5, True])
def test_axi_memory_rejects_undecodable_windows(bad) -> None:
    with pytest.raises(ValueError, match="channel_bytes must be a positive power of two"):
        _memory(dram=DDR4_2400, channel_bytes=bad)
