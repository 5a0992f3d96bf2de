# amaranth: UnusedElaboratable=no
# (the validation test builds components that are rejected or never elaborated, on purpose)
"""Amaranth-simulator tests of ``sat.hw.fp``: FPMultiplier, FP32Adder and FP32Round against ``sat.sw.numerics``,
bit for bit.

Each test streams a few thousand vectors (random bit patterns, every special-value class, rounding ties,
cancellation, overflow and underflow boundaries) through the pipeline with random clock-enable stalls and
compares every output with the golden model. Long runs (100 000 vectors) are the cocotb/Verilator tests in sim/.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from sat.hw.fp import (
    ADDER_LATENCY_RANGE,
    NORMALIZED_FP16,
    FP16NormalizedMultiplier,
    FP16Normalizer,
    FP32Adder,
    FP32Round,
    FPMultiplier,
)
from sat.sim.tb_fp import normalized_fp16_operands, round_random_operands, round_special_operands
from sat.sw.numerics import FORMATS, fp32_add, fp32_bits, fp_mul, round_result

# ------------------------------------------------------------------------------------------------ vectors


def _mul_vectors(fmt: str, n_random: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs (uint16): all pairs of special/boundary patterns, random patterns, random normals."""
    f = FORMATS[fmt]
    e_max = (1 << f.exp_bits) - 1
    s = f.sign_mask
    one = f.bias << f.man_bits
    max_normal = ((e_max - 1) << f.man_bits) | f.man_mask
    min_normal = 1 << f.man_bits
    special = [0, s, 1, f.man_mask, s | 1, min_normal, s | min_normal, max_normal, s | max_normal,
               e_max << f.man_bits, s | (e_max << f.man_bits), f.canonical_nan, (e_max << f.man_bits) | 1,
               0xFFFF, one, s | one, one | f.man_mask, (f.bias - 1) << f.man_bits]
    # Exponents around the FP32 over/underflow boundaries (reachable only with BF16).
    for e in sorted({min(max(e, 1), e_max - 1) for e in (1, 2, 63, 64, 65, 190, 191, e_max - 2, e_max - 1)}):
        special += [e << f.man_bits, (e << f.man_bits) | f.man_mask, s | (e << f.man_bits) | 0x35 & f.man_mask]
    special = np.array(sorted(set(special)), dtype=np.uint16)
    sa, sb = np.meshgrid(special, special)
    rand_a = rng.integers(0, 1 << 16, n_random, dtype=np.uint16)
    rand_b = rng.integers(0, 1 << 16, n_random, dtype=np.uint16)
    # Random normal operands whose exponents sum near the FP32 limits (BF16) or anywhere (FP16).
    ea = rng.integers(1, e_max, n_random)
    eb = rng.integers(1, e_max, n_random)
    if fmt == "bf16":  # exponent sum close to the FP32 limits: 2*bias-126 (underflow), 2*bias+127 (overflow)
        target = rng.choice([2 * f.bias - 126, 2 * f.bias + 127], n_random) + rng.integers(-2, 3, n_random)
        eb = np.clip(target - ea, 1, e_max - 1)
    sig_a = rng.integers(0, 1 << f.man_bits, n_random)
    sig_b = rng.integers(0, 1 << f.man_bits, n_random)
    norm_a = ((rng.integers(0, 2, n_random) << (f.width - 1)) | (ea << f.man_bits) | sig_a).astype(np.uint16)
    norm_b = ((rng.integers(0, 2, n_random) << (f.width - 1)) | (eb << f.man_bits) | sig_b).astype(np.uint16)
    a = np.concatenate([sa.ravel(), rand_a, norm_a])
    b = np.concatenate([sb.ravel(), rand_b, norm_b])
    return a, b


def _f32(sign, exp, man) -> np.ndarray:
    return ((np.asarray(sign, np.uint64) << 31) | (np.asarray(exp, np.uint64) << 23)
            | np.asarray(man, np.uint64)).astype(np.uint32)


