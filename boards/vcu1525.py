"""Amaranth platform for the Xilinx VCU1525 acceleration card (XCVU9P, same PCB as the Alveo U200).

Every pin, IO standard and attribute here comes from ``shared/reference/vcu1525.md`` (Xilinx board store files for
the VCU1525, version 1.3, cross-checked against public AU200/VCU1525 constraint files); ``tests/test_board.py``
checks the platform against that document's tables at test time. Where the sources disagree (reference section 1.9)
the choice made is recorded next to the resource, and in ``docs/board.md``.

How the resources are meant to be used:

* User I/O (``led``, ``switch``, ``rst``, ``uart``, ``i2c``, QSFP sideband) is requested with ``dir="-"`` and
  given an ``amaranth.lib.io`` buffer (``io.Buffer("o", platform.request("led", 0, dir="-"))``; Amaranth 0.5
  deprecates requests with implicit buffers). ``PinsN`` inversions are applied by the buffer.
* Gigabit-transceiver pins (``pcie_x16`` ``clk``/``rx``/``tx``, ``qsfp`` ``rx``/``tx``, ``qsfp*_refclk``) carry no
  IO standard and must be requested with ``dir="-"`` and wired to the hard IP (``IBUFDS_GTE4`` for reference clocks,
  the XDMA/PCIe or CMAC IP for the lanes) through the raw port (``port.p``/``port.n``), never through a fabric
  ``io.DifferentialBuffer``.
* ``ddr4`` channels go straight to the Xilinx DDR4 (MIG) IP ports through the raw ports (``port.io``, ``.p``/``.n``).
  Their subsignals use the IP's port names (``adr``, ``act_n``, ``cs_n``, ...) with the raw pin polarity: nothing
  in them is a ``PinsN``, because a raw port passed to an ``Instance`` silently drops the inversion.
* Likewise ``pcie_x16.perst`` passed raw (``port.io``) to the XDMA ``sys_rst_n`` is the active-low ``PERST#``,
  which is what that port expects; through an ``io.Buffer`` it reads as active high.
"""

from __future__ import annotations

from typing import NamedTuple

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import I2CResource, LEDResources, SwitchResources, UARTResource

__all__ = [
    "VCU1525Platform",
    "VCU1525_PART",
    "BITSTREAM_PROPERTIES",
    "DDR4_CHANNELS",
    "DDR4Channel",
    "ddr4_rdimm_resource",
]

#: Vivado part string (board store ``board.xml`` 1.1-1.3; 1.0's ``xcvu9p-fsgd2104-2-i`` is deprecated).
VCU1525_PART: str = "xcvu9p-fsgd2104-2L-e"

# Bank 64 ("Misc. IO") and the DDR4 reset pins are 1.2 V.
_LVCMOS12 = Attrs(IOSTANDARD="LVCMOS12")

# Reference section 1.2 / discrepancy 5: the board store file 1.3 changed the 300 MHz reference clocks from
# DIFF_SSTL12 (1.2, LiteX) to LVDS with DQS_BIAS=TRUE ("Updated DDR4 system clock IO attributes. Using LVDS and
# DQS_BIAS now"). The oscillator is a 1.2 V LVDS part behind an SI53340 buffer, so we follow the newest Xilinx file.
_LVDS_CLK = Attrs(IOSTANDARD="LVDS", DQS_BIAS="TRUE")

