"""BDWP training through the driver equals the golden model bit for bit; docs/driver.md stays true."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sat.sw.bdwp import SGD, BDWPSettings, GoldenBackend, Linear, LossScaler, Sequential, get_backend
from sat.sw.config import SATConfig
from sat.sw.driver import DeviceBackend, ModelBackend, ModelTransport, SATDevice, SATDeviceError, TransportError
from sat.sw.regmap import ErrorCode, register_map

DOC = Path(__file__).resolve().parent.parent / "docs" / "driver.md"


def mlp(seed: int) -> Sequential:
    rng = np.random.default_rng(seed)
    net = Sequential([Linear(64, 32, name="fc1", relu=True, rng=rng), Linear(32, 10, name="fc2", rng=rng)])
    net.set_policy("fc2", bp="sparse")  # C_out = 10 is ragged for M = 8: forces a padded sparse BP pass
    return net


def params(net: Sequential) -> list[np.ndarray]:
    return [p.copy() for layer in net.gemm_layers for _, p, _ in layer.parameters()]


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_bdwp_iterations_through_the_model_equal_golden(fmt):
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((8, 64)).astype(np.float32), rng.integers(0, 10, 8)) for _ in range(2)]
    cfg = SATConfig(fmt=fmt)
    model = ModelTransport(cfg, 8 << 20)
    dev = SATDevice(model, cfg)
    runs = {}
    for name, backend in (("golden", GoldenBackend()), ("device", DeviceBackend(dev))):
        net = mlp(1)
        s = BDWPSettings(nm=(2, 8), fmt=fmt, backend=backend)
        opt, scaler = SGD(lr=0.05), LossScaler.for_format(fmt, 256.0)
        before = params(net)
        losses, modes = [], net.pass_modes(s.nm)
        for x, y in batches:  # two steps: the second one re-prunes and re-uploads the updated weights
            out = net.train_step(x, y, s, opt, scaler)
            assert out["applied"]
            losses.append(out["loss"])
        runs[name] = (losses, params(net), before, modes)
    (g_loss, g_params, g_before, modes), (d_loss, d_params, _, _) = runs["golden"], runs["device"]
    assert modes == {"fc1": {"ff": "sparse", "bp": "skipped", "wu": "dense"},
                     "fc2": {"ff": "sparse", "bp": "sparse", "wu": "dense"}}
    assert g_loss == d_loss
    for g, d, b in zip(g_params, d_params, g_before, strict=True):
        assert not np.array_equal(g, b), "the step must change the weights"
        np.testing.assert_array_equal(g.view(np.uint32), d.view(np.uint32))
    # 5 GEMMs per step (FF fc1, FF fc2, WU fc2, BP fc2, WU fc1) really ran on the device model
    assert model.executed == 10
    assert dev.free_bytes == dev.memory_bytes  # the backend frees everything it uploads


def test_device_backend_rejects_what_the_build_lacks():
    cfg = SATConfig(nm_set=((2, 4),))
    backend = DeviceBackend(SATDevice(ModelTransport(cfg, 1 << 20), cfg))
    from sat.sw.nmformat import compress

    a = np.ones((2, 16), np.float32)
    with pytest.raises(ValueError, match="2:8 is not built into this core"):
        backend.sparse(a, compress(np.ones((16, 4), np.float32), 2, 8), "fp16")
    with pytest.raises(ValueError, match="built for fp16 operands, not bf16"):
        backend.dense(a, np.ones((16, 4), np.float32), "bf16")
    with pytest.raises(ValueError, match="do not fit"):
        backend.dense(a, np.ones((15, 4), np.float32), "fp16")
    assert backend.dense(np.ones((0, 16), np.float32), np.ones((16, 4), np.float32), "fp16").shape == (0, 4)
    # a descriptor the core rejects surfaces as SATDeviceError with the hardware code
    dev = backend.device
    at, bt, ct = dev.write_tensor(a), dev.write_tensor(np.ones((16, 4))), dev.alloc_tensor((2, 4))
    with pytest.raises(SATDeviceError) as err:
        dev.run([dev.gemm_descriptor(at, bt, ct).replace(b_stride=2)])
    assert err.value.code == ErrorCode.BAD_SHAPE and err.value.index == 0
    assert "b_stride=2 is smaller than one stored row" in str(err.value)


def test_backends_are_registered_by_name():
    backend = get_backend("model")
    assert isinstance(backend, ModelBackend)
    rng = np.random.default_rng(2)
    from sat.sw.numerics import matmul, quantize

    for fmt in ("fp16", "bf16"):
        a, b = quantize(rng.standard_normal((3, 9)), fmt), quantize(rng.standard_normal((9, 5)), fmt)
        np.testing.assert_array_equal(backend.dense(a, b, fmt).view(np.uint32), matmul(a, b, fmt).view(np.uint32))
    assert set(backend.backends) == {"fp16", "bf16"}
    if os.path.exists("/dev/xdma0_user"):
        pytest.skip("a card is present: the no-card error cannot be checked")
    with pytest.raises(TransportError, match=r"^/dev/xdma0_user not found: is the XDMA driver loaded"):
        get_backend("xdma")


def test_doc_register_table_is_the_generated_one():
    text = DOC.read_text()
    block = re.search(r"<!-- register-map:begin -->\n(.*?)\n<!-- register-map:end -->", text, re.S)
    assert block, "docs/driver.md lost its register-map markers"
    assert block.group(1).strip() == register_map(SATConfig()).markdown().strip(), (
        "docs/driver.md's register table is stale: paste register_map(SATConfig()).markdown() between the markers")


def test_doc_quick_example_runs(capsys):
    text = DOC.read_text()
    example = text.split("## Quick example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    exec(compile(code, str(DOC), "exec"), {})
    assert "MACS" in capsys.readouterr().out


def test_doc_error_table_lists_every_code():
    text = DOC.read_text()
    for code in ErrorCode:
        assert re.search(rf"\| {int(code)} \| `{code.name}` \|", text), f"{code.name} missing from docs/driver.md"


@pytest.mark.board
@pytest.mark.skipif(not os.path.exists("/dev/xdma0_user"), reason="needs a programmed VCU1525 (/dev/xdma0_user)")
def test_board_gemms_equal_golden():
    from sat.sw import nmformat, numerics
    from sat.sw.driver import XdmaTransport

    with XdmaTransport() as t:
        dev = SATDevice(t)
        fmt = dev.config.fmt
        rng = np.random.default_rng(0)
        x = numerics.quantize(rng.standard_normal((16, 64)), fmt)
        w = rng.standard_normal((32, 64)).astype(np.float32)
        xt = dev.write_tensor(x)
        for n, m in dev.config.nm_set:
            y = dev.read_tensor(dev.ff(xt, dev.upload_weights(w, n, m, "ff")))
            ref = nmformat.matmul_nm(x, nmformat.compress_ff(w, n, m), fmt)
            np.testing.assert_array_equal(y.view(np.uint32), numerics.fp32_bits(ref))
        y = dev.read_tensor(dev.ff(xt, dev.upload_weights_dense(w)))
        np.testing.assert_array_equal(y.view(np.uint32), numerics.fp32_bits(numerics.matmul(x, numerics.quantize(
            w, fmt).T, fmt)))


BOARD_DOC = DOC.parent / "board.md"


def _checklist() -> str:
    text = BOARD_DOC.read_text()
    section = text.split("### Bring-up checklist", 1)[1]
    return section.split("\n### ", 1)[0]


def test_board_doc_checklist_runs_in_bring_up_order():
    """docs/board.md's checklist in the order a person runs it: driver with MSI, dmesg for AER, the self-test, a
    GEMM, training."""
    steps = re.findall(r"^(\d+)\. \*\*(.+?)\*\*", _checklist(), re.M)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    titles = [t for _, t in steps]
    want = ["MSI", "AER", "sat board selftest", "GEMM", "Training"]
    assert len(titles) == len(want) and all(w in t for w, t in zip(want, titles, strict=True)), titles
    assert "modprobe xdma interrupt_mode=1" in _checklist()


def test_board_doc_gemm_example_runs_on_the_model(capsys):
    """The checklist's GEMM example, with the card swapped for the software model: it runs and matches golden."""
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", _checklist(), re.S).group(1))
    assert 'XdmaTransport("/dev/xdma0")' in code
    code = code.replace('XdmaTransport("/dev/xdma0")', "ModelTransport(SATConfig(), 8 << 20)")
    exec(compile(code, str(BOARD_DOC), "exec"), {"ModelTransport": ModelTransport, "SATConfig": SATConfig})
    assert "MACS" in capsys.readouterr().out
