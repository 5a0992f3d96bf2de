"""The PyTorch front end (``sat.torch``): converted layers against the golden passes bit for bit, a float64
gradient check, the SR-STE hook, loss scaling, training through ``sat train --framework torch`` and the scheduler's
``from_torch`` on the converted model. RTL runs are in ``tests/test_torch_rtl.py``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import sat.torch as st  # noqa: E402
from sat.sw import numerics  # noqa: E402
from sat.sw.bdwp import GoldenBackend, LossScaler, nm_mask  # noqa: E402
from sat.sw.conv import ConvShape, bp_operand, conv_pass, ff_operand  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _bits(a) -> np.ndarray:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _golden_passes(w_oihw: np.ndarray, x_nchw: np.ndarray, dy_nchw: np.ndarray, stride: int, padding: int,
                   nm, fmt: str, bp_mask: str, backend) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The golden FF, BP and WU of one convolution from torch-layout tensors, written out from the contract
    (SPEC 1 and 1.1): W as (C_out, kh, kw, C_in) viewed C_out x K, masks from nm_mask, operands from
    sat.sw.conv, passes on ``backend``. Returns Y, dX (NHWC) and dW (C_out, kh, kw, C_in)."""
    w = np.ascontiguousarray(w_oihw.transpose(0, 2, 3, 1))
    co, kh, kw, ci = w.shape
    b, _, h, wd = x_nchw.shape
    shape = ConvShape(b, h, wd, ci, co, kh, kw, stride, padding)
    wk = w.reshape(co, -1)
    x = numerics.quantize(x_nchw.transpose(0, 2, 3, 1), fmt)
    dy = numerics.quantize(dy_nchw.transpose(0, 2, 3, 1), fmt)
    mask_ff = nm_mask(wk, *nm, axis=1) if nm else None
    w_ff = wk if mask_ff is None else np.where(mask_ff, wk, np.float32(0))
    # narrow results (SPEC section 2): FF and BP results in the operand format, WU in FP32
    y = conv_pass(backend, "ff", x, ff_operand(w_ff, shape, fmt, nm, mask_ff), shape, fmt, fmt)
    base = w_ff if bp_mask == "nested" else wk
    mask_bp = nm_mask(base, *nm, axis=0) if nm else None
    w_bp = base if mask_bp is None else np.where(mask_bp, base, np.float32(0))
    dx = conv_pass(backend, "bp", dy, bp_operand(w_bp, shape, fmt, nm, mask_bp), shape, fmt, fmt)
    dw = conv_pass(backend, "wu", dy, x, shape, fmt)
    return y, dx, dw


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 1)])
@pytest.mark.parametrize("nm,bp_mask", [((2, 8), "independent"), ((2, 8), "nested"), (None, "independent")])
def test_conv_ff_bp_wu_equal_golden_bit_for_bit(fmt, stride, padding, nm, bp_mask):
    """A converted Conv2d (16 -> 16 channels, 3x3: K = 144 and C_out = 16 are multiples of 8, so FF and BP run
    sparse at 2:8): the output minus the host bias, x.grad and weight.grad equal the golden FF, BP and WU of the
    same tensors bit for bit (NCHW <-> NHWC and the weight layout changes done here independently)."""
    gen = torch.Generator().manual_seed(7 + stride + 3 * padding)
    conv = nn.Conv2d(16, 16, 3, stride=stride, padding=padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.2)
        conv.bias.copy_(torch.randn(16, generator=gen))
    st.convert(conv, nm or "dense", fmt=fmt, bp_mask=bp_mask)
    x = (torch.randn(2, 16, 7, 6, generator=gen) * 3).requires_grad_()
    y = conv(x)
    dy = torch.randn(y.shape, generator=gen) * 2
    y.backward(dy)
    yg, dxg, dwg = _golden_passes(conv.weight.detach().numpy(), x.detach().numpy(), dy.numpy(), stride, padding,
                                  nm, fmt, bp_mask, GoldenBackend())
    y_nhwc = y.detach().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(_bits(y_nhwc), _bits(yg + conv.bias.detach().numpy()))   # bias: a float32 host add
    assert np.array_equal(_bits(x.grad.permute(0, 2, 3, 1)), _bits(dxg))
    assert np.array_equal(_bits(conv.weight.grad.permute(0, 2, 3, 1)), _bits(dwg))
    assert conv.bias.grad is not None and x.grad.shape == x.shape and conv.weight.grad.shape == conv.weight.shape
    modes = st.pass_modes(conv)[""]
    assert modes == {"ff": "sparse" if nm else "dense", "bp": "sparse" if nm else "dense", "wu": "dense"}
    if nm:   # the FF mask kept for SR-STE is 2 of every 8 along (kh, kw, c_in), in torch's weight layout
        assert conv.mask_ff.shape == conv.weight.shape and conv.mask_ff.sum() == conv.weight.numel() // 4
        wk = conv.weight.detach().permute(0, 2, 3, 1).reshape(16, -1).numpy()
        assert np.array_equal(conv.mask_ff.permute(0, 2, 3, 1).reshape(16, -1).numpy(), nm_mask(wk, 2, 8, axis=1))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_linear_ff_bp_wu_equal_golden_bit_for_bit(fmt):
    """A converted Linear (32 -> 16, leading dimensions (3, 5) as the batch) against the golden GEMMs."""
    gen = torch.Generator().manual_seed(3)
    lin = st.convert(nn.Linear(32, 16), (2, 4), fmt=fmt)
    x = torch.randn(3, 5, 32, generator=gen, requires_grad=True)
    y = lin(x)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    w = lin.weight.detach().numpy()
    yg, dxg, dwg = _golden_passes(w[:, :, None, None], x.detach().reshape(15, 32, 1, 1).numpy(),
                                  dy.reshape(15, 16, 1, 1).numpy(), 1, 0, (2, 4), fmt, "independent", GoldenBackend())
    assert np.array_equal(_bits(y.reshape(15, 16)), _bits(yg.reshape(15, 16) + lin.bias.detach().numpy()))
    assert np.array_equal(_bits(x.grad.reshape(15, 32)), _bits(dxg.reshape(15, 32)))
    assert np.array_equal(_bits(lin.weight.grad), _bits(dwg.reshape(16, 32)))


