"""The output-stationary ``R x C`` systolic array of SAT's sparse tensor engine, with interleave mapping and drain."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from sat.sw.config import SATConfig

from .fp import NORMALIZED_FP16, FP16Normalizer, FPMultiplier, normalized_at_edge
from .netlist import pe_instance
from .pe import PE

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """``R x C`` output-stationary array of :class:`~sat.hw.pe.PE` with input skew, result capture and drain.

    **Operand steps.** Every clock cycle with ``en`` high is one *step*. The feeder presents *aligned* vectors:
    ``act[r]`` (an activation group of ``max_m`` lanes) for every array row ``r``, ``wgt[c]`` and ``idx[c]`` for
    every array column ``c``, and one set of flags ``valid``, ``first``, ``last`` for the step. The array skews
    them internally: row ``r`` (activations and flags) is delayed ``r`` steps before it enters PE ``(r, 0)`` and
    flows right one PE per step; column ``c`` (weight and index) is delayed ``c`` steps before it enters PE
    ``(0, c)`` and flows down one PE per step. PE ``(r, c)`` therefore sees step ``t`` at step ``t + r + c``,
    with its own row's activation and its own column's weight.

    **Interleave mapping.** One *pass* computes an ``(R*L) x C`` output tile (``L`` = adder latency): PE
    ``(r, c)`` holds the outputs of tile rows ``q = i*R + r``, ``i = 0..L-1``, in its ``L`` accumulator slots.
    The feeder sends *groups* of ``L`` steps: group ``k`` is the steps ``i = 0..L-1``, where step ``i`` carries
    the activations of tile rows ``i*R .. i*R+R-1`` and every column's weight of group ``k`` (the same weight
    for all ``L`` steps). ``first`` is set on the first group of a pass, ``last`` on its last group. A bubble
    group (``valid`` low for ``L`` steps) may be placed anywhere; within a pass groups must be whole (``L`` steps)
    so that the slots stay aligned. Sparse N:M operands are a property of the stream (see :class:`PE`): a group
    carries one kept weight per column and the in-word lane index of its activation.

    **Capture and drain.** Each PE shifts its ``L`` results into a capture bank of ``L`` registers. When PE
    ``(R-1, C-1)`` (the last to finish, by the skew) has captured its ``L``-th result of a pass and the drain
    chain is empty (or emptying this cycle), all ``R*L*C`` results move in one cycle into the drain chains (one
    per column, ``R*L`` deep) and ``transfers`` increments. The drain chains shift out on ``drain`` one tile row
    per cycle (``data[c]`` = column ``c``, ``row`` = tile row ``q``), ``R*L`` rows per pass, in the order
    ``q = 0, 1, ...``; the drain is independent of ``en``.

    **Edge normalization (FP16).** The operands flow unchanged through the PEs, so the array normalizes every
    activation lane of every row and every column's weight once, where they enter it (combinational
    :class:`~sat.hw.fp.FP16Normalizer` units before the skew registers), and builds its PEs with
    ``prenormalized`` multipliers: the per-PE leading-zero counts and product shift of FP16 subnormal operands
    are done ``rows * max_m + cols`` times instead of ``rows * cols`` times. The skew and pass-through
    registers then carry 17-bit operands. The ports stay 16-bit FP16; results and timing are unchanged. BF16
    operands (DAZ, no subnormals) enter the PEs as they are.

    **Feeder rule (no lost results).** The capture banks hold one pass. The feeder must not send the *last*
    group of a pass while an earlier pass has not been transferred, i.e. while ``transfers`` differs from the
    number of passes whose last group it has already sent; it sends a bubble group instead. Passes whose
    reduction is long enough (``groups * L >= R*L + fill``) never wait: the drain of one pass hides under the
    next pass. The GEMM engine (:class:`sat.hw.gemm.GemmEngine`) implements this rule; the cycle model
    (:mod:`sat.sw.perfmodel`) predicts it exactly.

    Parameters
    ----------
    config : SATConfig
        ``rows``, ``cols`` (array size), ``adder_latency`` (``L``), ``max_m``, ``fmt``.

    Attributes
    ----------
    en : In(1), init 1
        Step enable for the PEs and skew registers (low freezes them; capture and drain continue).
    act : In(ArrayLayout(ArrayLayout(16, max_m), rows))
        Activation group per array row.
    wgt : In(ArrayLayout(16, cols))
        Weight per array column.
    idx : In(ArrayLayout(idx_width, cols))
        Activation lane per array column.
    valid, first, last : In(1)
        Step flags (see :class:`~sat.hw.pe.PE`).
    drain : Out(stream.Signature(StructLayout({"row": tile rows, "data": ArrayLayout(32, cols)})))
        Result rows of each pass.
    transfers : Out(16)
        Passes moved from the capture banks into the drain chains (wrapping counter).

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`~sat.sw.config.SATConfig`.
    """

    TRANSFER_COUNTER_WIDTH = 16

    def __init__(self, config: SATConfig) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        self._config = config
        self._idx_width = max(1, exact_log2(config.max_m))
        self._pe_latency = FPMultiplier.LATENCY + config.adder_latency
        self._prenormalized = normalized_at_edge(config.fmt)
        rows, cols, lanes = config.rows, config.cols, config.max_m
        self._drain_layout = data.StructLayout({
            "row": bits_for(rows * config.adder_latency - 1),
            "data": data.ArrayLayout(32, cols),
        })
        super().__init__({
            "en": In(1, init=1),
            "act": In(data.ArrayLayout(data.ArrayLayout(16, lanes), rows)),
            "wgt": In(data.ArrayLayout(16, cols)),
            "idx": In(data.ArrayLayout(self._idx_width, cols)),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "drain": Out(stream.Signature(self._drain_layout)),
            "transfers": Out(self.TRANSFER_COUNTER_WIDTH),
        })

    @property
    def config(self) -> SATConfig:
        """The build configuration."""
        return self._config

    @property
    def rows(self) -> int:
        return self._config.rows

    @property
    def cols(self) -> int:
        return self._config.cols

    @property
    def interleave(self) -> int:
        """``L``: accumulator slots per PE, so a pass computes ``rows * L`` tile rows."""
        return self._config.adder_latency

    @property
    def tile_rows(self) -> int:
        """Output rows per pass (``R * L``)."""
        return self._config.rows * self._config.adder_latency

    @property
    def idx_width(self) -> int:
        return self._idx_width

    @property
    def prenormalized(self) -> bool:
        """The operands are normalized at the array's edge and the PEs are built ``prenormalized`` (FP16)."""
        return self._prenormalized

    @property
    def pe_latency(self) -> int:
        """Steps from an operand with ``last`` to its result on the PE's ``result``."""
        return self._pe_latency

    @property
    def latency(self) -> int:
        """Steps from the array input of a ``last`` step of slot 0 to PE ``(R-1, C-1)``'s result of it."""
        return self.rows - 1 + self.cols - 1 + self._pe_latency

    def elaborate(self, platform) -> Module:
        m = Module()
        R, C, L = self.rows, self.cols, self.interleave
        en = self.en

        pes = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                # in a Verilog conversion: one PE module, instanced
                shared = pe_instance(self._config, prenormalized=self._prenormalized)
                if shared is None:
                    pes[r][c] = m.submodules[f"pe_r{r}_c{c}"] = PE(self._config, prenormalized=self._prenormalized)
                else:
                    pes[r][c], m.submodules[f"pe_r{r}_c{c}"] = shared
                m.d.comb += pes[r][c].en.eq(en)

        # Edge normalization (FP16): each operand entering the array is normalized once here, not in every PE.
        lanes = self._config.max_m
        if self._prenormalized:
            operand_width = NORMALIZED_FP16.width
            row_acts = []
            for r in range(R):
                act = Signal(data.ArrayLayout(operand_width, lanes), name=f"act_norm_r{r}")
                for lane in range(lanes):
                    norm = m.submodules[f"act_norm_r{r}_l{lane}"] = FP16Normalizer()
                    m.d.comb += [norm.a.eq(self.act[r][lane]), act[lane].eq(norm.n)]
                row_acts.append(act)
            col_wgts = []
            for c in range(C):
                wgt = Signal(operand_width, name=f"wgt_norm_c{c}")
                norm = m.submodules[f"wgt_norm_c{c}"] = FP16Normalizer()
                m.d.comb += [norm.a.eq(self.wgt[c]), wgt.eq(norm.n)]
                col_wgts.append(wgt)
        else:
            operand_width = 16
            row_acts = [self.act[r] for r in range(R)]
            col_wgts = [self.wgt[c] for c in range(C)]

        # Row skew: activations and flags of row r wait r steps, then flow right through the PEs.
        for r in range(R):
            act, valid, first, last = row_acts[r], self.valid, self.first, self.last
            for d in range(r):
                act_d = Signal(data.ArrayLayout(operand_width, lanes), name=f"act_skew_r{r}_d{d + 1}")
                flags_d = Signal(3, name=f"flags_skew_r{r}_d{d + 1}")
                with m.If(en):
                    m.d.sync += [act_d.eq(act), flags_d.eq(Cat(valid, first, last))]
                act, valid, first, last = act_d, flags_d[0], flags_d[1], flags_d[2]
            for c in range(C):
                pe = pes[r][c]
                if c == 0:
                    m.d.comb += [pe.act.eq(act), pe.valid.eq(valid), pe.first.eq(first), pe.last.eq(last)]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [pe.act.eq(left.act_out), pe.valid.eq(left.valid_out),
                                 pe.first.eq(left.first_out), pe.last.eq(left.last_out)]

        # Column skew: weights and indices of column c wait c steps, then flow down through the PEs.
        for c in range(C):
            wgt, idx = col_wgts[c], self.idx[c]
            for d in range(c):
                wgt_d = Signal(operand_width, name=f"wgt_skew_c{c}_d{d + 1}")
                idx_d = Signal(self._idx_width, name=f"idx_skew_c{c}_d{d + 1}")
                with m.If(en):
                    m.d.sync += [wgt_d.eq(wgt), idx_d.eq(idx)]
                wgt, idx = wgt_d, idx_d
            for r in range(R):
                pe = pes[r][c]
                if r == 0:
                    m.d.comb += [pe.wgt.eq(wgt), pe.idx.eq(idx)]
                else:
                    m.d.comb += [pe.wgt.eq(pes[r - 1][c].wgt_out), pe.idx.eq(pes[r - 1][c].idx_out)]

        # Capture banks: L results per PE, in slot order (results leave a PE in the order of their last steps).
        capture = [[[Signal(32, name=f"capture_r{r}_c{c}_s{i}") for i in range(L)] for c in range(C)]
                   for r in range(R)]
        for r in range(R):
            for c in range(C):
                bank = capture[r][c]
                with m.If(pes[r][c].result_valid):
                    m.d.sync += bank[L - 1].eq(pes[r][c].result)
                    for i in range(L - 1):
                        m.d.sync += bank[i].eq(bank[i + 1])

        # The last PE to finish a pass marks the pass complete.
        last_pe = pes[R - 1][C - 1]
        result_count = Signal(range(L), name="last_pe_results")
        complete = Signal(name="pass_complete")
        with m.If(last_pe.result_valid):
            with m.If(result_count == L - 1):
                m.d.sync += [result_count.eq(0), complete.eq(1)]
            with m.Else():
                m.d.sync += result_count.eq(result_count + 1)

        # Drain chains: one per column, R*L deep, shifting out at the head (tile row q = i*R + r).
        depth = R * L
        chain = [[Signal(32, name=f"drain_c{c}_q{q}") for q in range(depth)] for c in range(C)]
        remaining = Signal(range(depth + 1), name="drain_remaining")
        out = self.drain
        m.d.comb += [
            out.valid.eq(remaining != 0),
            out.p.row.eq(depth - remaining),
        ]
        for c in range(C):
            m.d.comb += out.p.data[c].eq(chain[c][0])
        shift = out.valid & out.ready
        load = complete & ((remaining == 0) | ((remaining == 1) & out.ready))
        with m.If(load):
            m.d.sync += [remaining.eq(depth), complete.eq(0), self.transfers.eq(self.transfers + 1)]
            for c in range(C):
                for i in range(L):
                    for r in range(R):
                        m.d.sync += chain[c][i * R + r].eq(capture[r][c][i])
        with m.Elif(shift):
            m.d.sync += remaining.eq(remaining - 1)
            for c in range(C):
                for q in range(depth - 1):
                    m.d.sync += chain[c][q].eq(chain[c][q + 1])
        return m
