"""The VCU1525 card top level: IP port lists against the Xilinx instantiation templates of public designs,
Verilator lint of the generated top with the IP stubs (zero errors, only tolerated warnings, no port-width
mismatches), and the wiring of clocks, resets, pins and address map."""

from __future__ import annotations

import re

import pytest

from sat.boards.card import (
    VCU1525Card,
    ddr4_module,
    ddr4_ports,
    ibufds_gte4_ports,
    ip_stub_verilog,
    slr_crossing_channels,
    smartconnect_ports,
    xdma_ports,
)
from sat.boards.vcu1525 import DDR4_CHANNELS
from sat.boards.vivado import TOP_NAME, write_vivado_tree
from sat.sim.lint import TOLERATED, lint
from sat.sw.config import SATConfig
from sat.sw.memmap import CARD_MEMORY

SMALL = SATConfig(rows=2, cols=2, nm_set=((2, 4),))

# Port names of an XDMA customised for Gen3 x16, 512-bit AXI-MM with the AXI-Lite master (from the IP's .veo
# instantiation template in public designs; tandem/MCAP ports not enabled here).
XDMA_VEO = """sys_clk sys_clk_gt sys_rst_n user_lnk_up pci_exp_txp pci_exp_txn pci_exp_rxp pci_exp_rxn axi_aclk
axi_aresetn usr_irq_req usr_irq_ack msi_enable msi_vector_width m_axi_awready m_axi_wready m_axi_bid m_axi_bresp
m_axi_bvalid m_axi_arready m_axi_rid m_axi_rdata m_axi_rresp m_axi_rlast m_axi_rvalid m_axi_awid m_axi_awaddr
m_axi_awlen m_axi_awsize m_axi_awburst m_axi_awprot m_axi_awvalid m_axi_awlock m_axi_awcache m_axi_wdata
m_axi_wstrb m_axi_wlast m_axi_wvalid m_axi_bready m_axi_arid m_axi_araddr m_axi_arlen m_axi_arsize m_axi_arburst
m_axi_arprot m_axi_arvalid m_axi_arlock m_axi_arcache m_axi_rready m_axil_awaddr m_axil_awprot m_axil_awvalid
m_axil_awready m_axil_wdata m_axil_wstrb m_axil_wvalid m_axil_wready m_axil_bvalid m_axil_bresp m_axil_bready
m_axil_araddr m_axil_arprot m_axil_arvalid m_axil_arready m_axil_rdata m_axil_rresp m_axil_rvalid
m_axil_rready""".split()
XDMA_WIDTHS = {"pci_exp_txp": 16, "pci_exp_rxn": 16, "usr_irq_req": 1, "msi_vector_width": 3, "m_axi_awid": 4,
               "m_axi_awaddr": 64, "m_axi_wdata": 512, "m_axi_wstrb": 64, "m_axi_rdata": 512, "m_axi_awlen": 8,
               "m_axil_awaddr": 32, "m_axil_wdata": 32, "m_axil_wstrb": 4}

