"""The Vivado tree of a VCU1525 build: Verilog, constraints, IP Tcl, build script, configuration and README.

``sat build vcu1525 --out DIR`` calls :func:`write_vivado_tree`. The tree (no Vivado needed to write it)::

    DIR/sat_card.v            Amaranth's Verilog of the card top (VCU1525Card: SATCore + IP black boxes)
    DIR/sat_card.xdc          pins (PCIe, DDR4 C0..C3, ...), IO standards, create_clock (PCIe refclk), bitstream
                              properties
    DIR/timing.xdc            false paths for Amaranth's synchronizers (implementation only)
    DIR/floorplan.xdc         the SLR plan: pblocks for SLR0/1/2 (implementation only)
    DIR/ip/xdma_0.tcl         create_ip xdma (Gen3 x16, 512-bit AXI-MM at 250 MHz, AXI-Lite master, 1 user IRQ)
    DIR/ip/ddr4_<k>.tcl       create_ip ddr4 for C<k>, k = 0..3 (16 GB x4 ECC RDIMM, DDR4-2400, 300 MHz reference
                              clk300[k], 512-bit AXI)
    DIR/ip/smartconnect_0.tcl block design smartconnect_0 (2 SI on aclk -> 4 MI, M<k> on aclk<k+1>, four 16 GiB
                              windows; SLR-crossing register slices to C0 and C3)
    DIR/build.tcl             project-mode batch build: IP, synthesis, implementation, bitstream, flash images
    DIR/program.tcl           JTAG programming (bitstream), flash programming (user region) or the one-time
                              fallback image at flash address 0, through hw_server
    DIR/build.sh              runs build.tcl with Vivado
    DIR/sat_config.json       the SATConfig of this build
    DIR/regmap.json, sat_regs.h  the register map for host software
    DIR/stubs/ip_stubs.v      Verilog stubs with the IP port lists the top expects (lint, documentation)
    DIR/README.md             how to build and program

Written for Vivado 2023.1 or later (:data:`VIVADO_MIN_VERSION`); not run here (no Vivado on the machine that wrote
it). ``build.tcl`` checks what it can check itself (Vivado version, IP and block-design properties, run status,
timing) and stops with a message naming the file to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sat.hw.netlist import shared_pe
from sat.sw.config import SATConfig
from sat.sw.memmap import CARD_CHANNEL_SLR, CARD_MEMORY
from sat.sw.regmap import DEFAULT_MEMORY_BYTES, register_map

from .card import (
    DDR4_AXI_ADDR_WIDTH,
    DDR4_AXI_ID_WIDTH,
    DDR4_UI_CLOCK_HZ,
    HUB_SLR,
    XDMA_AXI_CLOCK_HZ,
    XDMA_AXI_ID_WIDTH,
    VCU1525Card,
    ddr4_module,
    ip_ports,
    ip_stub_verilog,
    slr_crossing_channels,
)
from .vcu1525 import VCU1525_PART, VCU1525Platform

__all__ = [
    "TOP_NAME",
    "VIVADO_MIN_VERSION",
    "XDMA_CONFIG",
    "DDR4_CONFIG",
    "DDR4_CHANNEL_INFO",
    "REGISTER_SLICE_CONFIG",
    "PBLOCK_CELLS",
    "FLASH_PART",
    "FLASH_SIZE_MB",
    "FLASH_USER_ADDRESS",
    "VivadoTree",
    "write_vivado_tree",
    "write_core_tree",
    "regmap_json",
    "regmap_c_header",
    "run_vivado",
    "find_vivado",
    "default_card_config",
]

#: Module name of the card top and the prefix of its files.
TOP_NAME = "sat_card"
#: Oldest Vivado the generated Tcl is written for (IP versions: XDMA 4.1, DDR4 2.2, SmartConnect 1.0, AXI Register
#: Slice 2.1).
VIVADO_MIN_VERSION = "2023.1"

#: XDMA customisation (reference 1.4 and 3.4; public XDMA Tcl for this card and PG195 parameter names).
XDMA_CONFIG: dict[str, str] = {
    "mode_selection": "Advanced",
    "pcie_blk_locn": "X1Y2",
    "en_gt_selection": "true",
    "select_quad": "GTY_Quad_227",
    "pl_link_cap_max_link_speed": "8.0_GT/s",
    "pl_link_cap_max_link_width": "X16",
    "ref_clk_freq": "100_MHz",
    "axi_data_width": "512_bit",
    "axisten_freq": "250",
    "xdma_axi_intf_mm": "AXI_Memory_Mapped",
    "pf0_device_id": "903F",
    "axilite_master_en": "true",
    "axilite_master_scale": "Megabytes",
    "axilite_master_size": "1",
    "pciebar2axibar_axil_master": "0x00000000",
    "xdma_num_usr_irq": "1",
    "xdma_rnum_chnl": "1",
    "xdma_wnum_chnl": "1",
    "cfg_mgmt_if": "false",
}

#: DDR4 customisation of every channel (reference 1.6: the board-store preset for the stock RDIMM, the same for all
#: four slots, as Corundum uses it). The pins come from the top XDC (``sat_card.xdc``), not from a board interface.
DDR4_CONFIG: dict[str, str] = {
    "System_Clock": "Differential",
    "C0.DDR4_TimePeriod": "833",
    "C0.DDR4_InputClockPeriod": "3332",
    "C0.DDR4_MemoryType": "RDIMMs",
    "C0.DDR4_MemoryPart": "MTA18ASF2G72PZ-2G3",
    "C0.DDR4_DataWidth": "72",
    "C0.DDR4_DataMask": "NONE",
    "C0.DDR4_Ecc": "true",
    "C0.DDR4_CasLatency": "17",
    "C0.DDR4_CasWriteLatency": "12",
    "C0.DDR4_AxiSelection": "true",
    "C0.DDR4_AxiDataWidth": "512",
    "C0.DDR4_AxiAddressWidth": str(DDR4_AXI_ADDR_WIDTH),
    "C0.DDR4_AxiIDWidth": str(DDR4_AXI_ID_WIDTH),
    "C0.DDR4_AxiArbitrationScheme": "RD_PRI_REG",
    "C0.DDR4_AUTO_AP_COL_A3": "true",
    "C0.DDR4_Mem_Add_Map": "ROW_COLUMN_BANK_INTLV",
}

#: Per DIMM slot: its I/O banks and SLR (reference 1.6), its reference clock, and the board-store interface names
#: of the slot and its clock (``ddr4_sdram_c<k>``, ``default_300mhz_clk<k>``; only for cross-checking with a board
#: part flow: this tree places the pins itself).
DDR4_CHANNEL_INFO: dict[int, dict[str, str]] = {
    k: {"banks": banks, "slr": f"SLR{CARD_CHANNEL_SLR[k]}", "clock": f"clk300[{k}] {clk}",
        "board_interface": f"ddr4_sdram_c{k}", "clock_interface": f"default_300mhz_clk{k}"}
    for k, (banks, clk) in enumerate([("40, 41, 42", "AY37/AY38"), ("65, 66, 67", "AW20/AW19"),
                                      ("46, 47, 48", "F32/E32"), ("70, 71, 72", "J16/H16")])
}

#: AXI Register Slice (PG373) on each SLR-crossing channel: every AXI channel in Multi SLR Crossing mode (user
#: parameter value 15), one SLR crossing, one extra pipeline stage on each side (the SmartConnect sits in the
#: middle of SLR1, the controller's AXI port near its banks).
REGISTER_SLICE_CONFIG: dict[str, str] = {
    **{f"REG_{ch}": "15" for ch in ("AW", "AR", "W", "R", "B")},
    "NUM_SLR_CROSSINGS": "1",
    **{f"PIPELINES_MASTER_{ch}": "1" for ch in ("AW", "AR", "W", "R", "B")},
    **{f"PIPELINES_SLAVE_{ch}": "1" for ch in ("AW", "AR", "W", "R", "B")},
}

#: Cells of the card top placed by ``floorplan.xdc``, per SLR (Vivado hierarchical names: instance names of
#: ``sat_card.v`` and of the SmartConnect block design). SAT's bus side (registers, command processor, DMA) sits
#: with XDMA and SmartConnect in SLR1, so neither of SAT's AXI interfaces crosses an SLR; the engine and its array
#: are left to the placer (they fill most of the device). The halves of each register slice go to the SLRs of its
#: two ends: ``*slr_master*`` cells (SmartConnect side) to SLR1, ``*slr_slave*`` cells (controller side) to the
#: controller's SLR (PG373, "Constraining the Core").
PBLOCK_CELLS: dict[int, list[str]] = {
    slr: [f"ddr4_c{k}" for k, s in enumerate(CARD_CHANNEL_SLR) if s == slr]
    + (["xdma", "smartconnect/smc", "sat/csr", "sat/cmdproc", "sat/read_arbiter", "sat/dma_read", "sat/dma_write"]
       if slr == HUB_SLR else [])
    for slr in range(3)
}

#: Configuration flash of the card for ``create_hw_cfgmem`` (1 Gbit Micron QSPI as on the Alveo U200, same PCB;
#: Corundum's VCU1525 flash target uses the same part). Not checked on a VCU1525.
FLASH_PART = "mt25qu01g-spi-x1_x2_x4"
#: Size of that flash for ``write_cfgmem -size`` (MiB).
FLASH_SIZE_MB = 128
#: Where the SAT image goes in the flash: the upper half (MultiBoot user region). Address 0 keeps a fallback image
#: that jumps here (``NEXT_CONFIG_ADDR``) and that a failed load of this image falls back to (CONFIGFALLBACK); the
#: same split as Corundum's VCU1525 builds (user image at 0x04000000, fallback at 0). More images, e.g. one per
#: card variant, would take more regions of the same flash.
FLASH_USER_ADDRESS = 0x04000000


def _dict_tcl(config: dict[str, str], indent: str = "    ") -> str:
    return " \\\n".join(f"{indent}CONFIG.{k} {{{v}}}" for k, v in config.items())


def xdma_tcl() -> str:
    """``ip/xdma_0.tcl``."""
    return f"""\
