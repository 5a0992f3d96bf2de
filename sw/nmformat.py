"""The compressed N:M weight format shared by the golden model, the tests, the host driver and the DMA.

A GEMM ``Y = A . B`` whose right operand ``B`` (``K x cols``) is N:M-sparse along its rows (the reduction
axis) is stored as an :class:`NMOperand`: for every group ``g`` of ``m`` consecutive rows and every column
``j``, the ``n`` kept values and their in-group indices, in ascending index. ``pack`` / ``unpack`` turn an
operand into the whole 512-bit AXI beats the hardware DMA reads. The layout, the padding rules and the
reasoning behind them are in ``docs/format.md``.

* FF pass, ``Y = X . W_ff^T`` with ``W`` ``C_out x K``: ``compress_ff(W)`` groups along ``K``.
* BP pass, ``dX = dY . W_bp`` with ``W`` ``C_out x K``: ``compress_bp(W)`` groups along ``C_out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .nm import check_nm, nm_mask
from .numerics import FloatFormat, decode, encode, get_format, matmul_sparse

__all__ = [
    "BEAT_BYTES", "LANES", "INDEX_BITS", "STEPS_PER_INDEX_BEAT", "MAX_M",
    "NMOperand", "compress", "compress_ff", "compress_bp", "matmul_nm",
    "packed_beats", "packed_nbytes", "pack", "unpack",
]

#: Bytes in one 512-bit AXI beat (the XDMA / DDR4 data width of the VCU1525 design).
BEAT_BYTES = 64
#: 16-bit operand lanes per beat: one column tile of ``B`` is this many columns wide.
LANES = BEAT_BYTES // 2
#: Width of one packed in-group index field (a nibble, whatever ``m``); the bits above ``log2(m)`` are zero.
INDEX_BITS = 4
#: Group steps whose ``LANES`` indices fit in one index beat (``512 / (32 * 4)``).
STEPS_PER_INDEX_BEAT = BEAT_BYTES * 8 // (LANES * INDEX_BITS)
#: Largest group size the format can index with a nibble.
MAX_M = 1 << INDEX_BITS


def _check_nm_format(n: int, m: int) -> None:
    check_nm(n, m)
    if m > MAX_M:
        raise ValueError(f"the compressed format indexes groups of at most {MAX_M} with {INDEX_BITS}-bit "
                         f"indices; M={m} is not supported (use M <= {MAX_M})")


@dataclass(frozen=True, eq=False)
class NMOperand:
    """An N:M-sparse GEMM right operand ``B`` (``k x cols``) in compressed form, grouped along its rows.

    Attributes
    ----------
    values : float32 array (groups, n, cols)
        ``values[g, s, j]`` is the ``s``-th kept element (ascending in-group index) of rows
        ``g*m .. g*m+m-1`` of column ``j``. ``groups = ceil(k / m)``; rows ``k .. groups*m-1`` are zero
        padding.
        Values are *not* quantized: they are the float32 values of the source matrix (e.g. FP32 master
        weights). ``matmul_nm`` / ``matmul_sparse`` and ``pack`` encode them to the operand format (RNE).
    indices : uint8 array (groups, n, cols)
        In-group index (``0 <= index < m``) of each kept value, strictly ascending along axis 1.
    n, m : int
        Keep ``n`` of every ``m`` (``m`` a power of two, at most ``MAX_M``).
    k : int
        Unpadded number of rows of ``B`` (the reduction length).
    cols : int
        Number of columns of ``B``.

    Notes
    -----
    Every group holds exactly ``n`` entries. If the source group had fewer than ``n`` selected elements
    (a partial last group, or a mask that keeps fewer), the free slots hold zeros at the lowest unselected
    in-group indices, which is also where ``nm_mask`` puts them when a group has fewer than ``n`` nonzeros.
    A kept slot that points into the zero padding rows (``>= k``) must hold the value zero.

    Raises
    ------
    ValueError
        If the shapes, the N:M pattern or the indices are inconsistent (see ``docs/format.md``).
    """

    values: np.ndarray
    indices: np.ndarray
    n: int
    m: int
    k: int
    cols: int

    def __post_init__(self) -> None:
        _check_nm_format(self.n, self.m)
        for name in ("k", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        values = np.asarray(self.values, dtype=np.float32)
        indices = np.asarray(self.indices)
        if not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be integers, not {indices.dtype}")
        want = (self.groups, self.n, self.cols)
        if values.shape != want or indices.shape != want:
            raise ValueError(f"values and indices must both have shape (ceil(k/m), n, cols) = {want} for "
                             f"k={self.k}, {self.n}:{self.m}, cols={self.cols}; got {values.shape} and "
                             f"{indices.shape}")
        _check_indices(indices, self.m)
        indices = indices.astype(np.uint8, copy=False)
        pad_rows = self.groups * self.m - self.k
        if pad_rows:
            last_v = values[-1]
            in_pad = indices[-1] >= self.m - pad_rows
            if np.any(last_v[in_pad] != 0):
                raise ValueError(f"a kept value in the zero padding rows {self.k}..{self.k_pad - 1} is "
                                 f"nonzero: the padding rows of B must be zero")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "cols", int(self.cols))

    @property
    def groups(self) -> int:
        """Number of groups along K: ``ceil(k / m)``."""
        return -(-self.k // self.m)

    @property
    def k_pad(self) -> int:
        """K zero-padded to a multiple of ``m``."""
        return self.groups * self.m

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(k, cols)`` of the dense matrix ``B``."""
        return (self.k, self.cols)

    def to_dense(self) -> np.ndarray:
        """The dense ``k x cols`` float32 matrix ``B``, zero outside the kept positions."""
        dense = np.zeros((self.groups, self.m, self.cols), dtype=np.float32)
        np.put_along_axis(dense, self.indices.astype(np.intp), self.values, axis=1)
        return dense.reshape(self.k_pad, self.cols)[:self.k]

    def mask(self) -> np.ndarray:
        """Boolean ``k x cols`` mask of the kept positions (including zero-valued filler slots)."""
        keep = np.zeros((self.groups, self.m, self.cols), dtype=bool)
        np.put_along_axis(keep, self.indices.astype(np.intp), True, axis=1)
        return keep.reshape(self.k_pad, self.cols)[:self.k]


