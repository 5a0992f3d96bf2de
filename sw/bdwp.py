"""BDWP (bidirectional weight pruning): N:M masks and pruning.

``nm_mask`` is the single definition of N:M selection used by the golden model, the compressed format,
the driver and the tests: in every group of ``m`` consecutive elements along ``axis`` it keeps the ``n``
largest magnitudes, ties going to the lower index.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_nm", "nm_mask", "prune"]


def check_nm(n: int, m: int) -> None:
    """Raise ``ValueError`` unless ``n:m`` is a valid N:M pattern (``1 <= n <= m``, ``m`` a power of two)."""
    if not isinstance(m, (int, np.integer)) or m < 1 or (m & (m - 1)) != 0:
        raise ValueError(f"M must be a power of two (e.g. 4 or 8), not {m!r}")
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= m:
        raise ValueError(f"N must be between 1 and M ({m}), not {n!r}")


def nm_mask(w, n: int, m: int, axis: int = -1) -> np.ndarray:
    """Boolean mask keeping the ``n`` largest ``|w|`` in every group of ``m`` consecutive elements along ``axis``.

    Ties go to the lower index. When the axis length is not a multiple of ``m`` the array is treated as
    zero-padded: the last, partial group keeps its ``min(n, length)`` largest elements.

    Parameters
    ----------
    w : array_like
        Weights (any real dtype, any number of dimensions).
    n, m : int
        Keep ``n`` of every ``m``; ``m`` must be a power of two and ``1 <= n <= m``.
    axis : int
        Axis along which groups are formed (``K`` for FF weights, ``C_out`` for BP weights).

    Raises
    ------
    ValueError
        For an invalid ``n:m`` or weights containing NaN.
    """
    check_nm(n, m)
    w = np.asarray(w)
    if np.issubdtype(w.dtype, np.floating) and np.isnan(w).any():
        raise ValueError("cannot prune weights that contain NaN: check the loss scale / learning rate")
    moved = np.moveaxis(w, axis, -1)
    length = moved.shape[-1]
    pad = -length % m
    mag = np.abs(moved)
    if pad:
        mag = np.concatenate([mag, np.zeros(mag.shape[:-1] + (pad,), mag.dtype)], axis=-1)
    groups = mag.reshape(mag.shape[:-1] + (-1, m))
    if n == m:
        keep = np.ones(groups.shape, dtype=bool)
    else:
        # rank[i] = how many group members beat member i (larger, or equal with a lower index)
        rank = np.zeros(groups.shape, dtype=np.int8)
        for j in range(m):
            col = groups[..., j:j + 1]
            beats = col > groups
            beats[..., j + 1:] |= col == groups[..., j + 1:]
            rank += beats
        keep = rank < n
    keep = keep.reshape(mag.shape)[..., :length]
    return np.moveaxis(keep, -1, axis)


def prune(w, n: int, m: int, axis: int = -1) -> np.ndarray:
    """``w`` with everything but the N:M-selected elements along ``axis`` set to zero."""
    w = np.asarray(w)
    return np.where(nm_mask(w, n, m, axis), w, np.zeros((), w.dtype))
