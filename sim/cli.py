"""``sat sim``: run SAT in RTL simulation (cocotb + Verilator) through the host driver.

``sat sim gemm --m 13 --k 40 --n 9 --nm 2:8 --fmt fp16 --seed 5 [--a A.npy --b B.npy] [--out DIR] [--json]
[--rows R --cols C]`` builds (once, cached under ``build/sim``) the core (``SATCore`` with its GEMM unit) for the
requested array, runs ``C = A . B`` (``A`` is ``m x k``, ``B`` is ``k x n``, N:M-sparse along ``k`` with
``--nm``) through the unchanged ``SATDevice`` over the cocotb transport
(``sat.sim.tb_system.cli_gemm``) and prints the core's cycle counters, the utilization and whether the result is
bit-identical to the golden model (``sat.sw.numerics``). Exit status 0 when it is, 1 otherwise. ``--opt 1|2``
compiles the C++ model optimised (a separate cached build: slower to build, faster to run), ``--memory axiram``
uses cocotbext-axi's AXI slave (``AxiSlave`` over :class:`sat.sim.cocotb_transport.FaultyMemory`) instead of the lean
:class:`sat.sim.axi_memory.AxiMemory`; ``--dram ideal`` makes the lean memory answer at once instead of as a
DDR4-2400 channel (``docs/dram.md``).

``sat train --backend sim`` (:func:`run_sim_train`) trains through the driver on the simulated core
(``sat.sim.tb_train``); this module registers the backend name ``"sim"`` for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sat.sw.backend import register_backend
from sat.sw.cli import subcommand
from sat.sw.config import SATConfig

from .runner import OPT_LEVELS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = ["run_sim_gemm", "run_sim_conv", "conv_problem", "run_sim_train", "sim_backend", "MIN_SIM_MEMORY_BYTES",
           "TRAIN_MEMORY_BYTES"]

#: Smallest device memory of a simulated core (more when the operands need it).
MIN_SIM_MEMORY_BYTES = 1 << 20
#: Device memory of the core ``sat train --backend sim`` simulates.
TRAIN_MEMORY_BYTES = 32 << 20

@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The simulator's log goes to stderr, so that stdout holds only the report (parseable with --json)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _memory_for(m: int, k: int, n: int) -> int:
    need = 4 * (2 * m * k + 2 * k * n + 4 * m * n) + (64 << 10)
    size = MIN_SIM_MEMORY_BYTES
    while size < need:
        size *= 2
    return size


def run_sim_gemm(args: argparse.Namespace) -> int:
    """Handler of ``sat sim gemm`` (see the module docstring)."""
    import numpy as np

    from sat.sw.nm import parse_nm
    from sat.sw.tiling import tile_plan

    from .runner import run_cocotb
    from .tops import system_top

    nm = parse_nm(args.nm)
    if nm is not None and nm[0] == nm[1]:
        nm = None
    m_, k, n = args.m, args.k, args.n
    if args.a:
        a = np.load(args.a)
        if a.ndim != 2:
            raise SystemExit(f"sat sim gemm: {args.a} must hold a 2-D matrix, not shape {a.shape}")
        m_, k = a.shape
    if args.b:
        b = np.load(args.b)
        if b.ndim != 2 or b.shape[0] != k:
            raise SystemExit(f"sat sim gemm: {args.b} must be {k} x N to multiply A ({m_} x {k}), "
                             f"not shape {b.shape}")
        n = b.shape[1]
    for name, v in (("m", m_), ("k", k), ("n", n)):
        if v is None or v < 1:
            raise SystemExit(f"sat sim gemm: give --{name} (a positive size) or an operand file")
    nm_set = SATConfig().nm_set
    if nm is not None and nm not in nm_set:
        nm_set = (*nm_set, nm)
    try:
        config = SATConfig(rows=args.rows, cols=args.cols, fmt=args.fmt, adder_latency=args.latency,
                           nm_set=nm_set, a_depth=args.a_depth, b_depth=args.b_depth)
        tile_plan(config, m_, k, n, *(nm or (0, 0)))
    except ValueError as e:
        raise SystemExit(f"sat sim gemm: {e}") from None
    memory_bytes = _memory_for(m_, k, n)
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sat-sim-gemm-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    gemm = {"m": m_, "k": k, "n": n, "nm": list(nm) if nm else None, "seed": args.seed,
            "a": str(Path(args.a).resolve()) if args.a else None, "b": str(Path(args.b).resolve()) if args.b else None,
            "report": str(report_path.resolve()), "out": str((out_dir / "c.npy").resolve())}
    top = system_top(config, memory_bytes=memory_bytes)
    params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": args.seed, "pause": args.pause,
              "gemm": gemm}
    with _stdout_to_stderr(), _axi_memory(args.memory, args.dram):
        run_cocotb(top, "sat.sim.tb_system", params=params, testcase="cli_gemm", run_name="cli_gemm",
                   opt=args.opt)
    report = json.loads(report_path.read_text())
    report["out_dir"] = str(out_dir)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"GEMM {m_} x {k} x {n} ({report['nm']}, {report['fmt']}) on a {config.rows}x{config.cols} array "
              f"(L={config.adder_latency}), {report['expected']['tiles']} tile(s)")
        print(f"  cycles           {report['cycles']}  (compute {report['compute_cycles']}, "
              f"stall {report['stall_cycles']}; engine alone, untiled: {report['engine_model_cycles']})")
        print(f"  unit             {report['unit_cycles']} cycles (COMPUTE + STALL), cycle model "
              f"{report['unit_model_cycles']}, {report['memory']} memory")
        print(f"  MACs             {report['macs']}")
        print(f"  utilization      {100 * report['utilization']:.1f} %")
        print(f"  bit-identical    {'yes' if report['bit_identical'] else 'NO'} "
              f"({report['mismatches']} of {m_ * n} results differ from sat.sw.numerics)")
        print(f"  result           {out_dir / 'c.npy'}  report {report_path}")
    return 0 if report["bit_identical"] else 1


@contextlib.contextmanager
def _axi_memory(memory: str | None, dram: str | None = None) -> Iterator[None]:
    """``SAT_AXI_MEMORY`` and ``SAT_DRAM`` for the simulator process (read by
    :func:`sat.sim.cocotb_transport.attach`)."""
    from sat.sw.dram import DRAM_ENV

    saved = {name: os.environ.get(name) for name in ("SAT_AXI_MEMORY", DRAM_ENV)}
    for name, value in (("SAT_AXI_MEMORY", memory), (DRAM_ENV, dram)):
        if value:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _add_sim_build_args(p: argparse.ArgumentParser, default_opt: int, prefix: str = "") -> None:
    from .cocotb_transport import MEMORIES

    p.add_argument(f"--{prefix}opt", type=int, choices=OPT_LEVELS, default=default_opt,
                   help=f"C++ optimisation of the Verilator model (-O0 compiles fastest, -O1/-O2 run faster; "
                        f"default {default_opt}; each level is built once and cached)")
    p.add_argument(f"--{prefix}memory", choices=MEMORIES, default=None,
                   help="AXI slave memory model: lean (sat.sim.axi_memory, default) or axiram (cocotbext-axi)")
    p.add_argument(f"--{prefix}dram", choices=("ddr4", "ideal"), default=None,
                   help="timing of the lean memory: one DDR4-2400 channel (default, docs/dram.md) or ideal (every "
                        "beat at once); axiram is always ideal")


def sim_backend() -> Any:
    """Factory of the ``"sim"`` GEMM backend name: the RTL simulation runs inside a cocotb testbench, so it is
    not a backend object one can open in this process.

    Raises
    ------
    RuntimeError
        Always, naming what to use instead.
    """
    raise RuntimeError("the 'sim' backend runs training inside a cocotb testbench: use `sat train --backend sim` "
                       "(sat.sim.cli.run_sim_train), or DeviceBackend(SATDevice(transport)) over "
                       "sat.sim.cocotb_transport.attach in your own testbench")


def run_sim_train(cfg: Any, *, rows: int = 4, cols: int = 4, a_depth: int = 32, b_depth: int = 512,
                  opt: int = 1, memory: str | None = None, dram: str | None = None, pause: float = 0.0,
                  golden: bool = False,
                  latency: int = 2, seed: int = 0, report: str | Path | None = None,
                  memory_bytes: int = TRAIN_MEMORY_BYTES) -> dict:
    """Train ``cfg`` (a :class:`~sat.sw.train.TrainConfig`) on the RTL simulation of the core through the driver.

    Builds (once, cached) the core for a ``rows x cols`` array with these buffer depths and memory, runs
    ``sat.sim.tb_train`` (see its docstring) and returns its report: ``train``'s result dict plus ``sim`` (cycles,
    wall time, GEMM and descriptor counts) and, with ``golden``, the bit-for-bit comparison with
    :class:`~sat.sw.bdwp.GoldenBackend` splitting K identically.

    Parameters
    ----------
    cfg : TrainConfig
    rows, cols : int
        Array size.
    a_depth, b_depth : int
        Buffer depths of the GEMM unit (longer reductions are split into K chunks by the driver's backend).
    opt : 0, 1 or 2
        C++ optimisation of the model (:data:`sat.sim.runner.OPT_LEVELS`).
    memory : "lean" or "axiram", optional
        AXI memory model (default lean).
    dram : "ddr4" or "ideal", optional
        Timing of the lean memory (default ``$SAT_DRAM`` or ``ddr4``, :mod:`sat.sw.dram`).
    pause : float
        Random AXI pause probability.
    golden : bool
        Also train on the golden model and compare bit for bit.
    latency : int
        FP32 adder latency of the array.
    seed : int
        Seed of the simulator and of the pause patterns.
    report : path, optional
        Where the testbench writes the JSON report (default a temporary file).
    memory_bytes : int
        Device memory of the simulated core (a build parameter; default :data:`TRAIN_MEMORY_BYTES`).

    Raises
    ------
    ValueError
        For an array, depths or N:M the core cannot be built with.
    """
    from sat.sw.nm import parse_nm

    from .runner import run_cocotb
    from .tops import system_top

    nm = parse_nm(cfg.nm)
    nm_set = SATConfig().nm_set
    if nm is not None and nm[0] != nm[1] and nm not in nm_set:
        nm_set = (*nm_set, nm)
    config = SATConfig(rows=rows, cols=cols, fmt=cfg.fmt, adder_latency=latency, nm_set=nm_set, a_depth=a_depth,
                       b_depth=b_depth)
    top = system_top(config, memory_bytes=memory_bytes)
    tmp = None
    if report is None:
        tmp = tempfile.TemporaryDirectory(prefix="sat-sim-train-")
        report = Path(tmp.name) / "report.json"
    report = Path(report).resolve()
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": seed, "pause": pause,
              "train": fields, "golden": golden,
              "report": str(report)}
    try:
        with _stdout_to_stderr(), _axi_memory(memory, dram):
            run_cocotb(top, "sat.sim.tb_train", params=params, testcase="train_run", run_name="train",
                       opt=opt)
        return json.loads(report.read_text())
    finally:
        if tmp is not None:
            tmp.cleanup()


_CONV_INPUTS = {"ff": ("x", "w"), "bp": ("dy", "w"), "wu": ("x", "dy")}
_CONV_OUTPUT = {"ff": "y", "bp": "dx", "wu": "dw"}


class _UsageError(ValueError):
    """A ``sat sim conv`` argument that cannot run: the message says what to do."""


def _load_operand(path: str | None, name: str, ndim: int) -> np.ndarray:
    """A float32 array from a ``.npy`` file with ``ndim`` dimensions, finite, real."""
    import numpy as np

    if not path:
        raise _UsageError(f"--{name.replace('_', '-')} is needed for this pass: give a .npy file")
    p = Path(path)
    if not p.is_file():
        raise _UsageError(f"--{name} {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise _UsageError(f"--{name} {path}: not a NumPy .npy array ({e})") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise _UsageError(f"--{name} {path}: a real numeric array is needed, not dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise _UsageError(f"--{name} {path}: a {ndim}-D array is needed, not shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise _UsageError(f"--{name} {path}: holds NaN or Inf")
    return arr


def conv_problem(args: argparse.Namespace) -> tuple[Any, dict]:
    """The convolution and its operands of a ``sat sim conv`` command line: ``(ConvShape, {name: array})``.

    Raises
    ------
    ValueError
        For missing or inconsistent operands, with what to fix.
    """
    from sat.sw.conv import ConvShape

    pass_ = args.pass_
    arrays = {name: _load_operand(getattr(args, name), name, 4) for name in _CONV_INPUTS[pass_]}
    s, p = args.stride, args.padding
    if s < 1 or p < 0:
        raise _UsageError(f"--stride must be >= 1 and --padding >= 0, not {s} and {p}")
    try:
        if pass_ == "ff":
            x, w = arrays["x"], arrays["w"]
            if w.shape[3] != x.shape[3]:
                raise _UsageError(f"W {w.shape} is (C_out, kh, kw, C_in) with C_in = {w.shape[3]}, but X {x.shape} "
                                  f"has {x.shape[3]} channels")
            shape = ConvShape(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[1], w.shape[2], s, p)
        elif pass_ == "bp":
            dy, w = arrays["dy"], arrays["w"]
            if not args.input_hw:
                raise _UsageError("--input-hw H W is needed for bp: the input's height and width")
            h, wd = args.input_hw
            shape = ConvShape(dy.shape[0], h, wd, w.shape[3], w.shape[0], w.shape[1], w.shape[2], s, p)
            if dy.shape != shape.y_shape:
                raise _UsageError(f"dY {dy.shape} does not fit: a {h}x{wd} input with W {w.shape}, stride {s} and "
                                  f"padding {p} gives dY {shape.y_shape}")
        else:
            x, dy = arrays["x"], arrays["dy"]
            if not args.kernel:
                raise _UsageError("--kernel KH KW is needed for wu")
            kh, kw = args.kernel
            shape = ConvShape(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dy.shape[3], kh, kw, s, p)
            if dy.shape != shape.y_shape:
                raise _UsageError(f"dY {dy.shape} does not fit: X {x.shape} with a {kh}x{kw} kernel, stride {s} and "
                                  f"padding {p} gives dY {shape.y_shape}")
    except _UsageError:
        raise
    except ValueError as e:
        raise _UsageError(f"these operands do not make a convolution: {e}") from None
    return shape, arrays


def run_sim_conv(args: argparse.Namespace) -> int:
    """Handler of ``sat sim conv`` (see ``docs/conv.md``)."""
    import numpy as np

    from sat.sw import numerics
    from sat.sw.nm import parse_nm

    from .runner import run_cocotb
    from .tops import system_top

    try:
        nm = parse_nm(args.nm)
        if nm is not None and nm[0] == nm[1]:
            nm = None
        if nm is not None and args.pass_ == "wu":
            raise _UsageError("wu is dense in BDWP: leave out --nm")
        shape, arrays = conv_problem(args)
        nm_set = SATConfig().nm_set
        if nm is not None and nm not in nm_set:
            nm_set = (*nm_set, nm)
        config = SATConfig(rows=args.rows, cols=args.cols, fmt=args.fmt, adder_latency=args.latency,
                           nm_set=nm_set, a_depth=args.a_depth, b_depth=args.b_depth)
    except ValueError as e:
        raise SystemExit(f"sat sim conv: error: {e}") from None
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"sat sim conv: error: --out {out_dir} is a file: give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    rounded = []
    paths = {}
    for name, arr in arrays.items():
        q = numerics.quantize(arr, config.fmt)
        if name != "w" and not np.array_equal(q, arr):
            rounded.append(name)
        paths[name] = str((out_dir / f"_{name}_input.npy").resolve())
        np.save(paths[name], q if name != "w" else arr)
    if "w" in arrays and not np.array_equal(numerics.quantize(arrays["w"], config.fmt), arrays["w"]):
        rounded.append("w")
    for name in rounded:
        print(f"sat sim conv: note: {name} holds values {config.fmt} cannot represent: rounded to nearest even",
              file=sys.stderr)
    need = 4 * (shape.in_pixels * shape.c_in + shape.pixels * shape.c_out + 2 * shape.c_out * shape.k)
    memory_bytes = _memory_for(1, 1, 1)
    while memory_bytes < 3 * need + (256 << 10):
        memory_bytes *= 2
    report_path = out_dir / "report.json"
    output = out_dir / f"{_CONV_OUTPUT[args.pass_]}.npy"
    conv = {"pass": args.pass_, "shape": [shape.batch, shape.height, shape.width, shape.c_in, shape.c_out, shape.kh,
                                          shape.kw, shape.stride, shape.padding],
            "nm": list(nm) if nm else None, "arrays": {k: paths.get(k) for k in ("x", "dy", "w")},
            "out": str(output.resolve()), "report": str(report_path.resolve())}
    top = system_top(config, memory_bytes=memory_bytes)
    params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": args.seed, "pause": args.pause,
              "conv": conv}
    try:
        with _stdout_to_stderr(), _axi_memory(args.memory):
            run_cocotb(top, "sat.sim.tb_conv", params=params, testcase="cli_conv", run_name="cli_conv", opt=args.opt)
    finally:
        for p in paths.values():
            Path(p).unlink(missing_ok=True)
    report = json.loads(report_path.read_text())
    report["rounded_inputs"] = rounded
    report["output"] = str(output)
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"conv {args.pass_} {shape} ({report['nm']}, {config.fmt}) on a {config.rows}x{config.cols} array: "
              f"{report['descriptors']} descriptor(s), {report['cycles']} cycles")
        print(f"  bit-identical    {'yes' if report['bit_identical'] else 'NO'} ({report['mismatches']} differ)")
        print(f"  result           {output}  report {report_path}")
    return 0 if report["bit_identical"] else 1


@subcommand("sim", help="run SAT in RTL simulation (cocotb + Verilator) through the host driver")
def _sim(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = p.add_subparsers(dest="sim_command", metavar="SIMCOMMAND", required=True)
    g = sub.add_parser("gemm", help="run one GEMM on the simulated core and compare it with the golden model",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    g.add_argument("--m", type=int, help="rows of A and C")
    g.add_argument("--k", type=int, help="reduction length")
    g.add_argument("--n", type=int, help="columns of B and C")
    g.add_argument("--nm", default="dense", help="N:M pattern of B along K, e.g. 2:8 (default dense)")
    g.add_argument("--fmt", default="fp16", choices=("fp16", "bf16"), help="operand format")
    g.add_argument("--seed", type=int, default=0, help="seed of the random operands")
    g.add_argument("--a", help="A as a .npy file (m x k; default random)")
    g.add_argument("--b", help="B as a .npy file (k x n, dense values; pruned N:M with --nm)")
    g.add_argument("--out", help="directory for c.npy and report.json (default a temporary directory)")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument("--rows", type=int, default=2, help="array rows R (default 2)")
    g.add_argument("--cols", type=int, default=2, help="array columns C (default 2)")
    g.add_argument("--latency", type=int, default=2, help="FP32 adder latency L (default 2)")
    g.add_argument("--a-depth", type=int, default=8, help="32-element words per A bank of the engine (default 8)")
    g.add_argument("--b-depth", type=int, default=128, help="words of the B buffer (default 128)")
    g.add_argument("--pause", type=float, default=0.0, help="random AXI pause probability (default 0)")
    _add_sim_build_args(g, default_opt=0)
    g.set_defaults(_sim_handler=run_sim_gemm)

    c = sub.add_parser("conv", help="run one convolution pass (FF, BP or WU) on the simulated core",
                       description="One pass of a convolution on channels-last tensors (SPEC 1.1), run on the RTL "
                                   "through the driver (convolution descriptors: the core lowers the operand) and "
                                   "compared bit for bit with the golden model. Writes DIR/y.npy, dx.npy or dw.npy "
                                   "(FP32) and DIR/report.json; exit status 0 when bit-identical.")
    c.add_argument("--pass", dest="pass_", required=True, choices=("ff", "bp", "wu"), help="the pass")
    c.add_argument("--x", help="X (B, H, W, C_in) as .npy (ff, wu)")
    c.add_argument("--dy", help="dY (B, OH, OW, C_out) as .npy (bp, wu)")
    c.add_argument("--w", help="W, the dense master weight (C_out, kh, kw, C_in), as .npy (ff, bp)")
    c.add_argument("--input-hw", type=int, nargs=2, metavar=("H", "W"), help="input height and width (bp)")
    c.add_argument("--kernel", type=int, nargs=2, metavar=("KH", "KW"), help="kernel size (wu)")
    c.add_argument("--stride", type=int, default=1, help="stride (default 1)")
    c.add_argument("--padding", type=int, default=0, help="zero padding (default 0)")
    c.add_argument("--nm", default="dense", help="N:M of the pass, e.g. 2:8 (ff: W pruned along K; bp: along "
                                                 "C_out, independent mask; default dense)")
    c.add_argument("--fmt", default="fp16", choices=("fp16", "bf16"), help="operand format")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--json", action="store_true", help="print the report (with the RTL counters) as JSON")
    c.add_argument("--seed", type=int, default=0, help="simulator seed")
    c.add_argument("--rows", type=int, default=2, help="array rows R (default 2)")
    c.add_argument("--cols", type=int, default=2, help="array columns C (default 2)")
    c.add_argument("--latency", type=int, default=2, help="FP32 adder latency L (default 2)")
    c.add_argument("--a-depth", type=int, default=8, help="32-element words per A bank of the engine (default 8)")
    c.add_argument("--b-depth", type=int, default=128, help="words of the B buffer (default 128)")
    c.add_argument("--pause", type=float, default=0.0, help="random AXI pause probability (default 0)")
    _add_sim_build_args(c, default_opt=0)
    c.set_defaults(_sim_handler=run_sim_conv)
    return lambda args: args._sim_handler(args)


register_backend("sim", "sat.sim.cli:sim_backend")