#: Configuration and bitstream properties of working designs for this PCB (reference section 1.7), written into the
#: XDC as ``set_property <name> <value> [current_design]`` before the ``add_constraints`` override, so a build can
#: still change them. ``OVERTEMPSHUTDOWN`` matters: the card is passively cooled. ``UNUSEDPIN`` is deliberately left
#: at Vivado's default (pull-down): ``PULLUP`` (used by the U200 XDC) would raise the active-high
#: ``DDR4_RESET_GATE`` (AU21) whenever a design leaves it unused.
BITSTREAM_PROPERTIES: dict[str, str] = {
    "CFGBVS": "GND",
    "CONFIG_VOLTAGE": "1.8",
    "BITSTREAM.CONFIG.OVERTEMPSHUTDOWN": "ENABLE",
    "BITSTREAM.GENERAL.COMPRESS": "TRUE",
    "BITSTREAM.CONFIG.CONFIGRATE": "63.8",
    "BITSTREAM.CONFIG.SPI_BUSWIDTH": "4",
    "BITSTREAM.CONFIG.SPI_32BIT_ADDR": "YES",
    "BITSTREAM.CONFIG.SPI_FALL_EDGE": "YES",
    # The image sits in a user region of the flash (sat.boards.vivado.FLASH_USER_ADDRESS), booted by a fallback
    # image at address 0; a failed load of the user image (bad CRC, wrong IDCODE, an interrupted flash write)
    # falls back to address 0 instead of leaving the card unconfigured (UG570, "MultiBoot"; Corundum's VCU1525 and
    # AU200 XDC set it too).
    "BITSTREAM.CONFIG.CONFIGFALLBACK": "ENABLE",
}


class DDR4Channel(NamedTuple):
    """Package pins of one DDR4 DIMM slot (x4 RDIMM, single rank, 72-bit with ECC, no data mask).

    Pins are space-separated, index 0 first; ``dqs_t``/``dqs_c`` are the true/complement strobes, one per nibble.
    """

    adr: str
    ba: str
    bg: str
    act_n: str
    ck_t: str
    ck_c: str
    cke: str
    cs_n: str
    odt: str
    par: str
    reset_n: str
    dq: str
    dqs_t: str
    dqs_c: str


