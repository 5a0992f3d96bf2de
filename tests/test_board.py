"""VCU1525 platform against the board reference, and a build plan prepared without Vivado.

The expected pins, signals and IO standards are parsed at test time from ``shared/reference/vcu1525.md`` (section 2,
its pointers into sections 1.5 and 1.6, and Appendix A), which sits beside the repository (``../shared`` from the
repository root, as in CI). Nothing expected is imported from ``boards/vcu1525.py``. The pin and IO-standard checks
go through the generated XDC of a design that wires every resource to a black box, i.e. what Vivado would read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import Instance
from amaranth.lib import io

from sat.boards.vcu1525 import VCU1525Platform, ddr4_rdimm_resource

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "vcu1525.md"

#: A port bit: (resource name, number, subsignal path, "io"/"p"/"n", bit index).
Key = tuple[str, int, tuple[str, ...], str, int]


# --------------------------------------------------------------------------------------------------------------------
# Reference parsing


@dataclass
class Reference:
    """What the reference document says the platform must contain."""

    part: str
    pins: dict[Key, str] = field(default_factory=dict)
    attrs: dict[Key, dict[str, str]] = field(default_factory=dict)
    #: Pins the reference lists but says are unused (DDR4 rank-1/2/3 pins): no resource may claim them.
    reserved: set[str] = field(default_factory=set)
    resource_count: int = 0
    pin_count: int = 0
    bitstream: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, number: int, path: tuple[str, ...], kind: str, pins: list[str],
            attrs: dict[str, str]) -> None:
        for bit, pin in enumerate(pins):
            key = (name, number, path, kind, bit)
            assert key not in self.pins, f"reference lists {key} twice"
            self.pins[key] = pin
            self.attrs[key] = dict(attrs)

    def add_diff(self, name: str, number: int, path: tuple[str, ...], p: list[str], n: list[str],
                 attrs: dict[str, str]) -> None:
        assert len(p) == len(n), f"{name} {number} {path}: {len(p)} P pins but {len(n)} N pins in the reference"
        self.add(name, number, path, "p", p, attrs)
        self.add(name, number, path, "n", n, attrs)


_PIN = r"\b[A-Z]{1,2}\d{1,2}\b"
_IOSTANDARDS = {"LVDS", "LVCMOS12", "SSTL12_DCI", "DIFF_SSTL12_DCI", "POD12_DCI", "DIFF_POD12_DCI"}


def _section(text: str, start: str, end: str) -> str:
    """Text between the heading lines that start with ``start`` and ``end``."""
    begin = text.index(start)
    return text[begin:text.index(end, begin + len(start))]


def _rows(section: str) -> list[list[str]]:
    """Cells of every data row of the markdown tables in ``section`` (headers and rules dropped)."""
    rows = []
    lines = section.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        if index + 1 < len(lines) and set(lines[index + 1]) <= set("|-: ") and "-" in lines[index + 1]:
            continue  # header row
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _pins(text: str) -> list[str]:
    return re.findall(_PIN, text)


def _attrs(cell: str) -> dict[str, str]:
    """Interpret a section-2 "attrs" cell: ``IOSTANDARD="LVDS", DQS_BIAS="TRUE"``, ``LVCMOS12, DRIVE 8``, ``none``."""
    if cell.startswith("none"):
        return {}
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', cell))
    for word in re.findall(r"\b[A-Z][A-Z0-9_]+\b", cell):
        if word in _IOSTANDARDS:
            attrs.setdefault("IOSTANDARD", word)
    if re.search(r"\bDQS_BIAS\b", cell):
        attrs.setdefault("DQS_BIAS", "TRUE")
    for name, value in re.findall(r"\b(DRIVE|SLEW|PULLUP) ([A-Z0-9]+)\b", cell):
        attrs[name] = value
    return attrs


def _qsfp_table(text: str) -> dict[str, tuple[str, str]]:
    """Section 1.5: signal -> (QSFP0 cell, QSFP1 cell)."""
    return {row[0]: (row[1], row[2]) for row in _rows(_section(text, "### 1.5", "### 1.6"))}


def _ddr4_tables(text: str) -> dict[int, dict[str, str]]:
    """Appendix A: channel -> signal -> pins cell."""
    appendix = text[text.index("## Appendix A"):]
    channels = {}
    for chunk in re.split(r"^#### DDR4 channel C", appendix, flags=re.M)[1:]:
        channels[int(chunk[0])] = {row[0]: row[1] for row in _rows(chunk)}
    assert sorted(channels) == [0, 1, 2, 3], "Appendix A should list DDR4 channels C0..C3"
    return channels


def _ddr4_iostandards(text: str) -> dict[str, str]:
    """Section 1.6 IO-standard bullet -> {addr/cmd, ck, dq, dqs, reset_n: standard}."""
    line = next(line for line in _section(text, "### 1.6", "### 1.7").split("\n* ") if "IO standards" in line)
    found = dict(re.findall(r"([\w/]+) `(\w+)`", line))
    assert set(found) >= {"addr/cmd", "ck", "dq", "dqs", "reset_n"}, f"cannot read the DDR4 IO standards: {found}"
    return found


def _add_ddr4(ref: Reference, text: str) -> None:
    standards = _ddr4_iostandards(text)
    cmd = {"IOSTANDARD": standards["addr/cmd"]}
    for number, table in _ddr4_tables(text).items():
        def cell(prefix: str, table: dict[str, str] = table) -> str:
            (key,) = [k for k in table if k.startswith(prefix)]
            return table[key]

        ref.add("ddr4", number, ("adr",), "io", _pins(cell("adr[0:16]")), cmd)
        ref.add("ddr4", number, ("ba",), "io", _pins(cell("ba[0:1]")), cmd)
        ref.add("ddr4", number, ("bg",), "io", _pins(cell("bg[0:1]")), cmd)
        ref.add("ddr4", number, ("act_n",), "io", _pins(cell("act_n")), cmd)
        ck_t, ck_c = _pins(cell("ck_t / ck_c"))
        ref.add_diff("ddr4", number, ("ck",), [ck_t], [ck_c], {"IOSTANDARD": standards["ck"]})
        cke, cs_n, odt = _pins(cell("cke0 / cs0_n / odt0"))
        ref.add("ddr4", number, ("cke",), "io", [cke], cmd)
        ref.add("ddr4", number, ("cs_n",), "io", [cs_n], cmd)
        ref.add("ddr4", number, ("odt",), "io", [odt], cmd)
        ref.add("ddr4", number, ("par",), "io", _pins(cell("par")), cmd)
        ref.add("ddr4", number, ("reset_n",), "io", _pins(cell("reset_n")), {"IOSTANDARD": standards["reset_n"]})
        dq_rows = sorted((int(re.match(r"dq\[(\d+):", k).group(1)), v) for k, v in table.items()
                         if k.startswith("dq["))
        dq = [pin for _, pins in dq_rows for pin in _pins(pins)]
        assert len(dq) == 72, f"C{number}: reference lists {len(dq)} DQ pins, x4 ECC RDIMMs have 72"
        ref.add("ddr4", number, ("dq",), "io", dq, {"IOSTANDARD": standards["dq"]})
        dqs_t, dqs_c = _pins(cell("dqs_t[0:17]")), _pins(cell("dqs_c[0:17]"))
        assert len(dqs_t) == 18, f"C{number}: reference lists {len(dqs_t)} DQS pairs, x4 ECC RDIMMs have 18"
        ref.add_diff("ddr4", number, ("dqs",), dqs_t, dqs_c, {"IOSTANDARD": standards["dqs"]})
        ref.reserved |= set(_pins(cell("unused rank")))


def _add_qsfp(ref: Reference, text: str, attrs_cell: str) -> None:
    table = _qsfp_table(text)
    sideband = _attrs(attrs_cell)  # "sideband LVCMOS12 (PULLUP on modprs/int)"
    with_pullup = set(re.search(r"PULLUP on ([\w/]+)", attrs_cell).group(1).split("/"))
    assert with_pullup == {"modprs", "int"}, f"unexpected QSFP pull-up list {with_pullup}"
    pullup = {**sideband, "PULLUP": "TRUE"}
    for number in (0, 1):
        def col(prefix: str, number: int = number) -> list[str]:
            (key,) = [k for k in table if k.startswith(prefix)]
            return _pins(table[key][number])

        ref.add_diff("qsfp", number, ("rx",), col("RX P"), col("RX N"), {})
        ref.add_diff("qsfp", number, ("tx",), col("TX P"), col("TX N"), {})
        ref.add("qsfp", number, ("modsel",), "io", col("ModSelL"), sideband)
        ref.add("qsfp", number, ("reset",), "io", col("ResetL"), sideband)
        ref.add("qsfp", number, ("modprs",), "io", col("ModPrsL"), pullup)
        ref.add("qsfp", number, ("int",), "io", col("IntL"), pullup)
        ref.add("qsfp", number, ("lpmode",), "io", col("LPMode"), sideband)
        for refclk in (0, 1):
            p, n = col(f"MGTREFCLK{refclk} P/N")
            ref.add_diff(f"qsfp{number}_refclk", refclk, (), [p], [n], {})
        ref.add(f"qsfp{number}_clkgen", 0, ("reset",), "io", col("clock-gen `REFCLK_RESET`"), sideband)
        ref.add(f"qsfp{number}_clkgen", 0, ("fs",), "io", col("clock-gen `FS[0]`"), sideband)


def parse_reference(text: str) -> Reference:
    """Build the expected pin map from the reference document's section 2 table and the tables it points to."""
    part = re.search(r"Vivado part: \*\*`([^`]+)`\*\*", text).group(1)
    ref = Reference(part=part)
    table2 = _section(text, "## 2.", "## 3.")
    counts = re.search(r"(\d+) resources / (\d+) pins", table2)
    ref.resource_count, ref.pin_count = int(counts.group(1)), int(counts.group(2))
    ref.bitstream = {name: value for name, value in re.findall(r"`([A-Z][\w.]*) ([\w.]+)`",
                                                                _section(text, "### 1.7", "### 1.8"))}
    handled = set()
    for resource, constructor, pins, attrs_cell in _rows(table2):
        attrs = _attrs(attrs_cell)
        if resource.startswith("`clk300`"):
            for number, p, n in re.findall(r"(\d+): (\w+)/(\w+)", pins):
                ref.add_diff("clk300", int(number), (), [p], [n], attrs)
        elif resource.startswith("`clk_si570`"):
            p, n = _pins(pins)
            ref.add_diff("clk_si570", 0, (), [p], [n], attrs)
        elif resource.startswith("`rst`"):
            ref.add("rst", 0, (), "io", _pins(pins), attrs)
        elif resource.startswith("`led`"):
            for number, pin in enumerate(_pins(pins)):
                ref.add("led", number, (), "io", [pin], attrs)
        elif resource.startswith("`switch`"):
            for number, pin in enumerate(_pins(constructor)):
                ref.add("switch", number, (), "io", [pin], attrs)
        elif resource.startswith("`uart` 0"):
            for name, pin in re.findall(r'(rx|tx)="(\w+)"', constructor):
                ref.add("uart", 0, (name,), "io", [pin], attrs)
        elif resource.startswith("`i2c`"):
            for name, pin in re.findall(r'(scl|sda)="(\w+)"', constructor):
                ref.add("i2c", 0, (name,), "io", [pin], attrs)
            ref.add("i2c_mux_rst", 0, (), "io", re.findall(r'PinsN\("(\w+)"\)', constructor),
                    {"IOSTANDARD": attrs["IOSTANDARD"]})  # DRIVE/SLEW belong to SCL/SDA (section 1.3)
        elif resource.startswith("`pcie_x16`"):
            sub = re.search(r"`\.(\w+)`", resource).group(1)
            if sub in ("rx", "tx"):
                p_text, n_text = pins.split("N:")
                ref.add_diff("pcie_x16", 0, (sub,), _pins(p_text), _pins(n_text), attrs)
            elif sub == "clk":
                p, n = _pins(pins)
                ref.add_diff("pcie_x16", 0, (sub,), [p], [n], attrs)
            else:
                ref.add("pcie_x16", 0, (sub,), "io", _pins(pins), attrs)
        elif resource.startswith("`qsfp`"):
            _add_qsfp(ref, text, attrs_cell)
        elif resource.startswith(("`qsfp{0,1}_refclk`", "`qsfp{0,1}_clkgen`")):
            pass  # added with `qsfp` from the section 1.5 table
        elif resource.startswith("`ddr4` "):
            _add_ddr4(ref, text)
        elif resource.startswith("`ddr4_reset_gate`"):
            gate, gpio, uart = pins.split(";")
            ref.add("ddr4_reset_gate", 0, (), "io", _pins(gate), attrs)
            ref.add("msp_gpio", 0, (), "io", _pins(gpio), attrs)
            for name, pin in re.findall(r"(rx|tx) (\w+)", uart):
                ref.add("uart", 1, (name,), "io", [pin], attrs)
        else:
            raise AssertionError(f"test_board.py does not know the section-2 row {resource!r}: extend the parser")
        handled.add(resource)
    assert len(handled) == 16, f"expected the 16 rows of the section-2 table, found {len(handled)}"
    return ref


