"""Verilator lint (``--lint-only -Wall``) of every generated top: zero errors, and only the documented
tolerated warning classes (``sat.sim.lint.TOLERATED``, see ``docs/simulation.md``) may remain."""

import pytest

from sat.sim.lint import TOLERATED, lint
from sat.sim.tops import array_top, core_top, fp32_add_top, fp32_round_top, fp_mul_top, gemm_top, pe_top, system_top
from sat.sw.config import SATConfig

pytestmark = pytest.mark.rtl

TOPS = {
    "fp_mul_fp16": lambda: fp_mul_top("fp16"),
    "fp_mul_bf16": lambda: fp_mul_top("bf16"),
    "fp_mul_fp16_norm": lambda: fp_mul_top("fp16", edge_normalized=True),
    "fp32_add_l1": lambda: fp32_add_top(1),
    "fp32_add_l4": lambda: fp32_add_top(4),
    "fp32_add_l6": lambda: fp32_add_top(6),
    "fp32_round_fp16": lambda: fp32_round_top("fp16"),
    "fp32_round_bf16": lambda: fp32_round_top("bf16"),
    "pe_fp16": lambda: pe_top(SATConfig(fmt="fp16")),
    "pe_bf16": lambda: pe_top(SATConfig(fmt="bf16")),
    "pe_bf16_l1_2of4": lambda: pe_top(SATConfig(fmt="bf16", adder_latency=1, nm_set=((2, 4),))),
    "pe_fp16_dense_only": lambda: pe_top(SATConfig(fmt="fp16", nm_set=())),
    "array_2x3_bf16_l2": lambda: array_top(SATConfig(rows=2, cols=3, fmt="bf16", adder_latency=2)),
    "gemm_2x2_fp16": lambda: gemm_top(SATConfig(rows=2, cols=2, fmt="fp16", a_depth=512, b_depth=1024)),
    "gemm_4x4_bf16": lambda: gemm_top(SATConfig(rows=4, cols=4, fmt="bf16", a_depth=512, b_depth=1024)),
    "core_loopback": lambda: core_top(SATConfig(), memory_bytes=1 << 20),
    "system_2x2": lambda: system_top(SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128),
                                     memory_bytes=1 << 20),
}


@pytest.mark.parametrize("name", sorted(TOPS))
def test_lint(name: str) -> None:
    top = TOPS[name]()
    result = lint(top.path, top.name)
    print(result.summary())
    result.check()


def test_lint_finds_problems(tmp_path) -> None:
    """The lint wrapper must report real findings: an error, and a warning class outside TOLERATED."""
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk, input [3:0] a, output [3:0] y);\n"
                   "  wire [3:0] loop;\n  assign loop = loop + a;\n  assign y = loop;\nendmodule\n")
    result = lint(bad, "bad")
    assert any(m.code not in TOLERATED for m in result.warnings), result.summary()
    with pytest.raises(AssertionError, match="outside the documented tolerated classes"):
        result.check()
    broken = tmp_path / "broken.v"
    broken.write_text("module broken(input a, output y);\n  assign y = a\nendmodule\n")
    result = lint(broken, "broken")
    assert result.errors and result.returncode != 0, result.summary()
    with pytest.raises(AssertionError, match="1 errors|errors"):
        result.check()
