"""How the GEMM unit splits one GEMM into engine tiles: the one tiling rule of SAT.

The gateware planner (:class:`sat.hw.sequencer.TileSequencer` computes the same rule in hardware), the scheduler
(``sat.sw.schedule``) and the cycle model (``sat.sw.perfmodel``) all take their tiles from :func:`tile_plan`, so
a change of the rule changes all three. ``docs/system.md`` ("Tiling") explains the rule.

The buffer depths are facts of the build: ``config.a_depth`` (words per A bank) and ``config.b_depth`` (words
of B).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SATConfig

__all__ = ["TilePlan", "tile_plan", "max_reduction", "steps_per_output", "a_words_per_row", "pow2_fit",
           "is_sparse", "A_WORD_LANES"]

#: Elements in one word of an A bank: a whole 512-bit beat, so a row-major A beat is one write.
A_WORD_LANES = 32


def is_sparse(n: int, m: int) -> bool:
    """Whether ``n:m`` is a sparse pattern (0:0 and ``n == m`` mean dense)."""
    return bool(n and m and n != m)


def steps_per_output(red: int, n: int = 0, m: int = 0) -> int:
    """Engine steps ``S`` one output takes: ``red`` dense, ``ceil(red / M) * N`` for ``n:m``."""
    return -(-red // m) * n if is_sparse(n, m) else red


def a_words_per_row(red: int, config: SATConfig) -> int:
    """A-buffer words one row of ``A`` takes: ``ceil(red / 32)`` (:data:`A_WORD_LANES` elements a word)."""
    return -(-red // A_WORD_LANES)


def pow2_fit(words: int, depth: int) -> int:
    """Largest ``p`` with ``2**p * words <= depth`` (-1 if ``words > depth``)."""
    p = -1
    while words << (p + 1) <= depth:
        p += 1
    return p


def max_reduction(config: SATConfig, n: int = 0, m: int = 0) -> int:
    """Longest reduction ``K`` one command may have on this build (dense, or ``n:m`` sparse): beyond it the
    unit answers ``BAD_SHAPE`` and the scheduler or driver splits ``K``."""
    by_a = config.a_depth * A_WORD_LANES
    by_b = (config.b_depth // n) * m if is_sparse(n, m) else config.b_depth
    return min(by_a, by_b)


@dataclass(frozen=True)
class TilePlan:
    """The tiling of one command: tile sizes, the tiles ``(r0, rt, c0, ct)`` in order, and which operands are
    double buffered (tiles sized for half that buffer, loaded while the previous tile computes)."""

    rt_max: int
    ct_max: int
    tiles: tuple[tuple[int, int, int, int], ...]
    a_double: bool = False
    b_double: bool = False

    @property
    def double(self) -> bool:
        """Whether the command overlaps any load with compute (either operand double buffered)."""
        return self.a_double or self.b_double

    @property
    def single_column_tile(self) -> bool:
        """B has one column tile, so it is loaded once for the whole command."""
        return all(c0 == 0 for _, _, c0, _ in self.tiles)

    @property
    def b_loads(self) -> int:
        """How often B is loaded (once when there is a single column tile)."""
        return 1 if self.single_column_tile else len(self.tiles)

    @property
    def engine_shapes(self) -> list[tuple[int, int]]:
        """``(rows, cols)`` of every engine command, in order."""
        return [(rt, ct) for _, rt, _, ct in self.tiles]


def tile_plan(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0, *,
              single: bool = False) -> TilePlan:
    """The tiling the GEMM unit applies to a ``rows x red x cols`` command (``n:m`` sparse or dense).

    With ``pa``, ``pb`` the largest ``p`` such that ``2**p * ceil(red / 32) <= a_depth`` and
    ``2**p * S <= b_depth``:

    * B is double buffered (``ct_max = C * 2**(pb-1)``, else ``C * 2**pb``) if ``pb >= 1`` and
      ``cols > C * 2**pb`` (B is reloaded);
    * A (``rt_max = R * 2**(pa-1)``, else ``R * 2**pa``) if ``pa >= 1``, a half row tile ``R * 2**(pa-1)``
      holds an array pass (``R * L`` rows) or all ``rows``, and B is loaded once or double buffered.

    Row tiles are the outer loop, column tiles the inner. ``single`` plans every command single buffered (the
    unit before double buffering, for comparisons).

    Raises
    ------
    ValueError
        If the reduction does not fit the buffers (the unit answers ``BAD_SHAPE``): split ``K`` below
        :func:`max_reduction`.
    """
    kw = a_words_per_row(red, config)
    s = steps_per_output(red, n, m)
    pa, pb = pow2_fit(kw, config.a_depth), pow2_fit(s, config.b_depth)
    if pa < 0 or pb < 0:
        raise ValueError(f"a reduction of {red} does not fit the engine buffers (A: {kw} of {config.a_depth} words "
                         f"per bank, B: {s} of {config.b_depth} steps): split K into chunks of at most "
                         f"{max_reduction(config, n, m)}")
    b_reloaded = cols > config.cols << pb
    b_double = pb >= 1 and b_reloaded and not single
    half_rows = config.rows << max(pa - 1, 0)
    fills_pass = half_rows >= config.rows * config.adder_latency or rows <= half_rows
    a_double = pa >= 1 and fills_pass and (b_double or not b_reloaded) and not single
    rt_max, ct_max = config.rows << (pa - a_double), config.cols << (pb - b_double)
    tiles = tuple((r0, min(rt_max, rows - r0), c0, min(ct_max, cols - c0))
                  for r0 in range(0, rows, rt_max) for c0 in range(0, cols, ct_max))
    return TilePlan(rt_max, ct_max, tiles, a_double, b_double)
