"""Card top level for the VCU1525: ``SATCore`` between the Xilinx XDMA (PCIe) and four DDR4 controllers.

Block diagram (``docs/board.md``, "Card top level")::

    PCIe x16 ---- xdma (xdma_0) ---- m_axil (BAR0) ------------------> sat (SATCore) s_axil
    refclk --IBUFDS_GTE4   |  axi_aclk 250 MHz = SAT clock              |  irq -> usr_irq_req[0]
                           +-- m_axi (H2C/C2H DMA) --> S00 +            |  m_axi
                                                           smartconnect (smartconnect_0) <-- S01
             clk300[0] --> ddr4_c0 (ddr4_0) <-- rs_c0 <-- M00 (0 GiB)    SLR0 (register slice: SLR1 -> SLR0)
             clk300[1] --> ddr4_c1 (ddr4_1) <----------- M01 (16 GiB)   SLR1
             clk300[2] --> ddr4_c2 (ddr4_2) <----------- M02 (32 GiB)   SLR1
             clk300[3] --> ddr4_c3 (ddr4_3) <-- rs_c3 <-- M03 (48 GiB)   SLR2 (register slice: SLR1 -> SLR2)
    bus_reset (MemoryBusReset): ~axi_aresetn | any ui_clk_sync_rst -> SAT, SmartConnect, every DDR4 AXI slave

Every AXI master (XDMA's DMA and SAT's) reaches every channel: channel ``k`` is the 16 GiB window at ``k * 16
GiB`` (:data:`sat.sw.memmap.CARD_MEMORY`). XDMA, SmartConnect, SAT's bus side and C1/C2 sit in SLR1 (the PCIe hard
block is there); the two channels in the other SLRs are reached through SLR-crossing register slices inside the
SmartConnect block design (``rs_c0``, ``rs_c3``). The placement is in the generated ``floorplan.xdc``.

The IP are black boxes (``Instance``) created by generated Vivado Tcl (:mod:`sat.boards.vivado`). Their port lists
live here, in :func:`ip_ports`, once: the top level binds them, and :func:`ip_stub_verilog` turns them into Verilog
stub modules for Verilator lint, which double as documentation of the ports the top expects from the IP.

Port names follow Xilinx's instantiation templates (``.veo``) of public designs: XDMA (PG195) as generated for a
Gen3 x16, 512-bit, AXI-MM configuration with the AXI-Lite master enabled; DDR4 (PG150) for an ECC RDIMM with the
AXI4 slave (hence the ECC control port ``c0_ddr4_s_axi_ctrl_*`` and ``c0_ddr4_parity``; every controller's ports
carry the ``c0_`` prefix, whichever slot it drives); SmartConnect (PG247) is an IP-integrator-only core, so
``smartconnect_0`` is a block design whose external interface ports are named by the generated Tcl
(``S00_AXI_*``, ``S01_AXI_*``, ``M00_AXI_*`` .. ``M03_AXI_*``, ``aclk``, ``aclk1`` .. ``aclk4``, ``aresetn``,
``aresetn1``, ``aresetn4``). What could not be confirmed without Vivado is listed in ``docs/board.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import AsyncFFSynchronizer, FFSynchronizer
from amaranth.lib.wiring import In

from sat.sw.config import SATConfig
from sat.sw.memmap import CARD_CHANNEL_SLR, CARD_MEMORY

__all__ = [
    "IPPort",
    "PCIE_LANES",
    "XDMA_AXI_ID_WIDTH",
    "DDR4_AXI_ADDR_WIDTH",
    "DDR4_AXI_ID_WIDTH",
    "DDR4_UI_CLOCK_HZ",
    "XDMA_AXI_CLOCK_HZ",
    "HEARTBEAT_BIT",
    "HUB_SLR",
    "ddr4_module",
    "slr_crossing_channels",
    "xdma_ports",
    "ddr4_ports",
    "smartconnect_ports",
    "ibufds_gte4_ports",
    "ip_ports",
    "ip_stub_verilog",
    "MemoryBusReset",
    "BUS_RESET_HOLD_CYCLES",
    "VCU1525Card",
]

#: PCIe lanes of the card (Gen3 x16).
PCIE_LANES = 16
#: ID width of XDMA's ``m_axi`` (4 in the generated XDMA instantiation templates).
XDMA_AXI_ID_WIDTH = 4
#: DDR4 AXI address width of each channel: 16 GiB (reference 1.6, ``DDR4_AxiAddressWidth 34``).
DDR4_AXI_ADDR_WIDTH = 34
#: ID width configured on the DDR4 AXI slave; SmartConnect does not propagate IDs to its MI by default (PG247),
#: so the card drives ID 0 on it.
DDR4_AXI_ID_WIDTH = 4
#: ``axi_aclk`` of XDMA for Gen3 x16 with a 512-bit AXI (``axisten_freq 250``): SAT's clock.
XDMA_AXI_CLOCK_HZ = 250_000_000
#: DDR4-2400 (833 ps) with a 4:1 controller: ``c0_ddr4_ui_clk`` = 1200 MHz / 4.
DDR4_UI_CLOCK_HZ = 300_000_000
#: Counter bit that blinks the heartbeat LED: 2**27 cycles of 250 MHz = 0.54 s per half period.
HEARTBEAT_BIT = 27
#: Cycles (of each clock) the memory-bus reset stays asserted after its last source released it.
BUS_RESET_HOLD_CYCLES = 16
#: The SLR of the PCIe hard block (reference 1.4), and so of XDMA, SmartConnect and SAT's bus side.
HUB_SLR = 1

assert CARD_MEMORY.window_bytes == 1 << DDR4_AXI_ADDR_WIDTH, "one channel window per DDR4 controller"


def ddr4_module(channel: int) -> str:
    """Module name of the DDR4 IP of DIMM slot ``channel`` (``ddr4_0`` .. ``ddr4_3``; instance ``ddr4_c<k>``)."""
    return f"ddr4_{CARD_MEMORY.check_channel(channel)}"


def slr_crossing_channels() -> list[int]:
    """Channels whose controller sits in another SLR than the SmartConnect (:data:`HUB_SLR`): C0 and C3."""
    return [k for k, slr in enumerate(CARD_CHANNEL_SLR) if slr != HUB_SLR]


@dataclass(frozen=True)
class IPPort:
    """One port of a black-box IP, as in the IP's instantiation template.

    Attributes
    ----------
    name : str
        Port name, exactly as the IP declares it.
    direction : "input", "output" or "inout"
        Seen from the IP.
    width : int
        Bits.
    doc : str
        What it is, for the stub's comment.
    """

    name: str
    direction: str
    width: int = 1
    doc: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("input", "output", "inout"):
            raise ValueError(f"direction must be 'input', 'output' or 'inout', not {self.direction!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"port {self.name}: width must be a positive integer, not {self.width!r}")


def _axi4_ports(prefix: str, *, slave: bool, addr_width: int, data_width: int, id_width: int,
                qos: bool = False) -> list[IPPort]:
    """AXI4 (no region/user) ports ``<prefix><signal>`` seen from an IP that is a master (``slave=False``) or slave."""
    out, inp = ("input", "output") if slave else ("output", "input")
    ports: list[tuple[str, str, int]] = []

    def add(name: str, direction: str, width: int = 1) -> None:
        ports.append((name, direction, width))

    for ch in ("aw", "ar"):
        if id_width:
            add(f"{ch}id", out, id_width)
        add(f"{ch}addr", out, addr_width)
        add(f"{ch}len", out, 8)
        add(f"{ch}size", out, 3)
        add(f"{ch}burst", out, 2)
        add(f"{ch}lock", out, 1)
        add(f"{ch}cache", out, 4)
        add(f"{ch}prot", out, 3)
        if qos:
            add(f"{ch}qos", out, 4)
        add(f"{ch}valid", out)
        add(f"{ch}ready", inp)
        if ch == "aw":
            add("wdata", out, data_width)
            add("wstrb", out, data_width // 8)
            add("wlast", out)
            add("wvalid", out)
            add("wready", inp)
            if id_width:
                add("bid", inp, id_width)
            add("bresp", inp, 2)
            add("bvalid", inp)
            add("bready", out)
    if id_width:
        add("rid", inp, id_width)
    add("rdata", inp, data_width)
    add("rresp", inp, 2)
    add("rlast", inp)
    add("rvalid", inp)
    add("rready", out)
    return [IPPort(prefix + n, d, w) for n, d, w in ports]


def _axil_ports(prefix: str, *, slave: bool, addr_width: int = 32, prot: bool = True) -> list[IPPort]:
    """AXI4-Lite ports (32-bit data) seen from a master (``slave=False``) or slave IP."""
    out, inp = ("input", "output") if slave else ("output", "input")
    spec = [("awaddr", out, addr_width)] + ([("awprot", out, 3)] if prot else []) + [
        ("awvalid", out, 1), ("awready", inp, 1), ("wdata", out, 32), ("wstrb", out, 4), ("wvalid", out, 1),
        ("wready", inp, 1), ("bvalid", inp, 1), ("bresp", inp, 2), ("bready", out, 1), ("araddr", out, addr_width),
    ] + ([("arprot", out, 3)] if prot else []) + [
        ("arvalid", out, 1), ("arready", inp, 1), ("rdata", inp, 32), ("rresp", inp, 2), ("rvalid", inp, 1),
        ("rready", out, 1),
    ]
    if not prot:
        spec = [s for s in spec if s[0] != "wstrb"]
    return [IPPort(prefix + n, d, w) for n, d, w in spec]


def xdma_ports(*, lanes: int = PCIE_LANES, data_width: int = 512, irqs: int = 1) -> list[IPPort]:
    """Ports of ``xdma_0`` (DMA/Bridge Subsystem for PCIe, PG195) in AXI-MM mode with the AXI-Lite master.

    From the XDMA instantiation template of a Gen3 x16, 512-bit, AXI-MM, AXI-Lite-master configuration; the
    configuration-management port is disabled (``cfg_mgmt_if false``) and no tandem/MCAP ports are enabled.
    """
    return [
        IPPort("sys_clk", "input", doc="100 MHz PCIe refclk, IBUFDS_GTE4 ODIV2"),
        IPPort("sys_clk_gt", "input", doc="100 MHz PCIe refclk, IBUFDS_GTE4 O (to the GTs)"),
        IPPort("sys_rst_n", "input", doc="PERST#, active low"),
        IPPort("user_lnk_up", "output", doc="PCIe link up"),
        IPPort("pci_exp_txp", "output", lanes),
        IPPort("pci_exp_txn", "output", lanes),
        IPPort("pci_exp_rxp", "input", lanes),
        IPPort("pci_exp_rxn", "input", lanes),
        IPPort("axi_aclk", "output", doc="user clock, 250 MHz"),
        IPPort("axi_aresetn", "output", doc="user reset, active low, synchronous to axi_aclk"),
        IPPort("usr_irq_req", "input", irqs, doc="user interrupt requests (level until ack)"),
        IPPort("usr_irq_ack", "output", irqs),
        IPPort("msi_enable", "output"),
        IPPort("msi_vector_width", "output", 3),
        *_axi4_ports("m_axi_", slave=False, addr_width=64, data_width=data_width, id_width=XDMA_AXI_ID_WIDTH),
        *_axil_ports("m_axil_", slave=False),
    ]


def ddr4_ports(*, data_width: int = 512, addr_width: int = DDR4_AXI_ADDR_WIDTH,
               id_width: int = DDR4_AXI_ID_WIDTH) -> list[IPPort]:
    """Ports of ``ddr4_<k>`` (DDR4 SDRAM MIG, PG150) for one 72-bit x4 ECC RDIMM with the AXI4 slave enabled (the
    same for every slot: the controller's ports are ``c0_`` whichever DIMM it drives)."""
    return [
        IPPort("c0_sys_clk_p", "input", doc="300 MHz reference, clk300[k] of slot Ck"),
        IPPort("c0_sys_clk_n", "input"),
        IPPort("sys_rst", "input", doc="active high"),
        IPPort("c0_init_calib_complete", "output"),
        IPPort("c0_ddr4_interrupt", "output", doc="ECC interrupt"),
        IPPort("dbg_clk", "output", doc="leave open (debug hub)"),
        IPPort("dbg_bus", "output", 512, doc="leave open"),
        IPPort("c0_ddr4_adr", "output", 17),
        IPPort("c0_ddr4_ba", "output", 2),
        IPPort("c0_ddr4_bg", "output", 2),
        IPPort("c0_ddr4_cke", "output", 1),
        IPPort("c0_ddr4_cs_n", "output", 1),
        IPPort("c0_ddr4_odt", "output", 1),
        IPPort("c0_ddr4_act_n", "output"),
        IPPort("c0_ddr4_ck_t", "output", 1),
        IPPort("c0_ddr4_ck_c", "output", 1),
        IPPort("c0_ddr4_parity", "output", doc="RDIMM command/address parity"),
        IPPort("c0_ddr4_reset_n", "output"),
        IPPort("c0_ddr4_dq", "inout", 72),
        IPPort("c0_ddr4_dqs_t", "inout", 18),
        IPPort("c0_ddr4_dqs_c", "inout", 18),
        IPPort("c0_ddr4_ui_clk", "output", doc="controller clock, 300 MHz"),
        IPPort("c0_ddr4_ui_clk_sync_rst", "output", doc="active high, synchronous to ui_clk"),
        IPPort("c0_ddr4_aresetn", "input", doc="AXI reset, active low, synchronous to ui_clk"),
        *_axil_ports("c0_ddr4_s_axi_ctrl_", slave=True, prot=False),
        *_axi4_ports("c0_ddr4_s_axi_", slave=True, addr_width=addr_width, data_width=data_width,
                     id_width=id_width, qos=True),
    ]


def smartconnect_ports(*, data_width: int = 512, id_width: int = XDMA_AXI_ID_WIDTH,
                       addr_width: int = DDR4_AXI_ADDR_WIDTH, sat_masters: int = 1,
                       channels: int = CARD_MEMORY.channels) -> list[IPPort]:
    """Ports of the ``smartconnect_0`` block design: ``1 + sat_masters`` AXI4 slaves on ``aclk`` -> one AXI4 master
    per DDR4 channel, ``M<k>`` on ``aclk<k+1>`` (that channel's ``ui_clk``).

    The names are those of the block design's external ports, which the generated Tcl creates (``S00_AXI`` for
    XDMA, ``S01_AXI`` .. for SAT's masters, ``M00_AXI`` .. to DDR4 C0 ..); the ``M`` ports have no ID signals
    (SmartConnect does not propagate IDs to an endpoint slave by default, PG247) and no QoS/region. ``aresetn``
    (synchronous to ``aclk``) resets SmartConnect; ``aresetn<k+1>`` (synchronous to ``aclk<k+1>``) the SLR-crossing
    register slice of each channel of :func:`slr_crossing_channels`.
    """
    if isinstance(sat_masters, bool) or not isinstance(sat_masters, int) or not 1 <= sat_masters <= 15:
        raise ValueError(f"sat_masters must be an integer between 1 and 15, not {sat_masters!r}")
    ports = [IPPort("aclk", "input", doc="slave side clock (XDMA axi_aclk)")]
    ports += [IPPort(f"aclk{k + 1}", "input", doc=f"M{k:02d} clock (DDR4 C{k} ui_clk)") for k in range(channels)]
    ports.append(IPPort("aresetn", "input", doc="active low, synchronous to aclk"))
    ports += [IPPort(f"aresetn{k + 1}", "input", doc=f"C{k} register slice reset, synchronous to aclk{k + 1}")
              for k in slr_crossing_channels() if k < channels]
    for si in range(1 + sat_masters):
        ports += _axi4_ports(f"S{si:02d}_AXI_", slave=True, addr_width=64, data_width=data_width,
                             id_width=id_width)
    for k in range(channels):
        ports += _axi4_ports(f"M{k:02d}_AXI_", slave=False, addr_width=addr_width, data_width=data_width,
                             id_width=0)
    return ports


def ibufds_gte4_ports() -> list[IPPort]:
    """Ports of the UltraScale+ GT reference clock buffer ``IBUFDS_GTE4`` (UG974)."""
    return [
        IPPort("I", "input"), IPPort("IB", "input"), IPPort("CEB", "input", doc="active-low enable"),
        IPPort("O", "output", doc="to the GT (sys_clk_gt)"), IPPort("ODIV2", "output", doc="to fabric (sys_clk)"),
    ]


def ip_ports(*, sat_masters: int = 1) -> dict[str, list[IPPort]]:
    """Every black box of the card top: module name -> ports (``sat_masters``: AXI4 masters of the SAT core)."""
    return {
        "xdma_0": xdma_ports(),
        **{ddr4_module(k): ddr4_ports() for k in range(CARD_MEMORY.channels)},
        "smartconnect_0": smartconnect_ports(sat_masters=sat_masters),
        "IBUFDS_GTE4": ibufds_gte4_ports(),
    }


#: Xilinx primitives Amaranth's Xilinx platform instantiates for fabric I/O buffers and for the stages of an
#: ``AsyncFFSynchronizer`` (``FDPE``: D flip-flop with asynchronous preset) (UG974 port names).
_PRIMITIVE_PORTS: dict[str, list[IPPort]] = {
    "IBUF": [IPPort("I", "input"), IPPort("O", "output")],
    "OBUF": [IPPort("I", "input"), IPPort("O", "output")],
    "OBUFT": [IPPort("I", "input"), IPPort("T", "input"), IPPort("O", "output")],
    "IOBUF": [IPPort("I", "input"), IPPort("T", "input"), IPPort("O", "output"), IPPort("IO", "inout")],
    "FDPE": [IPPort("Q", "output"), IPPort("C", "input"), IPPort("CE", "input"), IPPort("PRE", "input"),
             IPPort("D", "input")],
}


def ip_stub_verilog(modules: dict[str, list[IPPort]] | None = None, *, primitives: bool = True) -> str:
    """Verilog stub modules with the port lists of the card's black boxes, for lint (and as documentation).

    Outputs are driven with zeros (inouts left floating); nothing else is modelled. Parameters used by the top
    (``REFCLK_HROW_CK_SEL`` etc. on ``IBUFDS_GTE4``) are declared so that Verilator accepts the overrides.

    Parameters
    ----------
    modules : dict, optional
        Module name -> ports; default :func:`ip_ports`.
    primitives : bool
        Also emit ``IBUF``/``OBUF``/``OBUFT``/``IOBUF`` (used by Amaranth's I/O buffers on Xilinx) and ``FDPE``
        (its asynchronous reset synchronizer).

    Returns
    -------
    str
    """
    modules = dict(ip_ports() if modules is None else modules)
    if primitives:
        modules.update(_PRIMITIVE_PORTS)
    params = {"IBUFDS_GTE4": ["REFCLK_EN_TX_PATH = 1'b0", "REFCLK_HROW_CK_SEL = 2'b00", "REFCLK_ICNTL_RX = 2'b00"],
              "IBUF": ['IOSTANDARD = "DEFAULT"'], "OBUF": ['IOSTANDARD = "DEFAULT"'],
              "OBUFT": ['IOSTANDARD = "DEFAULT"'], "IOBUF": ['IOSTANDARD = "DEFAULT"'], "FDPE": ["INIT = 1'b1"]}
    lines = ["// Generated by sat.boards.card.ip_stub_verilog: port lists of the black boxes of the VCU1525 card top.",
             "// Stubs for lint only: outputs are tied to zero. The real modules come from the Vivado IP.",
             "/* verilator lint_off UNUSEDSIGNAL */", "/* verilator lint_off UNUSEDPARAM */",
             "/* verilator lint_off UNDRIVEN */", ""]
    for name, ports in modules.items():
        header = f"module {name}"
        if name in params:
            header += " #(\n" + ",\n".join(f"  parameter {p}" for p in params[name]) + "\n)"
        lines.append(header + " (")
        decls = []
        for p in ports:
            rng = f"[{p.width - 1}:0] " if p.width > 1 else ""
            comment = f"  // {p.doc}" if p.doc else ""
            decls.append((f"  {p.direction} wire {rng}{p.name}", comment))
        for i, (decl, comment) in enumerate(decls):
            sep = "," if i < len(decls) - 1 else ""
            lines.append(decl + sep + comment)
        lines.append(");")
        for p in ports:
            if p.direction == "output":
                lines.append(f"  assign {p.name} = {p.width}'d0;")
        lines.append("endmodule")
        lines.append("")
    lines += ["/* verilator lint_on UNDRIVEN */", "/* verilator lint_on UNUSEDPARAM */",
              "/* verilator lint_on UNUSEDSIGNAL */", ""]
    return "\n".join(lines)


class MemoryBusReset(Elaboratable):
    """One reset for every AXI master and slave of the card's memory bus, delivered in each of their clock domains.

    SmartConnect (PG247) needs every master and slave connected to it reset together: a side that is reset while
    the other still has transactions in flight leaves them half done and can hang the bus. The sources differ by
    side: XDMA's ``axi_aresetn`` falls on PERST#, a host hot reset or FLR, and a DDR4 controller's
    ``ui_clk_sync_rst`` rises when it (re)calibrates, e.g. on the CPU_RESET button. So the reset request is the OR
    of all of them, and every block on the bus (SAT, SmartConnect, each DDR4 AXI slave) gets that one reset.

    For each domain the reset asserts asynchronously with the request (its clock may be stopped then), releases
    synchronously to the domain's clock, and stays asserted for ``hold_cycles`` cycles of that clock after the
    request ends and right after configuration. Only the domains' clocks are used, not their resets, so the
    outputs may drive those domains' resets. More DDR4 controllers: one more domain and one more OR-ed source each.

    Parameters
    ----------
    domains : sequence of str
        Clock domains that take the reset.
    hold_cycles : int
        Cycles of each domain's clock the reset outlasts the request (at least 1).

    Attributes
    ----------
    request : Signal, in
        Active high, asynchronous to every domain: the OR of the reset sources.
    rst : dict of str to Signal, out
        Per domain, active high.

    Raises
    ------
    ValueError
        For no domains, a repeated domain or a ``hold_cycles`` below 1.
    """

    def __init__(self, domains, *, hold_cycles: int = BUS_RESET_HOLD_CYCLES) -> None:
        domains = list(domains)
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"domains must be a non-empty list of distinct names, not {domains!r}")
        if isinstance(hold_cycles, bool) or not isinstance(hold_cycles, int) or hold_cycles < 1:
            raise ValueError(f"hold_cycles must be a positive integer, not {hold_cycles!r}")
        self._hold = hold_cycles
        self.request = Signal(name="bus_reset_request")
        self.rst = {d: Signal(name=f"{d}_bus_reset") for d in domains}

    def elaborate(self, platform) -> Module:
        m = Module()
        for d, rst in self.rst.items():
            gen = f"{d}_bus_reset_gen"
            m.domains += ClockDomain(gen, reset_less=True, local=True)
            m.d.comb += ClockSignal(gen).eq(ClockSignal(d))
            req = Signal(name=f"{d}_bus_reset_req")
            m.submodules[f"{d}_sync"] = AsyncFFSynchronizer(self.request, req, o_domain=gen)
            hold = Signal(range(self._hold + 1), init=self._hold, name=f"{d}_bus_reset_hold")
            with m.If(req):
                m.d[gen] += hold.eq(self._hold)
            with m.Elif(hold != 0):
                m.d[gen] += hold.eq(hold - 1)
            m.d.comb += rst.eq(req | (hold != 0))
        return m


