"""``SATConfig``: the one description of an accelerator build.

The same frozen object elaborates the gateware, generates the driver's register map, feeds the cycle model and is
written into every build as JSON, so a bitstream, a simulation and a host script can always be matched up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .nm import check_nm
from .numerics import FORMATS

__all__ = ["SATConfig", "DEFAULT_NM_SET", "MAX_M", "MIN_DEPTH", "MAX_DEPTH", "READ_TRANSFERS",
           "LINE_FIFO_DEPTH"]

#: Largest group size M (the compressed format's 4-bit index field).
MAX_M = 16
#: Range of the operand buffer depths (words; powers of two).
MIN_DEPTH = 2
MAX_DEPTH = 1 << 20
#: DMA read transfers in flight in the core (``DMAReader``/``ReadArbiter``), and operand-load line records in
#: flight between the GEMM unit's issuer and loader. Sixteen cover a DDR4 channel's read latency (about 33
#: cycles, docs/dram.md) for most short reads; four left those loads latency-bound (docs/dram.md, "What the DRAM
#: costs the unit"). 32 would take ResNet-18 2:8 from 44.87 to 43.99 system Mcycles in the cycle model (the
#: chained loader takes a 64-channel conv piece's two beats in two cycles), but the model then overestimates the
#: RTL's DRAM time of a small WU convolution by 3.5 % (tests/test_conv_rtl.py::test_conv_timing_model_dram):
#: kept at 16 until that is understood.
READ_TRANSFERS = 16
LINE_FIFO_DEPTH = 16

DEFAULT_NM_SET: tuple[tuple[int, int], ...] = ((1, 4), (2, 4), (1, 8), (2, 8), (4, 8))


@dataclass(frozen=True)
class SATConfig:
    """Elaboration parameters of one SAT build.

    Parameters
    ----------
    rows, cols : int
        Systolic array size ``R x C`` (PEs).
    fmt : "fp16" or "bf16"
        GEMM operand format; accumulation is always FP32.
    nm_set : tuple of (n, m)
        N:M patterns the sparse datapath supports at run time (dense is always supported).
    adder_latency : int
        Pipeline depth ``L`` of the FP32 adder; the PEs interleave ``L`` outputs so the adder never stalls.
    axi_data_width, axi_addr_width : int
        Device-memory AXI4 master; 512 bits matches the XDMA/DDR4 datapath on the VCU1525.
    clock_hz : float
        Core clock (XDMA ``axi_aclk`` on the card), used by the cycle model to report time.
    a_depth, b_depth : int
        Operand buffers of the GEMM engine: words per A bank (one bank per array row, 32 elements, a whole 512-bit
        beat, a word) and words of B (``C`` elements a word); powers of two. They bound the reduction one command can
        have (``sat.sw.tiling.max_reduction``) and size the tiles; ``CONFIG_BUFFERS`` reports them.

    Raises
    ------
    ValueError
        For any parameter outside the supported range, with the allowed range in the message.
    """

    rows: int = 4
    cols: int = 4
    fmt: str = "fp16"
    nm_set: tuple[tuple[int, int], ...] = DEFAULT_NM_SET
    adder_latency: int = 4
    axi_data_width: int = 512
    axi_addr_width: int = 64
    clock_hz: float = 250e6
    a_depth: int = 256
    b_depth: int = 1024
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                raise ValueError(f"{name} must be an integer between 1 and 256, not {value!r}")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {self.fmt!r}")
        try:
            pairs = [(n, m) for n, m in self.nm_set]
        except (TypeError, ValueError):
            raise ValueError(f"nm_set must be a sequence of (n, m) pairs such as ((2, 8), (1, 4)), "
                             f"not {self.nm_set!r}") from None
        for n, m in pairs:
            check_nm(n, m)
        nm_set = tuple(sorted({(int(n), int(m)) for n, m in pairs}, key=lambda p: (p[1], p[0])))
        for n, m in nm_set:
            if n == m:
                raise ValueError(f"{n}:{m} is dense; dense mode is always built in, leave it out of nm_set")
            if m > MAX_M:
                raise ValueError(f"M={m} is too large: the compressed format indexes groups of at most {MAX_M}")
        object.__setattr__(self, "nm_set", nm_set)
        if (isinstance(self.adder_latency, bool) or not isinstance(self.adder_latency, int)
                or not 1 <= self.adder_latency <= 16):
            raise ValueError(f"adder_latency must be an integer between 1 and 16, not {self.adder_latency!r}")
        if self.axi_data_width not in (64, 128, 256, 512):
            raise ValueError(f"axi_data_width must be 64, 128, 256 or 512, not {self.axi_data_width!r}")
        if self.axi_addr_width not in (32, 64):
            raise ValueError(f"axi_addr_width must be 32 or 64, not {self.axi_addr_width!r}")
        for name in ("a_depth", "b_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not MIN_DEPTH <= value <= MAX_DEPTH \
                    or value & (value - 1):
                raise ValueError(f"{name} must be a power of two between {MIN_DEPTH} and {MAX_DEPTH}, not {value!r}")
        hz = self.clock_hz
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not 1e6 <= hz <= 1e9:
            raise ValueError(f"clock_hz must lie between 1 MHz and 1 GHz, not {self.clock_hz!r}")

    @property
    def max_m(self) -> int:
        """Largest group size M in ``nm_set`` (1 when only dense is built)."""
        return max((m for _, m in self.nm_set), default=1)

    def supports(self, n: int, m: int) -> bool:
        """True when ``n:m`` can run: dense (``n == m``) always, sparse when built into ``nm_set``."""
        return n == m or (n, m) in self.nm_set

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["nm_set"] = [list(p) for p in self.nm_set]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> SATConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a SATConfig must be given as a JSON object of its fields, not {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SATConfig keys {sorted(unknown)}; known keys are {sorted(known)}")
        d = dict(d)
        if "nm_set" in d:
            try:
                d["nm_set"] = tuple(tuple(p) for p in d["nm_set"])
            except TypeError:
                raise ValueError(f"nm_set must be a list of [n, m] pairs such as [[2, 8], [1, 4]], "
                                 f"not {d['nm_set']!r}") from None
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> SATConfig:
        """Read a configuration written by :meth:`to_json` (or a hand-written subset of its keys)."""
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the configuration {path}: {getattr(e, 'strerror', None) or e}") from None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None

    def digest(self) -> str:
        """Short stable hash, used to cache generated Verilog per configuration."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def replace(self, **changes) -> SATConfig:
        return dataclasses.replace(self, **changes)
