"""FP16/BF16 x FP32 arithmetic gateware: the multiplier and the FP32 adder of a SAT processing element, and the
rounding of an FP32 result to a narrow (FP16/BF16) one.

The units implement the arithmetic contract of :mod:`sat.sw.numerics` bit for bit (see ``docs/arithmetic.md``):

* operands are FP16 (1/5/10) or BF16 (1/8/7); their product is formed exactly and returned in FP32;
* FP16 subnormal operands keep their value (every FP16 product is a normal FP32 number); BF16 subnormal operands
  and subnormal adder inputs read as zero of the same sign (DAZ);
* the FP32 adder rounds to nearest, ties to even, using guard/round/sticky bits;
* a rounded FP32 result below 2**-126 becomes **+0** (FTZ), overflow gives +-Inf as round-to-nearest-even does;
* every NaN result is the canonical FP32 NaN ``0x7FC00000``; ``Inf * 0`` and ``Inf - Inf`` are NaN;
* exact zero sums follow IEEE: ``x + (-x) = +0``, ``-0 + -0 = -0``; a product of zero keeps the xor sign;
* :class:`FP32Round` rounds an FP32 result once to FP16 (into its subnormal range) or BF16, as
  :func:`sat.sw.numerics.round_result`.
* :class:`FP16Normalizer` turns an FP16 operand into :data:`NORMALIZED_FP16` (every nonzero finite value with a
  leading 1), which ``FPMultiplier("fp16", prenormalized=True)`` multiplies without per-multiplier subnormal
  logic: a systolic array normalizes its operands once at its edge instead of in every PE.

The units are pipelines with a clock enable ``en``: every register advances only in cycles where ``en`` is 1,
so ``latency`` counts ``en`` cycles. Inputs presented in a cycle with ``en`` high appear at the output after
``latency`` such cycles and stay there while ``en`` is low.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sat.sw.numerics import FORMATS, FP32_CANONICAL_NAN, FloatFormat

__all__ = ["FPMultiplier", "FP16Normalizer", "FP16NormalizedMultiplier", "FP32Adder", "FP32Round",
           "ADDER_LATENCY_RANGE", "NORMALIZED_FP16", "normalized_at_edge"]

_FP32_INF = 0x7F800000


@dataclass(frozen=True)
class _NormalizedFormat:
    """The internal operand format :class:`FP16Normalizer` produces: every nonzero finite value has a leading 1.

    17 bits, ``{sign, exponent[6], mantissa[10]}``: a finite nonzero value is ``1.mantissa * 2**(exponent -
    bias)`` with ``bias = 25``, so FP16 normals (``2**-14 .. 2**15``) take exponents 11..40 and FP16 subnormals
    (``2**-24 .. 2**-15``) exponents 1..10. Exponent 0 (mantissa 0) is a zero of either sign; exponent 63 is Inf
    (mantissa 0) or NaN (mantissa nonzero). The classes decode like an IEEE format without subnormals, so a
    multiplier of such operands needs no leading-zero count.
    """

    exp_bits: int = 6
    man_bits: int = 10
    bias: int = 25

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def exp_max(self) -> int:
        """The all-ones exponent of Inf and NaN."""
        return (1 << self.exp_bits) - 1


#: The normalized FP16 operand format (see :class:`FP16Normalizer`).
NORMALIZED_FP16 = _NormalizedFormat()


def normalized_at_edge(fmt: str) -> bool:
    """Whether a systolic array of ``fmt`` operands normalizes them at its edge (:class:`FP16Normalizer`) and
    builds its PEs with ``prenormalized`` multipliers: FP16 (subnormal operands); BF16 (DAZ) needs no
    normalization."""
    return FORMATS[fmt.lower()].subnormals

#: Supported ``FP32Adder`` latencies (the same range as ``SATConfig.adder_latency``).
ADDER_LATENCY_RANGE = range(1, 17)

# The adder is six combinational steps; ``_ADDER_CUTS[L]`` lists after which steps (1..5) a pipeline register
# is placed when the latency is ``L`` (the output register after step 6 always exists). Latencies above 6 add
# further registers behind the output register, where the synthesis tool can retime them.
#   1 unpack/compare/swap/exponent difference  2 align (barrel shift right, sticky)  3 add/subtract
#   4 leading-zero count                       5 normalize (barrel shift left)       6 round, pack, specials
_ADDER_CUTS: dict[int, tuple[int, ...]] = {
    1: (),
    2: (3,),
    3: (2, 4),
    4: (1, 3, 5),
    5: (1, 2, 3, 5),
    6: (1, 2, 3, 4, 5),
}


def _register(m: Module, en: Value, values: dict[str, Value], prefix: str) -> dict[str, Signal]:
    """Register every value of ``values`` (advancing when ``en``); return the registers under the same keys."""
    regs = {}
    for key, value in values.items():
        value = Value.cast(value)
        reg = Signal(value.shape(), name=f"{prefix}_{key}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        regs[key] = reg
    return regs


def _wire(m: Module, value: Value, name: str) -> Signal:
    """A named combinational signal driven by ``value`` (readable names in waveforms and Verilog)."""
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def _leading_zeros(x: Value) -> tuple[Value, Value]:
    """Leading-zero count of ``x`` (width a power of two) as a balanced tree: ``(all_zero, count)``.

    ``count`` has ``log2(len(x))`` bits and is meaningful only when ``all_zero`` is 0.
    """
    width = len(x)
    if width == 2:
        return ~(x[0] | x[1]), ~x[1]
    half = width // 2
    zero_hi, count_hi = _leading_zeros(x[half:])
    zero_lo, count_lo = _leading_zeros(x[:half])
    return zero_hi & zero_lo, Mux(zero_hi, Cat(count_lo, Const(1, 1)), Cat(count_hi, Const(0, 1)))


class FP16Normalizer(wiring.Component):
    """Combinational FP16 to :data:`NORMALIZED_FP16` converter: the operand work of FP16 subnormals, done once.

    A systolic array's operands flow unchanged through its PEs (activations along rows, weights down columns),
    so the array normalizes each FP16 operand once at its edge, before the skew registers, and every PE's
    :class:`FPMultiplier` (``prenormalized=True``) multiplies two significands with a leading 1 like normal
    numbers: no per-PE leading-zero counts or product shift (about 80 LUTs per PE, see ``docs/arithmetic.md``).

    ==========================  ==========================================  ===============
    FP16 input                  exponent (bias 25)                          mantissa
    ==========================  ==========================================  ===============
    normal, exponent ``e``      ``e + 10`` (11..40)                         unchanged
    subnormal, ``z`` leading    ``10 - z`` (1..10)                          shifted left by ``z + 1``
    zeros in the mantissa       (hidden bit dropped)
    +-0                         0                                           0
    +-Inf, NaN                  63                                          unchanged (NaN stays nonzero)
    ==========================  ==========================================  ===============

    The sign is kept in every case. The mapping is exact (a subnormal keeps every significant bit), so the
    products equal :func:`sat.sw.numerics.fp_mul` bit for bit.

    Attributes
    ----------
    a : In(16)
        FP16 bit pattern.
    n : Out(17)
        The same value in :data:`NORMALIZED_FP16`: ``{sign, exponent[6], mantissa[10]}``.
    """

    a: In(16)
    n: Out(NORMALIZED_FP16.width)

    def elaborate(self, platform) -> Module:
        m = Module()
        f, nf = FORMATS["fp16"], NORMALIZED_FP16
        exp, man = self.a[f.man_bits:f.man_bits + f.exp_bits], self.a[:f.man_bits]
        # Leading zeros of the mantissa, 10 for a zero mantissa (the 1 just below it stops the count).
        _, lz = _leading_zeros(Cat(Const(1 << 5, 6), man))
        exp_of_normal = exp + (nf.bias - f.bias)
        norm_exp = Signal(nf.exp_bits, name="norm_exp")
        norm_man = Signal(nf.man_bits, name="norm_man")
        with m.If(exp == 0):
            # subnormal 0.man * 2**-14 = 1.(man << (lz + 1)) * 2**(-15 - lz); zero: lz = 10, exponent 0
            m.d.comb += [norm_exp.eq((nf.bias - f.bias) - lz),
                         norm_man.eq((man << lz)[:f.man_bits - 1] << 1)]
        with m.Elif(exp.all()):
            m.d.comb += [norm_exp.eq(nf.exp_max), norm_man.eq(man)]
        with m.Else():
            m.d.comb += [norm_exp.eq(exp_of_normal), norm_man.eq(man)]
        m.d.comb += self.n.eq(Cat(norm_man, norm_exp, self.a[15]))
        return m


class FPMultiplier(wiring.Component):
    """Exact FP16 x FP16 or BF16 x BF16 multiplier with an FP32 result.

    Three pipeline stages, mapped for one DSP48E2 per multiplier on UltraScale+:

    1. input registers ``a``/``b`` (the DSP's A/B registers; FP16: and each operand's hidden bit);
    2. the significand product (11 x 11 or 8 x 8 bits, unsigned) in the DSP's M register, beside it the exponent
       sum, the product sign and the special-value class in fabric registers; FP16: also the leading-zero count
       of each significand (nonzero for subnormal operands), subtracted from the exponent sum;
    3. FP16: shift the product left by the leading zeros; normalize (at most one bit), rebias to FP32,
       over/underflow (BF16 only) and special values, output register.

    With ``prenormalized=True`` (FP16 only) the operands are :data:`NORMALIZED_FP16` values from
    :class:`FP16Normalizer` (17 bits): their significands always have a leading 1, so the FP16 multiplier is
    built like the BF16 one, without hidden-bit registers, leading-zero counts or the product's left shift (the
    product lies in [1, 4): at most one normalizing bit). The systolic array normalizes its operands once at its
    edge and builds its PEs this way; the products, and the latency, are the same.

    Equal to :func:`sat.sw.numerics.fp_mul` bit for bit, including FP16 subnormal operands (kept: every FP16
    product is exact and a normal FP32 number, down to ``2**-48``), BF16 DAZ and FTZ to +0, overflow to +-Inf
    (BF16 only), canonical NaN and ``Inf * 0 = NaN``.

    Parameters
    ----------
    fmt : "fp16" or "bf16"
        Operand format.
    prenormalized : bool
        FP16 only: the operands are :data:`NORMALIZED_FP16` (17 bits) instead of FP16 bit patterns.

    Attributes
    ----------
    a, b : In(16), or In(17) if ``prenormalized``
        Operand bit patterns.
    en : In(1), init 1
        Clock enable: the pipeline advances only in cycles where ``en`` is 1.
    p : Out(32)
        FP32 product of the operands presented ``latency`` enabled cycles earlier.

    Raises
    ------
    ValueError
        If ``fmt`` is not "fp16" or "bf16", or ``prenormalized`` is set for BF16.
    """

    LATENCY = 3

    def __init__(self, fmt: str = "fp16", *, prenormalized: bool = False) -> None:
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")
        self._format: FloatFormat = FORMATS[fmt.lower()]
        if prenormalized and not self._format.subnormals:
            raise ValueError(f"prenormalized operands are FP16 only ({self._format.name} has no subnormals)")
        self._prenormalized = bool(prenormalized)
        width = NORMALIZED_FP16.width if self._prenormalized else self._format.width
        super().__init__({"a": In(width), "b": In(width), "en": In(1, init=1), "p": Out(32)})

    @property
    def fmt(self) -> str:
        """Operand format name ("fp16" or "bf16")."""
        return self._format.name

    @property
    def prenormalized(self) -> bool:
        """The operands are :data:`NORMALIZED_FP16` values (see :class:`FP16Normalizer`)."""
        return self._prenormalized

    @property
    def operand_width(self) -> int:
        """Width of ``a`` and ``b``: 16, or 17 for prenormalized operands."""
        return len(self.a)

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high) from ``a``/``b`` to ``p``."""
        return self.LATENCY

    def elaborate(self, platform) -> Module:
        m = Module()
        f = self._format
        # Operand fields. Prenormalized FP16 operands decode like a format without subnormals (zero = exponent 0),
        # so the FP16-subnormal logic below (hidden-bit registers, leading zeros, product shift) is left out.
        layout = NORMALIZED_FP16 if self._prenormalized else f
        width = layout.width
        e_bits, m_bits, bias = layout.exp_bits, layout.man_bits, layout.bias
        subnormals = f.subnormals and not self._prenormalized
        e_max = (1 << e_bits) - 1
        sig_bits = m_bits + 1
        prod_bits = 2 * sig_bits

        # Stage 1: input registers (DSP48E2 AREG/BREG). With FP16 subnormals, the hidden bit (exponent != 0) is
        # registered beside them, so the multiplier's inputs still come straight from registers.
        a_reg = Signal(width, name="a_reg")
        b_reg = Signal(width, name="b_reg")
        with m.If(self.en):
            m.d.sync += [a_reg.eq(self.a), b_reg.eq(self.b)]
        if subnormals:
            hidden = _register(m, self.en, {"a": self.a[m_bits:m_bits + e_bits].any(),
                                            "b": self.b[m_bits:m_bits + e_bits].any()}, "mul_hidden")

        def unpack(x: Value, name: str) -> dict[str, Value]:
            exp, man = x[m_bits:m_bits + e_bits], x[:m_bits]
            cls = {"sign": x[width - 1], "inf": exp.all() & ~man.any(), "nan": exp.all() & man.any()}
            if subnormals:
                # gradual underflow: a subnormal is 0.man * 2**(1 - bias), so hidden bit 0 and exponent 1;
                # its leading zeros (1..m_bits) are normalised away after the multiply
                sig = _wire(m, Cat(man, hidden[name]), f"mul_{name}_sig")
                _, lz = _leading_zeros(Cat(Const((1 << (16 - sig_bits)) - 1, 16 - sig_bits), sig))
                return {**cls, "exp": exp | ~hidden[name], "sig": sig, "lz": lz,
                        "zero": ~hidden[name] & ~man.any()}
            return {**cls, "exp": exp, "sig": Cat(man, Const(1, 1)),
                    "zero": ~exp.any()}  # zero, or a BF16 subnormal (DAZ)

        ua, ub = unpack(a_reg, "a"), unpack(b_reg, "b")

        # Stage 2: significand product (DSP48E2 multiplier with MREG); beside it in fabric the exponent sum (less
        # the FP16 operands' leading zeros), the product sign and the special-value class.
        stage2 = {
            "prod": ua["sig"] * ub["sig"],  # prod_bits bits: in [1, 4) for normals, down to 2**-20 for raw FP16
            "sign": ua["sign"] ^ ub["sign"],
            "nan": ua["nan"] | ub["nan"] | (ua["inf"] & ub["zero"]) | (ub["inf"] & ua["zero"]),
            "inf": ua["inf"] | ub["inf"],
            "zero": ua["zero"] | ub["zero"],
        }
        if subnormals:
            lz = _wire(m, ua["lz"] + ub["lz"], "mul_lz")
            exp_sum = Signal(signed(e_bits + 3), name="mul_exp_sum")
            m.d.comb += exp_sum.eq(ua["exp"] + ub["exp"] - lz)  # FP16: 2 - 20 .. 60
            stage2.update(lz=lz, exp_sum=exp_sum)
        else:
            stage2.update(exp_sum=ua["exp"] + ub["exp"])
        s2 = _register(m, self.en, stage2, "mul_s2")

        # Stage 3: normalise (shift out the subnormal operands' leading zeros, then at most one bit), rebias,
        # classify, pack. After the shift the product is that of two normalised significands, in [1, 4).
        prod = s2["prod"]
        if subnormals:
            prod = _wire(m, (prod << s2["lz"])[:prod_bits], "mul_prod_norm")
        frac_bits = 2 * m_bits
        carry = _wire(m, prod[frac_bits + 1], "mul_carry")
        frac = _wire(m, Mux(carry,
                            Cat(Const(0, 23 - (frac_bits + 1)), prod[:frac_bits + 1]),
                            Cat(Const(0, 23 - frac_bits), prod[:frac_bits])), "mul_frac")
        exp = Signal(signed(12), name="mul_exp")
        m.d.comb += exp.eq(s2["exp_sum"] + carry + (127 - 2 * bias))

        # Exponent range of nonzero finite products; over/underflow logic only where it can happen
        # (FP16: 2 - 20 + 97 = 79 .. 60 + 1 + 97 = 158, always a normal FP32 exponent; prenormalized FP16, whose
        # bias 25 makes the all-ones exponent 63 Inf/NaN only: 2 + 77 = 79 .. 124 + 1 + 77 = 202).
        min_sum = 2 - (2 * m_bits if subnormals else 0)
        exp_lo = min_sum + (127 - 2 * bias)
        exp_hi = 2 * (e_max - 1) + 1 + (127 - 2 * bias)
        sign = s2["sign"]
        result = Signal(32, name="mul_result")
        with m.If(s2["nan"]):
            m.d.comb += result.eq(FP32_CANONICAL_NAN)
        with m.Elif(s2["inf"]):
            m.d.comb += result.eq(Cat(Const(_FP32_INF, 31), sign))
        with m.Elif(s2["zero"]):
            m.d.comb += result.eq(Cat(Const(0, 31), sign))
        if exp_hi >= 255:
            with m.Elif(exp >= 255):
                m.d.comb += result.eq(Cat(Const(_FP32_INF, 31), sign))
        if exp_lo <= 0:
            with m.Elif(exp <= 0):
                m.d.comb += result.eq(0)  # FTZ to +0
        with m.Else():
            m.d.comb += result.eq(Cat(frac, exp[:8], sign))

        with m.If(self.en):
            m.d.sync += self.p.eq(result)
        return m


