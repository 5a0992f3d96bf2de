"""cocotb RTL tests of ``sat.hw.fp`` on the generated Verilog (``sim/tb_fp.py``), bit for bit against
``sat.sw.numerics``.

Default run: 30 000 random vectors per multiplier format (and for the FP16 multiplier behind the edge
normalizers, as the systolic array builds it), for the adder and per rounding-unit format, every pair
of special operands (every edge-case pattern for the rounding unit), and a stall run with ``en`` low ~30 % of
cycles. ``-m slow`` runs 1 000 000 vectors and every adder latency.
A mutation test checks that a wrong result makes the pytest test fail, and a wrong latency must fail too.
"""


import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sat.hw.fp import FPMultiplier
from sat.sim.runner import run_cocotb
from sat.sim.tops import fp32_add_top, fp32_round_top, fp_mul_top
from sat.sim.verilog import generate_verilog

pytestmark = pytest.mark.rtl

TB = "sat.sim.tb_fp"
N_RANDOM = 30_000
N_STALLS = 5_000


_mul_top = fp_mul_top
_add_top = fp32_add_top


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_fp_multiplier(fmt: str, sim_seed: int) -> None:
    top = _mul_top(fmt)
    result = run_cocotb(top, TB, params={
        "unit": "mul", "fmt": fmt, "latency": top.meta["latency"], "seed": sim_seed,
        "n_random": N_RANDOM, "n_stalls": N_STALLS})
    assert sorted(result.tests) == ["mul_random", "mul_special", "mul_stalls"]


def test_fp_multiplier_edge_normalized(sim_seed: int) -> None:
    """The FP16 product as the systolic array forms it: FP16Normalizer on both operands (the array's edge) and
    FPMultiplier(prenormalized=True) (every PE), through the same multiplier testbench, same latency."""
    top = _mul_top("fp16", edge_normalized=True)
    assert top.meta["latency"] == _mul_top("fp16").meta["latency"]
    result = run_cocotb(top, TB, params={
        "unit": "mul", "fmt": "fp16", "latency": top.meta["latency"], "seed": sim_seed + 7,
        "n_random": N_RANDOM, "n_stalls": N_STALLS})
    assert sorted(result.tests) == ["mul_random", "mul_special", "mul_stalls"]


def test_fp32_adder(sim_seed: int) -> None:
    top = _add_top(4)
    result = run_cocotb(top, TB, params={
        "unit": "add", "latency": top.meta["latency"], "seed": sim_seed,
        "n_random": N_RANDOM, "n_stalls": N_STALLS})
    assert sorted(result.tests) == ["add_random", "add_special", "add_stalls"]


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_fp32_round(fmt: str, sim_seed: int) -> None:
    top = fp32_round_top(fmt)
    result = run_cocotb(top, TB, params={
        "unit": "round", "fmt": fmt, "latency": top.meta["latency"], "seed": sim_seed,
        "n_random": N_RANDOM, "n_stalls": N_STALLS})
    assert sorted(result.tests) == ["round_random", "round_special", "round_stalls"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_fp_multiplier_long(fmt: str, sim_seed: int) -> None:
    top = _mul_top(fmt)
    run_cocotb(top, TB, testcase=["mul_random", "mul_stalls"], params={
        "unit": "mul", "fmt": fmt, "latency": top.meta["latency"], "seed": sim_seed + 1000,
        "n_random": 1_000_000, "n_stalls": 50_000})


@pytest.mark.slow
@pytest.mark.parametrize("latency", [1, 2, 3, 4, 5, 6, 8])
def test_fp32_adder_latencies(latency: int, sim_seed: int) -> None:
    n = 1_000_000 if latency == 4 else 100_000
    top = _add_top(latency)
    run_cocotb(top, TB, params={
        "unit": "add", "latency": top.meta["latency"], "seed": sim_seed + 1000 + latency,
        "n_random": n, "n_stalls": 20_000})


class _MutantMultiplier(wiring.Component):
    """FPMultiplier(fp16) whose result LSB flips for about 1 in 256 operand pairs (a rare, silent bug)."""

    a: In(16)
    b: In(16)
    en: In(1, init=1)
    p: Out(32)

    def __init__(self) -> None:
        self._good = FPMultiplier(fmt="fp16")
        super().__init__()

    @property
    def latency(self) -> int:
        return self._good.latency

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.good = good = self._good
        a_d = [self.a]
        b_d = [self.b]
        for i in range(good.latency):  # operands delayed alongside the pipeline
            a_next, b_next = a_d[-1], b_d[-1]
            ra, rb = Signal(16, name=f"a_d{i}"), Signal(16, name=f"b_d{i}")
            with m.If(self.en):
                m.d.sync += [ra.eq(a_next), rb.eq(b_next)]
            a_d.append(ra)
            b_d.append(rb)
        flip = (a_d[-1][:4] == 0b1011) & (b_d[-1][:4] == 0b0110)
        m.d.comb += [good.a.eq(self.a), good.b.eq(self.b), good.en.eq(self.en), self.p.eq(good.p ^ flip)]
        return m


@pytest.mark.slow  # a build of its own; test_wrong_latency_fails checks the harness in the default run
def test_mutant_multiplier_fails(sim_seed: int) -> None:
    """The harness must turn a rare wrong bit into a failing pytest test naming the cocotb test."""
    top = generate_verilog(_MutantMultiplier, "fp_mul_fp16_mutant", {"fmt": "fp16", "mutant": "lsb"})
    expected = r"(?s)1 of 1 cocotb tests failed.*mul_random: .* differ from the golden model"
    with pytest.raises(AssertionError, match=expected):
        run_cocotb(top, TB, testcase="mul_random", params={
            "unit": "mul", "fmt": "fp16", "latency": top.meta["latency"], "seed": sim_seed,
            "n_random": 5_000})   # the mutant is wrong on 1 in 256 vectors: about 20 of these 5 000


@pytest.mark.parametrize("offset", [-1, 1])
def test_wrong_latency_fails(offset: int, sim_seed: int) -> None:
    """Comparing one cycle early or late must fail: the testbench really aligns outputs by ``latency``."""
    top = _mul_top("fp16")
    with pytest.raises(AssertionError, match=r"(?s)cocotb tests failed.*mul_random: .* differ"):
        run_cocotb(top, TB, testcase="mul_random", run_name=f"wrong_latency_{offset}", params={
            "unit": "mul", "fmt": "fp16", "latency": top.meta["latency"] + offset, "seed": sim_seed,
            "n_random": 2_000})