# DDR4 (ECC RDIMM, AXI slave) ports as public designs instantiate them.
DDR4_INST = """c0_sys_clk_p c0_sys_clk_n sys_rst c0_init_calib_complete c0_ddr4_interrupt dbg_clk dbg_bus
c0_ddr4_adr c0_ddr4_ba c0_ddr4_cke c0_ddr4_cs_n c0_ddr4_dq c0_ddr4_dqs_t c0_ddr4_dqs_c c0_ddr4_odt c0_ddr4_parity
c0_ddr4_bg c0_ddr4_reset_n c0_ddr4_act_n c0_ddr4_ck_t c0_ddr4_ck_c c0_ddr4_ui_clk c0_ddr4_ui_clk_sync_rst
c0_ddr4_aresetn c0_ddr4_s_axi_ctrl_awvalid c0_ddr4_s_axi_ctrl_awready c0_ddr4_s_axi_ctrl_awaddr
c0_ddr4_s_axi_ctrl_wvalid c0_ddr4_s_axi_ctrl_wready c0_ddr4_s_axi_ctrl_wdata c0_ddr4_s_axi_ctrl_bvalid
c0_ddr4_s_axi_ctrl_bready c0_ddr4_s_axi_ctrl_bresp c0_ddr4_s_axi_ctrl_arvalid c0_ddr4_s_axi_ctrl_arready
c0_ddr4_s_axi_ctrl_araddr c0_ddr4_s_axi_ctrl_rvalid c0_ddr4_s_axi_ctrl_rready c0_ddr4_s_axi_ctrl_rdata
c0_ddr4_s_axi_ctrl_rresp c0_ddr4_s_axi_awid c0_ddr4_s_axi_awaddr c0_ddr4_s_axi_awlen c0_ddr4_s_axi_awsize
c0_ddr4_s_axi_awburst c0_ddr4_s_axi_awlock c0_ddr4_s_axi_awcache c0_ddr4_s_axi_awprot c0_ddr4_s_axi_awqos
c0_ddr4_s_axi_awvalid c0_ddr4_s_axi_awready c0_ddr4_s_axi_wdata c0_ddr4_s_axi_wstrb c0_ddr4_s_axi_wlast
c0_ddr4_s_axi_wvalid c0_ddr4_s_axi_wready c0_ddr4_s_axi_bready c0_ddr4_s_axi_bid c0_ddr4_s_axi_bresp
c0_ddr4_s_axi_bvalid c0_ddr4_s_axi_arid c0_ddr4_s_axi_araddr c0_ddr4_s_axi_arlen c0_ddr4_s_axi_arsize
c0_ddr4_s_axi_arburst c0_ddr4_s_axi_arlock c0_ddr4_s_axi_arcache c0_ddr4_s_axi_arprot c0_ddr4_s_axi_arqos
c0_ddr4_s_axi_arvalid c0_ddr4_s_axi_arready c0_ddr4_s_axi_rready c0_ddr4_s_axi_rlast c0_ddr4_s_axi_rvalid
c0_ddr4_s_axi_rresp c0_ddr4_s_axi_rid c0_ddr4_s_axi_rdata""".split()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_vivado_tree(tmp_path_factory.mktemp("card"), SMALL)


def _instance(verilog: str, module: str, name: str) -> dict[str, str]:
    """Connections ``.port(net)`` of instance ``name`` of ``module`` in Amaranth's Verilog."""
    m = re.search(rf"^\s*{re.escape(module)}\s+(?:#\((?:.|\n)*?\)\s*)?{name}\s*\(((?:.|\n)*?)\);", verilog,
                  re.M)
    assert m, f"no instance {module} {name}"
    return dict(re.findall(r"\.(\w+)\(([^()]*)\)", m.group(1)))


def _top_assigns(verilog: str) -> dict[str, str]:
    """``assign net = expression;`` of the top module, Yosys' ``$N`` temporaries substituted."""
    top = verilog[verilog.index(f"module {TOP_NAME}("):]
    top = top[:top.index("endmodule")]
    raw = {lhs.strip(): rhs.strip() for lhs, rhs in re.findall(r"^\s*assign\s+(\S+)\s*=\s*([^;]*);", top, re.M)}

    def expand(expr: str) -> str:
        return re.sub(r"\\(\$\d+)", lambda t: f"({expand(raw[t.group(0)])})" if t.group(0) in raw else t.group(0),
                      expr)

    return {lhs: re.sub(r"\s+", " ", expand(rhs)) for lhs, rhs in raw.items()}


def test_xdma_ports_match_instantiation_template():
    ports = {p.name: p for p in xdma_ports()}
    assert sorted(ports) == sorted(XDMA_VEO)
    for name, width in XDMA_WIDTHS.items():
        assert ports[name].width == width, name
    assert ports["axi_aclk"].direction == "output" and ports["usr_irq_req"].direction == "input"
    assert ports["m_axil_rdata"].direction == "input" and ports["m_axi_awaddr"].direction == "output"


