"""The generated Vivado tree (``sat build vcu1525``) and ``sat generate``.

There is no Vivado here, so the Tcl is executed by a real Tcl interpreter (Python's ``tkinter.Tcl``) in which every
Vivado command is recorded by an ``unknown`` handler (and the few whose results the scripts use return plausible
values). That checks the Tcl parses and runs (quoting, braces, variables), and the recorded calls are compared
with the reference document's facts (``shared/reference/vcu1525.md`` sections 1.4, 1.6, 1.7, 3.4).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sat.boards import cli as board_cli
from sat.boards.vivado import TOP_NAME, VIVADO_MIN_VERSION, write_core_tree, write_vivado_tree
from sat.sw import regmap
from sat.sw.cli import build_parser, main
from sat.sw.config import SATConfig
from sat.sw.memmap import CARD_MEMORY

REPO_ROOT = Path(__file__).resolve().parents[1]

tkinter = pytest.importorskip("tkinter", reason="tkinter (Tcl) is needed to run the generated Tcl")

SMALL = SATConfig(rows=2, cols=2, nm_set=((2, 4),))

MOCK = r"""
set ::calls {}
proc unknown {args} {
    lappend ::calls $args
    if {[string match get_* [lindex $args 0]]} { return [lindex $args end] }
    return ""
}
proc version {args} { return $::mock_version }
foreach cmd {create_bd_cell create_bd_intf_port create_bd_port create_pblock} {
    proc $cmd {args} [string map [list CMD $cmd] {lappend ::calls [list CMD {*}$args]; return [lindex $args end]}]
}
proc get_property {name args} {
    lappend ::calls [list get_property $name {*}$args]
    if {$name eq "PROGRESS"} { return "100%" }
    if {$name eq "SLACK"} { return $::mock_slack }
    if {[string match CONFIG.* $name] && [info exists ::mock_props($name)]} { return $::mock_props($name) }
    return ""
}
proc write_bitstream {args} {
    lappend ::calls [list write_bitstream {*}$args]
    set f [open [lindex $args end] w]; puts $f fallback; close $f
}
proc launch_runs {run args} {
    lappend ::calls [list launch_runs $run {*}$args]
    if {$run eq "impl_1"} {
        file mkdir vivado/sat_card.runs/impl_1
        set f [open vivado/sat_card.runs/impl_1/sat_card.bit w]; puts $f bit; close $f
    }
}
"""


def run_tcl(directory, script: str, *, version: str = "2023.2", slack: str = "0.125", props=None):
    """Source ``script`` from ``directory`` with Vivado mocked; returns the recorded calls (lists of words)."""
    tcl = tkinter.Tcl()
    tcl.eval(MOCK)
    tcl.eval(f"set ::mock_version {version}; set ::mock_slack {slack}")
    for k, v in (props or {}).items():
        tcl.eval(f"set ::mock_props({k}) {v}")
    tcl.eval(f"cd {{{directory}}}")
    tcl.eval(f"source {{{directory / script}}}")
    n = int(tcl.eval("llength $::calls"))
    return [list(tcl.splitlist(tcl.eval(f"lindex $::calls {i}"))) for i in range(n)]


def properties(calls, target: str) -> dict[str, str]:
    """CONFIG.* values of ``set_property -dict [list ...] [get_ips target]`` calls."""
    out = {}
    for call in calls:
        if call[:2] == ["set_property", "-dict"] and target in call[-1]:
            words = list(tkinter.Tcl().splitlist(call[2]))
            out.update({words[i].removeprefix("CONFIG."): words[i + 1] for i in range(0, len(words), 2)})
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_vivado_tree(tmp_path_factory.mktemp("tree"), SMALL)


def test_tree_has_every_file(tree):
    names = {str(p) for p in tree.files}
    assert names == {f"{TOP_NAME}.v", f"{TOP_NAME}.xdc", "timing.xdc", "floorplan.xdc", "ip/xdma_0.tcl",
                     "ip/ddr4_0.tcl", "ip/ddr4_1.tcl", "ip/ddr4_2.tcl", "ip/ddr4_3.tcl",
                     "ip/smartconnect_0.tcl", "build.tcl", "program.tcl", "build.sh", "sat_config.json",
                     "regmap.json", "sat_regs.h", "stubs/ip_stubs.v", "README.md"}
    for name in names:
        assert (tree.directory / name).stat().st_size > 0, name
    assert (tree.directory / "build.sh").stat().st_mode & 0o111
    assert SATConfig.load(tree.directory / "sat_config.json") == SMALL
    assert f"module {TOP_NAME}(" in (tree.directory / f"{TOP_NAME}.v").read_text()


def test_xdma_ip_matches_the_reference(tree):
    calls = run_tcl(tree.directory, "ip/xdma_0.tcl")
    assert calls[0] == ["create_ip", "-name", "xdma", "-vendor", "xilinx.com", "-library", "ip", "-module_name",
                        "xdma_0"]
    p = properties(calls, "xdma_0")
    # reference 1.4 / 3.4: Gen3 x16, block X1Y2, quad 227, 512-bit AXI at 250 MHz, AXI-Lite master, ID 903F
    expected = {"pl_link_cap_max_link_speed": "8.0_GT/s", "pl_link_cap_max_link_width": "X16",
                "pcie_blk_locn": "X1Y2", "select_quad": "GTY_Quad_227", "en_gt_selection": "true",
                "mode_selection": "Advanced", "axi_data_width": "512_bit", "axisten_freq": "250",
                "axilite_master_en": "true", "pf0_device_id": "903F", "xdma_axi_intf_mm": "AXI_Memory_Mapped",
                "xdma_num_usr_irq": "1", "pciebar2axibar_axil_master": "0x00000000"}
    assert {k: p.get(k) for k in expected} == expected


@pytest.mark.parametrize("channel", range(4))
def test_ddr4_ip_matches_the_reference(tree, channel):
    """Four controllers, one per DIMM slot, each with the board preset of the stock RDIMM (reference 1.6: the same
    preset for every slot)."""
    name = f"ddr4_{channel}"
    calls = run_tcl(tree.directory, f"ip/{name}.tcl")
    assert calls[0][:2] == ["create_ip", "-name"] and "ddr4" in calls[0] and calls[0][-1] == name
    assert len([c for c in calls if c[0] == "create_ip"]) == 1
    p = properties(calls, name)
    expected = {"C0.DDR4_MemoryType": "RDIMMs", "C0.DDR4_MemoryPart": "MTA18ASF2G72PZ-2G3",
                "C0.DDR4_DataWidth": "72", "C0.DDR4_Ecc": "true", "C0.DDR4_DataMask": "NONE",
                "C0.DDR4_TimePeriod": "833", "C0.DDR4_InputClockPeriod": "3332", "C0.DDR4_CasLatency": "17",
                "C0.DDR4_CasWriteLatency": "12", "C0.DDR4_AxiDataWidth": "512", "C0.DDR4_AxiAddressWidth": "34",
                "C0.DDR4_AxiSelection": "true", "System_Clock": "Differential"}
    assert {k: p.get(k) for k in expected} == expected
    # the header names the slot's reference clock and SLR as the reference's Appendix A does
    text = (tree.directory / f"ip/{name}.tcl").read_text()
    clock = {0: "AY37/AY38", 1: "AW20/AW19", 2: "F32/E32", 3: "J16/H16"}[channel]
    assert f"clk300[{channel}] {clock}" in text and f"C{channel}" in text


def test_smartconnect_block_design(tree):
    calls = run_tcl(tree.directory, "ip/smartconnect_0.tcl")
    assert calls[0] == ["create_bd_design", "smartconnect_0"]
    assert any(c[:3] == ["create_bd_cell", "-type", "ip"] and "xilinx.com:ip:smartconnect:1.0" in c for c in calls)
    ports = {c[-1] for c in calls if c[0] in ("create_bd_intf_port", "create_bd_port")}
    assert ports == {"S00_AXI", "S01_AXI", "M00_AXI", "M01_AXI", "M02_AXI", "M03_AXI", "aclk", "aclk1", "aclk2",
                     "aclk3", "aclk4", "aresetn", "aresetn1", "aresetn4"}
    smc = properties(calls, "smc")
    assert (smc["NUM_SI"], smc["NUM_MI"], smc["NUM_CLKS"]) == ("2", "4", "5")
    # each master port on its channel's clock: aclk<k+1> is associated with M0<k>_AXI
    assoc = {c[-1]: c[2] for c in calls if c[:2] == ["set_property", "CONFIG.ASSOCIATED_BUSIF"]}
    assert assoc == {"aclk": "S00_AXI:S01_AXI", **{f"aclk{k + 1}": f"M{k:02d}_AXI" for k in range(4)}}
    words = [c[0] for c in calls]
    assert words.index("validate_bd_design") > max(i for i, w in enumerate(words) if w == "assign_bd_address")
    assert ["validate_bd_design"] in calls and ["save_bd_design"] in calls
    # the script stops when IP integrator propagated an ID width the card top was not written for
    with pytest.raises(tkinter.TclError, match="M00_AXI ID_WIDTH is 4, the card top expects 0"):
        run_tcl(tree.directory, "ip/smartconnect_0.tcl", props={"CONFIG.ID_WIDTH": 4})


def _bd_connections(calls) -> dict[str, str]:
    """Interface connections of the recorded block design, both ways: ``{"smc/M00_AXI": "rs_c0/S_AXI", ...}``
    (pins as ``cell/pin``, external ports by name)."""
    out = {}
    for c in calls:
        if c[0] == "connect_bd_intf_net":
            a, b = (w.strip() for w in c[1:3])
            out[a] = b
            out[b] = a
    return out


def test_address_map_four_windows_reachable_from_every_master(tree):
    """XDMA's DMA (S00) and SAT (S01) each reach all four channels; the windows are 16 GiB, side by side from 0,
    do not overlap, and are the ones the driver's memory map (sat.sw.memmap.CARD_MEMORY) places tensors in."""
    calls = run_tcl(tree.directory, "ip/smartconnect_0.tcl")
    windows: dict[str, set[tuple[int, int, str]]] = {}
    for c in calls:
        if c[0] == "assign_bd_address":
            space = c[c.index("-target_address_space") + 1]
            base = int(c[c.index("-offset") + 1], 16)
            assert c[c.index("-range") + 1] == "16G"
            windows.setdefault(space, set()).add((base, base + (16 << 30), c[-2].removesuffix("/Reg")))
    assert set(windows) == {"S00_AXI", "S01_AXI"}
    for space, wins in windows.items():
        spans = sorted(wins)
        assert [mi for _, _, mi in spans] == ["M00_AXI", "M01_AXI", "M02_AXI", "M03_AXI"], space
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(3)), f"{space}: overlapping windows {spans}"
        assert [(lo, hi) for lo, hi, _ in spans] == CARD_MEMORY.windows()
        assert spans[-1][1] == 64 << 30
    # and M0<k>_AXI leads to DDR4 C<k>: the card top wires it to ddr4_c<k>'s AXI slave (tests/test_card.py); here
    # every M0<k>_AXI port is driven, directly or through a register slice, by smc/M0<k>_AXI
    conn = _bd_connections(calls)
    for k in range(4):
        mi = f"M{k:02d}_AXI"
        peer = conn[f"smc/{mi}"]
        assert peer == mi or (peer.endswith("/S_AXI") and conn[peer.replace("/S_AXI", "/M_AXI")] == mi), peer
    # the slaves reach the crossbar: both external slave ports are connected to SmartConnect's SI of that name
    assert conn["S00_AXI"] == "smc/S00_AXI" and conn["S01_AXI"] == "smc/S01_AXI"


