"""GEMM backends for BDWP training that run through the driver: ``"model"`` and ``"xdma"``.

Importing :mod:`sat.sw.driver` registers them with :func:`sat.sw.bdwp.register_backend`, so
``get_backend("model")`` (and ``sat train --backend model`` once the CLI imports the driver) trains through
:class:`~sat.sw.driver.device.SATDevice`. The ``"sim"`` backend name (the RTL simulation) is registered by
``sat.sim.cli``: training on the RTL runs inside a cocotb testbench, which ``sat train --backend sim`` launches.

Both backends split reductions longer than the GEMM unit's buffers into K chunks (``DeviceBackend``, card
buffer depths by default), so their results equal ``GoldenBackend(k_limit=backend.k_limit)`` bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..backend import register_backend
from ..config import SATConfig
from ..nmformat import NMOperand
from ..numerics import get_format
from .device import DeviceBackend, SATDevice
from .model import ModelTransport

__all__ = ["ModelBackend", "model_backend", "xdma_backend", "register"]


class ModelBackend:
    """:class:`DeviceBackend` over a :class:`ModelTransport`, one model per operand format.

    A SAT build has one operand format; BDWP settings choose FP16 or BF16 per run, so the backend opens a model
    of ``config.replace(fmt=fmt)`` the first time a format is used.

    Parameters
    ----------
    config : SATConfig, optional
        The build to model (default ``SATConfig()``); its ``fmt`` is replaced per call.
    memory_bytes : int
        Device memory of each model.
    """

    name = "model"

    def __init__(self, config: SATConfig | None = None, memory_bytes: int = 64 << 20) -> None:
        self.config = config if config is not None else SATConfig()
        self.memory_bytes = memory_bytes
        self.backends: dict[str, DeviceBackend] = {}
        self._owner: dict[int, str] = {}

    def backend(self, fmt: str) -> DeviceBackend:
        """The device backend for operand format ``fmt`` (created on first use)."""
        fmt = get_format(fmt).name
        if fmt not in self.backends:
            cfg = self.config.replace(fmt=fmt)
            self.backends[fmt] = DeviceBackend(SATDevice(ModelTransport(cfg, self.memory_bytes), cfg))
        return self.backends[fmt]

    def dense(self, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
        return self.backend(fmt).dense(a, b, fmt)

    def sparse(self, a: np.ndarray, b: NMOperand, fmt: str) -> np.ndarray:
        return self.backend(fmt).sparse(a, b, fmt)

    def put(self, x: np.ndarray, fmt: str):
        """:meth:`DeviceBackend.put` on the model for ``fmt``."""
        t = self.backend(fmt).put(x, fmt)
        self._owner[id(t)] = get_format(fmt).name
        return t

    def release(self, t) -> None:
        self.backend(self._owner.pop(id(t))).release(t)

    def conv(self, pass_: str, a, b, shape, fmt: str, out_fmt: str = "fp32") -> np.ndarray:
        """:meth:`DeviceBackend.conv` on the model for ``fmt``."""
        return self.backend(fmt).conv(pass_, a, b, shape, fmt, out_fmt)

    def k_limit(self, n: int = 0, m: int = 0) -> int:
        """The K-chunk limit of the modelled GEMM unit (the same for every format)."""
        return self.backend(self.config.fmt).k_limit(n, m)

    def __repr__(self) -> str:
        return f"ModelBackend({self.config!r})"


def model_backend() -> ModelBackend:
    """Backend ``"model"``: the software device model with the default :class:`SATConfig`."""
    return ModelBackend()


def xdma_backend() -> DeviceBackend:
    """Backend ``"xdma"``: the card at ``/dev/xdma0``, using the build the card reports.

    Raises
    ------
    TransportError
        Without a card: ``/dev/xdma0_user not found: is the XDMA driver loaded and the card programmed?``
    """
    from .xdma import XdmaTransport

    return DeviceBackend(SATDevice(XdmaTransport()))


def register() -> None:
    """Register ``"model"`` and ``"xdma"`` with :func:`sat.sw.bdwp.register_backend` (lazy factories)."""
    register_backend("model", "sat.sw.driver.backends:model_backend")
    register_backend("xdma", "sat.sw.driver.backends:xdma_backend")
