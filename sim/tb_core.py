"""cocotb testbench of ``sat.hw.core.SATCore`` with the :class:`~sat.sim.loopback.LoopbackEngine` test double.

The host side is a cocotbext-axi ``AxiLiteMaster`` on ``s_axil_*``; device memory is an AXI slave memory on ``m_axi_*``
of ``memory_bytes`` bytes (the same size the core checks extents against). Every AXI channel of both gets a
random pause generator (idle cycles on the sources, back-pressure on the sinks). Fault injection makes the RAM
answer SLVERR for accesses that touch chosen byte ranges. A monitor checks every AR/AW handshake: INCR, full
width, at most ``max_burst`` beats, never across a 4 KiB boundary, and counts the bursts.

Expectations come from the contract, never from the RTL: register reset values from
``register_map(config, memory_bytes)``, error codes from ``GemmDescriptor.validate``, memory contents from
:func:`loopback_model` (the documented function of the test-double engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cocotb
import numpy as np

from sat.sw.config import SATConfig
from sat.sw.descriptor import (
    FLAG_A_TRANS,
    FLAG_B_TRANS,
    FLAG_IRQ,
    FLAG_NARROW,
    FLAG_SPARSE,
    MAX_DIM,
    DescriptorError,
    GemmDescriptor,
    encode_list,
)
from sat.sw.regmap import (
    CONTROL_ABORT,
    CONTROL_CLEAR,
    CONTROL_START,
    IRQ_DONE,
    IRQ_ERROR,
    PERF_COUNTERS,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    ErrorCode,
    register_map,
)

from .cocotb_transport import attach
from .tb import rng_for, tb_params

__all__ = ["MEMORY_BYTES", "BEAT", "Layout", "random_descriptor", "mutate", "expected_error", "loopback_model",
           "beats_of"]

#: Device memory of the testbench (the core is built with the same ``memory_bytes``).
MEMORY_BYTES = 1 << 20
BEAT = 64
PAGE = 4096


@dataclass(frozen=True)
class Layout:
    """Where a testbench places things: descriptor lists, then per-descriptor slots for A, B and C."""

    list_base: int = 0x0_0000
    a_base: int = 0x1_0000
    b_base: int = 0x4_0000
    c_base: int = 0x8_0000
    slot: int = 0x4000
    slots: int = 12


def beats_of(lo: int, hi: int, beat: int = BEAT) -> tuple[int, int]:
    """(first beat address, number of ``beat``-byte beats) covering bytes ``[lo, hi)``."""
    first = lo // beat * beat
    return first, (hi - 1) // beat - lo // beat + 1


def random_descriptor(rng: np.random.Generator, config: SATConfig, slot: int, layout: Layout = Layout(),
                      big: bool = False, sparse: bool = True) -> GemmDescriptor:
    """A valid descriptor whose A, B and C lie in slot ``slot`` of their areas (extents fit the slot); dense
    only with ``sparse=False``."""
    while True:
        dmax = 24 if big else 8
        rows, red, cols = (int(rng.integers(1, dmax + 1)) for _ in range(3))
        flags = 0
        n = m = 0
        if sparse and config.nm_set and rng.random() < 0.3:
            n, m = config.nm_set[int(rng.integers(len(config.nm_set)))]
            flags |= FLAG_SPARSE
        if rng.random() < 0.5:
            flags |= FLAG_A_TRANS
        if not flags & FLAG_SPARSE and rng.random() < 0.5:
            flags |= FLAG_B_TRANS
        if rng.random() < 0.3:
            flags |= FLAG_IRQ
        if rng.random() < 0.3:
            flags |= FLAG_NARROW         # 2-byte results: C's alignment, stride and extent halve
        e = 2 if flags & FLAG_NARROW else 4
        a_lines, a_len = (red, rows) if flags & FLAG_A_TRANS else (rows, red)
        b_lines, b_len = (cols, red) if flags & FLAG_B_TRANS else (red, cols)
        a_stride = 2 * a_len + 2 * int(rng.integers(0, 40))
        b_stride = 0 if flags & FLAG_SPARSE else 2 * b_len + 2 * int(rng.integers(0, 40))
        c_stride = e * cols + e * int(rng.integers(0, 20))
        d = GemmDescriptor(rows=rows, red=red, cols=cols, a_addr=0, b_addr=0, c_addr=0, a_stride=a_stride,
                           b_stride=b_stride, c_stride=c_stride, n=n, m=m, flags=flags,
                           tag=int(rng.integers(0, 1 << 32)))
        (_, _, a_hi), (_, _, b_hi), (_, _, c_hi) = d.extents()
        if max(a_hi, b_hi, c_hi) > layout.slot:
            continue
        a_off = 2 * int(rng.integers(0, (layout.slot - a_hi) // 2 + 1))
        b_off = (BEAT if flags & FLAG_SPARSE else 2) * int(
            rng.integers(0, (layout.slot - b_hi) // (BEAT if flags & FLAG_SPARSE else 2) + 1))
        c_off = e * int(rng.integers(0, (layout.slot - c_hi) // e + 1))
        d = d.replace(a_addr=layout.a_base + slot * layout.slot + a_off,
                      b_addr=layout.b_base + slot * layout.slot + b_off,
                      c_addr=layout.c_base + slot * layout.slot + c_off)
        d.validate(config, MEMORY_BYTES)
        return d


#: Ways to break a descriptor (each hits one check of ``validate``; combined they test the check order).
MUTATIONS = (
    "opcode", "flag_reserved", "reserved_byte", "reserved_tail", "nm_unsupported", "sparse_btrans",
    "sparse_bstride", "dense_nm", "rows_zero", "red_big", "cols_zero", "a_odd", "b_sparse_misaligned", "c_misaligned",
    "c_stride_misaligned", "a_stride_small", "c_stride_small", "b_stride_small", "a_beyond", "c_beyond",
    "b_beyond", "addr_wrap",
)


def mutate(rng: np.random.Generator, config: SATConfig, d: GemmDescriptor, kind: str) -> GemmDescriptor:
    """``d`` broken in the way ``kind`` names (one of :data:`MUTATIONS`)."""
    sparse_pairs = [(n, m) for m in (2, 4, 8, 16) for n in range(1, m) if (n, m) not in config.nm_set and n < 16]
    if kind == "opcode":
        return d.replace(opcode=int(rng.choice([0, 3, 0x81, 0xFF])))     # not 1 (GEMM) nor 2 (convolution)
    if kind == "flag_reserved":
        return d.replace(flags=d.flags | int(rng.choice([0x20, 0x30, 0x40, 0x80])))   # RESULT 2, 3; bits 6-7
    if kind == "reserved_byte":
        return d.replace(reserved=d.reserved | int(rng.integers(1, 256)))
    if kind == "reserved_tail":
        return d.replace(reserved=d.reserved | (1 << int(rng.integers(8, 72))))
    if kind == "nm_unsupported":
        n, m = sparse_pairs[int(rng.integers(len(sparse_pairs)))]
        return d.replace(flags=(d.flags | FLAG_SPARSE) & ~FLAG_B_TRANS, n=n, m=m, b_stride=0)
    if kind == "sparse_btrans":
        n, m = config.nm_set[0]
        return d.replace(flags=d.flags | FLAG_SPARSE | FLAG_B_TRANS, n=n, m=m, b_stride=0)
    if kind == "sparse_bstride":
        n, m = config.nm_set[0]
        return d.replace(flags=(d.flags | FLAG_SPARSE) & ~FLAG_B_TRANS, n=n, m=m, b_stride=64)
    if kind == "dense_nm":
        return d.replace(flags=d.flags & ~FLAG_SPARSE, n=int(rng.integers(0, 4)), m=int(rng.choice([2, 4, 8])))
    if kind == "rows_zero":
        return d.replace(rows=0)
    if kind == "red_big":
        return d.replace(red=int(rng.choice([MAX_DIM + 1, 1 << 31, (1 << 32) - 1])))
    if kind == "cols_zero":
        return d.replace(cols=0)
    if kind == "a_odd":
        return d.replace(a_addr=d.a_addr | 1)
    if kind == "b_sparse_misaligned":
        n, m = config.nm_set[-1]
        return d.replace(flags=(d.flags | FLAG_SPARSE) & ~FLAG_B_TRANS, n=n, m=m, b_stride=0,
                         b_addr=d.b_addr - d.b_addr % BEAT + 2 * int(rng.integers(1, BEAT // 2)))
    if kind == "c_misaligned":
        return d.replace(c_addr=d.c_addr + (1 if d.narrow else 2))
    if kind == "c_stride_misaligned":
        return d.replace(c_stride=d.c_stride + (1 if d.narrow else 2))
    if kind == "a_stride_small":
        return d.replace(rows=max(d.rows, 2), red=max(d.red, 2), a_stride=2)
    if kind == "c_stride_small":
        return d.replace(rows=max(d.rows, 2), cols=max(d.cols, 2), c_stride=d.c_item)
    if kind == "b_stride_small":
        return d.replace(flags=d.flags & ~FLAG_SPARSE, n=0, m=0, red=max(d.red, 2), cols=max(d.cols, 2), b_stride=2)
    if kind == "a_beyond":
        return d.replace(a_addr=MEMORY_BYTES + 2 * int(rng.integers(0, 4)))
    if kind == "c_beyond":
        cols = max(d.cols, 2)
        return d.replace(c_addr=MEMORY_BYTES - 4, cols=cols, c_stride=max(d.c_stride, 4 * cols))
    if kind == "b_beyond":
        return d.replace(b_addr=MEMORY_BYTES + BEAT * int(rng.integers(0, 1 << 20)))
    if kind == "addr_wrap":
        return d.replace(c_addr=(1 << 64) - 4 * int(rng.integers(1, 8)))
    raise ValueError(f"unknown mutation {kind!r}")


def expected_error(d: GemmDescriptor, config: SATConfig) -> int:
    """Error code ``validate`` gives (0 for a valid descriptor)."""
    try:
        d.validate(config, MEMORY_BYTES)
    except DescriptorError as e:
        return int(e.code)
    return 0


def loopback_model(mem: bytearray, d: GemmDescriptor, beat_bytes: int = BEAT) -> None:
    """What :class:`~sat.sim.loopback.LoopbackEngine` does to memory for a valid descriptor ``d`` (bus beats of
    ``beat_bytes``)."""
    (_, a_lo, a_hi), _, (_, c_lo, c_hi) = d.extents()
    a_first, n_a = beats_of(a_lo, a_hi, beat_bytes)
    c_first, n_c = beats_of(c_lo, c_hi, beat_bytes)
    src = bytes(mem[a_first:a_first + n_a * beat_bytes])
    for i in range(n_c):
        beat = src[i * beat_bytes:(i + 1) * beat_bytes] if i < n_a else bytes(beat_bytes)
        base = c_first + i * beat_bytes
        for j in range(beat_bytes):
            if c_lo <= base + j < c_hi:
                mem[base + j] = beat[j]


# ---------------------------------------------------------------------------------------------------------- bench


def _val(handle: Any) -> int:
    v = handle.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


@dataclass
class Bench:
    dut: Any
    config: SATConfig
    rng: np.random.Generator
    transport: Any
    regs: Any
    bursts: list[tuple[str, int, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    max_burst: int = 256
    #: bytes per AXI beat of m_axi
    beat: int = BEAT
    #: a ModelTransport mirroring every register write and START (register-level conformance)
    model: Any = None

    @property
    def axil(self) -> Any:
        return self.transport.axil

    @property
    def ram(self) -> Any:
        return self.transport.ram

    @property
    def faults(self) -> list[tuple[int, int]]:
        """Byte ranges where the RAM answers SLVERR (the transport's fault injection)."""
        return self.transport.faults

    @faults.setter
    def faults(self, ranges: list[tuple[int, int]]) -> None:
        self.transport.faults = list(ranges)

    def attach_model(self, faults: list[tuple[int, int]] = ()) -> None:
        """Mirror the register writes from now on into a fresh ``ModelTransport`` (same config and memory size)
        holding a copy of the RAM, with the same injected faults."""
        from sat.sw.driver.model import ModelTransport

        self.model = ModelTransport(self.config, MEMORY_BYTES)
        for lo, hi in faults:
            self.model.inject_axi_error(lo, min(hi, MEMORY_BYTES) - lo)

    def check_model(self, st: dict[str, int], what: Any) -> None:
        """The RTL's status registers equal the model's after the same register writes."""
        want = {name: self.model.read32(self.regs.offset(name)) for name in st}
        assert st == want, f"{what}: RTL registers {st} differ from ModelTransport {want}"

    async def read(self, name: str) -> int:
        return await self.read_at(self.regs.offset(name))

    async def read_at(self, offset: int, expect_ok: bool = True) -> int:
        resp = await self.axil.read(offset, 4)
        if expect_ok:
            assert int(resp.resp) == 0, f"read of 0x{offset:x} answered resp {int(resp.resp)}"
        return int.from_bytes(resp.data, "little")

    async def write(self, name: str, value: int) -> None:
        if self.model is not None:
            if name == "CONTROL" and value & CONTROL_START:
                self.model.memory[:] = np.frombuffer(self.ram.read(0, MEMORY_BYTES), dtype=np.uint8)
            self.model.write32(self.regs.offset(name), value)
        resp = await self.axil.write(self.regs.offset(name), value.to_bytes(4, "little"))
        assert int(resp.resp) == 0, f"write of {name} answered resp {int(resp.resp)}"

    async def run_list(self, descriptors: list[GemmDescriptor], base: int = 0, start: bool = True) -> None:
        self.ram.write(base, encode_list(descriptors))
        await self.write("CMD_ADDR_LO", base & 0xFFFFFFFF)
        await self.write("CMD_ADDR_HI", base >> 32)
        await self.write("CMD_COUNT", len(descriptors))
        if start:
            await self.write("CONTROL", CONTROL_START)

    async def wait_idle(self, max_polls: int = 2000) -> int:
        from cocotb.triggers import ClockCycles

        for _ in range(max_polls):
            status = await self.read("STATUS")
            if not status & STATUS_BUSY:
                return status
            await ClockCycles(self.dut.clk, 20)
        raise AssertionError("core still busy after polling")

    async def status(self) -> dict[str, int]:
        names = ("STATUS", "ERROR_CODE", "ERROR_INDEX", "CMD_DONE", "LAST_TAG", "IRQ_STATUS")
        return {n: await self.read(n) for n in names}


async def _monitor(bench: Bench) -> None:
    from cocotb.triggers import RisingEdge

    dut = bench.dut
    width_log2 = (bench.config.axi_data_width // 8).bit_length() - 1
    while True:
        await RisingEdge(dut.clk)
        if _val(dut.rst):
            continue
        for ch in ("ar", "aw"):
            if _val(getattr(dut, f"m_axi_{ch}valid")) and _val(getattr(dut, f"m_axi_{ch}ready")):
                addr = _val(getattr(dut, f"m_axi_{ch}addr"))
                beats = _val(getattr(dut, f"m_axi_{ch}len")) + 1
                size = _val(getattr(dut, f"m_axi_{ch}size"))
                burst = _val(getattr(dut, f"m_axi_{ch}burst"))
                bench.bursts.append((ch, addr, beats))
                nbytes = beats << width_log2
                if addr % PAGE + nbytes > PAGE:
                    bench.violations.append(f"{ch} burst 0x{addr:x} x {beats} crosses a 4 KiB boundary")
                if size != width_log2 or burst != 1 or beats > bench.max_burst or addr % (1 << width_log2):
                    bench.violations.append(f"{ch} burst 0x{addr:x} len {beats} size {size} burst {burst}")


async def setup(dut: Any, salt: str, pause: float | None = None) -> Bench:
    """Clock, reset, AXI-Lite master and AXI RAM (with pauses and fault injection, from
    :func:`sat.sim.cocotb_transport.attach`) and the burst monitor."""
    import cocotb

    params = tb_params()
    config = SATConfig.from_dict(params["config"])
    rng = rng_for(params, salt)
    p = float(params.get("pause", 0.3)) if pause is None else pause
    # pauses draw from their own generator: stimulus stays fixed
    transport = await attach(dut, config, memory_bytes=MEMORY_BYTES, pause=p, rng=rng_for(params, salt + "/pauses"))
    bench = Bench(dut=dut, config=config, rng=rng, transport=transport,
                  regs=register_map(config, MEMORY_BYTES), max_burst=int(params.get("max_burst", 256)),
                  beat=config.axi_data_width // 8)
    cocotb.start_soon(_monitor(bench))
    return bench


def _fill(bench: Bench, lo: int, hi: int) -> None:
    bench.ram.write(lo, bench.rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes())


def _check_bursts(bench: Bench) -> None:
    assert not bench.violations, "AXI burst rule violations:\n" + "\n".join(bench.violations[:10])


# ---------------------------------------------------------------------------------------------------------- tests

test = cocotb.test


@test()
async def registers_reset_and_access(dut: Any) -> None:
    """Reset values of every register equal register_map; rw/ro/wo/w1c rules; undecoded offsets answer OKAY, read
    0 and ignore writes."""
    bench = await setup(dut, "registers")
    regs = bench.regs
    for r in regs.registers:
        got = await bench.read_at(r.offset)
        assert got == r.reset, f"{r.name} reads 0x{got:08x} after reset, register_map says 0x{r.reset:08x}"
    assert _val(dut.irq) == 0
    # ro registers ignore writes, rw registers keep them, wo reads as 0
    for name in ("ID", "CONFIG", "STATUS", "CMD_DONE", "MEM_SIZE_LO", "CYCLES_LO"):
        await bench.write(name, 0xFFFFFFFF)
        assert await bench.read(name) == regs[name].reset, name
    for name in ("SCRATCH", "CMD_ADDR_LO", "CMD_ADDR_HI", "CMD_COUNT", "IRQ_ENABLE"):
        value = int(bench.rng.integers(0, 1 << 32))
        await bench.write(name, value)
        assert await bench.read(name) == value, name
    assert await bench.read("CONTROL") == 0
    # byte strobes: one byte of SCRATCH
    await bench.write("SCRATCH", 0x11223344)
    resp = await bench.axil.write(regs.offset("SCRATCH") + 2, b"\xab")
    assert int(resp.resp) == 0
    assert await bench.read("SCRATCH") == 0x11AB3344
    # offsets the map does not decode answer OKAY: reads return 0, writes change nothing. 0x2000 and 0x3000 are
    # where the XDMA driver looks for its own register blocks on every load (an SLVERR there would reach the host
    # as a completer abort); 0x204C aliases SCRATCH in the low bits and must not reach it.
    mapped = {r.offset for r in regs.registers}
    holes = [o for o in range(0, regs.size, 4) if o not in mapped]
    probes = holes[:4] + holes[-2:] + [regs.size, 0x1000, 0x2000, 0x3000, 0x204C, 0xFFFFFFFC]
    for offset in probes:
        resp = await bench.axil.read(offset, 4)
        assert int(resp.resp) == 0, f"read of undecoded 0x{offset:x} answered {int(resp.resp)}, not OKAY"
        assert int.from_bytes(resp.data, "little") == 0, f"read of undecoded 0x{offset:x} returned {resp.data!r}"
    before = {r.name: await bench.read_at(r.offset) for r in regs.registers}
    for offset in probes:
        resp = await bench.axil.write(offset, b"\xff\xff\xff\xff")
        assert int(resp.resp) == 0, f"write of undecoded 0x{offset:x} answered {int(resp.resp)}, not OKAY"
    after = {r.name: await bench.read_at(r.offset) for r in regs.registers}
    assert after == before, {n: (before[n], after[n]) for n in before if before[n] != after[n]}
    assert _val(dut.irq) == 0
    for offset in probes[:3]:
        assert await bench.read_at(offset) == 0, f"a write made undecoded 0x{offset:x} read nonzero"
    # interleaved reads and writes keep their responses apart
    events = []
    for i in range(8):
        events.append(bench.axil.init_write(regs.offset("SCRATCH"), (i * 0x01010101).to_bytes(4, "little")))
        events.append(bench.axil.init_read(regs.offset("ID") if i % 2 else holes[0], 4))
    for i, ev in enumerate(events):
        await ev.wait()
        assert int(ev.data.resp) == 0, f"transaction {i}: resp {int(ev.data.resp)}"
        if i % 2:
            want = regs["ID"].reset if (i // 2) % 2 else 0
            assert int.from_bytes(ev.data.data, "little") == want, f"transaction {i}: {ev.data.data!r}"
    assert await bench.read("SCRATCH") == 7 * 0x01010101


@test()
async def counter_latch(dut: Any) -> None:
    """Reading a counter's _LO latches its _HI; CYCLES counts the cycles of a list."""
    bench = await setup(dut, "latch")
    d = random_descriptor(bench.rng, bench.config, 0)
    await bench.run_list([d])
    await bench.wait_idle()
    lo = await bench.read("CYCLES_LO")
    hi = await bench.read("CYCLES_HI")
    assert hi == 0 and 10 < lo < 100000, (hi, lo)
    assert await bench.read("CYCLES_LO") == lo, "CYCLES changed while idle"
    # COMPUTE_CYCLES of the loopback engine = beats moved = max(beats(A), beats(C))
    (_, a_lo, a_hi), _, (_, c_lo, c_hi) = d.extents()
    want = max(beats_of(a_lo, a_hi, bench.beat)[1], beats_of(c_lo, c_hi, bench.beat)[1])
    assert await bench.read("COMPUTE_CYCLES_LO") == want
    assert await bench.read("MACS_LO") == 0
    for name, _ in PERF_COUNTERS:
        await bench.read(f"{name}_LO")
        assert await bench.read(f"{name}_HI") == 0


@test()
async def loopback_lists(dut: Any) -> None:
    """Random valid lists: memory equals the loopback model, CMD_DONE/LAST_TAG/STATUS/IRQ as the contract says;
    every burst obeys the AXI rules and some cross 4 KiB pages' worth of data."""
    bench = await setup(dut, "loopback")
    layout = Layout()
    await bench.write("IRQ_ENABLE", IRQ_DONE | IRQ_ERROR)
    lists = int(tb_params().get("lists", 6))
    executed = 0
    for trial in range(lists):
        count = int(bench.rng.integers(1, layout.slots + 1))
        executed += count
        ds = [random_descriptor(bench.rng, bench.config, slot, big=bool(bench.rng.random() < 0.5))
              for slot in bench.rng.permutation(layout.slots)[:count]]
        _fill(bench, layout.a_base, layout.c_base + layout.slots * layout.slot)
        model = bytearray(bench.ram.read(0, layout.c_base + layout.slots * layout.slot))
        base = layout.list_base + BEAT * int(bench.rng.integers(0, 32))
        await bench.run_list(ds, base)
        status = await bench.wait_idle()
        assert status == STATUS_DONE, f"list {trial}: STATUS 0x{status:x}"
        assert await bench.read("CMD_DONE") == count
        assert await bench.read("LAST_TAG") == ds[-1].tag
        assert await bench.read("IRQ_STATUS") == IRQ_DONE
        assert _val(dut.irq) == 1
        await bench.write("IRQ_STATUS", IRQ_DONE)
        assert await bench.read("IRQ_STATUS") == 0
        assert _val(dut.irq) == 0
        model[base:base + BEAT * count] = encode_list(ds)
        for d in ds:
            loopback_model(model, d, bench.beat)
        got = bench.ram.read(0, len(model))
        if got != bytes(model):
            bad = [i for i in range(len(model)) if got[i] != model[i]]
            raise AssertionError(f"list {trial}: {len(bad)} bytes differ from the loopback model, first at "
                                 f"0x{bad[0]:x}: got 0x{got[bad[0]]:02x} expected 0x{model[bad[0]]:02x}")
    _check_bursts(bench)
    reads = [b for b in bench.bursts if b[0] == "ar"]
    writes = [b for b in bench.bursts if b[0] == "aw"]
    dut._log.info("%d lists, %d descriptors, %d read bursts (%d beats), %d write bursts (%d beats)", lists,
                  executed, len(reads), sum(b[2] for b in reads), len(writes), sum(b[2] for b in writes))
    assert reads and writes
    # a transfer that starts 3 beats before a page end is split there: A (642 bytes) and C (256 bytes)
    bench.bursts.clear()
    beat = bench.beat
    a_addr = layout.a_base + PAGE - 3 * beat + 2
    c_addr = layout.c_base + PAGE - 2 * beat
    d = GemmDescriptor(rows=1, red=320, cols=64, a_addr=a_addr, b_addr=layout.b_base, c_addr=c_addr, a_stride=640,
                       b_stride=128, c_stride=256)
    await bench.run_list([d])
    assert await bench.wait_idle() == STATUS_DONE
    first_a = [n for ch, a, n in bench.bursts if ch == "ar" and a == a_addr - 2]
    first_c = [n for ch, a, n in bench.bursts if ch == "aw" and a == c_addr]
    assert first_a == [3] and first_c == [2], (first_a, first_c, bench.bursts)
    rest = beats_of(a_addr, a_addr + 640, beat)[1] - 3
    assert ("ar", a_addr - 2 + 3 * beat, min(rest, bench.max_burst, PAGE // beat)) in bench.bursts, bench.bursts
    _check_bursts(bench)


@test()
async def descriptor_errors(dut: Any) -> None:
    """Every validation error code, alone and combined, equals GemmDescriptor.validate (code and index)."""
    bench = await setup(dut, "errors")
    config = bench.config
    await bench.write("IRQ_ENABLE", IRQ_ERROR)
    kinds = list(MUTATIONS)
    trials = [[k] for k in kinds] + [list(bench.rng.choice(kinds, size=int(bench.rng.integers(2, 4)),
                                                            replace=False)) for _ in range(int(
                                                                tb_params().get("combos", 12)))]
    seen = set()
    bench.attach_model()
    for kinds_now in trials:
        good = [random_descriptor(bench.rng, config, s, sparse=False) for s in range(int(bench.rng.integers(0, 3)))]
        bad = random_descriptor(bench.rng, config, len(good))
        for k in kinds_now:
            bad = mutate(bench.rng, config, bad, str(k))
        want = expected_error(bad, config)
        assert want, f"mutations {kinds_now} left a valid descriptor"
        seen.add(want)
        await bench.write("CONTROL", CONTROL_CLEAR)
        await bench.write("IRQ_STATUS", 0xFFFFFFFF)
        await bench.run_list([*good, bad])
        status = await bench.wait_idle()
        st = await bench.status()
        assert status == STATUS_ERROR, f"{kinds_now}: STATUS 0x{status:x}"
        assert st["ERROR_CODE"] == want, (f"{kinds_now}: ERROR_CODE {ErrorCode(st['ERROR_CODE']).name}, "
                                          f"validate says {ErrorCode(want).name}")
        assert st["ERROR_INDEX"] == len(good) and st["CMD_DONE"] == len(good), (kinds_now, st)
        want_irq = IRQ_ERROR | (IRQ_DONE if any(g.flags & FLAG_IRQ for g in good) else 0)
        assert st["IRQ_STATUS"] == want_irq and _val(dut.irq) == 1, st
        bench.check_model(st, kinds_now)
    expected_codes = {ErrorCode.BAD_OPCODE, ErrorCode.BAD_FLAGS, ErrorCode.NM_UNSUPPORTED, ErrorCode.BAD_SHAPE,
                      ErrorCode.BAD_ADDRESS}
    assert seen >= expected_codes, seen
    # BAD_COUNT: count 0, misaligned list address; the core stays idle
    for addr, count in ((0, 0), (0x20, 1), (0x1_0000_0004, 2)):
        await bench.write("CONTROL", CONTROL_CLEAR)
        await bench.write("CMD_ADDR_LO", addr & 0xFFFFFFFF)
        await bench.write("CMD_ADDR_HI", addr >> 32)
        await bench.write("CMD_COUNT", count)
        await bench.write("CONTROL", CONTROL_START)
        st = await bench.status()
        assert st["STATUS"] == STATUS_ERROR and st["ERROR_CODE"] == ErrorCode.BAD_COUNT and st["ERROR_INDEX"] == 0, st
        bench.check_model(st, ("BAD_COUNT", addr, count))
    # ERROR_CODE keeps the first error until CLEAR; CLEAR clears STATUS.DONE/ERROR, ERROR_CODE, ERROR_INDEX
    await bench.write("CMD_COUNT", 0)
    await bench.write("CONTROL", CONTROL_START)
    await bench.run_list([mutate(bench.rng, config, random_descriptor(bench.rng, config, 0), "opcode")])
    await bench.wait_idle()
    assert await bench.read("ERROR_CODE") == ErrorCode.BAD_COUNT
    await bench.write("CONTROL", CONTROL_CLEAR)
    st = await bench.status()
    assert st["STATUS"] == 0 and st["ERROR_CODE"] == 0 and st["ERROR_INDEX"] == 0, st
    bench.check_model(st, "CLEAR")
    _check_bursts(bench)


@test()
async def axi_errors(dut: Any) -> None:
    """SLVERR on a descriptor fetch, an operand read, a result write: AXI_READ / AXI_WRITE with the index, the
    interrupt, and the core keeps working afterwards."""
    bench = await setup(dut, "axi")
    config = bench.config
    await bench.write("IRQ_ENABLE", IRQ_ERROR)
    cases = [("descriptor", ErrorCode.AXI_READ), ("A", ErrorCode.AXI_READ), ("B", ErrorCode.AXI_READ),
             ("C", ErrorCode.AXI_WRITE), ("beyond", ErrorCode.AXI_READ), ("high", ErrorCode.AXI_READ)]
    for what, code in cases:
        await bench.write("CONTROL", CONTROL_CLEAR)
        await bench.write("IRQ_STATUS", 0xFFFFFFFF)
        ds = [random_descriptor(bench.rng, config, s, big=True, sparse=False) for s in range(3)]
        index = int(bench.rng.integers(0, 3))
        base = BEAT * int(bench.rng.integers(0, 16))
        (_, a_lo, a_hi), (_, b_lo, b_hi), (_, c_lo, c_hi) = ds[index].extents()
        lo, hi = {"descriptor": (base + BEAT * index, base + BEAT * index + 1), "A": (a_lo, a_hi),
                  "B": (b_lo, b_hi), "C": (c_lo, c_hi), "beyond": (0, 0), "high": (0, 0)}[what]
        if what == "high":
            # CMD_ADDR_HI set: the list is far past device memory (also past a 32-bit address space)
            index = 0
            bench.attach_model()
            await bench.write("CMD_ADDR_LO", base)
            await bench.write("CMD_ADDR_HI", int(bench.rng.integers(1, 1 << 32)))
            await bench.write("CMD_COUNT", 3)
            await bench.write("CONTROL", CONTROL_START)
        elif what == "beyond":
            # the list itself lies past the RAM's end (the RAM answers SLVERR there; DECERR is checked in the
            # Amaranth DMA tests, the core treats both alike)
            base = MEMORY_BYTES - BEAT * index
            bench.faults = [(MEMORY_BYTES, 1 << 64)]
            bench.attach_model()
            if index:
                bench.ram.write(base, encode_list(ds[:index]))
            await bench.write("CMD_ADDR_LO", base)
            await bench.write("CMD_ADDR_HI", 0)
            await bench.write("CMD_COUNT", 3)
            await bench.write("CONTROL", CONTROL_START)
        else:
            mid = int(bench.rng.integers(lo, hi))
            bench.faults = [(mid, mid + 1)]
            bench.attach_model(bench.faults)
            await bench.run_list(ds, base)
        status = await bench.wait_idle()
        st = await bench.status()
        bench.faults = []
        assert status == STATUS_ERROR and st["ERROR_CODE"] == code and st["ERROR_INDEX"] == index, (what, st)
        want_irq = IRQ_ERROR | (IRQ_DONE if any(d.flags & FLAG_IRQ for d in ds[:index]) else 0)
        assert st["CMD_DONE"] == index and st["IRQ_STATUS"] == want_irq and _val(dut.irq) == 1, (what, st)
        if not index:
            st.pop("LAST_TAG")       # the fresh model has no history
        bench.check_model(st, what)
        bench.model = None
    # afterwards a clean list runs to completion
    await bench.write("CONTROL", CONTROL_CLEAR)
    await bench.run_list([random_descriptor(bench.rng, config, 0)])
    assert await bench.wait_idle() == STATUS_DONE
    _check_bursts(bench)


async def _long_list(bench: Bench, count: int = 4) -> list[GemmDescriptor]:
    """Descriptors whose wide row strides make the loopback engine move ~750 beats each (A and C rows far apart).

    A and C of one descriptor are 448 KiB apart; C ranges of different descriptors overlap, which the
    sequential model handles (descriptors complete in order).
    """
    ds = []
    for s in range(count):
        d = GemmDescriptor(rows=2, red=2, cols=2, a_addr=0x1_0000 + 0x100 * s + 2 * int(bench.rng.integers(0, 64)),
                           b_addr=0x4_0000, c_addr=0x8_0000 + 0x100 * s + 4 * int(bench.rng.integers(0, 32)),
                           a_stride=48000, b_stride=4, c_stride=48000, tag=int(bench.rng.integers(0, 1 << 32)))
        d.validate(bench.config, MEMORY_BYTES)
        ds.append(d)
    return ds


@test()
async def busy_abort_reset(dut: Any) -> None:
    """START while busy (BUSY, list undisturbed), ABORT (ABORTED at the first unfinished index), reset mid-run."""
    from cocotb.triggers import ClockCycles

    bench = await setup(dut, "busy", pause=0.2)
    config = bench.config
    ds = await _long_list(bench)
    _fill(bench, 0x1_0000, 0xA_0000)
    model = bytearray(bench.ram.read(0, MEMORY_BYTES))
    await bench.write("IRQ_ENABLE", IRQ_ERROR | IRQ_DONE)
    await bench.run_list(ds)
    assert (await bench.read("STATUS")) & STATUS_BUSY
    await ClockCycles(dut.clk, 300)
    done_before = await bench.read("CMD_DONE")
    await bench.write("CONTROL", CONTROL_START)
    st = await bench.status()
    assert st["STATUS"] == STATUS_BUSY | STATUS_ERROR and st["ERROR_CODE"] == ErrorCode.BUSY, st
    assert st["ERROR_INDEX"] in (done_before, done_before + 1) and st["IRQ_STATUS"] == IRQ_ERROR, st
    status = await bench.wait_idle()
    assert status == STATUS_DONE | STATUS_ERROR, hex(status)
    assert await bench.read("CMD_DONE") == len(ds) and await bench.read("ERROR_CODE") == ErrorCode.BUSY
    model[0:BEAT * len(ds)] = encode_list(ds)
    for d in ds:
        loopback_model(model, d, bench.beat)
    assert bench.ram.read(0, MEMORY_BYTES) == bytes(model), "the refused START disturbed the running list"

    # ABORT
    for delay in (0, 200, 2500):
        await bench.write("CONTROL", CONTROL_CLEAR)
        await bench.write("IRQ_STATUS", 0xFFFFFFFF)
        await bench.run_list(ds)
        await ClockCycles(dut.clk, delay)
        await bench.write("CONTROL", CONTROL_ABORT)
        status = await bench.wait_idle()
        st = await bench.status()
        assert status == STATUS_ERROR and st["ERROR_CODE"] == ErrorCode.ABORTED, (delay, st)
        assert st["ERROR_INDEX"] == st["CMD_DONE"] < len(ds) and st["IRQ_STATUS"] & IRQ_ERROR, (delay, st)
    # ABORT while idle does nothing
    await bench.write("CONTROL", CONTROL_CLEAR)
    await bench.write("CONTROL", CONTROL_ABORT)
    assert (await bench.status())["STATUS"] == 0

    # reset in the middle of a run: registers back to reset values, the next list runs
    await bench.run_list(ds)
    await ClockCycles(dut.clk, 1000)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    for r in bench.regs.registers:
        got = await bench.read_at(r.offset)
        assert got == r.reset, f"{r.name} 0x{got:x} after a reset mid-run, not 0x{r.reset:x}"
    assert _val(dut.irq) == 0
    d = random_descriptor(bench.rng, config, 5)
    model = bytearray(bench.ram.read(0, MEMORY_BYTES))
    await bench.run_list([d], 0x800)
    assert await bench.wait_idle() == STATUS_DONE
    model[0x800:0x800 + BEAT] = d.encode()
    loopback_model(model, d, bench.beat)
    assert bench.ram.read(0, MEMORY_BYTES) == bytes(model)
    _check_bursts(bench)



@test()
async def irq_mid_list(dut: Any) -> None:
    """A descriptor with FLAG_IRQ in the middle of a list: the unchanged driver (``SATDevice.run``) ends as soon as
    the list does, not after a ``wait_irq`` timeout. The transport delivers the interrupt as XDMA with MSI does,
    one event per rising edge of ``irq``; the mid-list descriptor raises the line, so the end of the list makes a
    new edge only if the host acknowledged ``IRQ_STATUS`` after waking."""
    from cocotb.task import bridge

    from sat.sw.driver.device import SATDevice

    bench = await setup(dut, "irq", pause=0.2)
    config, transport = bench.config, bench.transport
    transport.irq_cycles = 200_000     # a wait_irq that times out costs this much simulated time
    ds = await _long_list(bench)
    ds[0] = ds[0].replace(flags=ds[0].flags | FLAG_IRQ)
    _fill(bench, 0x1_0000, 0xA_0000)
    model = bytearray(bench.ram.read(0, MEMORY_BYTES))
    device = await bridge(lambda: SATDevice(transport, config))()
    edges, start = transport.irq_events, transport.cycle()
    result = await bridge(lambda: device.run(ds, timeout_s=600.0))()
    cycles = transport.cycle() - start
    assert result.cmd_done == len(ds) and result.last_tag == ds[-1].tag, result
    assert transport.irq_events - edges == 2, "expected two interrupts: the FLAG_IRQ descriptor and the end"
    busy = result.counters["CYCLES"]
    assert busy < cycles < busy + transport.irq_cycles // 4, (
        f"SATDevice.run took {cycles} cycles for a list that ran {busy}: it slept through a wait_irq timeout "
        f"({transport.irq_cycles} cycles) instead of waking at the end of the list")
    for d in ds:
        loopback_model(model, d, bench.beat)
    lo = 0x1_0000   # below: the driver's own list
    assert bench.ram.read(lo, MEMORY_BYTES - lo) == bytes(model[lo:])
    _check_bursts(bench)


# ---------------------------------------------------------------------------------------------------------- system


@test()
async def driver_system(dut: Any) -> None:
    """The real host driver (``SATDevice``) over the simulated core: it recognises the build from the identity
    registers, runs a list, raises the core's errors (validation, ABORT) with the code and index the contract
    gives, and its register dump reads every register."""
    from cocotb.task import bridge

    from sat.sw.driver.device import SATDevice, SATDeviceError

    bench = await setup(dut, "system", pause=0.2)
    config = bench.config
    transport = bench.transport
    device = await bridge(lambda: SATDevice(transport, config))()
    assert device.memory_bytes == MEMORY_BYTES and device.config_verified
    rebuilt = await bridge(lambda: SATDevice(transport, None))()
    assert rebuilt.config.to_dict() == {**config.to_dict(), "clock_hz": rebuilt.config.clock_hz}

    ds = [random_descriptor(bench.rng, config, s) for s in range(3)]
    _fill(bench, Layout().a_base, Layout().c_base + 3 * Layout().slot)
    model = bytearray(bench.ram.read(0, MEMORY_BYTES))
    result = await bridge(lambda: device.run(ds, timeout_s=60.0))()
    assert result.cmd_done == 3 and result.last_tag == ds[-1].tag, result
    for d in ds:
        loopback_model(model, d, bench.beat)
    got = bench.ram.read(0, MEMORY_BYTES)
    lo = Layout().a_base   # below: the driver's own list (allocated, written and freed by it)
    assert got[lo:] == bytes(model[lo:]), "memory differs from the loopback model after SATDevice.run"

    for kind in ("opcode", "sparse_btrans", "c_stride_small", "b_beyond"):
        bad = mutate(bench.rng, config, random_descriptor(bench.rng, config, 3), kind)
        want = expected_error(bad, config)
        try:
            await bridge(lambda bad=bad: device.run([ds[0], bad], timeout_s=60.0))()
        except SATDeviceError as e:
            assert (int(e.code), e.index) == (want, 1), (kind, e)
        else:
            raise AssertionError(f"SATDevice.run accepted a list with a {kind} descriptor")

    def start_abort_wait():
        pending = device.start(ds * 4)
        device.abort()
        return device.wait(pending, timeout_s=60.0)

    try:
        await bridge(start_abort_wait)()
    except SATDeviceError as e:
        assert int(e.code) == ErrorCode.ABORTED and e.index < 12, e
    else:
        raise AssertionError("an aborted list reported success")
    regs = await bridge(device.dump_registers)()
    assert set(regs) == {r.name for r in bench.regs.registers}
    assert regs["ID"] == bench.regs["ID"].reset and regs["STATUS"] & STATUS_ERROR
    _check_bursts(bench)
