"""Helpers for cocotb testbenches: parameters, clock and reset, random stalls, an FP32 scoreboard.

Conventions shared by every SAT testbench:

* The clock is ``dut.clk`` (Amaranth's ``sync`` domain), period :data:`CLOCK_PERIOD_NS`; reset is ``dut.rst``,
  synchronous, active high.
* Testbenches drive inputs and sample outputs at the **falling** edge of the clock. Registers have settled
  half a cycle after the rising edge, and the values written are captured by the next rising edge, the same on
  Verilator and Icarus, without relying on ``ReadOnly`` ordering.
* Random decisions come from a NumPy ``Generator`` seeded from the test parameters, so a failing run
  repeats exactly with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from sat.sw.numerics import FP32_CANONICAL_NAN, decode, fp32_bits, from_fp32_bits, get_format

__all__ = [
    "CLOCK_PERIOD_NS", "tb_params", "dram_param", "rng_for", "start_clock", "reset", "pause_generator",
    "idle_inserter", "backpressure", "stream_pipeline", "FP32Scoreboard", "fmt_fp32", "fmt_operand",
    "without_host_lowering",
]

CLOCK_PERIOD_NS = 4


def tb_params() -> dict[str, Any]:
    """Test parameters the pytest side passed through ``SAT_TB_PARAMS`` (JSON; empty dict when unset)."""
    raw = os.environ.get("SAT_TB_PARAMS", "")
    return json.loads(raw) if raw else {}


@contextlib.contextmanager
def error_to_report(path: str | os.PathLike) -> Iterator[None]:
    """Write ``{"error": "<type>: <message>"}`` as the JSON report at ``path`` when the body raises.

    For testbenches that a ``sat`` command runs and that report through a JSON file (``sat sim gemm``,
    ``sat train --backend sim``): the command reads the error from the report and shows it as one line
    (``sat: error: the simulation stopped: ...``), so the exception is not re-raised and the simulator log holds no
    traceback, unless ``SAT_DEBUG`` is set (``sat --debug``), when the test fails with the full traceback.
    """
    try:
        yield
    except Exception as exc:
        with contextlib.suppress(OSError):
            with open(path, "w") as f:
                json.dump({"error": f"{type(exc).__name__}: {exc}"}, f)
        if os.environ.get("SAT_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
def dram_param(params: dict[str, Any]) -> Any:
    """The memory timing a testbench's ``params["dram"]`` asks for, as :func:`sat.sim.cocotb_transport.attach`
    takes it: a :class:`sat.sw.dram.DDR4Timing` from a dict of its fields, ``"ddr4"``, ``"ideal"``, or ``"env"``
    (``$SAT_DRAM``, the default when absent)."""
    from sat.sw.dram import DDR4Timing

    value = params.get("dram", "env")
    if isinstance(value, dict):
        return DDR4Timing.from_dict(value)
    return "ideal" if value is None else value


def rng_for(params: Mapping[str, Any], salt: str = "") -> np.random.Generator:
    """A NumPy generator seeded from ``params["seed"]`` (default 1) and a per-test ``salt``."""
    seed = int(params.get("seed", 1))
    return np.random.default_rng([seed, *salt.encode()])


async def start_clock(dut: Any, period_ns: float = CLOCK_PERIOD_NS) -> None:
    """Start a free-running clock on ``dut.clk`` (the Clock owns its task in cocotb 2.x)."""
    from cocotb.clock import Clock

    Clock(dut.clk, period_ns, unit="ns").start()


async def reset(dut: Any, cycles: int = 2, **idle: int) -> None:
    """Hold ``dut.rst`` high for ``cycles`` rising edges, with inputs set to ``idle`` values.

    Drives at falling edges; returns at a falling edge with ``rst`` low, ready for the first stimulus.

    Parameters
    ----------
    dut
        The cocotb top handle.
    cycles : int
        Rising edges with reset asserted.
    **idle : int
        Input values to hold during reset (e.g. ``en=0``).
    """
    from cocotb.triggers import FallingEdge

    fe = FallingEdge(dut.clk)
    await fe
    for name, value in idle.items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    for _ in range(cycles):
        await fe
    dut.rst.value = 0
    await fe


def pause_generator(seed: int | np.random.Generator, probability: float, max_burst: int = 1) -> Iterator[bool]:
    """Endless random pause pattern: ``True`` means "pause this cycle".

    Pauses come in bursts of 1..``max_burst`` cycles (uniform), each followed by at least one unpaused cycle;
    the long-run fraction of paused cycles is ``probability`` (at most ``B / (B + 1)`` for mean burst length
    ``B``). Compatible with cocotbext-axi's ``set_pause_generator``.

    Parameters
    ----------
    seed : int or numpy Generator
    probability : float
        Fraction of paused cycles, in ``[0, 1)``.
    max_burst : int
        Longest run of consecutive pauses.

    Raises
    ------
    ValueError
        For a probability outside ``[0, 1)`` or ``max_burst < 1``.
    """
    if not 0 <= probability < 1:
        raise ValueError(f"pause probability must be in [0, 1), not {probability!r}")
    if max_burst < 1:
        raise ValueError(f"max_burst must be at least 1, not {max_burst!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mean_burst = (1 + max_burst) / 2
    # a burst (mean length B) starts with probability s before each unpaused cycle: paused fraction
    # sB / (sB + 1) = p  =>  s = p / (B (1 - p)); capped at 1 (then at most B / (B + 1) of cycles pause)
    start = min(1.0, probability / (mean_burst * (1 - probability)))
    while True:
        if rng.random() < start:
            for _ in range(int(rng.integers(1, max_burst + 1))):
                yield True
        yield False


def idle_inserter(seed: int | np.random.Generator, probability: float = 0.3,
                  max_burst: int = 4) -> Iterator[bool]:
    """Source-side stalls: ``True`` means "no valid data this cycle" (``valid`` low, or ``en`` low)."""
    return pause_generator(seed, probability, max_burst)


def backpressure(seed: int | np.random.Generator, probability: float = 0.3,
                 max_burst: int = 4) -> Iterator[bool]:
    """Sink-side stalls: ``True`` means "not ready this cycle" (``ready`` low)."""
    return pause_generator(seed, probability, max_burst)


async def stream_pipeline(dut: Any, inputs: Mapping[str, np.ndarray], output: str, latency: int, *,
                          stalls: Iterator[bool] | None = None,
                          rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stream vectors through a pipelined unit with an ``en`` input and return what came out.

    One vector is written per falling edge with ``en=1``; a unit of latency ``L`` must show the result of the
    vector issued with the ``j``-th enabled cycle after ``L`` further enabled rising edges (``en`` gates every
    stage). The output is sampled at *every* falling edge once it is defined, so during stalls it must hold
    still: each sample is paired with the index of the vector it must belong to.

    Parameters
    ----------
    dut
        cocotb top with ``clk``, ``en``, the ``inputs`` ports and ``output``.
    inputs : mapping of port name to integer array
        Equal-length columns; element ``i`` of every column forms vector ``i``.
    output : str
        Output port name.
    latency : int
        Pipeline latency ``L >= 1`` in enabled cycles.
    stalls : iterator of bool, optional
        ``True`` holds ``en`` low for that cycle (see :func:`idle_inserter`); default never.
    rng : numpy Generator, optional
        Source of the garbage written to the inputs while ``en`` is low (default: a fixed seed).

    Returns
    -------
    (samples, index) : two 1-D arrays
        Output samples (as unsigned ints) and, for each, the index of the vector it must equal the result of.
        Every vector index appears at least once.

    Raises
    ------
    ValueError
        For ``latency < 1`` or columns of unequal length.
    """
    from cocotb.triggers import FallingEdge

    if latency < 1:
        raise ValueError(f"stream_pipeline needs a registered pipeline (latency >= 1), not {latency!r}")
    cols = {name: np.asarray(v) for name, v in inputs.items()}
    lengths = {v.size for v in cols.values()}
    if len(lengths) != 1:
        raise ValueError(f"input columns differ in length: { {k: v.size for k, v in cols.items()} }")
    n = lengths.pop()
    rng = rng or np.random.default_rng(0)
    handles = [(getattr(dut, name), [int(x) for x in v.ravel()], len(getattr(dut, name)))
               for name, v in cols.items()]
    out = getattr(dut, output)
    en = dut.en
    fe = FallingEdge(dut.clk)
    samples: list[int] = []
    index: list[int] = []
    issued = 0  # enabled cycles written so far == enabled rising edges seen at the next falling edge
    last = n - 1 + latency  # issued count at which the last vector's result is visible
    while issued <= last:
        await fe
        if issued >= latency:
            samples.append(int(out.value))
            index.append(issued - latency)
        if issued == last:
            break
        stall = next(stalls) if stalls is not None else False
        if stall:
            en.value = 0
            for handle, _, width in handles:
                handle.value = int(rng.integers(0, 1 << width, dtype=np.uint64))
        else:
            en.value = 1
            for handle, column, width in handles:
                handle.value = column[issued] if issued < n else int(rng.integers(0, 1 << width, dtype=np.uint64))
            issued += 1
    return np.asarray(samples, dtype=np.uint64), np.asarray(index, dtype=np.int64)