#: The four DIMM slots C0..C3 (reference Appendix A, generated from the board store ``part0_pins.xml`` 1.3).
#: Discrepancies 1 and 3: LiteX's ``sqrl_xcu1525.py`` declares an x8 mapping (upper-nibble DQS_t strobes as ``dm``,
#: 64 DQ, no ECC) and LiteX's U200 file drops the ECC byte; neither matches the stock x4 ECC RDIMMs
#: (MTA18ASF2G72PZ), so neither is used. The rank-1/2/3 pins (ck1, cke1, cs1..3_n, odt1) are left out: the stock
#: DIMMs are single rank. C0's clock is ``clk300`` 0, C1's ``clk300`` 1, and so on.
DDR4_CHANNELS: dict[int, DDR4Channel] = {
    0: DDR4Channel(
        adr="AT36 AV36 AV37 AW35 AW36 AY36 AY35 BA40 BA37 BB37 AR35 BA39 BB40 AN36 AP35 AP36 AR36",
        ba="AT35 AT34", bg="BC37 BC39", act_n="BB39",
        ck_t="AV38", ck_c="AW38", cke="BC38", cs_n="AR33", odt="AP34",
        par="AU36", reset_n="AU31",
        dq=(
            "AW28 AW29 BA28 BA27 BB29 BA29 BC27 BB27 "  # dq[0:7]
            "BE28 BF28 BE30 BD30 BF27 BE27 BF30 BF29 "  # dq[8:15]
            "BB31 BB32 AY32 AY33 BC32 BC33 BB34 BC34 "  # dq[16:23]
            "AV31 AV32 AV34 AW34 AW31 AY31 BA35 BA34 "  # dq[24:31]
            "AL30 AM30 AU32 AT32 AN31 AN32 AR32 AR31 "  # dq[32:39]
            "AP29 AP28 AN27 AM27 AN29 AM29 AR27 AR28 "  # dq[40:47]
            "AT28 AV27 AU27 AT27 AV29 AY30 AW30 AV28 "  # dq[48:55]
            "BD34 BD33 BE33 BD35 BF32 BF33 BF34 BF35 "  # dq[56:63]
            "BD40 BD39 BF43 BF42 BF37 BE37 BE40 BF41"  # dq[64:71]
        ),
        dqs_t="BA30 BB26 BD28 BD26 BB35 BC31 AV33 BA32 AM31 AP30 AL28 AR30 AU29 AY27 BE35 BE31 BE38 BF39",
        dqs_c="BB30 BC26 BD29 BE26 BB36 BD31 AW33 BA33 AM32 AP31 AL29 AT30 AU30 AY28 BE36 BE32 BF38 BF40",
    ),
    1: DDR4Channel(
        adr="AN24 AT24 AW24 AN26 AY22 AY23 AV24 BA22 AY25 BA23 AM26 BA25 BB22 AL24 AL25 AM25 AN23",
        ba="AU24 AP26", bg="BC22 AW26", act_n="AW25",
        ck_t="AT25", ck_c="AU25", cke="BB25", cs_n="AV23", odt="AW23",
        par="AT23", reset_n="AR17",
        dq=(
            "BD9 BD7 BC7 BD8 BD10 BE10 BE7 BF7 "  # dq[0:7]
            "AU13 AV13 AW13 AW14 AU14 AY11 AV14 BA11 "  # dq[8:15]
            "BA12 BB12 BA13 BA14 BC9 BB9 BA7 BA8 "  # dq[16:23]
            "AN13 AR13 AM13 AP13 AM14 AR15 AL14 AT15 "  # dq[24:31]
            "BE13 BD14 BF12 BD13 BD15 BD16 BF14 BF13 "  # dq[32:39]
            "AY17 BA17 AY18 BA18 BA15 BB15 BC11 BD11 "  # dq[40:47]
            "AV16 AV17 AU16 AU17 BB17 BB16 AT18 AT17 "  # dq[48:55]
            "AM15 AL15 AN17 AN16 AR18 AP18 AL17 AL16 "  # dq[56:63]
            "BF25 BF24 BD25 BE25 BD23 BC23 BF23 BE23"  # dq[64:71]
        ),
        dqs_t="BF10 BE8 AW15 AY13 BB11 BA10 AT14 AN14 BE12 BE15 BC13 BB14 AV18 AW16 AP16 AM17 BC24 BE22",
        dqs_c="BF9 BF8 AY15 AY12 BB10 BA9 AT13 AP14 BE11 BF15 BC12 BC14 AW18 AY16 AR16 AM16 BD24 BF22",
    ),
    2: DDR4Channel(
        adr="L29 A33 C33 J29 H31 G31 C32 B32 A32 D31 A34 E31 M30 F33 A35 G32 K30",
        ba="D33 B36", bg="C31 J30", act_n="B31",
        ck_t="C34", ck_c="B34", cke="G30", cs_n="B35", odt="E33",
        par="M29", reset_n="D36",
        dq=(
            "R25 P25 M25 L25 P26 R26 N27 N28 "  # dq[0:7]
            "J28 H29 H28 G29 K25 L27 K26 K27 "  # dq[8:15]
            "F27 E27 E28 D28 G27 G26 F28 F29 "  # dq[16:23]
            "D26 C26 B27 B26 A29 A30 C27 C28 "  # dq[24:31]
            "F35 E38 D38 E35 E36 E37 F38 G38 "  # dq[32:39]
            "P30 R30 P29 N29 L32 M32 P31 N32 "  # dq[40:47]
            "J35 K35 L33 K33 J34 J33 N34 P34 "  # dq[48:55]
            "H36 G36 H37 J36 K37 K38 G35 G34 "  # dq[56:63]
            "C36 B37 A37 A38 C39 D39 A40 B40"  # dq[64:71]
        ),
        dqs_t="N26 R28 J25 M27 D29 H26 A27 C29 E39 G37 N31 T30 L35 M34 J38 H33 B39 C37",
        dqs_c="M26 P28 J26 L28 D30 H27 A28 B29 E40 F37 M31 R31 L36 L34 H38 H34 A39 C38",
    ),
    3: DDR4Channel(
        adr="K15 B15 F14 A15 C14 A14 B14 E13 F13 A13 D14 C13 B13 K16 D15 E15 F15",
        ba="J15 H14", bg="D13 J13", act_n="H13",
        ck_t="L14", ck_c="L13", cke="K13", cs_n="B16", odt="C16",
        par="J14", reset_n="D21",
        dq=(
            "P24 N24 T24 R23 N23 P21 P23 R21 "  # dq[0:7]
            "J24 J23 H24 G24 L24 L23 K22 K21 "  # dq[8:15]
            "G20 H17 F19 G17 J20 L19 L18 J19 "  # dq[16:23]
            "M19 M20 R18 R17 R20 T20 N18 N19 "  # dq[24:31]
            "A23 A22 B24 B25 B22 C22 C24 C23 "  # dq[32:39]
            "C19 C18 C21 B21 A18 A17 A20 B20 "  # dq[40:47]
            "E17 F20 E18 E20 D19 D20 H18 J18 "  # dq[48:55]
            "F22 E22 G22 G21 F24 E25 F25 G25 "  # dq[56:63]
            "M16 N16 N13 N14 T15 R15 P13 P14"  # dq[64:71]
        ),
        dqs_t="T22 N22 J21 M22 L20 K18 P19 N17 A25 D24 C17 B19 F18 H19 F23 H23 R16 T13",
        dqs_c="R22 N21 H21 L22 K20 K17 P18 M17 A24 D23 B17 A19 F17 G19 E23 H22 P15 R13",
    ),
}