def _check_indices(indices: np.ndarray, m: int) -> None:
    if indices.size == 0:
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= m:
        bad = np.argwhere((indices < 0) | (indices >= m))[0]
        raise ValueError(f"in-group index {int(indices[tuple(bad)])} at (group, slot, column) = "
                         f"{tuple(int(i) for i in bad)} is out of range: indices must lie in [0, {m})")
    if indices.shape[1] > 1:
        d = np.diff(indices.astype(np.int16), axis=1)
        if np.any(d <= 0):
            g, s, j = (int(i) for i in np.argwhere(d <= 0)[0])
            kind = "duplicate" if d[g, s, j] == 0 else "descending"
            raise ValueError(f"{kind} in-group indices {int(indices[g, s, j])}, {int(indices[g, s + 1, j])} "
                             f"in group {g}, column {j}: indices must be strictly ascending within a group")


@cache
def _tables(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables over the ``2**m`` group masks (bit ``i`` = in-group element ``i`` selected).

    Returns ``(count, slots, filler)``: popcount of each mask; the ``n`` in-group indices kept for it
    (selected bits in ascending order, completed with the lowest unselected bits when fewer than ``n``);
    and which of those ``n`` slots are such zero-valued fillers.
    """
    codes = np.arange(1 << m)
    bits = (codes[:, None] >> np.arange(m)) & 1  # (2**m, m)
    count = bits.sum(axis=1).astype(np.uint8)
    # order: selected bits first (ascending), then unselected ones (ascending); take n and sort
    order = np.argsort(1 - bits, axis=1, kind="stable")[:, :n]
    slots = np.sort(order, axis=1).astype(np.uint8)
    filler = np.take_along_axis(bits, slots.astype(np.intp), axis=1) == 0
    return count, slots, filler


def compress(b, n: int, m: int, mask=None) -> NMOperand:
    """Compress ``b`` (``K x cols``) into N:M groups of ``m`` consecutive rows (axis 0, the reduction axis).

    Parameters
    ----------
    b : array_like (K, cols)
        The GEMM right operand. Its values are kept as float32, unquantized.
    n, m : int
        Keep ``n`` of every ``m`` rows; ``m`` a power of two, ``1 <= n <= m <= MAX_M``.
    mask : array_like of bool (K, cols), optional
        Which elements to keep. Default ``nm_mask(b, n, m, axis=0)``. A given mask may select at most ``n``
        elements per group; groups with fewer get zero fillers at the lowest unselected indices.

    Returns
    -------
    NMOperand
        ``compress(b, n, m).to_dense()`` equals ``prune(b, n, m, axis=0)`` (as float32).

    Raises
    ------
    ValueError
        If ``b`` is not a non-empty 2-D array, ``n:m`` is invalid, ``b`` holds NaN (default mask),
        or the mask has the wrong shape or keeps more than ``n`` elements in a group.
    """
    _check_nm_format(n, m)
    b = np.asarray(b)
    if b.ndim != 2 or b.shape[0] == 0 or b.shape[1] == 0:
        raise ValueError(f"compress needs a non-empty 2-D (K x cols) matrix, got shape {b.shape}")
    k, cols = b.shape
    if mask is None:
        mask = nm_mask(b, n, m, axis=0)
    else:
        mask = np.asarray(mask)
        if mask.shape != b.shape:
            raise ValueError(f"mask has shape {mask.shape} but b has {b.shape}: they must match")
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean, not {mask.dtype}")
    groups = -(-k // m)
    pad = groups * m - k
    vals32 = b if b.dtype == np.float32 else b.astype(np.float32)
    if pad:
        vals32 = np.concatenate([vals32, np.zeros((pad, cols), np.float32)], axis=0)
        mask = np.concatenate([mask, np.zeros((pad, cols), bool)], axis=0)
    # group codes: bit j set when in-group element j is selected
    mg = mask.reshape(groups, m, cols)
    code_dtype = np.uint8 if m <= 8 else np.uint16
    code = np.zeros((groups, cols), dtype=code_dtype)
    for j in range(m):
        code |= mg[:, j, :].view(np.uint8).astype(code_dtype, copy=False) << code_dtype(j)
    count, slots, filler = _tables(n, m)
    code = code.astype(np.intp)
    cnt = count[code]
    if cnt.max() > n:
        g, j = (int(i) for i in np.argwhere(cnt > n)[0])
        raise ValueError(f"mask keeps {int(cnt[g, j])} elements in group {g} (rows {g * m}..{g * m + m - 1}) "
                         f"of column {j}, more than N={n}: give a mask with the {n}:{m} structure")
    idx = np.empty((groups, n, cols), dtype=np.uint8)
    for s in range(n):
        idx[:, s, :] = np.take(slots[:, s], code)
    # gather the kept values through flat offsets into the (row- or column-major) storage of b
    if not (vals32.flags.c_contiguous or vals32.T.flags.c_contiguous):
        vals32 = np.ascontiguousarray(vals32)
    if vals32.flags.c_contiguous:
        flat, row_stride, col_stride = vals32.reshape(-1), cols, 1
    else:
        flat, row_stride, col_stride = vals32.T.reshape(-1), 1, groups * m
    base = (np.arange(groups, dtype=np.intp)[:, None] * (m * row_stride)
            + np.arange(cols, dtype=np.intp)[None, :] * col_stride)
    values = np.empty((groups, n, cols), dtype=np.float32)
    for s in range(n):
        values[:, s, :] = np.take(flat, base + idx[:, s, :].astype(np.intp) * row_stride)
    if cnt.min() < n:
        for s in range(n):
            values[:, s, :][filler[code, s]] = 0.0
    return NMOperand(values=values, indices=idx, n=n, m=m, k=k, cols=cols)


def compress_ff(w, n: int, m: int, mask=None) -> NMOperand:
    """Compressed FF weights: ``W`` (``C_out x K``) pruned along ``K``, as the operand ``B = W_ff^T``.

    ``Y = X . W_ff^T`` is then ``matmul_nm(X, compress_ff(W, n, m))``. ``mask``, if given, is ``C_out x K``.
    See :func:`compress` for parameters and errors.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"compress_ff needs a 2-D (C_out x K) weight matrix, got shape {w.shape}")
    return compress(w.T, n, m, None if mask is None else np.asarray(mask).T)


