"""SAT's AXI4-Lite register map, generated from :class:`~sat.sw.config.SATConfig`.

The gateware's register block, the host driver, the software device model and ``docs/driver.md`` all read this
one table, so an address can never mean two things. Registers are 32 bits wide at 4-byte aligned offsets;
64-bit quantities are a ``_LO`` / ``_HI`` pair (read ``_LO`` first: it latches ``_HI``). An offset that is not in
the table answers OKAY: it reads 0 and ignores writes (an SLVERR would reach the host as a PCIe completer abort, and
the XDMA driver reads BAR0 + 0x2000 and + 0x3000 on every load to find its own registers).

Command flow: write a command list (``sat.sw.descriptor``) to device memory, set ``CMD_ADDR`` and ``CMD_COUNT``,
write ``CONTROL.START``. ``STATUS.BUSY`` rises at once; when the list is done (or a descriptor is rejected, or an
AXI error occurs) ``STATUS.BUSY`` falls, ``STATUS.DONE`` or ``STATUS.ERROR`` rises, and ``IRQ_STATUS`` bits are
set (the interrupt line is ``|(IRQ_STATUS & IRQ_ENABLE)``). ``START`` while busy is refused with
``ERR_BUSY`` in ``ERROR_CODE`` but does not disturb the running list.

Status rules (the RTL and the software model in ``sat.sw.driver.model`` follow them):

* An accepted START clears ``STATUS.DONE``, ``CMD_DONE`` and the performance counters; ``STATUS.ERROR``,
  ``ERROR_CODE`` and ``ERROR_INDEX`` keep the first error until ``CONTROL.CLEAR``.
* A refused START (``ERR_BUSY``, ``ERR_BAD_COUNT``) sets ``STATUS.ERROR`` and ``IRQ_STATUS.ERROR``;
  ``ERROR_INDEX`` is ``CMD_DONE`` for ``ERR_BUSY`` and 0 for ``ERR_BAD_COUNT``. A list still running when
  ``ERR_BUSY`` was reported later ends with ``DONE`` and ``ERROR`` both set.
* The first rejected descriptor stops the list: ``ERROR_INDEX`` is its 0-based index and ``CMD_DONE`` counts the
  descriptors before it. A descriptor with ``FLAG_IRQ`` sets ``IRQ_STATUS.DONE`` when it completes; the end of the
  list always does.
* ``CONTROL`` written with ABORT and START in one write while busy: ABORT takes effect and START is refused
  (``ERR_BUSY``). Write them separately to abort and restart.
* After ``ERR_AXI_READ`` or ``ERR_AXI_WRITE`` the contents of that descriptor's C are undefined (the RTL may have
  written part of it; the software model writes none).
* A valid descriptor whose reduction length does not fit the engine's on-chip buffers ends with ``ERR_BAD_SHAPE``
  reported by the engine; the scheduler tiles such GEMMs (or the driver splits them) before they reach the core.
* Offsets are decoded per 32-bit word: the low two address bits are ignored by the RTL (XDMA's user BAR only
  makes aligned 4-byte accesses); the software model rejects unaligned offsets to catch driver bugs.
* The interrupt line is a level, high while ``IRQ_STATUS & IRQ_ENABLE`` is nonzero; XDMA (with MSI) turns each
  rising edge into one event. A host that wakes on an event clears ``IRQ_STATUS`` before it waits again, or a
  mid-list ``FLAG_IRQ`` would keep the line high through the end of the list and hide it.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.lib import data, enum

from .config import SATConfig
from .memmap import MemoryMap

__all__ = [
    "SAT_ID", "VERSION", "ErrorCode", "Field", "Register", "RegisterMap", "register_map", "config_word",
    "buffers_word", "config_fields", "channels_word", "DEFAULT_MEMORY_BYTES",
    "CONTROL_START", "CONTROL_ABORT", "CONTROL_CLEAR", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
    "IRQ_DONE", "IRQ_ERROR",
]

#: Value of the ID register: ASCII "SAT1".
SAT_ID = 0x53415431
#: Register-map / descriptor version: major << 16 | minor << 8 | patch.
VERSION = (0 << 16) | (2 << 8) | 0


@dataclass(frozen=True)
class Field:
    """A bit field of a register: bits ``lsb .. lsb + width - 1``."""

    name: str
    lsb: int
    width: int = 1

    @property
    def mask(self) -> int:
        """The field's bits in place (``1 << lsb`` for a flag)."""
        return ((1 << self.width) - 1) << self.lsb


