"""Verilator lint (``--lint-only -Wall``) of every generated top: zero errors, and only the documented
tolerated warning classes (``sat.sim.lint.TOLERATED``, see ``docs/simulation.md``) may remain."""

import pytest

from sat.sim.lint import TOLERATED, lint
from sat.sim.tops import fp32_add_top, fp_mul_top

pytestmark = pytest.mark.rtl

TOPS = {
    "fp_mul_fp16": lambda: fp_mul_top("fp16"),
    "fp_mul_bf16": lambda: fp_mul_top("bf16"),
    "fp32_add_l1": lambda: fp32_add_top(1),
    "fp32_add_l4": lambda: fp32_add_top(4),
    "fp32_add_l6": lambda: fp32_add_top(6),
}


@pytest.mark.parametrize("name", sorted(TOPS))
def test_lint(name: str) -> None:
    top = TOPS[name]()
    result = lint(top.path, top.name)
    print(result.summary())
    assert not result.errors and result.returncode == 0, result.summary()
    unexpected = [m for m in result.warnings if m.code not in TOLERATED]
    assert not unexpected, "warnings outside the documented tolerated classes:\n" + "\n".join(map(str, unexpected))
