"""Tests of the cycle model ``sat.sw.perfmodel``: exact against the GEMM engine in the Amaranth simulator (small
cases on odd array shapes and adder latencies, results bit-exact too; the cocotb RTL tests compare it on larger
sweeps), the fast-forward against a plain pass-by-pass loop,
closed-form steady state, and validation. ResNet-18 on a 32x32 array runs here as a smoke test of speed. The GEMM
unit model (``unit_cycles``): its structure (the RTL comparison is ``tests/test_system_rtl.py::test_unit_timing``)."""

# amaranth: UnusedElaboratable=no
from __future__ import annotations

import numpy as np
import pytest

from sat.sw.config import SATConfig
from sat.sw.network import resnet18_imagenet
from sat.sw.perfmodel import (
    fill_cycles,
    gemm_counters,
    network_counters,
    steps_per_output,
    unit_cycles,
)
from sat.sw.tiling import tile_plan


def _reference(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0) -> tuple[int, int]:
    """The model's recurrence without the periodic fast-forward: (cycles, stall cycles)."""
    R, C, L = config.rows, config.cols, config.adder_latency
    S = steps_per_output(red, n, m)
    passes = -(-rows // (R * L)) * -(-cols // C)
    x, t_prev, stall = 2, None, 0
    for _ in range(passes):
        x_last = x + (S - 1) * L
        while t_prev is not None and x_last < t_prev + 1:
            x_last += L
            stall += L
        t = x_last + fill_cycles(config) + 1
        if t_prev is not None:
            t = max(t, t_prev + R * L)
        x, t_prev = x_last + L, t
    return t_prev + R * L + 1, stall


def _engine_run(config: SATConfig, rows: int, red: int, cols: int, nm: tuple[int, int] | None,
                seed: int = 0) -> dict:
    """Run one GEMM on ``GemmEngine`` in the Amaranth simulator (buffers filled through the write ports),
    check the results bit for bit against the golden model and return the counters."""
    from amaranth.sim import Simulator

    from sat.hw.gemm import GemmEngine, a_buffer_writes, b_dense_writes, b_sparse_writes
    from sat.sw.nmformat import compress
    from sat.sw.numerics import encode, fp32_bits, matmul, matmul_sparse

    rng = np.random.default_rng(seed)
    fmt = config.fmt
    a = encode(rng.standard_normal((rows, red)), fmt)
    if nm is None:
        b = encode(rng.standard_normal((red, cols)), fmt)
        expected = fp32_bits(matmul(a, b, fmt))
        b_writes = list(b_dense_writes(b, config))
    else:
        op = compress(rng.standard_normal((red, cols)), *nm)
        vals = encode(op.values, fmt)
        expected = fp32_bits(matmul_sparse(a, vals, op.indices, nm[1], fmt))
        b_writes = list(b_sparse_writes(vals, op.indices, config))
    a_writes = list(a_buffer_writes(a, config))
    engine = GemmEngine(config.replace(a_depth=64, b_depth=256))
    got = np.full((rows, cols), 0xDEADBEEF, dtype=np.uint32)
    out: dict[str, int] = {}

    async def testbench(ctx):
        for port, writes in ((engine.a_write, a_writes), (engine.b_write, b_writes)):
            for w in writes:
                ctx.set(port.valid, 1)
                ctx.set(port.p, w)
                await ctx.tick()
            ctx.set(port.valid, 0)
        ctx.set(engine.cmd.p, {"rows": rows, "red": red, "cols": cols, "sparse": int(nm is not None),
                               "n": nm[0] if nm else 0, "m": nm[1] if nm else 0, "a_base": 0, "b_base": 0})
        ctx.set(engine.cmd.valid, 1)
        ctx.set(engine.result.ready, 1)
        ctx.set(engine.done.ready, 1)
        await ctx.tick()
        ctx.set(engine.cmd.valid, 0)
        for _ in range(100_000):
            if ctx.get(engine.result.valid):
                p = ctx.get(engine.result.p)
                for c in range(config.cols):
                    if (p.lanes >> c) & 1:
                        got[p.row, p.col + c] = p.data[c]
            if ctx.get(engine.done.valid):
                answer = ctx.get(engine.done.p)
                break
            await ctx.tick()
        for name in ("cycles", "busy_cycles", "stall_cycles", "macs"):
            out[name] = getattr(answer, name)

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    bad = np.argwhere(got != expected)
    assert not bad.size, f"{len(bad)} outputs differ from the golden model, first at {bad[0].tolist()}"
    return out


@pytest.mark.parametrize("case", [
    ((2, 2, 4), 5, 7, 3, None),
    ((2, 2, 4), 9, 13, 5, (2, 4)),
    ((1, 3, 1), 4, 3, 7, None),         # L = 1, one PE row
    ((3, 1, 2), 13, 17, 2, (1, 8)),     # short passes: bubble groups
    ((1, 1, 3), 3, 9, 2, (4, 8)),       # one PE
    ((3, 2, 2), 14, 6, 5, (1, 4)),
])
def test_model_equals_amaranth_engine(case) -> None:
    (R, C, L), rows, red, cols, nm = case
    config = SATConfig(rows=R, cols=C, adder_latency=L)
    got = _engine_run(config, rows, red, cols, nm)
    model = gemm_counters(config, rows, red, cols, *(nm or (0, 0)))
    assert got == {k: v for k, v in model.as_dict().items() if k != "passes"}


def test_fast_forward_equals_plain_loop() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        R, C = (int(x) for x in rng.integers(1, 9, 2))
        L = int(rng.choice([1, 2, 3, 4, 6]))
        config = SATConfig(rows=R, cols=C, adder_latency=L)
        rows, red, cols = (int(x) for x in rng.integers(1, 300, 3))
        nm = [(0, 0), *config.nm_set][int(rng.integers(0, 6))]
        model = gemm_counters(config, rows, red, cols, *nm)
        assert (model.cycles, model.stall_cycles) == _reference(config, rows, red, cols, *nm)


def test_no_stall_when_passes_are_long() -> None:
    config = SATConfig(rows=8, cols=8, adder_latency=4)
    for red in range(1, 80):
        model = gemm_counters(config, 200, red, 50)
        if red * 4 >= max(8 * 4, fill_cycles(config) + 2):
            assert model.stall_cycles == 0, red
            # back-to-back passes: only the fill of the first and the drain of the last pass are extra
            assert model.cycles == model.busy_cycles + 2 - 4 + fill_cycles(config) + 1 + 8 * 4 + 1
        else:
            assert model.stall_cycles > 0, red


def test_large_gemm_utilization_and_sparse_speedup() -> None:
    config = SATConfig(rows=32, cols=32)
    dense = gemm_counters(config, 4096, 4096, 4096)
    assert dense.utilization(config) > 0.99
    for n, m in config.nm_set:
        sparse = gemm_counters(config, 4096, 4096, 4096, n, m)
        assert dense.cycles / sparse.cycles >= 0.9 * m / n


def test_validation() -> None:
    config = SATConfig(rows=2, cols=2)
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        gemm_counters(config, 0, 4, 4)
    with pytest.raises(ValueError, match="3:8 is not in this build's nm_set"):
        gemm_counters(config, 4, 4, 4, 3, 8)


def test_resnet18_iteration() -> None:
    config = SATConfig(rows=32, cols=32)
    net = resnet18_imagenet()
    # forward MACs of the ImageNet ResNet-18: ~1.82 GMAC (the well-known 1.8 GFLOPs figure)
    assert 1.80e9 < net.macs_per_image() < 1.83e9
    dense = network_counters(config, net, 32, None)
    sparse = network_counters(config, net, 32, (2, 8))
    assert len(dense) == 3 * len(net.layers) == 3 * 21
    assert [g.n for g, _ in sparse if g.layer == "conv1"] == [0, 0, 0]     # the 7x7 stem on 3 channels: dense
    d = sum(c.cycles for _, c in dense)
    s = sum(c.cycles for _, c in sparse)
    assert 1.0 < d / s <= 2.0


def test_buffer_words_cover_the_writes() -> None:
    """``buffer_words`` (what the command processor checks) is exactly the footprint of the buffer writers."""
    from sat.hw.gemm import a_buffer_writes, b_dense_writes, b_sparse_writes, buffer_words
    from sat.sw.nmformat import compress

    rng = np.random.default_rng(9)
    for _ in range(20):
        config = SATConfig(rows=int(rng.integers(1, 5)), cols=int(rng.integers(1, 5)))
        rows, red, cols = (int(x) for x in rng.integers(1, 30, 3))
        a = np.zeros((rows, red), np.uint16)
        a_words, b_words = buffer_words(config, rows, red, cols)
        for trans in (False, True):
            writes = list(a_buffer_writes(a.T if trans else a, config, trans=trans))
            assert max(w["addr"] for w in writes) + 1 == a_words
        assert max(w["addr"] for w in b_dense_writes(np.zeros((red, cols), np.uint16), config)) + 1 == b_words
        n, m = config.nm_set[int(rng.integers(0, len(config.nm_set)))]
        op = compress(rng.standard_normal((red, cols)), n, m)
        sparse = list(b_sparse_writes(op.values.astype(np.uint16), op.indices, config))
        assert max(w["addr"] for w in sparse) + 1 == buffer_words(config, rows, red, cols, n, m)[1]


def test_unit_cycles_structure() -> None:
    """The unit model: engine busy cycles as the engine's sum over the tiles; time at least the loads plus the
    last tile's compute, at most everything in sequence; double buffering hides loads behind compute."""
    cfg = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=8, b_depth=128)
    for shape, nm in [((13, 40, 9), (0, 0)), ((40, 8, 30), (0, 0)), ((8, 100, 6), (0, 0)), ((24, 48, 33), (1, 4))]:
        u = unit_cycles(cfg, *shape, *nm)
        plan = tile_plan(cfg, *shape, *nm)
        tiles = plan.tiles
        assert (u.a_double, u.b_double, u.tiles) == (plan.a_double, plan.b_double, len(tiles))
        assert u.busy_cycles == sum(gemm_counters(cfg, rt, shape[1], ct, *nm).busy_cycles for _, rt, _, ct in tiles)
        assert u.stall_cycles == u.cycles - u.busy_cycles > 0
        assert u.cycles <= u.load_cycles + u.engine_cycles + 20 * u.tiles + 20
        assert u.cycles >= max(u.load_cycles, u.engine_cycles)
    # compute-bound and double buffered: the loads after the first tile's are hidden
    u = unit_cycles(cfg, 64, 32, 64)
    assert u.a_double and u.b_double and u.cycles < u.engine_cycles + u.load_cycles / 20
    # A^T loads R = 2 rows per write, row-major A max_m = 8 elements: still slower on the 2x2
    assert unit_cycles(cfg, 16, 32, 8, a_trans=True).load_cycles > unit_cycles(cfg, 16, 32, 8).load_cycles
    with pytest.raises(ValueError, match="does not fit"):
        unit_cycles(cfg, 4, 1000, 4)


def test_loader_line_rates() -> None:
    """Consumer cycles of one DMA line (``_line_cycles``): its record and first beat, then one per buffer write,
    each later beat taken with the previous beat's last write."""
    from sat.sw.perfmodel import _line_cycles

    # A^T on 32 banks: a beat of 32 rows is one write when it starts at bank 0, two when the line is not aligned
    assert _line_cycles(0, 64, 32, 0) == 2 + 2
    assert _line_cycles(1, 64, 32, 0) == 2 + 4          # runs 31 | 1, 31 | 1
    # A^T on 3 banks (runs end at bank 2 and at beat ends), B^T one element per write
    assert _line_cycles(0, 40, 3, 0) == 2 + 11 + 4      # first beat: 10 runs of 3, one of 2; then 1, 3, 3, 1
    assert _line_cycles(0, 40, 1, 0) == 2 + 40
    # row-major: runs of one word (max_m or C lanes), starting at the line's first lane
    assert _line_cycles(0, 64, 8, 0) == 2 + 8
    assert _line_cycles(4, 8, 8, 6) == 2 + 2
