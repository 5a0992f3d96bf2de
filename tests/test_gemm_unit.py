# amaranth: UnusedElaboratable=no
"""The GEMM unit's components in the Amaranth simulator, each against an independent expectation, and the whole
unit on a small GEMM, bit for bit against ``sat.sw.numerics``:

* ``ReadIssuer``: its DMA requests and line records equal the lines of the operand layouts (``docs/system.md``);
* ``OperandLoader``: fed those lines and the operand's bytes, it fills the engine's buffers exactly as the
  software buffer writers of ``sat.hw.gemm`` do; it flags malformed packed operands and read errors;
* ``ResultWriter``: result rows land at their C addresses with byte strobes; write errors are reported;
* ``TileSequencer``: with mock issuer/loader/engine/writer, its engine tiles and loads follow
  ``sat.sw.tiling.tile_plan`` (double-buffered halves alternate, a double-buffered load overlaps the engine);
  counters add up; errors end the command with the right code.

The RTL (Verilator) tests of the unit inside the core are in ``tests/test_system_rtl.py``."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from sat.hw.cmdproc import engine_command_layout, engine_members
from sat.hw.core import SATCore
from sat.hw.gemm import a_buffer_writes, b_dense_writes, b_sparse_writes
from sat.hw.gemm_unit import GemmUnit
from sat.hw.issuer import ReadIssuer
from sat.hw.loader import OperandLoader
from sat.hw.sequencer import TileSequencer, context_layout, load_job_layout
from sat.hw.writer import ResultWriter
from sat.sim.pysim import DmaStreamMemory, Stalls, stream_get, stream_put
from sat.sw import nmformat, numerics
from sat.sw.config import SATConfig
from sat.sw.regmap import ErrorCode
from sat.sw.tiling import A_WORD_LANES, a_words_per_row, steps_per_output, tile_plan

CFG = SATConfig(rows=2, cols=2, adder_latency=2, a_depth=32, b_depth=128)
BEAT = 64
PERIOD = 1e-8


def _run(dut, *processes, testbenches=(), deadline: float = 2e-3) -> None:
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for p in processes:
        sim.add_process(p)
    for t in testbenches:
        sim.add_testbench(t)
    sim.run_until(deadline) if not testbenches else sim.run()


# ----------------------------------------------------------------------------------------------------------
# the operand lines, from the layouts of docs/system.md (independent of the issuer's gateware)

def _context(cfg: SATConfig, *, red: int, cols: int, n: int = 0, m: int = 0, a_addr: int = 0, b_addr: int = 0,
             a_stride: int = 0, b_stride: int = 0, c_stride: int = 0) -> dict:
    steps = steps_per_output(red, n, m)
    sparse = bool(n and m and n != m)
    return {"red": red, "cols": cols, "n": n if sparse else 0, "m_val": m if sparse else 1,
            "m_log2": (m.bit_length() - 1) if sparse else 0, "sparse": int(sparse),
            "a_addr": a_addr, "b_addr": b_addr, "a_stride": a_stride, "b_stride": b_stride, "c_stride": c_stride,
            "kw": a_words_per_row(red, cfg), "steps": steps, "tile_bytes": (steps + -(-steps // 4)) * BEAT,
            "rl_cstride": c_stride * cfg.rows * cfg.adder_latency}


def expected_lines(cfg: SATConfig, ctx: dict, job: dict) -> list[tuple[int, int, dict]]:
    """``(request address, beats, record fields)`` of every line of a load, in order."""
    R, C, mm = cfg.rows, cfg.cols, A_WORD_LANES
    out = []

    def dense(lo: int, count: int, rec: dict) -> None:
        beats = ((lo + 2 * count - 1) >> 6) - (lo >> 6) + 1
        out.append((lo & ~63, beats, {"beats": beats, "off": (lo >> 1) & 31, "count": count, **rec}))

    r0, rt, c0, ct, base = job["r0"], job["rt"], job["c0"], job["ct"], job["base"]
    if job["a"] and not job["trans"]:
        for i in range(r0, r0 + rt):
            q = i - r0
            dense(ctx["a_addr"] + i * ctx["a_stride"], ctx["red"],
                  {"lane": 0, "addr": base + (q // R) * ctx["kw"], "bank": q % R})
    elif job["a"]:
        for k in range(ctx["red"]):
            dense(ctx["a_addr"] + k * ctx["a_stride"] + 2 * r0, rt, {"lane": k % mm, "addr": base + k // mm, "bank": 0})
    elif job["sparse"]:
        s = ctx["steps"]
        for p in range(c0 // 32, -(-(c0 + ct) // 32)):
            e_lo, e_hi = max(c0, 32 * p), min(c0 + ct, 32 * p + 32)
            out.append((ctx["b_addr"] + p * ctx["tile_bytes"], s + -(-s // 4),
                        {"beats": s + -(-s // 4), "off": e_lo - 32 * p, "count": e_hi - e_lo, "lane": 0,
                         "addr": base, "bank": 0, "vcols": min(32, ctx["cols"] - 32 * p)}))
    elif job["trans"]:
        for j in range(c0, c0 + ct):
            q = j - c0
            dense(ctx["b_addr"] + j * ctx["b_stride"], ctx["red"],
                  {"lane": q % C, "addr": base + (q // C) * ctx["steps"], "bank": 0})
    else:
        for k in range(ctx["red"]):
            dense(ctx["b_addr"] + k * ctx["b_stride"] + 2 * c0, ct, {"lane": 0, "addr": base + k, "bank": 0})
    for i, (_, _, rec) in enumerate(out):
        rec.update(a=job["a"], trans=job["trans"], sparse=job["sparse"], first=int(i == 0),
                   last=int(i == len(out) - 1))
    return out


def _operands(rng: np.random.Generator, rows: int, red: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    a = (rng.standard_normal((rows, red)) * 4).astype(np.float32)
    b = (rng.standard_normal((red, cols)) * 4).astype(np.float32)
    return a, b


#: One operand load per layout (each fits the buffers of CFG: 32 words per A bank, 128 of B).
LOADS = {
    # name: (rows, red, cols, nm, job fields)
    "a": (9, 21, 5, None, {"a": 1, "trans": 0, "sparse": 0, "r0": 4, "rt": 5, "c0": 0, "ct": 5, "base": 16}),
    "a_trans": (40, 11, 5, None, {"a": 1, "trans": 1, "sparse": 0, "r0": 2, "rt": 30, "c0": 0, "ct": 5, "base": 0}),
    "b": (3, 5, 37, None, {"a": 0, "trans": 0, "sparse": 0, "r0": 0, "rt": 3, "c0": 3, "ct": 33, "base": 32}),
    "b_trans": (3, 19, 9, None, {"a": 0, "trans": 1, "sparse": 0, "r0": 0, "rt": 3, "c0": 2, "ct": 7, "base": 4}),
    "b_sparse": (3, 40, 70, (2, 8), {"a": 0, "trans": 0, "sparse": 1, "r0": 0, "rt": 3, "c0": 20, "ct": 24,
                                     "base": 0}),
}


def _memory_image(name: str, rng: np.random.Generator, fmt: str = "fp16"):
    """The operand of a LOADS case in memory, its context and the expected buffer words
    ``{(bank or None, word): {lane: bits}}``."""
    rows, red, cols, nm, job = LOADS[name]
    cfg = CFG
    a, b = _operands(rng, rows, red, cols)
    mem = DmaStreamMemory(1 << 16, BEAT, rng)
    want: dict = {}

    r0, rt, c0, ct, base = job["r0"], job["rt"], job["c0"], job["ct"], job["base"]
    kw, steps = a_words_per_row(red, cfg), steps_per_output(red, *(nm or (0, 0)))

    def padding(w: dict, is_a: bool, lane: int) -> bool:
        """The software writers fill a row's last word and a tile's last columns with zeros; the loader writes
        only the operand's elements (the engine ignores the rest: lanes beyond ``red`` read as zero, columns
        beyond ``cols`` are dropped)."""
        if is_a:
            return name == "a" and ((w["addr"] - base) % kw) * A_WORD_LANES + lane >= red
        return name != "b_trans" and ((w["addr"] - base) // steps) * cfg.cols + lane >= ct

    def put(writes, is_a: bool) -> None:
        for w in writes:
            if is_a:
                for bank in range(cfg.rows):
                    for lane in range(A_WORD_LANES):
                        if w["lanes"][bank] >> lane & 1 and not padding(w, True, lane):
                            want[(bank, w["addr"])] = {**want.get((bank, w["addr"]), {}),
                                                       lane: w["data"][bank][lane]}
            else:
                for lane in range(cfg.cols):
                    if w["lanes"] >> lane & 1 and not padding(w, False, lane):
                        v = w["data"][lane]
                        want[(None, w["addr"])] = {**want.get((None, w["addr"]), {}),
                                                   lane: (v["value"], v["idx"])}

    a_addr, b_addr = 0x100, 0x4000
    if name == "a":
        bits = numerics.encode(a, fmt)
        stride = 2 * red + 6
        for i in range(rows):
            mem.mem[a_addr + i * stride:a_addr + i * stride + 2 * red] = bits[i].tobytes()
        ctx = _context(cfg, red=red, cols=cols, a_addr=a_addr, a_stride=stride)
        put(a_buffer_writes(bits[r0:r0 + rt], cfg, base), True)
    elif name == "a_trans":
        bits = numerics.encode(a.T.copy(), fmt)            # stored red x rows
        stride = 2 * rows + 10
        for k in range(red):
            mem.mem[a_addr + k * stride:a_addr + k * stride + 2 * rows] = bits[k].tobytes()
        ctx = _context(cfg, red=red, cols=cols, a_addr=a_addr, a_stride=stride)
        put(a_buffer_writes(bits[:, r0:r0 + rt], cfg, base, trans=True), True)
    elif name == "b":
        bits = numerics.encode(b, fmt)
        stride = 2 * cols + 2
        for k in range(red):
            mem.mem[b_addr + k * stride:b_addr + k * stride + 2 * cols] = bits[k].tobytes()
        ctx = _context(cfg, red=red, cols=cols, b_addr=b_addr, b_stride=stride)
        put(b_dense_writes(bits[:, c0:c0 + ct], cfg, base), False)
    elif name == "b_trans":
        bits = numerics.encode(b.T.copy(), fmt)            # stored cols x red
        stride = 2 * red + 4
        for j in range(cols):
            mem.mem[b_addr + j * stride:b_addr + j * stride + 2 * red] = bits[j].tobytes()
        ctx = _context(cfg, red=red, cols=cols, b_addr=b_addr, b_stride=stride)
        put(b_dense_writes(bits[c0:c0 + ct], cfg, base, trans=True), False)
    else:
        n, m = nm
        op = nmformat.compress(b, n, m)
        packed = nmformat.pack(op, fmt).tobytes()
        mem.mem[b_addr:b_addr + len(packed)] = packed
        ctx = _context(cfg, red=red, cols=cols, n=n, m=m, b_addr=b_addr)
        vals = numerics.encode(op.values[:, :, c0:c0 + ct], fmt)
        put(b_sparse_writes(vals, op.indices[:, :, c0:c0 + ct], cfg, base), False)
    return mem, ctx, job, want


# ----------------------------------------------------------------------------------------------------------
# ReadIssuer

@pytest.mark.parametrize("name", sorted(LOADS))
def test_issuer_requests_and_records(name: str) -> None:
    """Every request and record of a load equals the operand layout's lines, under random back-pressure."""
    rng = np.random.default_rng(1)
    _, ctx, job, _ = _memory_image(name, rng)
    dut = ReadIssuer(CFG)
    # Row-major A continues from row tile to row tile, B^T and packed B from column tile to column tile: the load
    # follows the loads before it in its command
    jobs = [job]
    if job["a"] and not job["trans"] and job["r0"]:
        jobs.insert(0, {**job, "r0": 0, "rt": job["r0"]})
    if not job["a"] and (job["trans"] or job["sparse"]) and job["c0"]:
        jobs.insert(0, {**job, "c0": 0, "ct": job["c0"]})
    want = [line for j in jobs for line in expected_lines(CFG, ctx, j)]
    got: list = []
    stall = Stalls(rng, 0.3)

    async def bench(ctx_):
        ctx_.set(dut.context, context_layout(CFG).const(ctx))
        for j in jobs:
            await stream_put(ctx_, dut.job, load_job_layout(CFG).const(j))
            await take(ctx_, len(expected_lines(CFG, ctx, j)))
        ctx_.set(dut.rd_req.ready, 1)
        ctx_.set(dut.lines.ready, 1)
        for _ in range(4):
            await ctx_.tick()
            assert not ctx_.get(dut.rd_req.valid) and not ctx_.get(dut.busy)

    async def take(ctx_, count: int) -> None:
        count += len(got)
        while len(got) < count:
            r_ok, l_ok = not stall(), not stall()
            ctx_.set(dut.rd_req.ready, r_ok)
            ctx_.set(dut.lines.ready, l_ok)
            _, _, rv, lv, req, rec = await ctx_.tick().sample(dut.rd_req.valid, dut.lines.valid, dut.rd_req.payload,
                                                              dut.lines.payload)
            assert bool(rv and r_ok) == bool(lv and l_ok), "a request and its record go out together"
            if rv and r_ok:
                got.append((req.addr, req.beats, {k: getattr(rec, k) for k in want[len(got)][2]}))
        ctx_.set(dut.rd_req.ready, 0)
        ctx_.set(dut.lines.ready, 0)

    _run(dut, testbenches=[bench])
    assert got == want


