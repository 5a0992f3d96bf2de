# amaranth: UnusedElaboratable=no
# (test_parameter_checks builds components only to see their constructors raise)
"""Amaranth-simulator unit tests of the core blocks: DMA reader/writer bursts and errors (incl. DECERR), the
CSR counter latch and AW/W ordering, and one descriptor through ``SATCore`` against a Python AXI memory."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sat.hw.core import SATCore
from sat.hw.csr import CSRBlock
from sat.hw.dma import DMAReader, DMAWriter, axi4_read_signature, axi4_write_signature
from sat.sim.loopback import LoopbackEngine
from sat.sim.pysim import AxiMemory
from sat.sim.tb_core import BEAT, MEMORY_BYTES, loopback_model, random_descriptor
from sat.sw.config import SATConfig
from sat.sw.descriptor import encode_list
from sat.sw.regmap import CONTROL_START, STATUS_DONE, register_map


class _DMAPair(wiring.Component):
    def __init__(self, max_burst: int):
        self.reader = DMAReader(32, 512, beats_width=16, max_burst=max_burst)
        self.writer = DMAWriter(32, 512, beats_width=16, max_burst=max_burst)
        members = {**axi4_read_signature(32, 512).members, **axi4_write_signature(32, 512).members}
        super().__init__({"axi": Out(wiring.Signature(members))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = self.reader
        m.submodules.writer = self.writer
        for block in (self.reader, self.writer):
            for name, member in block.axi.signature.members.items():
                a, b = getattr(self.axi, name), getattr(block.axi, name)
                m.d.comb += a.eq(b) if member.flow == Out else b.eq(a)
        return m


@pytest.mark.parametrize("max_burst", [256, 8])
def test_dma_loopback_and_errors(max_burst: int) -> None:
    """Random reads and strobed writes match memory; bursts obey 4 KiB/length rules; SLVERR and DECERR on R and
    B are reported (error on the last beat / in the completion) and every transfer still completes."""
    rng = np.random.default_rng(max_burst)
    dut = _DMAPair(max_burst)
    size = 1 << 16
    memory = AxiMemory(size, 512, rng, pause=0.3)
    memory.mem[:] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    shadow = bytearray(memory.mem)
    rd, wr = dut.reader, dut.writer

    async def bench(ctx):
        for trial in range(14):
            beats = int(rng.integers(1, 150))
            addr = BEAT * int(rng.integers(0, size // BEAT - beats))
            fault = None
            if trial % 4 == 3:
                resp = 2 if trial % 8 == 3 else 3
                f = addr + BEAT * int(rng.integers(0, beats))
                memory.errors = [(f, f + 1, resp)]
                fault = f
            else:
                memory.errors = []
            # read
            ctx.set(rd.req.p.addr, addr + int(rng.integers(0, BEAT)))   # low bits are ignored
            ctx.set(rd.req.p.beats, beats)
            ctx.set(rd.req.valid, 1)
            await ctx.tick().until(rd.req.ready)
            ctx.set(rd.req.valid, 0)
            got = []
            while True:
                ctx.set(rd.data.ready, int(rng.random() < 0.7))
                _, _, v, r, data, last, err = await ctx.tick().sample(rd.data.valid, rd.data.ready,
                                                                      rd.data.p.data, rd.data.p.last,
                                                                      rd.data.p.error)
                if v and r:
                    got.append((int(data), last, err))
                    if last:
                        break
            assert len(got) == beats
            for i, (data, _, _) in enumerate(got):
                a = addr + i * BEAT
                if fault is None or not a <= fault < a + BEAT:
                    assert data == int.from_bytes(shadow[a:a + BEAT], "little"), (trial, i)
            assert bool(got[-1][2]) == (fault is not None), (trial, fault)
            # write random beats with random strobes
            beats = int(rng.integers(1, 150))
            addr = BEAT * int(rng.integers(0, size // BEAT - beats))
            if fault is not None:
                f = addr + BEAT * int(rng.integers(0, beats))
                memory.errors = [(f, f + 1, 3)]
            ctx.set(wr.req.p.addr, addr)
            ctx.set(wr.req.p.beats, beats)
            ctx.set(wr.req.valid, 1)
            await ctx.tick().until(wr.req.ready)
            ctx.set(wr.req.valid, 0)
            i = 0
            while i < beats:
                data = rng.integers(0, 256, BEAT, dtype=np.uint8).tobytes()
                strb = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2))
                ctx.set(wr.data.p.data, int.from_bytes(data, "little"))
                ctx.set(wr.data.p.strb, strb)
                ctx.set(wr.data.valid, 1)
                await ctx.tick().until(wr.data.ready)
                a = addr + i * BEAT
                if not (memory.errors and a <= memory.errors[0][0] < a + BEAT):
                    for j in range(BEAT):
                        if strb >> j & 1:
                            shadow[a + j] = data[j]
                i += 1
            ctx.set(wr.data.valid, 0)
            ctx.set(wr.done.ready, 1)
            err, = await ctx.tick().sample(wr.done.p.error).until(wr.done.valid)
            ctx.set(wr.done.ready, 0)
            assert bool(err) == (fault is not None), trial
            assert memory.mem == shadow, f"trial {trial}: memory differs after the write"
        memory.check_bursts(max_burst)

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_process(memory.process(dut.axi))
    sim.add_testbench(bench)
    sim.run()


def test_dma_reader_pipelined() -> None:
    """Back-to-back read requests (several transfers in flight, short and long, random pauses and consumer
    stalls): every transfer delivers its own beats in order with ``last`` on its final beat."""
    rng = np.random.default_rng(11)
    dut = _DMAPair(16)
    size = 1 << 16
    memory = AxiMemory(size, 512, rng, pause=0.3)
    memory.mem[:] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    rd = dut.reader
    transfers = [(BEAT * int(rng.integers(0, size // BEAT - 40)), int(rng.integers(1, 40))) for _ in range(40)]
    issued_at: list[int] = []
    finished_at: list[int] = []

    async def requester(ctx):
        cycle = 0
        for addr, beats in transfers:
            ctx.set(rd.req.p.addr, addr)
            ctx.set(rd.req.p.beats, beats)
            ctx.set(rd.req.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(rd.req.ready)
                cycle += 1
                if ready:
                    break
            issued_at.append(cycle)
            ctx.set(rd.req.valid, 0)
            if rng.random() < 0.3:
                idle = int(rng.integers(1, 4))
                await ctx.tick().repeat(idle)
                cycle += idle

    async def consumer(ctx):
        cycle = 0
        for addr, beats in transfers:
            got = []
            while True:
                ctx.set(rd.data.ready, int(rng.random() < 0.8))
                _, _, v, r, data, last = await ctx.tick().sample(rd.data.valid, rd.data.ready, rd.data.p.data,
                                                                 rd.data.p.last)
                cycle += 1
                if v and r:
                    got.append(int(data))
                    assert bool(last) == (len(got) == beats), (addr, beats, len(got))
                    if last:
                        break
            finished_at.append(cycle)
            want = [int.from_bytes(memory.mem[addr + i * BEAT:addr + (i + 1) * BEAT], "little") for i in range(beats)]
            assert got == want, f"transfer at 0x{addr:x} x {beats} returned other data"
        ctx.set(rd.data.ready, 0)
        memory.check_bursts(16)

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_process(memory.process(dut.axi))
    sim.add_testbench(requester)
    sim.add_testbench(consumer)
    sim.run()
    # requests were accepted before earlier transfers had finished: the reader pipelines
    assert any(issued_at[k + 1] < finished_at[k] for k in range(len(transfers) - 1))


def test_dma_writer_pipelined() -> None:
    """Back-to-back write transfers (zero-beat ones included) with completions taken late: memory equals the
    shadow, and the completions come in order, one per transfer, with ``error`` exactly for the transfers that
    hit an erroring address."""
    rng = np.random.default_rng(12)
    dut = _DMAPair(8)
    size = 1 << 16
    memory = AxiMemory(size, 512, rng, pause=0.3)
    shadow = bytearray(size)
    wr = dut.writer
    transfers = []
    for k in range(30):
        beats = 0 if k % 7 == 3 else int(rng.integers(1, 30))
        addr = BEAT * int(rng.integers(0, size // BEAT - 30))
        transfers.append((addr, beats))
    bad = {k for k, (addr, beats) in enumerate(transfers) if beats and k % 5 == 2}
    memory.errors = [(transfers[k][0] + BEAT * (transfers[k][1] - 1), transfers[k][0] + BEAT * transfers[k][1], 2)
                     for k in sorted(bad)]

    def hits_error(a: int) -> bool:
        return any(lo < a + BEAT and a < hi for lo, hi, _ in memory.errors)

    bad = {k for k, (addr, beats) in enumerate(transfers) if any(hits_error(addr + i * BEAT) for i in range(beats))}

    async def writer(ctx):
        for addr, beats in transfers:
            ctx.set(wr.req.p.addr, addr)
            ctx.set(wr.req.p.beats, beats)
            ctx.set(wr.req.valid, 1)
            await ctx.tick().until(wr.req.ready)
            ctx.set(wr.req.valid, 0)
            for i in range(beats):
                data = rng.integers(0, 256, BEAT, dtype=np.uint8).tobytes()
                strb = int(rng.integers(0, 1 << 63)) * 2 + 1
                ctx.set(wr.data.p.data, int.from_bytes(data, "little"))
                ctx.set(wr.data.p.strb, strb)
                ctx.set(wr.data.valid, 1)
                await ctx.tick().until(wr.data.ready)
                a = addr + i * BEAT
                if not hits_error(a):
                    for j in range(BEAT):
                        if strb >> j & 1:
                            shadow[a + j] = data[j]
            ctx.set(wr.data.valid, 0)

    async def completions(ctx):
        await ctx.tick().repeat(200)          # let completions pile up
        errors = []
        for _ in transfers:
            ctx.set(wr.done.ready, int(rng.random() < 0.7))
            while True:
                _, _, v, r, err = await ctx.tick().sample(wr.done.valid, wr.done.ready, wr.done.p.error)
                if v and r:
                    errors.append(bool(err))
                    break
                ctx.set(wr.done.ready, int(rng.random() < 0.7))
        ctx.set(wr.done.ready, 0)
        await ctx.tick().repeat(50)
        assert not ctx.get(wr.done.valid), "more completions than transfers"
        assert errors == [k in bad for k in range(len(transfers))], errors
        assert memory.mem == shadow
        memory.check_bursts(8)

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_process(memory.process(dut.axi))
    sim.add_testbench(writer)
    sim.add_testbench(completions)
    sim.run()


async def _axil_write(ctx, dut, addr: int, value: int, order: str = "same") -> int:
    p = "s_axil_"
    ctx.set(getattr(dut, p + "bready"), 0)
    if order in ("same", "aw_first"):
        ctx.set(getattr(dut, p + "awaddr"), addr)
        ctx.set(getattr(dut, p + "awvalid"), 1)
    if order in ("same", "w_first"):
        ctx.set(getattr(dut, p + "wdata"), value)
        ctx.set(getattr(dut, p + "wstrb"), 0xF)
        ctx.set(getattr(dut, p + "wvalid"), 1)
    if order == "aw_first":
        await ctx.tick().until(getattr(dut, p + "awready"))
        ctx.set(getattr(dut, p + "awvalid"), 0)
        await ctx.tick().repeat(3)
        ctx.set(getattr(dut, p + "wdata"), value)
        ctx.set(getattr(dut, p + "wstrb"), 0xF)
        ctx.set(getattr(dut, p + "wvalid"), 1)
        await ctx.tick().until(getattr(dut, p + "wready"))
        ctx.set(getattr(dut, p + "wvalid"), 0)
    elif order == "w_first":
        await ctx.tick().until(getattr(dut, p + "wready"))
        ctx.set(getattr(dut, p + "wvalid"), 0)
        await ctx.tick().repeat(3)
        ctx.set(getattr(dut, p + "awaddr"), addr)
        ctx.set(getattr(dut, p + "awvalid"), 1)
        await ctx.tick().until(getattr(dut, p + "awready"))
        ctx.set(getattr(dut, p + "awvalid"), 0)
    else:
        aw = w = False
        while not (aw and w):
            _, _, awv, awr, wv, wr = await ctx.tick().sample(
                getattr(dut, p + "awvalid"), getattr(dut, p + "awready"),
                getattr(dut, p + "wvalid"), getattr(dut, p + "wready"))
            if awv and awr:
                aw = True
                ctx.set(getattr(dut, p + "awvalid"), 0)
            if wv and wr:
                w = True
                ctx.set(getattr(dut, p + "wvalid"), 0)
    await ctx.tick().repeat(2)          # back-pressure on B: the response must be held
    ctx.set(getattr(dut, p + "bready"), 1)
    resp, = await ctx.tick().sample(getattr(dut, p + "bresp")).until(getattr(dut, p + "bvalid"))
    ctx.set(getattr(dut, p + "bready"), 0)
    return resp


async def _axil_read(ctx, dut, addr: int) -> tuple[int, int]:
    p = "s_axil_"
    ctx.set(getattr(dut, p + "araddr"), addr)
    ctx.set(getattr(dut, p + "arvalid"), 1)
    ctx.set(getattr(dut, p + "rready"), 0)
    await ctx.tick().until(getattr(dut, p + "arready"))
    ctx.set(getattr(dut, p + "arvalid"), 0)
    await ctx.tick().repeat(2)
    ctx.set(getattr(dut, p + "rready"), 1)
    data, resp = await ctx.tick().sample(getattr(dut, p + "rdata"), getattr(dut, p + "rresp")).until(
        getattr(dut, p + "rvalid"))
    ctx.set(getattr(dut, p + "rready"), 0)
    return data, resp


class _CSRTop(wiring.Component):
    """CSRBlock with its AXI-Lite ports renamed ``s_axil_*`` (as in SATCore) for the helpers above."""

    def __init__(self, config: SATConfig):
        self.csr = CSRBlock(config, memory_bytes=MEMORY_BYTES)
        members = {f"s_axil_{k}": v for k, v in self.csr.signature.members.items() if k.startswith(
            ("aw", "w", "b", "ar", "r")) and not k.startswith("wo")}
        members["cycles"] = In(64)
        members["latch_clear"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = self.csr
        for name in self.signature.members:
            if name.startswith("s_axil_"):
                a, b = getattr(self, name), getattr(self.csr, name[7:])
                m.d.comb += b.eq(a) if self.signature.members[name].flow == In else a.eq(b)
        m.d.comb += [self.csr.cycles.eq(self.cycles), self.csr.latch_clear.eq(self.latch_clear)]
        return m


def test_csr_latch_and_write_order() -> None:
    """_LO latches _HI (a later _HI read returns the latched half even after the counter moved on; latch_clear
    drops the latch); AW before W, W before AW and both together all write; responses wait for bready/rready;
    undecoded offsets answer OKAY, read 0 and ignore writes."""
    config = SATConfig()
    regs = register_map(config, MEMORY_BYTES)
    dut = _CSRTop(config)

    async def bench(ctx):
        ctx.set(dut.cycles, 0x1_FFFF_FFFF)
        await ctx.tick()
        lo, resp = await _axil_read(ctx, dut, regs.offset("CYCLES_LO"))
        assert (lo, resp) == (0xFFFF_FFFF, 0)
        ctx.set(dut.cycles, 0x2_0000_0005)
        hi, _ = await _axil_read(ctx, dut, regs.offset("CYCLES_HI"))
        assert hi == 1, "CYCLES_HI must return the half latched by the CYCLES_LO read"
        ctx.set(dut.latch_clear, 1)
        await ctx.tick()
        ctx.set(dut.latch_clear, 0)
        hi, _ = await _axil_read(ctx, dut, regs.offset("CYCLES_HI"))
        assert hi == 2
        for i, order in enumerate(("same", "aw_first", "w_first")):
            assert await _axil_write(ctx, dut, regs.offset("SCRATCH"), 0x1234_0000 + i, order) == 0
            assert await _axil_read(ctx, dut, regs.offset("SCRATCH")) == (0x1234_0000 + i, 0)
            # undecoded offsets answer OKAY and ignore the write (0x2000/0x3000: the XDMA driver's probes)
            for hole in (0x7C, 0x2000, 0x3000):
                assert await _axil_write(ctx, dut, hole, 0xFFFF_FFFF, order) == 0
            assert await _axil_read(ctx, dut, regs.offset("SCRATCH")) == (0x1234_0000 + i, 0)
        for hole in (0x7C, 0x2000, 0x3000):
            assert await _axil_read(ctx, dut, hole) == (0, 0)
        assert await _axil_read(ctx, dut, regs.offset("ID")) == (regs["ID"].reset, 0)

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_testbench(bench)
    sim.run()


def test_core_one_list() -> None:
    """Two descriptors through SATCore (loopback engine) in the Amaranth simulator: DONE, memory as modelled."""
    config = SATConfig()
    regs = register_map(config, MEMORY_BYTES)
    dut = SATCore(config, memory_bytes=MEMORY_BYTES, engine=LoopbackEngine)
    rng = np.random.default_rng(5)
    memory = AxiMemory(MEMORY_BYTES, 512, rng, pause=0.2)
    ds = [random_descriptor(rng, config, s) for s in range(2)]
    memory.mem[0x1_0000:0xC_0000] = rng.integers(0, 256, 0xB_0000, dtype=np.uint8).tobytes()
    memory.mem[0:128] = encode_list(ds)
    model = bytearray(memory.mem)
    for d in ds:
        loopback_model(model, d)

    class Ports:   # AxiMemory.process wants attribute access by AXI name
        def __getattr__(self, name):
            return getattr(dut, "m_axi_" + name)

    async def bench(ctx):
        for name, value in (("CMD_ADDR_LO", 0), ("CMD_ADDR_HI", 0), ("CMD_COUNT", 2), ("CONTROL", CONTROL_START)):
            assert await _axil_write(ctx, dut, regs.offset(name), value) == 0
        for _ in range(400):
            status, _ = await _axil_read(ctx, dut, regs.offset("STATUS"))
            if status != 1:
                break
            await ctx.tick().repeat(10)
        assert status == STATUS_DONE, hex(status)
        assert (await _axil_read(ctx, dut, regs.offset("LAST_TAG")))[0] == ds[-1].tag
        assert memory.mem == model
        memory.check_bursts(256)

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_process(memory.process(Ports()))
    sim.add_testbench(bench)
    sim.run()


def test_parameter_checks() -> None:
    """Constructors reject what they cannot build, saying what is allowed; defaults follow the address width."""
    from sat.hw.cmdproc import CommandProcessor
    from sat.hw.dma import ReadArbiter

    with pytest.raises(ValueError, match="max_burst must be a power of two between 1 and 256, not 3"):
        DMAReader(max_burst=3)
    with pytest.raises(ValueError, match="transfers must be"):
        DMAReader(transfers=0)
    with pytest.raises(ValueError, match="bursts must be"):
        DMAWriter(bursts=100)
    with pytest.raises(ValueError, match="clients must be"):
        ReadArbiter(0)
    with pytest.raises(ValueError, match="addr_width must be an integer between 8 and 64"):
        CSRBlock(SATConfig(), addr_width=4)
    with pytest.raises(ValueError, match=r"memory_bytes must be an integer between 64 and 2\*\*32"):
        CommandProcessor(SATConfig(axi_addr_width=32), memory_bytes=1 << 34)
    with pytest.raises(TypeError, match="config must be a SATConfig"):
        SATCore({"rows": 4})
    from amaranth.hdl import Fragment

    for config, want in ((SATConfig(axi_addr_width=32), 1 << 32), (SATConfig(), 1 << 34)):
        core = SATCore(config)
        assert core.memory_bytes == want
        Fragment.get(core, None)     # elaborates (and so uses) the core and its submodules