# XDMA (DMA/Bridge Subsystem for PCI Express, PG195): PCIe Gen3 x16, 512-bit AXI-MM at 250 MHz, AXI-Lite master
# on BAR0 translated to AXI address 0 (SAT's registers), 1 user interrupt (SAT irq), device ID 0x903F (listed in
# the dma_ip_drivers XDMA driver). Hard block X1Y2 and GTY quad 227 as in the VCU1525 board preset.
create_ip -name xdma -vendor xilinx.com -library ip -module_name xdma_0
set_property -dict [list \\
{_dict_tcl(XDMA_CONFIG)} \\
] [get_ips xdma_0]
"""


def ddr4_tcl(channel: int = 0) -> str:
    """``ip/ddr4_<channel>.tcl``: the DDR4 controller of DIMM slot C<channel>."""
    info = DDR4_CHANNEL_INFO[channel]
    return f"""\
# DDR4 SDRAM (MIG, PG150) for DIMM slot C{channel} (banks {info["banks"]}, {info["slr"]}): the stock 16 GB x4 ECC
# RDIMM (MTA18ASF2G72PZ-2G3, DDR4-2400), 300 MHz reference clock {info["clock"]}, 512-bit AXI4 slave with 34-bit
# addresses (16 GiB; SmartConnect maps it at 0x{CARD_MEMORY.base(channel):09X}). Board store names of this slot:
# {info["board_interface"]}, {info["clock_interface"]} (not used: no board part in this flow).
# Pins come from the top-level XDC (sat_card.xdc, from VCU1525Platform); the IP checks the byte-lane rules then.
create_ip -name ddr4 -vendor xilinx.com -library ip -module_name {ddr4_module(channel)}
set_property -dict [list \\
{_dict_tcl(DDR4_CONFIG)} \\
] [get_ips {ddr4_module(channel)}]
"""


def smartconnect_tcl(*, data_width: int = 512, sat_masters: int = 1) -> str:
    """``ip/smartconnect_0.tcl``: a block design, because SmartConnect only exists in IP integrator.

    ``1 + sat_masters`` slave interfaces (XDMA, then SAT's masters) reach every DDR4 channel as its 16 GiB window
    (:data:`sat.sw.memmap.CARD_MEMORY`); the channels in another SLR than SmartConnect go through an AXI Register
    Slice in Multi SLR Crossing mode (:data:`REGISTER_SLICE_CONFIG`).
    """
    channels = CARD_MEMORY.channels
    crossing = slr_crossing_channels()
    sis = [f"S{i:02d}_AXI" for i in range(1 + sat_masters)]
    mis = [f"M{k:02d}_AXI" for k in range(channels)]
    window = f"{CARD_MEMORY.window_bytes >> 30}G"
    map_lines = "\n".join(
        f"#   {mi} -> DDR4 C{k} ({DDR4_CHANNEL_INFO[k]['slr']}), on aclk{k + 1} = its c0_ddr4_ui_clk "
        f"({DDR4_UI_CLOCK_HZ} Hz),\n#            window 0x{lo:09X}-0x{hi - 1:09X}"
        + (f", through register slice rs_c{k} (SLR{HUB_SLR} -> {DDR4_CHANNEL_INFO[k]['slr']})" if k in crossing
           else "")
        for k, (mi, (lo, hi)) in enumerate(zip(mis, CARD_MEMORY.windows(), strict=True)))
    slices = "\n".join(
        f"    {k} {{ rs_c{k} aresetn{k + 1} }}" for k in crossing)
    windows = " ".join(f"{mi} 0x{CARD_MEMORY.base(k):016X}" for k, mi in enumerate(mis))
    checks = " ".join(f"{mi} DATA_WIDTH {data_width} {mi} ADDR_WIDTH {DDR4_AXI_ADDR_WIDTH} {mi} ID_WIDTH 0"
                      for mi in mis)
    checks += " " + " ".join(f"{si} ID_WIDTH {XDMA_AXI_ID_WIDTH}" for si in sis)
    return f"""\
# AXI SmartConnect (PG247) is an IP-integrator-only core: it is wrapped here in a block design named smartconnect_0
# whose external ports are the port list the card top instantiates (see stubs/ip_stubs.v):
#   S00_AXI  <- XDMA m_axi (DMA); {", ".join(sis[1:])} <- SAT's m_axi; all on aclk = XDMA axi_aclk
#            ({XDMA_AXI_CLOCK_HZ} Hz)
{map_lines}
#   aresetn  = the memory-bus reset, synchronous to aclk (SmartConnect synchronises it to its other clocks itself);
#   aresetn<k+1> = the same reset synchronous to aclk<k+1>, for the register slice of channel k
# Every slave interface sees all four channels, each a {window} window (sat.sw.memmap.CARD_MEMORY); addresses
# outside them answer DECERR.
create_bd_design smartconnect_0
set smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 smc]
set_property -dict [list CONFIG.NUM_SI {{{len(sis)}}} CONFIG.NUM_MI {{{channels}}} \
    CONFIG.NUM_CLKS {{{channels + 1}}}] $smc

