"""The PyTorch front end on the RTL simulation of the core: torch models converted by ``sat.torch.convert`` train
through the unchanged driver, bit for bit equal to the golden model splitting K at the same chunks.

Two routes reach the RTL: ``sat train --framework torch --backend sim`` (``sim/tb_train.py`` trains the torch
model) and ``sat sim torch SCRIPT`` (``sim/tb_torch.py`` runs a user's script with the backend ``"sim"``). Every
test reuses the 2x2 build of ``tests/test_system_rtl.py`` (no extra compile); the command-line error path and
torchvision's ResNet-18 run with ``-m slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

from sat.sim.cli import run_sim_torch, run_sim_train  # noqa: E402
from sat.sw.train import TrainConfig  # noqa: E402

pytestmark = pytest.mark.rtl

#: the build of tests/test_system_rtl.py (2x2, L = 2, fp16, default nm_set): a_depth 32, b_depth 128, 1 MiB
SHARED = {"rows": 2, "cols": 2, "a_depth": 8, "b_depth": 128, "memory_bytes": 1 << 20, "opt": 0}


def test_torch_cnn_trains_on_rtl_bit_exact(sim_seed: int) -> None:
    """One BDWP step of the torch digits CNN (width 2, batch 8) and inference on 4 test images, every pass of its
    converted layers on the RTL (conv1's WU over 512 pixels splits into K chunks); losses, weights (the torch
    state_dict) and accuracies equal the golden model's bit for bit."""
    cfg = TrainConfig(model="cnn", framework="torch", width=2, batch_size=8, max_steps=1, train_subset=16,
                      test_subset=4, seed=3)
    res = run_sim_train(cfg, golden=True, seed=sim_seed, **SHARED)
    assert res["bit_identical"], f"RTL training differs from the golden model in {res['differences']}"
    assert res["step_losses"] == res["golden"]["step_losses"] and len(res["step_losses"]) == 1
    sim = res["sim"]
    assert sim["descriptors"] > sim["gemms"] > 0 and sim["cycles"] >= sim["core_cycles"] > 0
    assert res["config"]["framework"] == "torch" and res["pass_modes"]["0"]["bp"] == "skipped"
    print(f"torch cnn: losses {res['step_losses']}, {sim['gemms']} passes ({sim['descriptors']} descriptors), "
          f"{sim['cycles']} cycles in {sim['wall_seconds']:.1f} s")


SCRIPT = """
import copy, json, sys
import numpy as np, torch
from torch import nn
import sat.torch
from sat.sw.bdwp import GoldenBackend, get_backend

torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                    nn.Linear(32, 4))
twin = copy.deepcopy(net)
x, labels = torch.randn(2, 8, 4, 4), torch.tensor([1, 3])
sat.torch.convert(net, (2, 8), backend="sim")
sat.torch.convert(twin, (2, 8), backend=GoldenBackend(k_limit=get_backend("sim").k_limit))
out = {}
for name, model in (("sim", net), ("golden", twin)):
    xi = x.clone().requires_grad_()
    loss = nn.functional.cross_entropy(model(xi), labels)
    loss.backward()
    tensors = [loss, xi.grad] + [p.grad for p in model.parameters()]
    out[name] = [t.detach().numpy().astype(np.float32).view(np.uint32).ravel().tolist() for t in tensors]
json.dump({"equal": out["sim"] == out["golden"], "loss": loss.item()}, open(sys.argv[1], "w"))
"""


def test_sat_sim_torch_runs_a_script_on_rtl(tmp_path, sim_seed: int) -> None:
    """``sat sim torch SCRIPT OUT``: a script converts a conv + batch norm + linear model with backend="sim" and a
    deep copy with the golden backend (same K chunks); loss, input gradient and every parameter gradient agree bit
    for bit, and the report counts the RTL passes: FF, WU and BP of both layers (the input requires a gradient, so
    the conv's BP runs too; the 4-way linear's BP runs dense)."""
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out.json"
    rep = run_sim_torch(script, [str(out)], seed=sim_seed, **{k: v for k, v in SHARED.items()})
    assert json.loads(out.read_text())["equal"] is True
    assert rep["sim"]["gemms"] == 6 and rep["sim"]["cycles"] > 0 and rep["argv"] == [str(out)]


@pytest.mark.slow
def test_sat_sim_torch_cli_reports_a_failing_script(tmp_path) -> None:
    """A script that raises makes ``sat sim torch`` exit 2 with the error (sat's one error path); a missing script
    is refused before any build."""
    script = tmp_path / "bad.py"
    script.write_text("import sat.torch, torch\nsat.torch.convert(torch.nn.Linear(4, 4), backend='sim')\n"
                      "raise ValueError('boom from the script')\n")
    cmd = ["sim", "torch", "--array", "2x2", "--a-depth", "8", "--b-depth", "128", "--memory-mb", "1", "--opt",
           "0", str(script)]
    run = [sys.executable, "-c", "import sys; from sat.sw.cli import main; sys.exit(main())"]
    r = subprocess.run([*run, *cmd], capture_output=True, text=True, timeout=900)
    assert r.returncode == 2 and "boom from the script" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([*run, *cmd[:-1], str(tmp_path / "missing.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such file" in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_torchvision_resnet18_one_step_rtl(sim_seed: int) -> None:
    """torchvision's ResNet-18 at width 2 (CIFAR stem), one BDWP step and inference on 8 images on the RTL, bit for
    bit equal to the golden model."""
    cfg = TrainConfig(model="resnet18", framework="torch", width=2, batch_size=8, max_steps=1, train_subset=8,
                      test_subset=8, seed=0)
    res = run_sim_train(cfg, golden=True, seed=sim_seed, **SHARED)
    assert res["bit_identical"], res["differences"]
    print(f"torch resnet18 width 2: loss {res['step_losses']}, {res['sim']['gemms']} passes, "
          f"{res['sim']['cycles']} cycles in {res['sim']['wall_seconds']:.1f} s")
