"""Card top level for the VCU1525: ``SATCore`` between the Xilinx XDMA (PCIe) and DDR4 IP.

Block diagram (``docs/board.md``, "Card top level")::

    PCIe x16 ---- xdma (xdma_0) ---- m_axil (BAR0) ------------------> sat (SATCore) s_axil
    refclk --IBUFDS_GTE4   |  axi_aclk 250 MHz = SAT clock              |  irq -> usr_irq_req[0]
                           +-- m_axi (H2C/C2H DMA) --> S00 +            |  m_axi
                                                           smartconnect (smartconnect_0) <-- S01
                               clk300[0] --> ddr4 (ddr4_0) <-- M00 (DDR4 ui_clk, 300 MHz)
                                             C0 DIMM pins
    bus_reset (MemoryBusReset): ~axi_aresetn | ui_clk_sync_rst -> SAT, SmartConnect aresetn, c0_ddr4_aresetn

The IP are black boxes (``Instance``) created by generated Vivado Tcl (:mod:`sat.boards.vivado`). Their port lists
live here, in :data:`IP_PORTS`, once: the top level binds them, and :func:`ip_stub_verilog` turns them into Verilog
stub modules for Verilator lint, which double as documentation of the ports the top expects from the IP.

Port names follow Xilinx's instantiation templates (``.veo``) of public designs: XDMA (PG195) as generated for a
Gen3 x16, 512-bit, AXI-MM configuration with the AXI-Lite master enabled; DDR4 (PG150) for an ECC RDIMM with the
AXI4 slave (hence the ECC control port ``c0_ddr4_s_axi_ctrl_*`` and ``c0_ddr4_parity``); SmartConnect (PG247) is an
IP-integrator-only core, so ``smartconnect_0`` is a one-cell block design whose external interface ports are named
by the generated Tcl (``S00_AXI_*``, ``S01_AXI_*``, ``M00_AXI_*``, ``aclk``, ``aclk1``, ``aresetn``). What could not
be confirmed without Vivado is listed in ``docs/board.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import AsyncFFSynchronizer, FFSynchronizer
from amaranth.lib.wiring import In

from sat.sw.config import SATConfig
from sat.sw.regmap import DEFAULT_MEMORY_BYTES

__all__ = [
    "IPPort",
    "PCIE_LANES",
    "XDMA_AXI_ID_WIDTH",
    "DDR4_AXI_ADDR_WIDTH",
    "DDR4_AXI_ID_WIDTH",
    "DDR4_UI_CLOCK_HZ",
    "XDMA_AXI_CLOCK_HZ",
    "HEARTBEAT_BIT",
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
#: DDR4 C0 AXI address width: 16 GiB (reference 1.6, ``DDR4_AxiAddressWidth 34``).
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
    """Ports of ``ddr4_0`` (DDR4 SDRAM MIG, PG150) for one 72-bit x4 ECC RDIMM with the AXI4 slave enabled."""
    return [
        IPPort("c0_sys_clk_p", "input", doc="300 MHz reference, clk300[0]"),
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
                       addr_width: int = DDR4_AXI_ADDR_WIDTH) -> list[IPPort]:
    """Ports of the ``smartconnect_0`` block design: 2 AXI4 slaves on ``aclk`` -> 1 AXI4 master on ``aclk1``.

    The names are those of the block design's external ports, which the generated Tcl creates (``S00_AXI`` for
    XDMA, ``S01_AXI`` for SAT, ``M00_AXI`` to DDR4); ``M00_AXI`` has no ID signals (SmartConnect does not
    propagate IDs to an endpoint slave by default, PG247) and no QoS/region.
    """
    return [
        IPPort("aclk", "input", doc="slave side clock (XDMA axi_aclk)"),
        IPPort("aclk1", "input", doc="master side clock (DDR4 ui_clk)"),
        IPPort("aresetn", "input", doc="active low, synchronous to aclk"),
        *_axi4_ports("S00_AXI_", slave=True, addr_width=64, data_width=data_width, id_width=id_width),
        *_axi4_ports("S01_AXI_", slave=True, addr_width=64, data_width=data_width, id_width=id_width),
        *_axi4_ports("M00_AXI_", slave=False, addr_width=addr_width, data_width=data_width, id_width=0),
    ]


def ibufds_gte4_ports() -> list[IPPort]:
    """Ports of the UltraScale+ GT reference clock buffer ``IBUFDS_GTE4`` (UG974)."""
    return [
        IPPort("I", "input"), IPPort("IB", "input"), IPPort("CEB", "input", doc="active-low enable"),
        IPPort("O", "output", doc="to the GT (sys_clk_gt)"), IPPort("ODIV2", "output", doc="to fabric (sys_clk)"),
    ]


def ip_ports() -> dict[str, list[IPPort]]:
    """Every black box of the card top: module name -> ports."""
    return {
        "xdma_0": xdma_ports(),
        "ddr4_0": ddr4_ports(),
        "smartconnect_0": smartconnect_ports(),
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
    """Top level of the VCU1525 bitstream: XDMA, DDR4 C0, SmartConnect and ``SATCore``.

    Clocks and resets: SAT runs in the ``sync`` domain on XDMA's ``axi_aclk`` (250 MHz); the ``ddr`` domain is
    DDR4's ``c0_ddr4_ui_clk`` (300 MHz). SAT, SmartConnect's ``aresetn`` and the DDR4 AXI reset
    ``c0_ddr4_aresetn`` all come from one :class:`MemoryBusReset` whose request is ``~axi_aresetn |
    c0_ddr4_ui_clk_sync_rst`` (PG247: the bus resets as a whole). The DDR4 ``sys_rst`` is the CPU_RESET button, so
    the memory calibrates after configuration independently of the PCIe link. SmartConnect crosses from ``aclk``
    (XDMA and SAT) to ``aclk1`` (DDR4).

    Address map: SAT's registers at BAR0 offset 0 (XDMA ``m_axil``, ``pciebar2axibar_axil_master = 0``); DDR4
    C0 at AXI address 0..16 GiB for both XDMA's DMA (``m_axi``) and SAT's ``m_axi``.

    LEDs: ``led`` 0 (red) = PCIe link up; ``led`` 1 (yellow) = heartbeat of ``axi_aclk`` in the ``sync`` domain:
    about 0.93 Hz once DDR4 calibration completed, 8x faster (7.5 Hz) before, dark and steady while the bus reset
    holds it or ``axi_aclk`` does not run; ``led`` 2 (green) = SAT interrupt seen since the last bus reset (sticky:
    an error or a finished list; the driver reads ``STATUS`` to tell which). See docs/board.md, "LEDs".

    Parameters
    ----------
    config : SATConfig
        The SAT build.
    memory_bytes : int
        Device memory reported to SAT (default: one 16 GiB DIMM).
    core : callable, optional
        ``core(config, memory_bytes=...)`` returning the SAT core component; default
        :class:`sat.hw.core.SATCore` (with the GEMM unit as its engine).

    Raises
    ------
    TypeError
        If ``config`` is not a ``SATConfig``.
    ValueError
        If the configuration's AXI widths do not match the card (512-bit data, 64-bit addresses).
    """

    def __init__(self, config: SATConfig, *, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 core: Callable[..., wiring.Component] | None = None) -> None:
        try:
            self._check(config, memory_bytes)
        except (TypeError, ValueError):
            # A rejected top is never elaborated: keep Amaranth from warning "created but never used" later.
            self._MustUse__silence = True
            raise
        self._config = config
        self._memory_bytes = memory_bytes
        if core is None:
            from sat.hw.core import SATCore as core
        self._core = core(config, memory_bytes=memory_bytes)

    @staticmethod
    def _check(config: SATConfig, memory_bytes: int) -> None:
        if not isinstance(config, SATConfig):
            raise TypeError(f"config must be a SATConfig, not {config!r}")
        if config.axi_data_width != 512 or config.axi_addr_width != 64:
            raise ValueError("the VCU1525 card top needs axi_data_width=512 and axi_addr_width=64 (XDMA and DDR4 "
                             f"datapath), not {config.axi_data_width} and {config.axi_addr_width}: fix the config")
        if not 0 < memory_bytes <= 1 << DDR4_AXI_ADDR_WIDTH:
            raise ValueError(f"memory_bytes must be between 1 and {1 << DDR4_AXI_ADDR_WIDTH} (one DDR4 channel), "
                             f"not {memory_bytes!r}")

    @property
    def config(self) -> SATConfig:
        return self._config

    @property
    def core(self) -> wiring.Component:
        """The SAT core instance (submodule ``sat``)."""
        return self._core

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
        pcie = platform.request("pcie_x16", 0, dir="-")
        clk300 = platform.request("clk300", 0, dir="-")
        platform.leave_clock_to_ip(clk300)   # the DDR4 IP's XDC creates this clock (System_Clock Differential)
        ddr = platform.request("ddr4", 0, dir="-")

        # --- clocks and resets
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.domains.ddr = cd_ddr = ClockDomain("ddr")

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

        # --- DDR4 C0
        dp = ddr4_ports()
        d = self._signals("ddr4", dp)
        btn = platform.request("rst", 0, dir="-")
        m.submodules.cpu_reset_buf = cpu_reset = io.Buffer("i", btn)   # PinsN: active high after the buffer
        d.update({"c0_sys_clk_p": clk300.p, "c0_sys_clk_n": clk300.n, "sys_rst": cpu_reset.i,
                  "c0_ddr4_adr": ddr.adr.io, "c0_ddr4_ba": ddr.ba.io, "c0_ddr4_bg": ddr.bg.io,
                  "c0_ddr4_cke": ddr.cke.io, "c0_ddr4_cs_n": ddr.cs_n.io, "c0_ddr4_odt": ddr.odt.io,
                  "c0_ddr4_act_n": ddr.act_n.io, "c0_ddr4_ck_t": ddr.ck.p, "c0_ddr4_ck_c": ddr.ck.n,
                  "c0_ddr4_parity": ddr.par.io, "c0_ddr4_reset_n": ddr.reset_n.io, "c0_ddr4_dq": ddr.dq.io,
                  "c0_ddr4_dqs_t": ddr.dqs.p, "c0_ddr4_dqs_c": ddr.dqs.n})
        m.submodules.ddr4 = self._instance("ddr4_0", dp, d)
        m.d.comb += [cd_ddr.clk.eq(d["c0_ddr4_ui_clk"]), d["c0_ddr4_s_axi_ctrl_bready"].eq(1),
                     d["c0_ddr4_s_axi_ctrl_rready"].eq(1)]

        # --- one reset for the whole memory bus (PG247): XDMA's side and every DDR4 controller's side
        m.submodules.bus_reset = bus_reset = MemoryBusReset(["sync", "ddr"])
        m.d.comb += [
            bus_reset.request.eq(~x["axi_aresetn"] | d["c0_ddr4_ui_clk_sync_rst"]),
            cd_sync.rst.eq(bus_reset.rst["sync"]),
            cd_ddr.rst.eq(bus_reset.rst["ddr"]),
            d["c0_ddr4_aresetn"].eq(~bus_reset.rst["ddr"]),
        ]
        # DDR4_RESET_GATE [U200-XDC]: high holds the DIMMs in self-refresh; drive it low.
        gate = platform.request("ddr4_reset_gate", 0, dir="-")
        m.submodules.ddr4_reset_gate_buf = gate_buf = io.Buffer("o", gate)
        m.d.comb += gate_buf.o.eq(0)

        # --- SmartConnect: S00 = XDMA DMA, S01 = SAT, M00 = DDR4
        sp = smartconnect_ports()
        s = self._signals("smc", sp)
        s.update({"aclk": x["axi_aclk"], "aclk1": d["c0_ddr4_ui_clk"]})
        m.d.comb += s["aresetn"].eq(~bus_reset.rst["sync"])   # synchronous to aclk
        for p in xp:
            if p.name.startswith("m_axi_"):
                s["S00_AXI_" + p.name[len("m_axi_"):]] = x[p.name]
        for p in sp:
            if p.name.startswith("M00_AXI_"):
                s[p.name] = d["c0_ddr4_s_axi_" + p.name[len("M00_AXI_"):]]
        # DDR4 AXI IDs and QoS: SmartConnect drives no IDs on M00; ID 0, QoS 0 (undriven signals are 0).

        # --- SAT
        m.submodules.sat = core = self._core
        for name, member in core.signature.members.items():
            port = getattr(core, name)
            if name.startswith("s_axil_"):
                peer = x["m_axil_" + name[len("s_axil_"):]]
            elif name.startswith("m_axi_"):
                peer = s["S01_AXI_" + name[len("m_axi_"):]]
            else:
                continue
            m.d.comb += (port.eq(peer) if member.flow == In else peer.eq(port))
        m.d.comb += x["usr_irq_req"][0].eq(core.irq)
        m.submodules.smartconnect = self._instance("smartconnect_0", sp, s)

        # --- LEDs
        calibrated = Signal(name="ddr4_calibrated")
        m.submodules.calib_sync = FFSynchronizer(d["c0_init_calib_complete"], calibrated, o_domain="sync")
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