def test_register_slices_on_the_slr_crossings(tree):
    """C0 (SLR0) and C3 (SLR2) are reached from SmartConnect (SLR1, with PCIe) through an AXI Register Slice in
    Multi SLR Crossing mode on all five channels (PG373 user value 15, one crossing), clocked and reset in their
    channel's domain; C1 and C2 (SLR1) are not."""
    calls = run_tcl(tree.directory, "ip/smartconnect_0.tcl")
    cells = [c for c in calls if c[0] == "create_bd_cell"]
    slices = {c[-1]: c[c.index("-vlnv") + 1] for c in cells if "axi_register_slice" in " ".join(c)}
    assert slices == {"rs_c0": "xilinx.com:ip:axi_register_slice:2.1", "rs_c3": "xilinx.com:ip:axi_register_slice:2.1"}
    conn = _bd_connections(calls)
    nets = [c for c in calls if c[0] == "connect_bd_net"]
    for k, rs in ((0, "rs_c0"), (3, "rs_c3")):
        p = properties(calls, rs)
        assert {ch: p[f"REG_{ch}"] for ch in ("AW", "AR", "W", "R", "B")} == dict.fromkeys(
            ("AW", "AR", "W", "R", "B"), "15")
        assert p["NUM_SLR_CROSSINGS"] == "1"
        assert conn[f"{rs}/S_AXI"] == f"smc/M{k:02d}_AXI" and conn[f"{rs}/M_AXI"] == f"M{k:02d}_AXI"
        assert ["connect_bd_net", f"aclk{k + 1}", f"{rs}/aclk"] in nets
        assert ["connect_bd_net", f"aresetn{k + 1}", f"{rs}/aresetn"] in nets
    for k in (1, 2):
        assert conn[f"smc/M{k:02d}_AXI"] == f"M{k:02d}_AXI"