class VCU1525Card(Elaboratable):
    """Top level of the VCU1525 bitstream: XDMA, four DDR4 controllers (C0..C3), SmartConnect and ``SATCore``.

    Clocks and resets: SAT runs in the ``sync`` domain on XDMA's ``axi_aclk`` (250 MHz); the ``ddr<k>`` domain is
    DDR4 C<k>'s ``c0_ddr4_ui_clk`` (300 MHz, one per controller, from its own 300 MHz reference ``clk300[k]``).
    SAT, SmartConnect's ``aresetn``, the register slices' resets and every DDR4 AXI reset ``c0_ddr4_aresetn`` come
    from one :class:`MemoryBusReset` whose request is ``~axi_aresetn`` or any controller's ``c0_ddr4_ui_clk_sync_rst``
    (PG247: the bus resets as a whole). Each DDR4 ``sys_rst`` is the CPU_RESET button, so the memories calibrate
    after configuration independently of the PCIe link. SmartConnect crosses from ``aclk`` (XDMA and SAT) to each
    channel's ``ui_clk``.

    Address map: SAT's registers at BAR0 offset 0 (XDMA ``m_axil``, ``pciebar2axibar_axil_master = 0``); DDR4
    C<k> at AXI address ``k * 16 GiB`` (16 GiB each, 64 GiB in all, :data:`sat.sw.memmap.CARD_MEMORY`) for both
    XDMA's DMA (``m_axi``) and SAT's ``m_axi``. The core reports the map in ``MEM_SIZE`` and ``MEM_CHANNELS``.

    LEDs: ``led`` 0 (red) = PCIe link up; ``led`` 1 (yellow) = heartbeat of ``axi_aclk`` in the ``sync`` domain:
    about 0.93 Hz once all four DDR4 controllers completed calibration, 8x faster (7.5 Hz) before, dark and steady
    while the bus reset holds it or ``axi_aclk`` does not run; ``led`` 2 (green) = SAT interrupt seen since the last
    bus reset (sticky: an error or a finished list; the driver reads ``STATUS`` to tell which). See docs/board.md,
    "LEDs".

    Parameters
    ----------
    config : SATConfig
        The SAT build.
    core : callable, optional
        ``core(config, memory_bytes=..., memory_channels=...)`` returning the SAT core component; default
        :class:`sat.hw.core.SATCore` (with the GEMM unit as its engine). Each of its AXI4 masters (flat ports
        ``m_axi_*``, then ``m_axi1_*``, ``m_axi2_*`` ...) gets its own SmartConnect slave port (``S01_AXI`` ...).

    Raises
    ------
    TypeError
        If ``config`` is not a ``SATConfig``.
    ValueError
        If the configuration's AXI widths do not match the card (512-bit data, 64-bit addresses).
    """

    #: The card's device memory (four 16 GiB channels).
    memory = CARD_MEMORY

    def __init__(self, config: SATConfig, *, core: Callable[..., wiring.Component] | None = None) -> None:
        try:
            self._check(config)
        except (TypeError, ValueError):
            # A rejected top is never elaborated: keep Amaranth from warning "created but never used" later.
            self._MustUse__silence = True
            raise
        self._config = config
        if core is None:
            from sat.hw.core import SATCore as core
        self._core = core(config, memory_bytes=self.memory.size, memory_channels=self.memory.channels)
        self._masters = self._sat_masters(self._core)

    @staticmethod
    def _check(config: SATConfig) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512 or config.axi_addr_width != 64:
            raise ValueError("the VCU1525 card top needs axi_data_width=512 and axi_addr_width=64 (XDMA and DDR4 "
                             f"datapath), not {config.axi_data_width} and {config.axi_addr_width}: fix the config")

    @staticmethod
    def _sat_masters(core: wiring.Component) -> list[str]:
        """Prefixes of the core's AXI4 masters, ``m_axi_`` first, then ``m_axi1_``, ``m_axi2_`` ..."""
        names = core.signature.members.keys()
        prefixes = ["m_axi_"]
        while any(n.startswith(f"m_axi{len(prefixes)}_") for n in names):
            prefixes.append(f"m_axi{len(prefixes)}_")
        if not any(n.startswith("m_axi_") for n in names):
            raise ValueError("the SAT core has no AXI4 master (ports m_axi_*)")
        return prefixes

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def core(self) -> wiring.Component:
        """The SAT core instance (submodule ``sat``)."""
        return self._core

    @property
    def sat_masters(self) -> int:
        """AXI4 masters of the SAT core, each on its own SmartConnect slave port."""
        return len(self._masters)

    @staticmethod
    def _signals(prefix: str, ports: list[IPPort]) -> dict[str, Signal]:
        return {p.name: Signal(p.width, name=f"{prefix}_{p.name}") for p in ports}

    @staticmethod
    def _instance(module: str, ports: list[IPPort], bind: dict, **params) -> Instance:
        kwargs = {}
        for p in ports:
            prefix = {"input": "i_", "output": "o_", "inout": "io_"}[p.direction]
            kwargs[prefix + p.name] = bind[p.name]
        for name, value in params.items():
            kwargs["p_" + name] = value
        return Instance(module, **kwargs)

    def elaborate(self, platform) -> Module:
        if platform is None:
            raise TypeError("VCU1525Card needs the VCU1525Platform (it requests pins): build it through "
                            "sat.boards.vivado or VCU1525Platform().build(..., do_build=False)")
        m = Module()
        channels = range(self.memory.channels)
        pcie = platform.request("pcie_x16", 0, dir="-")

        # --- clocks and resets
        m.domains.sync = cd_sync = ClockDomain("sync")
        cd_ddr = {}
        for k in channels:
            cd_ddr[k] = ClockDomain(f"ddr{k}")
            m.domains += cd_ddr[k]

        # --- PCIe reference clock
        refclk = {"I": pcie.clk.p, "IB": pcie.clk.n, "CEB": Signal(name="pcie_refclk_ceb"),
                  "O": Signal(name="pcie_sys_clk_gt"), "ODIV2": Signal(name="pcie_sys_clk")}
        m.submodules.pcie_refclk_ibuf = self._instance("IBUFDS_GTE4", ibufds_gte4_ports(), refclk,
                                                       REFCLK_HROW_CK_SEL=Const(0b00, 2))

        # --- XDMA
        xp = xdma_ports()
        x = self._signals("xdma", xp)
        x.update({"sys_clk": refclk["ODIV2"], "sys_clk_gt": refclk["O"], "sys_rst_n": pcie.perst.io,
                  "pci_exp_txp": pcie.tx.p, "pci_exp_txn": pcie.tx.n,
                  "pci_exp_rxp": pcie.rx.p, "pci_exp_rxn": pcie.rx.n})
        m.submodules.xdma = self._instance("xdma_0", xp, x)
        m.d.comb += cd_sync.clk.eq(x["axi_aclk"])

        # --- DDR4 C0..C3: one controller per DIMM slot, each on its own 300 MHz reference clock
        btn = platform.request("rst", 0, dir="-")
        m.submodules.cpu_reset_buf = cpu_reset = io.Buffer("i", btn)   # PinsN: active high after the buffer
        dp = ddr4_ports()
        d = {}
        for k in channels:
            clk300 = platform.request("clk300", k, dir="-")
            platform.leave_clock_to_ip(clk300)   # the DDR4 IP's XDC creates this clock (System_Clock Differential)
            ddr = platform.request("ddr4", k, dir="-")
            d[k] = self._signals(f"ddr4_c{k}", dp)
            d[k].update({"c0_sys_clk_p": clk300.p, "c0_sys_clk_n": clk300.n, "sys_rst": cpu_reset.i,
                         "c0_ddr4_adr": ddr.adr.io, "c0_ddr4_ba": ddr.ba.io, "c0_ddr4_bg": ddr.bg.io,
                         "c0_ddr4_cke": ddr.cke.io, "c0_ddr4_cs_n": ddr.cs_n.io, "c0_ddr4_odt": ddr.odt.io,
                         "c0_ddr4_act_n": ddr.act_n.io, "c0_ddr4_ck_t": ddr.ck.p, "c0_ddr4_ck_c": ddr.ck.n,
                         "c0_ddr4_parity": ddr.par.io, "c0_ddr4_reset_n": ddr.reset_n.io, "c0_ddr4_dq": ddr.dq.io,
                         "c0_ddr4_dqs_t": ddr.dqs.p, "c0_ddr4_dqs_c": ddr.dqs.n})
            m.submodules[f"ddr4_c{k}"] = self._instance(ddr4_module(k), dp, d[k])
            m.d.comb += [cd_ddr[k].clk.eq(d[k]["c0_ddr4_ui_clk"]), d[k]["c0_ddr4_s_axi_ctrl_bready"].eq(1),
                         d[k]["c0_ddr4_s_axi_ctrl_rready"].eq(1)]

        # --- one reset for the whole memory bus (PG247): XDMA's side and every DDR4 controller's side
        m.submodules.bus_reset = bus_reset = MemoryBusReset(["sync", *(f"ddr{k}" for k in channels)])
        request = ~x["axi_aresetn"]
        for k in channels:
            request = request | d[k]["c0_ddr4_ui_clk_sync_rst"]
        m.d.comb += [bus_reset.request.eq(request), cd_sync.rst.eq(bus_reset.rst["sync"])]
        for k in channels:
            m.d.comb += [cd_ddr[k].rst.eq(bus_reset.rst[f"ddr{k}"]),
                         d[k]["c0_ddr4_aresetn"].eq(~bus_reset.rst[f"ddr{k}"])]
        # DDR4_RESET_GATE [U200-XDC]: high holds the DIMMs in self-refresh; drive it low.
        gate = platform.request("ddr4_reset_gate", 0, dir="-")
        m.submodules.ddr4_reset_gate_buf = gate_buf = io.Buffer("o", gate)
        m.d.comb += gate_buf.o.eq(0)

        # --- SmartConnect: S00 = XDMA DMA, S01.. = SAT's masters, M<k> = DDR4 C<k> (through rs_c<k> if it
        # crosses an SLR)
        sp = smartconnect_ports(sat_masters=self.sat_masters, channels=self.memory.channels)
        s = self._signals("smc", sp)
        s["aclk"] = x["axi_aclk"]
        m.d.comb += s["aresetn"].eq(~bus_reset.rst["sync"])   # synchronous to aclk
        for k in channels:
            s[f"aclk{k + 1}"] = d[k]["c0_ddr4_ui_clk"]
            if f"aresetn{k + 1}" in s:
                m.d.comb += s[f"aresetn{k + 1}"].eq(~bus_reset.rst[f"ddr{k}"])   # synchronous to aclk<k+1>
        for p in xp:
            if p.name.startswith("m_axi_"):
                s["S00_AXI_" + p.name[len("m_axi_"):]] = x[p.name]
        for p in sp:
            if p.name.startswith("M") and p.name[1:3].isdigit() and p.name[3:8] == "_AXI_":
                s[p.name] = d[int(p.name[1:3])]["c0_ddr4_s_axi_" + p.name[8:]]
        # DDR4 AXI IDs and QoS: SmartConnect drives no IDs on M<k>; ID 0, QoS 0 (undriven signals are 0).

        # --- SAT
        m.submodules.sat = core = self._core
        for name, member in core.signature.members.items():
            port = getattr(core, name)
            if name.startswith("s_axil_"):
                peer = x["m_axil_" + name[len("s_axil_"):]]
            elif name.startswith("m_axi"):
                prefix = next(p for p in self._masters if name.startswith(p))
                peer = s[f"S{self._masters.index(prefix) + 1:02d}_AXI_" + name[len(prefix):]]
            else:
                continue
            m.d.comb += (port.eq(peer) if member.flow == In else peer.eq(port))
        m.d.comb += x["usr_irq_req"][0].eq(core.irq)
        m.submodules.smartconnect = self._instance("smartconnect_0", sp, s)

        # --- LEDs
        calibrated = Signal(name="ddr4_calibrated")
        calib = Signal(self.memory.channels, name="ddr4_calib_complete")
        m.d.comb += calib.eq(Cat(d[k]["c0_init_calib_complete"] for k in channels))
        calib_sync = Signal(self.memory.channels, name="ddr4_calib_complete_sync")
        m.submodules.calib_sync = FFSynchronizer(calib, calib_sync, o_domain="sync")
        m.d.comb += calibrated.eq(calib_sync.all())
        heartbeat = Signal(HEARTBEAT_BIT + 1, name="heartbeat")
        m.d.sync += heartbeat.eq(heartbeat + 1)
        irq_seen = Signal(name="irq_seen")
        with m.If(core.irq):
            m.d.sync += irq_seen.eq(1)
        leds = []
        for i in range(3):
            m.submodules[f"led{i}_buf"] = buf = io.Buffer("o", platform.request("led", i, dir="-"))
            leds.append(buf)
        m.d.comb += [
            leds[0].o.eq(x["user_lnk_up"]),
            leds[1].o.eq(heartbeat[HEARTBEAT_BIT]),
            leds[2].o.eq(irq_seen),
        ]
        with m.If(~calibrated):
            m.d.comb += leds[1].o.eq(heartbeat[HEARTBEAT_BIT - 3])
        return m
