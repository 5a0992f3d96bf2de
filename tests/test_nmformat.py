"""Compressed N:M format (sat.sw.nmformat): compression, AXI beat layout, round trips and error cases.

Expectations come from outside the module under test: ``prune`` for the kept values, a naive per-group sort
for the N:M selection, a per-element reference packer written from ``docs/format.md`` for the byte layout,
and hand-computed bytes for one small example.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sat.sw.bdwp import nm_mask, prune
from sat.sw.nmformat import (
    BEAT_BYTES,
    LANES,
    NMOperand,
    compress,
    compress_bp,
    compress_ff,
    pack,
    packed_beats,
    packed_nbytes,
    unpack,
)
from sat.sw.numerics import encode, quantize

PATTERNS = [(1, 4), (2, 4), (2, 8), (1, 8), (4, 8)]
FORMATS = ["fp16", "bf16"]

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_matrix(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """float32 test matrices: continuous, small integers (many magnitude ties), or mostly zero."""
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":
        return rng.integers(-2, 3, shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.8] = 0.0
    return x


def naive_keep(col_group: np.ndarray, n: int) -> list[int]:
    """In-group indices of the n largest |x| (ties to the lower index) of one zero-padded group."""
    order = sorted(range(len(col_group)), key=lambda i: (-abs(float(col_group[i])), i))
    return sorted(order[:n])


def reference_pack(op: NMOperand, fmt: str) -> np.ndarray:
    """Element-by-element packer written from the layout description in docs/format.md."""
    steps = op.groups * op.n
    tiles = -(-op.cols // 32)
    per_tile = steps + -(-steps // 4)
    out = np.zeros(tiles * per_tile * 64, dtype=np.uint8)
    bits = encode(op.values, fmt)
    for j in range(op.cols):
        t, lane = divmod(j, 32)
        for g in range(op.groups):
            for s in range(op.n):
                step = g * op.n + s
                block, p = divmod(step, 4)
                ibeat = t * per_tile + block * 5
                vbeat = ibeat + 1 + p
                word = int(bits[g, s, j])
                out[vbeat * 64 + 2 * lane] = word & 0xFF
                out[vbeat * 64 + 2 * lane + 1] = word >> 8
                bit = (p * 32 + lane) * 4
                out[ibeat * 64 + bit // 8] |= int(op.indices[g, s, j]) << (bit % 8)
    return out


@st.composite
def operands(draw, max_k: int = 40, max_cols: int = 70):
    n, m = draw(st.sampled_from(PATTERNS))
    k = draw(st.integers(1, max_k))
    cols = draw(st.integers(1, max_cols))
    kind = draw(st.sampled_from(["normal", "ties", "sparse"]))
    seed = draw(st.integers(0, 2**32 - 1))
    b = random_matrix(np.random.default_rng(seed), (k, cols), kind)
    return b, n, m


# --- compression ------------------------------------------------------------------------------------------


@SETTINGS
@given(operands())
def test_compress_to_dense_equals_prune(case):
    b, n, m = case
    op = compress(b, n, m)
    assert op.shape == b.shape and (op.k, op.cols, op.n, op.m) == (*b.shape, n, m)
    assert op.values.dtype == np.float32 and op.indices.dtype == np.uint8
    assert op.values.shape == op.indices.shape == (-(-b.shape[0] // m), n, b.shape[1])
    dense = op.to_dense()
    assert dense.dtype == np.float32 and dense.shape == b.shape
    assert np.array_equal(dense.view(np.uint32), prune(b, n, m, axis=0).view(np.uint32))


@SETTINGS
@given(operands(max_k=20, max_cols=6))
def test_compress_selects_top_n_with_low_index_ties(case):
    """Against a naive per-group sort: n ascending slots with the n largest |b|, ties to the lower index."""
    b, n, m = case
    op = compress(b, n, m)
    k_pad = op.groups * m
    padded = np.zeros((k_pad, b.shape[1]), np.float32)
    padded[:b.shape[0]] = b
    for g in range(op.groups):
        for j in range(b.shape[1]):
            grp = padded[g * m:(g + 1) * m, j]
            want = naive_keep(grp, n)
            assert op.indices[:, :, j][g].tolist() == want
            assert op.values[g, :, j].tolist() == [float(grp[i]) for i in want]


def test_compress_fills_short_groups_with_zeros_at_lowest_indices():
    # one group of 8 with a single nonzero at index 5, 4:8 -> slots 0, 1, 2 (zeros) and 5
    b = np.zeros((8, 1), np.float32)
    b[5, 0] = -3.0
    op = compress(b, 4, 8)
    assert op.indices[0, :, 0].tolist() == [0, 1, 2, 5]
    assert op.values[0, :, 0].tolist() == [0.0, 0.0, 0.0, -3.0]
    # ragged K: K=5 at 2:4 -> last group has one real row (4) and padding rows 5..7
    b = np.arange(1, 6, dtype=np.float32).reshape(5, 1)
    op = compress(b, 2, 4)
    assert op.indices[:, :, 0].tolist() == [[2, 3], [0, 1]]
    assert op.values[:, :, 0].tolist() == [[3.0, 4.0], [5.0, 0.0]]


def test_compress_with_mask_fills_and_keeps_only_masked_values():
    b = np.array([[4.0], [3.0], [2.0], [1.0]], np.float32)
    mask = np.array([[False], [False], [True], [False]])
    op = compress(b, 2, 4, mask=mask)
    # the masked element 2 plus a zero filler at the lowest unmasked index 0 (whose b value 4.0 is dropped)
    assert op.indices[0, :, 0].tolist() == [0, 2]
    assert op.values[0, :, 0].tolist() == [0.0, 2.0]
    assert np.array_equal(op.to_dense(), np.where(mask, b, 0))


def test_ff_and_bp_copies():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 20)).astype(np.float32)  # C_out x K
    ff = compress_ff(w, 2, 4)
    bp = compress_bp(w, 2, 4)
    assert ff.shape == (20, 12) and bp.shape == (12, 20)
    assert np.array_equal(ff.to_dense(), prune(w, 2, 4, axis=1).T)
    assert np.array_equal(bp.to_dense(), prune(w, 2, 4, axis=0))
    # nested BDWP: the BP mask derived from the FF-pruned weights
    w_ff = prune(w, 2, 4, axis=1)
    nested = compress_bp(w_ff, 2, 4)
    assert np.array_equal(nested.to_dense(), prune(w_ff, 2, 4, axis=0))
    # an explicit mask selects values of w itself
    mask = nm_mask(w_ff, 2, 4, axis=0)
    assert np.array_equal(compress_bp(w, 2, 4, mask=mask).to_dense(), np.where(mask, w, 0))


@pytest.mark.parametrize("n, m", [(1, 1), (1, 2), (3, 16), (8, 16), (16, 16)])
@pytest.mark.parametrize("fmt", FORMATS)
def test_other_patterns_round_trip(n, m, fmt):
    """Patterns beyond the default set, incl. M = 16 (the largest a 4-bit index field holds)."""
    b = random_matrix(np.random.default_rng(m * 100 + n), (37, 45), "ties")
    op = compress(b, n, m)
    assert np.array_equal(op.to_dense(), prune(b, n, m, axis=0))
    data = pack(op, fmt)
    assert np.array_equal(data, reference_pack(op, fmt))
    assert np.array_equal(pack(unpack(data, n, m, 37, 45, fmt), fmt), data)


# --- packing ----------------------------------------------------------------------------------------------


@SETTINGS
@given(operands(max_k=70, max_cols=100), st.sampled_from(FORMATS))
def test_pack_unpack_round_trip(case, fmt):
    b, n, m = case
    k, cols = b.shape
    op = compress(b, n, m)
    data = pack(op, fmt)
    assert data.dtype == np.uint8 and data.ndim == 1
    assert data.size % BEAT_BYTES == 0 and data.size == packed_nbytes(n, m, k, cols)
    assert data.size // BEAT_BYTES == packed_beats(n, m, k, cols)
    back = unpack(data, n, m, k, cols, fmt)
    assert (back.n, back.m, back.k, back.cols) == (n, m, k, cols)
    assert np.array_equal(back.indices, op.indices)
    assert np.array_equal(encode(back.values, fmt), encode(op.values, fmt))
    assert np.array_equal(back.to_dense(), quantize(prune(b, n, m, axis=0), fmt))
    assert np.array_equal(pack(back, fmt), data)
    assert np.array_equal(unpack(data.tobytes(), n, m, k, cols, fmt).indices, op.indices)


@settings(max_examples=25, deadline=None)
@given(operands(max_k=24, max_cols=40), st.sampled_from(FORMATS))
def test_pack_matches_reference_layout(case, fmt):
    b, n, m = case
    op = compress(b, n, m)
    assert np.array_equal(pack(op, fmt), reference_pack(op, fmt))


@pytest.mark.parametrize("fmt, three, minus_one", [("fp16", 0x4200, 0xBC00), ("bf16", 0x4040, 0xBF80)])
def test_pack_hand_computed_example(fmt, three, minus_one):
    b = np.array([0, 3, 0, 0, -1, 0, 0, 0.5], np.float32).reshape(8, 1)
    data = pack(compress(b, 2, 8), fmt)
    want = np.zeros(3 * 64, np.uint8)  # 2 steps -> 1 index beat + 2 value beats
    want[0] = 0x01  # step 0, lane 0: index 1
    want[16] = 0x04  # step 1, lane 0 starts at bit (1*32 + 0)*4 = 128: index 4
    want[64:66] = [three & 0xFF, three >> 8]
    want[128:130] = [minus_one & 0xFF, minus_one >> 8]
    assert np.array_equal(data, want)


def test_beat_counts():
    # 2:8, K=64 -> 8 groups, 16 steps -> 4 index beats + 16 value beats per tile; 33 cols -> 2 tiles
    assert packed_beats(2, 8, 64, 33) == 2 * 20
    assert packed_beats(1, 4, 5, 32) == 2 + 1
    assert LANES == 32 and BEAT_BYTES == 64


# --- corrupt input ----------------------------------------------------------------------------------------


def _packed(n=2, m=4, k=12, cols=5, fmt="fp16", seed=0):
    b = np.random.default_rng(seed).standard_normal((k, cols)).astype(np.float32)
    return pack(compress(b, n, m), fmt).copy(), (n, m, k, cols, fmt)


def _set_index(data, step, lane, value):
    bit = ((step % 4) * 32 + lane) * 4
    byte = (step // 4) * 5 * 64 + bit // 8
    shift = bit % 8
    data[byte] = (int(data[byte]) & ~(0xF << shift) & 0xFF) | (value << shift)


def test_unpack_rejects_index_out_of_range():
    data, shape = _packed(2, 4)
    _set_index(data, 1, 0, 4)
    with pytest.raises(ValueError, match=r"index 4 .* out of range: indices must lie in \[0, 4\)"):
        unpack(data, *shape)


def test_unpack_rejects_duplicate_and_descending_indices():
    data, shape = _packed(2, 4)
    first = int(data[0] & 0xF)
    dup = data.copy()
    _set_index(dup, 1, 0, first)
    with pytest.raises(ValueError, match="duplicate in-group indices"):
        unpack(dup, *shape)
    desc = data.copy()
    _set_index(desc, 0, 0, 3)
    _set_index(desc, 1, 0, 1)
    with pytest.raises(ValueError, match="descending in-group indices 3, 1"):
        unpack(desc, *shape)


def test_unpack_rejects_wrong_sizes():
    data, shape = _packed()
    with pytest.raises(ValueError, match="not a whole number of 64-byte beats"):
        unpack(data[:-1], *shape)
    with pytest.raises(ValueError, match="beats but a 12 x 5 operand at 2:4 packs into"):
        unpack(data[:-64], *shape)
    with pytest.raises(ValueError, match="beats but"):
        unpack(np.concatenate([data, np.zeros(64, np.uint8)]), *shape)
    with pytest.raises(ValueError, match="1-D uint8"):
        unpack(data.view(np.uint16), *shape)


def test_unpack_rejects_nonzero_padding():
    # 12 x 5 at 2:4: 3 groups -> 6 steps (block 1 uses 2 of 4), lanes 5..31 are padding
    data, shape = _packed()
    lane = data.copy()
    lane[64 + 2 * 7] = 1  # value beat of step 0, lane 7
    with pytest.raises(ValueError, match=r"padding lanes \(columns 5..31\)"):
        unpack(lane, *shape)
    lane_idx = data.copy()
    _set_index(lane_idx, 0, 9, 1)
    with pytest.raises(ValueError, match="padding lanes"):
        unpack(lane_idx, *shape)
    step_idx = data.copy()
    _set_index(step_idx, 7, 0, 2)  # step 7 does not exist (6 steps)
    with pytest.raises(ValueError, match="unused steps"):
        unpack(step_idx, *shape)


def test_unpack_rejects_nonzero_value_in_padding_rows():
    # K=5 at 2:4: group 1 has real row 4 and padding rows 5..7; slot 1 points into the padding
    b = np.arange(1, 6, dtype=np.float32).reshape(5, 1)
    data = pack(compress(b, 2, 4), "fp16").copy()
    # steps: 0,1 (group 0), 2,3 (group 1); step 3 = value beat 4 of block 0
    assert data[4 * 64:4 * 64 + 2].tolist() == [0, 0]
    data[4 * 64 + 1] = 0x3C  # 1.0
    with pytest.raises(ValueError, match=r"zero padding rows 5..7 is nonzero"):
        unpack(data, 2, 4, 5, 1, "fp16")


@settings(max_examples=150, deadline=None)
@given(operands(max_k=30, max_cols=40), st.sampled_from(FORMATS), st.data())
def test_unpack_never_silently_alters_a_corrupted_stream(case, fmt, data):
    """Flip one random bit: unpack either raises ValueError or returns exactly what re-packs to those bytes."""
    b, n, m = case
    k, cols = b.shape
    packed = pack(compress(b, n, m), fmt).copy()
    bit = data.draw(st.integers(0, packed.size * 8 - 1), label="bit")
    packed[bit // 8] ^= np.uint8(1 << (bit % 8))
    try:
        back = unpack(packed, n, m, k, cols, fmt)
    except ValueError:
        return
    assert np.array_equal(pack(back, fmt), packed)


@pytest.mark.parametrize("fmt, word, what", [
    ("fp16", 0x7C01, "non-canonical fp16 NaN"),
    ("bf16", 0x0040, "subnormal bf16"), ("bf16", 0xFF81, "non-canonical bf16 NaN"),
])
def test_unpack_rejects_bit_patterns_pack_never_writes(fmt, word, what):
    data, shape = _packed(fmt=fmt)
    data[64:66] = [word & 0xFF, word >> 8]
    with pytest.raises(ValueError, match=what):
        unpack(data, *shape)


def test_fp16_subnormal_values_round_trip():
    """FP16 subnormal weights are operands like any other (docs/numerics.md): pack keeps them, unpack reads them."""
    rng = np.random.default_rng(11)
    b = (rng.standard_normal((16, 5)) * 2.0**-17).astype(np.float32)   # mostly FP16 subnormals
    op = compress(b, 2, 4)
    packed = pack(op, "fp16")
    back = unpack(packed, 2, 4, 16, 5, "fp16")
    bits = encode(op.values, "fp16")
    assert np.any(((bits & 0x7C00) == 0) & ((bits & 0x3FF) != 0)), "the test needs subnormal values"
    assert np.array_equal(encode(back.values, "fp16"), bits)
    assert np.array_equal(pack(back, "fp16"), packed)
    assert np.all(back.values[bits != 0] != 0), "no subnormal value read back as zero"


@pytest.mark.parametrize("n, m, match", [
    (5, 4, r"N must be between 1 and M \(4\)"), (0, 4, "N must be between"),
    (2, 6, "M must be a power of two"), (2, 32, "at most 16"),
])
def test_invalid_pattern(n, m, match):
    b = np.ones((8, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        compress(b, n, m)
    with pytest.raises(ValueError, match=match):
        unpack(np.zeros(64 * 4, np.uint8), n, m, 8, 2)
    with pytest.raises(ValueError, match=match):
        packed_beats(n, m, 8, 2)


def test_compress_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty 2-D"):
        compress(np.ones(8, np.float32), 2, 4)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        compress(np.ones((0, 3), np.float32), 2, 4)
    with pytest.raises(ValueError, match="NaN"):
        compress(np.full((4, 1), np.nan, np.float32), 2, 4)
    b = np.ones((8, 2), np.float32)
    with pytest.raises(ValueError, match=r"mask has shape \(8, 1\) but b has \(8, 2\)"):
        compress(b, 2, 4, mask=np.ones((8, 1), bool))
    with pytest.raises(ValueError, match="mask must be boolean"):
        compress(b, 2, 4, mask=np.ones((8, 2), np.float32))
    mask = np.zeros((8, 2), bool)
    mask[4:7, 1] = True
    with pytest.raises(ValueError, match=r"keeps 3 elements in group 1 \(rows 4..7\) of column 1, more th"):
        compress(b, 2, 4, mask=mask)
    with pytest.raises(ValueError, match="compress_ff needs a 2-D"):
        compress_ff(np.ones(4), 2, 4)


def test_operand_constructor_validates():
    good = compress(np.arange(16, dtype=np.float32).reshape(8, 2), 2, 4)
    with pytest.raises(ValueError, match=r"shape \(ceil\(k/m\), n, cols\) = \(2, 2, 2\)"):
        NMOperand(good.values[:1], good.indices[:1], 2, 4, 8, 2)
    bad = good.indices.copy()
    bad[0, 1, 0] = bad[0, 0, 0]
    with pytest.raises(ValueError, match="duplicate"):
        NMOperand(good.values, bad, 2, 4, 8, 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        NMOperand(good.values, good.indices, 2, 4, 0, 2)
    with pytest.raises(ValueError, match="indices must be integers"):
        NMOperand(good.values, good.indices.astype(np.float32), 2, 4, 8, 2)
