"""``sat`` subcommands of the board target: ``build``, ``generate``, ``report`` and ``board``.

* ``sat build vcu1525 --out DIR [--config FILE] [--run]``: the Vivado tree of the card (:mod:`sat.boards.vivado`);
  with ``--run``, run Vivado on it.
* ``sat generate --out DIR [--config FILE]``: SATCore's Verilog alone, its configuration and register map
  (JSON and ``sat_regs.h``), for integrating SAT into another design.
* ``sat report resources [--config FILE] [--json]``: Yosys resource estimate on the XCVU9P
  (:mod:`sat.boards.resources`).
* ``sat board selftest [--device /dev/xdma0]``: identity registers, a DMA loop-back and one GEMM against the
  golden model on a programmed card (:func:`selftest`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sat.sw.cli import subcommand
from sat.sw.cliutil import CLIError, input_file, nonnegative_int, output_dir, path_arg, verilog_name
from sat.sw.config import SATConfig

__all__ = ["load_config", "selftest", "SelftestResult"]

Handler = Callable[[argparse.Namespace], int]


def load_config(path: str | None, *, card: bool = True) -> SATConfig:
    """The configuration in ``path``; without one, the card default (``card=True``) or ``SATConfig()``.

    Raises
    ------
    ValueError
        If the file is missing, unreadable or not a valid configuration.
    """
    if path is None:
        if card:
            from .vivado import default_card_config

            return default_card_config()
        return SATConfig()
    if not Path(path).exists():
        raise ValueError(f"configuration file {path} not found: pass a JSON file written by SATConfig.to_json()")
    try:
        input_file(path, "configuration file")
    except CLIError as exc:
        raise ValueError(str(exc)) from None
    return SATConfig.load(path)


@subcommand("build", help="write the Vivado tree of a board target (and optionally run Vivado)")
def _build(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("target", choices=["vcu1525"], help="board")
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR", help="output directory")
    p.add_argument("--config", type=path_arg, metavar="FILE",
                   help="SATConfig JSON (default: boards/vcu1525_default.json)")
    p.add_argument("--run", action="store_true", help="run Vivado on the tree (vivado must be on PATH)")

    def run(args: argparse.Namespace) -> int:
        from .vivado import find_vivado, run_vivado, write_vivado_tree

        config = load_config(args.config)
        out = output_dir(args.out, "--out")
        if args.run:
            try:            # before the (long) tree generation
                find_vivado(then=f"rerun this command (or run build.sh in {out} after `sat build` without --run)")
            except FileNotFoundError as exc:
                raise CLIError(str(exc)) from None
        tree = write_vivado_tree(out, config)
        print(tree.instructions())
        if not args.run:
            return 0
        try:
            status = run_vivado(tree)
        except FileNotFoundError as exc:    # Vivado missing: the message says how to provide it
            raise CLIError(str(exc)) from None
        if status != 0:
            print(f"sat build: Vivado failed (exit {status}): see {tree.directory}/build.log", file=sys.stderr)
        return status

    return run


@subcommand("generate", help="write SATCore's Verilog, configuration and register map (JSON, C header)")
def _generate(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR", help="output directory")
    p.add_argument("--config", type=path_arg, metavar="FILE", help="SATConfig JSON (default: SATConfig())")
    p.add_argument("--name", type=verilog_name, default="sat_core",
                   help="Verilog module name, also the file name <NAME>.v (default sat_core)")

    def run(args: argparse.Namespace) -> int:
        from .vivado import write_core_tree

        config = load_config(args.config, card=False)
        files = write_core_tree(output_dir(args.out, "--out"), config, name=args.name)
        for f in files:
            print(Path(args.out) / f)
        return 0

    return run


@subcommand("report", help="reports about a build: 'resources' (Yosys estimate on the XCVU9P)")
def _report(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("what", choices=["resources"])
    p.add_argument("--config", type=path_arg, metavar="FILE",
                   help="SATConfig JSON (default: boards/vcu1525_default.json)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")

    def run(args: argparse.Namespace) -> int:
        from .resources import VU9P, estimate

        config = load_config(args.config)
        progress = None if args.json else (lambda s: print(f"  {s} ...", file=sys.stderr, flush=True))
        est = estimate(config, progress=progress)
        if args.json:
            print(json.dumps(est, indent=2))
            return 0
        total, share = est["total"], est["share"]
        print(f"{config.rows}x{config.cols} {config.fmt} N:M {config.nm_set} L={config.adder_latency} "
              f"on the XCVU9P (estimate: {est['method']})")
        bram = total["bram36"] + total["bram18"] / 2
        rows = [("LUT", total["lut"], VU9P["lut"], share["lut"]), ("FF", total["ff"], VU9P["ff"], share["ff"]),
                ("DSP48E2", total["dsp"], VU9P["dsp"], share["dsp"]),
                ("BRAM (RAMB36)", bram, VU9P["bram36"], share["bram36"]),
                ("URAM288", total["uram"], VU9P["uram"], share["uram"])]
        for name, used, cap, frac in rows:
            print(f"  {name:<14} {used:>10,.0f} / {cap:>9,}  {100 * frac:6.2f} %")
        print(_parts_table(est, config.rows * config.cols))
        return 0

    return run


#: Lines of the per-part table of ``sat report resources``: (estimate part, label).
_PART_LABELS = (("core", "core (CSR, cmdproc, DMA)"), ("unit", "GEMM unit (loader, writer, tiling)"),
                ("engine", "engine (buffers, feeder)"), ("array", "array"))


def _parts_table(est: dict, n_pe: int) -> str:
    """Per-part lines of the resource report: what each part adds and its share of the total LUTs."""
    parts = {**est["parts"], "array": est["array"]}
    lines = [f"  {'part':<36} {'LUT':>10} {'FF':>10} {'DSP':>6} {'RAMB36':>7}  {'of LUTs':>7}"]
    for key, label in _PART_LABELS:
        if key == "array":
            label = f"array ({n_pe} x (PE + overhead))"
            if parts.get("edge_normalizer", {}).get("lut"):
                from .resources import edge_normalizers

                n_edge = edge_normalizers(SATConfig.from_dict(est["config"]))
                label = f"array ({n_pe} PE, {n_edge} edge normalizers)"
        r = parts[key]
        lines.append(f"  {label:<36} {r['lut']:>10,.0f} {r['ff']:>10,.0f} {r['dsp']:>6,.0f} "
                     f"{r['bram36'] + r['bram18'] / 2:>7,.1f}  {100 * est['part_share'][key]:6.1f} %")
    return "\n".join(lines)


class SelftestResult:
    """Outcome of :func:`selftest`: ``checks`` is a list of ``(name, ok, detail)``."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def report(self) -> str:
        return "\n".join(f"  [{'PASS' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}"
                         for name, ok, detail in self.checks)


