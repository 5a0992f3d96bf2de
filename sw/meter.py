"""Where a training iteration's time goes: a metering wrapper around a pass backend.

:class:`Meter` wraps any backend of :mod:`sat.sw.bdwp` (golden model, software device model, RTL simulation,
card) and records, per call of :meth:`Meter.conv` (every FF, BP and WU pass of a layer) and :meth:`Meter.put`
(an activation made resident on the card):

* ``seconds``: wall time spent inside the backend (the card's share, or its stand-in's); the rest of an
  iteration is host work (batch norm, pooling, ReLU, residual adds, loss, the update, pruning and packing);
* ``model_bytes``: the host <-> card bytes the pass needs on a card with conv descriptors: each resident
  activation written once (operand format), the weights of FF and BP (packed N:M or dense), each FP32 result read
  once. Device backends also count what their transport really moved (:func:`device_counters`);
* ``gemms``: the lowered GEMM of each pass, ``(rows, red, cols, n, m)``, for the cycle model (:meth:`model_cycles`:
  ``perfmodel.gemm_counters`` of each K chunk, the counters the software device model reports).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sat.sw.conv import ConvShape, conv_pass
from sat.sw.nmformat import NMOperand, packed_nbytes

__all__ = ["Meter", "NullBackend", "device_counters"]


def _nbytes(v: Any, item: int) -> int:
    return item * int(np.asarray(v).size) if isinstance(v, np.ndarray) else 0


class Meter:
    """A backend that forwards every call to ``inner`` and meters it (see the module docstring).

    Parameters
    ----------
    inner : GemmBackend
    """

    name = "meter"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.model_bytes = 0
        self.gemms: list[tuple[int, int, int, int, int]] = []
        self._resident: set[int] = set()

    def _moved(self, v, item: int) -> int:
        """Bytes of an operand sent for one call: none for a resident handle or array (sent by :meth:`put`)."""
        return 0 if id(v) in self._resident else _nbytes(v, item)

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        self.model_bytes += _nbytes(a, 2) + _nbytes(b, 2) + 4 * a.shape[0] * b.shape[1]
        self.gemms.append((a.shape[0], a.shape[1], b.shape[1], 0, 0))
        return self._timed(self.inner.dense, a, b, fmt)

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        self.model_bytes += _nbytes(a, 2) + packed_nbytes(b.n, b.m, b.k, b.cols) + 4 * a.shape[0] * b.cols
        self.gemms.append((a.shape[0], b.k, b.cols, b.n, b.m))
        return self._timed(self.inner.sparse, a, b, fmt)

    def put(self, x: np.ndarray, fmt: str):
        self.model_bytes += _nbytes(x, 2)
        put = getattr(self.inner, "put", None)
        handle = x if put is None else self._timed(put, x, fmt)
        self._resident.add(id(handle))
        return handle

    def release(self, handle) -> None:
        self._resident.discard(id(handle))
        free = getattr(self.inner, "release", None)
        if free is not None and not isinstance(handle, np.ndarray):
            self._timed(free, handle)

    def conv(self, pass_: str, a, b, shape: ConvShape, fmt: str, out_fmt: str = "fp32") -> np.ndarray:
        if isinstance(b, NMOperand):
            n, m, w_bytes = b.n, b.m, packed_nbytes(b.n, b.m, b.k, b.cols)
        else:
            n = m = 0
            w_bytes = _nbytes(b, 2)
        rows, red, cols = {"ff": (shape.pixels, shape.k, shape.c_out),
                           "bp": (shape.in_pixels, shape.bp_k(m or 1), shape.c_in),
                           "wu": (shape.c_out, shape.pixels, shape.k)}[pass_]
        c_item = 4 if out_fmt == "fp32" else 2
        self.model_bytes += (self._moved(a, 2) + (w_bytes if pass_ != "wu" else self._moved(b, 2))
                             + c_item * rows * cols)
        self.gemms.append((rows, red, cols, n, m))
        return self._timed(conv_pass, self.inner, pass_, a, b, shape, fmt, out_fmt)

    def model_cycles(self, config, gemms: list[tuple[int, int, int, int, int]] | None = None) -> int:
        """Engine cycles of ``gemms`` (default all recorded) on ``config``: ``perfmodel.gemm_counters`` of every
        K chunk the GEMM unit with the default buffers needs (what ``ModelTransport``'s ``CYCLES`` counts)."""
        from sat.sw.bdwp import k_chunks
        from sat.sw.perfmodel import gemm_counters
        from sat.sw.tiling import max_reduction

        total = 0
        for rows, red, cols, n, m in self.gemms if gemms is None else gemms:
            cfg = config if not n or (n, m) in config.nm_set else config.replace(nm_set=(*config.nm_set, (n, m)))
            for k0, k1 in k_chunks(red, max_reduction(cfg, n, m), m or 1):
                total += gemm_counters(cfg, rows, k1 - k0, cols, n, m).cycles
        return total

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"Meter({self.inner!r})"


def device_counters(backend) -> dict[str, int] | None:
    """What a device backend (``DeviceBackend``, ``ModelBackend``) measured so far: ``pcie_bytes`` (every DMA
    transfer of the host's) and ``cycles`` (the core's ``CYCLES`` counters); ``None`` for a backend without a
    device (the golden model)."""
    inner = getattr(backend, "inner", backend)
    parts = list(getattr(inner, "backends", {}).values()) or ([inner] if hasattr(inner, "device") else [])
    if not parts:
        return None
    out = {"pcie_bytes": 0, "cycles": 0}
    for p in parts:
        t = p.device.traffic
        out["pcie_bytes"] += t["host"]["h2c"] + t["host"]["c2h"]
        out["cycles"] += int(p.stats["cycles"])
    return out


class NullBackend:
    """A backend that computes nothing: every pass returns zeros of the right shape.

    Wrapped in a :class:`Meter`, it times an iteration's host work (pruning and packing, batch norm, pooling,
    ReLU, residual adds, the loss, the update) at full network size, where the bit-exact golden model would take
    hours; the card's share comes from the cycle model instead (``sat bench``'s end-to-end column).
    """

    name = "null"

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        return np.zeros((a.shape[0], b.shape[1]), np.float32)

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        return np.zeros((a.shape[0], b.cols), np.float32)

    def conv(self, pass_: str, a, b, shape: ConvShape, fmt: str, out_fmt: str = "fp32") -> np.ndarray:
        return np.zeros({"ff": shape.y_shape, "bp": shape.x_shape, "wu": shape.w_shape}[pass_], np.float32)