def compress_bp(w, n: int, m: int, mask=None) -> NMOperand:
    """Compressed BP weights: ``W`` (``C_out x K``) pruned along ``C_out``, as the operand ``B = W_bp``.

    ``dX = dY . W_bp`` is then ``matmul_nm(dY, compress_bp(W, n, m))``. For nested BDWP compress the FF-pruned
    weights instead: ``compress_bp(prune(W, n, m, axis=1), n, m)``. ``mask``, if given, is ``C_out x K`` and
    selects values of ``w`` itself. See :func:`compress` for parameters and errors.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"compress_bp needs a 2-D (C_out x K) weight matrix, got shape {w.shape}")
    return compress(w, n, m, mask)


def matmul_nm(a, op: NMOperand, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Bit-exact ``a @ B`` for a compressed ``B``: :func:`sat.sw.numerics.matmul_sparse` on ``op``.

    Parameters
    ----------
    a : array (rows, op.k)
        Dense left operand (bit patterns or values, as in ``matmul_sparse``).
    op : NMOperand
        The compressed right operand.
    fmt : "fp16" or "bf16"

    Returns
    -------
    float32 array (rows, op.cols), equal bit for bit to ``matmul(a, op.to_dense(), fmt)`` when ``a`` holds
    no Inf or NaN.

    Raises
    ------
    ValueError
        If ``a`` is not ``rows x op.k``.
    """
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != op.k:
        raise ValueError(f"a must be (rows, {op.k}) to multiply a {op.k} x {op.cols} operand, got {a.shape}")
    return matmul_sparse(a, op.values, op.indices, op.m, fmt)