def test_ddr4_ports_match_public_instantiations():
    ports = {p.name: p for p in ddr4_ports()}
    assert sorted(ports) == sorted(DDR4_INST)
    # x4 ECC RDIMM: 72 DQ, one strobe pair per nibble, 17 address bits, 2 bank groups; 16 GiB AXI, 512-bit data
    widths = {"c0_ddr4_dq": 72, "c0_ddr4_dqs_t": 18, "c0_ddr4_dqs_c": 18, "c0_ddr4_adr": 17, "c0_ddr4_bg": 2,
              "c0_ddr4_s_axi_awaddr": 34, "c0_ddr4_s_axi_wdata": 512, "c0_ddr4_s_axi_wstrb": 64}
    for name, width in widths.items():
        assert ports[name].width == width, name
    assert ports["c0_ddr4_dq"].direction == "inout" and ports["c0_ddr4_ui_clk"].direction == "output"


def test_smartconnect_and_refclk_buffer_ports():
    ports = {p.name: p for p in smartconnect_ports()}
    # one slave-side clock, one clock per DDR4 channel; resets for SmartConnect and the two SLR-crossing slices
    assert {"aclk", "aclk1", "aclk2", "aclk3", "aclk4", "aresetn", "aresetn1", "aresetn4"} <= set(ports)
    assert not {"aclk5", "aresetn2", "aresetn3"} & set(ports)
    for si in ("S00_AXI", "S01_AXI"):
        assert ports[f"{si}_awid"].width == 4 and ports[f"{si}_awaddr"].width == 64
        assert ports[f"{si}_awvalid"].direction == "input"
    assert "S02_AXI_awaddr" not in ports
    for mi in ("M00_AXI", "M01_AXI", "M02_AXI", "M03_AXI"):
        assert ports[f"{mi}_awaddr"].width == 34 and ports[f"{mi}_awvalid"].direction == "output"
        assert ports[f"{mi}_wdata"].width == 512
        assert not {f"{mi}_{c}id" for c in ("aw", "b", "ar", "r")} & set(ports)  # PG247: no IDs to the endpoint
    assert "M04_AXI_awaddr" not in ports
    two = {p.name for p in smartconnect_ports(sat_masters=2)}
    assert "S02_AXI_araddr" in two and "S03_AXI_araddr" not in two
    with pytest.raises(ValueError, match="sat_masters"):
        smartconnect_ports(sat_masters=0)
    assert [p.name for p in ibufds_gte4_ports()] == ["I", "IB", "CEB", "O", "ODIV2"]


def test_card_rejects_widths_the_card_cannot_carry():
    with pytest.raises(ValueError, match="axi_data_width=512"):
        VCU1525Card(SATConfig(axi_data_width=256))
    with pytest.raises(TypeError, match="SATConfig"):
        VCU1525Card({"rows": 2})


def test_card_core_reports_the_four_channel_memory():
    """The core on the card is told about all four channels (MEM_SIZE 64 GiB, MEM_CHANNELS 4 x 2^34)."""
    card = VCU1525Card(SMALL)
    assert card.memory == CARD_MEMORY and card.sat_masters == 1
    assert card.core.memory_bytes == 4 << 34
    regs = card.core._csr.regmap
    assert regs["MEM_SIZE_HI"].reset == (4 << 34) >> 32 and regs["MEM_SIZE_LO"].reset == 0
    assert regs["MEM_CHANNELS"].unpack(regs["MEM_CHANNELS"].reset) == {"channels": 4, "window_log2": 34}