# ----------------------------------------------------------------------------------------------------------
# OperandLoader

def _run_loader(name: str, *, corrupt: bool = False, read_fault: bool = False, stall: float = 0.3):
    rng = np.random.default_rng(2)
    mem, ctx, job, want = _memory_image(name, rng)
    lines = expected_lines(CFG, ctx, job)
    if corrupt:      # the first index beat of the first packed tile: lane 0's first index >= M
        addr = lines[0][0]
        mem.mem[addr] = (mem.mem[addr] & 0xF0) | 0x9
    if read_fault:
        mem.read_faults.append((lines[-1][0], lines[-1][0] + 1))
    dut = OperandLoader(CFG)
    got: dict = {}
    answer: list = []

    async def feeder(ctx_):
        ctx_.set(dut.context, context_layout(CFG).const(ctx))
        # the lines as the issuer sends them; the memory answers their requests in order
        from sat.hw.issuer import line_record_layout
        for addr, beats, rec in lines:
            pending.append((addr, beats))
            await stream_put(ctx_, dut.lines, line_record_layout(CFG).const(rec))

    pending: list = []

    async def beats_proc(ctx_):
        queue: list[list[int]] = []
        async for _, _, dv, dr in ctx_.tick().sample(dut.rd_data.valid, dut.rd_data.ready):
            if dv and dr:
                queue[0][1] -= 1
                queue[0][0] += BEAT
                if queue[0][1] == 0:
                    queue.pop(0)
            while pending:
                a, b = pending.pop(0)
                err = int(any(a < hi and lo < a + b * BEAT for lo, hi in mem.read_faults))
                queue.append([a, b, err])
            if queue and not (rng.random() < stall):
                a, left, err = queue[0]
                ctx_.set(dut.rd_data.payload.data, int.from_bytes(mem.mem[a:a + BEAT], "little"))
                ctx_.set(dut.rd_data.payload.last, int(left == 1))
                ctx_.set(dut.rd_data.payload.error, err)
                ctx_.set(dut.rd_data.valid, 1)
            else:
                ctx_.set(dut.rd_data.valid, 0)

    async def writes_proc(ctx_):
        ctx_.set(dut.loaded.ready, 1)
        async for _, _, av, ap, bv, bp, lv, lp in ctx_.tick().sample(
                dut.a_write.valid, dut.a_write.payload, dut.b_write.valid, dut.b_write.payload,
                dut.loaded.valid, dut.loaded.payload):
            if av:
                for bank in range(CFG.rows):
                    for lane in range(A_WORD_LANES):
                        if ap.lanes[bank] >> lane & 1:
                            got.setdefault((bank, ap.addr), {})[lane] = ap.data[bank][lane]
            if bv:
                for lane in range(CFG.cols):
                    if bp.lanes >> lane & 1:
                        v = bp.data[lane]
                        got.setdefault((None, bp.addr), {})[lane] = (v.value, v.idx)
            if lv:
                answer.append((lp.read_error, lp.bad_operand))

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(feeder, background=True)
    sim.add_process(beats_proc)
    sim.add_process(writes_proc)
    sim.run_until(2e-4)
    return got, want, answer


