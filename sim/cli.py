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
(``sat.sim.tb_train``; with ``--framework torch`` the torch model); this module registers the backend name
``"sim"`` for it. ``sat sim torch SCRIPT [ARGS...]`` (:func:`run_sim_torch`) runs a PyTorch script whose model is
converted with ``sat.torch.convert(..., backend="sim")`` on the simulated core (``sat.sim.tb_torch``).
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
from sat.sw.cliutil import (
    CLIError,
    array_shape,
    load_array,
    load_matrix,
    nm_pattern,
    nonnegative_int,
    output_dir,
    path_arg,
    positive_int,
    power_of_two,
    probability,
)
from sat.sw.config import MAX_DEPTH, MIN_DEPTH, SATConfig

from .runner import OPT_LEVELS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = ["run_sim_gemm", "run_sim_conv", "conv_problem", "run_sim_train", "run_sim_torch", "sim_backend",
           "MIN_SIM_MEMORY_BYTES", "TRAIN_MEMORY_BYTES"]

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


def _operands(args: argparse.Namespace) -> tuple[int, int, int, Any, Any]:
    """``(m, k, n, A, B)`` of ``sat sim gemm``: the sizes from ``--m/--k/--n`` and the operand files (float32
    matrices, or None for random operands), checked to agree.

    Raises
    ------
    CLIError
        For unreadable or non-numeric operand files, shapes that disagree with each other or with ``--m/--k/--n``,
        or a size given neither way.
    """
    a = load_matrix(args.a, "--a") if args.a is not None else None
    b = load_matrix(args.b, "--b") if args.b is not None else None
    sizes = {"m": args.m, "k": args.k, "n": args.n}
    from_files: dict[str, tuple[int, str]] = {}
    if a is not None:
        from_files["m"], from_files["k"] = (a.shape[0], "--a"), (a.shape[1], "--a")
    if b is not None:
        if "k" in from_files and b.shape[0] != a.shape[1]:
            raise CLIError(f"--b {args.b} is {b.shape[0]} x {b.shape[1]}, but A ({args.a}) is {a.shape[0]} x "
                           f"{a.shape[1]}: B needs {a.shape[1]} rows (C = A . B, A is m x k, B is k x n)")
        from_files["k"], from_files["n"] = (b.shape[0], "--b"), (b.shape[1], "--b")
    for name, (size, flag) in from_files.items():
        given = sizes[name]
        if given is not None and given != size:
            raise CLIError(f"--{name} {given} disagrees with {flag} {getattr(args, flag[2:])}, whose matrix gives "
                           f"{name} = {size}: drop --{name} or pass a file of the intended shape")
        sizes[name] = size
    missing = [f"--{name}" for name, v in sizes.items() if v is None]
    if missing:
        raise CLIError(f"give {' and '.join(missing)} (positive sizes: C = A . B with A m x k, B k x n), or the "
                       f"operands as .npy files with --a / --b")
    return sizes["m"], sizes["k"], sizes["n"], a, b


