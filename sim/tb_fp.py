"""cocotb testbench of the arithmetic units ``sat.hw.fp.FPMultiplier``, ``sat.hw.fp.FP32Adder`` and
``sat.hw.fp.FP32Round``.

The units are driven fully pipelined (one vector per cycle, ``en=1``) and every output is compared bit for bit
with :func:`sat.sw.numerics.fp_mul` / :func:`sat.sw.numerics.fp32_add` / :func:`sat.sw.numerics.round_result`,
``latency`` enabled cycles after its inputs; a smaller run holds ``en`` low at random (with garbage on the
inputs) and checks that the pipeline freezes. Parameters (``SAT_TB_PARAMS``, see :func:`sat.sim.tb.tb_params`):

``unit``
    ``"mul"``, ``"add"`` or ``"round"``: which tests apply to this top (the others are skipped).
``fmt``
    Operand format of the multiplier, result format of the rounding unit.
``latency``
    The unit's ``latency`` property.
``seed``, ``n_random``, ``n_stalls``
    Random seed and vector counts.

The vector generators are plain NumPy functions so they can be inspected and reused outside a simulator.
"""

from __future__ import annotations

import cocotb
import numpy as np

from sat.sw.numerics import fp32_add, fp32_bits, fp_mul, from_fp32_bits, get_format, round_result

from .tb import FP32Scoreboard, idle_inserter, reset, rng_for, start_clock, stream_pipeline, tb_params

__all__ = [
    "mul_special_operands", "mul_random_operands", "add_special_operands", "add_random_operands",
    "round_special_operands", "round_random_operands", "normalized_fp16_operands",
    "cross", "mul_random", "mul_special", "mul_stalls", "add_random", "add_special", "add_stalls",
    "round_random", "round_special", "round_stalls",
]

_PARAMS = tb_params()
_UNIT = _PARAMS.get("unit")


# ----------------------------------------------------------------------------------------------- vectors