def ddr4_rdimm_resource(number: int, channel: DDR4Channel) -> Resource:
    """Build the ``ddr4`` resource of one DIMM slot for the Xilinx DDR4 (MIG) IP.

    Written by hand rather than with ``amaranth_boards.resources.DDR4Resource``, which requires a data mask, wires
    ``alert_n`` to ``act_n`` and applies the resource-level IO standard to the LVCMOS12 ``reset_n`` (reference 3.5).

    Parameters
    ----------
    number : int
        Slot number (0..3 for C0..C3).
    channel : DDR4Channel
        Package pins of the slot.

    Returns
    -------
    Resource
        ``ddr4`` ``number`` with subsignals ``adr`` (17, A14/A15/A16 = WE_n/CAS_n/RAS_n), ``ba`` (2), ``bg`` (2),
        ``act_n``, ``ck`` (differential, ``.p`` = ck_t), ``cke``, ``cs_n``, ``odt``, ``par``, ``reset_n``,
        ``dq`` (72, bits 64..71 ECC) and ``dqs`` (18 differential pairs, ``.p`` = dqs_t). IO standards from
        reference 1.6: address/command ``SSTL12_DCI``, clock ``DIFF_SSTL12_DCI``, data ``POD12_DCI``, strobes
        ``DIFF_POD12_DCI``, reset ``LVCMOS12``.

    Raises
    ------
    ValueError
        If a pin list has the wrong width.
    """
    widths = {"adr": 17, "ba": 2, "bg": 2, "act_n": 1, "ck_t": 1, "ck_c": 1, "cke": 1, "cs_n": 1, "odt": 1,
              "par": 1, "reset_n": 1, "dq": 72, "dqs_t": 18, "dqs_c": 18}
    for field, width in widths.items():
        got = len(getattr(channel, field).split())
        if got != width:
            raise ValueError(f"DDR4 channel {number}: {field} must list {width} pins, not {got}")
    sstl = Attrs(IOSTANDARD="SSTL12_DCI")
    return Resource(
        "ddr4", number,
        Subsignal("adr", Pins(channel.adr, dir="o"), sstl),
        Subsignal("ba", Pins(channel.ba, dir="o"), sstl),
        Subsignal("bg", Pins(channel.bg, dir="o"), sstl),
        Subsignal("act_n", Pins(channel.act_n, dir="o"), sstl),
        Subsignal("ck", DiffPairs(channel.ck_t, channel.ck_c, dir="o"), Attrs(IOSTANDARD="DIFF_SSTL12_DCI")),
        Subsignal("cke", Pins(channel.cke, dir="o"), sstl),
        Subsignal("cs_n", Pins(channel.cs_n, dir="o"), sstl),
        Subsignal("odt", Pins(channel.odt, dir="o"), sstl),
        Subsignal("par", Pins(channel.par, dir="o"), sstl),
        Subsignal("reset_n", Pins(channel.reset_n, dir="o"), _LVCMOS12),
        Subsignal("dq", Pins(channel.dq, dir="io"), Attrs(IOSTANDARD="POD12_DCI")),
        Subsignal("dqs", DiffPairs(channel.dqs_t, channel.dqs_c, dir="io"), Attrs(IOSTANDARD="DIFF_POD12_DCI")),
    )


