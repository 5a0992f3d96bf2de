"""Device memory in channels: the memory map, the MEM_CHANNELS register, and the driver's per-channel allocator
(placement by role, strict channels, the error when a channel is full), against the software model."""

from __future__ import annotations

import numpy as np
import pytest

from sat.sw import numerics
from sat.sw.config import SATConfig
from sat.sw.driver import DeviceBackend, ModelTransport, SATDevice, SATMemoryError
from sat.sw.memmap import CARD_CHANNEL_SLR, CARD_MEMORY, ROLES, MemoryMap, default_placement
from sat.sw.regmap import register_map

SMALL = SATConfig(rows=2, cols=2, nm_set=((2, 4),))
MIB = 1 << 20


def four_channel_device(memory_bytes: int = 4 * MIB, config: SATConfig = SMALL) -> SATDevice:
    return SATDevice(ModelTransport(config, memory_bytes, channels=4), config)


# --- the map ---------------------------------------------------------------------------------------------------

def test_card_memory_is_four_16_gib_windows():
    assert CARD_MEMORY.channels == 4 and CARD_MEMORY.window_bytes == 16 * 2**30
    assert CARD_MEMORY.size == 64 * 2**30
    assert CARD_MEMORY.windows() == [(k * 2**34, (k + 1) * 2**34) for k in range(4)]
    assert [CARD_MEMORY.channel_of(a) for a in (0, 2**34 - 1, 2**34, 3 * 2**34 + 5, 2**36 - 1)] == [0, 0, 1, 3, 3]
    assert CARD_CHANNEL_SLR == (0, 1, 1, 2)     # reference 1.6: C0 SLR0, C1 and C2 SLR1, C3 SLR2
    with pytest.raises(ValueError, match="outside device memory"):
        CARD_MEMORY.channel_of(2**36)


def test_memory_map_rejects_what_the_interconnect_cannot_decode():
    assert MemoryMap.split(96, 1).window_bytes == 96          # one channel: any size
    with pytest.raises(ValueError, match="power of two"):
        MemoryMap(3, 96)
    with pytest.raises(ValueError, match="multiple of the channel count 3"):
        MemoryMap.split(4 * MIB, 3)
    with pytest.raises(ValueError, match="between 0 and 3"):
        CARD_MEMORY.check_channel(4)
    with pytest.raises(ValueError, match="channels must be"):
        MemoryMap(0, 64)


def test_default_placement_separates_operand_reads_from_result_writes():
    card = default_placement(4)
    assert set(card) == set(ROLES)
    # the operands (reads of SAT's one master, one AXI ID) on one channel, the results (writes) on another, both
    # in SLR1 with PCIe and SAT's DMA; command lists on a third
    assert card["a"] == card["b"] and card["c"] != card["a"]
    assert CARD_CHANNEL_SLR[card["a"]] == CARD_CHANNEL_SLR[card["c"]] == 1
    assert card["cmd"] not in (card["a"], card["c"])
    assert set(default_placement(1).values()) == {0}
    for n in (2, 3, 8):
        p = default_placement(n)
        assert p["a"] == p["b"] != p["c"] and all(0 <= v < n for v in p.values())


def test_mem_channels_register():
    rmap = register_map(SMALL, CARD_MEMORY.size, channels=4)
    reg = rmap["MEM_CHANNELS"]
    assert reg.offset == 0x058 and reg.access == "ro"
    assert reg.unpack(reg.reset) == {"channels": 4, "window_log2": 34}
    assert rmap["MEM_SIZE_LO"].reset | rmap["MEM_SIZE_HI"].reset << 32 == 2**36
    # the rest of the map is unchanged by the channel count (backward compatible offsets)
    one = register_map(SMALL, CARD_MEMORY.size)
    assert {r.name: r.offset for r in one.registers} == {r.name: r.offset for r in rmap.registers}
    assert one["MEM_CHANNELS"].unpack(one["MEM_CHANNELS"].reset) == {"channels": 1, "window_log2": 36}
    with pytest.raises(ValueError, match="multiple of the channel count"):
        register_map(SMALL, 3 * MIB + 2, channels=4)


# --- the allocator -----------------------------------------------------------------------------------------------

def test_device_reads_the_channels_from_the_core():
    dev = four_channel_device()
    assert dev.memory == MemoryMap(4, MIB) and dev.memory_bytes == 4 * MIB
    for k in range(4):
        addr = dev.alloc(1000, channel=k)
        assert k * MIB <= addr < (k + 1) * MIB and dev.channel_of(addr) == k
    # a core older than MEM_CHANNELS reads 0 there: one channel over the whole memory
    model = ModelTransport(SMALL, 4 * MIB)

    class Old:
        def read32(self, offset):
            return 0 if offset == 0x058 else model.read32(offset)

        def __getattr__(self, name):
            return getattr(model, name)

    old = SATDevice(Old(), SMALL)
    assert old.memory == MemoryMap(1, 4 * MIB)
    assert old.alloc(3 * MIB) == 0                     # first fit from address 0, as before channels