def test_device_model_backend_splits_k_and_matches_golden():
    """On the software device model with small buffers (K chunks), a converted conv equals the golden passes
    splitting K alike, and gives back every byte of device memory once the graph is gone."""
    from sat.sw.config import SATConfig
    from sat.sw.driver import DeviceBackend, SATDevice
    from sat.sw.driver.model import ModelTransport

    cfg = SATConfig(rows=2, cols=2, a_depth=8, b_depth=32)
    backend = DeviceBackend(SATDevice(ModelTransport(cfg, 4 << 20), cfg))
    free = backend.device.free_bytes
    gen = torch.Generator().manual_seed(11)
    conv = st.convert(nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), (2, 8), backend=backend)
    x = torch.randn(2, 16, 8, 8, generator=gen, requires_grad=True)
    y = conv(x)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)
    assert backend.stats["descriptors"] > backend.stats["gemms"] == 3, "no reduction was split"
    yg, dxg, dwg = _golden_passes(conv.weight.detach().numpy(), x.detach().numpy(), dy.numpy(), 2, 1, (2, 8),
                                  "fp16", "independent", GoldenBackend(k_limit=backend.k_limit))
    assert np.array_equal(_bits(y.permute(0, 2, 3, 1)), _bits(yg))
    assert np.array_equal(_bits(x.grad.permute(0, 2, 3, 1)), _bits(dxg))
    assert np.array_equal(_bits(conv.weight.grad.permute(0, 2, 3, 1)), _bits(dwg))
    del y
    assert backend.device.free_bytes == free
    y2 = conv(x)          # a recorded graph dropped without backward also gives its resident input back
    assert backend.device.free_bytes < free
    del y2
    assert backend.device.free_bytes == free