foreach si {{{" ".join(sis)}}} {{
    set p [create_bd_intf_port -mode Slave -vlnv xilinx.com:interface:aximm_rtl:1.0 $si]
    set_property -dict [list \\
        CONFIG.PROTOCOL {{AXI4}} CONFIG.DATA_WIDTH {{{data_width}}} CONFIG.ADDR_WIDTH {{64}} \\
        CONFIG.ID_WIDTH {{{XDMA_AXI_ID_WIDTH}}} CONFIG.HAS_QOS {{0}} CONFIG.HAS_REGION {{0}} \\
        CONFIG.AWUSER_WIDTH {{0}} CONFIG.ARUSER_WIDTH {{0}} CONFIG.WUSER_WIDTH {{0}} CONFIG.RUSER_WIDTH {{0}} \\
        CONFIG.BUSER_WIDTH {{0}} CONFIG.FREQ_HZ {{{XDMA_AXI_CLOCK_HZ}}} \\
    ] $p
    connect_bd_intf_net $p [get_bd_intf_pins smc/$si]
}}
create_bd_port -dir I -type clk -freq_hz {XDMA_AXI_CLOCK_HZ} aclk
set_property CONFIG.ASSOCIATED_BUSIF {{{":".join(sis)}}} [get_bd_ports aclk]
set_property CONFIG.ASSOCIATED_RESET {{aresetn}} [get_bd_ports aclk]
create_bd_port -dir I -type rst aresetn
set_property CONFIG.POLARITY {{ACTIVE_LOW}} [get_bd_ports aresetn]
connect_bd_net [get_bd_ports aclk] [get_bd_pins smc/aclk]
connect_bd_net [get_bd_ports aresetn] [get_bd_pins smc/aresetn]

# SLR-crossing channels: channel {{register slice, its reset port}} (PG373 Multi SLR Crossing; floorplan.xdc puts
# the *slr_master* half in SLR{HUB_SLR} with SmartConnect and the *slr_slave* half in the controller's SLR)
array set slice {{
{slices}
}}
set k 0
foreach mi {{{" ".join(mis)}}} {{
    set clk aclk[expr {{$k + 1}}]
    set m [create_bd_intf_port -mode Master -vlnv xilinx.com:interface:aximm_rtl:1.0 $mi]
    set_property -dict [list \\
        CONFIG.PROTOCOL {{AXI4}} CONFIG.DATA_WIDTH {{{data_width}}} CONFIG.ADDR_WIDTH {{{DDR4_AXI_ADDR_WIDTH}}} \\
        CONFIG.HAS_QOS {{0}} CONFIG.HAS_REGION {{0}} CONFIG.FREQ_HZ {{{DDR4_UI_CLOCK_HZ}}} \\
    ] $m
    create_bd_port -dir I -type clk -freq_hz {DDR4_UI_CLOCK_HZ} $clk
    set_property CONFIG.ASSOCIATED_BUSIF $mi [get_bd_ports $clk]
    connect_bd_net [get_bd_ports $clk] [get_bd_pins smc/$clk]
    if {{[info exists slice($k)]}} {{
        lassign $slice($k) rs rst
        set r [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_register_slice:2.1 $rs]
        set_property -dict [list \\
{_dict_tcl(REGISTER_SLICE_CONFIG, indent="            ")} \\
        ] $r
        create_bd_port -dir I -type rst $rst
        set_property CONFIG.POLARITY {{ACTIVE_LOW}} [get_bd_ports $rst]
        set_property CONFIG.ASSOCIATED_RESET $rst [get_bd_ports $clk]
        connect_bd_intf_net [get_bd_intf_pins smc/$mi] [get_bd_intf_pins $rs/S_AXI]
        connect_bd_intf_net [get_bd_intf_pins $rs/M_AXI] $m
        connect_bd_net [get_bd_ports $clk] [get_bd_pins $rs/aclk]
        connect_bd_net [get_bd_ports $rst] [get_bd_pins $rs/aresetn]
    }} else {{
        connect_bd_intf_net [get_bd_intf_pins smc/$mi] $m
    }}
    incr k
}}