def _qsfp_resources(number: int, *, rx_p: str, rx_n: str, tx_p: str, tx_n: str, modsel_n: str, reset_n: str,
                    modprs_n: str, int_n: str, lpmode: str, refclk0: tuple[str, str], refclk1: tuple[str, str],
                    clkgen_reset: str, clkgen_fs: str) -> list[Resource]:
    """Resources of one QSFP28 cage: lanes and sideband, its two GT reference clocks, its SI5335 controls."""
    return [
        Resource(
            "qsfp", number,
            # GTY lanes: no IO standard; request with dir="-" and wire to the transceiver IP.
            Subsignal("rx", DiffPairs(rx_p, rx_n, dir="i")),
            Subsignal("tx", DiffPairs(tx_p, tx_n, dir="o")),
            Subsignal("modsel", PinsN(modsel_n, dir="o"), _LVCMOS12),
            Subsignal("reset", PinsN(reset_n, dir="o"), _LVCMOS12),
            Subsignal("modprs", PinsN(modprs_n, dir="i"), Attrs(IOSTANDARD="LVCMOS12", PULLUP="TRUE")),
            Subsignal("int", PinsN(int_n, dir="i"), Attrs(IOSTANDARD="LVCMOS12", PULLUP="TRUE")),
            Subsignal("lpmode", Pins(lpmode, dir="o"), _LVCMOS12),
        ),
        # MGTREFCLK0: SI570 through an SI53340 buffer; MGTREFCLK1: SI5335 OUT1 (161.1328125 MHz with FS = 1x,
        # the default when the FS pins float on their 10k pull-ups; 156.25 MHz with FS = 01).
        Resource(f"qsfp{number}_refclk", 0, DiffPairs(*refclk0, dir="i"), Clock(156.25e6)),
        Resource(f"qsfp{number}_refclk", 1, DiffPairs(*refclk1, dir="i"), Clock(161.1328125e6)),
        # SI5335 controls: REFCLK_RESET is active high and must be driven high to change FS[1:0]. FS is "io" so a
        # design can leave it tri-stated (the board default, 161.13 MHz) instead of driving 00.
        Resource(
            f"qsfp{number}_clkgen", 0,
            Subsignal("reset", Pins(clkgen_reset, dir="o")),
            Subsignal("fs", Pins(clkgen_fs, dir="io")),
            _LVCMOS12,
        ),
    ]