class FP16NormalizedMultiplier(wiring.Component):
    """FP16 multiplier as a systolic array builds it: :class:`FP16Normalizer` on both operands, then
    ``FPMultiplier("fp16", prenormalized=True)``.

    Same ports, latency and results as ``FPMultiplier("fp16")``; it exists so the edge normalization can be
    verified on its own against :func:`sat.sw.numerics.fp_mul` (``tests/test_fp_amaranth.py``,
    ``tests/test_fp_rtl.py``).

    Attributes
    ----------
    a, b : In(16)
        FP16 operand bit patterns.
    en : In(1), init 1
        Clock enable of the multiplier pipeline (the normalizers are combinational).
    p : Out(32)
        FP32 product of the operands presented ``latency`` enabled cycles earlier.
    """

    a: In(16)
    b: In(16)
    en: In(1, init=1)
    p: Out(32)

    LATENCY = FPMultiplier.LATENCY

    @property
    def fmt(self) -> str:
        """Operand format name ("fp16")."""
        return "fp16"

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high) from ``a``/``b`` to ``p``, as ``FPMultiplier``."""
        return self.LATENCY

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.norm_a = norm_a = FP16Normalizer()
        m.submodules.norm_b = norm_b = FP16Normalizer()
        m.submodules.multiplier = mul = FPMultiplier("fp16", prenormalized=True)
        m.d.comb += [
            norm_a.a.eq(self.a),
            norm_b.a.eq(self.b),
            mul.a.eq(norm_a.n),
            mul.b.eq(norm_b.n),
            mul.en.eq(self.en),
            self.p.eq(mul.p),
        ]
        return m


class FP32Adder(wiring.Component):
    """Pipelined FP32 adder, round to nearest even, with the DAZ / FTZ-to-+0 / canonical-NaN policy of SAT.

    Equal to :func:`sat.sw.numerics.fp32_add` bit for bit. The datapath is six combinational steps

    1. unpack with DAZ, order the operands by magnitude (swap), exponent difference, special-value class;
    2. align the smaller significand (barrel shift right by up to 31, keeping guard, round and sticky bits);
    3. add or subtract the 27-bit significands (magnitude order makes the difference non-negative);
    4. leading-zero count of the 28-bit sum (balanced tree);
    5. normalize (barrel shift left), exponent adjust with an unbounded (10-bit signed) exponent;
    6. round to nearest even, exponent carry, overflow to +-Inf, FTZ to +0, zero sign, NaN/Inf, pack,

    separated by pipeline registers according to ``latency`` (see ``docs/arithmetic.md``): latency 4 registers
    after steps 1, 3, 5 and 6. The output ``s`` is always a register.

    Parameters
    ----------
    latency : int
        Pipeline depth, 1 to 16 (6 registers cover every natural stage; more are added behind the output).

    Attributes
    ----------
    a, b : In(32)
        FP32 addends.
    en : In(1), init 1
        Clock enable: the pipeline advances only in cycles where ``en`` is 1.
    s : Out(32)
        FP32 sum of the addends presented ``latency`` enabled cycles earlier.

    Raises
    ------
    ValueError
        If ``latency`` is not an integer in ``ADDER_LATENCY_RANGE``.
    """

    a: In(32)
    b: In(32)
    en: In(1, init=1)
    s: Out(32)

    def __init__(self, latency: int = 4) -> None:
        if not isinstance(latency, int) or isinstance(latency, bool) or latency not in ADDER_LATENCY_RANGE:
            raise ValueError(f"latency must be an integer between {ADDER_LATENCY_RANGE.start} and "
                             f"{ADDER_LATENCY_RANGE.stop - 1}, not {latency!r}")
        self._latency = latency
        super().__init__()

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high) from ``a``/``b`` to ``s``."""
        return self._latency

    def elaborate(self, platform) -> Module:
        m = Module()
        cuts = _ADDER_CUTS[min(self._latency, 6)]

        def cut(step: int, values: dict[str, Value]) -> dict[str, Value]:
            if step in cuts:
                return _register(m, self.en, values, f"add_s{step}")
            return {k: _wire(m, v, f"add_c{step}_{k}") for k, v in values.items()}

        # Step 1: unpack (DAZ), order by magnitude, exponent difference, special values.
        def unpack(x: Value) -> dict[str, Value]:
            exp, man = x[23:31], x[:23]
            zero = ~exp.any()
            return {
                "sign": x[31], "exp": exp, "zero": zero,
                "mag": Mux(zero, 0, x[:31]),
                "sig": Mux(zero, 0, Cat(man, Const(1, 1))),
                "inf": exp.all() & ~man.any(),
                "nan": exp.all() & man.any(),
            }

        ua, ub = unpack(self.a), unpack(self.b)
        swap = _wire(m, ub["mag"] > ua["mag"], "add_swap")
        exp_x = Mux(swap, ub["exp"], ua["exp"])
        exp_y = Mux(swap, ua["exp"], ub["exp"])
        diff = _wire(m, exp_x - exp_y, "add_exp_diff")  # >= 0 (a zero operand has exponent 0)
        s1 = cut(1, {
            "sign_x": Mux(swap, ub["sign"], ua["sign"]),
            "eff_sub": ua["sign"] ^ ub["sign"],
            "exp_x": exp_x,
            "sig_x": Mux(swap, ub["sig"], ua["sig"]),
            "sig_y": Mux(swap, ua["sig"], ub["sig"]),
            "shift": Mux(diff[5:8].any(), 31, diff[:5]),
            "zero_sign": ua["sign"] & ub["sign"],  # sign of an exact zero sum: -0 only for -0 + -0
            "nan": ua["nan"] | ub["nan"] | (ua["inf"] & ub["inf"] & (ua["sign"] != ub["sign"])),
            "inf": ua["inf"] | ub["inf"],
            "inf_sign": Mux(ua["inf"], ua["sign"], ub["sign"]),
        })

        # Step 2: align the smaller operand: 24 significand bits, guard, round, and a sticky bit.
        wide = Cat(Const(0, 26), s1["sig_y"]) >> s1["shift"]   # 50 bits; the hidden bit never falls off
        aligned = Cat(wide[:24].any(), wide[24:50])             # 27 bits: sticky, round, guard, significand
        s2 = cut(2, {
            **{k: s1[k] for k in ("sign_x", "eff_sub", "exp_x", "zero_sign", "nan", "inf", "inf_sign")},
            "x": Cat(Const(0, 3), s1["sig_x"]),
            "y": aligned,
        })

        # Step 3: add or subtract (|x| >= |y|, so the difference is non-negative).
        total = Mux(s2["eff_sub"], (s2["x"] - s2["y"])[:28], s2["x"] + s2["y"])
        s3 = cut(3, {
            **{k: s2[k] for k in ("sign_x", "exp_x", "zero_sign", "nan", "inf", "inf_sign")},
            "sum": total,
        })

        # Step 4: leading-zero count of the 28-bit sum (padded to 32 bits at the bottom).
        sum_zero, lz = _leading_zeros(Cat(Const(0, 4), s3["sum"]))
        s4 = cut(4, {**s3, "sum_zero": sum_zero, "lz": lz})

        # Step 5: normalize so that the leading one is bit 27; exponent with an unbounded range.
        norm = (s4["sum"] << s4["lz"])[:28]
        exp = Signal(signed(10), name="add_norm_exp")
        m.d.comb += exp.eq(s4["exp_x"] + 1 - s4["lz"])
        s5 = cut(5, {
            **{k: s4[k] for k in ("sign_x", "zero_sign", "nan", "inf", "inf_sign", "sum_zero")},
            "norm": norm, "exp": exp,
        })

        # Step 6: round to nearest even: bit 27 hidden, 26..4 mantissa, 3 guard, 2..0 sticky.
        norm = s5["norm"]
        round_up = _wire(m, norm[3] & (norm[:3].any() | norm[4]), "add_round_up")
        rounded = _wire(m, norm[4:28] + round_up, "add_rounded")          # 25 bits
        exp_final = Signal(signed(11), name="add_exp_final")
        m.d.comb += exp_final.eq(s5["exp"] + rounded[24])
        sign = s5["sign_x"]
        result = Signal(32, name="add_result")
        with m.If(s5["nan"]):
            m.d.comb += result.eq(FP32_CANONICAL_NAN)
        with m.Elif(s5["inf"]):
            m.d.comb += result.eq(Cat(Const(_FP32_INF, 31), s5["inf_sign"]))
        with m.Elif(s5["sum_zero"]):
            m.d.comb += result.eq(Cat(Const(0, 31), s5["zero_sign"]))
        with m.Elif(exp_final >= 255):
            m.d.comb += result.eq(Cat(Const(_FP32_INF, 31), sign))
        with m.Elif(exp_final <= 0):
            m.d.comb += result.eq(0)  # FTZ to +0
        with m.Else():
            m.d.comb += result.eq(Cat(rounded[:23], exp_final[:8], sign))

        # Output register, then any extra stages beyond the six natural ones.
        out = result
        for i in range(max(0, self._latency - 6)):
            reg = Signal(32, name=f"add_extra{i}")
            with m.If(self.en):
                m.d.sync += reg.eq(out)
            out = reg
        with m.If(self.en):
            m.d.sync += self.s.eq(out)
        return m


