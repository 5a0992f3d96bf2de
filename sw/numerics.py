"""Bit-exact numerics shared by the golden model and the gateware.

This module *is* the arithmetic contract of SAT (``docs/numerics.md``): GEMM operands are FP16 or BF16,
products are formed exactly in FP32, and every output is accumulated in FP32 with round-to-nearest-even
after every add, sequentially in ascending reduction index, starting from +0. A result leaves either as that FP32
value or rounded once to the operand format (:func:`round_result`).

Special values (the same rules in the RTL):

* **FP16 subnormal operands keep their value** (gradual underflow). Every FP16 x FP16 product is exact and a
  normal FP32 number: the smallest nonzero one is ``2**-24 * 2**-24 = 2**-48``, far above ``2**-126``.
* **Other subnormal inputs** (BF16 operands, FP32 adder inputs) are read as zero of the same sign (DAZ).
* **Underflow**: an FP32 result (a BF16 product, a sum) whose magnitude is below ``2**-126`` becomes **+0** (FTZ);
  so does a BF16 operand or result below ``2**-126``. FP16 operands and results round into the FP16 subnormal
  range, and only a nonzero value that rounds to zero becomes +0.
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
    "RESULT_FORMATS",
    "encode", "decode", "quantize", "fp32_bits", "from_fp32_bits",
    "fp_mul", "fp32_add", "matmul", "matmul_sparse",
    "round_result", "result_values",
]

FP32_CANONICAL_NAN = 0x7FC00000
FP32_MIN_NORMAL = np.float32(2.0**-126)


@dataclass(frozen=True)
class FloatFormat:
    """A 16-bit operand format: sign, ``exp_bits`` exponent bits, ``man_bits`` stored mantissa bits.

    ``subnormals`` says whether operands and narrow results of the format keep subnormal values (FP16) or
    flush them to zero (BF16, whose subnormals lie below FP32's normal range anyway).
    """

    name: str
    exp_bits: int
    man_bits: int
    canonical_nan: int
    subnormals: bool

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


FP16 = FloatFormat("fp16", exp_bits=5, man_bits=10, canonical_nan=0x7E00, subnormals=True)
BF16 = FloatFormat("bf16", exp_bits=8, man_bits=7, canonical_nan=0x7FC0, subnormals=False)
FORMATS = {"fp16": FP16, "bf16": BF16}
#: Result formats of a GEMM: the FP32 chain result, or that result rounded once to an operand format.
RESULT_FORMATS = ("fp32", "fp16", "bf16")


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

    ``x`` is first converted to float32, then rounded to nearest-even into ``fmt`` (once, from the exact float32
    value); overflow gives +-Inf and NaN becomes the format's canonical NaN. Underflow: FP16 rounds into its
    subnormal range (IEEE gradual underflow); BF16 results below ``2**-126`` become +0; in both formats a nonzero
    value that rounds to zero becomes +0. Zeros keep their sign.

    Raises
    ------
    ValueError
        If ``x`` does not hold real numbers (complex values would lose their imaginary part; strings, objects).
    """
    f = get_format(fmt)
    x = real_array(x, "operand").astype(np.float32, copy=False)
    if f is FP16:
        # numpy's float32 -> float16 conversion is IEEE round-to-nearest-even with gradual underflow
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            bits = np.array(x.astype(np.float16).view(np.uint16), copy=True)
    else:
        b32 = x.view(np.uint32).astype(np.uint64)
        rounded = (b32 + 0x7FFF + ((b32 >> 16) & 1)) >> 16
        bits = np.array(rounded, dtype=np.uint16)
    if f.subnormals:
        underflow = (bits & ~np.uint16(f.sign_mask)) == 0           # rounded to (signed) zero
    else:
        underflow = (bits & f.exp_mask) == 0                        # subnormal or (signed) zero
    bits[underflow & (x != 0)] = 0                                  # a nonzero value that underflows gives +0
    bits[np.isnan(x)] = f.canonical_nan
    return bits


def decode(bits, fmt: str | FloatFormat = "fp16", *, daz: bool | None = None) -> np.ndarray:
    """float32 values of operand bit patterns, as the RTL reads them.

    ``daz=None`` (default) applies the format's operand rule: FP16 subnormals keep their value, BF16 subnormals
    read as zero of the same sign. ``daz=True`` / ``False`` force flushing / keeping subnormals (``daz=False``
    gives the raw IEEE value of any pattern).

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
    if daz is None:
        daz = not f.subnormals
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
    """Exact FP32 products of operands (uint16 bit patterns or values), with the FTZ / NaN policy.

    FP16 operands keep subnormal values and every FP16 product is a normal FP32 number (or zero, Inf, NaN);
    BF16 subnormal operands read as zero and BF16 products can over- or underflow FP32.
    """
    f = get_format(fmt)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # Products of <= 11-bit significands are exact in float32 unless they over- or underflow (FP16
        # products, subnormal operands included, lie in [2**-48, 2**32): they never do); an underflowing BF16
        # product lies below 2**-126 by more than half a subnormal ulp, so numpy's gradual-underflow result is
        # below the normal range too and is flushed.
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


def round_result(x, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """A narrow GEMM result: FP32 values rounded once to the operand format, as bit patterns (uint16).

    This is the result writer's rounding (``docs/numerics.md``, "Result format"): round to nearest, ties to even,
    from the exact value of the FP32 input; overflow gives +-Inf; FP16 results round into the FP16 subnormal
    range, BF16 results below ``2**-126`` become +0, and a nonzero input that rounds to zero becomes +0; zeros
    keep their sign; NaN becomes the format's canonical NaN. The FP32 chain never produces subnormals or -0,
    but the rule covers every FP32 pattern (subnormal inputs are rounded like any other value, no DAZ), and it
    equals :func:`encode` on float32 values: the host and the card round the same way.

    Parameters
    ----------
    x : float32 array or uint32 array
        FP32 results, as values or as bit patterns.
    fmt : "fp16" or "bf16"
        Result (operand) format.

    Returns
    -------
    uint16 array of the shape of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is neither float32 nor uint32 (a float64 value would be rounded twice: use :func:`encode`
        for host values), or ``fmt`` is unknown.
    """
    f = get_format(fmt)
    x = np.asarray(x)
    if x.dtype == np.uint32:
        x = x.view(np.float32)
    elif x.dtype != np.float32:
        raise ValueError(f"round_result takes FP32 results (float32 values or uint32 bit patterns), not "
                         f"{x.dtype}; round host values with encode()")
    return encode(x, f)


def result_values(x, out_fmt: str = "fp32") -> np.ndarray:
    """float32 values of a GEMM result as stored in ``out_fmt``: the FP32 chain result unchanged (canonical NaN),
    or its :func:`round_result` in FP16/BF16 read back exactly (FP16 subnormals kept).

    Parameters
    ----------
    x : float32 array or uint32 array
        FP32 results (the chain output of :func:`matmul` / :func:`matmul_sparse`).
    out_fmt : "fp32", "fp16" or "bf16"
        Result format (a narrow result uses the build's operand format).

    Raises
    ------
    ValueError
        For an unknown ``out_fmt`` or an input that is not FP32.
    """
    key = str(out_fmt).lower()
    if key not in RESULT_FORMATS:
        raise ValueError(f"result format must be one of {list(RESULT_FORMATS)}, not {out_fmt!r}")
    if key == "fp32":
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.uint32):
            raise ValueError(f"result_values takes FP32 results (float32 values or uint32 bit patterns), not "
                             f"{x.dtype}")
        return from_fp32_bits(fp32_bits(x.view(np.float32)))
    f = get_format(key)
    return decode(round_result(x, f), f, daz=False)