# The address map: every slave interface reaches channel k at k * {window}.
foreach si {{{" ".join(sis)}}} {{
    foreach {{mi base}} {{{windows}}} {{
        assign_bd_address -offset $base -range {window} -target_address_space [get_bd_addr_spaces $si] \\
            [get_bd_addr_segs $mi/Reg] -force
    }}
}}
validate_bd_design

# The card top (sat_card.v) was written for these widths: stop here if IP integrator propagated others.
foreach {{intf prop want}} {{{checks}}} {{
    set got [get_property CONFIG.$prop [get_bd_intf_ports $intf]]
    if {{$got ne "" && $got != $want}} {{
        error "smartconnect_0: $intf $prop is $got, the card top expects $want:\\
 adapt sat.boards.card.smartconnect_ports"
    }}
}}
save_bd_design
"""


def timing_xdc() -> str:
    """``timing.xdc``: timing exceptions of the card top (used in implementation)."""
    return f"""\
# Timing exceptions of the VCU1525 card top (generated by sat.boards.vivado).
#
# Primary clocks: the 100 MHz PCIe refclk (pcie_x16_0__clk__p, create_clock in sat_card.xdc) and the four 300 MHz
# DDR4 references (clk300_<k>__p, k = 0..3), which each DDR4 IP's own XDC creates on its c0_sys_clk_p
# (System_Clock Differential), so sat_card.xdc has no second create_clock for them. axi_aclk ({XDMA_AXI_CLOCK_HZ} Hz)
# and the four c0_ddr4_ui_clk ({DDR4_UI_CLOCK_HZ} Hz each, unrelated phases) are derived inside the XDMA and DDR4
# IP, whose own constraints create them.
#
# Clock domain crossings between axi_aclk and each ui_clk: the SmartConnect clock converters (constrained by its own
# scoped XDC: datapath-only max delays and bus skew), Amaranth's FFSynchronizer for the c0_init_calib_complete
# flags and the AsyncFFSynchronizers of the memory-bus reset (below). The SLR-crossing register slices run on
# their channel's ui_clk only. No global set_clock_groups -asynchronous: it would override the converters'
# max-delay constraints. If report_clock_interaction shows unconstrained axi_aclk <-> ui_clk paths outside those,
# fix the design rather than adding a clock group.

# Amaranth's synchronizer stages (attribute amaranth.vivado.false_path, as in Amaranth's own Vivado script).
set_false_path -to [get_cells -quiet -hierarchical -filter {{amaranth.vivado.false_path == "TRUE"}}]
# Amaranth's AsyncFFSynchronizer stages (the memory-bus reset): their asynchronous preset pins.
set_false_path -to [get_pins -quiet -filter {{REF_PIN_NAME == PRE}} -of_objects \
    [get_cells -quiet -hierarchical -filter {{amaranth.vivado.false_path_pre == "TRUE"}}]]

# Slow, asynchronous board I/O: LEDs, the CPU_RESET button (DDR4 sys_rst) and DDR4_RESET_GATE.
set_false_path -to [get_ports -quiet {{led_*}}]
set_false_path -to [get_ports -quiet {{ddr4_reset_gate_*}}]
set_false_path -from [get_ports -quiet {{rst_0__io}}]
set_false_path -from [get_ports -quiet {{pcie_x16_0__perst__io}}]
"""


def floorplan_xdc() -> str:
    """``floorplan.xdc``: the SLR plan (pblocks), used in implementation only."""
    lines = [
        "# The SLR plan of the VCU1525 card top (generated by sat.boards.vivado; docs/board.md, \"SLR plan\").",
        "#",
        "# XCVU9P: three SLRs. The PCIe hard block (X1Y2) is in SLR1, so XDMA, SmartConnect, SAT's bus side",
        "# (registers, command processor, DMA) and the two DDR4 channels of SLR1 go there (C1 and C2: the busiest,",
        "# the driver puts SAT's operands and results there); C0's controller is in SLR0 and C3's in SLR2 (their I/O",
        "# banks), each reached through an",
        "# AXI Register Slice in Multi SLR Crossing mode inside the SmartConnect block design (rs_c0, rs_c3): its",
        "# *slr_master* cells stay in SLR1 with SmartConnect, its *slr_slave* cells go to the controller's SLR, so",
        "# the SLR crossing happens between the slice's own flip-flops (PG373, \"Constraining the Core\").",
        "# The engine and its array are not constrained: they fill most of the device.",
        "# build.tcl warns if a pblock ended up empty (a cell name that does not match).",
    ]
    for slr in range(3):
        pb = f"pblock_slr{slr}"
        lines += ["", f"create_pblock {pb}"]
        cells = " ".join(PBLOCK_CELLS[slr])
        lines.append(f"add_cells_to_pblock [get_pblocks {pb}] [get_cells -quiet [list {cells}]]")
        for k in slr_crossing_channels():
            half = "slr_master" if slr == HUB_SLR else ("slr_slave" if CARD_CHANNEL_SLR[k] == slr else None)
            if half:
                lines.append(f"add_cells_to_pblock [get_pblocks {pb}] [get_cells -quiet -hierarchical -filter "
                             f"{{NAME =~ smartconnect/rs_c{k}/*{half}*}}]")
        lines.append(f"resize_pblock [get_pblocks {pb}] -add {{SLR{slr}}}")
    return "\n".join(lines) + "\n"


def build_tcl(*, jobs_default: int = 8) -> str:
    """``build.tcl``: project-mode batch build (IP, synthesis, implementation, bitstream, reports, flash images)."""
    user = f"0x{FLASH_USER_ADDRESS:08X}"
    ddr4s = [ddr4_module(k) for k in range(CARD_MEMORY.channels)]
    sources = "\n".join(f"source ip/{name}.tcl" for name in ddr4s)
    return f"""\