def test_stubs_declare_every_port(tree):
    stubs = (tree.directory / "stubs/ip_stubs.v").read_text()
    assert stubs == ip_stub_verilog()
    modules = [("xdma_0", xdma_ports()), ("smartconnect_0", smartconnect_ports())]
    modules += [(ddr4_module(k), ddr4_ports()) for k in range(4)]
    for module, ports in modules:
        body = re.search(rf"module {module} \(((?:.|\n)*?)\);", stubs).group(1)
        for p in ports:
            rng = rf"\[{p.width - 1}:0\] " if p.width > 1 else ""
            assert re.search(rf"{p.direction} wire {rng}{p.name}\b", body), (module, p.name)


@pytest.mark.rtl
def test_card_top_lints_clean_with_ip_stubs(tree):
    top = tree.directory / f"{TOP_NAME}.v"
    stubs = tree.directory / "stubs/ip_stubs.v"
    result = lint(top, TOP_NAME, extra_args=[str(stubs), "-Wwarn-WIDTHEXPAND", "-Wwarn-WIDTHTRUNC"])
    print(result.summary()[:3000])
    assert not result.errors and result.returncode == 0, result.summary()
    ports = [m for m in result.warnings if m.code.startswith("WIDTH") and "port connection" in m.text]
    assert not ports, "IP port width mismatches:\n" + "\n".join(map(str, ports))
    unexpected = [m for m in result.warnings if m.code not in TOLERATED and not m.code.startswith("WIDTH")]
    assert not unexpected, "warnings outside the tolerated classes:\n" + "\n".join(map(str, unexpected))


@pytest.mark.rtl
def test_lint_catches_a_port_the_ip_does_not_have(tree, tmp_path):
    """The stubs are a real check: rename one XDMA port and Verilator must fail; narrow one and it must warn."""
    stubs = (tree.directory / "stubs/ip_stubs.v").read_text()
    top = tree.directory / f"{TOP_NAME}.v"
    renamed = tmp_path / "renamed.v"
    renamed.write_text(stubs.replace("input wire sys_clk_gt", "input wire sys_clk_gt0", 1))
    result = lint(top, TOP_NAME, extra_args=[str(renamed)])
    assert any(m.code == "PINNOTFOUND" for m in result.errors), result.summary()[:2000]
    narrowed = tmp_path / "narrowed.v"
    narrowed.write_text(stubs.replace("output wire [15:0] pci_exp_txp", "output wire [7:0] pci_exp_txp", 1))
    result = lint(top, TOP_NAME, extra_args=[str(narrowed), "-Wwarn-WIDTHTRUNC"])
    assert any("pci_exp_txp" in m.text and m.code.startswith("WIDTH") for m in result.warnings)