@pytest.mark.parametrize("kind", ["s1p1", "s2p1", "s2p0_2x3", "linear"])
def test_float64_gradient_check_masks_off(kind):
    """Reference mode, masks off, float64: the converted layer's backward (WU and the transposed-convolution BP of
    the golden model's lowerings, with the layer's layout changes) is the gradient of its forward
    (torch.autograd.gradcheck), and its forward is torch's own conv / linear to float64 precision."""
    torch.manual_seed(5)
    mod = {"s1p1": nn.Conv2d(3, 4, 3, stride=1, padding=1), "s2p1": nn.Conv2d(3, 4, 3, stride=2, padding=1),
           "s2p0_2x3": nn.Conv2d(2, 3, (2, 3), stride=2, padding=0), "linear": nn.Linear(6, 5)}[kind]
    x = torch.randn((2, 6) if kind == "linear" else (2, mod.in_channels, 6, 7), dtype=torch.float64,
                    requires_grad=True)
    st.convert(mod, (2, 4)).double()
    with st.reference(mod):
        assert torch.autograd.gradcheck(mod, (x,))
        y = mod(x)
    ref = nn.functional.linear(x, mod.weight, mod.bias) if kind == "linear" else \
        nn.functional.conv2d(x, mod.weight, mod.bias, mod.stride, mod.padding)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="reference"):     # outside reference mode float64 is refused
        mod(x)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_dense_sat_passes_within_fp32_error_of_torch_float64(fmt):
    """Dense SAT passes (FP16/BF16 operands, FP32 chains) against torch's float64 conv and its autograd on the
    same quantized operands: each result within the FP32 accumulation bound K * 2^-24 * sum|products| (an
    independent check of the layouts and of BP and WU being the gradients). FP32 results (``results="fp32"``): the
    bound is the chain's, not the narrow format's."""
    gen = torch.Generator().manual_seed(2)
    conv = st.convert(nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), None, fmt=fmt, results="fp32")
    x = torch.randn(2, 8, 9, 9, generator=gen, requires_grad=True)
    y = conv(x)
    dy = torch.randn(y.shape, generator=gen)
    y.backward(dy)

    def q(t):
        return torch.from_numpy(numerics.quantize(t.detach().numpy(), fmt)).double()

    x64, w64, dy64 = q(x).requires_grad_(), q(conv.weight).requires_grad_(), q(dy)
    y64 = nn.functional.conv2d(x64, w64, stride=2, padding=1)
    y64.backward(dy64)
    bound_y = nn.functional.conv2d(x64.abs(), w64.abs(), stride=2, padding=1) * 72 * 2.0**-24
    assert (y.double() - y64).abs().le(bound_y + 1e-30).all()
    for got, want in ((x.grad, x64.grad), (conv.weight.grad, w64.grad)):
        assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