def selftest(transport, *, seed: int = 0, dma_bytes: int = 1 << 20, timeout_s: float = 10.0) -> SelftestResult:
    """Bring-up checks through the SAT driver: identity, scratch register, DMA loop-back, the interrupt mode (on a
    card: MSI required), one GEMM vs golden.

    Parameters
    ----------
    transport : Transport
        :class:`~sat.sw.driver.XdmaTransport` on a card, or :class:`~sat.sw.driver.ModelTransport`.
    seed : int
        Seed of the test data.
    dma_bytes : int
        Size of the DMA loop-back.
    timeout_s : float
        GEMM timeout.

    Returns
    -------
    SelftestResult
        Stops at the first failing stage (later stages need the earlier ones).
    """
    from sat.sw import numerics
    from sat.sw.driver import SATDevice, SATError
    from sat.sw.regmap import SAT_ID

    res = SelftestResult()
    ident = transport.read32(0x000)
    hint = {0xFFFFFFFF: "all ones: link down or FPGA not programmed", 0: "zero: wrong BAR or bitstream"}
    if not res.add("ID register", ident == SAT_ID, f"0x{ident:08x}" + (f" ({hint[ident]})" if ident in hint else "")):
        return res
    try:
        dev = SATDevice(transport)
    except (SATError, ValueError) as exc:
        res.add("identity / configuration", False, str(exc))
        return res
    cfg = dev.config
    res.add("identity / configuration", True,
            f"{cfg.rows}x{cfg.cols} {cfg.fmt}, N:M {cfg.nm_set}, {dev.memory_bytes / 2**30:g} GiB device memory in "
            f"{dev.memory.channels} channel{'s' if dev.memory.channels > 1 else ''}"
            + ("" if dev.config_verified else " (CONFIG_HASH differs: clock_hz or extra fields)"))
    pattern = 0xA5C3_0F96
    dev.write_reg("SCRATCH", pattern)
    got = dev.read_reg("SCRATCH")
    if not res.add("SCRATCH write/read", got == pattern, f"wrote 0x{pattern:08x}, read 0x{got:08x}"):
        return res
    rng = np.random.default_rng(seed)
    # one loop-back per memory channel (on the card: each DDR4 controller, through its SmartConnect window)
    where, bad, failed = [], 0, []
    for k in range(dev.memory.channels):
        data = rng.integers(0, 256, dma_bytes, dtype=np.uint8)
        addr = dev.alloc(dma_bytes, align=4096, channel=k)
        try:
            transport.dma_write(addr, data)
            back = np.frombuffer(bytes(transport.dma_read(addr, dma_bytes)), dtype=np.uint8)
        finally:
            dev.free(addr)
        differ = int(np.count_nonzero(back != data))
        where.append(f"0x{addr:x}")
        bad += differ
        if differ:
            failed.append(f"C{k} {differ}")
    detail = (f"{dma_bytes} bytes at {where[0]}" if len(where) == 1 else
              f"{dma_bytes} bytes on each of {len(where)} channels (at {', '.join(where)})")
    detail += f", {bad} bytes differ" + (f" ({', '.join(failed)}: check that DIMM slot)" if failed and len(where) > 1
                                         else "")
    if not res.add("DMA loop-back", bad == 0, detail):
        return res
    mode = getattr(transport, "interrupt_mode", None)   # XdmaTransport on a card; None where it cannot tell
    if mode is not None and not res.add(
            "interrupt mode", mode in ("msi", "msix"),
            mode.upper() if mode != "legacy" else
            "legacy INTx: reload the XDMA driver with interrupt_mode=1 (MSI). SAT's interrupt stays high until the "
            "host clears IRQ_STATUS, so with legacy interrupts the driver's handler fires again and again until "
            "then (docs/board.md, 'Bring-up checklist')"):
        return res
    m, k, n = 2 * cfg.rows + 1, 3 * cfg.max_m, cfg.cols + 3
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    try:
        ta, tb = dev.write_tensor(a), dev.write_tensor(b)
        c = dev.read_tensor(dev.gemm(ta, tb, timeout_s=timeout_s))
    except SATError as exc:
        res.add("dense GEMM vs golden model", False, str(exc))
        return res
    golden = np.asarray(numerics.matmul(a, b, cfg.fmt), dtype=np.float32)   # encodes a, b to cfg.fmt itself
    mismatches = int(np.count_nonzero(np.asarray(c, np.float32).view(np.uint32) != golden.view(np.uint32)))
    res.add("dense GEMM vs golden model", mismatches == 0, f"{m}x{k} @ {k}x{n}, {mismatches} results differ")
    return res


