"""Generated Verilog tops of the gateware blocks under test, named consistently for the cache.

Every RTL test and the lint test get their Verilog through these functions, so one configuration is converted
once and shared (see :func:`sat.sim.verilog.generate_verilog`).
"""

from __future__ import annotations

from .verilog import VerilogTop, generate_verilog

__all__ = ["fp_mul_top", "fp32_add_top", "pe_top"]


def fp_mul_top(fmt: str) -> VerilogTop:
    """``sat.hw.fp.FPMultiplier(fmt)`` as module ``fp_mul_<fmt>``; ``meta["latency"]`` is its latency."""
    from sat.hw.fp import FPMultiplier

    return generate_verilog(lambda: FPMultiplier(fmt=fmt), f"fp_mul_{fmt}", {"fmt": fmt})


def fp32_add_top(latency: int = 4) -> VerilogTop:
    """``sat.hw.fp.FP32Adder(latency)`` as module ``fp32_add_l<latency>``."""
    from sat.hw.fp import FP32Adder

    return generate_verilog(lambda: FP32Adder(latency=latency), f"fp32_add_l{latency}", {"latency": latency})


def pe_top(config) -> VerilogTop:
    """``sat.hw.pe.PE(config)`` as module ``pe`` (cached per ``config.digest()``).

    ``meta`` holds ``latency``, ``interleave``, ``multiplier_latency``, ``max_m`` and ``idx_width``.
    """
    from sat.hw.pe import PE

    return generate_verilog(lambda: PE(config), "pe", config,
                            attrs=("latency", "interleave", "multiplier_latency", "max_m", "idx_width"))
