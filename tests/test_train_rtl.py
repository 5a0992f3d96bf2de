"""BDWP training on the RTL simulation of the core (``sim/tb_train.py``, ``sat train --backend sim``): the unchanged
driver runs every GEMM of ``sat.sw.train.train`` on ``sat_core``; losses, weights and accuracies equal
``GoldenBackend`` splitting K at the same chunks, bit for bit.

The default-suite test reuses the 2x2 build of ``tests/test_system_rtl.py`` (same configuration, buffers and
memory: no extra compile); the slow tests train the digits MLP and a narrower CNN for several iterations on a
4x4 array (``-O1`` model) and print wall time and simulated cycles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sat.sim.cli import run_sim_train
from sat.sw.train import TrainConfig

pytestmark = pytest.mark.rtl

#: the build of tests/test_system_rtl.py (2x2, L = 2, fp16, default nm_set): a_depth 8, b_depth 128, 1 MiB
SHARED = {"rows": 2, "cols": 2, "a_depth": 8, "b_depth": 128, "memory_bytes": 1 << 20, "opt": 0}


def _check(res: dict, cfg: TrainConfig, split: bool) -> None:
    assert res["bit_identical"], f"RTL training differs from the golden model in {res['differences']}"
    assert res["step_losses"] == res["golden"]["step_losses"] and len(res["step_losses"]) == cfg.max_steps
    assert res["weights_sha256"] == res["golden"]["weights_sha256"]
    sim = res["sim"]
    assert sim["cycles"] >= sim["core_cycles"] > 0 and sim["gemms"] > 0
    assert (sim["descriptors"] > sim["gemms"]) == split, sim
    # narrow results (SPEC section 2): every FF and BP pass run as one descriptor has the core round its results
    assert 0 < sim["narrow_descriptors"] < sim["descriptors"], sim
    print(f"{cfg.model} width {cfg.width}: {res['steps']} steps, losses {res['step_losses']}, {sim['gemms']} GEMMs "
          f"({sim['descriptors']} descriptors), {sim['cycles']} cycles in {sim['wall_seconds']:.1f} s")


def test_train_cnn_one_step_rtl(sim_seed: int) -> None:
    """One BDWP step of a 2-channel digits CNN (batch 8) and inference on 8 test images on the RTL: conv1's WU
    reduces over 8*64 = 512 pixels > b_depth 128, so it runs as 4 K chunks; bit for bit equal to the golden."""
    cfg = TrainConfig(model="cnn", width=2, batch_size=8, max_steps=1, train_subset=8, test_subset=8, seed=3)
    _check(run_sim_train(cfg, golden=True, seed=sim_seed, **SHARED), cfg, split=True)


@pytest.mark.slow  # the console path of the RTL training the tests above run through the API
def test_sat_train_backend_sim_cli(tmp_path) -> None:
    """``sat train --backend sim --check-golden``: a tiny MLP, one step, through the console entry point."""
    path = tmp_path / "r.json"
    cmd = ["train", "--backend", "sim", "--width", "8", "--batch-size", "8", "--max-steps", "1", "--train-subset",
           "8", "--test-subset", "8", "--sim-array", "2x2", "--sim-a-depth", "32", "--sim-b-depth", "128",
           "--sim-opt", "0", "--sim-memory-mb", "1", "--check-golden", "--json", str(path)]
    r = subprocess.run([sys.executable, "-c", "import sys; from sat.sw.cli import main; sys.exit(main())", *cmd],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bit-identical to the golden model: yes" in r.stdout and "RTL simulation: 2x2 array" in r.stdout, r.stdout
    res = json.loads(path.read_text())
    assert res["backend"] == "sim" and res["steps"] == 1 and res["bit_identical"]


@pytest.mark.slow
@pytest.mark.parametrize("model,width,batch,split", [("mlp", None, 32, False), ("cnn", 4, 16, True)])
def test_train_digits_rtl_several_steps(model: str, width: int | None, batch: int, split: bool,
                                        sim_seed: int) -> None:
    """Issue 7: the digits MLP (full width) and a 4-channel CNN train for 3 BDWP steps on a 4x4 array (a_depth
    32, b_depth 512), with inference on 64 test images; losses, weights and accuracies bit for bit equal to the
    golden model (the CNN's WU reductions over 16*64 = 1024 pixels split into K chunks)."""
    cfg = TrainConfig(model=model, width=width, batch_size=batch, max_steps=3, train_subset=3 * batch,
                      test_subset=64, seed=0)
    t0 = time.perf_counter()
    res = run_sim_train(cfg, golden=True, seed=sim_seed)      # sat train --backend sim's defaults: 4x4, -O1
    _check(res, cfg, split)
    print(f"wall time with build: {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_train_resnet18_one_step_rtl(sim_seed: int) -> None:
    """Issue 14 on the RTL: one BDWP step of ResNet-18 at width 2 (channels 2, 4, 8, 16: batch norm, residual adds,
    shortcut convolutions, global average pooling on the host; every FF/BP/WU pass through the driver's conv entry
    point on the 2x2 build of the default suite) and inference on 8 test images, bit for bit equal to the golden
    model splitting K alike, with the timing object. About 4 minutes here (180 s of simulation)."""
    cfg = TrainConfig(model="resnet18", width=2, batch_size=8, max_steps=1, train_subset=8, test_subset=8, seed=0)
    res = run_sim_train(cfg, golden=True, seed=sim_seed, **SHARED)
    _check(res, cfg, split=True)
    assert res["golden_match"] and set(res["timing"]) >= {"host_seconds", "pcie_bytes", "device_cycles"}
    assert res["pass_modes"]["layer4.1.conv2"] == {"ff": "sparse", "bp": "sparse", "wu": "dense"}
