"""The transport interface: how the SAT driver reaches a core.

A transport moves 32-bit register words over the AXI4-Lite slave, bytes to and from device memory, and waits for
the core's interrupt. Three implementations share it (``docs/driver.md``): :class:`~sat.sw.driver.xdma.XdmaTransport`
(the XDMA character devices of a VCU1525 card), :class:`~sat.sw.driver.model.ModelTransport` (a pure-software SAT
device) and the cocotb transport of the RTL simulation. :class:`~sat.sw.driver.device.SATDevice` only ever talks
to this interface, so the same host script runs on the card, in simulation or on the model.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Transport", "TransportError", "AxiError"]


class TransportError(RuntimeError):
    """A transport could not carry out an access (missing device node, short DMA, bad argument, closed)."""


class AxiError(TransportError):
    """The AXI slave answered SLVERR/DECERR, e.g. a register access to an offset the core does not decode.

    Parameters
    ----------
    message : str
        What was accessed and why it failed.
    offset : int
        Register offset (or device address) of the failed access.
    write : bool
        True for a write, False for a read.
    """

    def __init__(self, message: str, offset: int, write: bool):
        super().__init__(message)
        self.offset = offset
        self.write = write


@runtime_checkable
class Transport(Protocol):
    """What the driver needs from a way of reaching a SAT core.

    Register offsets are byte offsets into the core's AXI4-Lite block (``sat.sw.regmap``); device addresses are
    byte addresses on the core's AXI4 master (device memory). Implementations are context managers
    (``with XdmaTransport() as t: ...`` closes on exit) and may carry a ``memory_bytes`` attribute (size of
    device memory as the transport sees it). :class:`~sat.sw.driver.device.SATDevice` takes the size of device
    memory from the core's ``MEM_SIZE`` registers instead (or its own ``memory_bytes`` argument).
    """

    def read32(self, offset: int) -> int:
        """Read the 32-bit register at byte ``offset`` (a multiple of 4); raise :class:`AxiError` on SLVERR."""
        ...

    def write32(self, offset: int, value: int) -> None:
        """Write the 32-bit ``value`` to the register at byte ``offset``; raise :class:`AxiError` on SLVERR."""
        ...

    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        """Copy ``data`` to device memory at byte address ``addr``."""
        ...

    def dma_read(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` bytes of device memory from byte address ``addr``."""
        ...

    def wait_irq(self, timeout_s: float) -> bool:
        """Block until the core's interrupt fires or ``timeout_s`` seconds pass; True if it fired."""
        ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...
