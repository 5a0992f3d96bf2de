"""Descriptor encoding/validation and the register map: the contract between driver, model and gateware."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat.sw.config import SATConfig
from sat.sw.descriptor import (
    DESCRIPTOR_BYTES,
    FLAG_A_TRANS,
    FLAG_B_TRANS,
    FLAG_NARROW,
    FLAG_SPARSE,
    MAX_DIM,
    DescriptorError,
    GemmDescriptor,
    decode,
    decode_list,
    encode_list,
    result_flags,
)
from sat.sw.nmformat import packed_nbytes
from sat.sw.regmap import SAT_ID, ErrorCode, register_map

CFG = SATConfig(nm_set=((2, 4), (2, 8)))


def dense(**kw) -> GemmDescriptor:
    base = dict(rows=3, red=5, cols=7, a_addr=0x1000, b_addr=0x2000, c_addr=0x3000, a_stride=10, b_stride=14,
                c_stride=28)
    base.update(kw)
    return GemmDescriptor(**base)


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, MAX_DIM), red=st.integers(1, MAX_DIM), cols=st.integers(1, MAX_DIM),
       addrs=st.tuples(*[st.integers(0, 2**64 - 1)] * 3), strides=st.tuples(*[st.integers(0, 2**32 - 1)] * 3),
       flags=st.integers(0, 255), n=st.integers(1, 15), m_log2=st.integers(0, 15), tag=st.integers(0, 2**32 - 1),
       reserved=st.integers(0, 2**72 - 1))
def test_encode_decode_round_trip(rows, red, cols, addrs, strides, flags, n, m_log2, tag, reserved):
    d = GemmDescriptor(rows, red, cols, *addrs, *strides, n=n, m=1 << m_log2, flags=flags, tag=tag,
                       reserved=reserved)
    raw = d.encode()
    assert len(raw) == DESCRIPTOR_BYTES
    assert GemmDescriptor.decode(raw) == d


def test_byte_layout_matches_the_documented_offsets():
    d = dense(flags=FLAG_SPARSE, n=2, m=8, b_stride=0, tag=0xABCD1234, b_addr=0x4000)
    raw = d.encode()
    assert raw[0] == 1 and raw[1] == FLAG_SPARSE and raw[2] == 0x32  # n=2, log2(m)=3
    assert struct.unpack_from("<III", raw, 4) == (3, 5, 7)
    assert struct.unpack_from("<QQQ", raw, 0x10) == (0x1000, 0x4000, 0x3000)
    assert struct.unpack_from("<IIII", raw, 0x28) == (10, 0, 28, 0xABCD1234)
    assert raw[0x38:] == bytes(8)


def test_list_round_trip_and_length_check():
    ds = [dense(tag=i) for i in range(3)]
    assert decode_list(encode_list(ds)) == ds
    with pytest.raises(ValueError, match="multiple of 64"):
        decode_list(bytes(65))


def test_valid_descriptors_pass():
    dense().validate(CFG, memory_bytes=1 << 20)
    dense(flags=FLAG_A_TRANS, a_stride=6).validate(CFG)
    dense(flags=FLAG_B_TRANS, b_stride=10).validate(CFG)
    dense(flags=FLAG_SPARSE, n=2, m=8, b_addr=0x4000, b_stride=0).validate(CFG)
    # narrow results: 2-byte elements, 2-byte aligned address and stride
    narrow = dense(flags=FLAG_NARROW, c_addr=0x3002, c_stride=14)
    narrow.validate(CFG, memory_bytes=1 << 20)
    assert narrow.extents()[2] == ("C", 0x3002, 0x3002 + 2 * 14 + 2 * 7)
    assert decode(narrow.encode()) == narrow and narrow.encode()[1] == 0x10


def test_result_flags():
    assert result_flags("fp32", "fp16") == 0 and result_flags("bf16", "bf16") == FLAG_NARROW
    with pytest.raises(ValueError, match="operand format"):
        result_flags("bf16", "fp16")


@pytest.mark.parametrize("change, code", [
    ({"opcode": 0}, ErrorCode.BAD_OPCODE),
    ({"flags": 0x20}, ErrorCode.BAD_FLAGS),     # RESULT code 2: reserved
    ({"flags": 0x30}, ErrorCode.BAD_FLAGS),     # RESULT code 3: reserved
    ({"flags": 0x40}, ErrorCode.BAD_FLAGS),
    ({"flags": FLAG_NARROW, "c_stride": 13}, ErrorCode.BAD_ADDRESS),
    ({"flags": FLAG_NARROW, "c_stride": 12}, ErrorCode.BAD_SHAPE),      # less than 7 two-byte results
    ({"flags": FLAG_SPARSE | FLAG_B_TRANS, "n": 2, "m": 8, "b_addr": 0x4000}, ErrorCode.BAD_FLAGS),
    ({"flags": FLAG_SPARSE, "n": 1, "m": 8, "b_addr": 0x4000}, ErrorCode.NM_UNSUPPORTED),
    ({"n": 2, "m": 4}, ErrorCode.NM_UNSUPPORTED),
    ({"rows": 0}, ErrorCode.BAD_SHAPE),
    ({"cols": MAX_DIM + 1}, ErrorCode.BAD_SHAPE),
    ({"a_stride": 8}, ErrorCode.BAD_SHAPE),
    ({"c_addr": 0x3002}, ErrorCode.BAD_ADDRESS),
    ({"flags": FLAG_SPARSE, "n": 2, "m": 8, "b_addr": 0x4010, "b_stride": 0}, ErrorCode.BAD_ADDRESS),
    ({"c_addr": (1 << 20) - 8}, ErrorCode.BAD_ADDRESS),
    ({"reserved": 1 << 8}, ErrorCode.BAD_FLAGS),
    ({"flags": FLAG_SPARSE, "n": 2, "m": 8, "b_addr": 0x4000, "b_stride": 64}, ErrorCode.BAD_SHAPE),
])
def test_bad_descriptors_carry_the_hardware_error_code(change, code):
    with pytest.raises(DescriptorError) as e:
        dense(**change).validate(CFG, memory_bytes=1 << 20)
    assert e.value.code == code


def test_sparse_extent_is_the_packed_size():
    d = dense(flags=FLAG_SPARSE, n=2, m=8, b_addr=0x4000, b_stride=0, red=37, cols=40)
    (_, lo, hi), = [e for e in d.extents() if e[0] == "B"]
    assert hi - lo == packed_nbytes(2, 8, 37, 40)


def test_register_map_is_unique_aligned_and_carries_the_build():
    cfg = SATConfig(rows=8, cols=4, fmt="bf16", nm_set=((2, 8), (1, 4)), adder_latency=5)
    regs = register_map(cfg)
    assert all(r.offset % 4 == 0 for r in regs.registers)
    assert regs["ID"].reset == SAT_ID
    word = regs["CONFIG"].reset
    assert (word & 0xFF, word >> 8 & 0xFF, word >> 16 & 1, word >> 20 & 0xF) == (7, 3, 1, 4)
    bitmap = regs["NM_SET_LO"].reset | regs["NM_SET_HI"].reset << 32
    decoded = {(n + 1, 1 << (m_log2 + 1)) for bit in range(64) if bitmap >> bit & 1
               for m_log2, n in [divmod(bit, 16)]}
    assert decoded == set(cfg.nm_set)
    assert regs["CONFIG_HASH"].reset == int(cfg.digest()[:8], 16)
    assert regs.size >= max(r.offset for r in regs.registers) + 4
    assert "`CMD_COUNT`" in regs.markdown()
    with pytest.raises(KeyError, match="no register 'NOPE'"):
        regs["NOPE"]


def test_largest_legal_values_fit_the_identity_registers():
    cfg = SATConfig(rows=256, cols=256, adder_latency=16, nm_set=((15, 16), (1, 2)))
    regs = register_map(cfg, memory_bytes=1 << 40)
    word = regs["CONFIG"].reset
    assert (word & 0xFF, word >> 8 & 0xFF, word >> 20 & 0xF) == (255, 255, 15)
    assert regs["NM_SET_HI"].reset == 1 << (3 * 16 + 14 - 32)
    assert regs["MEM_SIZE_LO"].reset | regs["MEM_SIZE_HI"].reset << 32 == 1 << 40
    assert all(0 <= r.reset < 2**32 for r in regs.registers)


def test_m16_descriptors_encode_and_addresses_respect_the_address_width():
    cfg = SATConfig(nm_set=((2, 16),), axi_addr_width=32)
    d = dense(flags=FLAG_SPARSE, n=2, m=16, b_addr=0x4000, b_stride=0)
    assert GemmDescriptor.decode(d.encode()) == d
    d.validate(cfg)
    with pytest.raises(DescriptorError) as e:
        dense(c_addr=1 << 32).validate(cfg)
    assert e.value.code == ErrorCode.BAD_ADDRESS