#: Fields of the registers that have them, by register name. The gateware views these registers through
#: :meth:`Register.layout`, the driver and the model through :meth:`Register.pack` / :meth:`Register.unpack`.
FIELDS: dict[str, tuple[Field, ...]] = {
    "VERSION": (Field("patch", 0, 8), Field("minor", 8, 8), Field("major", 16, 8)),
    "CONFIG": (Field("rows_m1", 0, 8), Field("cols_m1", 8, 8), Field("bf16", 16), Field("adder_latency_m1", 20, 4),
               Field("data_width_code", 24, 4), Field("addr64", 28)),
    "CONFIG_BUFFERS": (Field("a_depth_log2", 0, 5), Field("b_depth_log2", 8, 5)),
    "MEM_CHANNELS": (Field("channels", 0, 8), Field("window_log2", 8, 6)),
    "CONTROL": (Field("start", 0), Field("abort", 1), Field("clear", 2)),
    "STATUS": (Field("busy", 0), Field("done", 1), Field("error", 2)),
    "IRQ_STATUS": (Field("done", 0), Field("error", 1)),
    "IRQ_ENABLE": (Field("done", 0), Field("error", 1)),
}

CONTROL_START = FIELDS["CONTROL"][0].mask   # write 1: fetch and run the command list
CONTROL_ABORT = FIELDS["CONTROL"][1].mask   # write 1: stop after the current AXI transactions drain, report ABORTED
CONTROL_CLEAR = FIELDS["CONTROL"][2].mask   # write 1: clear STATUS.DONE/ERROR, ERROR_CODE, ERROR_INDEX
STATUS_BUSY = FIELDS["STATUS"][0].mask
STATUS_DONE = FIELDS["STATUS"][1].mask
STATUS_ERROR = FIELDS["STATUS"][2].mask
IRQ_DONE = FIELDS["IRQ_STATUS"][0].mask
IRQ_ERROR = FIELDS["IRQ_STATUS"][1].mask


class ErrorCode(enum.IntEnum, shape=4):
    """Values of ``ERROR_CODE``; ``ERROR_INDEX`` names the descriptor (0-based) that caused it."""

    NONE = 0
    BAD_OPCODE = 1       # opcode is not GEMM
    BAD_FLAGS = 2        # reserved flag bits set, or an invalid flag combination
    NM_UNSUPPORTED = 3   # N:M not in the build's nm_set (or nonzero n/m on a dense descriptor)
    BAD_SHAPE = 4        # rows/red/cols zero or above MAX_DIM, or a stride smaller than a row
    BAD_ADDRESS = 5      # misaligned address or stride, or an operand beyond device memory
    AXI_READ = 6         # SLVERR/DECERR on a read (descriptor or operand fetch)
    AXI_WRITE = 7        # SLVERR/DECERR on a result write
    BUSY = 8             # START while a list was running (the running list is not disturbed)
    ABORTED = 9          # CONTROL.ABORT stopped the list
    BAD_COUNT = 10       # CMD_COUNT is zero or CMD_ADDR is not 64-byte aligned
    BAD_OPERAND = 11     # a packed N:M operand with an in-group index >= M or indices not ascending


@dataclass(frozen=True)
class Register:
    """One 32-bit register: name, byte offset, access (``ro``, ``rw``, ``wo`` (self-clearing command bits) or
    ``w1c``), reset value, description, and its bit fields (:data:`FIELDS`)."""

    name: str
    offset: int
    access: str
    reset: int
    doc: str

    @property
    def fields(self) -> tuple[Field, ...]:
        return FIELDS.get(self.name, ())

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields are {[f.name for f in self.fields]}")

    def layout(self) -> data.StructLayout:
        """The register as an Amaranth layout of its fields (unnamed bits as padding), 32 bits wide."""
        members: dict[str, int] = {}
        pos = 0
        for f in sorted(self.fields, key=lambda f: f.lsb):
            if f.lsb > pos:
                members[f"_pad{pos}"] = f.lsb - pos
            members[f.name] = f.width
            pos = f.lsb + f.width
        if pos < 32:
            members[f"_pad{pos}"] = 32 - pos
        return data.StructLayout(members)

    def pack(self, **values: int) -> int:
        """A register word from field values (missing fields are 0).

        Raises
        ------
        ValueError
            For an unknown field or a value that does not fit its field.
        """
        word = 0
        for name, value in values.items():
            f = self.field(name)
            if not 0 <= int(value) < 1 << f.width:
                raise ValueError(f"{self.name}.{name} is {f.width} bits wide: {value!r} does not fit")
            word |= int(value) << f.lsb
        return word

    def unpack(self, word: int) -> dict[str, int]:
        """Field values of a register word."""
        return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in self.fields}