@pytest.fixture(scope="module")
def reference() -> Reference:
    if not REFERENCE.is_file():
        pytest.skip(f"board reference not found at {REFERENCE} (expected shared/ beside the repository root)")
    return parse_reference(REFERENCE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------------------------
# Platform side


def _platform_pins(platform: VCU1525Platform) -> Counter[str]:
    """Every package pin named by any resource (P and N sides), counted."""
    pins: Counter[str] = Counter()

    def walk(node: object) -> None:
        for item in node.ios:
            if hasattr(item, "ios"):
                walk(item)
            elif hasattr(item, "p"):
                pins.update(item.p.names)
                pins.update(item.n.names)
            else:
                pins.update(item.names)

    for resource in platform.resources.values():
        walk(resource)
    return pins


class _AllResources(Elaboratable):
    """Every resource requested with ``dir="-"`` and wired, raw, to one black box, so all get constraints."""

    def elaborate(self, platform: VCU1525Platform) -> Module:
        m = Module()
        ports: dict[str, object] = {}

        def wire(node: object, port: object, name: str) -> None:
            subsignals = [item for item in node.ios if hasattr(item, "ios")]
            if subsignals:
                for sub in subsignals:
                    wire(sub, getattr(port, sub.name), f"{name}_{sub.name}")
            elif isinstance(port, io.DifferentialPort):
                ports[f"io_{name}_p"], ports[f"io_{name}_n"] = port.p, port.n
            else:
                ports[f"io_{name}"] = port.io

        for (name, number), resource in platform.resources.items():
            wire(resource, platform.request(name, number, dir="-"), f"{name}_{number}")
        m.submodules.board = Instance("board_blackbox", **ports)
        return m


def _xdc_ports(xdc: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Parse a generated XDC into port -> package pin and port -> {property: value}."""
    pins: dict[str, str] = {}
    attrs: dict[str, dict[str, str]] = {}
    for prop, value, quoted in re.findall(r'^set_property (\S+) "?([^"\s]+)"? \[get_ports "([^"]+)"\]$', xdc, re.M):
        port = re.sub(r"\\(.)", r"\1", quoted)  # Tcl-quoted: ddr4_0__dq__io\[3\]
        if prop == "PACKAGE_PIN":
            assert port not in pins, f"{port} placed twice"
            pins[port] = value
        else:
            attrs.setdefault(port, {})[prop] = value
    return pins, attrs


def _port_key(port: str) -> Key:
    """``ddr4_0__dqs__p[3]`` -> ("ddr4", 0, ("dqs",), "p", 3)."""
    match = re.fullmatch(r"(.+?)(?:\[(\d+)\])?", port)
    parts = match.group(1).split("__")
    name, number = parts[0].rsplit("_", 1)
    return name, int(number), tuple(parts[1:-1]), parts[-1], int(match.group(2) or 0)


@pytest.fixture(scope="module")
def full_plan() -> dict[str, str]:
    plan = VCU1525Platform().prepare(_AllResources(), name="vcu1525_all")
    return {name: content for name, content in plan.files.items() if isinstance(content, str)}


# --------------------------------------------------------------------------------------------------------------------
# Tests


def test_part_string() -> None:
    platform = VCU1525Platform()
    assert platform.family == "ultrascaleplus"
    assert platform._part == "xcvu9p-fsgd2104-2L-e"


def test_part_string_matches_the_reference(reference: Reference) -> None:
    assert VCU1525Platform()._part == reference.part


def test_no_pin_is_used_twice() -> None:
    # The reference names no shared pin on this board (its section 2 was checked for "no pin used twice").
    twice = {pin: n for pin, n in _platform_pins(VCU1525Platform()).items() if n > 1}
    assert not twice, f"pins used by more than one resource bit: {twice}"


def test_pin_names_are_balls_of_the_fsgd2104_package() -> None:
    # 46 x 46 ball grid: rows A..BF without I, O, Q, S, X, Z; columns 1..46.
    letters = "ABCDEFGHJKLMNPRTUVWY"
    rows = [*letters, *("A" + c for c in letters), *("B" + c for c in "ABCDEF")]
    balls = {f"{row}{col}" for row in rows for col in range(1, 47)}
    assert len(rows) == 46
    bad = sorted(set(_platform_pins(VCU1525Platform())) - balls)
    assert not bad, f"not balls of an FSGD2104 package: {bad}"


def test_resource_and_pin_counts(reference: Reference) -> None:
    platform = VCU1525Platform()
    assert len(platform.resources) == reference.resource_count
    assert sum(_platform_pins(platform).values()) == reference.pin_count == len(reference.pins)


def test_unused_rank_pins_are_not_claimed(reference: Reference) -> None:
    # Appendix A lists the rank-1/2/3 DDR4 pins (ck1, cke1, cs1..3_n, odt1) as unused with the stock single-rank
    # DIMMs; they belong to the DDR4 banks, so no other resource may take them.
    assert len(reference.reserved) == 4 * 7
    assert not reference.reserved & set(_platform_pins(VCU1525Platform()))


def test_every_reference_pin_is_constrained_to_the_same_signal(reference: Reference, full_plan: dict[str, str]) -> None:
    xdc_pins, _ = _xdc_ports(full_plan["vcu1525_all.xdc"])
    got = {_port_key(port): pin for port, pin in xdc_pins.items()}
    missing = {key: pin for key, pin in reference.pins.items() if got.get(key) != pin}
    assert not missing, f"reference pins not on the same signal in the XDC (first 10): {list(missing.items())[:10]}"
    extra = set(got) - set(reference.pins)
    assert not extra, f"XDC constrains signals the reference does not list: {sorted(extra)[:10]}"


def test_io_standards_and_attributes_match(reference: Reference, full_plan: dict[str, str]) -> None:
    xdc_pins, xdc_attrs = _xdc_ports(full_plan["vcu1525_all.xdc"])
    wrong = {}
    for port in xdc_pins:
        key = _port_key(port)
        expected, got = reference.attrs[key], xdc_attrs.get(port, {})
        if {k: v.upper() for k, v in got.items()} != {k: v.upper() for k, v in expected.items()}:
            wrong[port] = (got, expected)
    assert not wrong, f"(got, expected) attributes differ (first 10): {list(wrong.items())[:10]}"


def test_gt_pins_carry_no_io_standard(full_plan: dict[str, str]) -> None:
    xdc_pins, xdc_attrs = _xdc_ports(full_plan["vcu1525_all.xdc"])
    gt = [port for port in xdc_pins if re.match(r"(pcie_x16_0__(clk|rx|tx)|qsfp_\d__(rx|tx)|qsfp\d_refclk)", port)]
    assert len(gt) == 2 + 64 + 2 * 16 + 8
    assert not [port for port in gt if port in xdc_attrs]


def test_clock_constraints(full_plan: dict[str, str]) -> None:
    periods = dict(re.findall(r"create_clock -name (\S+) -period (\S+)", full_plan["vcu1525_all.xdc"]))
    expected = {**{f"clk300_{i}__p": 1e9 / 300e6 for i in range(4)}, "pcie_x16_0__clk__p": 10.0,
                "clk_si570_0__p": 1e9 / 156.25e6,
                **{f"qsfp{q}_refclk_0__p": 1e9 / 156.25e6 for q in (0, 1)},
                **{f"qsfp{q}_refclk_1__p": 1e9 / 161.1328125e6 for q in (0, 1)}}
    assert {name: pytest.approx(period) for name, period in expected.items()} == \
        {name: float(period) for name, period in periods.items()}


def test_active_low_signals_are_inverted() -> None:
    # Section 1.3: CPU_RESET, IIC_MUX_RESET_B and PERST# are active low; section 1.5: ModSelL, ResetL, ModPrsL, IntL.
    platform = VCU1525Platform()
    inverted = {("rst", 0): [()], ("i2c_mux_rst", 0): [()], ("pcie_x16", 0): [("perst",)],
                **{("qsfp", q): [("modsel",), ("reset",), ("modprs",), ("int",)] for q in (0, 1)}}
    for (name, number), paths in inverted.items():
        group = platform.request(name, number, dir="-")
        for path in paths:
            port = group
            for sub in path:
                port = getattr(port, sub)
            assert port.invert == (True,), (name, number, path)
    # The DDR4 subsignals go raw to the MIG IP, so none of them may rely on an inversion.
    ddr4 = platform.request("ddr4", 0, dir="-")
    for sub in ("adr", "ba", "bg", "act_n", "ck", "cke", "cs_n", "odt", "par", "reset_n", "dq", "dqs"):
        assert not any(getattr(ddr4, sub).invert), sub


def test_bitstream_properties_follow_the_reference(reference: Reference, full_plan: dict[str, str]) -> None:
    design = dict(re.findall(r"^set_property (\S+) (\S+) \[current_design\]$", full_plan["vcu1525_all.xdc"], re.M))
    assert {"CFGBVS", "CONFIG_VOLTAGE", "BITSTREAM.CONFIG.OVERTEMPSHUTDOWN"} <= set(design)
    for name, value in design.items():
        (ref_value,) = [v for k, v in reference.bitstream.items() if name.endswith(k)]
        assert value.upper() == ref_value.upper(), name
    # Deliberately not UNUSEDPIN PULLUP: it would raise the active-high DDR4_RESET_GATE when a design leaves it unused.
    assert not any(name.endswith("UNUSEDPIN") for name in design)


class _Blinky(Elaboratable):
    """LED counter on the default 300 MHz clock."""

    def elaborate(self, platform: VCU1525Platform) -> Module:
        m = Module()
        counter = Signal(28)
        m.d.sync += counter.eq(counter + 1)
        for index in range(3):
            led = m.submodules[f"led{index}"] = io.Buffer("o", platform.request("led", index, dir="-"))
            m.d.comb += led.o.eq(counter[-1 - index])
        return m


def test_blinky_build_plan(reference: Reference) -> None:
    plan = VCU1525Platform().build(_Blinky(), name="blinky", do_build=False)
    files = {name: content for name, content in plan.files.items() if isinstance(content, str)}
    assert {"blinky.v", "blinky.tcl", "blinky.xdc", "build_blinky.sh"} <= set(files)
    xdc, tcl = files["blinky.xdc"], files["blinky.tcl"]
    assert f"create_project -force -name blinky -part {reference.part}" in tcl
    wanted = {key: pin for key, pin in reference.pins.items()
              if key[0] == "led" or key[:2] == ("clk300", 0) or key[0] == "rst"}
    assert len(wanted) == 3 + 2 + 1
    for (name, number, _, kind, _), pin in wanted.items():
        assert f'set_property PACKAGE_PIN {pin} [get_ports "{name}_{number}__{kind}"]' in xdc
    assert "set_property LOC" not in xdc
    assert re.search(r'create_clock -name clk300_0__p -period 3\.333', xdc)
    assert "IBUFDS" in files["blinky.v"] and "STARTUPE3" in files["blinky.v"]


def test_ddr4_resource_rejects_wrong_widths() -> None:
    from sat.boards.vcu1525 import DDR4_CHANNELS

    with pytest.raises(ValueError, match="DDR4 channel 5: dq must list 72 pins, not 64"):
        ddr4_rdimm_resource(5, DDR4_CHANNELS[0]._replace(dq=" ".join(DDR4_CHANNELS[0].dq.split()[:64])))
