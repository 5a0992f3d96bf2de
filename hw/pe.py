"""One processing element (PE) of SAT's output-stationary sparse tensor engine, with interleave mapping."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from sat.sw.config import SATConfig

from .fp import NORMALIZED_FP16, FP32Adder, FPMultiplier, normalized_at_edge

__all__ = ["PE"]


class PE(wiring.Component):
    """Multiply-accumulate processing element: ``L`` interleaved FP32 accumulators around one pipelined adder.

    **Operand stream.** Every clock cycle with ``en`` high is one *step*; with ``en`` low the whole PE
    (multiplier, adder, flags, pass-through registers, counters) freezes. In a step with ``valid`` high the PE
    multiplies ``act[idx]`` by ``wgt`` (FP16 or BF16, exact FP32 product) and adds the product to the
    accumulator of the step's *slot*; in a step with ``valid`` low (a bubble) that accumulator passes unchanged.

    **Run-time sparsity.** The PE always has ``max_m = config.max_m`` activation lanes and picks lane ``idx``.
    For N:M-sparse operands the feeder keeps an ``M``-wide activation group on ``act`` (lanes ``0..M-1``) while
    it sends the ``N`` kept weights of that group with their in-group indices, so the reduction advances ``M``
    elements in ``N`` steps; dense operands use lane 0 and ``idx = 0``. Dense or N:M (any ``M <= max_m``) is
    thus a property of the operand stream, not of the PE, and can change from one output to the next.

    **Interleave mapping.** The FP32 adder has ``L = config.adder_latency`` pipeline stages. Its output feeds
    back to its own input, so the adder holds ``L`` independent accumulators in flight, one per stage: step
    ``t`` (counting steps since reset) belongs to slot ``t mod L``, and the operand of step ``t`` is added to the
    sum produced by step ``t - L`` of the same slot. The multiplier latency (3) is hidden by delaying ``valid``,
    ``first`` and ``last`` alongside the product. Every adder stage does useful work every step; nothing waits
    for a sum. A feeder that interleaves ``L`` outputs ``(i = 0..L-1 for k = 0), (i = 0..L-1 for k = 1), ...``
    issues one MAC per cycle and each output is still accumulated sequentially in ascending reduction index from
    +0, bit for bit as :func:`sat.sw.numerics.matmul` and :func:`~sat.sw.numerics.matmul_sparse`. The slots are
    independent: each may hold outputs of different lengths, and bubbles delay only their own slot.

    * ``first`` (with ``valid``): this operand starts a new output; it is added to +0 instead of the slot's sum.
    * ``last`` (with ``valid``): this operand completes the output; ``latency`` steps later the sum is on
      ``result`` and ``result_valid`` is high for exactly one clock cycle (the cycle after the ``en`` cycle that
      produced it, whatever ``en`` does then). ``result`` holds that value until the next step. Results leave in
      the order of their ``last`` steps, i.e. in slot order for an interleaved group.

    Timing (``L = 4``, multiplier latency 3, ``en`` always high; ``ak`` = operand ``k`` of output ``a``,
    ``K`` operands per output)::

        step      0    1    2    3    4    5    6    7    ...  4K-4 ...  4K-1 ...  4K+3 4K+4 4K+5 4K+6
        operand   a0   b0   c0   d0   a1   b1   c1   d1   ...  aK-1 ...  dK-1 ...
        adder in                 a0   b0   c0   d0   a1   ...
        result                                                                     a    b    c    d

    ``result_valid`` is high in the columns ``a b c d`` (see ``docs/arithmetic.md`` for the full diagram).

    **Systolic pass-through.** ``act_out``, ``wgt_out``, ``idx_out``, ``valid_out``, ``first_out`` and
    ``last_out`` are the inputs delayed by one step, so PEs chain horizontally (activations) and vertically
    (weights, indices) in an array; flags may follow either direction.

    **Counters.** ``cycle_count`` counts steps and ``mac_count`` counts steps with ``valid`` (32-bit, wrapping,
    cleared by reset): in steady state they advance together, one MAC per cycle.

    **Operand format.** By default the operands are FP16/BF16 bit patterns (16 bits) and the multiplier handles
    FP16 subnormals itself. With ``prenormalized=True`` (FP16 only), as :class:`~sat.hw.array.SystolicArray`
    builds its PEs, they are :data:`~sat.hw.fp.NORMALIZED_FP16` values (17 bits) that the array's
    :class:`~sat.hw.fp.FP16Normalizer` units produced once at its edge, and the multiplier is the smaller
    ``FPMultiplier("fp16", prenormalized=True)``; results and timing are the same.

    Parameters
    ----------
    config : SATConfig
        Uses ``fmt`` (operand format), ``max_m`` (activation lanes) and ``adder_latency`` (``L``).
    prenormalized : bool
        FP16 only: ``act`` lanes and ``wgt`` are :data:`~sat.hw.fp.NORMALIZED_FP16` values (17 bits).

    Attributes
    ----------
    en : In(1), init 1
        Step enable; low stalls the whole PE.
    valid : In(1)
        An operand is present this step.
    act : In(ArrayLayout(operand_width, max_m))
        Activation group (bit patterns); lane ``idx`` is used.
    wgt : In(operand_width)
        Weight (bit pattern).
    idx : In(max(1, log2(max_m)))
        In-group index of the weight (0 for dense).
    first, last : In(1)
        This operand starts / completes an output.
    act_out, wgt_out, idx_out, valid_out, first_out, last_out : Out
        The inputs of the previous step.
    result : Out(32)
        FP32 output (the adder's output register).
    result_valid : Out(1)
        ``result`` holds a finished output (one clock cycle per output).
    mac_count, cycle_count : Out(32)
        Performance counters.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    ValueError
        If ``prenormalized`` is set for BF16 operands.
    """

    COUNTER_WIDTH = 32

    def __init__(self, config: SATConfig, *, prenormalized: bool = False) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        if prenormalized and not normalized_at_edge(config.fmt):
            raise ValueError(f"prenormalized operands are FP16 only ({config.fmt} has no subnormals)")
        self._prenormalized = bool(prenormalized)
        self._operand_width = NORMALIZED_FP16.width if self._prenormalized else 16
        self._idx_width = max(1, exact_log2(config.max_m))
        act_layout = data.ArrayLayout(self._operand_width, config.max_m)
        super().__init__({
            "en": In(1, init=1),
            "valid": In(1),
            "act": In(act_layout),
            "wgt": In(self._operand_width),
            "idx": In(self._idx_width),
            "first": In(1),
            "last": In(1),
            "act_out": Out(act_layout),
            "wgt_out": Out(self._operand_width),
            "idx_out": Out(self._idx_width),
            "valid_out": Out(1),
            "first_out": Out(1),
            "last_out": Out(1),
            "result": Out(32),
            "result_valid": Out(1),
            "mac_count": Out(self.COUNTER_WIDTH),
            "cycle_count": Out(self.COUNTER_WIDTH),
        })

    @property
    def config(self) -> SATConfig:
        """The build configuration."""
        return self._config

    @property
    def prenormalized(self) -> bool:
        """The operands are :data:`~sat.hw.fp.NORMALIZED_FP16` values from the array's edge normalizers."""
        return self._prenormalized

    @property
    def operand_width(self) -> int:
        """Width of an activation lane and of a weight: 16, or 17 for prenormalized operands."""
        return self._operand_width

    @property
    def max_m(self) -> int:
        """Activation lanes (largest group size M)."""
        return self._config.max_m

    @property
    def idx_width(self) -> int:
        """Width of ``idx`` (at least 1)."""
        return self._idx_width

    @property
    def interleave(self) -> int:
        """Accumulator slots ``L`` (the adder latency): outputs in flight per PE."""
        return self._config.adder_latency

    @property
    def multiplier_latency(self) -> int:
        """Steps from operand to product (the :class:`FPMultiplier` latency)."""
        return FPMultiplier.LATENCY

    @property
    def latency(self) -> int:
        """Steps from an operand with ``last`` to its output on ``result`` (multiplier + adder latency)."""
        return self.multiplier_latency + self.interleave

    def elaborate(self, platform) -> Module:
        m = Module()
        en = self.en

        m.submodules.multiplier = mul = FPMultiplier(self._config.fmt, prenormalized=self._prenormalized)
        m.submodules.adder = adder = FP32Adder(self._config.adder_latency)

        # Lane select for N:M sparsity: a max_m-to-1 multiplexer of operand lanes.
        operand = Signal(self._operand_width, name="operand")
        if self.max_m == 1:
            m.d.comb += operand.eq(self.act[0])
        else:
            with m.Switch(self.idx):
                for lane in range(self.max_m):
                    with m.Case(lane):
                        m.d.comb += operand.eq(self.act[lane])
        m.d.comb += [
            mul.a.eq(operand),
            mul.b.eq(self.wgt),
            mul.en.eq(en),
            adder.en.eq(en),
        ]

        # Flags travel beside the multiplier pipeline, then beside the adder pipeline.
        flags = Cat(self.valid, self.first, self.last)
        for i in range(mul.latency):
            delayed = Signal(3, name=f"flags_d{i + 1}")
            with m.If(en):
                m.d.sync += delayed.eq(flags)
            flags = delayed
        valid_p, first_p, last_p = flags[0], flags[1], flags[2]

        # The accumulator ring: the adder output is its own input L steps later.
        m.d.comb += [
            adder.a.eq(Mux(valid_p & first_p, 0, adder.s)),   # +0 starts a new output
            adder.b.eq(Mux(valid_p, mul.p, 0)),                # a bubble adds +0: the sum passes unchanged
        ]

        done = valid_p & last_p
        for i in range(adder.latency):
            delayed = Signal(name=f"done_d{i + 1}")
            with m.If(en):
                m.d.sync += delayed.eq(done)
            done = delayed
        stepped = Signal()  # high in the cycle after an enabled cycle: the pipeline has just moved
        m.d.sync += stepped.eq(en)
        m.d.comb += [
            self.result.eq(adder.s),
            self.result_valid.eq(done & stepped),
        ]

        # Systolic pass-through registers.
        with m.If(en):
            m.d.sync += [
                self.act_out.eq(self.act),
                self.wgt_out.eq(self.wgt),
                self.idx_out.eq(self.idx),
                self.valid_out.eq(self.valid),
                self.first_out.eq(self.first),
                self.last_out.eq(self.last),
                self.cycle_count.eq(self.cycle_count + 1),
            ]
            with m.If(self.valid):
                m.d.sync += self.mac_count.eq(self.mac_count + 1)
        return m