class RegisterMap:
    """Registers by name and offset, for one configuration."""

    def __init__(self, registers: list[Register]):
        self.registers = list(registers)
        self.by_name = {r.name: r for r in registers}
        self.by_offset = {r.offset: r for r in registers}
        if len(self.by_name) != len(registers) or len(self.by_offset) != len(registers):
            raise ValueError("register names and offsets must be unique")

    def __getitem__(self, name: str) -> Register:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"no register {name!r}; registers are {sorted(self.by_name)}") from None

    def offset(self, name: str) -> int:
        return self[name].offset

    @property
    def size(self) -> int:
        """Bytes of address space the block decodes (a power of two)."""
        top = max(r.offset for r in self.registers) + 4
        return 1 << (top - 1).bit_length()

    def markdown(self) -> str:
        """The map as a Markdown table (docs/driver.md is generated from this)."""
        lines = ["| offset | name | access | reset | description |", "|---|---|---|---|---|"]
        for r in sorted(self.registers, key=lambda r: r.offset):
            lines.append(f"| `0x{r.offset:03x}` | `{r.name}` | {r.access} | `0x{r.reset:08x}` | {r.doc} |")
        return "\n".join(lines)


def _nm_bitmap(config: SATConfig) -> int:
    """Bit ``(log2(m) - 1) * 16 + (n - 1)`` set for every supported n:m (m in 2..16, n < m): 64 bits."""
    bits = 0
    for n, m in config.nm_set:
        bits |= 1 << ((m.bit_length() - 2) * 16 + (n - 1))
    return bits