@pytest.mark.parametrize("name", sorted(LOADS))
def test_loader_fills_the_buffer_layout(name: str) -> None:
    """The loader's writes build exactly the buffer words of the software writers (sat.hw.gemm), one answer."""
    got, want, answer = _run_loader(name)
    assert answer == [(0, 0)]
    assert got == want


def test_loader_flags_a_malformed_packed_operand() -> None:
    got, want, answer = _run_loader("b_sparse", corrupt=True)
    assert answer == [(0, 1)]


def test_loader_reports_a_read_error() -> None:
    _, _, answer = _run_loader("b_trans", read_fault=True)
    assert answer == [(1, 0)]


# ----------------------------------------------------------------------------------------------------------
# ResultWriter

def _writer_data(rng: np.random.Generator, shape: tuple[int, int], result: str) -> np.ndarray:
    """FP32 results; for narrow FP16 results also values that round into the subnormal range, to zero, to the
    largest normal and overflow to Inf (``docs/numerics.md``)."""
    data = rng.standard_normal(shape).astype(np.float32)
    if result == "fp16":
        special = np.array([2.0**-20 * 1.37, -2.0**-24 * 0.6, 2.0**-26, 65519.0, 65520.0, -1e6, 2.0**-14 * 0.999,
                            3.0e-8, np.inf, np.nan], np.float32)
        data.flat[:special.size] = special
    elif result == "bf16":
        data.flat[:5] = np.array([3.4e38, -3.39e38, 2.0**-130, 1.0 + 2.0**-8, np.nan], np.float32)
    return data


