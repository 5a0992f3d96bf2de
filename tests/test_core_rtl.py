"""cocotb RTL tests of ``sat.hw.core.SATCore`` (``sim/tb_core.py``) on Verilator, plus a Verilator lint of the top.

The core runs with the :class:`~sat.sim.loopback.LoopbackEngine` test double in its engine slot (the GEMM unit is
tested end to end in ``tests/test_system_rtl.py``): registers against ``register_map``, OKAY and 0 for undecoded
offsets, descriptor validation against ``GemmDescriptor.validate``, AXI error injection, BUSY/ABORT/reset mid-run,
DMA bursts against the 4 KiB and burst-length rules, memory against the loopback model, and a mid-list
``FLAG_IRQ`` that must not stall ``SATDevice.wait``, all under random AXI pauses.
"""

from __future__ import annotations

import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tb_core import MEMORY_BYTES
from sat.sim.tops import core_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_core"

CONFIGS = {
    "default": (SATConfig(), 256),
    "w128_a32_nm_burst16": (SATConfig(nm_set=((2, 4), (1, 16)), axi_data_width=128, axi_addr_width=32), 16),
}


def _run(name: str, seed: int, testcase: str | None = None, **params) -> None:
    config, max_burst = CONFIGS[name]
    top = core_top(config, memory_bytes=MEMORY_BYTES, max_burst=max_burst)
    run_cocotb(top, TB, params={"config": config.to_dict(), "seed": seed, "max_burst": max_burst, **params},
               testcase=testcase)


def test_core_default(sim_seed: int) -> None:
    """Every testbench of sim/tb_core.py on the default build (512-bit AXI, bursts up to 256 beats)."""
    _run("default", sim_seed)


def test_core_narrow(sim_seed: int) -> None:
    """128-bit data and 32-bit addresses on AXI (a descriptor is 4 beats), another nm_set (1:16 included) and
    16-beat bursts: loop-back, 4 KiB splitting, validation (64-bit address fields against a 32-bit build) and
    AXI errors."""
    _run("w128_a32_nm_burst16", sim_seed + 1, testcase=["loopback_lists", "descriptor_errors", "axi_errors"], lists=3)