class VCU1525Platform(XilinxPlatform):
    """Xilinx VCU1525 (XCVU9P-L2FSGD2104E, Gen3 x16 PCIe card with four DDR4 DIMM slots and two QSFP28 cages).

    Resources (``platform.request(name, number)``):

    * ``clk300`` 0..3: the 300 MHz LVDS reference clocks of DDR4 slots C0..C3 (``clk300`` 0 is the default clock);
      ``clk_si570`` 0: the programmable SI570 (156.25 MHz at power-up) [U200-XDC].
    * ``rst`` 0: CPU_RESET push button (active low, ``PinsN``; the default reset).
    * ``led`` 0..2 (red, yellow, green), ``switch`` 0..3 (DIP SW1..SW4).
    * ``uart`` 0: CP2105 USB-UART (``rx``, ``tx``); ``uart`` 1: satellite controller UART [U200-XDC].
    * ``i2c`` 0 (``scl``, ``sda``, main bus behind an I2C mux), ``i2c_mux_rst`` 0 (active low).
    * ``pcie_x16`` 0: ``perst`` (PERST#, ``PinsN``), ``clk`` (100 MHz GT reference clock), ``rx``/``tx``
      (16 GTY lanes, lane 0 first).
    * ``ddr4`` 0..3: see :func:`ddr4_rdimm_resource`.
    * ``qsfp`` 0/1: ``rx``/``tx`` (4 GTY lanes), ``modsel``, ``reset``, ``modprs``, ``int`` (``PinsN``), ``lpmode``;
      ``qsfp0_refclk``/``qsfp1_refclk`` 0 (156.25 MHz) and 1 (161.13 MHz); ``qsfp0_clkgen``/``qsfp1_clkgen`` 0
      (``reset``, ``fs``).
    * ``ddr4_reset_gate`` 0 (active high: holds the DIMMs in self-refresh; drive it low), ``msp_gpio`` 0 (4 pins)
      [U200-XDC].

    [U200-XDC]: not in the VCU1525 board store files; from the Alveo U200 constraints of the same PCB (reference
    discrepancy 6).

    The generated XDC uses ``PACKAGE_PIN`` rather than Amaranth's default ``LOC`` for ports (UG912 recommends
    ``PACKAGE_PIN`` for package pins) and sets the :data:`BITSTREAM_PROPERTIES` of this card. Every clock resource
    carries a ``Clock``, so the XDC has a ``create_clock`` for each one a design requests, except the ports handed
    to an IP that constrains them itself (:meth:`leave_clock_to_ip`).
    """

    device: str = "xcvu9p"
    package: str = "fsgd2104"
    # Amaranth joins device-package-speed for UltraScale+; the speed field carries speed and temperature grade.
    speed: str = "2L-e"
    default_clk: str = "clk300"
    default_rst: str = "rst"

    resources = [
        *[Resource("clk300", i, DiffPairs(p, n, dir="i"), Clock(300e6), _LVDS_CLK)
          for i, (p, n) in enumerate([("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16")])],
        Resource("clk_si570", 0, DiffPairs("AU19", "AV19", dir="i"), Clock(156.25e6), _LVDS_CLK),

        Resource("rst", 0, PinsN("AL20", dir="i"), _LVCMOS12),
        *LEDResources(pins="BC21 BB21 BA20", attrs=Attrs(IOSTANDARD="LVCMOS12", DRIVE="8")),
        *SwitchResources(pins="AN22 AM19 AL19 AP20", attrs=_LVCMOS12),

        # Discrepancy 4: the board store file (and LiteX, and Corundum's older VCU1525 XDC) has FPGA TX on BB20 and
        # FPGA RX on BF18; the comments of Corundum's newer shared AU200 XDC say the reverse. We follow the Xilinx
        # board file; if the console stays silent on the card, swap these two first.
        UARTResource(0, rx="BF18", tx="BB20", attrs=_LVCMOS12),
        UARTResource(1, rx="BA19", tx="BB19", attrs=_LVCMOS12),  # [U200-XDC] satellite controller

        I2CResource(0, scl="BF20", sda="BF17", attrs=Attrs(IOSTANDARD="LVCMOS12", DRIVE="8", SLEW="SLOW")),
        Resource("i2c_mux_rst", 0, PinsN("BF19", dir="o"), _LVCMOS12),

        Resource(
            "pcie_x16", 0,
            Subsignal("perst", PinsN("BD21", dir="i"), Attrs(IOSTANDARD="LVCMOS12", PULLUP="TRUE")),
            # MGTREFCLK0_226, 100 MHz from the edge fingers: IBUFDS_GTE4, no IO standard.
            Subsignal("clk", DiffPairs("AM11", "AM10", dir="i"), Clock(100e6)),
            # Quads 227 (lanes 0-3), 226, 225, 224 (lanes 12-15); lane 0 on the highest channel of quad 227.
            Subsignal("rx", DiffPairs(
                p="AF2 AG4 AH2 AJ4 AK2 AL4 AM2 AN4 AP2 AR4 AT2 AU4 AV2 AW4 BA2 BC2",
                n="AF1 AG3 AH1 AJ3 AK1 AL3 AM1 AN3 AP1 AR3 AT1 AU3 AV1 AW3 BA1 BC1",
                dir="i")),
            Subsignal("tx", DiffPairs(
                p="AF7 AG9 AH7 AJ9 AK7 AL9 AM7 AN9 AP7 AR9 AT7 AU9 AV7 BB5 BD5 BF5",
                n="AF6 AG8 AH6 AJ8 AK6 AL8 AM6 AN8 AP6 AR8 AT6 AU8 AV6 BB4 BD4 BF4",
                dir="o")),
        ),

        *[ddr4_rdimm_resource(number, channel) for number, channel in DDR4_CHANNELS.items()],

        # QSFP28 cages (GTY quads 231 = QSFP0, 230 = QSFP1). Discrepancy 2: LiteX's sqrl_xcu1525.py puts the
        # QSFP1 clock-generator reset on AU20, which its own FS list also uses; the U200 XDC and LiteX's U200 file
        # say AR21, which collides with nothing, so AR21 it is.
        *_qsfp_resources(
            0, rx_p="N4 M2 L4 K2", rx_n="N3 M1 L3 K1", tx_p="N9 M7 L9 K7", tx_n="N8 M6 L8 K6",
            modsel_n="BE16", reset_n="BE17", modprs_n="BE20", int_n="BE21", lpmode="BD18",
            refclk0=("M11", "M10"), refclk1=("K11", "K10"), clkgen_reset="AT22", clkgen_fs="AT20 AU22"),
        *_qsfp_resources(
            1, rx_p="U4 T2 R4 P2", rx_n="U3 T1 R3 P1", tx_p="U9 T7 R9 P7", tx_n="U8 T6 R8 P6",
            modsel_n="AY20", reset_n="BC18", modprs_n="BC19", int_n="AV21", lpmode="AV22",
            refclk0=("T11", "T10"), refclk1=("P11", "P10"), clkgen_reset="AR21", clkgen_fs="AR22 AU20"),

        # [U200-XDC] DDR4_RESET_GATE: high holds the DIMMs in self-refresh across reconfiguration (XAPP1321).
        Resource("ddr4_reset_gate", 0, Pins("AU21", dir="o"), _LVCMOS12),
        # [U200-XDC] GPIO to the satellite (board management) controller.
        Resource("msp_gpio", 0, Pins("AR20 AM20 AM21 AN21", dir="io"), _LVCMOS12),
    ]
    connectors = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ip_clocked: list = []

    def leave_clock_to_ip(self, port) -> None:
        """Leave out the ``create_clock`` of a requested clock port that goes straight into an IP which constrains
        it: the DDR4 IP with ``System_Clock Differential`` creates the clock on its ``c0_sys_clk_p`` in its own XDC
        (UG1119), and a second ``create_clock`` on the same net from the top-level XDC would replace or duplicate it.

        Parameters
        ----------
        port
            What :meth:`request` returned for the clock (``dir="-"``): a differential port or its ``.p``.
        """
        self._ip_clocked.append(getattr(port, "p", port))

    def iter_port_clock_constraints(self):
        for port, frequency in super().iter_port_clock_constraints():
            if not any(port is p for p in self._ip_clocked):
                yield port, frequency

    @property
    def file_templates(self) -> dict[str, str]:
        """Amaranth's templates, with ``PACKAGE_PIN`` port constraints and this card's bitstream properties.

        Raises
        ------
        RuntimeError
            If the installed Amaranth's XDC template no longer has the line this platform rewrites.
        """
        templates = dict(super().file_templates)
        if self.toolchain != "Vivado":
            return templates
        xdc = templates["{{name}}.xdc"]
        loc = "set_property LOC {{pin_name}} "
        placeholder = '{{get_override("add_constraints")'
        if loc not in xdc or placeholder not in xdc:
            raise RuntimeError("Amaranth's Vivado XDC template changed: update VCU1525Platform.file_templates "
                               "(boards/vcu1525.py) for this Amaranth version")
        properties = "".join(f"set_property {name} {value} [current_design]\n            "
                             for name, value in BITSTREAM_PROPERTIES.items())
        xdc = xdc.replace(loc, "set_property PACKAGE_PIN {{pin_name}} ")
        xdc = xdc.replace(placeholder, properties + placeholder)
        templates["{{name}}.xdc"] = xdc
        return templates