def fmt_fp32(bits: int) -> str:
    """``0x3f800000 (1.0)`` style rendering of an FP32 bit pattern."""
    bits = int(bits) & 0xFFFFFFFF
    value = float(from_fp32_bits(np.uint32(bits)))
    return f"0x{bits:08x} ({value!r})"


def fmt_operand(bits: int, fmt: str) -> str:
    """``0x3c00 (1.0)`` style rendering of an FP16/BF16 operand (value as the RTL reads it: FP16 subnormals keep
    their value, BF16 subnormals read as zero)."""
    f = get_format(fmt)
    bits = int(bits) & 0xFFFF
    value = float(decode(np.uint16(bits), f))
    raw = float(decode(np.uint16(bits), f, daz=False))
    note = f", subnormal {raw!r} read as {value!r}" if raw != value else ""
    return f"0x{bits:04x} ({value!r}{note})"


class FP32Scoreboard:
    """Compares FP32 (or narrow FP16/BF16) results from the RTL with the golden model, bit for bit.

    NaN results must be the canonical NaN (``0x7fc00000``) on both sides: ``expected`` given as float32 values
    is converted with :func:`sat.sw.numerics.fp32_bits`, which canonicalises NaNs; the RTL must produce
    exactly that pattern.

    Parameters
    ----------
    name : str
        Shown in reports.
    fmt : str, optional
        Operand format used to render ``uint16`` context columns ("fp16" or "bf16").
    max_report : int
        Mismatches listed in :meth:`report`.
    result_fmt : str, optional
        "fp16" or "bf16" when the results are narrow (16-bit :func:`sat.sw.numerics.round_result` patterns, the
        output of ``FP32Round``) rather than FP32; their NaN must be that format's canonical NaN.

    Examples
    --------
    >>> sb = FP32Scoreboard("mul", fmt="fp16")
    >>> sb.compare(got_bits, fp32_bits(fp_mul(a, b, "fp16")), a=a, b=b)   # doctest: +SKIP
    >>> sb.check()                                                        # doctest: +SKIP
    """

    def __init__(self, name: str, *, fmt: str | None = None, max_report: int = 10, result_fmt: str | None = None):
        self.name = name
        self.fmt = fmt
        self.max_report = max_report
        self.result_fmt = get_format(result_fmt).name if result_fmt is not None else None
        self.checked = 0
        self.mismatches = 0
        self._lines: list[str] = []

    def _render(self, key: str, column: np.ndarray, i: int) -> str:
        v = column[i]
        if column.dtype == np.uint16 and self.fmt:
            return f"{key}={fmt_operand(v, self.fmt)}"
        if column.dtype in (np.uint32, np.float32):
            bits = fp32_bits(v) if column.dtype == np.float32 else v
            return f"{key}={fmt_fp32(bits)}"
        if isinstance(v, np.integer):
            return f"{key}={int(v)}"
        return f"{key}={v!r}"

    def compare(self, got: Any, expected: Any, **context: Any) -> int:
        """Compare arrays of results; return the number of new mismatches.

        Parameters
        ----------
        got : array of int
            FP32 bit patterns read from the RTL.
        expected : array
            Golden FP32 bit patterns (``uint32``) or float32 values (converted with ``fp32_bits``).
        **context : array
            Per-element columns shown for mismatches: ``uint16`` columns as operands of ``fmt``, ``uint32``
            as FP32 patterns, anything else with ``repr`` (indices, cycle numbers...).

        Raises
        ------
        ValueError
            When the arrays differ in length.
        """
        got = np.asarray(got, dtype=np.uint64).astype(np.uint32).ravel()
        expected = np.asarray(expected)
        expected = (fp32_bits(expected) if expected.dtype == np.float32
                    else expected.astype(np.uint32)).ravel()
        if got.shape != expected.shape:
            raise ValueError(f"{self.name}: got {got.size} results but expected {expected.size}")
        columns = {k: np.asarray(v).ravel() for k, v in context.items()}
        for k, v in columns.items():
            if v.shape != got.shape:
                raise ValueError(f"{self.name}: context column {k!r} has {v.size} entries, not {got.size}")
        bad = np.flatnonzero(got != expected)
        for i in bad[: max(0, self.max_report - len(self._lines))]:
            parts = [self._render(k, col, i) for k, col in columns.items()]
            self._lines.append(
                f"#{self.checked + i}: {' '.join(parts)} got {self._result(got[i])} "
                f"expected {self._result(expected[i])}")
        self.checked += got.size
        self.mismatches += bad.size
        return int(bad.size)

    def _result(self, bits: int) -> str:
        """A result pattern rendered in its format, with a note if it is a non-canonical NaN."""
        if self.result_fmt is None:
            note = " (NaN, but not the canonical 0x7fc00000)" if (
                np.isnan(from_fp32_bits(bits)) and bits != FP32_CANONICAL_NAN) else ""
            return fmt_fp32(bits) + note
        f = get_format(self.result_fmt)
        bits = int(bits)
        nan = (bits & f.exp_mask) == f.exp_mask and bits & f.man_mask
        note = f" (NaN, but not the canonical {f.canonical_nan:#06x})" if nan and bits != f.canonical_nan else ""
        width = "" if bits <= 0xFFFF else " (wider than 16 bits)"
        return fmt_operand(bits, f.name) + note + width

    def report(self) -> str:
        """Summary line plus the first mismatches."""
        head = f"{self.name}: {self.mismatches} of {self.checked} results differ from the golden model"
        return "\n".join([head, *self._lines])

    def check(self) -> None:
        """Raise AssertionError with :meth:`report` if any mismatch was seen, or if nothing was checked."""
        if self.checked == 0:
            raise AssertionError(f"{self.name}: no results were compared")
        if self.mismatches:
            raise AssertionError(self.report())


def without_host_lowering(work: Callable[[], Any]) -> Any:
    """Run ``work`` with the host's lowerings (``sat.sw.conv.im2col`` / ``bp_lower``) refusing to run: the
    device path must not lower on the host (the golden model, run afterwards, does: it is the reference)."""
    import sat.sw.conv as conv_module

    def refuse(*_args, **_kwargs):
        raise AssertionError("the host lowered a convolution")

    saved = conv_module.im2col, conv_module.bp_lower
    conv_module.im2col, conv_module.bp_lower = refuse, refuse
    try:
        return work()
    finally:
        conv_module.im2col, conv_module.bp_lower = saved
