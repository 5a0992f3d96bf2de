"""cocotb RTL tests of ``sat.hw.array.SystolicArray`` on its own (``sim/tb_array.py``, the testbench is the
feeder): dense and every N:M of the build, random ``en`` stalls, bubble groups and drain back-pressure, ragged
tiles, bit for bit against ``sat.sw.numerics``; plus a Verilator lint of the array top."""

from __future__ import annotations

import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tops import array_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_array"

CONFIGS = {
    "2x3_bf16_l2": SATConfig(rows=2, cols=3, fmt="bf16", adder_latency=2),
    "4x4_fp16_l4": SATConfig(rows=4, cols=4, fmt="fp16", adder_latency=4),
}


def _run(name: str, seed: int, **sizes) -> None:
    config = CONFIGS[name]
    params = {"config": config.to_dict(), "seed": seed, "en_stall": 0.15, "bubble": 0.1, "backpressure": 0.3,
              **sizes}
    run_cocotb(array_top(config), TB, params=params)


def test_array_2x3(sim_seed: int) -> None:
    _run("2x3_bf16_l2", sim_seed, rows=11, red=19, cols=7)


@pytest.mark.slow
def test_array_4x4(sim_seed: int) -> None:
    _run("4x4_fp16_l4", sim_seed + 1, rows=37, red=45, cols=9)