def test_clocks_resets_and_buses_are_wired(tree):
    v = (tree.directory / f"{TOP_NAME}.v").read_text()
    ibuf = _instance(v, "IBUFDS_GTE4", "pcie_refclk_ibuf")
    xdma = _instance(v, "xdma_0", "xdma")
    smc = _instance(v, "smartconnect_0", "smartconnect")
    # PCIe refclk: O -> sys_clk_gt, ODIV2 -> sys_clk; pads straight from the package pins
    assert ibuf["I"] == "pcie_x16_0__clk__p" and ibuf["IB"] == "pcie_x16_0__clk__n"
    assert xdma["sys_clk_gt"] == ibuf["O"] and xdma["sys_clk"] == ibuf["ODIV2"]
    assert xdma["sys_rst_n"] == "pcie_x16_0__perst__io"
    assert xdma["pci_exp_rxp"] == "pcie_x16_0__rx__p" and xdma["pci_exp_txn"] == "pcie_x16_0__tx__n"
    # SmartConnect: slave side on XDMA's clock; XDMA DMA -> S00, SAT -> S01
    assert smc["aclk"] == xdma["axi_aclk"]
    assert smc["S00_AXI_awaddr"] == xdma["m_axi_awaddr"] and smc["S00_AXI_rdata"] == xdma["m_axi_rdata"]
    sat = _instance(v, "\\sat_card.sat", "sat")
    assert smc["S01_AXI_araddr"] == sat["m_axi_araddr"]
    # DDR4 C0..C3: each controller on its own clk300[k] and the pins of DIMM slot k; SmartConnect M<k> on its
    # ui_clk, to its AXI slave
    ui_clks = set()
    for k in range(4):
        ddr4 = _instance(v, ddr4_module(k), f"ddr4_c{k}")
        assert ddr4["c0_sys_clk_p"] == f"clk300_{k}__p" and ddr4["c0_sys_clk_n"] == f"clk300_{k}__n"
        assert ddr4["c0_ddr4_dq"] == f"ddr4_{k}__dq__io" and ddr4["c0_ddr4_adr"] == f"ddr4_{k}__adr__io"
        assert ddr4["c0_ddr4_dqs_t"] == f"ddr4_{k}__dqs__p" and ddr4["c0_ddr4_parity"] == f"ddr4_{k}__par__io"
        assert smc[f"aclk{k + 1}"] == ddr4["c0_ddr4_ui_clk"]
        assert smc[f"M{k:02d}_AXI_araddr"] == ddr4["c0_ddr4_s_axi_araddr"]
        assert smc[f"M{k:02d}_AXI_wdata"] == ddr4["c0_ddr4_s_axi_wdata"]
        assert smc[f"M{k:02d}_AXI_rready"] == ddr4["c0_ddr4_s_axi_rready"]
        ui_clks.add(ddr4["c0_ddr4_ui_clk"])
    assert len(ui_clks) == 4
    # SAT runs on axi_aclk: the card top's sync clock is XDMA's axi_aclk output
    assert xdma["axi_aclk"] == "clk"


def _or_terms(expr: str) -> set[str]:
    """The operands of a (nested) OR expression as Yosys writes it: ``((~ a) | b) | c`` -> {"~ a", "b", "c"}."""
    return {t.strip().strip("()").strip() for t in expr.replace("(", " ").replace(")", " ").split("|")}


def test_one_reset_for_the_whole_memory_bus(tree):
    """PG247: SAT, SmartConnect, the SLR-crossing register slices and every DDR4 AXI slave reset together, from
    XDMA's reset or any DDR4 controller's, each synchronous to its own clock."""
    v = (tree.directory / f"{TOP_NAME}.v").read_text()
    xdma = _instance(v, "xdma_0", "xdma")
    ddr4 = [_instance(v, ddr4_module(k), f"ddr4_c{k}") for k in range(4)]
    smc = _instance(v, "smartconnect_0", "smartconnect")
    sat = _instance(v, "\\sat_card.sat", "sat")
    bus = _instance(v, "\\sat_card.bus_reset", "bus_reset")
    assigns = _top_assigns(v)
    # one request: XDMA's axi_aresetn low or any DDR4 controller in reset
    want = {f"~ {xdma['axi_aresetn']}"} | {d["c0_ddr4_ui_clk_sync_rst"] for d in ddr4}
    assert _or_terms(assigns[bus["bus_reset_request"]]) == want
    # released in each clock: axi_aclk for SAT and SmartConnect, each ui_clk for its DDR4 slave and register slice
    assert bus["sync_bus_reset_gen_clk"] == xdma["axi_aclk"]
    assert sat["rst"] == bus["sync_bus_reset"] and sat["clk"] == xdma["axi_aclk"]
    assert assigns[smc["aresetn"]] == f"~ {bus['sync_bus_reset']}"
    for k, d in enumerate(ddr4):
        assert bus[f"ddr{k}_bus_reset_gen_clk"] == d["c0_ddr4_ui_clk"]
        assert assigns[d["c0_ddr4_aresetn"]] == f"~ {bus[f'ddr{k}_bus_reset']}"
        assert xdma["axi_aresetn"] != d["c0_ddr4_aresetn"]
    for k in slr_crossing_channels():
        assert assigns[smc[f"aresetn{k + 1}"]] == f"~ {bus[f'ddr{k}_bus_reset']}"
    assert slr_crossing_channels() == [0, 3]
    assert xdma["axi_aresetn"] != smc["aresetn"]


