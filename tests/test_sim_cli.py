"""``sat sim gemm`` (``sim/cli.py``): one GEMM on the simulated core through the driver, report on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sat.sw.cli import build_parser, main
from sat.sw.perfmodel import steps_per_output


def _sat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from sat.sw.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, timeout=900)


def test_sim_gemm_registered() -> None:
    args = build_parser().parse_args(["sim", "gemm", "--m", "3", "--k", "8", "--n", "2", "--nm", "2:4"])
    assert args.command == "sim" and args.sim_command == "gemm" and args.nm == "2:4"


def test_sim_gemm_k_too_long(capsys) -> None:
    """A reduction beyond the buffers is refused before anything is built, naming the limit."""
    assert main(["sim", "gemm", "--m", "2", "--k", "300", "--n", "2"]) == 2
    assert "sat: error:" in (err := capsys.readouterr().err) and "chunks of at most 128" in err


@pytest.mark.rtl
def test_sim_gemm_json(tmp_path) -> None:
    """13 x 40 x 9 at 2:8 (two row tiles): bit-identical, MACs = useful MACs, a plausible utilization."""
    r = _sat("sim", "gemm", "--m", "13", "--k", "40", "--n", "9", "--nm", "2:8", "--seed", "5", "--json",
             "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["bit_identical"] and report["mismatches"] == 0
    assert report["macs"] == 13 * 9 * steps_per_output(40, 2, 8)
    assert report["compute_cycles"] == report["expected"]["COMPUTE_CYCLES"]
    assert 0 < report["utilization"] <= 1 and report["cycles"] > report["compute_cycles"]
    assert np.load(tmp_path / "c.npy").shape == (13, 9)
    # the device memory is a DDR4 channel by default, and the cycle model with it predicts the unit's time
    # (tolerance of tests/test_system_rtl.py: 2 %, or one refresh window)
    assert report["memory"] == "ddr4"
    assert abs(report["unit_model_cycles"] - report["unit_cycles"]) <= max(95, 0.02 * report["unit_cycles"])


@pytest.mark.rtl
def test_sim_gemm_operand_files(tmp_path) -> None:
    """Operands from .npy files, dense, human-readable output."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "a.npy", rng.standard_normal((5, 12)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.standard_normal((12, 3)).astype(np.float32))
    r = _sat("sim", "gemm", "--a", str(tmp_path / "a.npy"), "--b", str(tmp_path / "b.npy"), "--out",
             str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bit-identical    yes" in r.stdout and "GEMM 5 x 12 x 3 (dense" in r.stdout, r.stdout


def test_sim_build_options() -> None:
    """-O levels map to separate cached builds; bad levels and build tags are refused with a message."""
    from sat.sim.runner import OPT_LEVELS, run_cocotb, verilator_build_args

    assert OPT_LEVELS == (0, 1, 2)
    assert verilator_build_args(0)[-2:] == ["-CFLAGS", "-O0"] and verilator_build_args(2)[-1] == "-O2"
    assert verilator_build_args(0)[:-1] == verilator_build_args(2)[:-1]
    with pytest.raises(ValueError, match="optimisation level"):
        verilator_build_args(3)
    with pytest.raises(ValueError, match="optimisation level"):
        run_cocotb(None, "x", opt=5, sim="verilator")      # checked before anything is built
    with pytest.raises(SystemExit):
        main(["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--opt", "5"])
    args = build_parser().parse_args(["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--memory", "axiram"])
    assert args.memory == "axiram" and args.opt == 0 and args.dram is None
    args = build_parser().parse_args(["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--dram", "ideal"])
    assert args.dram == "ideal"
    with pytest.raises(SystemExit):
        main(["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--dram", "sram"])


@pytest.mark.rtl
def test_sim_gemm_axiram_with_pauses(tmp_path) -> None:
    """cocotbext-axi's AxiRam (instead of the default lean memory) with random pauses: still bit-identical."""
    r = _sat("sim", "gemm", "--m", "9", "--k", "24", "--n", "5", "--nm", "2:4", "--seed", "2", "--json",
             "--memory", "axiram", "--pause", "0.3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["bit_identical"] and report["macs"] == 9 * 5 * steps_per_output(24, 2, 4)
    assert report["compute_cycles"] == report["expected"]["COMPUTE_CYCLES"]


@pytest.mark.rtl
def test_sim_conv_bp_sparse(tmp_path) -> None:
    """sat sim conv: a strided, padded BP pass (2:8, independent mask) on the RTL, bit-identical to the golden
    model; dx.npy has the input's shape; the report names the rounding of inputs fp16 cannot hold."""
    rng = np.random.default_rng(4)
    np.save(tmp_path / "dy.npy", rng.standard_normal((1, 3, 3, 8)).astype(np.float32))
    np.save(tmp_path / "w.npy", rng.standard_normal((8, 3, 3, 5)).astype(np.float32))
    r = _sat("sim", "conv", "--pass", "bp", "--dy", str(tmp_path / "dy.npy"), "--w", str(tmp_path / "w.npy"),
             "--input-hw", "6", "5", "--stride", "2", "--padding", "1", "--nm", "2:8", "--out", str(tmp_path / "o"),
             "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["bit_identical"] and report["nm"] == "2:8" and report["counters"]["macs"] > 0
    assert set(report["rounded_inputs"]) == {"dy", "w"} and "rounded to nearest even" in r.stderr
    assert np.load(tmp_path / "o" / "dx.npy").shape == (1, 6, 5, 5)


def test_sim_conv_refuses_bad_input(tmp_path) -> None:
    """Inputs that make no convolution are refused before anything is built, with what to fix."""
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 4, 4, 3)).astype(np.float32))
    np.save(tmp_path / "w.npy", rng.standard_normal((8, 3, 3, 2)).astype(np.float32))
    np.save(tmp_path / "dy.npy", rng.standard_normal((1, 2, 2, 8)).astype(np.float32))
    out = str(tmp_path / "o")
    cases = [
        (["--pass", "ff", "--x", "x.npy", "--w", "w.npy"], "C_in"),
        (["--pass", "wu", "--x", "x.npy", "--dy", "dy.npy", "--kernel", "3", "3", "--nm", "2:8"], "dense"),
        (["--pass", "wu", "--x", "x.npy", "--dy", "dy.npy", "--kernel", "3", "3", "--stride", "2"], "does not fit"),
        (["--pass", "bp", "--dy", "dy.npy", "--w", "w.npy"], "--input-hw"),
        (["--pass", "ff", "--x", "missing.npy", "--w", "w.npy"], "no such file"),
    ]
    for args, message in cases:
        args = [str(tmp_path / a) if a.endswith(".npy") else a for a in args]
        r = _sat("sim", "conv", *args, "--out", out)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-500:])