def _reference_slrs() -> dict[int, int] | None:
    """SLR of each DDR4 channel from the reference's Appendix A headings (``... C0 — banks ... (SLR0) ...``)."""
    for shared in (REPO_ROOT.parent / "shared", REPO_ROOT.parents[1] / "shared"):
        ref = shared / "reference" / "vcu1525.md"
        if ref.is_file():
            found = re.findall(r"^#### DDR4 channel C(\d) .*\(SLR(\d)\)", ref.read_text(encoding="utf-8"), re.M)
            return {int(c): int(slr) for c, slr in found}
    return None


def _pblocks(calls) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``({pblock: [cell patterns / filters added]}, {pblock: region})`` from recorded floorplan.xdc calls."""
    cells: dict[str, list[str]] = {}
    regions = {}
    for c in calls:
        if c[0] == "add_cells_to_pblock":
            cells.setdefault(c[1], []).append(c[-1])
        elif c[0] == "resize_pblock":
            regions[c[1]] = c[c.index("-add") + 1]
    return cells, regions


def test_floorplan_follows_the_slr_plan(tree):
    """floorplan.xdc: each DDR4 controller in the SLR of its banks (the reference's Appendix A: C0 SLR0, C1 and C2
    SLR1, C3 SLR2), XDMA (PCIe in SLR1, reference 1.4), SmartConnect and SAT's bus side in SLR1, and each
    register slice split across the crossing: its SmartConnect half in SLR1, its controller half beside the
    controller."""
    calls = run_tcl(tree.directory, "floorplan.xdc")
    assert [c[1] for c in calls if c[0] == "create_pblock"] == ["pblock_slr0", "pblock_slr1", "pblock_slr2"]
    cells, regions = _pblocks(calls)
    assert regions == {"pblock_slr0": "SLR0", "pblock_slr1": "SLR1", "pblock_slr2": "SLR2"}
    where: dict[str, str] = {}
    for pb, added in cells.items():
        for entry in (e for e in added if not e.startswith("NAME =~")):
            for word in tkinter.Tcl().splitlist(entry):
                assert word not in where, f"{word} is in {where.get(word)} and {pb}"
                where[word] = pb
    slrs = _reference_slrs() or {0: 0, 1: 1, 2: 1, 3: 2}
    assert slrs == {0: 0, 1: 1, 2: 1, 3: 2}
    for k, slr in slrs.items():
        assert where[f"ddr4_c{k}"] == f"pblock_slr{slr}"
    for cell in ("xdma", "smartconnect/smc", "sat/dma_read", "sat/dma_write", "sat/read_arbiter", "sat/cmdproc",
                 "sat/csr"):
        assert where[cell] == "pblock_slr1", cell
    # register slices: master half (SI, SmartConnect side) in SLR1, slave half (MI, controller side) in its SLR
    filters = {pb: [w for w in added if w.startswith("NAME =~")] for pb, added in cells.items()}
    assert filters == {"pblock_slr0": ["NAME =~ smartconnect/rs_c0/*slr_slave*"],
                       "pblock_slr1": ["NAME =~ smartconnect/rs_c0/*slr_master*",
                                       "NAME =~ smartconnect/rs_c3/*slr_master*"],
                       "pblock_slr2": ["NAME =~ smartconnect/rs_c3/*slr_slave*"]}
    # the engine (most of the array) is left to the placer
    assert not any(w.startswith("sat/engine") for w in where)


def test_floorplan_cells_exist_in_the_netlist(tree):
    """Every cell floorplan.xdc names in the card top's own hierarchy is an instance of sat_card.v (a renamed
    submodule would leave a pblock silently empty); the SmartConnect cells are the block design's cell names."""
    calls = run_tcl(tree.directory, "floorplan.xdc")
    cells, _ = _pblocks(calls)
    verilog = (tree.directory / f"{TOP_NAME}.v").read_text()

    def instances(module: str) -> set[str]:
        body = verilog[verilog.index(f"module {module}("):]
        body = body[:body.index("endmodule")]
        return set(re.findall(r"^\s+(?:\\\S+|\w+)\s+(?:#\((?:.|\n)*?\)\s*)?(\w+)\s*\(", body, re.M))

    top = instances(TOP_NAME)
    sat = instances("\\sat_card.sat ")
    bd = {c[-1] for c in run_tcl(tree.directory, "ip/smartconnect_0.tcl") if c[0] == "create_bd_cell"}
    named = [w for added in cells.values() for entry in added if not entry.startswith("NAME =~")
             for w in tkinter.Tcl().splitlist(entry)]
    assert len(named) == 11
    for name in named:
        head, _, rest = name.partition("/")
        assert head in top, f"{name}: no instance {head} in {TOP_NAME}"
        if head == "sat":
            assert rest in sat, f"{name}: no instance {rest} in sat"
        elif head == "smartconnect":
            assert rest in bd, f"{name}: no cell {rest} in the SmartConnect block design"
    for entry in (e for added in cells.values() for e in added if e.startswith("NAME =~")):
        assert entry.split("/")[1] in bd


