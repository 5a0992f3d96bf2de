# amaranth: UnusedElaboratable=no
"""``ConvLines`` in the Amaranth simulator: the pieces it emits for a load, read back from a memory image (a data
piece's elements at its request address and offset, a zero piece's zeros), rebuild exactly the lowered operand of
the golden model (``sat.sw.conv.im2col`` / ``bp_lower``), chunk and tile included; row and column tiles continue
from the previous load; first pieces of a row carry its destination, the others continue."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from sat.hw.convlines import ConvLines
from sat.hw.sequencer import context_layout, load_job_layout
from sat.sim.pysim import Stalls, stream_put
from sat.sw.config import SATConfig
from sat.sw.conv import ConvShape, bp_lower, im2col
from sat.sw.descriptor import FLAG_SPARSE, ConvDescriptor
from sat.sw.tiling import a_words_per_row

CFG = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=64, b_depth=256)
TENSOR = 0x1000


def command_context(d: ConvDescriptor) -> dict:
    """The context the command processor and sequencer give the issuer for ``d`` (hw/cmdproc.py, CONV7)."""
    bp = d.pass_ == "bp"
    chan = d.co_pad if bp else d.c_in
    pix = 2 * (d.c_out if bp else d.c_in)
    ty, tx = (d.oh, d.ow) if bp else (d.height, d.width)
    s0, s1, s2 = d.start_of(d.k0)
    return {"red": d.red, "cols": d.cols, "kw": a_words_per_row(d.red, CFG), "steps": d.red, "conv": {
        "enable": 1, "pass_": ["ff", "bp", "wu"].index(d.pass_), "kh": d.kh, "kw": d.kw,
        "stride_log2": d.stride.bit_length() - 1, "padding": d.padding,
        "ry": d.height if bp else d.oh, "rx": d.width if bp else d.ow, "ty": ty, "tx": tx,
        "chan": chan, "cvalid": d.c_out if bp else chan, "s0": s0, "s1": s1, "s2": s2,
        "pix": pix, "row_pitch": tx * pix, "img_pitch": ty * tx * pix, "tensor": TENSOR}}


def run_loads(d: ConvDescriptor, memory: bytearray, jobs: list[dict], stall: float = 0.3) -> list[list[tuple]]:
    """Run ``jobs`` through ConvLines; returns, per job, its records as ``(request addr or None, record dict)``."""
    dut = ConvLines(CFG)
    out: list[list[tuple]] = [[] for _ in jobs]
    stalls = Stalls(np.random.default_rng(5), stall)

    async def bench(ctx):
        ctx.set(dut.context, context_layout(CFG).const(command_context(d)))
        for n, job in enumerate(jobs):
            await stream_put(ctx, dut.job, load_job_layout(CFG).const(job))
            while True:
                r_ok, l_ok = not stalls(), not stalls()
                ctx.set(dut.rd_req.ready, r_ok)
                ctx.set(dut.lines.ready, l_ok)
                _, _, rv, lv, req, rec, busy = await ctx.tick().sample(
                    dut.rd_req.valid, dut.lines.valid, dut.rd_req.payload, dut.lines.payload, dut.busy)
                if lv and l_ok:
                    assert bool(rv and r_ok) != bool(rec.zero), "a data piece goes out with its read, a zero alone"
                    fields = {k: int(getattr(rec, k)) for k in ("beats", "off", "count", "addr", "bank", "last",
                                                                "zero", "cont", "a")}
                    out[n].append((None if rec.zero else int(req.addr), fields))
                    assert int(req.beats) == fields["beats"] or rec.zero
                if not busy:
                    break
        ctx.set(dut.rd_req.ready, 0)
        ctx.set(dut.lines.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def rebuild(records: list[tuple], memory: bytearray, row_len: int) -> np.ndarray:
    """The lowered rows the records describe (uint16 bits), one row per first piece."""
    rows: list[list[int]] = []
    for addr, r in records:
        if not r["cont"]:
            rows.append([])
        if r["zero"]:
            rows[-1] += [0] * r["count"]
        else:
            start = addr + 2 * r["off"]
            assert (r["beats"] - 1) * 64 < 2 * r["off"] + 2 * r["count"] <= r["beats"] * 64, r
            rows[-1] += list(np.frombuffer(bytes(memory[start:start + 2 * r["count"]]), "<u2"))
    assert all(len(row) == row_len for row in rows), [len(row) for row in rows]
    assert records[-1][1]["last"] and not any(r["last"] for _, r in records[:-1])
    return np.array(rows, np.uint16)


def _image(shape: tuple[int, ...], rng) -> tuple[bytearray, np.ndarray]:
    bits = rng.integers(1, 1 << 15, shape, dtype=np.uint16)     # nonzero, so a missing element shows
    memory = bytearray(1 << 16)
    memory[TENSOR:TENSOR + bits.nbytes] = bits.tobytes()
    return memory, bits


SHAPES = [ConvShape(2, 5, 6, 3, 4, 3, 3, 2, 1), ConvShape(1, 6, 5, 5, 6, 3, 3, 1, 1),
          ConvShape(1, 4, 4, 4, 3, 1, 1, 2, 0), ConvShape(2, 3, 5, 2, 5, 2, 3, 1, 0)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ff_rows_are_im2col(shape: ConvShape) -> None:
    """FF's A: two row tiles (the second continues the pixels), a reduction chunk starting inside a tap."""
    rng = np.random.default_rng(1)
    memory, x = _image(shape.x_shape, rng)
    k0 = min(5, shape.k - 1)
    d = ConvDescriptor("ff", *shape.x_shape, shape.c_out, shape.kh, shape.kw, shape.stride, shape.padding,
                       a_addr=TENSOR, b_addr=0, c_addr=0, k0=k0, red=shape.k - k0)
    want = im2col(x.astype(np.float32), shape.kh, shape.kw, shape.stride, shape.padding)[:, k0:].astype(np.uint16)
    split = max(CFG.rows, (shape.pixels // 2) // CFG.rows * CFG.rows)
    jobs = [{"a": 1, "r0": 0, "rt": split, "base": 3}, {"a": 1, "r0": split, "rt": shape.pixels - split, "base": 0}]
    recs = run_loads(d, memory, jobs)
    got = np.concatenate([rebuild(r, memory, d.red) for r in recs])
    np.testing.assert_array_equal(got, want)
    # the first piece of row q goes to bank q mod R, word base + (q div R) * kw
    firsts = [r for _, r in recs[0] if not r["cont"]]
    kw = a_words_per_row(d.red, CFG)
    assert [(r["bank"], r["addr"]) for r in firsts] == [(q % CFG.rows, 3 + (q // CFG.rows) * kw)
                                                        for q in range(split)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", [1, 8])
def test_bp_rows_are_the_transposed_lowering(shape: ConvShape, m: int) -> None:
    """BP's A (transposed convolution): stride gaps and padding taps are zero pieces; a sparse pass pads C_out to a
    multiple of M per tap with zero pieces."""
    rng = np.random.default_rng(2)
    memory, dy = _image(shape.y_shape, rng)
    flags, n = (FLAG_SPARSE, 2) if m > 1 else (0, 0)
    d = ConvDescriptor("bp", *shape.x_shape, shape.c_out, shape.kh, shape.kw, shape.stride, shape.padding,
                       a_addr=TENSOR, b_addr=0, c_addr=0, n=n, m=m if m > 1 else 0, flags=flags)
    want = bp_lower(dy.astype(np.float32), shape, m).astype(np.uint16)
    assert want.shape[1] == d.reduction
    recs = run_loads(d, memory, [{"a": 1, "r0": 0, "rt": shape.in_pixels, "base": 0}])
    np.testing.assert_array_equal(rebuild(recs[0], memory, d.red), want)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_wu_columns_continue_from_tile_to_tile(shape: ConvShape) -> None:
    """WU's B: reduction rows from the chunk's start pixel, column tiles of (tap, channel) that continue where the
    previous tile's first row ended; row r of a tile goes to word base + r."""
    rng = np.random.default_rng(3)
    memory, x = _image(shape.x_shape, rng)
    k0 = 3
    red = shape.pixels - k0
    d = ConvDescriptor("wu", *shape.x_shape, shape.c_out, shape.kh, shape.kw, shape.stride, shape.padding,
                       a_addr=0, b_addr=TENSOR, c_addr=0, k0=k0, red=red)
    lowered = im2col(x.astype(np.float32), shape.kh, shape.kw, shape.stride, shape.padding).astype(np.uint16)
    tiles = [(0, 4), (4, 7), (11, shape.k - 11)]
    recs = run_loads(d, memory, [{"a": 0, "c0": c0, "ct": ct, "base": 10} for c0, ct in tiles])
    for (c0, ct), r in zip(tiles, recs, strict=True):
        np.testing.assert_array_equal(rebuild(r, memory, ct), lowered[k0:k0 + red, c0:c0 + ct])
        assert [x["addr"] for _, x in r if not x["cont"]] == [10 + i for i in range(red)]