# ---------------------------------------------------------------------------------------------------------
# AXI beat packing


def _layout(n: int, m: int, k: int, cols: int) -> tuple[int, int, int]:
    """(tiles, steps per tile, beats per tile) for an operand of this shape."""
    steps = -(-k // m) * n
    tiles = -(-cols // LANES)
    index_beats = -(-steps // STEPS_PER_INDEX_BEAT)
    return tiles, steps, steps + index_beats


def packed_beats(n: int, m: int, k: int, cols: int) -> int:
    """Number of 512-bit beats ``pack`` produces for a ``k x cols`` operand at ``n:m``.

    Parameters
    ----------
    n, m : int
        The N:M pattern.
    k, cols : int
        Shape of the dense operand ``B`` (unpadded).

    Returns
    -------
    ``ceil(cols / 32) * (S + ceil(S / 4))`` with ``S = ceil(k / m) * n`` steps per column tile.

    Raises
    ------
    ValueError
        For an invalid ``n:m`` or non-positive shape.
    """
    _check_nm_format(n, m)
    if k < 1 or cols < 1:
        raise ValueError(f"k and cols must be positive, got k={k}, cols={cols}")
    tiles, _, per_tile = _layout(n, m, k, cols)
    return tiles * per_tile


def packed_nbytes(n: int, m: int, k: int, cols: int) -> int:
    """Size in bytes of ``pack``'s output (``packed_beats * BEAT_BYTES``); one column tile is
    ``packed_nbytes(n, m, k, cols) // ceil(cols / LANES)`` bytes."""
    return packed_beats(n, m, k, cols) * BEAT_BYTES


def pack(op: NMOperand, fmt: str | FloatFormat = "fp16") -> np.ndarray:
    """Pack an operand into whole little-endian 512-bit AXI beats (layout in ``docs/format.md``).

    Columns are split into tiles of ``LANES`` (32); tile after tile, each tile is the sequence of its
    ``steps = ceil(k/m) * n`` group steps (group-major, slot-minor, i.e. ascending reduction index), in
    blocks of one index beat (``STEPS_PER_INDEX_BEAT`` steps x 32 lanes x 4-bit indices) followed by up to
    ``STEPS_PER_INDEX_BEAT`` value beats (32 lanes x 16-bit values). Missing lanes, steps and beats are zero.

    Parameters
    ----------
    op : NMOperand
    fmt : "fp16" or "bf16"
        Operand format; values are encoded with :func:`sat.sw.numerics.encode` (RNE, FTZ).

    Returns
    -------
    uint8 array of ``packed_nbytes(op.n, op.m, op.k, op.cols)`` bytes.

    Raises
    ------
    ValueError
        For an unknown format.
    """
    f = get_format(fmt)
    tiles, steps, per_tile = _layout(op.n, op.m, op.k, op.cols)
    spb = STEPS_PER_INDEX_BEAT
    blocks = -(-steps // spb)
    lanes = tiles * LANES
    bits = encode(op.values.reshape(steps, op.cols), f)
    idx = op.indices.reshape(steps, op.cols)
    # full[t, block, 0] is the index beat, full[t, block, 1 + p] the value beat of step block*spb + p
    # full[t, q, 0] is the index beat of block q of tile t, full[t, q, 1 + p] the value beat of step 4q + p;
    # a beat is 32 little-endian 16-bit words (values: one per lane; indices: 4 nibbles per word)
    full = np.zeros((tiles, blocks, 1 + spb, LANES), dtype="<u2")
    v = np.zeros((blocks * spb, lanes), dtype=np.uint16)
    v[:steps, :op.cols] = bits
    full[:, :, 1:, :] = v.reshape(blocks, spb, tiles, LANES).transpose(2, 0, 1, 3)
    i = np.zeros((blocks * spb, lanes), dtype=np.uint8)
    i[:steps, :op.cols] = idx
    nib = i[:, 0::2] | (i[:, 1::2] << 4)  # (blocks*spb, lanes/2) bytes: lane 2b low nibble, 2b+1 high
    nib = np.ascontiguousarray(nib.reshape(blocks, spb, tiles, LANES // 2).transpose(2, 0, 1, 3))
    full[:, :, 0, :] = nib.reshape(tiles, blocks, BEAT_BYTES).view("<u2")
    full = full.view(np.uint8).reshape(tiles, blocks * (1 + spb), BEAT_BYTES)
    return np.ascontiguousarray(full[:, :per_tile]).reshape(-1)


def unpack(data, n: int, m: int, k: int, cols: int, fmt: str | FloatFormat = "fp16") -> NMOperand:
    """Inverse of :func:`pack`: read an operand back from its beats, checking every rule of the format.

    Parameters
    ----------
    data : bytes-like or uint8 array
        Exactly ``packed_nbytes(n, m, k, cols)`` bytes.
    n, m, k, cols : int
        The shape and pattern (the driver knows them from the GEMM descriptor; the data has no header).
    fmt : "fp16" or "bf16"

    Returns
    -------
    NMOperand
        With ``values`` the float32 values of the operand bit patterns, so that
        ``pack(unpack(data, ...), fmt)`` reproduces ``data`` bit for bit.

    Raises
    ------
    ValueError
        If the data is not a whole number of beats or has the wrong beat count for the shape; an index is
        ``>= m``, repeated or not ascending within a group; a padding lane, step or index bit is nonzero;
        a value in the zero padding rows is nonzero; or a value is a subnormal or non-canonical NaN bit
        pattern (``encode`` never produces those).
    """
    _check_nm_format(n, m)
    f = get_format(fmt)
    if k < 1 or cols < 1:
        raise ValueError(f"k and cols must be positive, got k={k}, cols={cols}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise ValueError(f"packed data must be a 1-D uint8 array or bytes, got {buf.dtype} {buf.shape}")
    if buf.size % BEAT_BYTES:
        raise ValueError(f"packed data has {buf.size} bytes, not a whole number of {BEAT_BYTES}-byte beats")
    tiles, steps, per_tile = _layout(n, m, k, cols)
    want = tiles * per_tile
    if buf.size // BEAT_BYTES != want:
        raise ValueError(f"packed data has {buf.size // BEAT_BYTES} beats but a {k} x {cols} operand at "
                         f"{n}:{m} packs into {want} beats: check the shape in the descriptor")
    spb = STEPS_PER_INDEX_BEAT
    blocks = -(-steps // spb)
    lanes = tiles * LANES
    full = np.zeros((tiles, blocks * (1 + spb), BEAT_BYTES), dtype=np.uint8)
    full[:, :per_tile] = buf.reshape(tiles, per_tile, BEAT_BYTES)
    full = full.reshape(tiles, blocks, 1 + spb, BEAT_BYTES)
    v = np.ascontiguousarray(full[:, :, 1:, :]).view("<u2").reshape(tiles, blocks, spb, LANES)
    v = v.transpose(1, 2, 0, 3).reshape(blocks * spb, lanes)
    nib = full[:, :, 0, :].reshape(tiles, blocks, spb, LANES // 2).transpose(1, 2, 0, 3).reshape(
        blocks * spb, lanes // 2)
    i = np.empty((blocks * spb, lanes), dtype=np.uint8)
    i[:, 0::2] = nib & 0x0F
    i[:, 1::2] = nib >> 4
    if np.any(v[steps:]) or np.any(i[steps:]):
        raise ValueError("nonzero bits in the unused steps of a tile's last block: they must be zero")
    if np.any(v[:, cols:]) or np.any(i[:, cols:]):
        raise ValueError(f"nonzero bits in the padding lanes (columns {cols}..{lanes - 1}) of the last tile: "
                         f"they must be zero")
    bits = v[:steps, :cols]
    exp, man = bits & f.exp_mask, bits & f.man_mask
    if np.any((exp == 0) & (man != 0)):
        raise ValueError(f"a value is a subnormal {f.name} bit pattern, which pack never produces (FTZ)")
    if np.any((exp == f.exp_mask) & (man != 0) & (bits != f.canonical_nan)):
        raise ValueError(f"a value is a non-canonical {f.name} NaN, which pack never produces "
                         f"(canonical NaN is {f.canonical_nan:#06x})")
    groups = steps // n
    values = decode(bits, f).reshape(groups, n, cols)
    indices = i[:steps, :cols].reshape(groups, n, cols)
    return NMOperand(values=values, indices=indices, n=n, m=m, k=k, cols=cols)