# Batch build of the SAT card for the VCU1525 (generated by sat.boards.vivado; Vivado {VIVADO_MIN_VERSION} or later).
#   vivado -mode batch -source build.tcl        (or ./build.sh)
# Environment: SAT_VIVADO_JOBS (parallel runs, default {jobs_default}).
set top {TOP_NAME}
set part {VCU1525_PART}
set here [file dirname [file normalize [info script]]]
cd $here
set jobs {jobs_default}
if {{[info exists ::env(SAT_VIVADO_JOBS)]}} {{ set jobs $::env(SAT_VIVADO_JOBS) }}

if {{[package vcompare [version -short] {VIVADO_MIN_VERSION}] < 0}} {{
    puts "CRITICAL WARNING: this tree was written for Vivado {VIVADO_MIN_VERSION} or later, this is [version -short];\\
 IP versions or parameter names may differ (see README.md)"
}}

# ---- project, sources, constraints
create_project -force $top ./vivado -part $part
set_property target_language Verilog [current_project]
add_files -norecurse $top.v
set_property top $top [current_fileset]
add_files -fileset constrs_1 -norecurse $top.xdc
add_files -fileset constrs_1 -norecurse timing.xdc
set_property USED_IN_SYNTHESIS false [get_files timing.xdc]
add_files -fileset constrs_1 -norecurse floorplan.xdc
set_property USED_IN_SYNTHESIS false [get_files floorplan.xdc]

# ---- IP (black boxes of the top: xdma_0, {", ".join(ddr4s)}, smartconnect_0)
source ip/xdma_0.tcl
{sources}
source ip/smartconnect_0.tcl
foreach ip {{xdma_0 {" ".join(ddr4s)}}} {{
    generate_target all [get_ips $ip]
}}
generate_target all [get_files smartconnect_0.bd]
report_ip_status -file ip_status.rpt

# ---- synthesis (the IP are synthesized out of context by their own runs)
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{
    error "synthesis failed: see vivado/$top.runs/synth_1/runme.log (and the *_synth_1 IP runs next to it)"
}}

# ---- implementation and bitstream
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{
    error "implementation failed: see vivado/$top.runs/impl_1/runme.log"
}}

# ---- reports
open_run impl_1
file mkdir reports
report_utilization -file reports/utilization.rpt
report_utilization -hierarchical -hierarchical_depth 3 -file reports/utilization_hierarchical.rpt
report_timing_summary -max_paths 20 -report_unconstrained -file reports/timing_summary.rpt
report_clock_interaction -file reports/clock_interaction.rpt
report_cdc -file reports/cdc.rpt
report_drc -file reports/drc.rpt
report_power -file reports/power.rpt
# the SLR plan (floorplan.xdc): every pblock must have received cells; reports/slr_crossing.rpt lists the nets that
# cross SLRs (the memory bus should cross only inside rs_c0 and rs_c3; report_slr_crossing is in recent releases)
foreach pb {{pblock_slr0 pblock_slr1 pblock_slr2}} {{
    if {{[llength [get_cells -quiet -of_objects [get_pblocks $pb]]] == 0}} {{
        puts "CRITICAL WARNING: $pb is empty: a cell name of floorplan.xdc matches nothing in this netlist;\
 compare it with the hierarchy in reports/utilization_hierarchical.rpt"
    }}
}}
if {{[catch {{report_slr_crossing -file reports/slr_crossing.rpt}} err]}} {{
    puts "SAT build: no SLR crossing report ($err)"
}}
set wns [get_property SLACK [get_timing_paths -setup -max_paths 1]]
set whs [get_property SLACK [get_timing_paths -hold -max_paths 1]]
puts "SAT build: WNS $wns ns, WHS $whs ns (reports/timing_summary.rpt)"
if {{$wns ne "" && $wns < 0}} {{
    puts "CRITICAL WARNING: setup timing not met (WNS $wns ns): the bitstream may not work;\
 see reports/timing_summary.rpt"
}}

# ---- bitstream and flash images ({FLASH_SIZE_MB} MiB QSPI flash, SPI x4; README.md, "Program")
#   $top.bit           the design, with CONFIGFALLBACK ENABLE (sat_card.xdc): a failed load falls back to address 0
#   $top.mcs           $top.bit in the user region at {user}: `program.tcl flash` writes only that region
#   ${{top}}_fallback.bit  the same design, made to boot the user region at power-up (MultiBoot: NEXT_CONFIG_ADDR,
#                      NEXT_CONFIG_REBOOT); during a fallback the FPGA ignores that jump and runs this image
#   ${{top}}_fallback.mcs  it at address 0: `program.tcl fallback` writes it once (it replaces the factory image there)
set user_region {user}
file copy -force vivado/$top.runs/impl_1/$top.bit $top.bit
set_property BITSTREAM.CONFIG.CONFIGFALLBACK ENABLE [current_design]
set_property BITSTREAM.CONFIG.NEXT_CONFIG_ADDR $user_region [current_design]
set_property BITSTREAM.CONFIG.NEXT_CONFIG_REBOOT ENABLE [current_design]
write_bitstream -force ${{top}}_fallback.bit
foreach bit [list $top.bit ${{top}}_fallback.bit] {{
    if {{[file size $bit] > $user_region}} {{
        error "$bit is [file size $bit] bytes, more than the $user_region-byte flash region it must fit in:\
 keep BITSTREAM.GENERAL.COMPRESS TRUE, or move FLASH_USER_ADDRESS (sat.boards.vivado)"
    }}
}}
write_cfgmem -force -format mcs -size {FLASH_SIZE_MB} -interface SPIx4 -loadbit "up $user_region $top.bit" \
    -checksum -file $top.mcs
write_cfgmem -force -format mcs -size {FLASH_SIZE_MB} -interface SPIx4 -loadbit "up 0x00000000 ${{top}}_fallback.bit" \
    -checksum -file ${{top}}_fallback.mcs