def test_roles_place_a_b_c_and_command_lists_on_their_channels():
    """A GEMM through the driver: A and B on C1, the result on C2, the command list on C3 (the card's
    placement), and the result equals the golden model bit for bit."""
    dev = four_channel_device()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 12)).astype(np.float32)
    b = rng.standard_normal((12, 3)).astype(np.float32)
    ta, tb = dev.write_tensor(a, channel="a"), dev.write_tensor(b, channel="b")
    c = dev.gemm(ta, tb)
    assert (dev.channel_of(ta), dev.channel_of(tb), dev.channel_of(c)) == (1, 1, 2)
    cmd = dev.read_reg("CMD_ADDR_LO") | dev.read_reg("CMD_ADDR_HI") << 32
    assert dev.memory.channel_of(cmd) == 3
    golden = np.asarray(numerics.matmul(a, b, SMALL.fmt), np.float32)
    assert np.array_equal(dev.read_tensor(c).view(np.uint32), golden.view(np.uint32))
    # weights uploaded compressed go to the right operands' channel by default
    w = rng.standard_normal((4, 8)).astype(np.float32)
    assert dev.channel_of(dev.upload_weights(w, 2, 4)) == 1
    assert dev.channel_of(dev.write_tensor(a)) == 0              # no role: the most free channel
    # the placement is the device's to change
    dev.placement["a"] = 3
    assert dev.channel_of(dev.write_tensor(a, channel="a")) == 3