@pytest.mark.parametrize("stall", [0.0, 0.4])
@pytest.mark.parametrize("result", ["fp32", "fp16", "bf16"])
def test_writer_puts_rows_at_their_addresses(result: str, stall: float) -> None:
    """Rows of two tiles (one ragged) land at c_rowtile_addr + row * c_stride + e * (c0 + col), only the real
    columns written (e = 4 for FP32 results; narrow results are ``numerics.round_result`` of the row, e = 2, with a
    2-byte aligned address and stride); a write error is reported and cleared by the next command."""
    rng = np.random.default_rng(3)
    narrow = result != "fp32"
    cfg = CFG.replace(fmt=result) if narrow else CFG
    e = 2 if narrow else 4
    R, C, L = cfg.rows, cfg.cols, cfg.adder_latency
    c_addr, c_stride = (0x20A, 2 * 9 + 6) if narrow else (0x208, 4 * 9 + 12)
    mem = DmaStreamMemory(1 << 16, BEAT, rng, stall=stall)
    dut = ResultWriter(cfg)
    ctx = {**_context(cfg, red=1, cols=9, c_stride=c_stride), "narrow": int(narrow)}
    # two engine tiles of a 10 x 9 C: rows 0..9 of columns 0..3 (row tile 0) and rows 0..5 of columns 4..8
    tiles = [(0, 4, c_addr, 10), (4, 5, c_addr, 6)]
    data = _writer_data(rng, (10, 9), result)
    bits = numerics.fp32_bits(data)
    want = numerics.round_result(bits, result).astype(np.uint16) if narrow else bits
    written = np.zeros((10, 9), bool)

    async def bench(ctx_):
        ctx_.set(dut.context, context_layout(cfg).const(ctx))
        ctx_.set(dut.clear, 1)
        await ctx_.tick()
        ctx_.set(dut.clear, 0)
        for c0, ct, rt_addr, rows in tiles:
            await stream_put(ctx_, dut.tile, {"c0": c0, "ct": ct, "c_rowtile_addr": rt_addr})
            # in the engine's order: passes of R*L rows, within a pass each column tile's rows in order
            order = [(row, col) for base in range(0, rows, R * L) for col in range(0, ct, C)
                     for row in range(base, min(base + R * L, rows))]
            for row, col in order:
                lanes = [col + j < ct for j in range(C)]
                vals = [int(bits[row, c0 + col + j]) if lanes[j] else 0x7FC00000 for j in range(C)]
                for j in range(C):
                    if lanes[j]:
                        written[row, c0 + col + j] = True
                await stream_put(ctx_, dut.result, {"row": row, "col": col, "data": vals,
                                                    "lanes": sum(1 << j for j in range(C) if lanes[j]),
                                                    "last": 0})
        while not ctx_.get(dut.idle):
            await ctx_.tick()
        assert not ctx_.get(dut.error)
        mem.write_faults.append((c_addr, c_addr + 4))
        await stream_put(ctx_, dut.tile, {"c0": 0, "ct": 1, "c_rowtile_addr": c_addr})
        await stream_put(ctx_, dut.result, {"row": 0, "col": 0, "data": [0] * C, "lanes": 1, "last": 0})
        for _ in range(40):
            await ctx_.tick()
        assert ctx_.get(dut.error) and ctx_.get(dut.idle)
        ctx_.set(dut.clear, 1)
        await ctx_.tick()
        assert not ctx_.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_process(mem.writer(dut.wr_req, dut.wr_data, dut.wr_done))
    sim.add_testbench(bench)
    sim.run()
    got = np.frombuffer(bytes(mem.mem[c_addr:c_addr + 10 * c_stride]), np.uint8)
    for row in range(10):
        line = np.frombuffer(got[row * c_stride:row * c_stride + 9 * e].tobytes(), f"<u{e}")
        assert np.array_equal(line[written[row]], want[row][written[row]]), row
        assert not line[~written[row]].any(), f"row {row}: bytes outside the tile's columns were written"
    assert not any(got[row * c_stride + 9 * e:(row + 1) * c_stride].any() for row in range(9)), "row padding written"
    assert not any(mem.mem[c_addr - 2:c_addr]), "bytes before C written"


