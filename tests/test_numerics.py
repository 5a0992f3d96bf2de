"""The golden model's arithmetic against an independent exact-rational reference.

The reference below shares no code with ``sat.sw.numerics``: it parses bit patterns by hand, computes every sum and
product exactly with ``fractions.Fraction`` and rounds to FP32 (or FP16/BF16) with its own round-to-nearest-even.
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


def parse(bits: int, exp_bits: int, man_bits: int, daz: bool = True) -> float:
    """Value of a binary floating-point bit pattern (as a Python float, exact for these formats)."""
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


def ref_matmul(a_bits, b_bits, exp_bits, man_bits) -> np.ndarray:
    rows, k = a_bits.shape
    cols = b_bits.shape[1]
    out = np.zeros((rows, cols), dtype=np.uint32)
    for i in range(rows):
        for j in range(cols):
            acc = 0.0
            for t in range(k):
                p = ref_mul(parse(int(a_bits[i, t]), exp_bits, man_bits),
                            parse(int(b_bits[t, j]), exp_bits, man_bits))
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
    eb, mb = FMT_BITS[fmt]
    got = nu.fp32_bits(nu.fp_mul(np.uint16(a), np.uint16(b), fmt)).item()
    assert got == to_bits32(ref_mul(parse(a, eb, mb), parse(b, eb, mb)))


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


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@settings(max_examples=800, deadline=None)
@given(x=st.floats(width=32, allow_nan=True, allow_infinity=True))
def test_encode_rounds_to_nearest_even_with_ftz(fmt, x):
    eb, mb = FMT_BITS[fmt]
    bits = int(nu.encode(np.float32(x), fmt))
    if math.isnan(x):
        assert bits == nu.get_format(fmt).canonical_nan
        return
    if math.isinf(x) or x == 0:
        expect = x
    else:
        # IEEE rounding with gradual underflow first, then subnormal results flush to +0
        expect = round_exact(Fraction(x), eb, mb) if abs(x) >= 2.0 ** (2 - 2 ** (eb - 1)) else None
        if expect is None:
            exact_sub = _round_subnormal(Fraction(x), eb, mb)
            expect = exact_sub if abs(exact_sub) >= 2.0 ** (2 - 2 ** (eb - 1)) else 0.0
    assert parse(bits, eb, mb, daz=False) == expect
    if x != 0 and expect == 0:
        assert bits == 0, "a nonzero value that underflows encodes as +0"
    if x == 0:
        assert bits == (0x8000 if math.copysign(1, x) < 0 else 0), "zeros keep their sign"


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
    np.testing.assert_array_equal(got, ref_matmul(a, b, *FMT_BITS[fmt]))


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
    np.testing.assert_array_equal(got, ref_matmul(a, b, *FMT_BITS[fmt]))
    if fmt == "bf16":
        assert got[2, 3] == 0x7F800000


def test_matmul_is_order_sensitive_like_the_hardware():
    """Sequential FP32 accumulation differs from a float64 sum; the golden model must not use BLAS."""
    a = nu.encode(np.array([[1.0, 2.0**-13, 2.0**-13, -1.0]], np.float32), "fp16")
    b = nu.encode(np.array([[1.0], [2.0**-12], [2.0**-12], [1.0]], np.float32), "fp16")
    # 1 + 2**-25 rounds back to 1 twice, then cancels: the exact answer 2**-24 is lost
    assert nu.matmul(a, b, "fp16")[0, 0] == 0.0
    assert ref_matmul(a, b, 5, 10)[0, 0] == 0


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
