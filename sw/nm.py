"""N:M primitives: the one definition of N:M selection (``nm_mask``) and of N:M pattern names.

``nm_mask`` is used by the golden model, the compressed format, the driver and the tests: in every group of ``m``
consecutive elements along ``axis`` it keeps the ``n`` largest magnitudes, ties going to the lower index
(SPEC section 1). This module depends on NumPy only, so configuration and formats can use it without the
training code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_nm", "nm_mask", "prune", "NM", "parse_nm", "format_nm"]


def check_nm(n: int, m: int) -> None:
    """Raise ``ValueError`` unless ``n:m`` is a valid N:M pattern (``1 <= n <= m``, ``m`` a power of two)."""
    if not isinstance(m, (int, np.integer)) or m < 1 or (m & (m - 1)) != 0:
        raise ValueError(f"M must be a power of two (e.g. 4 or 8), not {m!r}")
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= m:
        raise ValueError(f"N must be between 1 and M ({m}), not {n!r}")


def nm_mask(w, n: int, m: int, axis: int = -1) -> np.ndarray:
    """Boolean mask keeping the ``n`` largest ``|w|`` of every ``m`` consecutive elements along ``axis``.

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
    axis = axis % w.ndim if w.ndim else 0
    moved = np.moveaxis(w, axis, -1)
    length = moved.shape[-1]
    pad = -length % m
    if n == m:
        return np.ones(w.shape, dtype=bool)
    if moved.flags.c_contiguous:
        # groups run along the innermost axis: copy each group position into its own contiguous array
        mag = np.abs(moved)
        if pad:
            mag = np.concatenate([mag, np.zeros(mag.shape[:-1] + (pad,), mag.dtype)], axis=-1)
        flat = mag.reshape(-1, m)
        keep = _rank_keep([np.ascontiguousarray(flat[:, j]) for j in range(m)], n)
        keep = np.stack(keep, axis=-1).reshape(mag.shape)[..., :length]
        return np.moveaxis(keep, -1, axis)
    # groups run along an outer axis (BP weights: groups along C_out of C_out x K): every group position is
    # a strided view whose inner rows are contiguous, so no copy is needed (3x faster than moving the axis)
    mag = np.ascontiguousarray(np.abs(w))
    if pad:
        mag = np.concatenate([mag, np.zeros(mag.shape[:axis] + (pad,) + mag.shape[axis + 1:], mag.dtype)], axis=axis)
    groups = mag.reshape(mag.shape[:axis] + (-1, m) + mag.shape[axis + 1:])
    position = [groups[(slice(None),) * (axis + 1) + (j,)] for j in range(m)]
    keep = np.stack(_rank_keep(position, n), axis=axis + 1).reshape(mag.shape)
    return keep[(slice(None),) * axis + (slice(0, length),)]


def _rank_keep(position: list[np.ndarray], n: int) -> list[np.ndarray]:
    """``keep[j]``: whether group member ``j`` (``position[j]``, magnitudes) is among the ``n`` largest.

    rank[i] = how many group members beat member i (larger, or equal with a lower index). Each pair is compared
    once, on whole per-position arrays: ~7x faster than comparing whole groups m times.
    """
    m = len(position)
    rank = [np.zeros(position[0].shape, dtype=np.uint8) for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            lower_wins = position[i] >= position[j]
            rank[j] += lower_wins
            rank[i] += ~lower_wins
    return [r < n for r in rank]


def prune(w, n: int, m: int, axis: int = -1) -> np.ndarray:
    """``w`` with everything but the N:M-selected elements along ``axis`` set to zero."""
    w = np.asarray(w)
    return np.where(nm_mask(w, n, m, axis), w, np.zeros((), w.dtype))


NM = tuple[int, int] | None
"""An N:M pattern ``(n, m)``, or ``None`` for dense training."""


def parse_nm(text: str | tuple[int, int] | None) -> NM:
    """Parse ``"2:8"`` into ``(2, 8)`` and ``"dense"`` (or ``None``) into ``None``.

    Raises
    ------
    ValueError
        If ``text`` is neither ``"dense"`` nor ``"N:M"`` with a valid pattern (see :func:`check_nm`).
    """
    if text is None:
        return None
    if isinstance(text, tuple):
        n, m = text
    else:
        s = str(text).strip().lower()
        if s == "dense":
            return None
        parts = s.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"sparsity must be 'dense' or 'N:M' such as '2:8', not {text!r}")
        n, m = int(parts[0]), int(parts[1])
    check_nm(n, m)
    return (int(n), int(m))


def format_nm(nm: NM) -> str:
    """Inverse of :func:`parse_nm`: ``(2, 8)`` -> ``"2:8"``, ``None`` -> ``"dense"``."""
    return "dense" if nm is None else f"{nm[0]}:{nm[1]}"