# ----------------------------------------------------------------------------------------------------------
# TileSequencer with mock neighbours

def _sequence(cfg: SATConfig, rows: int, red: int, cols: int, nm=None, *, engine_cycles: int = 30,
              load_cycles: int = 6, read_error_at: int | None = None, abort_at: int | None = None):
    """Run one command through the sequencer; return (loads, engine commands, answer, overlaps)."""
    dut = TileSequencer(cfg)
    n, m = nm or (0, 0)
    sparse = bool(nm)
    cmd = {"sparse": int(sparse), "a_trans": 0, "b_trans": 0, "irq": 0, "n": n,
           "m_log2": m.bit_length() - 1 if m else 0,
           "rows": rows, "red": red, "cols": cols, "a_addr": 0, "b_addr": 0, "c_addr": 0x1000,
           "a_stride": 2 * red, "b_stride": 0 if sparse else 2 * cols, "c_stride": 4 * cols,
           "a_end": 0, "b_end": 0, "c_end": 0, "tag": 0}
    loads, engine_cmds, answer, overlap, events = [], [], [], [], []

    async def neighbours(ctx_):
        load_left = None
        eng_left = None
        ctx_.set(dut.writer_idle, 1)
        ctx_.set(dut.load.ready, 1)
        ctx_.set(dut.engine_done.valid, 0)
        async for _, _, lv, lp, ev, ep, tv in ctx_.tick().sample(dut.load.valid, dut.load.payload,
                                                                  dut.engine_cmd.valid, dut.engine_cmd.payload,
                                                                  dut.tile.valid):
            ctx_.set(dut.loaded.valid, 0)
            ctx_.set(dut.engine_done.valid, 0)
            if lv:
                loads.append({k: getattr(lp, k) for k in ("a", "r0", "rt", "c0", "ct", "base")})
                events.append(("load", loads[-1]))
                overlap.append(eng_left is not None)
                load_left = load_cycles
                ctx_.set(dut.issuer_busy, 1)
            if ev:
                assert tv, "the writer is told of every engine tile"
                engine_cmds.append({k: getattr(ep, k) for k in ("rows", "cols", "a_base", "b_base")})
                events.append(("engine", engine_cmds[-1]))
                eng_left = engine_cycles
            if load_left is not None:
                load_left -= 1
                if load_left == 0:
                    ctx_.set(dut.issuer_busy, 0)
                    ctx_.set(dut.loaded.valid, 1)
                    err = int(read_error_at is not None and len(loads) - 1 == read_error_at)
                    ctx_.set(dut.loaded.payload, {"read_error": err, "bad_operand": 0})
                    load_left = None
            if abort_at is not None and len(engine_cmds) >= abort_at:
                ctx_.set(dut.abort, 1)
            if eng_left is not None:
                eng_left -= 1
                if eng_left == 0:
                    ctx_.set(dut.engine_done.valid, 1)
                    r = engine_cmds[-1]
                    ctx_.set(dut.engine_done.payload, {"error": 0, "cycles": engine_cycles, "busy_cycles": 7,
                                                       "stall_cycles": 0, "macs": r["rows"] * r["cols"]})
                    eng_left = None

    async def bench(ctx_):
        await stream_put(ctx_, dut.cmd, engine_command_layout(cfg.axi_addr_width).const(cmd))
        answer.append(await stream_get(ctx_, dut.done))

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_process(neighbours)
    sim.add_testbench(bench)
    sim.run()
    return loads, engine_cmds, answer[0], overlap, events