def config_fields(config: SATConfig) -> dict[str, dict[str, int]]:
    """Field values of ``CONFIG`` and ``CONFIG_BUFFERS`` for a build (sizes minus 1, so the largest legal values
    fit; depths as log2)."""
    return {
        "CONFIG": {"rows_m1": config.rows - 1, "cols_m1": config.cols - 1, "bf16": int(config.fmt == "bf16"),
                   "adder_latency_m1": config.adder_latency - 1,
                   "data_width_code": (config.axi_data_width // 64).bit_length(),
                   "addr64": int(config.axi_addr_width == 64)},
        "CONFIG_BUFFERS": {"a_depth_log2": config.a_depth.bit_length() - 1,
                           "b_depth_log2": config.b_depth.bit_length() - 1},
    }


def config_word(config: SATConfig) -> int:
    """The CONFIG register of a build."""
    return _register("CONFIG").pack(**config_fields(config)["CONFIG"])


def buffers_word(config: SATConfig) -> int:
    """The CONFIG_BUFFERS register of a build (the GEMM engine's buffer depths)."""
    return _register("CONFIG_BUFFERS").pack(**config_fields(config)["CONFIG_BUFFERS"])


def channels_word(memory: MemoryMap) -> int:
    """The MEM_CHANNELS register for a device memory of ``memory.channels`` windows of ``memory.window_bytes``."""
    return _register("MEM_CHANNELS").pack(channels=memory.channels, window_log2=memory.window_log2)


def _register(name: str) -> Register:
    return Register(name, 0, "ro", 0, "")


PERF_COUNTERS = (
    ("CYCLES", "clock cycles while BUSY (last command list)"),
    ("COMPUTE_CYCLES", "cycles the array advanced (a step was issued)"),
    ("STALL_CYCLES", "cycles BUSY with the array waiting for operands or result space"),
    ("MACS", "useful multiply-accumulates (kept weights only in sparse mode)"),
)


#: Device memory of one VCU1525 DDR4 channel, the default ``memory_bytes`` of a core (the card top has four:
#: ``sat.sw.memmap.CARD_MEMORY``).
DEFAULT_MEMORY_BYTES = 1 << 34


def register_map(config: SATConfig, memory_bytes: int = DEFAULT_MEMORY_BYTES, *, channels: int = 1) -> RegisterMap:
    """The register map of a build (identity registers carry the build parameters).

    ``memory_bytes`` is the device memory the core is connected to and ``channels`` the number of memory channels
    it is split into, equal windows from address 0 (:class:`sat.sw.memmap.MemoryMap`): properties of the card top
    level, reported in ``MEM_SIZE`` and ``MEM_CHANNELS`` (``memory_bytes`` is also used for ERR_BAD_ADDRESS); they
    do not change the address map.

    Raises
    ------
    ValueError
        If ``memory_bytes`` does not split into ``channels`` windows (:meth:`MemoryMap.split`).
    """
    memory = MemoryMap.split(memory_bytes, channels)
    nm_bits = _nm_bitmap(config)
    regs = [
        Register("ID", 0x000, "ro", SAT_ID, 'ASCII "SAT1"'),
        Register("VERSION", 0x004, "ro", VERSION, "major[23:16] minor[15:8] patch[7:0]"),
        Register("CONFIG", 0x008, "ro", config_word(config),
                 "rows-1[7:0] cols-1[15:8] fmt[16] (0 fp16, 1 bf16) adder_latency-1[23:20] "
                 "log2(axi_data_width/64)+1[27:24] addr64[28]"),
        Register("NM_SET_LO", 0x00C, "ro", nm_bits & 0xFFFFFFFF,
                 "supported N:M, bit (log2(M)-1)*16 + (N-1): M = 2, 4"),
        Register("CONFIG_HASH", 0x010, "ro", int(config.digest()[:8], 16), "first 32 bits of SATConfig.digest()"),
        Register("NM_SET_HI", 0x014, "ro", nm_bits >> 32, "supported N:M, continued: M = 8, 16"),
        Register("MEM_SIZE_LO", 0x018, "ro", memory_bytes & 0xFFFFFFFF, "device memory bytes [31:0]"),
        Register("MEM_SIZE_HI", 0x01C, "ro", memory_bytes >> 32, "device memory bytes [63:32]"),
        Register("CONTROL", 0x020, "wo", 0, "START[0] ABORT[1] CLEAR[2] (self-clearing)"),
        Register("STATUS", 0x024, "ro", 0, "BUSY[0] DONE[1] ERROR[2]"),
        Register("ERROR_CODE", 0x028, "ro", 0, "ErrorCode of the first error since CLEAR"),
        Register("ERROR_INDEX", 0x02C, "ro", 0, "descriptor index of that error"),
        Register("CMD_ADDR_LO", 0x030, "rw", 0, "command list address [31:0] (64-byte aligned)"),
        Register("CMD_ADDR_HI", 0x034, "rw", 0, "command list address [63:32]"),
        Register("CMD_COUNT", 0x038, "rw", 0, "descriptors in the list"),
        Register("CMD_DONE", 0x03C, "ro", 0, "descriptors completed in the current/last list"),
        Register("LAST_TAG", 0x040, "ro", 0, "tag of the last completed descriptor"),
        Register("IRQ_STATUS", 0x044, "w1c", 0, "DONE[0] ERROR[1] (write 1 to clear)"),
        Register("IRQ_ENABLE", 0x048, "rw", 0, "DONE[0] ERROR[1]"),
        Register("SCRATCH", 0x04C, "rw", 0, "free for software (bus check)"),
        Register("CLOCK_KHZ", 0x050, "ro", round(config.clock_hz / 1e3), "core clock the build was made for, kHz"),
        Register("CONFIG_BUFFERS", 0x054, "ro", buffers_word(config),
                 "log2(a_depth)[4:0] log2(b_depth)[12:8]: words per A bank and of B in the GEMM engine"),
        Register("MEM_CHANNELS", 0x058, "ro", channels_word(memory),
                 "channels[7:0] log2(window bytes)[13:8]: device memory in equal channel windows from address 0 "
                 "(channel k at k * MEM_SIZE / channels); 0 in cores older than this register: one channel"),
    ]
    for i, (name, doc) in enumerate(PERF_COUNTERS):
        regs.append(Register(f"{name}_LO", 0x080 + 8 * i, "ro", 0, f"{doc} [31:0] (latches _HI)"))
        regs.append(Register(f"{name}_HI", 0x084 + 8 * i, "ro", 0, f"{doc} [63:32]"))
    return RegisterMap(regs)
