"""The golden model's arithmetic against an independent exact-rational reference.

The reference below shares no code with ``sat.sw.numerics``: it parses bit patterns by hand, computes every sum and
product exactly with ``fractions.Fraction`` and rounds to FP32 (or FP16/BF16) with its own round-to-nearest-even.
Where a test covers millions of values (every FP16 subnormal product), float64 is the reference: FP16 products
are exact in float64 and in FP32.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat.sw import numerics as nu

# --- independent reference ------------------------------------------------------------------------------------

NAN = float("nan")


def parse(bits: int, exp_bits: int, man_bits: int, daz: bool) -> float:
    """Value of a binary floating-point bit pattern (as a Python float, exact for these formats); with ``daz``
    subnormals read as zero of their sign."""
    width = 1 + exp_bits + man_bits
    sign = -1.0 if bits >> (width - 1) & 1 else 1.0
    e = bits >> man_bits & ((1 << exp_bits) - 1)
    f = bits & ((1 << man_bits) - 1)
    bias = (1 << (exp_bits - 1)) - 1
    if e == (1 << exp_bits) - 1:
        return NAN if f else sign * math.inf
    if e == 0:
        if daz or f == 0:
            return sign * 0.0
        return sign * math.ldexp(f, 1 - bias - man_bits)
    return sign * math.ldexp((1 << man_bits) | f, e - bias - man_bits)


def round_exact(q: Fraction, exp_bits: int, man_bits: int) -> float:
    """Round a nonzero exact rational to nearest-even in the format; below the normal range gives +0."""
    assert q != 0
    sign = -1.0 if q < 0 else 1.0
    q = abs(q)
    bias = (1 << (exp_bits - 1)) - 1
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    scaled = q / Fraction(2) ** (e - man_bits)  # in [2**man_bits, 2**(man_bits+1))
    m = scaled.numerator // scaled.denominator
    rest = scaled - m
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and m % 2 == 1):
        m += 1
    if m == 1 << (man_bits + 1):
        m >>= 1
        e += 1
    if e > bias:
        return sign * math.inf
    if e < 1 - bias:
        return 0.0  # FTZ to +0
    return sign * math.ldexp(m, e - man_bits)


def ref_mul(x: float, y: float) -> float:
    if math.isnan(x) or math.isnan(y):
        return NAN
    if math.isinf(x) or math.isinf(y):
        if x == 0 or y == 0:
            return NAN
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
    if x == 0 or y == 0:
        return math.copysign(1.0, x) * math.copysign(1.0, y) * 0.0
    return round_exact(Fraction(x) * Fraction(y), 8, 23)


def ref_add(x: float, y: float) -> float:
    if math.isnan(x) or math.isnan(y):
        return NAN
    if math.isinf(x) and math.isinf(y):
        return x if x == y else NAN
    if math.isinf(x) or math.isinf(y):
        return x if math.isinf(x) else y
    exact = Fraction(x) + Fraction(y)
    if exact == 0:
        both_negative = math.copysign(1.0, x) < 0 and math.copysign(1.0, y) < 0
        return -0.0 if both_negative else 0.0
    return round_exact(exact, 8, 23)


def ref_fp32_in(bits: int) -> float:
    return parse(bits, 8, 23, daz=True)


def to_bits32(v: float) -> int:
    if math.isnan(v):
        return nu.FP32_CANONICAL_NAN
    return int(np.array([v], dtype=np.float32).view(np.uint32)[0])


def ref_operand(bits: int, fmt: str) -> float:
    """An operand as the contract reads it: FP16 subnormals keep their value, BF16 subnormals read as zero."""
    eb, mb = FMT_BITS[fmt]
    return parse(bits, eb, mb, daz=fmt == "bf16")


def ref_matmul(a_bits, b_bits, fmt: str) -> np.ndarray:
    rows, k = a_bits.shape
    cols = b_bits.shape[1]
    out = np.zeros((rows, cols), dtype=np.uint32)
    for i in range(rows):
        for j in range(cols):
            acc = 0.0
            for t in range(k):
                p = ref_mul(ref_operand(int(a_bits[i, t]), fmt), ref_operand(int(b_bits[t, j]), fmt))
                acc = ref_add(acc, p)
            out[i, j] = to_bits32(acc)
    return out


FMT_BITS = {"fp16": (5, 10), "bf16": (8, 7)}
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


# --- element operations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@settings(max_examples=600, deadline=None)
@given(a=u16, b=u16)
def test_product_matches_exact_reference(fmt, a, b):
    got = nu.fp32_bits(nu.fp_mul(np.uint16(a), np.uint16(b), fmt)).item()
    assert got == to_bits32(ref_mul(ref_operand(a, fmt), ref_operand(b, fmt)))


@settings(max_examples=800, deadline=None)
@given(a=st.integers(0, 0x3FF), sa=st.booleans(), b=u16)
def test_fp16_subnormal_products_match_exact_reference(a, sa, b):
    """FP16 subnormal (or zero) operands keep their value: ``2**-24 * m`` exactly."""
    a |= 0x8000 if sa else 0
    got = nu.fp32_bits(nu.fp_mul(np.uint16(a), np.uint16(b), "fp16")).item()
    want = ref_mul(parse(a, 5, 10, daz=False), parse(b, 5, 10, daz=False))
    assert got == to_bits32(want)
    if a & 0x3FF and parse(b, 5, 10, daz=False) not in (0.0, math.inf, -math.inf) and b & 0x7C00 != 0x7C00:
        assert got & 0x7F800000 != 0, "an FP16 product of nonzero finite operands is a normal FP32 number"


def _fp16_finite_nonzero() -> np.ndarray:
    bits = np.arange(0x10000, dtype=np.uint32).astype(np.uint16)
    return bits[((bits & 0x7C00) != 0x7C00) & ((bits & 0x7FFF) != 0)]


def test_fp16_products_are_exact_and_normal_fp32():
    """The exponent-range argument behind the contract: |a|, |b| in [2**-24, 65504], so |a*b| lies in
    [2**-48, 65504**2] < [2**-126, 2**128); and every product with a subnormal operand is exact (float64 reference,
    2 x 1023 subnormals against every finite nonzero FP16 pattern)."""
    finite = _fp16_finite_nonzero()
    mags = np.abs(finite.view(np.float16).astype(np.float64))
    assert mags.min() == 2.0**-24 and mags.max() == 65504.0
    assert 2.0**-126 <= mags.min() ** 2 and mags.max() ** 2 < 2.0**128
    sub = finite[(finite & 0x7C00) == 0]
    assert sub.size == 2 * 1023
    for chunk in np.array_split(finite, 16):
        a, b = np.meshgrid(sub, chunk, indexing="ij")
        got = nu.fp_mul(a, b, "fp16")
        exact = a.view(np.float16).astype(np.float64) * b.view(np.float16).astype(np.float64)
        assert np.array_equal(got.astype(np.float64), exact), "a product with a subnormal operand is not exact"
        exp = nu.fp32_bits(got) >> 23 & 0xFF
        assert exp.min() >= 79 and exp.max() <= 158, "FP16 products lie in FP32 exponents 79..158 (2**-48..)"
    smallest = nu.fp32_bits(nu.fp_mul(np.uint16(1), np.uint16(0x8001), "fp16")).item()
    assert smallest == 0x80000000 | (79 << 23), "2**-24 * -2**-24 = -2**-48, a normal FP32 number"


def test_bf16_subnormal_operands_read_as_zero():
    """BF16 keeps DAZ: a subnormal operand is a zero of its sign, so Inf * subnormal is NaN."""
    assert nu.fp32_bits(nu.fp_mul(np.uint16(0x0001), np.uint16(0x3F80), "bf16")).item() == 0
    assert nu.fp32_bits(nu.fp_mul(np.uint16(0x8040), np.uint16(0x3F80), "bf16")).item() == 0x80000000
    assert nu.fp32_bits(nu.fp_mul(np.uint16(0x0001), np.uint16(0x7F80), "bf16")).item() == nu.FP32_CANONICAL_NAN
    # FP16: Inf * subnormal is Inf, subnormal * subnormal is a (normal) FP32 number
    assert nu.fp32_bits(nu.fp_mul(np.uint16(0x0001), np.uint16(0xFC00), "fp16")).item() == 0xFF800000
    assert nu.decode(np.uint16(0x03FF), "fp16") == np.float32(1023 * 2.0**-24)
    assert nu.decode(np.uint16(0x007F), "bf16") == 0 and nu.decode(np.uint16(0x007F), "bf16", daz=False) > 0


@settings(max_examples=1500, deadline=None)
@given(a=u32, b=u32)
def test_fp32_add_matches_exact_reference(a, b):
    x = np.array([a], np.uint32).view(np.float32)
    y = np.array([b], np.uint32).view(np.float32)
    got = nu.fp32_bits(nu.fp32_add(x, y)).item()
    assert got == to_bits32(ref_add(ref_fp32_in(a), ref_fp32_in(b)))


@settings(max_examples=1500, deadline=None)
@given(ea=st.integers(1, 254), man=st.integers(0, 0x7FFFFF), shift=st.integers(0, 30), neg=st.booleans(),
       low=st.integers(0, 0xFFFF))
def test_fp32_add_near_cancellation_and_ties(ea, man, shift, neg, low):
    """Operands close in exponent exercise cancellation, normalisation and rounding ties."""
    a = (ea << 23) | man
    b = (max(1, ea - shift) << 23) | (man ^ low) | ((1 << 31) if neg else 0)
    x = np.array([a], np.uint32).view(np.float32)
    y = np.array([b], np.uint32).view(np.float32)
    got = nu.fp32_bits(nu.fp32_add(x, y)).item()
    assert got == to_bits32(ref_add(ref_fp32_in(a), ref_fp32_in(b)))


def test_special_values():
    f = np.float32
    inf, tiny = f(np.inf), f(2.0**-126)
    assert nu.fp32_bits(nu.fp32_add(inf, -inf)) == nu.FP32_CANONICAL_NAN
    assert nu.fp32_bits(nu.fp32_add(f(-0.0), f(-0.0))) == 0x80000000
    assert nu.fp32_bits(nu.fp32_add(f(1.5), f(-1.5))) == 0
    # 1.5 * 2**-126 - 2**-126 = 2**-127 lies below the normal range: flushed to +0, not kept subnormal
    assert nu.fp32_bits(nu.fp32_add(tiny * f(1.5), -tiny)) == 0
    assert nu.fp32_bits(nu.fp32_add(-tiny * f(1.5), tiny)) == 0
    # a subnormal input is read as zero of its sign
    sub = np.array([0x80000001], np.uint32).view(np.float32)
    assert nu.fp32_bits(nu.fp32_add(sub, f(-0.0))) == 0x80000000
    # rounding tie: 1 + 2**-24 is halfway between 1 and 1 + 2**-23 and rounds to even (1)
    assert nu.fp32_add(f(1.0), f(2.0**-24)) == f(1.0)
    assert nu.fp32_add(f(1.0 + 2.0**-23), f(2.0**-24)) == f(1.0 + 2.0**-22)
    # overflow rounds to Inf
    big = f(np.finfo(np.float32).max)
    assert nu.fp32_add(big, big) == inf
    # Inf * 0 is NaN, in both operand formats
    for fmt, inf16 in (("fp16", 0x7C00), ("bf16", 0x7F80)):
        assert nu.fp32_bits(nu.fp_mul(np.uint16(inf16), np.uint16(0), fmt)) == nu.FP32_CANONICAL_NAN
    # BF16 products can leave FP32's range both ways
    assert nu.fp_mul(nu.encode(f(2.0**100), "bf16"), nu.encode(f(2.0**100), "bf16"), "bf16") == inf
    assert nu.fp32_bits(nu.fp_mul(nu.encode(f(2.0**-100), "bf16"), nu.encode(f(-(2.0**-100)), "bf16"),
                                  "bf16")) == 0


def ref_narrow(x: float, exp_bits: int, man_bits: int, subnormals: bool) -> float:
    """Round an exact float (a float32 value) once into a narrow format: RNE with gradual underflow, then, without
    ``subnormals``, results below the normal range flush; a nonzero value whose result is zero gives +0."""
    if math.isnan(x) or math.isinf(x) or x == 0:
        return x
    min_normal = 2.0 ** (2 - 2 ** (exp_bits - 1))
    if abs(x) >= min_normal:
        out = round_exact(Fraction(x), exp_bits, man_bits)
    else:
        out = _round_subnormal(Fraction(x), exp_bits, man_bits)
        if not subnormals and abs(out) < min_normal:
            out = 0.0
    return 0.0 if out == 0 else out


def _check_narrow(bits: int, x: float, fmt: str) -> None:
    eb, mb = FMT_BITS[fmt]
    if math.isnan(x):
        assert bits == nu.get_format(fmt).canonical_nan
        return
    expect = ref_narrow(x, eb, mb, subnormals=fmt == "fp16")
    assert parse(bits, eb, mb, daz=False) == expect, (hex(bits), x, expect)
    if x != 0 and expect == 0:
        assert bits == 0, "a nonzero value that underflows encodes as +0"
    if x == 0:
        assert bits == (0x8000 if math.copysign(1, x) < 0 else 0), "zeros keep their sign"


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@settings(max_examples=800, deadline=None)
@given(x=st.floats(width=32, allow_nan=True, allow_infinity=True))
def test_encode_rounds_to_nearest_even(fmt, x):
    _check_narrow(int(nu.encode(np.float32(x), fmt)), x, fmt)


def _round_subnormal(q: Fraction, exp_bits: int, man_bits: int) -> float:
    """IEEE RNE of a value below the normal range onto the subnormal grid (may round up to the min normal)."""
    bias = (1 << (exp_bits - 1)) - 1
    ulp = Fraction(2) ** (1 - bias - man_bits)
    scaled = abs(q) / ulp
    m = scaled.numerator // scaled.denominator
    rest = scaled - m
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and m % 2 == 1):
        m += 1
    return math.copysign(float(m * ulp), float(q))


# --- narrow results -------------------------------------------------------------------------------------------

def narrow_test_vectors(fmt: str, rng: np.random.Generator, per_exp: int = 12) -> np.ndarray:
    """FP32 patterns over every exponent field (both signs): rounding ties, one off a tie either way, carries
    into the exponent, random mantissas; plus zeros, Inf, NaNs and the overflow thresholds."""
    out = []
    for e in range(256):
        unbiased = e - 127
        if fmt == "fp16":  # bits of the 24-bit significand below the FP16 result's last place
            drop = 13 + max(0, -14 - unbiased)
        else:
            drop = 16
        drop = min(drop, 24)
        half = 1 << (drop - 1)
        low = [half, half - 1, half + 1, (1 << drop) - 1, 0, 1]
        high = rng.integers(0, 1 << max(0, 23 - drop + 1), per_exp)  # the kept mantissa bits, random
        for lo in low:
            for h in (0, 1, (1 << max(0, 23 - drop)) - 1, int(high[0])):
                sig = ((h << drop) | lo) & 0x7FFFFF
                out.append((e << 23) | sig)
        out += [(e << 23) | int(m) for m in rng.integers(0, 1 << 23, per_exp)]
    out = np.array(out, dtype=np.uint32)
    out = np.concatenate([out, out | np.uint32(0x80000000)])
    special = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF,
               0x477FE000, 0x477FEFFF, 0x477FF000,        # fp16: 65504, just below the overflow tie, the tie
               0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF,        # bf16: largest finite, the tie, the largest FP32
               0x33000000, 0x33000001, 0x33800000, 0x337FFFFF,  # fp16: 2**-25 (tie with 0), 2**-24
               0x387FC000, 0x387FE000, 0x387FFFFF,        # fp16: largest subnormal, rounding up to 2**-14
               0x007FFFFF, 0x00400000, 0x00000001, 0x807F8000]  # FP32 subnormals
    return np.unique(np.concatenate([out, np.array(special, np.uint32)]))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_round_result_matches_exact_reference_over_all_binades(fmt):
    rng = np.random.default_rng(0x2E5 + len(fmt))
    bits32 = narrow_test_vectors(fmt, rng)
    got = nu.round_result(bits32, fmt)
    assert got.dtype == np.uint16 and got.shape == bits32.shape
    np.testing.assert_array_equal(got, nu.round_result(bits32.view(np.float32), fmt))
    for b, r in zip(bits32.tolist(), got.tolist(), strict=True):
        _check_narrow(r, parse(b, 8, 23, daz=False), fmt)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@settings(max_examples=1000, deadline=None)
@given(b=u32)
def test_round_result_random_patterns(fmt, b):
    _check_narrow(int(nu.round_result(np.uint32(b), fmt)), parse(b, 8, 23, daz=False), fmt)


def test_round_result_worked_values():
    """Hand-checked cases of the rule (docs/numerics.md, "Result format")."""
    f = np.float32

    def r16(x):
        return int(nu.round_result(np.array(x, np.float32), "fp16"))

    def rbf(x):
        return int(nu.round_result(np.array(x, np.float32), "bf16"))

    assert r16(1.0 + 2.0**-11) == 0x3C00 and r16(1.0 + 3 * 2.0**-11) == 0x3C02   # ties to even
    assert r16(65519.996) == 0x7BFF and r16(65520.0) == 0x7C00 and r16(-1e6) == 0xFC00  # overflow at the tie
    assert r16(2.0**-24) == 0x0001 and r16(3 * 2.0**-25) == 0x0002 and r16(2.0**-25) == 0   # subnormal ties
    assert r16(-(2.0**-25)) == 0, "a nonzero value that rounds to zero is +0"
    assert r16(f(2.0**-25) * f(1.0 + 2.0**-23)) == 0x0001
    assert r16(-0.0) == 0x8000 and r16(1023 * 2.0**-24) == 0x03FF and r16(2047 * 2.0**-25) == 0x0400
    assert rbf(1.0 + 2.0**-8) == 0x3F80 and rbf(1.0 + 3 * 2.0**-8) == 0x3F82
    assert rbf(2.0**-126) == 0x0080 and rbf(-(2.0**-126)) == 0x8080
    assert rbf(3.3895314e38) == 0x7F7F and rbf(3.4e38) == 0x7F80
    assert int(nu.round_result(np.uint32(0x0000FFFF), "bf16")) == 0, "BF16 results below 2**-126 are +0"
    for fmt in ("fp16", "bf16"):
        nan = nu.round_result(np.array([0x7F800001, 0xFFC00000], np.uint32), fmt)
        assert nan.tolist() == [nu.get_format(fmt).canonical_nan] * 2


def test_round_result_equals_encode_and_result_values():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(5000) * np.exp2(rng.integers(-40, 20, 5000))).astype(np.float32)
    for fmt in ("fp16", "bf16"):
        np.testing.assert_array_equal(nu.round_result(x, fmt), nu.encode(x, fmt))
        vals = nu.result_values(x, fmt)
        np.testing.assert_array_equal(nu.encode(vals, fmt), nu.round_result(x, fmt), "values read back exactly")
    np.testing.assert_array_equal(nu.fp32_bits(nu.result_values(x, "fp32")), nu.fp32_bits(x))
    assert nu.fp32_bits(nu.result_values(np.uint32(0x7F800001))) == nu.FP32_CANONICAL_NAN
    assert nu.result_values(np.float32(2.0**-20), "fp16") == np.float32(2.0**-20)   # an FP16 subnormal kept
    assert nu.result_values(np.float32(2.0**-130), "bf16") == 0


def test_round_result_errors():
    with pytest.raises(ValueError, match="float32 values or uint32 bit patterns.*encode"):
        nu.round_result(np.ones(3), "fp16")
    with pytest.raises(ValueError, match="fp16"):
        nu.round_result(np.ones(3, np.float32), "fp8")
    with pytest.raises(ValueError, match="result format must be one of"):
        nu.result_values(np.ones(3, np.float32), "int8")
    with pytest.raises(ValueError, match="float32 values or uint32"):
        nu.result_values(np.ones(3), "fp32")


# --- GEMM -----------------------------------------------------------------------------------------------------

def _random_bits(rng, shape, fmt, special_rate=0.0):
    """Random normal operands of moderate range, optionally sprinkled with specials."""
    vals = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape))
    bits = nu.encode(vals.astype(np.float32), fmt)
    if special_rate:
        eb, mb = FMT_BITS[fmt]
        specials = np.array([0, 0x8000, 1, 0x8001, (1 << (eb + mb)) - (1 << mb), 0x8000 | 3], np.uint16)
        pick = rng.random(shape) < special_rate
        bits[pick] = rng.choice(specials, pick.sum())
    return bits


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("seed", range(4))
def test_matmul_matches_sequential_exact_loop(fmt, seed):
    rng = np.random.default_rng(seed)
    rows, k, cols = rng.integers(1, 6), rng.integers(1, 40), rng.integers(1, 6)
    a = _random_bits(rng, (rows, k), fmt, special_rate=0.1)
    b = _random_bits(rng, (k, cols), fmt, special_rate=0.1)
    got = nu.fp32_bits(nu.matmul(a, b, fmt))
    np.testing.assert_array_equal(got, ref_matmul(a, b, fmt))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_matmul_adversarial_cancellation_ties_overflow(fmt):
    rng = np.random.default_rng(7)
    k = 24
    a = _random_bits(rng, (3, k), fmt)
    b = _random_bits(rng, (k, 4), fmt)
    # cancellation: the second half of the reduction undoes the first half (exact sums pass through zero)
    a[:, k // 2:] = a[:, :k // 2] ^ np.uint16(0x8000)
    b[k // 2:, :] = b[:k // 2, :]
    # a row whose products are all huge: overflow to Inf for bf16, large exact sums for fp16
    big = nu.encode(np.float32(2.0**64 if fmt == "bf16" else 240.0), fmt)
    a[2, :] = big
    b[:, 3] = big
    got = nu.fp32_bits(nu.matmul(a, b, fmt))
    np.testing.assert_array_equal(got, ref_matmul(a, b, fmt))
    if fmt == "bf16":
        assert got[2, 3] == 0x7F800000


@pytest.mark.parametrize("seed", range(3))
def test_matmul_fp16_subnormal_operands(seed):
    """FP16 activations/gradients in the subnormal range: products of 2**-48..2**-28 accumulate exactly as the
    Fraction reference says, instead of vanishing (as they did when subnormal operands read as zero)."""
    rng = np.random.default_rng(100 + seed)
    rows, k, cols = 3, int(rng.integers(4, 30)), 4
    a = rng.integers(1, 1 << 10, (rows, k)).astype(np.uint16) | (rng.integers(0, 2, (rows, k)) << 15).astype(
        np.uint16)                                                         # subnormal activations
    b = nu.encode(rng.standard_normal((k, cols)).astype(np.float32) * np.float32(2.0**-12), "fp16")
    b[:, 0] = rng.integers(1, 1 << 10, k).astype(np.uint16)                # a subnormal x subnormal column
    got = nu.fp32_bits(nu.matmul(a, b, "fp16"))
    np.testing.assert_array_equal(got, ref_matmul(a, b, "fp16"))
    assert np.all(got[:, 0] != 0), "subnormal x subnormal products do not vanish"
    # the float64 reference agrees to the sequential-sum bound
    exact = a.view(np.float16).astype(np.float64) @ b.view(np.float16).astype(np.float64)
    bound = k * 2.0**-24 * (np.abs(a.view(np.float16).astype(np.float64)) @ np.abs(b.view(np.float16).astype(
        np.float64)))
    assert np.all(np.abs(nu.from_fp32_bits(got).astype(np.float64) - exact) <= bound)


def test_matmul_is_order_sensitive_like_the_hardware():
    """Sequential FP32 accumulation differs from a float64 sum; the golden model must not use BLAS."""
    a = nu.encode(np.array([[1.0, 2.0**-13, 2.0**-13, -1.0]], np.float32), "fp16")
    b = nu.encode(np.array([[1.0], [2.0**-12], [2.0**-12], [1.0]], np.float32), "fp16")
    # 1 + 2**-25 rounds back to 1 twice, then cancels: the exact answer 2**-24 is lost
    assert nu.matmul(a, b, "fp16")[0, 0] == 0.0
    assert ref_matmul(a, b, "fp16")[0, 0] == 0


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_matmul_error_bounded_by_float64(fmt):
    rng = np.random.default_rng(3)
    a = nu.quantize(rng.standard_normal((16, 300)), fmt)
    b = nu.quantize(rng.standard_normal((300, 12)), fmt)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = nu.matmul(a, b, fmt).astype(np.float64)
    # sequential summation: |error| <= (K-1) * u * sum |a_k b_k| (first order), u = 2**-24
    bound = 299 * 2.0**-24 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(got - exact) <= bound)


def test_matmul_never_returns_negative_zero():
    a = nu.encode(np.array([[-1.0, 0.0], [0.0, -0.0]], np.float32), "fp16")
    b = nu.encode(np.array([[0.0, -0.0], [-0.0, 0.0]], np.float32), "fp16")
    assert not np.any(nu.fp32_bits(nu.matmul(a, b, "fp16")) == 0x80000000)


def test_matmul_shape_errors():
    with pytest.raises(ValueError, match="inner dimensions"):
        nu.matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        nu.matmul(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="fp16"):
        nu.matmul(np.ones((2, 3)), np.ones((3, 2)), fmt="fp8")


def test_matmul_sparse_rejects_bad_indices():
    a = np.ones((2, 8), np.float32)
    vals = np.ones((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="ascending"):
        nu.matmul_sparse(a, vals, np.tile(np.array([[1], [1]]), (2, 1, 3)), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nu.matmul_sparse(a, vals, np.tile(np.array([[0], [4]]), (2, 1, 3)), 4)
    with pytest.raises(ValueError, match="groups"):
        nu.matmul_sparse(np.ones((2, 12)), vals, np.tile(np.array([[0], [1]]), (2, 1, 3)), 4)