@subcommand("board", help="card utilities: 'selftest' (bring-up checks on a programmed VCU1525)")
def _board(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("what", choices=["selftest"])
    p.add_argument("--device", type=path_arg, default="/dev/xdma0", help="XDMA device prefix (default /dev/xdma0)")
    p.add_argument("--model", action="store_true", help="run against the software model instead of a card")
    p.add_argument("--seed", type=nonnegative_int, default=0)

    def run(args: argparse.Namespace) -> int:
        from sat.sw.driver import ModelTransport, SATError, TransportError, XdmaTransport

        where = "the software model" if args.model else args.device
        try:
            transport = ModelTransport(load_config(None)) if args.model else XdmaTransport(args.device)
        except (TransportError, OSError) as exc:
            raise CLIError(f"cannot open {where}: {exc}") from None
        try:
            result = selftest(transport, seed=args.seed)
        except (TransportError, SATError, OSError) as exc:
            # the device opened but an access failed midway (link lost, DMA timeout, card reset, unplugged)
            raise CLIError(f"the selftest on {where} stopped: {type(exc).__name__}: {exc}. The card stopped "
                           f"answering after it opened: check the PCIe link and the XDMA driver's log (dmesg), "
                           f"reprogram the card, then rerun (see docs/board.md, 'Known failure modes')") from None
        finally:
            close = getattr(transport, "close", None)
            if close is not None:
                try:
                    close()
                except (TransportError, OSError):
                    pass        # already failing or finished: closing a dead device must not hide the result
        print(result.report())
        print("selftest " + ("passed" if result.ok else "FAILED (see docs/board.md, 'Known failure modes')"))
        return 0 if result.ok else 1

    return run