def test_regmap_reports_four_channels(tree):
    """regmap.json and sat_regs.h describe the card's memory: 64 GiB in four 2^34-byte channels."""
    data = json.loads((tree.directory / "regmap.json").read_text())
    reset = {r["name"]: r["reset"] for r in data["registers"]}
    assert reset["MEM_SIZE_LO"] | reset["MEM_SIZE_HI"] << 32 == 64 << 30
    assert reset["MEM_CHANNELS"] == 4 | 34 << 8
    header = (tree.directory / "sat_regs.h").read_text()
    assert "#define SAT_RESET_MEM_CHANNELS 0x00002204u" in header
    readme = " ".join((tree.directory / "README.md").read_text().split())
    assert "| C3 | `ddr4_3` | `0xC00000000`-`0xFFFFFFFFF` | SLR2 |" in readme


def test_build_script_flow(tree):
    calls = run_tcl(tree.directory, "build.tcl")
    words = [c[0] for c in calls]
    create = calls[words.index("create_project")]
    assert "-part" in create and create[create.index("-part") + 1] == "xcvu9p-fsgd2104-2L-e"
    order = ["create_project", "create_ip", "create_bd_design", "generate_target", "launch_runs", "open_run",
             "report_utilization", "report_timing_summary", "write_cfgmem"]
    positions = [words.index(w) for w in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert [c[1] for c in calls if c[0] == "launch_runs"] == ["synth_1", "impl_1"]
    impl = next(c for c in calls if c[:2] == ["launch_runs", "impl_1"])
    assert impl[impl.index("-to_step") + 1] == "write_bitstream"
    cfgmems = [c for c in calls if c[0] == "write_cfgmem"]
    # reference 1.7: write_cfgmem -format mcs -size 128 -interface SPIx4
    for cfgmem in cfgmems:
        for flag, value in (("-format", "mcs"), ("-size", "128"), ("-interface", "SPIx4")):
            assert cfgmem[cfgmem.index(flag) + 1] == value
    assert (tree.directory / f"{TOP_NAME}.bit").exists()
    added = [c[-1] for c in calls if c[0] == "add_files"]
    assert added == [f"{TOP_NAME}.v", f"{TOP_NAME}.xdc", "timing.xdc", "floorplan.xdc"]
    # the floorplan is for implementation only; every IP Tcl is sourced and its targets generated
    not_in_synth = {c[-1] for c in calls if c[:3] == ["set_property", "USED_IN_SYNTHESIS", "false"]}
    assert not_in_synth == {"timing.xdc", "floorplan.xdc"}
    generated = [c[-1] for c in calls if c[0] == "generate_target"]
    assert generated == ["xdma_0", "ddr4_0", "ddr4_1", "ddr4_2", "ddr4_3", "smartconnect_0.bd"]


def test_flash_images_keep_address_0_for_the_fallback(tree):
    """The SAT image goes to the user region (0x04000000, upper half of the 128 MiB flash) and has
    CONFIGFALLBACK; a second bitstream of the same design at address 0 boots the user region (MultiBoot) and is
    what a failed load falls back to. Nothing writes sat_card.bit at address 0 over the factory image."""
    calls = run_tcl(tree.directory, "build.tcl")
    loads = {}
    for c in calls:
        if c[0] == "write_cfgmem":
            direction, address, bit = tkinter.Tcl().splitlist(c[c.index("-loadbit") + 1])
            loads[c[c.index("-file") + 1]] = (direction, int(address, 16), bit)
    assert loads == {f"{TOP_NAME}.mcs": ("up", 0x04000000, f"{TOP_NAME}.bit"),
                     f"{TOP_NAME}_fallback.mcs": ("up", 0, f"{TOP_NAME}_fallback.bit")}
    # the fallback bitstream: written after setting the MultiBoot jump to the user region, on the implemented design
    words = [c[0] for c in calls]
    fallback = words.index("write_bitstream")
    props = {c[1]: c[2] for c in calls[:fallback] if c[0] == "set_property" and c[1].startswith("BITSTREAM.")}
    assert props == {"BITSTREAM.CONFIG.CONFIGFALLBACK": "ENABLE", "BITSTREAM.CONFIG.NEXT_CONFIG_ADDR": "0x04000000",
                     "BITSTREAM.CONFIG.NEXT_CONFIG_REBOOT": "ENABLE"}
    assert calls[fallback][-1] == f"{TOP_NAME}_fallback.bit" and words.index("open_run") < fallback
    assert fallback < words.index("write_cfgmem")
    # the user image itself carries CONFIGFALLBACK (from the XDC)
    xdc = (tree.directory / f"{TOP_NAME}.xdc").read_text()
    assert "set_property BITSTREAM.CONFIG.CONFIGFALLBACK ENABLE [current_design]" in xdc
    assert "NEXT_CONFIG_ADDR" not in xdc


def test_build_script_stops_when_an_image_outgrows_its_flash_region(tree):
    big = tree.directory / "vivado/sat_card.runs/impl_1"

    def grow():
        # the mocked implementation run writes a tiny sat_card.bit; make it 64 MiB + 1 (sparse)
        with open(big / "sat_card.bit", "r+b") as f:
            f.truncate(0x04000001)

    tcl = tkinter.Tcl()
    tcl.eval(MOCK)
    tcl.eval("set ::mock_version 2023.2; set ::mock_slack 0.1")
    tcl.createcommand("grow_bit", grow)
    tcl.eval('rename launch_runs launch_runs_mock; proc launch_runs {run args} { launch_runs_mock $run {*}$args; '
             'if {$run eq "impl_1"} { grow_bit } }')
    tcl.eval(f"cd {{{tree.directory}}}")
    with pytest.raises(tkinter.TclError, match=r"sat_card\.bit is 67108865 bytes, more than the 0x04000000-byte"):
        tcl.eval(f"source {{{tree.directory / 'build.tcl'}}}")
    (tree.directory / f"{TOP_NAME}.bit").unlink()


def test_build_script_warns_about_old_vivado_and_failing_timing(tree, capfd):
    run_tcl(tree.directory, "build.tcl", version="2022.2", slack="-0.5")
    # tkinter's puts goes to the process' stdout
    out = capfd.readouterr().out
    assert f"written for Vivado {VIVADO_MIN_VERSION} or later, this is 2022.2" in out
    assert "setup timing not met (WNS -0.5 ns)" in out


def test_program_script_modes(tree):
    tcl_dir = tree.directory

    def program(*argv):
        tcl = tkinter.Tcl()
        tcl.eval(MOCK + 'proc get_hw_devices {args} { return xcvu9p_0 }')
        tcl.eval(f"set argv {{{' '.join(argv)}}}; cd {{{tcl_dir}}}; source program.tcl")
        n = int(tcl.eval("llength $::calls"))
        return [list(tcl.splitlist(tcl.eval(f"lindex $::calls {i}"))) for i in range(n)]

    def files(calls):
        return [c[2] for c in calls if c[:2] == ["set_property", "PROGRAM.FILES"]]

    jtag = program("jtag", "host:3121")
    assert ["connect_hw_server", "-url", "host:3121"] in jtag and ["program_hw_devices", "xcvu9p_0"] in jtag
    assert not any(c[0] in ("create_hw_cfgmem", "program_hw_cfgmem") for c in jtag)
    flash = program("flash")
    assert any(c[0] == "create_hw_cfgmem" for c in flash)
    # the user region only: the MCS that holds sat_card.bit at 0x04000000, erasing just the sectors it covers
    assert files(flash) == [f"{tcl_dir}/{TOP_NAME}.mcs"]
    assert ["set_property", "PROGRAM.ADDRESS_RANGE", "use_file"] in [c[:3] for c in flash]
    assert [c[0] for c in flash].count("program_hw_cfgmem") == 1
    assert not any(c[0] == "readback_hw_cfgmem" for c in flash)
    # the fallback image at address 0: the whole flash (factory image) is saved before it is written
    fallback = program("fallback")
    words = [c[0] for c in fallback]
    readback = fallback[words.index("readback_hw_cfgmem")]
    assert readback[readback.index("-file") + 1] == f"{tcl_dir}/flash_backup.bin" and "-all" in readback
    assert words.index("readback_hw_cfgmem") < words.index("program_hw_cfgmem")
    assert files(fallback) == [f"{tcl_dir}/{TOP_NAME}_fallback.mcs"]
    (tcl_dir / "flash_backup.bin").write_bytes(b"factory")   # an existing backup is never overwritten
    assert not any(c[0] == "readback_hw_cfgmem" for c in program("fallback"))
    (tcl_dir / "flash_backup.bin").unlink()
    with pytest.raises(tkinter.TclError, match="mode must be jtag, flash or fallback"):
        program("usb")


def test_timing_constraints(tree):
    xdc = (tree.directory / "timing.xdc").read_text()
    assert 'set_false_path -to [get_cells -quiet -hierarchical -filter {amaranth.vivado.false_path == "TRUE"}]' in xdc
    assert "amaranth.vivado.false_path" in (tree.directory / f"{TOP_NAME}.v").read_text()   # the synchronizer
    assert "set_clock_groups" not in "\n".join(line for line in xdc.splitlines() if not line.startswith("#"))


def test_timing_constraints_cover_the_reset_synchronizers(tree):
    """The memory-bus reset uses Amaranth's AsyncFFSynchronizer (FDPE stages marked false_path_pre): timing.xdc
    cuts the paths into their preset pins, as Amaranth's own Vivado script would."""
    verilog = (tree.directory / f"{TOP_NAME}.v").read_text()
    assert verilog.count("FDPE") >= 4 and "amaranth.vivado.false_path_pre" in verilog
    xdc = " ".join((tree.directory / "timing.xdc").read_text().replace("\\\n", " ").split())
    assert ('set_false_path -to [get_pins -quiet -filter {REF_PIN_NAME == PRE} -of_objects [get_cells -quiet '
            '-hierarchical -filter {amaranth.vivado.false_path_pre == "TRUE"}]]') in xdc


def test_readme_documents_flash_layout_cold_boot_and_bars(tree):
    readme = (tree.directory / "README.md").read_text()
    text = " ".join(readme.split())
    assert "fallback image at address 0" in text and "user region at 0x04000000" in text
    assert "flash_backup.bin" in text and "`flash` writes only the user region" in text
    # PG213: the cold-boot deadline, and what to do about it
    assert "PG213" in text and "warm-reboot the host" in text and "Tandem" in text
    # PG195: DMA registers on BAR1 when the AXI-Lite master is on BAR0
    assert "DMA registers on BAR1" in text and "SAT registers at BAR0" in text


def test_regmap_files_agree_with_sw_regmap(tree, tmp_path):
    rmap = regmap.register_map(SMALL)
    data = json.loads((tree.directory / "regmap.json").read_text())
    assert {r["name"]: r["offset"] for r in data["registers"]} == {r.name: r.offset for r in rmap.registers}
    assert data["size"] == rmap.size and data["config_digest"] == SMALL.digest()
    header = (tree.directory / "sat_regs.h").read_text()
    assert re.search(r"#define SAT_REG_STATUS 0x024u", header)
    assert f"#define SAT_RESET_CONFIG 0x{regmap.config_word(SMALL):08x}u" in header
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to compile sat_regs.h")
    src = tmp_path / "t.c"
    src.write_text('#include "sat_regs.h"\n#include <stdio.h>\nint main(void){printf("%x %x %d\\n", '
                   "SAT_REG_CMD_COUNT, SAT_ID_VALUE, SAT_ERR_BAD_OPERAND); return 0;}\n")
    exe = tmp_path / "t"
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(tree.directory), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == [f"{rmap.offset('CMD_COUNT'):x}", f"{regmap.SAT_ID:x}", str(int(regmap.ErrorCode.BAD_OPERAND))]


def test_cli_build_and_generate(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(SMALL.to_json())
    out = tmp_path / "tree"
    assert main(["build", "vcu1525", "--out", str(out), "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "build.sh" in printed and str(out) in printed
    assert SATConfig.load(out / "sat_config.json") == SMALL
    gen = tmp_path / "gen"
    assert main(["generate", "--out", str(gen), "--config", str(cfg)]) == 0
    assert "module sat_core(" in (gen / "sat_core.v").read_text()
    assert (gen / "sat_regs.h").exists() and json.loads((gen / "regmap.json").read_text())["registers"]
    assert main(["build", "vcu1525", "--out", str(out), "--config", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_run_without_vivado_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VIVADO", raising=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(SMALL.to_json())
    assert main(["build", "vcu1525", "--out", str(tmp_path / "t"), "--config", str(cfg), "--run"]) == 2
    assert "vivado not found on PATH" in capsys.readouterr().err
    assert not (tmp_path / "t" / "build.tcl").exists()      # refused before the (long) tree generation


def test_core_tree_module_name(tmp_path):
    files = write_core_tree(tmp_path, SMALL, name="my_sat")
    assert {str(f) for f in files} == {"my_sat.v", "sat_config.json", "regmap.json", "sat_regs.h"}
    assert "module my_sat(" in (tmp_path / "my_sat.v").read_text()


def test_parser_has_the_board_subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"build", "generate", "report", "board"} <= set(sub.choices)
    assert board_cli.load_config(None, card=False) == SATConfig()


def test_timing_xdc_names_existing_ports(tree):
    """Every port pattern of timing.xdc matches a port of the top (a typo would silently constrain nothing)."""
    import fnmatch

    verilog = (tree.directory / f"{TOP_NAME}.v").read_text()
    header = re.search(rf"module {TOP_NAME}\(([^)]*)\);", verilog).group(1)
    ports = [p.strip() for p in header.split(",")]
    patterns = re.findall(r"get_ports -quiet \{([^}]*)\}", (tree.directory / "timing.xdc").read_text())
    assert len(patterns) == 4
    for pattern in patterns:
        assert fnmatch.filter(ports, pattern), f"{pattern} matches no port of {TOP_NAME}"