def test_convert_in_place_policy_and_unsupported_layers():
    """convert keeps module objects, parameters and state_dict keys; policy by name (mapping or LAYER.PASS=MODE);
    grouped, dilated, 1-D convolutions and Linear subclasses stay in torch with one warning listing them."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, dilation=2),
                          nn.Flatten(), nn.LazyLinear(10), nn.Linear(10, 10))
    model(torch.zeros(1, 3, 8, 8))                       # initialise the lazy layer (it becomes nn.Linear)
    conv0, w0, keys = model[0], model[0].weight, list(model.state_dict())
    with pytest.warns(st.UnsupportedLayerWarning) as rec:
        out = st.convert(model, "2:8", policy=["7.bp=sparse"], backend="golden")
    assert out is model and model[0] is conv0 and model[0].weight is w0 and list(model.state_dict()) == keys
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "2 layer(s)" in msg and "3 (groups=2)" in msg and "4 (dilation=(2, 2))" in msg
    assert isinstance(model[0], st.SATConv2d) and isinstance(model[6], st.SATLinear)
    assert type(model[3]) is nn.Conv2d and type(model[4]) is nn.Conv2d
    assert (model[7].ff_policy, model[7].bp_policy) == ("auto", "sparse")
    st.convert(model[6:], (2, 4), policy={"7": {"ff": "dense"}})   # again, on a slice (same names)
    assert model[7].ff_policy == "dense" and model[7].sat_settings.nm == (2, 4)
    with pytest.raises(ValueError, match="not converted layers"):
        st.convert(nn.Sequential(nn.Linear(4, 4)), policy={"fc": {"ff": "dense"}})
    with pytest.raises(ValueError, match="one of"):
        st.convert(nn.Linear(4, 4), policy={"": {"ff": "half"}})
    with pytest.raises(ValueError, match="bp_mask"):
        st.convert(nn.Linear(4, 4), bp_mask="both")
    with pytest.raises(TypeError, match="float32"):
        st.convert(nn.Linear(4, 4).double())(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.warns(st.UnsupportedLayerWarning, match="Conv1d"):
        st.convert(nn.Sequential(nn.Conv1d(2, 2, 3)))


def test_string_padding_and_from_torch():
    """padding="same" (odd square kernel) and "valid" run as padding 1 and 0: the same bits as the integer
    padding; from_torch records them so; an even kernel with "same" stays in torch (it pads unevenly)."""
    from sat.sw.network import from_torch

    torch.manual_seed(4)
    x = torch.randn(2, 8, 6, 6)
    for text, number in (("same", 1), ("valid", 0)):
        a, b = nn.Conv2d(8, 8, 3, padding=text), nn.Conv2d(8, 8, 3, padding=number)
        b.load_state_dict(a.state_dict())
        st.convert(a, (2, 8))
        st.convert(b, (2, 8))
        assert torch.equal(a(x), b(x))
        assert from_torch(nn.Sequential(a), (6, 6, 8)).layers[0].padding == number
    with pytest.warns(st.UnsupportedLayerWarning, match="unevenly"):
        st.convert(nn.Sequential(nn.Conv2d(2, 2, 2, padding="same")))


def test_sr_ste_hook_with_any_optimizer():
    """The SR-STE pre-hook adds lambda_w * (1 - mask_ff) * W before the optimizer step: plain SGD (lr 1, no
    momentum) moves W by exactly -(dW + lambda (1 - mask) W); with Adam the gradient Adam sees is the same
    refined one; removing the hook restores the plain update."""
    torch.manual_seed(0)
    lam = 0.25
    lin = st.convert(nn.Linear(16, 8, bias=False), (2, 8))
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    handle = st.add_sr_ste(opt, lin, lam)
    w0 = lin.weight.detach().clone()
    lin(torch.randn(4, 16)).square().sum().backward()
    grad, mask = lin.weight.grad.clone(), lin.mask_ff.clone()
    assert mask.sum() == w0.numel() // 4
    opt.step()
    expected = w0 - (grad + torch.tensor(lam, dtype=torch.float32) * w0.masked_fill(mask, 0.0))
    assert torch.equal(lin.weight.detach(), expected)
    handle.remove()
    opt.zero_grad()
    w1 = lin.weight.detach().clone()
    lin(torch.randn(4, 16)).sum().backward()
    g = lin.weight.grad.clone()
    opt.step()
    assert torch.equal(lin.weight.detach(), w1 - g)
    adam = torch.optim.Adam(lin.parameters(), lr=1e-3)
    st.add_sr_ste(adam, lin, lam)
    seen = []
    adam.register_step_pre_hook(lambda o, a, k: seen.append(lin.weight.grad.clone()))    # runs after SR-STE's
    adam.zero_grad()
    lin(torch.randn(4, 16)).sum().backward()
    raw, w2 = lin.weight.grad.clone(), lin.weight.detach().clone()
    adam.step()
    assert torch.equal(seen[0], raw + torch.tensor(lam, dtype=torch.float32) * w2.masked_fill(lin.mask_ff, 0.0))
    with pytest.raises(ValueError, match="convert"):
        st.add_sr_ste(adam, nn.Linear(2, 2))


def test_loss_scaler_follows_the_golden_policy():
    """sat.torch.LossScaler: an overflowing step is skipped and halves the dynamic scale (as
    sat.sw.bdwp.LossScaler); a good step divides the gradients by the scale and steps; BF16 runs unscaled."""
    lin = nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    scaler = st.LossScaler("fp16")
    assert scaler.loss_scale == 2.0**15 and st.LossScaler("bf16").loss_scale == 1.0
    w0 = lin.weight.detach().clone()
    lin.weight.grad = torch.tensor([[float("inf"), 1.0]])
    assert scaler.step(opt) is False and scaler.loss_scale == 2.0**14 and scaler.skipped == 1
    assert torch.equal(lin.weight.detach(), w0)
    lin.weight.grad = torch.tensor([[2.0**14, -2.0**13]])
    assert scaler.step(opt) is True
    assert torch.equal(lin.weight.detach(), w0 - torch.tensor([[1.0, -0.5]]))
    golden = LossScaler(2.0**15)
    for finite in (False, True):
        golden.update(finite)
    assert golden.scale == scaler.loss_scale and golden.skipped == scaler.skipped
    assert torch.equal(scaler.scale(torch.tensor(3.0)), torch.tensor(3.0 * 2**14))
    lin.weight.grad = torch.ones(1, 2)
    assert scaler.step(opt, loss=torch.tensor(float("nan"))) is False


def test_import_without_torch_names_the_extra():
    """Without PyTorch installed, importing sat.torch says how to install it."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import sat.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert 'pip install "sat-nm[torch]"' in out.stdout, out.stdout + out.stderr