puts "SAT build: wrote $top.bit, $top.mcs (flash {user}) and ${{top}}_fallback.mcs (flash 0) in $here"
"""


def program_tcl() -> str:
    """``program.tcl``: program over JTAG (volatile), write the flash's user region, or write the fallback image."""
    user = f"0x{FLASH_USER_ADDRESS:08X}"
    return f"""\
# Program the VCU1525 through hw_server (generated by sat.boards.vivado).
#   vivado -mode batch -source program.tcl -tclargs jtag     [host:port]  load {TOP_NAME}.bit (lost at power-off)
#   vivado -mode batch -source program.tcl -tclargs flash    [host:port]  write {TOP_NAME}.mcs to the user region
#                                                                          ({user}); address 0 is not touched
#   vivado -mode batch -source program.tcl -tclargs fallback [host:port]  once per card: save the whole flash to
#       flash_backup.bin (unless it exists), then write {TOP_NAME}_fallback.mcs at address 0, replacing the
#       factory image; at power-up it loads the user region, and a failed user image falls back to it
# hw_server must run where the card's USB-JTAG is connected (default localhost:3121). After programming, the host
# must enumerate the card again (README.md, "Program"): warm-reboot it or remove and rescan the PCIe device.
set here [file dirname [file normalize [info script]]]
set mode [expr {{[llength $argv] > 0 ? [lindex $argv 0] : "jtag"}}]
set url [expr {{[llength $argv] > 1 ? [lindex $argv 1] : "localhost:3121"}}]
if {{$mode ni {{jtag flash fallback}}}} {{ error "mode must be jtag, flash or fallback, not $mode" }}
open_hw_manager
connect_hw_server -url $url
open_hw_target
set dev [lindex [get_hw_devices -quiet xcvu9p*] 0]
if {{$dev eq ""}} {{ error "no xcvu9p on the JTAG chain at $url: is the USB cable connected and the card powered?" }}
current_hw_device $dev
refresh_hw_device -update_hw_probes false $dev

proc open_flash {{dev}} {{
    create_hw_cfgmem -hw_device $dev [lindex [get_cfgmem_parts {{{FLASH_PART}}}] 0]
    set mem [get_property PROGRAM.HW_CFGMEM $dev]
    # the flash is reached through a programming bitstream that Vivado loads into the FPGA first
    create_hw_bitstream -hw_device $dev [get_property PROGRAM.HW_CFGMEM_BITFILE $dev]
    program_hw_devices $dev
    refresh_hw_device $dev
    return $mem
}}

proc write_flash {{mem mcs}} {{
    # use_file: erase and program only the sectors the MCS covers, nothing else of the flash
    set_property PROGRAM.FILES [list $mcs] $mem
    set_property PROGRAM.ADDRESS_RANGE {{use_file}} $mem
    set_property PROGRAM.BLANK_CHECK 0 $mem
    set_property PROGRAM.ERASE 1 $mem
    set_property PROGRAM.CFG_PROGRAM 1 $mem
    set_property PROGRAM.VERIFY 1 $mem
    program_hw_cfgmem -hw_cfgmem $mem
}}

if {{$mode eq "jtag"}} {{
    set_property PROGRAM.FILE $here/{TOP_NAME}.bit $dev
    program_hw_devices $dev
}} else {{
    set mem [open_flash $dev]
    if {{$mode eq "fallback"}} {{
        set backup $here/flash_backup.bin
        if {{![file exists $backup]}} {{
            readback_hw_cfgmem -hw_cfgmem $mem -all -format bin -file $backup
            puts "SAT program: saved the flash ({FLASH_SIZE_MB} MiB, with the factory image) to $backup"
        }}
        write_flash $mem $here/{TOP_NAME}_fallback.mcs
    }} else {{
        write_flash $mem $here/{TOP_NAME}.mcs
    }}
    boot_hw_device $dev
}}
close_hw_target
"""


def build_sh() -> str:
    """``build.sh``."""
    return f"""\
#!/bin/sh
# Build the SAT card bitstream (Vivado {VIVADO_MIN_VERSION}+ on PATH, or VIVADO=/path/to/vivado).
set -e
cd "$(dirname "$0")"
[ -n "$AMARANTH_ENV_VIVADO" ] && . "$AMARANTH_ENV_VIVADO"
exec "${{VIVADO:-vivado}}" -mode batch -nojournal -log build.log -source build.tcl "$@"
"""


def regmap_json(config: SATConfig, memory_bytes: int = DEFAULT_MEMORY_BYTES, channels: int = 1) -> str:
    """The register map as JSON: ``{"size": ..., "registers": [{"name", "offset", "access", "reset", "doc"}]}``."""
    rmap = register_map(config, memory_bytes, channels=channels)
    regs = [{"name": r.name, "offset": r.offset, "access": r.access, "reset": r.reset, "doc": r.doc}
            for r in sorted(rmap.registers, key=lambda r: r.offset)]
    return json.dumps({"config_digest": config.digest(), "size": rmap.size, "registers": regs}, indent=2) + "\n"


def regmap_c_header(config: SATConfig, memory_bytes: int = DEFAULT_MEMORY_BYTES, channels: int = 1) -> str:
    """The register map as a C header ``sat_regs.h``: ``SAT_REG_<NAME>`` offsets and ``SAT_RESET_<NAME>`` values."""
    from sat.sw import regmap

    rmap = register_map(config, memory_bytes, channels=channels)
    lines = ["/* sat_regs.h: SAT register map, generated by sat (sat.sw.regmap). Do not edit. */",
             f"/* configuration digest {config.digest()}: {config.rows}x{config.cols} {config.fmt} */",
             "#ifndef SAT_REGS_H", "#define SAT_REGS_H", "",
             f"#define SAT_ID_VALUE 0x{regmap.SAT_ID:08x}u",
             f"#define SAT_REGMAP_SIZE 0x{rmap.size:x}u", ""]
    for r in sorted(rmap.registers, key=lambda r: r.offset):
        lines.append(f"#define SAT_REG_{r.name} 0x{r.offset:03x}u  /* {r.access}: {r.doc.replace('*/', '* /')} */")
    lines.append("")
    for r in sorted(rmap.registers, key=lambda r: r.offset):
        if r.access == "ro" and r.reset:
            lines.append(f"#define SAT_RESET_{r.name} 0x{r.reset:08x}u")
    lines.append("")
    for name in ("CONTROL_START", "CONTROL_ABORT", "CONTROL_CLEAR", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
                 "IRQ_DONE", "IRQ_ERROR"):
        lines.append(f"#define SAT_{name} 0x{getattr(regmap, name):x}u")
    lines.append("")
    for code in regmap.ErrorCode:
        lines.append(f"#define SAT_ERR_{code.name} {int(code)}")
    lines += ["", "#endif /* SAT_REGS_H */", ""]
    return "\n".join(lines)