def _bus_reset_trace(pulses: dict[str, list[int]], cycles: int, periods: dict[str, float], hold: int = 4):
    """Simulate MemoryBusReset(["a", "b"]): ``pulses`` gives, per domain, the cycles of that domain at which the
    request is raised for one cycle; returns per domain the list of rst values sampled at its rising edges."""
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    from sat.boards.card import MemoryBusReset

    m = Module()
    for name in periods:
        m.domains += ClockDomain(name)
    m.submodules.dut = dut = MemoryBusReset(list(periods), hold_cycles=hold)
    sim = Simulator(m)
    for name, period in periods.items():
        sim.add_clock(period, domain=name)
    trace: dict[str, list[int]] = {name: [] for name in periods}

    def testbench_for(name):
        async def bench(ctx):
            for cycle in range(cycles):
                if cycle in pulses.get(name, []):
                    ctx.set(dut.request, 1)
                await ctx.tick(name)
                trace[name].append(ctx.get(dut.rst[name]))
                if cycle in pulses.get(name, []):
                    ctx.set(dut.request, 0)
        return bench

    for name in periods:
        sim.add_testbench(testbench_for(name))
    sim.run()
    return trace


def test_memory_bus_reset_behaviour():
    """Asserted right after configuration; a one-cycle request in either clock resets both domains, each for at
    least ``hold`` cycles of its own clock after the request, then releases."""
    hold = 4
    trace = _bus_reset_trace({"a": [40]}, 80, {"a": 4e-9, "b": 3.3e-9}, hold)
    for name, values in trace.items():
        assert values[:hold] == [1] * hold, (name, values[:10])          # power-up reset
        first_clear = values.index(0)
        assert all(v == 0 for v in values[first_clear:first_clear + 20]), (name, values)
        pulse = [i for i in range(first_clear, len(values)) if values[i]]
        assert pulse, f"domain {name} never saw the request raised in domain a"
        run = pulse[0]
        while run < len(values) and values[run]:
            run += 1
        assert run - pulse[0] >= hold, (name, values)                    # held in its own clock
        assert not any(values[run:]), (name, values)                     # and released afterwards
    # the request raised in the other domain's clock resets both as well
    trace = _bus_reset_trace({"b": [50]}, 90, {"a": 4e-9, "b": 3.3e-9}, hold)
    assert all(sum(values[30:]) >= hold for values in trace.values()), trace


def test_memory_bus_reset_rejects_bad_arguments():
    from sat.boards.card import MemoryBusReset

    with pytest.raises(ValueError, match="distinct"):
        MemoryBusReset(["sync", "sync"])
    with pytest.raises(ValueError, match="hold_cycles"):
        MemoryBusReset(["sync"], hold_cycles=0)


