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
    FLAG_SPARSE,
    MAX_DIM,
    DescriptorError,
    GemmDescriptor,
    decode_list,
    encode_list,
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
       flags=st.integers(0, 255), n=st.integers(0, 15), m=st.integers(0, 15), tag=st.integers(0, 2**32 - 1))
def test_encode_decode_round_trip(rows, red, cols, addrs, strides, flags, n, m, tag):
    d = GemmDescriptor(rows, red, cols, *addrs, *strides, n=n, m=m, flags=flags, tag=tag)
    raw = d.encode()
    assert len(raw) == DESCRIPTOR_BYTES
    assert GemmDescriptor.decode(raw) == d


def test_byte_layout_matches_the_documented_offsets():
    d = dense(flags=FLAG_SPARSE, n=2, m=8, b_stride=0, tag=0xABCD1234, b_addr=0x4000)
    raw = d.encode()
    assert raw[0] == 1 and raw[1] == FLAG_SPARSE and raw[2] == 0x82
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


@pytest.mark.parametrize("change, code", [
    ({"opcode": 0}, ErrorCode.BAD_OPCODE),
    ({"flags": 0x10}, ErrorCode.BAD_FLAGS),
    ({"flags": FLAG_SPARSE | FLAG_B_TRANS, "n": 2, "m": 8, "b_addr": 0x4000}, ErrorCode.BAD_FLAGS),
    ({"flags": FLAG_SPARSE, "n": 1, "m": 8, "b_addr": 0x4000}, ErrorCode.NM_UNSUPPORTED),
    ({"n": 2, "m": 4}, ErrorCode.NM_UNSUPPORTED),
    ({"rows": 0}, ErrorCode.BAD_SHAPE),
    ({"cols": MAX_DIM + 1}, ErrorCode.BAD_SHAPE),
    ({"a_stride": 8}, ErrorCode.BAD_SHAPE),
    ({"c_addr": 0x3002}, ErrorCode.BAD_ADDRESS),
    ({"flags": FLAG_SPARSE, "n": 2, "m": 8, "b_addr": 0x4010}, ErrorCode.BAD_ADDRESS),
    ({"c_addr": (1 << 20) - 8}, ErrorCode.BAD_ADDRESS),
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
    assert (word & 0xFF, word >> 8 & 0xFF, word >> 16 & 1, word >> 20 & 0xF) == (8, 4, 1, 5)
    bitmap = regs["NM_SET"].reset
    decoded = {(n + 1, 1 << (m_log2 + 1)) for bit in range(32) if bitmap >> bit & 1
               for m_log2, n in [divmod(bit, 8)]}
    assert decoded == set(cfg.nm_set)
    assert regs["CONFIG_HASH"].reset == int(cfg.digest()[:8], 16)
    assert regs.size >= max(r.offset for r in regs.registers) + 4
    assert "`CMD_COUNT`" in regs.markdown()
    with pytest.raises(KeyError, match="no register 'NOPE'"):
        regs["NOPE"]