def _read_report(report: Path, failure: AssertionError | None = None) -> dict:
    """The JSON report a CLI testbench wrote (``sat.sim.tb.error_to_report``).

    Raises
    ------
    CLIError
        When the testbench stopped: its own reason (``"error"`` in the report), else the runner's ``failure``.
    """
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and "error" in data:
        reason = data["error"]
    elif failure is not None or not isinstance(data, dict):
        reason = str(failure) if failure is not None else f"the testbench wrote no report ({report})"
    else:
        return data
    raise CLIError(f"the simulation stopped: {reason} (the simulator's log is above)")


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
    m_, k, n, a, b = _operands(args)
    nm_set = SATConfig().nm_set
    if nm is not None and nm not in nm_set:
        nm_set = (*nm_set, nm)
    config = SATConfig(rows=args.rows, cols=args.cols, fmt=args.fmt, adder_latency=args.latency, nm_set=nm_set,
                       a_depth=args.a_depth, b_depth=args.b_depth)
    tile_plan(config, m_, k, n, *(nm or (0, 0)))
    out_dir = (output_dir(args.out, "--out") if args.out is not None
               else Path(tempfile.mkdtemp(prefix="sat-sim-gemm-")))
    memory_bytes = _memory_for(m_, k, n)
    report_path = out_dir / "report.json"
    report_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sat-sim-gemm-operands-") as tmp:
        # the testbench reads the checked float32 copies, never the user's files a second time
        operands = {}
        for name, x in (("a", a), ("b", b)):
            if x is not None:
                operands[name] = str(Path(tmp) / f"{name}.npy")
                np.save(operands[name], x)
        gemm = {"m": m_, "k": k, "n": n, "nm": list(nm) if nm else None, "seed": args.seed,
                "a": operands.get("a"), "b": operands.get("b"),
                "report": str(report_path.resolve()), "out": str((out_dir / "c.npy").resolve())}
        top = system_top(config, memory_bytes=memory_bytes)
        params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": args.seed, "pause": args.pause,
                  "gemm": gemm}
        failure = None
        try:
            with _stdout_to_stderr(), _axi_memory(args.memory, args.dram):
                run_cocotb(top, "sat.sim.tb_system", params=params, testcase="cli_gemm", run_name="cli_gemm",
                           opt=args.opt)
        except AssertionError as exc:
            failure = exc
    report = _read_report(report_path, failure)
    report["out_dir"] = str(out_dir)
    report["a"] = str(Path(args.a).resolve()) if args.a else None
    report["b"] = str(Path(args.b).resolve()) if args.b else None
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
                       "(sat.sim.cli.run_sim_train; add --framework torch for the torch model), `sat sim torch "
                       "SCRIPT` for a PyTorch script converted with backend='sim', or DeviceBackend(SATDevice("
                       "transport)) over sat.sim.cocotb_transport.attach in your own testbench")


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
        For an array, depths, pause or N:M the core cannot be built or simulated with.
    RuntimeError
        If the simulation stops (the testbench's reason in the message), or the simulator is missing.
    """
    from sat.sw.nm import parse_nm
    from sat.sw.validate import check_float

    from .runner import run_cocotb
    from .tops import system_top

    check_float(pause, "pause probability", low=0.0, high=1.0, high_open=True)
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
    report.unlink(missing_ok=True)          # a report left by an earlier run must not pass for this one's
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": seed, "pause": pause,
              "train": fields, "golden": golden,
              "report": str(report)}
    try:
        with _stdout_to_stderr(), _axi_memory(memory, dram):
            failure = None
            try:
                run_cocotb(top, "sat.sim.tb_train", params=params, testcase="train_run", run_name="train",
                           opt=opt)
            except AssertionError as exc:
                failure = exc
        try:
            return _read_report(report, failure)
        except CLIError as exc:
            raise RuntimeError(str(exc)) from failure
    finally:
        if tmp is not None:
            tmp.cleanup()


def run_sim_torch(script: str | Path, argv: list[str] | tuple[str, ...] = (), *, rows: int = 4, cols: int = 4,
                  fmt: str = "fp16", a_depth: int = 32, b_depth: int = 512, opt: int = 1, memory: str | None = None,
                  pause: float = 0.0, latency: int = 2, seed: int = 0, report: str | Path | None = None,
                  memory_bytes: int = TRAIN_MEMORY_BYTES) -> dict:
    """Run the PyTorch script ``script`` (with arguments ``argv``) on the RTL simulation of the core.

    Builds (once, cached) the core and runs ``sat.sim.tb_torch``: inside the simulator process the backend name
    ``"sim"`` is the driver on the simulated core, so the script's ``sat.torch.convert(model, ..., backend="sim")``
    runs every pass of its converted layers on the RTL. Returns the report (``script``, ``argv``, ``sim``: cycles,
    passes, descriptors, wall time).

    Parameters
    ----------
    script : path
        A Python file, run as ``__main__``.
    argv : list of str
        Its arguments (``sys.argv[1:]``).
    rows, cols, a_depth, b_depth, latency : int
        The simulated build (array, buffer depths, FP32 adder latency).
    fmt : "fp16" or "bf16"
        The build's operand format (the script must convert with the same ``fmt``).
    opt, memory, pause, seed, report, memory_bytes
        As :func:`run_sim_train`.

    Raises
    ------
    FileNotFoundError
        If ``script`` does not exist.
    AssertionError
        If the script raised (the message carries its error).
    """
    from .runner import run_cocotb
    from .tops import system_top

    script = Path(script).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"{script}: no such script")
    config = SATConfig(rows=rows, cols=cols, fmt=fmt, adder_latency=latency, a_depth=a_depth, b_depth=b_depth)
    top = system_top(config, memory_bytes=memory_bytes)
    tmp = None
    if report is None:
        tmp = tempfile.TemporaryDirectory(prefix="sat-sim-torch-")
        report = Path(tmp.name) / "report.json"
    report = Path(report).resolve()
    params = {"config": config.to_dict(), "memory_bytes": memory_bytes, "seed": seed, "pause": pause,
              "script": str(script), "argv": list(argv), "report": str(report)}
    try:
        with _stdout_to_stderr(), _axi_memory(memory):
            run_cocotb(top, "sat.sim.tb_torch", params=params, testcase="torch_script", run_name="torch", opt=opt)
        return json.loads(report.read_text())
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run_sim_torch_cli(args: argparse.Namespace) -> int:
    """Handler of ``sat sim torch``."""
    from sat.sw.cliutil import input_file

    rows, cols = args.array
    script = input_file(args.script, "SCRIPT")
    # errors (a script that raised fails the testbench) take the one error path of sat (docs/errors.md)
    rep = run_sim_torch(script, args.args, rows=rows, cols=cols, fmt=args.fmt, a_depth=args.a_depth,
                        b_depth=args.b_depth, opt=args.opt, memory=args.memory, pause=args.pause, seed=args.seed,
                        memory_bytes=args.memory_mb << 20)
    sim = rep["sim"]
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:
        print(f"{args.script} on a {sim['array'][0]}x{sim['array'][1]} array ({sim['fmt']}): {sim['gemms']} passes "
              f"({sim['descriptors']} descriptors), {sim['cycles']} cycles simulated in {sim['wall_seconds']:.1f} s")
    return 0


_CONV_INPUTS = {"ff": ("x", "w"), "bp": ("dy", "w"), "wu": ("x", "dy")}
_CONV_OUTPUT = {"ff": "y", "bp": "dx", "wu": "dw"}


class _UsageError(ValueError):
    """A ``sat sim conv`` argument that cannot run: the message says what to do."""


def _load_operand(path: str | None, name: str, ndim: int) -> np.ndarray:
    """A float32 array from a ``.npy`` file with ``ndim`` dimensions, finite, real (:func:`load_array`)."""
    import numpy as np

    if path is None:
        raise _UsageError(f"--{name.replace('_', '-')} is needed for this pass: give a .npy file")
    arr = load_array(path, f"--{name}", ndim)
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
    out_dir = output_dir(args.out, "--out")
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
    report_path.unlink(missing_ok=True)
    failure = None
    try:
        with _stdout_to_stderr(), _axi_memory(args.memory, args.dram):
            run_cocotb(top, "sat.sim.tb_conv", params=params, testcase="cli_conv", run_name="cli_conv", opt=args.opt)
    except AssertionError as exc:
        failure = exc
    finally:
        for p in paths.values():
            Path(p).unlink(missing_ok=True)
    report = _read_report(report_path, failure)
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
    g.add_argument("--m", type=positive_int, help="rows of A and C")
    g.add_argument("--k", type=positive_int, help="reduction length")
    g.add_argument("--n", type=positive_int, help="columns of B and C")
    g.add_argument("--nm", type=nm_pattern, default="dense", help="N:M pattern of B along K, e.g. 2:8 (default dense)")
    g.add_argument("--fmt", default="fp16", choices=("fp16", "bf16"), help="operand format")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random operands")
    g.add_argument("--a", type=path_arg, help="A as a .npy file (m x k; default random)")
    g.add_argument("--b", type=path_arg, help="B as a .npy file (k x n, dense values; pruned N:M with --nm)")
    g.add_argument("--out", type=path_arg, help="directory for c.npy and report.json (default a temporary directory)")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument("--rows", type=positive_int, default=2, help="array rows R (default 2)")
    g.add_argument("--cols", type=positive_int, default=2, help="array columns C (default 2)")
    g.add_argument("--latency", type=positive_int, default=2, help="FP32 adder latency L (default 2)")
    g.add_argument("--a-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=8,
                   help="32-element words per A bank of the engine, a power of two (default 8)")
    g.add_argument("--b-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=128,
                   help="words of the B buffer, a power of two (default 128)")
    g.add_argument("--pause", type=probability, default=0.0,
                   help="random AXI pause probability in [0, 1) (default 0)")
    _add_sim_build_args(g, default_opt=0)
    g.set_defaults(_sim_handler=run_sim_gemm)

    c = sub.add_parser("conv", help="run one convolution pass (FF, BP or WU) on the simulated core",
                       description="One pass of a convolution on channels-last tensors (SPEC 1.1), run on the RTL "
                                   "through the driver (convolution descriptors: the core lowers the operand) and "
                                   "compared bit for bit with the golden model. Writes DIR/y.npy, dx.npy or dw.npy "
                                   "(FP32) and DIR/report.json; exit status 0 when bit-identical.")
    c.add_argument("--pass", dest="pass_", required=True, choices=("ff", "bp", "wu"), help="the pass")
    c.add_argument("--x", type=path_arg, help="X (B, H, W, C_in) as .npy (ff, wu)")
    c.add_argument("--dy", type=path_arg, help="dY (B, OH, OW, C_out) as .npy (bp, wu)")
    c.add_argument("--w", type=path_arg, help="W, the dense master weight (C_out, kh, kw, C_in), as .npy (ff, bp)")
    c.add_argument("--input-hw", type=positive_int, nargs=2, metavar=("H", "W"), help="input height and width (bp)")
    c.add_argument("--kernel", type=positive_int, nargs=2, metavar=("KH", "KW"), help="kernel size (wu)")
    c.add_argument("--stride", type=positive_int, default=1, help="stride (default 1)")
    c.add_argument("--padding", type=nonnegative_int, default=0, help="zero padding (default 0)")
    c.add_argument("--nm", type=nm_pattern, default="dense",
                   help="N:M of the pass, e.g. 2:8 (ff: W pruned along K; bp: along C_out, independent mask; "
                        "default dense)")
    c.add_argument("--fmt", default="fp16", choices=("fp16", "bf16"), help="operand format")
    c.add_argument("--out", type=path_arg, required=True, help="output directory")
    c.add_argument("--json", action="store_true", help="print the report (with the RTL counters) as JSON")
    c.add_argument("--seed", type=nonnegative_int, default=0, help="simulator seed")
    c.add_argument("--rows", type=positive_int, default=2, help="array rows R (default 2)")
    c.add_argument("--cols", type=positive_int, default=2, help="array columns C (default 2)")
    c.add_argument("--latency", type=positive_int, default=2, help="FP32 adder latency L (default 2)")
    c.add_argument("--a-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=8,
                   help="32-element words per A bank of the engine, a power of two (default 8)")
    c.add_argument("--b-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=128,
                   help="words of the B buffer, a power of two (default 128)")
    c.add_argument("--pause", type=probability, default=0.0,
                   help="random AXI pause probability in [0, 1) (default 0)")
    _add_sim_build_args(c, default_opt=0)
    c.set_defaults(_sim_handler=run_sim_conv)

    t = sub.add_parser("torch", help="run a PyTorch script (model converted with backend='sim') on the simulated core",
                       description="Runs SCRIPT as __main__ inside the cocotb testbench sat.sim.tb_torch, where the "
                                   "GEMM backend 'sim' is the driver on the simulated core: a model converted with "
                                   "sat.torch.convert(model, ..., backend='sim') runs every FF, BP and WU pass of its "
                                   "converted layers on the RTL (docs/pytorch.md). Exit status 2 with the error if "
                                   "the script raised.")
    t.add_argument("script", type=path_arg, help="the Python script")
    t.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    t.add_argument("--array", type=array_shape, default=(4, 4), metavar="RxC", help="array (default 4x4)")
    t.add_argument("--fmt", default="fp16", choices=("fp16", "bf16"), help="operand format of the build")
    t.add_argument("--a-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=32,
                   help="32-element words per A bank of the GEMM unit, a power of two (default 32)")
    t.add_argument("--b-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=512,
                   help="words of the B buffer, a power of two (default 512)")
    t.add_argument("--memory-mb", type=positive_int, default=TRAIN_MEMORY_BYTES >> 20,
                   help=f"device memory in MiB (default {TRAIN_MEMORY_BYTES >> 20})")
    t.add_argument("--pause", type=probability, default=0.0, help="random AXI pause probability in [0, 1) (default 0)")
    t.add_argument("--seed", type=nonnegative_int, default=0, help="simulator seed")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_sim_build_args(t, default_opt=1)
    t.set_defaults(_sim_handler=_run_sim_torch_cli)
    return lambda args: args._sim_handler(args)


register_backend("sim", "sat.sim.cli:sim_backend")

