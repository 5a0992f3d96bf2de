"""Device memory as a set of DDR4 channels: one address window per channel, side by side from address 0.

The VCU1525 has four DIMM slots C0..C3, each a 16 GiB channel with its own DDR4 controller. The card top
(``sat.boards.card``) maps them through SmartConnect as four 16 GiB windows, channel ``k`` at ``k * 16 GiB``,
for SAT's AXI master and for XDMA's DMA engines alike, so one flat 64 GiB address space reaches every channel and
the address alone says which channel serves an access. :class:`MemoryMap` is that rule; the register map
reports it (``MEM_SIZE``, ``MEM_CHANNELS``), the driver's allocator places tensors by it, and ``sat bench`` reads
the card's channel count from :data:`CARD_MEMORY`. A simulation or the software model may use one channel, or
several windows over one flat memory: the addresses are the same either way (``docs/board.md``, "Four DDR4
channels").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryMap", "CARD_MEMORY", "CARD_CHANNEL_BYTES", "CARD_CHANNELS", "CARD_CHANNEL_SLR", "MAX_CHANNELS",
           "ROLES", "default_placement"]

#: Most channels the ``MEM_CHANNELS`` register can report (its 8-bit field; the card has 4).
MAX_CHANNELS = 255
#: Bytes of one VCU1525 channel: a 16 GB RDIMM behind a DDR4 controller with a 34-bit AXI address.
CARD_CHANNEL_BYTES = 1 << 34
#: DDR4 channels (DIMM slots C0..C3) of the VCU1525 that the card top instantiates.
CARD_CHANNELS = 4
#: The SLR of each channel's I/O banks (board store ``board.xml`` SLR parameters, reference 1.6).
CARD_CHANNEL_SLR: tuple[int, ...] = (0, 1, 1, 2)


@dataclass(frozen=True)
class MemoryMap:
    """``channels`` address windows of ``window_bytes`` each; channel ``k`` is ``[k * window_bytes, (k + 1) *
    window_bytes)``.

    Parameters
    ----------
    channels : int
        Number of memory channels (1..255).
    window_bytes : int
        Bytes of each channel's window (a power of two when there are several channels, so that the interconnect
        decodes the channel from the high address bits).

    Raises
    ------
    ValueError
        For a channel count out of range, or a window that is not positive (or not a power of two with several
        channels).
    """

    channels: int
    window_bytes: int

    def __post_init__(self) -> None:
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) \
                or not 1 <= self.channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be an integer between 1 and {MAX_CHANNELS}, not {self.channels!r}")
        w = self.window_bytes
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ValueError(f"window_bytes must be a positive integer, not {w!r}")
        if self.channels > 1 and w & (w - 1):
            raise ValueError(f"with {self.channels} channels each window must be a power of two bytes (the "
                             f"interconnect decodes the channel from the address bits above it), not {w}")

    @classmethod
    def split(cls, memory_bytes: int, channels: int = 1) -> MemoryMap:
        """The map of ``memory_bytes`` of device memory in ``channels`` equal windows.

        Raises
        ------
        ValueError
            If ``memory_bytes`` is not a multiple of ``channels`` (or the windows are not powers of two).
        """
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be an integer between 1 and {MAX_CHANNELS}, not {channels!r}")
        if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) or memory_bytes <= 0 \
                or memory_bytes % channels:
            raise ValueError(f"memory_bytes must be a positive multiple of the channel count {channels}, "
                             f"not {memory_bytes!r}")
        return cls(channels, memory_bytes // channels)

    @property
    def size(self) -> int:
        """Bytes of device memory, all channels (what ``MEM_SIZE`` reports)."""
        return self.channels * self.window_bytes

    @property
    def window_log2(self) -> int:
        """``log2(window_bytes)``, or 0 when the window is not a power of two (one channel of odd size)."""
        w = self.window_bytes
        return w.bit_length() - 1 if w & (w - 1) == 0 else 0

    def base(self, channel: int) -> int:
        """First address of ``channel``'s window.

        Raises
        ------
        ValueError
            For a channel the map does not have.
        """
        self.check_channel(channel)
        return channel * self.window_bytes

    def channel_of(self, addr: int) -> int:
        """The channel that serves ``addr``.

        Raises
        ------
        ValueError
            For an address outside device memory.
        """
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr < self.size:
            raise ValueError(f"address {addr!r} is outside device memory [0, 0x{self.size:x})")
        return addr // self.window_bytes

    def windows(self) -> list[tuple[int, int]]:
        """``(base, end)`` of every channel, channel 0 first (``end`` exclusive)."""
        return [(k * self.window_bytes, (k + 1) * self.window_bytes) for k in range(self.channels)]

    def check_channel(self, channel: int) -> int:
        """``channel`` if the map has it.

        Raises
        ------
        ValueError
            Otherwise, naming the channels there are.
        """
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < self.channels:
            raise ValueError(f"channel must be an integer between 0 and {self.channels - 1} (this device memory "
                             f"has {self.channels} channel{'s' if self.channels > 1 else ''}), not {channel!r}")
        return channel


#: The VCU1525 card's device memory: DDR4 C0..C3, 16 GiB each, at 0, 16, 32 and 48 GiB (64 GiB in all).
CARD_MEMORY = MemoryMap(CARD_CHANNELS, CARD_CHANNEL_BYTES)


#: What a device allocation is for: ``a`` left operands (activations, ``dY`` ...), ``b`` right operands (weights,
#: compressed N:M operands), ``c`` results, ``cmd`` command lists.
ROLES = ("a", "b", "c", "cmd")


def default_placement(channels: int) -> dict[str, int]:
    """The channel the driver prefers for each of :data:`ROLES` on a memory of ``channels`` channels.

    With four channels (the card): the operands ``a`` and ``b`` on C1 and the results ``c`` on C2, the two
    channels in SLR1 with the PCIe block, SmartConnect and SAT's DMA (the busiest traffic stays out of the SLR
    crossings); command lists ``cmd`` on C3; C0 takes what has no role (the most-free rule picks it first).

    Why A and B share a channel: SAT has one AXI master whose reads use one AXI ID, and SmartConnect lets an ID
    have reads outstanding at one slave only (PG247, "Single Slave per ID"): with A and B on two channels every
    switch between an A load and a B load would wait for the other channel's reads to drain. One channel's bus
    (19.2 GB/s at DDR4-2400) is faster than the port's read side (16 GB/s at 250 MHz), so a read-only channel keeps
    the port at one beat per cycle; what matters is that no writes share it (no read/write turnarounds), hence the
    results on a channel of their own. A core with a second read master would put ``b`` on its own channel.
    With two or three channels the operands and the results still get a channel each; with one everything is on
    it.

    Raises
    ------
    ValueError
        For a channel count out of range.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be an integer between 1 and {MAX_CHANNELS}, not {channels!r}")
    if channels == 1:
        return dict.fromkeys(ROLES, 0)
    if channels == 2:
        return {"a": 0, "b": 0, "c": 1, "cmd": 1}
    if channels == 3:
        return {"a": 1, "b": 1, "c": 2, "cmd": 0}
    return {"a": 1, "b": 1, "c": 2, "cmd": 3}
