"""cocotb RTL tests of ``sat.hw.pe.PE`` on the generated Verilog (``sim/tb_pe.py``): small random GEMM rows,
dense and every N:M of ``config.nm_set``, FP16 and BF16, with random ``en`` stalls and bubbles, bit for bit
against ``sat.sw.numerics.matmul`` / ``matmul_sparse``, plus one-MAC-per-cycle from the PE's counters."""

import pytest

from sat.sim.runner import run_cocotb
from sat.sim.tops import pe_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_pe"


def _run(config: SATConfig, seed: int, *, prenormalized: bool = False, **sizes: int) -> None:
    top = pe_top(config, prenormalized=prenormalized)
    assert top.meta["interleave"] == config.adder_latency
    result = run_cocotb(top, TB, params={"config": config.to_dict(), "latency": top.meta["latency"],
                                         "seed": seed, "prenormalized": prenormalized, **sizes})
    expected = ["pe_dense", "pe_mixed", "pe_sparse", "pe_steady_state"]
    assert sorted(result.tests) == [t for t in expected if config.nm_set or t != "pe_sparse"]


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_pe(fmt: str, sim_seed: int) -> None:
    _run(SATConfig(fmt=fmt), sim_seed, rows=4, cols=5, k=37)


def test_pe_prenormalized(sim_seed: int) -> None:
    """The PE as the FP16 systolic array instantiates it (17-bit operands from the edge normalizers)."""
    assert pe_top(SATConfig(), prenormalized=True).meta["operand_width"] == 17
    _run(SATConfig(), sim_seed + 3, prenormalized=True, rows=4, cols=5, k=37)


def test_pe_mismatch_fails(sim_seed: int) -> None:
    """The FP16 PE checked against a BF16 golden model and a wrong latency must fail, naming the checks."""
    config = SATConfig(fmt="fp16")
    top = pe_top(config)
    wrong = config.replace(fmt="bf16").to_dict()
    with pytest.raises(AssertionError, match=r"(?s)cocotb tests failed.*pe_dense: .*differ from the golden model"):
        run_cocotb(top, TB, testcase="pe_dense", run_name="mismatch_fmt",
                   params={"config": wrong, "latency": top.meta["latency"], "seed": sim_seed})
    with pytest.raises(AssertionError, match=r"(?s)cocotb tests failed.*steps after their last operand"):
        run_cocotb(top, TB, testcase="pe_dense", run_name="mismatch_latency",
                   params={"config": config.to_dict(), "latency": top.meta["latency"] + 1, "seed": sim_seed})


@pytest.mark.slow
@pytest.mark.parametrize("latency", [1, 2, 3, 6])
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_pe_latencies(fmt: str, latency: int, sim_seed: int) -> None:
    _run(SATConfig(fmt=fmt, adder_latency=latency), sim_seed + latency, rows=4, cols=5, k=37)


@pytest.mark.slow
@pytest.mark.parametrize("nm_set", [((2, 4),), ()], ids=["2of4", "dense_only"])
def test_pe_small_nm_set(nm_set: tuple, sim_seed: int) -> None:
    """A build with only 2:4 (four lanes, 2-bit idx), and a dense-only build (one lane)."""
    _run(SATConfig(nm_set=nm_set), sim_seed, rows=4, cols=4, k=33)