def cross(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs ``(values[i], values[j])`` as two columns."""
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.ravel().copy(), b.ravel().copy()


def _fields(sign: np.ndarray, exp: np.ndarray, man: np.ndarray, exp_bits: int, man_bits: int,
            dtype: type) -> np.ndarray:
    sign = np.asarray(sign, dtype=np.uint64)
    exp = np.asarray(exp, dtype=np.uint64)
    man = np.asarray(man, dtype=np.uint64)
    return ((sign << (exp_bits + man_bits)) | (exp << man_bits) | man).astype(dtype)


def mul_special_operands(fmt: str) -> np.ndarray:
    """Operand bit patterns of every special class, both signs.

    Zeros, subnormals (FP16: kept, with leading-zero counts 0, 1, 9; BF16: read as zero), the smallest and
    largest normals, Inf, quiet, signalling and negative NaNs, values around 1, and normals whose exponents put
    products at the FP32 underflow and overflow boundaries (reached by BF16 only; FP16 products always stay
    normal).
    """
    f = get_format(fmt)
    e, mb = f.exp_bits, f.man_bits
    emax = (1 << e) - 1
    man = [0, 1, 1 << (mb - 1), (1 << mb) - 1, (1 << mb) - 2]
    exps = {0, 1, 2, f.bias - 1, f.bias, f.bias + 1, emax - 2, emax - 1, emax}
    # product exponent 2*(E - bias) around -126 and +127 for bf16; around the fp16 extremes otherwise
    for target in (-127, -126, -125, 127, 128):
        u = target // 2
        exps.update(x + f.bias for x in (u - 1, u, u + 1) if 0 < x + f.bias < emax)
    values = [int(_fields(s, ex, mn, e, mb, np.uint16)) for s in (0, 1) for ex in sorted(exps) for mn in man]
    values += [f.canonical_nan, f.canonical_nan | f.sign_mask, f.exp_mask | 1, f.exp_mask | (f.man_mask >> 1)]
    return np.unique(np.asarray(values, dtype=np.uint16))


def mul_random_operands(rng: np.random.Generator, n: int, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random operand pairs: 60 % uniformly random bit patterns, 40 % pairs whose exact product lies
    within a few binades of FP32's normal range boundaries (BF16) or of 1.0 (FP16); then, for FP16, each operand
    is replaced with probability 0.1 by a subnormal with a random leading-zero count (19 % of the pairs hold
    one, 1 % two)."""
    f = get_format(fmt)
    e, mb = f.exp_bits, f.man_bits
    emax = (1 << e) - 1
    a = rng.integers(0, 1 << 16, n, dtype=np.uint64).astype(np.uint16)
    b = rng.integers(0, 1 << 16, n, dtype=np.uint64).astype(np.uint16)
    k = np.flatnonzero(rng.random(n) < 0.4)
    if k.size:
        targets = np.array([-127, -126, 127, 128, 0] if f.exp_bits == 8 else [-28, 0, 30])
        t = rng.choice(targets, k.size) + rng.integers(-2, 3, k.size)
        ea = rng.integers(1, emax, k.size)
        eb = np.clip(t - (ea - f.bias) + f.bias, 1, emax - 1)
        a[k] = _fields(rng.integers(0, 2, k.size), ea, rng.integers(0, 1 << mb, k.size), e, mb, np.uint16)
        b[k] = _fields(rng.integers(0, 2, k.size), eb, rng.integers(0, 1 << mb, k.size), e, mb, np.uint16)
    if f.subnormals:
        for col, share in ((a, 0.10), (b, 0.10)):
            k = np.flatnonzero(rng.random(n) < share)
            lz = rng.integers(0, mb, k.size)                      # leading zeros of the mantissa field
            man = (1 << (mb - 1 - lz)) | (rng.integers(0, 1 << mb, k.size) & ((1 << (mb - 1 - lz)) - 1))
            col[k] = _fields(rng.integers(0, 2, k.size), 0, man, e, mb, np.uint16)
    return a, b


def add_special_operands() -> np.ndarray:
    """FP32 bit patterns of every special class, both signs.

    Zeros, subnormals (read as zero), smallest/largest normals, Inf, quiet/signalling NaNs, 1.0 and its
    neighbours, and the halfway and just-off-halfway addends of 1.0 and of its successor (rounding ties).
    """
    mags = [
        0x00000000, 0x00000001, 0x00400000, 0x007FFFFF,  # zero, subnormals
        0x00800000, 0x00800001, 0x00FFFFFF, 0x01000000,  # smallest normals
        0x7F7FFFFF, 0x7F7FFFFE, 0x7F000000, 0x7E800000,  # largest normals
        0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF,  # Inf, NaNs
        0x3F800000, 0x3F800001, 0x3F7FFFFF, 0x3FFFFFFF, 0x40000000,  # around 1 and 2
        0x33800000, 0x33800001, 0x337FFFFF, 0x34000000, 0x33000000,  # 2^-24 (half ulp of 1) and neighbours
        0x4B800000, 0x4B7FFFFF, 0x3F000000, 0x00000000,
    ]
    values = mags + [m | 0x80000000 for m in mags]
    return np.unique(np.asarray(values, dtype=np.uint32))


def add_random_operands(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random FP32 operand pairs that exercise the adder's corner cases.

    20 % uniformly random bit patterns; 30 % exponents within 27 of each other (alignment, sticky bits);
    15 % near-total cancellation (``b ~ -a``); 15 % addends placed for exact rounding ties; 5 % near overflow;
    10 % near underflow (including subnormal inputs); 5 % one operand replaced by a special value.
    """
    u = rng.random(n)
    sa = rng.integers(0, 2, n)
    sb = rng.integers(0, 2, n)
    ea = rng.integers(1, 255, n)
    ma = rng.integers(0, 1 << 23, n)
    mb = rng.integers(0, 1 << 23, n)
    eb = np.clip(ea + rng.integers(-27, 28, n), 1, 254)

    a = _fields(sa, ea, ma, 8, 23, np.uint32)
    b = _fields(sb, eb, mb, 8, 23, np.uint32)

    # uniform bits
    k = u < 0.20
    a[k] = rng.integers(0, 1 << 32, k.sum(), dtype=np.uint64).astype(np.uint32)
    b[k] = rng.integers(0, 1 << 32, k.sum(), dtype=np.uint64).astype(np.uint32)
    # cancellation: b = -(a with its low j bits changed)
    k = (u >= 0.50) & (u < 0.65)
    j = rng.integers(0, 24, k.sum())
    low = rng.integers(0, 1 << 23, k.sum()) & ((1 << j) - 1)
    b[k] = ((a[k] ^ low.astype(np.uint32)) ^ np.uint32(0x80000000)).astype(np.uint32)
    # ties: b's bits below a's ulp are exactly 100..0 (or 100..01 / 011..1 just off the tie)
    k = (u >= 0.65) & (u < 0.80)
    d = rng.integers(1, 26, k.sum())
    eb_t = np.clip(ea[k] - d, 1, 254)
    dd = ea[k] - eb_t
    sig = mb[k] | (1 << 23)
    shift = np.maximum(dd, 1)
    half = 1 << (shift - 1)
    sig = (sig & ~((1 << shift) - 1)) | half
    nudge = rng.integers(-1, 2, k.sum())
    sig = np.clip(sig + nudge, 1 << 23, (1 << 24) - 1)
    b[k] = _fields(sb[k], eb_t, sig & ((1 << 23) - 1), 8, 23, np.uint32)
    # near overflow
    k = (u >= 0.80) & (u < 0.85)
    a[k] = _fields(sa[k], rng.integers(250, 255, k.sum()), ma[k], 8, 23, np.uint32)
    b[k] = _fields(sa[k] ^ (rng.random(k.sum()) < 0.2), rng.integers(250, 255, k.sum()), mb[k], 8, 23,
                   np.uint32)
    # near underflow (exponent 0 = subnormal input, read as zero)
    k = (u >= 0.85) & (u < 0.95)
    a[k] = _fields(sa[k], rng.integers(0, 6, k.sum()), ma[k], 8, 23, np.uint32)
    b[k] = _fields(sb[k], rng.integers(0, 6, k.sum()), mb[k], 8, 23, np.uint32)
    # one special operand
    k = np.flatnonzero(u >= 0.95)
    specials = add_special_operands()
    pick = rng.choice(specials, k.size)
    swap = rng.random(k.size) < 0.5
    a[k[swap]] = pick[swap]
    b[k[~swap]] = pick[~swap]
    return a, b


def _round_drop(fmt: str, exp: np.ndarray) -> np.ndarray:
    """Bits of the 24-bit FP32 significand below the last place of the rounded result, per FP32 exponent field
    (FP16: 13 in its normal range, more for subnormal results, at most 24; BF16: 16)."""
    exp = np.asarray(exp, dtype=np.int64)
    if get_format(fmt).name == "bf16":
        return np.full(exp.shape, 16)
    return np.minimum(13 + np.maximum(0, -14 - (exp - 127)), 24)


def round_special_operands(fmt: str) -> np.ndarray:
    """FP32 patterns for the rounding unit: for every exponent field (both signs), the dropped bits exactly half
    an ulp (a tie), one below and above it, all ones (a carry into the exponent) and zero, each with a kept
    last bit of 0 and 1 and all kept bits ones; plus zeros, Inf, NaNs, FP32 subnormals and the thresholds of
    overflow (FP16 65520, BF16 0x7F7F8000) and of the FP16 subnormal range (2**-25, 2**-24, 2**-14)."""
    exps = np.arange(256)
    drop = _round_drop(fmt, exps)
    values = []
    for e, d in zip(exps.tolist(), drop.tolist(), strict=True):
        half = 1 << (d - 1)
        for low in (half, half - 1, half + 1, (1 << d) - 1, 0):
            for kept in (0, 1, (1 << max(0, 23 - d + 1)) - 1):
                values.append((e << 23) | (((kept << d) | low) & 0x7FFFFF))
    values += [0x00000000, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x00000001, 0x007FFFFF, 0x00400000,
               0x477FE000, 0x477FEFFF, 0x477FF000, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF,
               0x33000000, 0x33000001, 0x33800000, 0x337FFFFF, 0x387FC000, 0x387FE000, 0x387FFFFF]
    values = np.asarray(values, dtype=np.uint32)
    return np.unique(np.concatenate([values, values | np.uint32(0x80000000)]))


def round_random_operands(rng: np.random.Generator, n: int, fmt: str) -> np.ndarray:
    """``n`` random FP32 patterns: 25 % uniformly random bits; 60 % exponents where the result format has its
    normal, subnormal and overflow boundaries (FP16: FP32 exponents 2**-27 .. 2**17; BF16: all) with random
    mantissas; 15 % of those with the dropped bits set to a tie or one off it."""
    a = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    k = np.flatnonzero(rng.random(n) >= 0.25)
    lo, hi = (127 - 27, 127 + 17) if get_format(fmt).name == "fp16" else (0, 255)
    exp = rng.integers(lo, hi + 1, k.size)
    man = rng.integers(0, 1 << 23, k.size)
    tie = rng.random(k.size) < 0.2
    drop = _round_drop(fmt, exp)
    half = (1 << (drop - 1)) + rng.integers(-1, 2, k.size)
    man = np.where(tie, (man & ~((1 << drop) - 1) & 0x7FFFFF) | (half & 0x7FFFFF), man)
    a[k] = _fields(rng.integers(0, 2, k.size), exp, man & 0x7FFFFF, 8, 23, np.uint32)
    return a


def normalized_fp16_operands(bits: np.ndarray) -> np.ndarray:
    """The :data:`sat.hw.fp.NORMALIZED_FP16` patterns (uint32) of FP16 ``bits``, computed from the values
    (``frexp``), not with the gateware's bit manipulations: ``{sign, exponent = unbiased + 25, mantissa}`` with
    exponent 0 for zeros and 63 for Inf and NaN (mantissa kept)."""
    bits = np.asarray(bits, dtype=np.uint16)
    value = bits.view(np.float16).astype(np.float64)
    sign = (bits >> 15).astype(np.uint32)
    special = (bits & 0x7C00) == 0x7C00
    zero = value == 0
    frac, exp = np.frexp(np.where(special | zero, 1.0, np.abs(value)))   # |value| = frac * 2**exp, 0.5 <= frac < 1
    norm_exp = np.where(zero, 0, np.where(special, 63, exp - 1 + 25)).astype(np.uint32)
    man = np.where(special, bits & 0x3FF, np.where(zero, 0, (frac * 2 - 1) * 1024)).astype(np.uint32)
    return (sign << 16) | (norm_exp << 10) | man


# ----------------------------------------------------------------------------------------------- checks

def _mul_expected(a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    return fp32_bits(fp_mul(a, b, fmt))


def _add_expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return fp32_bits(fp32_add(from_fp32_bits(a), from_fp32_bits(b)))


async def _run(dut, name: str, a: np.ndarray, b: np.ndarray | None, *, stall_p: float = 0.0) -> None:
    p = _PARAMS
    unit = p["unit"]
    fmt = p.get("fmt", "fp16")
    latency = int(p["latency"])
    rng = rng_for(p, name)
    await start_clock(dut)
    inputs = {"a": a} if b is None else {"a": a, "b": b}
    await reset(dut, en=0, **{k: 0 for k in inputs})
    stalls = idle_inserter(rng, stall_p, max_burst=5) if stall_p else None
    out = {"mul": "p", "add": "s", "round": "r"}[unit]
    got, idx = await stream_pipeline(dut, inputs, out, latency, stalls=stalls, rng=rng)
    if unit == "mul":
        expected = _mul_expected(a, b, fmt)
        sb = FP32Scoreboard(f"FPMultiplier({fmt}) {name}", fmt=fmt)
    elif unit == "add":
        expected = _add_expected(a, b)
        sb = FP32Scoreboard(f"FP32Adder {name}")
    else:
        expected = round_result(a, fmt)
        sb = FP32Scoreboard(f"FP32Round({fmt}) {name}", result_fmt=fmt)
    sb.compare(got, expected[idx], **{k: v[idx] for k, v in inputs.items()}, vector=idx)
    dut._log.info("%s: %d samples of %d vectors compared, %d mismatches", name, sb.checked, a.size,
                  sb.mismatches)
    sb.check()


@cocotb.test(skip=_UNIT != "mul")
async def mul_random(dut) -> None:
    """``n_random`` random operand pairs, one per cycle."""
    rng = rng_for(_PARAMS, "mul_random_vectors")
    a, b = mul_random_operands(rng, int(_PARAMS.get("n_random", 100_000)), _PARAMS["fmt"])
    await _run(dut, "mul_random", a, b)


@cocotb.test(skip=_UNIT != "mul")
async def mul_special(dut) -> None:
    """Every ordered pair of special operands (:func:`mul_special_operands`)."""
    a, b = cross(mul_special_operands(_PARAMS["fmt"]))
    await _run(dut, "mul_special", a, b)


@cocotb.test(skip=_UNIT != "mul")
async def mul_stalls(dut) -> None:
    """Random and special operands with ``en`` low ~30 % of cycles, in bursts, garbage on the inputs."""
    rng = rng_for(_PARAMS, "mul_stall_vectors")
    a, b = mul_random_operands(rng, int(_PARAMS.get("n_stalls", 5_000)), _PARAMS["fmt"])
    sa, sb = cross(rng.choice(mul_special_operands(_PARAMS["fmt"]), 24, replace=False))
    await _run(dut, "mul_stalls", np.concatenate([a, sa]), np.concatenate([b, sb]), stall_p=0.3)


@cocotb.test(skip=_UNIT != "add")
async def add_random(dut) -> None:
    """``n_random`` random FP32 pairs (:func:`add_random_operands`), one per cycle."""
    rng = rng_for(_PARAMS, "add_random_vectors")
    a, b = add_random_operands(rng, int(_PARAMS.get("n_random", 100_000)))
    await _run(dut, "add_random", a, b)


@cocotb.test(skip=_UNIT != "add")
async def add_special(dut) -> None:
    """Every ordered pair of special FP32 operands (:func:`add_special_operands`)."""
    a, b = cross(add_special_operands())
    await _run(dut, "add_special", a, b)


@cocotb.test(skip=_UNIT != "add")
async def add_stalls(dut) -> None:
    """Random and special FP32 pairs with ``en`` low ~30 % of cycles, in bursts, garbage on the inputs."""
    rng = rng_for(_PARAMS, "add_stall_vectors")
    a, b = add_random_operands(rng, int(_PARAMS.get("n_stalls", 5_000)))
    sa, sb = cross(rng.choice(add_special_operands(), 24, replace=False))
    await _run(dut, "add_stalls", np.concatenate([a, sa]), np.concatenate([b, sb]), stall_p=0.3)


@cocotb.test(skip=_UNIT != "round")
async def round_random(dut) -> None:
    """``n_random`` random FP32 patterns (:func:`round_random_operands`), one per cycle."""
    rng = rng_for(_PARAMS, "round_random_vectors")
    await _run(dut, "round_random", round_random_operands(rng, int(_PARAMS.get("n_random", 100_000)),
                                                          _PARAMS["fmt"]), None)


@cocotb.test(skip=_UNIT != "round")
async def round_special(dut) -> None:
    """Every edge-case FP32 pattern of :func:`round_special_operands`."""
    await _run(dut, "round_special", round_special_operands(_PARAMS["fmt"]), None)


@cocotb.test(skip=_UNIT != "round")
async def round_stalls(dut) -> None:
    """Random and edge-case patterns with ``en`` low ~30 % of cycles, in bursts, garbage on the input."""
    rng = rng_for(_PARAMS, "round_stall_vectors")
    a = round_random_operands(rng, int(_PARAMS.get("n_stalls", 5_000)), _PARAMS["fmt"])
    special = rng.choice(round_special_operands(_PARAMS["fmt"]), 500, replace=False)
    await _run(dut, "round_stalls", np.concatenate([a, special]), None, stall_p=0.3)