def test_full_channel_error_and_spill():
    dev = four_channel_device()
    whole = dev.alloc(MIB, channel=1)                 # all of C1
    assert whole == MIB and dev.free_bytes_on(1) == 0
    with pytest.raises(SATMemoryError, match=r"channel 1 is full: cannot allocate 64 bytes .*0 of 1048576 bytes "
                                             r"are free there.*C0 1048576, C1 0, C2 1048576, C3 1048576"):
        dev.alloc(64, channel=1)
    # a role is a preference: with its channel full the tensor goes to the channel with the most free bytes
    dev.alloc(MIB // 2, channel=0)
    spilled = dev.alloc(64, channel="a")              # "a" prefers C1
    assert dev.channel_of(spilled) == 2               # C2 and C3 have the most free; the lower number first
    assert dev.channel_of(dev.alloc(64)) == 3         # no preference: most free (C3 now)
    # an allocation never spans two channels, even when the total free space would hold it
    assert dev.free_bytes > MIB
    with pytest.raises(SATMemoryError, match="device memory exhausted.*free per channel"):
        dev.alloc(MIB + 64)
    dev.free(whole)
    assert dev.free_bytes_on(1) == MIB and dev.alloc(MIB, channel=1) == MIB


def test_bad_channel_arguments():
    dev = four_channel_device()
    with pytest.raises(ValueError, match=r"unknown role 'weights': roles are \['a', 'b', 'c', 'cmd'\]"):
        dev.alloc(64, channel="weights")
    with pytest.raises(ValueError, match="between 0 and 3"):
        dev.alloc(64, channel=4)
    with pytest.raises(SATMemoryError, match="not the address of an allocation"):
        dev.free(5 * MIB)
    with pytest.raises(ValueError, match="does not split into 3 channel windows"):
        SATDevice(ModelTransport(SMALL, 4 * MIB), SMALL, channels=3)


def test_device_backend_places_each_operand_and_matches_golden():
    """DeviceBackend (training's GEMM backend) puts A, B and C on their channels, frees everything, and agrees
    with the golden model whether the memory is one channel or four."""
    rng = np.random.default_rng(2)
    a = numerics.quantize(rng.standard_normal((6, 20)).astype(np.float32), SMALL.fmt)
    b = numerics.quantize(rng.standard_normal((20, 5)).astype(np.float32), SMALL.fmt)
    results = []
    for channels in (1, 4):
        dev = SATDevice(ModelTransport(SMALL, 4 * MIB, channels=channels), SMALL)
        seen = []
        alloc = dev.alloc

        def spy(nbytes, align=64, *, channel=None, _alloc=alloc, _dev=dev, _seen=seen):
            addr = _alloc(nbytes, align, channel=channel)
            _seen.append((channel, _dev.channel_of(addr)))
            return addr

        dev.alloc = spy
        results.append(DeviceBackend(dev).dense(a, b, SMALL.fmt))
        assert dev.free_bytes == 4 * MIB
        if channels == 4:
            assert {role: ch for role, ch in seen} == {"a": 1, "b": 1, "c": 2, "cmd": 3}
    golden = np.asarray(numerics.matmul(a, b, SMALL.fmt), np.float32)
    for got in results:
        assert np.array_equal(np.asarray(got, np.float32).view(np.uint32), golden.view(np.uint32))


def test_selftest_loops_back_through_every_channel():
    from sat.boards.cli import selftest

    result = selftest(ModelTransport(SMALL, 4 * MIB, channels=4), dma_bytes=1 << 12)
    assert result.ok, result.report()
    detail = dict((name, d) for name, _, d in result.checks)
    assert "4 channels" in detail["identity / configuration"]
    assert detail["DMA loop-back"].startswith("4096 bytes on each of 4 channels (at 0x0, 0x100000, 0x200000, "
                                              "0x300000), 0 bytes differ")


# --- the static schedule -----------------------------------------------------------------------------------------

def test_schedule_places_regions_by_role_on_the_card_channels():
    """schedule_iteration with the card's four channels: host-written operands on C1, card-written results on C2,
    the descriptor list on C3 (default_placement), every region inside its channel's window, every descriptor's
    operands in the channel of their role; the cycles do not depend on the placement, and with one channel the
    addresses are the plain bump allocation of before."""
    from sat.sw.descriptor import ConvDescriptor
    from sat.sw.schedule import NetworkBuilder, schedule_iteration

    cfg = SATConfig(rows=8, cols=8, adder_latency=4)
    net = (NetworkBuilder("tiny", 8, 8, 3).conv("conv1", 16, 3).relu().conv("conv2", 32, 3, stride=2).relu()
           .avgpool().flatten().linear("fc", 10).build())
    card = schedule_iteration(net, 4, cfg, (2, 4), memory_bytes=CARD_MEMORY.size, channels=CARD_MEMORY.channels)
    flat = schedule_iteration(net, 4, cfg, (2, 4))
    assert card.cycles == flat.cycles and len(card.descriptors) == len(flat.descriptors)
    for r in card.regions.values():
        assert CARD_MEMORY.channel_of(r.addr) == r.channel == CARD_MEMORY.channel_of(r.end - 1), r
        want = 3 if r.name == "descriptors" else (2 if r.writer == "card" else 1)
        assert r.channel == want, r
    spans = sorted((r.addr, r.end) for r in card.regions.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    for d in card.descriptors:
        assert CARD_MEMORY.channel_of(d.c_addr) == 2 and CARD_MEMORY.channel_of(d.a_addr) == 1
        assert CARD_MEMORY.channel_of(d.b_addr) == 1 or isinstance(d, ConvDescriptor) and d.b_addr == 0
    # one channel: a bump allocation from 0, in the order operands, results, descriptors
    assert all(r.channel == 0 for r in flat.regions.values())
    order = sorted(flat.regions.values(), key=lambda r: r.addr)
    assert order[0].addr == 0 and order[-1].name == "descriptors"
    assert all(-(-a.end // 64) * 64 == b.addr for a, b in zip(order, order[1:], strict=False))


def test_caller_memory_size_is_one_flat_window_unless_channels_are_given():
    model = ModelTransport(SMALL, 4 * MIB, channels=4)
    assert SATDevice(model, SMALL, memory_bytes=2 * MIB).memory == MemoryMap(1, 2 * MIB)
    assert SATDevice(model, SMALL, memory_bytes=2 * MIB, channels=2).memory == MemoryMap(2, MIB)
    assert SATDevice(model, SMALL).memory == MemoryMap(4, MIB)


def test_registers_that_disagree_are_reported():
    """MEM_CHANNELS says 4 windows of 1 MiB; a MEM_SIZE of 8 MiB would make them 2 MiB: the driver refuses."""
    from sat.sw.driver import SATConfigMismatch

    model = ModelTransport(SMALL, 4 * MIB, channels=4)
    size_lo = model.regmap.offset("MEM_SIZE_LO")

    class Odd:
        def read32(self, offset):
            return 8 * MIB if offset == size_lo else model.read32(offset)

        def __getattr__(self, name):
            return getattr(model, name)

    with pytest.raises(SATConfigMismatch, match=r"MEM_CHANNELS reports 4 channels of 2\*\*20 bytes, but MEM_SIZE "
                                                r"\(8388608 bytes\) makes windows of 2097152"):
        SATDevice(Odd(), SMALL)
