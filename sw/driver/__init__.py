"""The SAT host driver: one synchronous API (:class:`SATDevice`) over small transports.

* :mod:`.transport` -- the :class:`Transport` protocol and its errors;
* :mod:`.xdma` -- :class:`XdmaTransport`, the XDMA character devices of the VCU1525 card;
* :mod:`.model` -- :class:`ModelTransport`, a pure-software SAT device;
* :mod:`.device` -- :class:`SATDevice` and :class:`DeviceBackend` (BDWP training through the driver);
* :mod:`.backends` -- the ``"model"`` and ``"xdma"`` GEMM backends, registered with ``sat.sw.bdwp`` on import.

See ``docs/driver.md``.
"""

from .backends import ModelBackend, register
from .device import (
    DeviceBackend,
    PendingRun,
    RunResult,
    SATConfigMismatch,
    SATDevice,
    SATDeviceError,
    SATError,
    SATMemoryError,
    SATTimeout,
    SparseWeights,
    Tensor,
)
from .model import ModelTransport
from .transport import AxiError, Transport, TransportError
from .xdma import XdmaTransport

__all__ = [
    "Transport", "TransportError", "AxiError", "XdmaTransport", "ModelTransport",
    "SATDevice", "DeviceBackend", "ModelBackend", "Tensor", "SparseWeights", "RunResult", "PendingRun",
    "SATError", "SATDeviceError", "SATTimeout", "SATConfigMismatch", "SATMemoryError",
]

register()
