"""``sat.sw.tiling``: the one tiling rule of the GEMM unit (used by the gateware's sequencer, the scheduler and
the cycle model): every output covered once, tiles the largest power-of-two multiples of the array that fit the
buffers (or their halves), the double-buffering rule, the reduction limit."""

from __future__ import annotations

import pytest

from sat.sw.config import SATConfig
from sat.sw.tiling import a_words_per_row, max_reduction, steps_per_output, tile_plan

CFG = SATConfig(rows=2, cols=2, adder_latency=2)


@pytest.mark.parametrize("rows, red, cols, nm", [
    (13, 40, 9, None), (13, 40, 9, (2, 8)), (1, 1, 1, None), (100, 128, 3, None), (7, 40, 40, (2, 4)),
    (64, 8, 300, (1, 4)),
])
def test_tile_plan_covers_the_output_once(rows: int, red: int, cols: int, nm) -> None:
    n, m = nm or (0, 0)
    plan = tile_plan(CFG.replace(a_depth=8, b_depth=128), rows, red, cols, n, m)
    covered = [[0] * cols for _ in range(rows)]
    for r0, rt, c0, ct in plan.tiles:
        assert 1 <= rt <= plan.rt_max and 1 <= ct <= plan.ct_max and r0 % CFG.rows == 0 and c0 % CFG.cols == 0
        for i in range(r0, r0 + rt):
            for j in range(c0, c0 + ct):
                covered[i][j] += 1
    assert all(v == 1 for row in covered for v in row)
    # the buffers (their halves when double buffered) hold each tile: A rows in banks of ceil(red / 32) words,
    # B columns of S steps
    kw, s = a_words_per_row(red, CFG), steps_per_output(red, n, m)
    a_room, b_room = 4 if plan.a_double else 8, 64 if plan.b_double else 128
    assert -(-plan.rt_max // CFG.rows) * kw <= a_room and -(-plan.ct_max // CFG.cols) * s <= b_room
    # tile sizes are the largest power-of-two multiples of the array that fit
    assert -(-2 * plan.rt_max // CFG.rows) * kw > a_room and -(-2 * plan.ct_max // CFG.cols) * s > b_room
    assert plan.b_loads == (1 if plan.ct_max >= cols else len(plan.tiles))
    # an operand is double buffered only if it fits twice; B only if it is reloaded (several column tiles)
    assert not plan.a_double or 2 * kw <= 8
    assert not plan.b_double or (2 * s <= 128 and len({c0 for _, _, c0, _ in plan.tiles}) > 1)


@pytest.mark.parametrize("rows, red, cols, a_double, b_double, rt_max, ct_max", [
    # 2 words (of 32 elements) of 8: A fits 4 times (pa = 2), half row tiles of 2 * 2**1 = 4 >= R*L rows; B (S = 64
    # of 512) fits 8 times: 4 columns in one tile of 2 * 2**3, loaded once, so not halved
    (64, 64, 4, True, False, 4, 16),
    (64, 64, 40, True, True, 4, 8),      # 40 columns: B reloaded, both halved
    (64, 100, 4, False, False, 4, 8),    # 4 words: pa = 1, a half tile (2 rows) would not fill a 4-row pass
    (2, 100, 4, True, False, 2, 8),      # ... unless all rows fit in it
    (64, 200, 40, False, True, 2, 2),    # 7 words: A fits once; B (S = 200, pb = 1) reloaded, halved
])
def test_double_buffering_rule(rows: int, red: int, cols: int, a_double: bool, b_double: bool, rt_max: int,
                               ct_max: int) -> None:
    plan = tile_plan(CFG.replace(a_depth=8, b_depth=512), rows, red, cols)
    assert (plan.a_double, plan.b_double, plan.rt_max, plan.ct_max) == (a_double, b_double, rt_max, ct_max)
    assert plan.double == (a_double or b_double)
    # A is not halved while B is reloaded single buffered: every tile would wait for B anyway
    plan = tile_plan(CFG.replace(a_depth=8, b_depth=64), 64, 64, 40)
    assert (plan.a_double, plan.b_double) == (False, False)


@pytest.mark.parametrize("nm", [None, (2, 8), (1, 4), (4, 8)])
def test_max_reduction_is_the_limit(nm) -> None:
    n, m = nm or (0, 0)
    cfg = CFG.replace(a_depth=32, b_depth=128)
    k = max_reduction(cfg, n, m)
    tile_plan(cfg, 4, k, 4, n, m)
    with pytest.raises(ValueError, match=f"chunks of at most {k}"):
        tile_plan(cfg, 4, k + 1, 4, n, m)


def test_single_plans_without_double_buffering() -> None:
    cfg = CFG.replace(a_depth=8, b_depth=512)
    plan = tile_plan(cfg, 64, 64, 40, single=True)
    assert not plan.double and (plan.rt_max, plan.ct_max) == (8, 16)
    assert plan.engine_shapes == [(rt, ct) for _, rt, _, ct in plan.tiles]


def test_depths_are_build_parameters() -> None:
    """Depths live in SATConfig: validated there, and longer buffers admit longer reductions."""
    with pytest.raises(ValueError, match="a_depth must be a power of two"):
        SATConfig(a_depth=48)
    with pytest.raises(ValueError, match="b_depth must be a power of two"):
        SATConfig(b_depth=1)
    short, long = CFG.replace(a_depth=16, b_depth=64), CFG.replace(a_depth=64, b_depth=256)
    assert max_reduction(long) == 4 * max_reduction(short)