def _add_vectors(n_random: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Addend pairs (uint32): specials x specials, random patterns, close exponents, ties, boundaries."""
    man_mask = (1 << 23) - 1
    special = [0, 0x80000000, 1, 0x007FFFFF, 0x80000001, 0x00800000, 0x80800000, 0x00800001, 0x80800001,
               0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFE, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF,
               0x3F800000, 0xBF800000, 0x3F800001, 0xBF7FFFFF, 0x33800000, 0xB3800000, 0x33C00000,
               0x00C00000, 0x80C00000, 0x01000000, 0x81000001, 0x73000000, 0x7E800000]
    special = np.array(special, dtype=np.uint32)
    sa, sb = np.meshgrid(special, special)
    n = n_random
    parts_a, parts_b = [sa.ravel()], [sb.ravel()]
    # Uniform random bit patterns.
    parts_a.append(rng.integers(0, 1 << 32, n, dtype=np.uint32))
    parts_b.append(rng.integers(0, 1 << 32, n, dtype=np.uint32))
    # Close exponents (0..3 apart, both orders, random signs): carries and cancellation.
    e = rng.integers(1, 255, n)
    d = rng.integers(-3, 4, n)
    parts_a.append(_f32(rng.integers(0, 2, n), e, rng.integers(0, 1 << 23, n)))
    parts_b.append(_f32(rng.integers(0, 2, n), np.clip(e + d, 1, 254), rng.integers(0, 1 << 23, n)))
    # Massive cancellation: equal exponents, mantissas differing in a few low bits, opposite signs.
    man = rng.integers(0, 1 << 23, n)
    flip = rng.integers(0, 1 << rng.integers(1, 23, n))
    sign = rng.integers(0, 2, n)
    parts_a.append(_f32(sign, e, man))
    parts_b.append(_f32(1 - sign, e, man ^ flip))
    # Rounding ties and near-ties: the small addend is about half an ulp (or a multiple of it) of the big one.
    shift = rng.integers(22, 28, n)
    small_man = rng.choice([0, 1, man_mask, 1 << 22, (1 << 22) | 1], n)
    eb = np.clip(e - shift, 1, 254)
    parts_a.append(_f32(rng.integers(0, 2, n), e, rng.integers(0, 1 << 23, n) | rng.integers(0, 2, n)))
    parts_b.append(_f32(rng.integers(0, 2, n), eb, small_man))
    # Near overflow and near underflow (results around 2**128 and 2**-126, FTZ).
    e_hi = rng.integers(250, 255, n)
    e_lo = rng.integers(1, 4, n)
    parts_a.append(_f32(rng.integers(0, 2, n), np.where(sign == 1, e_hi, e_lo), rng.integers(0, 1 << 23, n)))
    parts_b.append(_f32(rng.integers(0, 2, n), np.where(sign == 1, e_hi, e_lo), rng.integers(0, 1 << 23, n)))
    return np.concatenate(parts_a), np.concatenate(parts_b)


# ------------------------------------------------------------------------------------------------ harness


def _run_pipeline(dut, out_port, a_vals, b_vals, latency: int, rng: np.random.Generator,
                  stall_prob: float = 0.2) -> np.ndarray:
    """Stream ``(a, b)`` through a clock-enabled pipeline with random stalls; return the outputs in order.

    Checks on the way that the output holds its value during stalls and that exactly ``latency`` enabled cycles
    separate an input from its output.
    """
    n = len(a_vals)
    results = np.zeros(n, dtype=np.uint64)
    stalls = rng.random(n + latency + 64) < stall_prob

    async def testbench(ctx):
        issued = 0
        produced = 0
        cycle = 0
        while produced < n:
            en = 0 if stalls[cycle % len(stalls)] else 1
            cycle += 1
            ctx.set(dut.en, en)
            if issued < n:
                ctx.set(dut.a, int(a_vals[issued]))
                if b_vals is not None:
                    ctx.set(dut.b, int(b_vals[issued]))
            before = ctx.get(out_port)
            await ctx.tick()
            if not en:
                assert ctx.get(out_port) == before, "output changed while en was low"
                continue
            issued += 1
            if issued >= latency:
                results[produced] = ctx.get(out_port)
                produced += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results.astype(np.uint32)


def _report(name, a, b, got, want, fmt_bits: int) -> str:
    bad = np.flatnonzero(got != want)
    lines = [f"{name}: {len(bad)} of {len(got)} mismatches"]
    for i in bad[:10]:
        b_text = "" if b is None else f" b={int(b[i]):0{fmt_bits // 4}x}"
        lines.append(f"  a={int(a[i]):0{fmt_bits // 4}x}{b_text} rtl={int(got[i]):08x} golden={int(want[i]):08x}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_multiplier_matches_golden(fmt):
    rng = np.random.default_rng(0x5A7 + len(fmt) + (fmt == "bf16"))
    a, b = _mul_vectors(fmt, 1000, rng)
    dut = FPMultiplier(fmt)
    got = _run_pipeline(dut, dut.p, a, b, dut.latency, rng)
    want = fp32_bits(fp_mul(a, b, fmt))
    assert np.array_equal(got, want), _report(f"FPMultiplier({fmt})", a, b, got, want, 16)


def fp16_subnormal_vectors(rng: np.random.Generator, n_partner: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every FP16 subnormal mantissa (random sign), each against ``n_partner`` random partners from: subnormals
    with every leading-zero count, normals over all exponents, zeros, Inf, NaN; both operand orders."""
    sub = np.arange(1, 1 << 10, dtype=np.uint16) | (rng.integers(0, 2, 1023) << 15).astype(np.uint16)
    lz_subs = np.array([1 << i for i in range(10)] + [(2 << i) - 1 for i in range(10)], np.uint16)
    normals = (rng.integers(1, 31, 64) << 10 | rng.integers(0, 1 << 10, 64)).astype(np.uint16)
    partners = np.concatenate([lz_subs, lz_subs | 0x8000, normals, normals | 0x8000,
                               np.array([0, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x7BFF, 0x0400, 0x3C00],
                                        np.uint16)])
    a = np.repeat(sub, n_partner)
    b = rng.choice(partners, a.size)
    return np.concatenate([a, b]), np.concatenate([b, a])


def test_multiplier_fp16_subnormal_operands():
    """FP16 subnormal operands keep their value: the RTL product equals the golden model and the exact float64
    product (FP16 products are exact in FP32), and is never zero for nonzero finite operands."""
    rng = np.random.default_rng(0x5B)
    a, b = fp16_subnormal_vectors(rng)
    dut = FPMultiplier("fp16")
    got = _run_pipeline(dut, dut.p, a, b, dut.latency, rng)
    want = fp32_bits(fp_mul(a, b, "fp16"))
    assert np.array_equal(got, want), _report("FPMultiplier(fp16) subnormals", a, b, got, want, 16)
    fa, fb = a.view(np.float16).astype(np.float64), b.view(np.float16).astype(np.float64)
    finite = np.isfinite(fa) & np.isfinite(fb)
    exact = fa[finite] * fb[finite]
    assert np.array_equal(got[finite].view(np.float32).astype(np.float64), exact)
    nonzero = finite & (fa != 0) & (fb != 0)
    assert np.all((got[nonzero] >> 23 & 0xFF) >= 79), "every FP16 product is a normal FP32 number"


def test_normalizer_every_fp16_pattern():
    """FP16Normalizer on all 65 536 FP16 patterns equals the value-based reference: subnormals get a leading 1
    (exponents 1..10, every bit kept), normals exponents 11..40, zeros 0, Inf/NaN 63 with the mantissa kept."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = normalized_fp16_operands(bits)
    sub = ((bits & 0x7C00) == 0) & ((bits & 0x3FF) != 0)
    assert set(np.unique(want[sub] >> 10 & 63)) == set(range(1, 11))
    finite = (bits & 0x7C00) != 0x7C00
    assert set(np.unique(want[finite & ~sub & ((bits & 0x7FFF) != 0)] >> 10 & 63)) == set(range(11, 41))
    dut = FP16Normalizer()
    got = np.zeros(bits.size, dtype=np.uint32)

    async def testbench(ctx):
        for i, x in enumerate(bits.tolist()):
            ctx.set(dut.a, x)
            got[i] = ctx.get(dut.n)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    bad = np.flatnonzero(got != want)
    assert not bad.size, [(f"{int(bits[i]):04x}", f"{int(got[i]):05x}", f"{int(want[i]):05x}") for i in bad[:10]]


def test_edge_normalized_multiplier_matches_golden():
    """FP16Normalizer on both operands + FPMultiplier(prenormalized=True), as the array computes products: equal
    to the golden model on special pairs, random and random-normal pairs and every subnormal mantissa."""
    rng = np.random.default_rng(0x5E)
    a1, b1 = _mul_vectors("fp16", 1000, rng)
    a2, b2 = fp16_subnormal_vectors(rng, n_partner=2)
    a, b = np.concatenate([a1, a2]), np.concatenate([b1, b2])
    dut = FP16NormalizedMultiplier()
    assert dut.latency == FPMultiplier.LATENCY
    got = _run_pipeline(dut, dut.p, a, b, dut.latency, rng)
    want = fp32_bits(fp_mul(a, b, "fp16"))
    assert np.array_equal(got, want), _report("FP16NormalizedMultiplier", a, b, got, want, 16)


def test_prenormalized_multiplier_on_normalized_operands():
    """FPMultiplier(prenormalized=True) alone, driven with reference-normalized operands, with stalls."""
    rng = np.random.default_rng(0x5F)
    a, b = _mul_vectors("fp16", 500, rng)
    dut = FPMultiplier("fp16", prenormalized=True)
    assert dut.prenormalized and dut.operand_width == NORMALIZED_FP16.width == 17
    got = _run_pipeline(dut, dut.p, normalized_fp16_operands(a), normalized_fp16_operands(b), dut.latency, rng)
    want = fp32_bits(fp_mul(a, b, "fp16"))
    assert np.array_equal(got, want), _report("FPMultiplier(fp16, prenormalized)", a, b, got, want, 16)


@pytest.mark.parametrize("latency", [4, 2, 6])
def test_adder_matches_golden(latency):
    rng = np.random.default_rng(0xADD + latency)
    n_random = 500 if latency == 4 else 150
    a, b = _add_vectors(n_random, rng)
    dut = FP32Adder(latency)
    got = _run_pipeline(dut, dut.s, a, b, dut.latency, rng)
    want = fp32_bits(fp32_add(a.view(np.float32), b.view(np.float32)))
    assert np.array_equal(got, want), _report(f"FP32Adder({latency})", a, b, got, want, 32)


@pytest.mark.parametrize("latency", [1, 3, 5, 8])
def test_adder_other_latencies(latency):
    rng = np.random.default_rng(0xA0 + latency)
    a, b = _add_vectors(20, rng)
    a, b = a[-400:], b[-400:]
    dut = FP32Adder(latency)
    got = _run_pipeline(dut, dut.s, a, b, dut.latency, rng)
    want = fp32_bits(fp32_add(a.view(np.float32), b.view(np.float32)))
    assert np.array_equal(got, want), _report(f"FP32Adder({latency})", a, b, got, want, 32)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_round_matches_golden(fmt):
    """FP32Round against :func:`round_result`: edge cases of every binade (ties, carries, overflow, subnormal
    results, NaN/Inf, zeros) and random patterns, with random clock-enable stalls."""
    rng = np.random.default_rng(0x2D + len(fmt) + (fmt == "bf16"))
    special = round_special_operands(fmt)
    a = np.concatenate([rng.choice(special, 1500, replace=False), round_random_operands(rng, 1500, fmt)])
    dut = FP32Round(fmt)
    got = _run_pipeline(dut, dut.r, a, None, dut.latency, rng)
    want = round_result(a, fmt).astype(np.uint32)
    assert np.array_equal(got, want), _report(f"FP32Round({fmt})", a, None, got, want, 32)


def test_parameter_validation():
    with pytest.raises(ValueError, match=r"fmt must be one of \['bf16', 'fp16'\], not 'fp32'"):
        FPMultiplier("fp32")
    for bad in (0, 17, 2.0, True, "4"):
        with pytest.raises(ValueError, match="latency must be an integer between 1 and 16"):
            FP32Adder(bad)
    adder, mul = FP32Adder(6), FPMultiplier("BF16")
    assert (adder.latency, mul.fmt, mul.latency) == (6, "bf16", 3)
    assert (mul.prenormalized, mul.operand_width) == (False, 16)
    with pytest.raises(ValueError, match=r"prenormalized operands are FP16 only \(bf16 has no subnormals\)"):
        FPMultiplier("bf16", prenormalized=True)
    with pytest.raises(ValueError, match=r"fmt must be one of \['bf16', 'fp16'\], not 'fp32'"):
        FP32Round("fp32")
    rnd = FP32Round("FP16")
    assert (rnd.fmt, rnd.latency) == ("fp16", FP32Round.LATENCY)
    assert list(ADDER_LATENCY_RANGE)[:6] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("make", [lambda: FPMultiplier("fp16"), lambda: FPMultiplier("bf16"),
                                  lambda: FPMultiplier("fp16", prenormalized=True), FP16Normalizer,
                                  FP16NormalizedMultiplier,
                                  lambda: FP32Adder(4), lambda: FP32Adder(2), lambda: FP32Round("fp16"),
                                  lambda: FP32Round("bf16")],
                         ids=["mul16", "mulbf", "mul16norm", "norm16", "mul16edge", "add4", "add2", "rnd16", "rndbf"])
def test_verilog_converts(make):
    text = verilog.convert(make(), name="dut")
    assert "module dut" in text