def test_xdc_constrains_the_used_pins_and_clocks(tree):
    xdc = (tree.directory / f"{TOP_NAME}.xdc").read_text()
    pins = {pin: port.replace("\\[", "[") for pin, port in
            re.findall(r'set_property PACKAGE_PIN (\w+) \[get_ports "?([\w\\\[\]]+)"?\]', xdc)}
    placed = {v: k for k, v in pins.items()}
    # reference section 2: PCIe lane 0 rx AF2/AF1, tx AF7/AF6, lane 15 rx BC2, refclk AM11/AM10, PERST# BD21
    assert pins["AF2"] == "pcie_x16_0__rx__p[0]" and pins["AF1"] == "pcie_x16_0__rx__n[0]"
    assert pins["AF7"] == "pcie_x16_0__tx__p[0]" and pins["BC2"] == "pcie_x16_0__rx__p[15]"
    assert pins["AM11"] == "pcie_x16_0__clk__p" and pins["BD21"] == "pcie_x16_0__perst__io"
    # clk300[0..3]: AY37/AY38, AW20/AW19, F32/E32, J16/H16 (reference 1.2); LEDs BC21 BB21 BA20
    for k, (p, n) in enumerate([("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16")]):
        assert pins[p] == f"clk300_{k}__p" and pins[n] == f"clk300_{k}__n"
    assert [placed[f"led_{i}__io"] for i in range(3)] == ["BC21", "BB21", "BA20"]
    # all four DIMM slots, every pin on its bit (the platform's pin lists are checked against the reference in
    # test_board.py): 72 DQ, 18 DQS pairs, 17 address bits each
    for k, channel in DDR4_CHANNELS.items():
        assert [placed[f"ddr4_{k}__dq__io[{i}]"] for i in range(72)] == channel.dq.split()
        assert [placed[f"ddr4_{k}__dqs__p[{i}]"] for i in range(18)] == channel.dqs_t.split()
        assert [placed[f"ddr4_{k}__dqs__n[{i}]"] for i in range(18)] == channel.dqs_c.split()
        assert [placed[f"ddr4_{k}__adr__io[{i}]"] for i in range(17)] == channel.adr.split()
        assert placed[f"ddr4_{k}__reset_n__io"] == channel.reset_n
    assert re.search(r"create_clock -name pcie_x16_0__clk__p -period 10(\.0)? ", xdc)
    # UG1119: each DDR4 IP's XDC creates the clock on its c0_sys_clk_p (System_Clock Differential): no second one
    assert len(re.findall(r"^create_clock", xdc, re.M)) == 1 and "clk300_0__p -period" not in xdc
    assert "set_property BITSTREAM.CONFIG.OVERTEMPSHUTDOWN ENABLE [current_design]" in xdc
    # the image boots from a user region of the flash and falls back to address 0 if it fails to load
    assert "set_property BITSTREAM.CONFIG.CONFIGFALLBACK ENABLE [current_design]" in xdc


# --- sat board selftest, against the software model (the card itself: tests/test_board.py style, not here)

class _Broken:
    """Wraps a transport: registers read all ones (link down), or DMA reads come back with one bit flipped."""

    def __init__(self, inner, *, all_ones: bool = False, flip_dma: bool = False):
        self.inner, self.all_ones, self.flip_dma = inner, all_ones, flip_dma

    def read32(self, offset):
        return 0xFFFFFFFF if self.all_ones else self.inner.read32(offset)

    def dma_read(self, addr, nbytes):
        data = bytearray(self.inner.dma_read(addr, nbytes))
        if self.flip_dma:
            data[len(data) // 2] ^= 0x10
        return bytes(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_selftest_passes_on_the_model():
    from sat.boards.cli import selftest
    from sat.sw.driver import ModelTransport

    result = selftest(ModelTransport(SMALL), dma_bytes=1 << 16)
    assert result.ok, result.report()
    assert [name for name, _, _ in result.checks] == ["ID register", "identity / configuration",
                                                       "SCRATCH write/read", "DMA loop-back",
                                                       "dense GEMM vs golden model"]


def test_selftest_reports_what_is_wrong():
    from sat.boards.cli import selftest
    from sat.sw.driver import ModelTransport

    down = selftest(_Broken(ModelTransport(SMALL), all_ones=True))
    assert not down.ok and len(down.checks) == 1 and "link down or FPGA not programmed" in down.checks[0][2]
    flipped = selftest(_Broken(ModelTransport(SMALL), flip_dma=True), dma_bytes=1 << 16)
    name, ok, detail = flipped.checks[-1]
    assert name == "DMA loop-back" and not ok and "1 bytes differ" in detail


def test_selftest_cli_on_the_model(capsys):
    from sat.sw.cli import main

    assert main(["board", "selftest", "--model"]) == 0
    assert "selftest passed" in capsys.readouterr().out
    assert main(["board", "selftest", "--device", "/nonexistent/xdma9"]) == 2
    assert "not found" in capsys.readouterr().err