def _readme(config: SATConfig) -> str:
    user = f"0x{FLASH_USER_ADDRESS:08X}"
    channel_rows = "\n".join(
        f"| C{k} | `{ddr4_module(k)}` | `0x{lo:09X}`-`0x{hi - 1:09X}` | {DDR4_CHANNEL_INFO[k]['slr']} | "
        f"{DDR4_CHANNEL_INFO[k]['clock']} |" for k, (lo, hi) in enumerate(CARD_MEMORY.windows()))
    return f"""\
# SAT on the VCU1525: Vivado tree

Generated by `sat build vcu1525` for the configuration in `sat_config.json` ({config.rows}x{config.cols} {config.fmt},
N:M {", ".join(f"{n}:{m}" for n, m in config.nm_set)}, digest `{config.digest()}`). Written for **Vivado
{VIVADO_MIN_VERSION} or later** (XDMA 4.1, DDR4 2.2, SmartConnect 1.0, AXI Register Slice 2.1) and **not yet run
through Vivado**: the IP
parameters and port names come from public designs and the Xilinx product guides (see docs/board.md in the SAT
repository for what is confirmed and what is not).

## Build

    ./build.sh                       # = vivado -mode batch -source build.tcl -log build.log
    SAT_VIVADO_JOBS=16 ./build.sh    # parallel runs (default 8)

Takes roughly 1.5 to 4 hours on a workstation with 64 GB RAM (VU9P, XDMA, four DDR4 controllers, SAT array;
estimate, not measured).
Output: `{TOP_NAME}.bit` (JTAG), `{TOP_NAME}.mcs` (flash, user region), `{TOP_NAME}_fallback.mcs` (flash, address 0),
`reports/` (utilization, timing, CDC, DRC, power), `vivado/` (the project; open `vivado/{TOP_NAME}.xpr` in the GUI).

## Program

JTAG (volatile; hw_server where the USB-JTAG cable is connected):

    vivado -mode batch -source program.tcl -tclargs jtag localhost:3121

Flash (persistent). The {FLASH_SIZE_MB} MiB flash holds two images: a **fallback image at address 0** and the **SAT
image in the user region at {user}**. At power-up the FPGA loads the fallback image, which jumps to the user
region (MultiBoot); if the user image fails to load (an interrupted or bad write), the FPGA falls back to the
image at 0 (`CONFIGFALLBACK`). The first time on a card, write the fallback image once; it replaces the factory
image at address 0, so the script first saves the whole flash to `flash_backup.bin` (keep it: it is how you get
the factory image back):

    vivado -mode batch -source program.tcl -tclargs fallback localhost:3121   # once per card
    vivado -mode batch -source program.tcl -tclargs flash localhost:3121      # every new SAT image

`flash` writes only the user region; address 0 is never touched by it.

**Cold boot.** PCIe expects a card to be ready to link-train about 120 ms after power-up (PERST# rises 100 ms after
power good, the link must train within 20 ms: PG213, "Tandem Configuration"). A full VU9P image over SPI x4 at
63.8 MHz (at most 255 Mbit/s) takes seconds, and with the MultiBoot jump the FPGA loads two images. So at a cold boot
the BIOS may enumerate the bus before the card is there: no `lspci -d 10ee:` entry, no `/dev/xdma0_*`. Then
**warm-reboot the host** (the card keeps its power and its configuration through a warm reboot, and is enumerated
then). The alternatives are in docs/board.md ("Cold boot and PCIe enumeration"): Tandem PROM / Tandem PCIe
configuration (PG213), or loading over JTAG followed by a warm reboot or a PCIe rescan.

After programming over JTAG, make the host enumerate the card again (warm reboot, or remove and rescan the PCIe
device), then load the XDMA driver with MSI and run `sat board selftest` (docs/board.md, "Bring-up checklist").

## Files

| file | what |
|---|---|
| `{TOP_NAME}.v` | Amaranth's Verilog of the card top (SATCore, IP black boxes) |
| `{TOP_NAME}.xdc` | pins, IO standards, the PCIe reference clock, bitstream properties (from VCU1525Platform) |
| `timing.xdc` | timing exceptions (implementation only) |
| `floorplan.xdc` | the SLR plan: pblocks for SLR0/1/2 (implementation only) |
| `ip/*.tcl` | IP customisation (sourced by build.tcl) |
| `build.tcl`, `build.sh` | batch build |
| `program.tcl` | JTAG, flash (user region) and fallback-image programming |
| `sat_config.json` | the SATConfig (`SATConfig.load`) |
| `regmap.json`, `sat_regs.h` | SAT register map (BAR0 offsets) |
| `stubs/ip_stubs.v` | port lists the top expects from the IP (compare with the IP's `.veo` if the build fails) |

Address map: SAT registers at BAR0 offset 0 (`/dev/xdma0_user`; offsets outside the map read 0); the XDMA's own
DMA registers on BAR1 (`/dev/xdma0_control`); the four DDR4 channels, 16 GiB each, for both the XDMA DMA engines
(`/dev/xdma0_h2c_0`, `/dev/xdma0_c2h_0`, file offset = AXI address) and SAT:

| channel | DDR4 IP | AXI addresses | SLR | reference clock |
|---|---|---|---|---|
{channel_rows}

SAT reports the map in `MEM_SIZE` (64 GiB) and `MEM_CHANNELS` (4 channels of 2^34 bytes); the driver places
tensors per channel (docs/driver.md). SLR plan: XDMA, SmartConnect, SAT's bus side and C1/C2 in SLR1 (with the
PCIe block); C0 (SLR0) and C3 (SLR2) through SLR-crossing register slices (`floorplan.xdc`). After the build, check
that every pblock has cells (`build.log`: no "pblock ... is empty") and `reports/slr_crossing.rpt`.
"""


