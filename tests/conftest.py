"""Shared pytest fixtures.

RTL tests (marker ``rtl``) build generated Verilog with :mod:`sat.sim` and run cocotb testbenches; see
``docs/simulation.md``. ``SAT_SEED`` sets the seed of their random vectors (default 1).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def sim_seed() -> int:
    """Seed for RTL testbench vectors: ``$SAT_SEED`` or 1."""
    raw = os.environ.get("SAT_SEED", "1")
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"SAT_SEED must be an integer, not {raw!r}") from None
