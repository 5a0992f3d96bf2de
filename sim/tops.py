"""Generated Verilog tops of the gateware blocks under test, named consistently for the cache.

Every RTL test, benchmark, lint and ``sat sim`` gets its Verilog through these functions, so one configuration is
converted once and shared (see :func:`sat.sim.verilog.generate_verilog`).
"""

from __future__ import annotations

from sat.sw.config import SATConfig

from .verilog import VerilogTop, generate_verilog

__all__ = ["fp_mul_top", "fp32_add_top", "fp32_round_top", "pe_top", "array_top", "gemm_top", "core_top", "system_top"]


def fp_mul_top(fmt: str, *, edge_normalized: bool = False) -> VerilogTop:
    """``sat.hw.fp.FPMultiplier(fmt)`` as module ``fp_mul_<fmt>``; ``meta["latency"]`` is its latency.

    With ``edge_normalized`` (FP16 only), the multiplier as a systolic array builds it,
    :class:`sat.hw.fp.FP16NormalizedMultiplier` (normalizers on both operands, then the prenormalized
    multiplier), as module ``fp_mul_fp16_norm``: same ports and latency.
    """
    from sat.hw.fp import FP16NormalizedMultiplier, FPMultiplier

    if edge_normalized:
        if fmt != "fp16":
            raise ValueError(f"edge normalization is FP16 only, not {fmt!r}")
        return generate_verilog(FP16NormalizedMultiplier, "fp_mul_fp16_norm", {"fmt": fmt, "edge_normalized": True})
    return generate_verilog(lambda: FPMultiplier(fmt=fmt), f"fp_mul_{fmt}", {"fmt": fmt})


def fp32_add_top(latency: int = 4) -> VerilogTop:
    """``sat.hw.fp.FP32Adder(latency)`` as module ``fp32_add_l<latency>``."""
    from sat.hw.fp import FP32Adder

    return generate_verilog(lambda: FP32Adder(latency=latency), f"fp32_add_l{latency}", {"latency": latency})


def fp32_round_top(fmt: str) -> VerilogTop:
    """``sat.hw.fp.FP32Round(fmt)`` (FP32 to a narrow result) as module ``fp32_round_<fmt>``."""
    from sat.hw.fp import FP32Round

    return generate_verilog(lambda: FP32Round(fmt=fmt), f"fp32_round_{fmt}", {"fmt": fmt})


def pe_top(config: SATConfig, *, prenormalized: bool = False) -> VerilogTop:
    """``sat.hw.pe.PE(config)`` as module ``pe`` (cached per ``config.digest()``); with ``prenormalized`` the PE
    as an FP16 array instantiates it, ``PE(config, prenormalized=True)``, as module ``pe_norm``.

    ``meta`` holds ``latency``, ``interleave``, ``multiplier_latency``, ``max_m``, ``idx_width`` and
    ``operand_width``.
    """
    from sat.hw.pe import PE

    return generate_verilog(lambda: PE(config, prenormalized=prenormalized), "pe_norm" if prenormalized else "pe",
                            config, attrs=("latency", "interleave", "multiplier_latency", "max_m", "idx_width",
                                           "operand_width"))


def array_top(config: SATConfig) -> VerilogTop:
    """``SystolicArray(config)`` as module ``systolic_array``."""
    from sat.hw.array import SystolicArray

    return generate_verilog(lambda: SystolicArray(config), "systolic_array", config)


def gemm_top(config: SATConfig) -> VerilogTop:
    """``GemmEngine(config)`` (its buffers sized by ``config.a_depth`` / ``b_depth``) as module ``gemm_engine``."""
    from sat.hw.gemm import GemmEngine

    return generate_verilog(lambda: GemmEngine(config), "gemm_engine", config)


def core_top(config: SATConfig, *, memory_bytes: int, max_burst: int = 256) -> VerilogTop:
    """``SATCore`` with the :class:`~sat.sim.loopback.LoopbackEngine` test double in its engine slot, as module
    ``sat_core`` (tests of the registers, command processor and DMA)."""
    from sat.hw.core import SATCore

    from .loopback import LoopbackEngine

    key = {"config": config.to_dict(), "memory_bytes": memory_bytes, "max_burst": max_burst, "engine": "loopback"}
    return generate_verilog(lambda: SATCore(config, memory_bytes=memory_bytes, max_burst=max_burst,
                                            engine=LoopbackEngine), "sat_core", key)


def system_top(config: SATConfig, *, memory_bytes: int) -> VerilogTop:
    """The core as built, ``SATCore(config, memory_bytes=...)`` with the GEMM unit, as module ``sat_system``."""
    from sat.hw.core import SATCore

    key = {"config": config.to_dict(), "memory_bytes": memory_bytes}
    return generate_verilog(lambda: SATCore(config, memory_bytes=memory_bytes), "sat_system", key)