class FP32Round(wiring.Component):
    """Rounds an FP32 result once to the operand format (FP16 or BF16): the narrow result of a GEMM.

    Equal to :func:`sat.sw.numerics.round_result` bit for bit (``docs/numerics.md``, "Result format"): round to
    nearest, ties to even, from the exact value of the FP32 input; overflow gives +-Inf; FP16 results round into
    the FP16 subnormal range, BF16 results below ``2**-126`` become +0; a nonzero input that rounds to zero gives
    +0; zeros keep their sign; NaN gives the format's canonical NaN (``0x7E00`` / ``0x7FC0``).

    Two pipeline stages (``docs/arithmetic.md``):

    1. FP16: classify, rebias (``E - 112``), the extra right shift of a subnormal result (``113 - E``, clamped to
       12) and the sticky OR of the 12 mantissa bits that always fall off. BF16: the round-up decision (guard
       bit 15, sticky bits 14..0, last kept bit 16);
    2. FP16: align (shift right by 0..12), round-up decision, then for both formats the 15-bit increment of the
       packed magnitude, whose carry ripples into the exponent (a subnormal that rounds up to ``2**-14``, a
       maximum that overflows to Inf), specials and pack; output register.

    Parameters
    ----------
    fmt : "fp16" or "bf16"
        Result (operand) format.

    Attributes
    ----------
    a : In(32)
        FP32 bit pattern.
    en : In(1), init 1
        Clock enable: the pipeline advances only in cycles where ``en`` is 1.
    r : Out(16)
        ``a`` rounded to ``fmt``, presented ``latency`` enabled cycles earlier.

    Raises
    ------
    ValueError
        If ``fmt`` is not "fp16" or "bf16".
    """

    a: In(32)
    en: In(1, init=1)
    r: Out(16)

    LATENCY = 2

    def __init__(self, fmt: str = "fp16") -> None:
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")
        self._format: FloatFormat = FORMATS[fmt.lower()]
        super().__init__()

    @property
    def fmt(self) -> str:
        """Result format name ("fp16" or "bf16")."""
        return self._format.name

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high) from ``a`` to ``r``."""
        return self.LATENCY

    def elaborate(self, platform) -> Module:
        m = Module()
        f = self._format
        x = self.a
        sign, exp, man = x[31], x[23:31], x[:23]
        common = {
            "sign": sign,
            "nan": exp.all() & man.any(),
            "zero_in": ~x[:31].any(),  # an exact zero keeps its sign
        }
        if f is FORMATS["bf16"]:
            # Stage 1: round-up decision on the 16 bits that fall off.
            s1 = _register(m, self.en, {
                **common,
                "top": x[16:31],
                "round_up": x[15] & (x[:15].any() | x[16]),
            }, "rnd_s1")
            # Stage 2: increment; the carry ripples into the exponent (0x7F7F + 1 = 0x7F80 = Inf).
            mag = _wire(m, (s1["top"] + s1["round_up"])[:15], "rnd_mag")
            below_normal = ~mag[7:15].any()  # BF16 subnormal or zero: +0 unless the input was an exact zero
            result = Signal(16, name="rnd_result")
            with m.If(s1["nan"]):
                m.d.comb += result.eq(f.canonical_nan)
            with m.Elif(below_normal):
                m.d.comb += result.eq(Cat(Const(0, 15), s1["sign"] & s1["zero_in"]))
            with m.Else():
                m.d.comb += result.eq(Cat(mag, s1["sign"]))
        else:
            # Stage 1: classify, rebias, the subnormal shift, the sticky OR of the low 12 mantissa bits.
            e = Signal(signed(10), name="rnd_exp16")  # the FP16 biased exponent of a normal result: E - 112
            m.d.comb += e.eq(exp - 112)
            normal = _wire(m, e >= 1, "rnd_normal")
            sub_shift = Signal(4, name="rnd_sub_shift")
            with m.If(normal):
                m.d.comb += sub_shift.eq(0)
            with m.Elif(e <= -11):
                m.d.comb += sub_shift.eq(12)  # the value is below 2**-26: rounds to zero whatever its bits
            with m.Else():
                m.d.comb += sub_shift.eq(1 - e)
            s1 = _register(m, self.en, {
                **common,
                "inf": exp.all() & ~man.any(),
                "overflow": e >= 31,
                "exp5": Mux(normal, e[:5], 0),
                "shift": sub_shift,
                "keep": Cat(man[12:23], exp.any()),  # guard bit (mantissa bit 12) and the 11 result bits
                "sticky": man[:12].any(),
            }, "rnd_s1")
            # Stage 2: align a subnormal result, round to nearest even, increment, pack.
            w = _wire(m, Cat(Const(0, 12), s1["keep"]) >> s1["shift"], "rnd_aligned")  # 24 bits
            kept, guard = w[13:24], w[12]
            sticky = w[:12].any() | s1["sticky"]
            round_up = _wire(m, guard & (sticky | kept[0]), "rnd_round_up")
            mag = _wire(m, (Cat(kept[:10], s1["exp5"]) + round_up)[:15], "rnd_mag")  # carries into the exponent
            result = Signal(16, name="rnd_result")
            with m.If(s1["nan"]):
                m.d.comb += result.eq(f.canonical_nan)
            with m.Elif(s1["inf"] | s1["overflow"]):
                m.d.comb += result.eq(Cat(Const(0x7C00, 15), s1["sign"]))
            with m.Elif(~mag.any()):
                m.d.comb += result.eq(Cat(Const(0, 15), s1["sign"] & s1["zero_in"]))
            with m.Else():
                m.d.comb += result.eq(Cat(mag, s1["sign"]))
        with m.If(self.en):
            m.d.sync += self.r.eq(result)
        return m

