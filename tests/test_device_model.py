"""SATDevice over the software device model: bit-exact GEMMs, every error code, timeouts, registers, memory.

Expectations come from the golden model (:mod:`sat.sw.numerics`, :mod:`sat.sw.nmformat`), from
:meth:`GemmDescriptor.validate` (error codes) and from the register map's docstring (status and IRQ rules).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sat.sw import nmformat, numerics
from sat.sw.config import SATConfig
from sat.sw.descriptor import (
    FLAG_B_TRANS,
    FLAG_IRQ,
    FLAG_SPARSE,
    MAX_DIM,
    DescriptorError,
    GemmDescriptor,
    encode_list,
)
from sat.sw.driver import (
    AxiError,
    ModelTransport,
    SATConfigMismatch,
    SATDevice,
    SATDeviceError,
    SATError,
    SATMemoryError,
    SATTimeout,
    Tensor,
    TransportError,
)
from sat.sw.perfmodel import descriptor_counters
from sat.sw.regmap import (
    CONTROL_CLEAR,
    CONTROL_START,
    IRQ_DONE,
    IRQ_ERROR,
    SAT_ID,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    ErrorCode,
    register_map,
)

MEM = 4 << 20
#: FF/BP/WU shapes (batch, K, C_out): aligned to every M of the config, and ragged ones.
SHAPES = [(8, 64, 32), (5, 37, 13), (3, 8, 40)]
NM_SET = SATConfig().nm_set


def bits(x: np.ndarray) -> np.ndarray:
    return numerics.fp32_bits(x)


def device(fmt: str = "fp16", **kw) -> SATDevice:
    cfg = SATConfig(fmt=fmt)
    return SATDevice(ModelTransport(cfg, MEM, **kw), cfg)


def operands(fmt: str, batch: int, k: int, c_out: int, seed: int = 0):
    """Quantized activations/gradients and FP32 weights with a wide exponent range and exact ties."""
    rng = np.random.default_rng(seed)
    x = numerics.quantize(rng.standard_normal((batch, k)) * rng.choice([1e-3, 1.0, 30.0], (batch, k)), fmt)
    dy = numerics.quantize(rng.standard_normal((batch, c_out)), fmt)
    w = rng.standard_normal((c_out, k)).astype(np.float32)
    w[0, :4] = 0.5  # ties inside a group: the lower index must win on both sides
    return x, dy, w


# ----------------------------------------------------------------------------------------------------------
# bit-exact GEMMs


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_ff_bp_wu_equal_numerics(fmt, shape):
    batch, k, c_out = shape
    x, dy, w = operands(fmt, *shape)
    dev = device(fmt)
    xt, dyt, wt = dev.write_tensor(x), dev.write_tensor(dy), dev.upload_weights_dense(w)
    wq = numerics.quantize(w, fmt)
    y = dev.read_tensor(dev.ff(xt, wt))
    np.testing.assert_array_equal(bits(y), bits(numerics.matmul(x, wq.T, fmt)))
    dx = dev.read_tensor(dev.bp(dyt, wt))
    np.testing.assert_array_equal(bits(dx), bits(numerics.matmul(dy, wq, fmt)))
    dw = dev.read_tensor(dev.wu(dyt, xt))
    np.testing.assert_array_equal(bits(dw), bits(numerics.matmul(dy.T, x, fmt)))
    assert dw.shape == (c_out, k) and y.shape == (batch, c_out) and dx.shape == (batch, k)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("nm", NM_SET, ids=lambda p: f"{p[0]}of{p[1]}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sparse_ff_bp_equal_numerics(fmt, nm, shape):
    n, m = nm
    x, dy, w = operands(fmt, *shape, seed=n * 16 + m)
    dev = device(fmt)
    xt, dyt = dev.write_tensor(x), dev.write_tensor(dy)
    ff_op, bp_op = nmformat.compress_ff(w, n, m), nmformat.compress_bp(w, n, m)
    y = dev.read_tensor(dev.ff(xt, dev.upload_weights(w, n, m, "ff")))
    np.testing.assert_array_equal(bits(y), bits(numerics.matmul_sparse(x, ff_op.values, ff_op.indices, m, fmt)))
    dx = dev.read_tensor(dev.bp(dyt, dev.upload_weights(w, n, m, "bp")))
    np.testing.assert_array_equal(bits(dx), bits(numerics.matmul_sparse(dy, bp_op.values, bp_op.indices, m, fmt)))
    # and the same as the dense GEMM on the pruned weights (the BDWP definition)
    from sat.sw.bdwp import prune

    np.testing.assert_array_equal(bits(y), bits(numerics.matmul(x, numerics.quantize(prune(w, n, m, 1), fmt).T,
                                                                fmt)))


def test_strided_operands_and_result_padding_untouched():
    """A and B stored with padded strides, C written with a padded stride: the gap bytes are not touched."""
    fmt = "fp16"
    rng = np.random.default_rng(3)
    a = numerics.quantize(rng.standard_normal((6, 10)), fmt)   # stored transposed: K x rows
    b = numerics.quantize(rng.standard_normal((7, 10)), fmt)   # stored transposed: cols x K
    dev = device(fmt)
    model: ModelTransport = dev.transport
    model.memory[:] = rng.integers(0, 256, MEM, dtype=np.uint8)
    a_st, b_st, c_st = 64, 32, 48
    a_t = Tensor(dev.alloc(a_st * 10), (10, 6), fmt, a_st)
    b_t = Tensor(dev.alloc(b_st * 7), (7, 10), fmt, b_st)
    c_t = Tensor(dev.alloc(c_st * 6), (6, 7), "fp32", c_st)
    dev.write_tensor(a.T, out=a_t)
    dev.write_tensor(b, out=b_t)
    probe = dev.alloc(64)
    dev.free(probe)
    before = model.memory.copy()
    dev.run([dev.gemm_descriptor(a_t, b_t, c_t, a_trans=True, b_trans=True)])
    np.testing.assert_array_equal(bits(dev.read_tensor(c_t)), bits(numerics.matmul(a, b.T, fmt)))
    changed = np.flatnonzero(before != model.memory)
    in_c = changed[(changed >= c_t.addr) & (changed < c_t.addr + c_t.nbytes)] - c_t.addr
    assert set(in_c // c_st) == set(range(6)) and np.all(in_c % c_st < 4 * 7)
    outside = changed[(changed < c_t.addr) | (changed >= c_t.addr + c_t.nbytes)]
    assert np.all((outside >= probe) & (outside < probe + 64))  # only the command list


def test_command_list_runs_in_order_and_reports_tag_and_counters():
    fmt = "fp16"
    x, dy, w = operands(fmt, 8, 64, 32)
    dev = device(fmt)
    xt, dyt = dev.write_tensor(x), dev.write_tensor(dy)
    wf = dev.upload_weights(w, 2, 8, "ff")
    y, dw = dev.alloc_tensor((8, 32)), dev.alloc_tensor((32, 64))
    descs = [dev.ff_descriptor(xt, wf, y, tag=11), dev.wu_descriptor(dyt, xt, dw, tag=22)]
    res = dev.run(descs)
    assert res.cmd_done == 2 and res.last_tag == 22
    steps_ff = (64 // 8) * 2
    assert res.counters["MACS"] == 8 * 32 * steps_ff + 32 * 64 * 8
    est = [descriptor_counters(d, dev.config) for d in descs]
    assert res.counters["CYCLES"] == sum(e.cycles for e in est)
    assert res.counters["COMPUTE_CYCLES"] == sum(e.busy_cycles for e in est)
    assert res.counters["STALL_CYCLES"] == sum(e.stall_cycles for e in est)
    # the sparse FF issues N/M of the dense FF's steps
    dense = descriptor_counters(descs[0].replace(flags=FLAG_B_TRANS, n=0, m=0, b_stride=128), dev.config)
    assert est[0].busy_cycles * 8 == dense.busy_cycles * 2
    # a second list restarts the counters
    assert dev.run(descs[:1]).counters["MACS"] == 8 * 32 * steps_ff
    ff_op = nmformat.compress_ff(w, 2, 8)
    np.testing.assert_array_equal(bits(dev.read_tensor(y)), bits(nmformat.matmul_nm(x, ff_op, fmt)))


# ----------------------------------------------------------------------------------------------------------
# errors: code, index, and nothing else touched


def _three_gemms(dev: SATDevice, rng: np.random.Generator):
    """Three valid independent dense GEMMs and their golden results."""
    tensors, descs, expect = [], [], []
    for i in range(3):
        a = numerics.quantize(rng.standard_normal((4, 16)), dev.config.fmt)
        b = numerics.quantize(rng.standard_normal((16, 8)), dev.config.fmt)
        at, bt, ct = dev.write_tensor(a), dev.write_tensor(b), dev.alloc_tensor((4, 8))
        tensors.append(ct)
        descs.append(dev.gemm_descriptor(at, bt, ct, tag=100 + i))
        expect.append(numerics.matmul(a, b, dev.config.fmt))
    return tensors, descs, expect


def _bad_variants(d: GemmDescriptor, dev: SATDevice) -> dict[str, tuple[GemmDescriptor, ErrorCode]]:
    end = dev.memory_bytes
    return {
        "opcode": (d.replace(opcode=7), ErrorCode.BAD_OPCODE),
        "reserved-flag": (d.replace(flags=0x40), ErrorCode.BAD_FLAGS),
        "sparse+b_trans": (d.replace(flags=FLAG_SPARSE | FLAG_B_TRANS, n=2, m=8, b_stride=0, b_addr=0),
                           ErrorCode.BAD_FLAGS),
        "nm-not-built": (d.replace(flags=FLAG_SPARSE, n=1, m=2, b_stride=0, b_addr=0), ErrorCode.NM_UNSUPPORTED),
        "nm-3of8": (d.replace(flags=FLAG_SPARSE, n=3, m=8, b_stride=0, b_addr=0), ErrorCode.NM_UNSUPPORTED),
        "dense-with-nm": (d.replace(n=2, m=8), ErrorCode.NM_UNSUPPORTED),
        "zero-rows": (d.replace(rows=0), ErrorCode.BAD_SHAPE),
        "zero-red": (d.replace(red=0), ErrorCode.BAD_SHAPE),
        "oversized-cols": (d.replace(cols=MAX_DIM + 1), ErrorCode.BAD_SHAPE),
        "short-stride": (d.replace(a_stride=2), ErrorCode.BAD_SHAPE),
        "misaligned-a": (d.replace(a_addr=d.a_addr + 1), ErrorCode.BAD_ADDRESS),
        "misaligned-c": (d.replace(c_addr=d.c_addr + 2), ErrorCode.BAD_ADDRESS),
        "misaligned-sparse-b": (d.replace(flags=FLAG_SPARSE, n=2, m=8, b_stride=0, b_addr=32),
                                ErrorCode.BAD_ADDRESS),
        "c-past-memory": (d.replace(c_addr=end - 64), ErrorCode.BAD_ADDRESS),
        "a-out-of-range": (d.replace(a_addr=1 << 40), ErrorCode.BAD_ADDRESS),
    }


@pytest.mark.parametrize("case", list(_bad_variants(GemmDescriptor(1, 1, 1, 0, 0, 0, 2, 2, 4),
                                                     device())))
def test_bad_descriptor_stops_the_list_with_its_code(case):
    rng = np.random.default_rng(7)
    dev = device()
    model: ModelTransport = dev.transport
    cs, descs, expect = _three_gemms(dev, rng)
    bad, code = _bad_variants(descs[1], dev)[case]
    with pytest.raises(DescriptorError) as host_check:
        bad.validate(dev.config, dev.memory_bytes)
    assert host_check.value.code == code  # the hardware's code is validate()'s code
    # command list goes where the allocator puts the next 192 bytes
    probe = dev.alloc(3 * 64, 64)
    dev.free(probe)
    model.memory[MEM // 2:] = rng.integers(0, 256, MEM // 2, dtype=np.uint8)
    before = model.memory.copy()
    with pytest.raises(SATDeviceError) as err:
        dev.run([descs[0], bad, descs[2]])
    assert err.value.code == code and err.value.index == 1
    assert code.name in str(err.value) and "descriptor 1" in str(err.value)
    assert dev.read_reg("STATUS") == STATUS_ERROR
    assert dev.read_reg("CMD_DONE") == 1 and dev.read_reg("LAST_TAG") == 100
    np.testing.assert_array_equal(bits(dev.read_tensor(cs[0])), bits(expect[0]))
    changed = np.flatnonzero(before != model.memory)
    c0 = range(cs[0].addr, cs[0].addr + cs[0].nbytes)
    cmd = range(probe, probe + 3 * 64)
    assert all(int(i) in c0 or int(i) in cmd for i in changed), "bytes outside C0 and the list were written"
    assert model.executed == 1


def test_axi_errors_on_fetch_operand_read_and_result_write():
    rng = np.random.default_rng(8)
    for target, code in (("a", ErrorCode.AXI_READ), ("c", ErrorCode.AXI_WRITE)):
        dev = device()
        model: ModelTransport = dev.transport
        cs, descs, _ = _three_gemms(dev, rng)
        addr = descs[2].a_addr if target == "a" else descs[2].c_addr
        model.inject_axi_error(addr, 2)
        before = model.memory.copy()
        with pytest.raises(SATDeviceError) as err:
            dev.run(descs)
        assert (err.value.code, err.value.index) == (code, 2)
        assert np.array_equal(before[cs[2].addr:cs[2].addr + cs[2].nbytes],
                              model.memory[cs[2].addr:cs[2].addr + cs[2].nbytes])
    # a command list that runs off the end of device memory: the second fetch fails
    model = ModelTransport(SATConfig(), 4096)
    dev = SATDevice(model)
    a, b, c = (dev.alloc_tensor((1, 1), "fp16"), dev.alloc_tensor((1, 1), "fp16"), dev.alloc_tensor((1, 1)))
    model.dma_write(4096 - 64, dev.gemm_descriptor(a, b, c, tag=5).encode())
    for name, value in (("CMD_ADDR_LO", 4096 - 64), ("CMD_ADDR_HI", 0), ("CMD_COUNT", 2), ("CONTROL", CONTROL_START)):
        dev.write_reg(name, value)
    assert dev.read_reg("STATUS") == STATUS_ERROR
    assert (dev.read_reg("ERROR_CODE"), dev.read_reg("ERROR_INDEX")) == (ErrorCode.AXI_READ, 1)
    assert (dev.read_reg("CMD_DONE"), dev.read_reg("LAST_TAG")) == (1, 5)


@pytest.mark.parametrize("addr,count", [(0x1000, 0), (0x1020, 1)])
def test_bad_count_or_misaligned_list(addr, count):
    dev = device()
    for name, value in (("CMD_ADDR_LO", addr), ("CMD_ADDR_HI", 0), ("CMD_COUNT", count), ("IRQ_ENABLE", 3),
                        ("CONTROL", CONTROL_START)):
        dev.write_reg(name, value)
    assert dev.read_reg("STATUS") == STATUS_ERROR
    assert (dev.read_reg("ERROR_CODE"), dev.read_reg("ERROR_INDEX")) == (ErrorCode.BAD_COUNT, 0)
    assert dev.read_reg("IRQ_STATUS") == IRQ_ERROR and dev.transport.wait_irq(0)
    assert dev.transport.executed == 0


def test_start_while_busy_is_refused_without_disturbing_the_list():
    rng = np.random.default_rng(9)
    dev = device(execute_on_start=False)
    model: ModelTransport = dev.transport
    cs, descs, expect = _three_gemms(dev, rng)
    addr = dev.alloc(3 * 64)
    model.dma_write(addr, encode_list(descs))
    for name, value in (("CMD_ADDR_LO", addr), ("CMD_ADDR_HI", 0), ("CMD_COUNT", 3), ("IRQ_ENABLE", 3),
                        ("CONTROL", CONTROL_START)):
        dev.write_reg(name, value)
    assert dev.read_reg("STATUS") == STATUS_BUSY and not model.wait_irq(0)
    dev.write_reg("CMD_COUNT", 1)  # a second START with another list must not change the running one
    dev.write_reg("CONTROL", CONTROL_START)
    assert dev.read_reg("STATUS") == STATUS_BUSY | STATUS_ERROR
    assert dev.read_reg("ERROR_CODE") == ErrorCode.BUSY and dev.read_reg("IRQ_STATUS") == IRQ_ERROR
    model.complete()
    assert dev.read_reg("STATUS") == STATUS_DONE | STATUS_ERROR
    assert dev.read_reg("CMD_DONE") == 3 and dev.read_reg("LAST_TAG") == 102
    for c, e in zip(cs, expect, strict=True):
        np.testing.assert_array_equal(bits(dev.read_tensor(c)), bits(e))
    dev.write_reg("CONTROL", CONTROL_CLEAR)
    assert (dev.read_reg("STATUS"), dev.read_reg("ERROR_CODE")) == (0, 0)


def test_abort_stops_a_pending_list():
    rng = np.random.default_rng(10)
    dev = device(execute_on_start=False)
    model: ModelTransport = dev.transport
    cs, descs, _ = _three_gemms(dev, rng)
    before = model.memory.copy()
    t = threading.Timer(0.05, dev.abort)
    t.start()
    with pytest.raises(SATDeviceError) as err:
        dev.run(descs, timeout_s=5)
    t.join()
    assert (err.value.code, err.value.index) == (ErrorCode.ABORTED, 0)
    for c in cs:
        assert np.array_equal(before[c.addr:c.addr + c.nbytes], model.memory[c.addr:c.addr + c.nbytes])


def test_interrupt_from_another_thread_completes_the_run():
    rng = np.random.default_rng(11)
    dev = device(execute_on_start=False)
    cs, descs, expect = _three_gemms(dev, rng)
    t = threading.Timer(0.05, dev.transport.complete)
    t.start()
    res = dev.run(descs, timeout_s=5)
    t.join()
    assert res.cmd_done == 3 and res.last_tag == 102
    np.testing.assert_array_equal(bits(dev.read_tensor(cs[1])), bits(expect[1]))
    assert dev.read_reg("IRQ_STATUS") == 0  # run() acknowledged the interrupt


@pytest.mark.parametrize("use_irq", [True, False])
def test_timeout_raises_with_register_dump(use_irq):
    rng = np.random.default_rng(12)
    cfg = SATConfig()
    dev = SATDevice(ModelTransport(cfg, MEM, execute_on_start=False), cfg, use_irq=use_irq, poll_interval_s=0.005)
    _, descs, _ = _three_gemms(dev, rng)
    with pytest.raises(SATTimeout) as err:
        dev.run(descs, timeout_s=0.05)
    regs = err.value.registers
    assert regs["STATUS"] == STATUS_BUSY and regs["CMD_COUNT"] == 3 and regs["ID"] == SAT_ID
    msg = str(err.value)
    for name in register_map(cfg).by_name:
        assert name in msg
    assert "CMD_DONE=0" in msg and ("interrupt" in msg) == use_irq
    # the list stays running and allocated; waiting again after the interrupt finishes it
    pending = dev.pending
    assert pending is not None and pending.addr == regs["CMD_ADDR_LO"] | regs["CMD_ADDR_HI"] << 32
    with pytest.raises(SATError, match="still running"):
        dev.start(descs)
    dev.transport.complete()
    res = dev.wait(pending, timeout_s=1)
    assert res.cmd_done == 3 and dev.pending is None
    with pytest.raises(SATMemoryError, match="double free"):
        dev.free(pending.addr)  # wait() released the list
    with pytest.raises(SATError, match="not running"):
        dev.wait(pending)


def test_host_transfers_overlap_a_running_list():
    """start() returns while the core works; uploads go on meanwhile; wait() collects the result."""
    rng = np.random.default_rng(14)
    dev = device(execute_on_start=False)
    cs, descs, expect = _three_gemms(dev, rng)
    pending = dev.start(descs)
    assert dev.read_reg("STATUS") == STATUS_BUSY
    w = rng.standard_normal((16, 32)).astype(np.float32)
    ws = dev.upload_weights(w, 2, 8, "ff")  # next layer's weights go up while the list runs
    threading.Timer(0.02, dev.transport.complete).start()
    assert dev.wait(pending, timeout_s=5).last_tag == 102
    for c, e in zip(cs, expect, strict=True):
        np.testing.assert_array_equal(bits(dev.read_tensor(c)), bits(e))
    x = numerics.quantize(rng.standard_normal((4, 32)), "fp16")
    dev.transport.execute_on_start = True
    y = dev.read_tensor(dev.ff(dev.write_tensor(x), ws))
    np.testing.assert_array_equal(bits(y), bits(nmformat.matmul_nm(x, nmformat.compress_ff(w, 2, 8), "fp16")))


# ----------------------------------------------------------------------------------------------------------
# registers, identity, memory


def test_register_access_rules():
    model = ModelTransport(SATConfig(), 4096)
    rm = register_map(model.config)
    with pytest.raises(TransportError, match="multiples of 4"):
        model.read32(0x26)
    with pytest.raises(TransportError, match="multiples of 4"):
        model.write32(-4, 1)
    assert model.read32(rm.offset("CONTROL")) == 0
    model.write32(rm.offset("ID"), 0)
    assert model.read32(rm.offset("ID")) == SAT_ID
    model.write32(rm.offset("SCRATCH"), 0xDEADBEEF)
    assert model.read32(rm.offset("SCRATCH")) == 0xDEADBEEF
    model._regs[rm.offset("IRQ_STATUS")] = IRQ_DONE | IRQ_ERROR
    model.write32(rm.offset("IRQ_STATUS"), IRQ_DONE)
    assert model.read32(rm.offset("IRQ_STATUS")) == IRQ_ERROR
    assert not model.wait_irq(0)
    model.write32(rm.offset("IRQ_ENABLE"), IRQ_ERROR)
    assert model.wait_irq(0)
    model._counters["MACS"] = 0x1_2345_6789
    assert model.read32(rm.offset("MACS_LO")) == 0x2345_6789
    model._counters["MACS"] = 0x7_0000_0000
    assert model.read32(rm.offset("MACS_HI")) == 1  # latched by the _LO read
    with pytest.raises(AxiError, match="DECERR"):
        model.dma_read(4000, 100)


def test_undecoded_offsets_read_zero_and_ignore_writes():
    """Offsets outside the register map answer like the RTL: OKAY, read 0, writes change nothing (the XDMA driver
    reads BAR0 + 0x2000 and + 0x3000 on every load; an SLVERR there is a PCIe completer abort)."""
    model = ModelTransport(SATConfig(), 4096)
    rm = register_map(model.config)
    mapped = {r.offset for r in rm.registers}
    holes = [o for o in range(0, rm.size, 4) if o not in mapped]
    probes = holes + [rm.size, 0x2000, 0x3000, 0x2000 + rm.offset("SCRATCH"), 0xFFFFFFFC]
    assert len(holes) > 10
    model.write32(rm.offset("SCRATCH"), 0x1234)
    before = {r.name: model.read32(r.offset) for r in rm.registers}
    for offset in probes:
        assert model.read32(offset) == 0, hex(offset)
        model.write32(offset, 0xFFFFFFFF)
        assert model.read32(offset) == 0, hex(offset)
    assert {r.name: model.read32(r.offset) for r in rm.registers} == before
    assert not model.wait_irq(0) and model.executed == 0
    # the driver opens a device whose probe of 0x2000/0x3000 comes back as 0, as the XDMA driver's does
    dev = SATDevice(model)
    assert dev.transport.read32(0x2000) == 0 == dev.transport.read32(0x3000)


def test_interrupt_events_are_rising_edges():
    """As XDMA with MSI: one event per rising edge of IRQ_STATUS & IRQ_ENABLE, not queued, consumed by wait_irq;
    no new event while the line stays high."""
    model = ModelTransport(SATConfig(), 4096)
    rm = register_map(model.config)
    model._regs[rm.offset("IRQ_STATUS")] = IRQ_DONE
    assert not model.wait_irq(0)                        # enable still 0: the line is low
    model.write32(rm.offset("IRQ_ENABLE"), IRQ_DONE | IRQ_ERROR)
    assert model.wait_irq(0) and not model.wait_irq(0)   # the edge, consumed once
    model._regs[rm.offset("IRQ_STATUS")] |= IRQ_ERROR
    model.write32(rm.offset("SCRATCH"), 1)               # line stays high: no edge
    assert not model.wait_irq(0)
    model.write32(rm.offset("IRQ_STATUS"), IRQ_DONE)     # still high (ERROR)
    assert not model.wait_irq(0)
    model.write32(rm.offset("IRQ_STATUS"), IRQ_ERROR)    # low
    model.write32(rm.offset("CMD_COUNT"), 0)
    model.write32(rm.offset("CONTROL"), CONTROL_START)   # BAD_COUNT: IRQ_STATUS.ERROR, a new edge
    assert model.wait_irq(0)


def test_mid_list_irq_descriptor_does_not_stall_wait():
    """A descriptor with FLAG_IRQ first in a list raises the line; the end of the list must still wake the host:
    SATDevice acknowledges after each wake, so the end makes a new edge. Without that, wait() would sleep its
    whole timeout (here 30 s) while the card finished after 0.2 s."""
    rng = np.random.default_rng(13)
    dev = device(execute_on_start=False)
    model: ModelTransport = dev.transport
    cs, descs, expect = _three_gemms(dev, rng)
    descs[0] = descs[0].replace(flags=descs[0].flags | FLAG_IRQ)
    pending = dev.start(descs)

    def card():
        model.complete(descriptors=1)   # descriptor 0 ends: IRQ_STATUS.DONE, the line rises
        time.sleep(0.2)
        model.complete()                # the rest of the list

    worker = threading.Thread(target=card)
    start = time.monotonic()
    worker.start()
    res = dev.wait(pending, timeout_s=30)
    elapsed = time.monotonic() - start
    worker.join()
    assert res.cmd_done == 3 and res.last_tag == 102
    assert elapsed < 10, f"wait() took {elapsed:.1f} s of its 30 s timeout: the end of the list did not wake it"
    for c, e in zip(cs, expect, strict=True):
        np.testing.assert_array_equal(bits(dev.read_tensor(c)), bits(e))


def test_complete_runs_part_of_a_list():
    rng = np.random.default_rng(14)
    dev = device(execute_on_start=False)
    model: ModelTransport = dev.transport
    _, descs, _ = _three_gemms(dev, rng)
    descs[1] = descs[1].replace(flags=descs[1].flags | FLAG_IRQ)
    pending = dev.start(descs)
    model.complete(descriptors=1)
    assert (dev.read_reg("STATUS"), dev.read_reg("CMD_DONE"), dev.read_reg("IRQ_STATUS")) == (STATUS_BUSY, 1, 0)
    model.complete(descriptors=1)
    assert (dev.read_reg("STATUS"), dev.read_reg("CMD_DONE")) == (STATUS_BUSY, 2)
    assert dev.read_reg("IRQ_STATUS") == IRQ_DONE and model.wait_irq(0)   # the FLAG_IRQ descriptor
    model.complete(descriptors=5)
    assert (dev.read_reg("STATUS"), dev.read_reg("CMD_DONE")) == (STATUS_DONE, 3)
    assert dev.wait(pending, timeout_s=1).cmd_done == 3
    with pytest.raises(ValueError, match="positive integer"):
        model.complete(descriptors=0)


@pytest.mark.parametrize("cfg", [SATConfig(), SATConfig(rows=8, cols=16, fmt="bf16", adder_latency=7),
                                 SATConfig(nm_set=((1, 2), (3, 4), (1, 16), (8, 16)), axi_data_width=128,
                                           axi_addr_width=32)])
def test_open_reconstructs_or_checks_the_config(cfg):
    dev = SATDevice(ModelTransport(cfg, 4096))
    assert dev.config == cfg and dev.config_verified
    SATDevice(ModelTransport(cfg, 4096), cfg)
    other = cfg.replace(fmt="bf16" if cfg.fmt == "fp16" else "fp16")
    with pytest.raises(SATConfigMismatch, match="Program the bitstream built from this SATConfig") as err:
        SATDevice(ModelTransport(cfg, 4096), other)
    assert "CONFIG=" in str(err.value)
    # clock_hz is not in CONFIG: the hash tells
    slow = cfg.replace(clock_hz=100e6)
    assert not SATDevice(ModelTransport(slow, 4096)).config_verified
    with pytest.raises(SATConfigMismatch, match="CONFIG_HASH"):
        SATDevice(ModelTransport(slow, 4096), cfg)


def test_open_rejects_a_core_that_is_not_sat():
    class Dead(ModelTransport):
        def read32(self, offset: int) -> int:
            return 0xFFFFFFFF

    with pytest.raises(SATConfigMismatch, match="does not answer"):
        SATDevice(Dead())


def test_allocator_alignment_free_and_out_of_memory():
    dev = SATDevice(ModelTransport(SATConfig(), 1 << 16))
    a = dev.alloc(10, 64)
    b = dev.alloc(100, 4096)
    c = dev.alloc(1, 2)
    assert a % 64 == 0 and b % 4096 == 0 and c % 2 == 0 and len({a, b, c}) == 3
    assert not (a < b < a + 10) and not (b <= c < b + 100)
    dev.free(b)
    assert dev.alloc(100, 4096) == b
    with pytest.raises(SATMemoryError, match="double free"):
        dev.free(b + 1)
    with pytest.raises(SATMemoryError) as err:
        dev.alloc(1 << 16)
    left = dev.free_bytes
    assert f"{left} of {1 << 16} bytes are free" in str(err.value)
    for addr in (a, b, c):
        dev.free(addr)
    assert dev.free_bytes == 1 << 16 and dev.alloc(1 << 16) == 0


def test_upload_rejects_unbuilt_pattern_and_wrong_format():
    dev = SATDevice(ModelTransport(SATConfig(nm_set=((2, 4),)), 1 << 20))
    w = np.ones((8, 16), np.float32)
    with pytest.raises(ValueError, match="2:8 is not built"):
        dev.upload_weights(w, 2, 8)
    with pytest.raises(ValueError, match="built for fp16 operands, not bf16"):
        dev.write_tensor(w, dtype="bf16")
    x = dev.write_tensor(np.ones((2, 16)))
    with pytest.raises(ValueError, match="FF needs the FF copy"):
        dev.ff(x, dev.upload_weights(w, 2, 4, "bp"))


def test_transports_satisfy_the_protocol_and_gemm_allocates_c():
    from sat.sw.driver import Transport

    dev = device()
    assert isinstance(dev.transport, Transport)
    rng = np.random.default_rng(13)
    a = numerics.quantize(rng.standard_normal((5, 12)), "fp16")
    w = numerics.quantize(rng.standard_normal((9, 12)), "fp16")
    c = dev.gemm(dev.write_tensor(a), dev.write_tensor(w), b_trans=True)
    assert c.shape == (5, 9) and c.dtype == "fp32"
    np.testing.assert_array_equal(bits(dev.read_tensor(c)), bits(numerics.matmul(a, w.T, "fp16")))


def test_malformed_packed_stream_is_reported_not_computed():
    dev = device()
    model: ModelTransport = dev.transport
    x = dev.write_tensor(np.ones((2, 16)))
    ws = dev.upload_weights(np.arange(64, dtype=np.float32).reshape(4, 16), 2, 8, "ff")
    model.memory[ws.addr] |= 0x08  # index nibble 8 or more in a group of M = 8
    y = dev.alloc_tensor((2, 4))
    before = model.memory.copy()
    with pytest.raises(SATDeviceError) as err:
        dev.ff(x, ws, y)
    assert (err.value.code, err.value.index) == (ErrorCode.BAD_OPERAND, 0)
    assert "malformed packed N:M operand" in model.last_error_message
    assert np.array_equal(before[y.addr:y.addr + y.nbytes], model.memory[y.addr:y.addr + y.nbytes])