@dataclass
class VivadoTree:
    """What :func:`write_vivado_tree` wrote.

    Attributes
    ----------
    directory : Path
    files : list of Path
        Every file written, relative to ``directory``.
    config : SATConfig
    """

    directory: Path
    config: SATConfig
    files: list[Path] = field(default_factory=list)

    def instructions(self) -> str:
        """How to run Vivado on the tree."""
        return (f"Vivado tree for the VCU1525 written to {self.directory}\n"
                f"  build:   cd {self.directory} && ./build.sh   (Vivado {VIVADO_MIN_VERSION}+; or: vivado -mode batch "
                f"-source build.tcl)\n"
                f"  program: vivado -mode batch -source program.tcl -tclargs jtag|flash [host:port]\n"
                f"  or: sat build vcu1525 --out {self.directory} --run   (needs vivado on PATH)")


def _write(directory: Path, rel: str, content: str | bytes, files: list[Path], *, executable: bool = False) -> None:
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    if executable:
        path.chmod(0o755)
    files.append(Path(rel))


def write_vivado_tree(out: str | Path, config: SATConfig | None = None) -> VivadoTree:
    """Write the Vivado tree of the VCU1525 card top for ``config`` into ``out``.

    Parameters
    ----------
    out : path
        Directory (created; existing files of the same names are overwritten).
    config : SATConfig, optional
        Default: ``boards/vcu1525_default.json``.

    Returns
    -------
    VivadoTree

    Raises
    ------
    ValueError
        If the configuration cannot be built for the card (AXI widths).
    """
    if config is None:
        config = default_card_config()
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    with shared_pe() as pe_modules:     # one PE module instanced R*C times (hw/netlist.py)
        card = VCU1525Card(config)
        plan = VCU1525Platform().build(card, name=TOP_NAME, do_build=False)
    _write(directory, f"{TOP_NAME}.v", "".join(pe_modules.values()) + plan.files[f"{TOP_NAME}.v"], files)
    _write(directory, f"{TOP_NAME}.xdc", plan.files[f"{TOP_NAME}.xdc"], files)
    _write(directory, "timing.xdc", timing_xdc(), files)
    _write(directory, "ip/xdma_0.tcl", xdma_tcl(), files)
    _write(directory, "floorplan.xdc", floorplan_xdc(), files)
    for k in range(CARD_MEMORY.channels):
        _write(directory, f"ip/{ddr4_module(k)}.tcl", ddr4_tcl(k), files)
    _write(directory, "ip/smartconnect_0.tcl", smartconnect_tcl(data_width=config.axi_data_width,
                                                                 sat_masters=card.sat_masters), files)
    _write(directory, "build.tcl", build_tcl(), files)
    _write(directory, "program.tcl", program_tcl(), files)
    _write(directory, "build.sh", build_sh(), files, executable=True)
    _write(directory, "sat_config.json", config.to_json() + "\n", files)
    _write(directory, "regmap.json", regmap_json(config, CARD_MEMORY.size, CARD_MEMORY.channels), files)
    _write(directory, "sat_regs.h", regmap_c_header(config, CARD_MEMORY.size, CARD_MEMORY.channels), files)
    _write(directory, "stubs/ip_stubs.v", ip_stub_verilog(ip_ports(sat_masters=card.sat_masters)), files)
    _write(directory, "README.md", _readme(config), files)
    return VivadoTree(directory=directory, config=config, files=files)


def write_core_tree(out: str | Path, config: SATConfig, *, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                    name: str = "sat_core") -> list[Path]:
    """Write the SAT core's Verilog alone (module ``name``, file ``<name>.v``; ``SATCore`` with the GEMM unit), its
    configuration and register map, for other integrations.

    Returns
    -------
    list of Path
        Files written, relative to ``out``.

    Raises
    ------
    ValueError
        If ``name`` is not a plain Verilog identifier (:func:`sat.sw.validate.check_identifier`): a keyword would
        not compile, and a path separator would write outside ``out``.
    """
    from sat.hw.core import SATCore
    from sat.hw.netlist import to_verilog
    from sat.sw.validate import check_identifier

    check_identifier(name, "module name")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    _write(directory, f"{name}.v", to_verilog(SATCore(config, memory_bytes=memory_bytes), name), files)
    _write(directory, "sat_config.json", config.to_json() + "\n", files)
    _write(directory, "regmap.json", regmap_json(config, memory_bytes), files)
    _write(directory, "sat_regs.h", regmap_c_header(config, memory_bytes), files)
    return files


def default_card_config() -> SATConfig:
    """The default card configuration, ``boards/vcu1525_default.json`` (see docs/board.md, "Resources")."""
    return SATConfig.load(Path(__file__).with_name("vcu1525_default.json"))


def find_vivado(vivado: str | None = None, *, then: str = "run build.sh in the tree") -> str:
    """The Vivado executable: ``vivado``, else ``$VIVADO``, else ``vivado`` on ``PATH`` (Vivado is installed
    system-wide, not in SAT's Python environment).

    Raises
    ------
    FileNotFoundError
        If Vivado is not found, saying how to provide it (and ``then``, what to do next).
    """
    exe = vivado or os.environ.get("VIVADO") or shutil.which("vivado")
    if not exe or not (shutil.which(exe) or Path(exe).exists()):
        raise FileNotFoundError("vivado not found on PATH: source Vivado's settings64.sh (Vivado "
                                f"{VIVADO_MIN_VERSION} or later) or set VIVADO=/path/to/vivado, then {then}")
    return exe


def run_vivado(tree: VivadoTree, *, vivado: str | None = None) -> int:
    """Run ``build.tcl`` in the tree with Vivado in batch mode; returns Vivado's exit status.

    Raises
    ------
    FileNotFoundError
        If Vivado is not found.
    """
    exe = find_vivado(vivado, then=f"run {tree.directory}/build.sh")
    cmd = [exe, "-mode", "batch", "-nojournal", "-log", "build.log", "-source", "build.tcl"]
    return subprocess.run(cmd, cwd=tree.directory, check=False).returncode
