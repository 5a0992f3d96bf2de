"""cocotb RTL tests of ``sat.hw.gemm.GemmEngine`` (``sim/tb_gemm.py``): FF, BP and WU GEMMs of random layers,
dense and every N:M of the build, FP16 on a 2x2 array and BF16 on a 4x4 array, ragged shapes, random write
stalls and result back-pressure; results bit for bit against ``sat.sw.numerics``, counters equal to
``sat.sw.perfmodel``. Plus a Verilator lint of the engine top."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tops import gemm_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_gemm"
#: Buffers of the engine under test (halves hold alternate GEMMs: loads overlap compute).
DEPTHS = {"a_depth": 512, "b_depth": 1024}

CONFIGS = {
    "2x2_fp16": SATConfig(rows=2, cols=2, fmt="fp16", **DEPTHS),
    "4x4_bf16": SATConfig(rows=4, cols=4, fmt="bf16", **DEPTHS),
}
#: Slow-only builds: odd array shapes, other adder latencies, a smaller nm_set.
SLOW_CONFIGS = {
    "3x2_fp16_l1": SATConfig(rows=3, cols=2, fmt="fp16", adder_latency=1, nm_set=((2, 4), (1, 8)), **DEPTHS),
    "1x3_bf16_l2": SATConfig(rows=1, cols=3, fmt="bf16", adder_latency=2, **DEPTHS),
}


def layer_cases(config: SATConfig, seed: int, layers: int, max_dim: int) -> list[dict]:
    """FF, BP and WU of ``layers`` random layers per N:M (dense included), ragged shapes, some with stalls."""
    rng = np.random.default_rng([seed, config.rows, config.cols])
    specs = []
    patterns = [None, *config.nm_set]
    for _ in range(layers):
        for nm in patterns:
            batch = int(rng.integers(1, max_dim + 1))
            c_out = int(rng.integers(1, max_dim + 1))
            k = int(rng.integers(1, max_dim + 1))
            for kind in ("ff", "bp") if nm is not None else ("ff", "bp", "wu"):
                specs.append({"kind": kind, "batch": batch, "c_out": c_out, "k": k,
                              "nm": list(nm) if nm else None, "stalls": bool(rng.random() < 0.3)})
    return specs


def _run(name: str, seed: int, layers: int = 1, max_dim: int = 20, **kwargs) -> None:
    config = {**CONFIGS, **SLOW_CONFIGS}[name]
    top = gemm_top(config)
    params = {"config": config.to_dict(), "seed": seed, "cases": layer_cases(config, seed, layers, max_dim)}
    run_cocotb(top, TB, params=params, **kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gemm_engine(name: str, sim_seed: int) -> None:
    _run(name, sim_seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gemm_engine_long(name: str, sim_seed: int) -> None:
    _run(name, sim_seed + 100, layers=4, max_dim=28, testcase="gemm_sweep")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CONFIGS))
def test_gemm_engine_other_shapes(name: str, sim_seed: int) -> None:
    _run(name, sim_seed + 200, layers=2, max_dim=16)
