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
    (``with XdmaTransport() as t: ...`` closes on exit). The size of device memory is the core's to tell:
    :class:`~sat.sw.driver.device.SATDevice` reads it from the ``MEM_SIZE_LO``/``MEM_SIZE_HI`` registers.
    """

    def read32(self, offset: int) -> int:
        """Read the 32-bit register at byte ``offset`` (a multiple of 4; outside the map: 0); raise
        :class:`AxiError` if the slave answers SLVERR/DECERR."""
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
        """Block until an interrupt event or ``timeout_s`` seconds pass; True if an event came (and is consumed).

        An event is a rising edge of the core's interrupt line (XDMA with MSI); the line stays high until the host
        clears ``IRQ_STATUS``, and no new event comes while it is high.
        """
        ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...
