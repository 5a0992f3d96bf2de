"""Bit-exact numerics shared by the golden model and the gateware.

This module *is* the arithmetic contract of SAT (``docs/numerics.md``): GEMM operands are FP16 or BF16,
products are formed exactly in FP32, and every output is accumulated in FP32 with round-to-nearest-even
after every add, sequentially in ascending reduction index, starting from +0.

Special values (the same rules in the RTL):

* **Subnormal inputs** (operand or FP32 adder input) are read as zero of the same sign (DAZ).
* **Underflow**: a rounded result whose magnitude is below the smallest normal of its format becomes **+0**
  (FTZ). This applies to operand encoding, to products (only BF16 products can underflow) and to sums.
* **Overflow** rounds to +-Inf as IEEE round-to-nearest-even does.
* **NaN**: any NaN result is the canonical quiet NaN (FP32 ``0x7FC00000``, FP16 ``0x7E00``, BF16 ``0x7FC0``).
  ``Inf * 0`` and ``Inf - Inf`` are NaN.
* Exact zero sums follow IEEE: ``x + (-x) = +0``, ``-0 + -0 = -0``. Because the accumulator starts at +0 and
  flushes to +0, a GEMM output is never -0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validate import real_array

__all__ = [
    "FloatFormat", "FP16", "BF16", "FORMATS", "get_format",
    "FP32_CANONICAL_NAN", "FP32_MIN_NORMAL",
    "encode", "decode", "quantize", "fp32_bits", "from_fp32_bits",
    "fp_mul", "fp32_add", "matmul", "matmul_sparse",
]

FP32_CANONICAL_NAN = 0x7FC00000
FP32_MIN_NORMAL = np.float32(2.0**-126)


@dataclass(frozen=True)
class FloatFormat:
    """A 16-bit operand format: sign, ``exp_bits`` exponent bits, ``man_bits`` stored mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int
    canonical_nan: int

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def exp_mask(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.man_bits

    @property
    def man_mask(self) -> int:
        return (1 << self.man_bits) - 1

    @property
    def sign_mask(self) -> int:
        return 1 << (self.width - 1)


FP16 = FloatFormat("fp16", exp_bits=5, man_bits=10, canonical_nan=0x7E00)
BF16 = FloatFormat("bf16", exp_bits=8, man_bits=7, canonical_nan=0x7FC0)
FORMATS = {"fp16": FP16, "bf16": BF16}


def get_format(fmt: str | FloatFormat) -> FloatFormat:
    """Return the :class:`FloatFormat` named ``fmt`` ("fp16" or "bf16")."""
    if isinstance(fmt, FloatFormat):
        return fmt
    try:
        return FORMATS[str(fmt).lower()]
    except KeyError:
        raise ValueError(f"operand format must be one of {sorted(FORMATS)}, not {fmt!r}") from None


def fp32_bits(x) -> np.ndarray:
    """FP32 bit patterns (uint32) of ``x``, with every NaN replaced by the canonical NaN."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).copy()
    bits[np.isnan(x)] = FP32_CANONICAL_NAN
    return bits


def from_fp32_bits(bits) -> np.ndarray:
    """float32 values of FP32 bit patterns."""
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def _flush_fp32(x: np.ndarray) -> np.ndarray:
    """FTZ: nonzero results below the smallest FP32 normal become +0; NaNs become canonical (in place)."""
    tiny = (np.abs(x) < FP32_MIN_NORMAL) & (x != 0)
    x[tiny] = 0.0
    nan = np.isnan(x)
    if nan.any():
        x.view(np.uint32)[nan] = FP32_CANONICAL_NAN
    return x


def encode(x, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Round values to operand bit patterns (uint16).

    ``x`` is first converted to float32, then rounded to nearest-even into ``fmt``; overflow gives +-Inf,
    results that would be subnormal become +0, NaN becomes the format's canonical NaN.

    Raises
    ------
    ValueError
        If ``x`` does not hold real numbers (complex values would lose their imaginary part; strings, objects).
    """
    f = get_format(fmt)
    x = real_array(x, "operand").astype(np.float32, copy=False)
    if f is FP16:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            bits = np.array(x.astype(np.float16).view(np.uint16), copy=True)
    else:
        b32 = x.view(np.uint32).astype(np.uint64)
        rounded = (b32 + 0x7FFF + ((b32 >> 16) & 1)) >> 16
        bits = np.array(rounded, dtype=np.uint16)
    bits[((bits & f.exp_mask) == 0) & (x != 0)] = 0  # underflow (subnormal or rounded to -0) gives +0
    bits[np.isnan(x)] = f.canonical_nan
    return bits


def decode(bits, fmt: str | FloatFormat = "fp16", *, daz: bool = True) -> np.ndarray:
    """float32 values of operand bit patterns; with ``daz`` subnormals read as signed zero (as the RTL does).

    Raises
    ------
    ValueError
        If ``bits`` are not integers in ``[0, 0xFFFF]`` (values rather than bit patterns: use ``quantize``).
    """
    f = get_format(fmt)
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        if bits.dtype.kind not in "iu":
            raise ValueError(f"decode takes 16-bit operand bit patterns (integers), not {bits.dtype} values: to round "
                             f"values to the format use quantize()")
        if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
            raise ValueError(f"operand bit patterns lie in [0, 0xFFFF], not {int(bits.min())}..{int(bits.max())}")
        bits = bits.astype(np.uint16)
    if daz:
        subnormal = ((bits & f.exp_mask) == 0) & ((bits & f.man_mask) != 0)
        bits = np.where(subnormal, bits & f.sign_mask, bits).astype(np.uint16)
    if f is FP16:
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def quantize(x, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """float32 values exactly representable as operands: ``decode(encode(x))``."""
    return decode(encode(x, fmt), fmt)


def _operand(x, f: FloatFormat) -> np.ndarray:
    """Operand values as float32: uint16 arrays are bit patterns, anything else is encoded first."""
    x = real_array(x, "operand")
    return decode(x if x.dtype == np.uint16 else encode(x, f), f)


def fp_mul(a, b, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Exact FP32 products of operands (uint16 bit patterns or values), with the FTZ / NaN policy."""
    f = get_format(fmt)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # Products of <= 11-bit significands are exact in float32 unless they over- or underflow;
        # an underflowing product lies below 2**-126 by more than half a subnormal ulp, so numpy's
        # gradual-underflow result is below the normal range too and is flushed.
        x, y = _operand(a, f), _operand(b, f)
        p = np.array(np.multiply(x, y, dtype=np.float32), dtype=np.float32, copy=True)
    # an exact product that is nonzero but below 2**-126 becomes +0, even where numpy rounded it to -0
    p[(np.abs(p) < FP32_MIN_NORMAL) & (x != 0) & (y != 0)] = 0.0
    return _flush_fp32(p)


def fp32_add(a, b) -> np.ndarray:
    """FP32 sums with round-to-nearest-even, DAZ on inputs and FTZ to +0 on results."""
    a = np.array(a, dtype=np.float32, copy=True)
    b = np.array(b, dtype=np.float32, copy=True)
    for v in (a, b):  # DAZ keeps the sign: -sub + -0 = -0
        sub = (np.abs(v) < FP32_MIN_NORMAL) & (v != 0)
        v[sub] = np.copysign(np.float32(0), v[sub])
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.add(a, b, dtype=np.float32)
    # Sums of normal numbers that land below 2**-126 are exact, so flushing after IEEE rounding
    # equals flushing after rounding with an unbounded exponent, as the RTL does.
    return _flush_fp32(np.array(s, dtype=np.float32, copy=True))


def _accumulate(acc: np.ndarray, p: np.ndarray, flush_products: bool) -> None:
    if flush_products:
        p[(np.abs(p) < FP32_MIN_NORMAL)] = 0.0
    np.add(acc, p, out=acc)
    acc[np.abs(acc) < FP32_MIN_NORMAL] = 0.0


def matmul(a, b, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Bit-exact dense GEMM ``a @ b`` as the SAT array computes it.

    Parameters
    ----------
    a : array (rows, K)
        First operand: uint16 bit patterns, or values that are encoded to ``fmt`` first.
    b : array (K, cols)
        Second operand, same conventions.
    fmt : "fp16" or "bf16"

    Returns
    -------
    float32 array (rows, cols): every output starts at +0 and adds its ``K`` exact products in ascending
    ``k`` with FP32 round-to-nearest-even after every add.

    Raises
    ------
    ValueError
        If the operands are not 2-D, their inner dimensions differ, or they do not hold real numbers.
    """
    f = get_format(fmt)
    a = _operand(a, f)
    b = _operand(b, f)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul needs 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul inner dimensions differ: a is {a.shape}, b is {b.shape}")
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    p = np.empty_like(acc)
    flush_products = f is not FP16  # FP16 products always lie in FP32's normal range
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for k in range(a.shape[1]):
            np.multiply(a[:, k, None], b[None, k, :], out=p)
            _accumulate(acc, p, flush_products)
    return _flush_fp32(acc)


def matmul_sparse(a, b_values, b_indices, m: int, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Bit-exact GEMM ``a @ B`` where ``B`` (K x cols) is N:M-sparse along K, in compressed form.

    Parameters
    ----------
    a : array (rows, K)
        Dense operand (bit patterns or values). ``K`` is zero-padded up to a multiple of ``m``.
    b_values : array (K_pad // m, n, cols)
        Kept values of ``B``: for group ``g`` and column ``j``, the ``n`` kept elements of rows
        ``g*m .. g*m+m-1``, in ascending in-group index.
    b_indices : integer array, same shape
        In-group index (``0 <= idx < m``) of each kept value, strictly ascending within a group.
    m : int
        Group size M.

    Returns
    -------
    float32 array (rows, cols), accumulated over the kept elements only, in ascending reduction index.
    This equals ``matmul(a, B_dense)`` bit for bit whenever ``a`` holds no Inf or NaN.
    """
    f = get_format(fmt)
    a = _operand(a, f)
    vals = _operand(b_values, f)
    idx = np.asarray(b_indices)
    if a.ndim != 2 or vals.ndim != 3 or idx.shape != vals.shape:
        raise ValueError(
            f"matmul_sparse needs a (rows, K), values and indices (groups, n, cols) of one shape; got "
            f"{a.shape}, {vals.shape}, {idx.shape}")
    groups, n, cols = vals.shape
    if not -(-a.shape[1] // m) == groups:
        raise ValueError(f"a has K={a.shape[1]}, which needs {-(-a.shape[1] // m)} groups of {m}, "
                         f"but the sparse operand has {groups}")
    if idx.size and (idx.min() < 0 or idx.max() >= m):
        raise ValueError(f"in-group indices must lie in [0, {m}); found {idx.min()}..{idx.max()}")
    if n > 1 and np.any(np.diff(idx, axis=1) <= 0):
        raise ValueError("in-group indices must be strictly ascending within every group")
    k_pad = groups * m
    if a.shape[1] != k_pad:
        a = np.concatenate([a, np.zeros((a.shape[0], k_pad - a.shape[1]), np.float32)], axis=1)
    # Work transposed: gathering contiguous rows of a^T is much faster than gathering columns of a.
    a_t = np.ascontiguousarray(a.T)
    rows_all = (np.arange(groups)[:, None, None] * m + idx).astype(np.intp)
    acc = np.zeros((cols, a.shape[0]), dtype=np.float32)
    p = np.empty_like(acc)
    flush_products = f is not FP16
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for g in range(groups):
            for j in range(n):
                np.multiply(a_t[rows_all[g, j]], vals[g, j, :, None], out=p)
                _accumulate(acc, p, flush_products)
    return _flush_fp32(np.ascontiguousarray(acc.T))