@pytest.mark.parametrize("rows, red, cols, nm", [
    (13, 40, 9, None), (64, 64, 40, None), (64, 64, 4, None), (7, 40, 70, (2, 8)), (64, 200, 40, None),
    (3, 8, 3, None),
])
def test_sequencer_follows_the_tile_plan(rows: int, red: int, cols: int, nm) -> None:
    cfg = CFG.replace(b_depth=512)
    n, m = nm or (0, 0)
    plan = tile_plan(cfg, rows, red, cols, n, m)
    loads, cmds, answer, overlap, events = _sequence(cfg, rows, red, cols, nm)
    assert [(c["rows"], c["cols"]) for c in cmds] == plan.engine_shapes
    # A is loaded at every new row tile; B at every tile unless it has a single column tile (then once)
    want_loads = []
    for i, (r0, rt, c0, ct) in enumerate(plan.tiles):
        if c0 == 0:
            want_loads.append((1, r0, rt))
        if not (plan.single_column_tile and i):
            want_loads.append((0, c0, ct))
    assert [(ld["a"], ld["r0"], ld["rt"]) if ld["a"] else (0, ld["c0"], ld["ct"]) for ld in loads] == want_loads
    # double buffered operands alternate halves (first half 0), single-buffered ones stay at 0; the engine reads
    # the half its operands were last loaded into
    for op, dbl, depth in (("a", plan.a_double, cfg.a_depth), ("b", plan.b_double, cfg.b_depth)):
        bases = [ld["base"] for ld in loads if ld["a"] == (op == "a")]
        assert bases == ([(i % 2) * depth // 2 for i in range(len(bases))] if dbl else [0] * len(bases))
    last = {}
    for kind, e in events:
        if kind == "load":
            last[e["a"]] = e["base"]
        else:
            assert (e["a_base"], e["b_base"]) == (last[1], last[0])
    # a double-buffered load overlaps the engine's previous tile, a single-buffered one never does
    if plan.double and len(plan.tiles) > 1:
        assert any(overlap)
    if not plan.double:
        assert not any(overlap)
    assert answer.error == ErrorCode.NONE and answer.macs == sum(r * c for r, c in plan.engine_shapes)
    assert answer.busy_cycles == 7 * len(plan.tiles)


def test_sequencer_rejects_a_reduction_too_long() -> None:
    cfg = CFG
    loads, cmds, answer, _, _ = _sequence(cfg, 4, cfg.a_depth * A_WORD_LANES + 1, 4)
    assert answer.error == ErrorCode.BAD_SHAPE and not loads and not cmds


def test_sequencer_stops_on_a_read_error_and_abort() -> None:
    cfg = CFG
    plan = tile_plan(cfg, 13, 40, 9)
    loads, cmds, answer, _, _ = _sequence(cfg, 13, 40, 9, read_error_at=2)
    assert answer.error == ErrorCode.AXI_READ and len(cmds) < len(plan.tiles)
    loads, cmds, answer, _, _ = _sequence(cfg, 13, 40, 9, abort_at=1)
    assert answer.error == ErrorCode.ABORTED and 1 <= len(cmds) < len(plan.tiles)


# ----------------------------------------------------------------------------------------------------------
# The whole unit

def test_unit_ports_and_core_default() -> None:
    with pytest.raises(TypeError, match="SATConfig"):
        GemmUnit({"rows": 2})
    with pytest.raises(ValueError, match="axi_data_width=512"):
        GemmUnit(SATConfig(axi_data_width=128))
    unit = GemmUnit(CFG)
    assert dict(unit.signature.members.items()) == engine_members(CFG)
    core = SATCore(CFG, memory_bytes=1 << 20)
    assert isinstance(core._engine_inst, GemmUnit)
    Fragment.get(core, None)


@pytest.mark.parametrize("rows, red, cols, nm", [(5, 20, 7, None), (3, 24, 5, (2, 4))])
def test_unit_computes_a_gemm(rows: int, red: int, cols: int, nm) -> None:
    """A tiled GEMM through the whole unit (DMA streams from a Python memory with random stalls): C bit for bit
    equal to sat.sw.numerics, the counters' MACs the useful MACs."""
    cfg = CFG.replace(a_depth=8, b_depth=32)
    rng = np.random.default_rng(4)
    a, b = _operands(rng, rows, red, cols)
    mem = DmaStreamMemory(1 << 16, BEAT, rng, stall=0.2)
    dut = GemmUnit(cfg)
    a_addr, b_addr, c_addr = 0x0, 0x2000, 0x8000
    mem.mem[a_addr:a_addr + 2 * rows * red] = numerics.encode(a, cfg.fmt).tobytes()
    n, m = nm or (0, 0)
    if nm:
        op = nmformat.compress(b, n, m)
        packed = nmformat.pack(op, cfg.fmt).tobytes()
        mem.mem[b_addr:b_addr + len(packed)] = packed
        want = nmformat.matmul_nm(a, op, cfg.fmt)
    else:
        mem.mem[b_addr:b_addr + 2 * red * cols] = numerics.encode(b, cfg.fmt).tobytes()
        want = numerics.matmul(numerics.quantize(a, cfg.fmt), numerics.quantize(b, cfg.fmt), cfg.fmt)
    assert len(tile_plan(cfg, rows, red, cols, n, m).tiles) > 1
    cmd = {"sparse": int(bool(nm)), "a_trans": 0, "b_trans": 0, "irq": 0, "n": n,
           "m_log2": m.bit_length() - 1 if m else 0, "rows": rows, "red": red, "cols": cols,
           "a_addr": a_addr, "b_addr": b_addr, "c_addr": c_addr, "a_stride": 2 * red,
           "b_stride": 0 if nm else 2 * cols, "c_stride": 4 * cols, "a_end": 0, "b_end": 0, "c_end": 0, "tag": 0}
    answer = []

    async def bench(ctx_):
        await stream_put(ctx_, dut.control.cmd, engine_command_layout(cfg.axi_addr_width).const(cmd))
        answer.append(await stream_get(ctx_, dut.control.done))

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_process(mem.reader(dut.rd_req, dut.rd_data))
    sim.add_process(mem.writer(dut.wr_req, dut.wr_data, dut.wr_done))
    sim.add_testbench(bench)
    sim.run()
    got = np.frombuffer(bytes(mem.mem[c_addr:c_addr + 4 * rows * cols]), np.float32).reshape(rows, cols)
    assert answer[0].error == ErrorCode.NONE
    assert np.array_equal(numerics.fp32_bits(got), numerics.fp32_bits(want))
    assert answer[0].macs == rows * cols * steps_per_output(red, n, m)