def test_torch_training_on_the_device_model_matches_golden_and_keeps_the_json(tmp_path):
    """sat train --framework torch: the torch CNN on the device model (K chunks) trains bit for bit like on the
    golden model splitting K alike (losses, weights, accuracies: --check-golden), with the JSON keys of a
    framework-sat run; the first layer's BP is skipped."""
    from sat.sw.cli import main

    args = ["train", "--model", "cnn", "--width", "8", "--batch-size", "16", "--max-steps", "3", "--train-subset",
            "48", "--test-subset", "16", "--backend", "model", "--check-golden", "--no-progress"]
    assert main([*args, "--framework", "torch", "--json", str(tmp_path / "t.json")]) == 0
    assert main([*args, "--json", str(tmp_path / "s.json")]) == 0
    t, s = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ts")
    assert t["golden_match"] is True and len(t["losses"]) == 3 and t["config"]["framework"] == "torch"
    assert set(t) == set(s) and set(t["timing"]) == set(s["timing"]) and t["timing"]["pcie_bytes"] > 0
    # the same pass modes as sat's own CNN (conv1 K = 9 and FF dense, BP skipped; conv2 sparse; fc BP dense)
    assert [t["pass_modes"][k] for k in ("0", "2", "5")] == [s["pass_modes"][k] for k in ("conv1", "conv2", "fc")]
    assert t["pass_modes"]["0"]["bp"] == "skipped" and t["pass_modes"]["2"]["ff"] == "sparse"
    assert all(np.isfinite(t["losses"])) and t["losses"] != s["losses"]


def test_resnet18_torch_learns_and_from_torch_schedules_the_converted_model():
    """torchvision's ResNet-18 (width 4, CIFAR stem) trained through SAT for a few steps lowers the loss; from_torch
    of the converted model gives the GEMM layers of sat's own resnet18_cifar (shapes, order) with the converted
    layers' names and policies, runs no pass on the backend, keeps the training mode, and schedules."""
    from sat.sw.config import SATConfig
    from sat.sw.network import from_torch, resnet18_cifar
    from sat.sw.schedule import schedule_iteration
    from sat.sw.train import TrainConfig, train
    from sat.torch.models import build

    res = train(TrainConfig(model="resnet18", framework="torch", width=4, max_steps=12, batch_size=16,
                            train_subset=192, test_subset=32, lr=0.05, seed=1), progress=False)
    assert res["losses"][-1] < res["losses"][0]

    class Refuse:
        name = "refuse"

        def dense(self, a, b, fmt):
            raise AssertionError("from_torch ran a pass on the backend")

        sparse = conv = dense

    model = st.convert(build("resnet18", 0, 10, 4), (2, 8), backend=Refuse(), policy=["fc.ff=dense"])
    model.train()
    net = from_torch(model, (8, 8, 1), "resnet18")
    assert model.training
    ours = resnet18_cifar(10, 8, 4, 1).layers
    assert [(la.c_in, la.c_out, la.kernel, la.stride, la.padding, la.in_hw) for la in net.layers] == \
        [(la.c_in, la.c_out, la.kernel, la.stride, la.padding, la.in_hw) for la in ours]
    assert [la.name for la in net.layers] == [la.sat_name for la in st.sat_layers(model)]
    assert net.item("fc").ff == "dense" and net.item("conv1").ff == "auto"
    sched = schedule_iteration(net, 32, SATConfig(), (2, 8))
    assert sched.gemms


def test_pytorch_page_example_runs_as_written():
    """docs/pytorch.md's first example, executed as written."""
    text = (ROOT / "docs" / "pytorch.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    body = [ln for ln in code.splitlines() if ln.strip() and not ln.startswith(("import ", "from "))]
    assert len(body) <= 11, body
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loss" in out.stdout
