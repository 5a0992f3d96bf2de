"""Where GEMMs run: the :class:`GemmBackend` protocol, the bit-exact :class:`GoldenBackend`, the backend registry
(``sat train --backend NAME``) and the K-split rule every backend shares.

A backend with limited on-chip buffers splits a long reduction into chunks (:func:`k_chunks`) and adds their FP32
partials in chunk order (:func:`sum_partials`); the golden model splits identically, so the two agree bit for bit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from . import numerics

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .nmformat import NMOperand

__all__ = ["GemmBackend", "GoldenBackend", "Float32Backend", "KLimit", "k_chunks", "sum_partials", "sparse_chunk",
           "register_backend",
           "get_backend", "backend_names"]


@runtime_checkable
class GemmBackend(Protocol):
    """Where the GEMMs of a training iteration run (golden model, RTL simulation, FPGA card).

    Both methods receive operands already quantized to ``fmt`` (float32 arrays holding exactly representable
    values) and return the FP32 result as a float32 array; a conforming backend returns bit-identical results
    to :class:`GoldenBackend`.
    """

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        """``a @ b`` for ``a`` (rows, K) and ``b`` (K, cols), dense."""
        ...

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        """``a @ B`` for ``a`` (rows, K) and ``B`` (K, cols) N:M-sparse along K, compressed (``nmformat``)."""
        ...


KLimit = Callable[[int, int], int]


def k_chunks(k: int, limit: int, granule: int = 1) -> list[tuple[int, int]]:
    """Split a reduction ``[0, k)`` into consecutive chunks ``(k0, k1)`` of at most ``limit``.

    Every chunk but the last has the same length, the largest multiple of ``granule`` not above ``limit`` (so an
    N:M operand splits on group boundaries with ``granule = m``). A backend that splits ``K`` and the golden model
    that checks it use this rule, so that both add the same partials in the same order.

    Raises
    ------
    ValueError
        If ``limit`` is smaller than ``granule`` or either is not positive.
    """
    if granule < 1 or limit < granule:
        raise ValueError(f"a K chunk limit of {limit} cannot hold one group of {granule}: the buffers are too small "
                         "for this N:M pattern")
    size = limit - limit % granule
    return [(k0, min(k, k0 + size)) for k0 in range(0, k, size)] or [(0, 0)]


def sum_partials(parts: Iterable[np.ndarray]) -> np.ndarray:
    """FP32 sum of K-chunk partial products in the given (chunk) order, with the array's adder semantics
    (:func:`sat.sw.numerics.fp32_add`: RNE, DAZ/FTZ, canonical NaN): ``((p0 + p1) + p2) + ...``.

    Raises
    ------
    ValueError
        For no partials or partials of different shapes.
    """
    total = None
    for p in parts:
        p = np.asarray(p, np.float32)
        if total is None:
            total = p.copy()
        elif p.shape != total.shape:
            raise ValueError(f"K-chunk partials of different shapes: {total.shape} and {p.shape}")
        else:
            total = numerics.fp32_add(total, p)
    if total is None:
        raise ValueError("no K-chunk partials to add")
    return total


def sparse_chunk(b: NMOperand, k0: int, k1: int) -> NMOperand:
    """Rows ``[k0, k1)`` of the N:M operand ``b`` (``k0`` on a group boundary) as an operand of its own."""
    from .nmformat import NMOperand

    if k0 % b.m or not 0 <= k0 < k1 <= b.k:
        raise ValueError(f"rows {k0}..{k1} are not a group-aligned slice of a {b.k}-row {b.n}:{b.m} operand")
    g0, g1 = k0 // b.m, -(-k1 // b.m)
    return NMOperand(np.ascontiguousarray(b.values[g0:g1]), np.ascontiguousarray(b.indices[g0:g1]), b.n, b.m,
                     k1 - k0, b.cols)


class GoldenBackend:
    """The bit-exact NumPy golden model: :func:`sat.sw.numerics.matmul` and ``matmul_sparse``.

    Parameters
    ----------
    k_limit : int or callable, optional
        Split ``K`` as a backend with limited buffers does: ``k_limit(n, m)`` (``n = m = 0`` for dense) is the
        longest chunk, an int the same for every GEMM; chunks follow :func:`k_chunks` (``granule = m`` for
        sparse) and their FP32 partials are added in order by :func:`sum_partials`. Default: no split. Pass a
        device backend's :meth:`~sat.sw.driver.device.DeviceBackend.k_limit` to check it bit for bit.
    """

    name = "golden"

    def __init__(self, k_limit: int | KLimit | None = None) -> None:
        if isinstance(k_limit, int) and k_limit < 1:
            raise ValueError(f"k_limit must be positive, not {k_limit!r}")
        self.k_limit = k_limit

    def _limit(self, n: int, m: int) -> int | None:
        if self.k_limit is None:
            return None
        return self.k_limit if isinstance(self.k_limit, int) else int(self.k_limit(n, m))

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        limit = self._limit(0, 0)
        k = np.shape(b)[0]
        if limit is None or k <= limit:
            return numerics.matmul(a, b, fmt)
        return sum_partials(numerics.matmul(a[:, k0:k1], b[k0:k1], fmt) for k0, k1 in k_chunks(k, limit))

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        if a.shape[1] != b.k:
            raise ValueError(f"sparse GEMM: a has K={a.shape[1]} columns but the N:M operand has "
                             f"k={b.k} rows")
        limit = self._limit(b.n, b.m)
        if limit is None or b.k <= limit:
            return numerics.matmul_sparse(a, b.values, b.indices, b.m, fmt)
        parts = []
        for k0, k1 in k_chunks(b.k, limit, b.m):
            c = sparse_chunk(b, k0, k1)
            parts.append(numerics.matmul_sparse(a[:, k0:k1], c.values, c.indices, c.m, fmt))
        return sum_partials(parts)

    def __repr__(self) -> str:
        return "GoldenBackend()" if self.k_limit is None else f"GoldenBackend(k_limit={self.k_limit!r})"


class Float32Backend:
    """A fast, **not bit-exact** backend for long accuracy sweeps: the operands are the quantized FP16/BF16 values
    the card sees, products and sums are float32 in BLAS order (``numpy.matmul``) instead of the card's sequential
    chain, so results differ from the golden model by FP32 rounding only. Never use it to check hardware."""

    name = "fast"

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        return np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32))

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        return np.matmul(np.asarray(a, np.float32), b.to_dense().astype(np.float32))

    def __repr__(self) -> str:
        return "Float32Backend()"


_BACKENDS: dict[str, str | Callable[[], GemmBackend]] = {"golden": GoldenBackend, "fast": Float32Backend}


def register_backend(name: str, factory: str | Callable[[], GemmBackend]) -> None:
    """Make a backend selectable by name (``sat train --backend NAME``).

    Parameters
    ----------
    name : str
        Backend name, e.g. ``"sim"`` or ``"xdma"``.
    factory : callable or str
        A zero-argument callable returning a :class:`GemmBackend`, or ``"package.module:attribute"``
        naming one (imported only when the backend is requested).
    """
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    """Names accepted by :func:`get_backend`."""
    return sorted(_BACKENDS)


def get_backend(name: str) -> GemmBackend:
    """Instantiate the backend registered as ``name``.

    Raises
    ------
    ValueError
        If no backend of that name is registered.
    """
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown GEMM backend {name!r}: choose one of {backend_names()}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory()
