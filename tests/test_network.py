"""The network description (``sat.sw.network``): graph edges, shapes, the scaled and small-input variants, and
that the trainer, the scheduler and the cycle model derive the same layers from it."""

from __future__ import annotations

import pytest

from sat.sw import schedule
from sat.sw.config import SATConfig
from sat.sw.graph import Graph
from sat.sw.network import (
    INPUT,
    Conv,
    HostOp,
    Network,
    cnn,
    mlp,
    resnet18_cifar,
    resnet18_imagenet,
    vgg16_cifar,
)
from sat.sw.perfmodel import layer_gemms


def test_resnet_blocks_are_graphs():
    net = resnet18_cifar(width=8)
    adds = {it.name: it.inputs for it in net.items if isinstance(it, HostOp) and it.kind == "add"}
    assert adds["layer1.0.add"] == ("layer1.0.bn2", "relu1")                         # identity shortcut
    assert adds["layer2.0.add"] == ("layer2.0.downsample.bn", "layer2.0.bn2")        # projection + main path
    assert net.item("layer2.0.downsample").inputs == ("layer1.1.relu2",)             # reads the block input
    assert net.item("conv1").inputs == (INPUT,)
    assert [la.name for la in net.layers][:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    assert net.item("fc").shape == (1, 1, 10) and net.item("avgpool").shape == (1, 1, 64)


def test_small_inputs_keep_the_structure():
    """On 8x8 digits ResNet-18 runs its stages at 8, 4, 2, 1 pixels and VGG-16 keeps the pools that fit."""
    r = resnet18_cifar(image=8, width=4, channels=1)
    assert r.item("layer4.1.conv2").out_hw == (1, 1) and r.item("conv1").c_in == 1
    v = vgg16_cifar(image=8, width=8, channels=1)
    pools = [it for it in v.items if isinstance(it, HostOp) and it.kind == "maxpool"]
    assert len(pools) == 3 and v.item("conv13").in_hw == (1, 1) and v.item("fc1").c_in == 64
    assert len(vgg16_cifar().items) - len(v.items) == 2                  # the full network has all five pools


def test_validation_of_graphs():
    with pytest.raises(ValueError, match="not an earlier record"):
        Network("x", (4, 4, 1), (Conv("c", 1, 4, 3, (4, 4), padding=1, inputs=("later",)),))
    with pytest.raises(ValueError, match="two inputs"):
        Network("x", (4, 4, 1), (Conv("c", 1, 4, 3, (4, 4), padding=1), HostOp("a", "add")))
    with pytest.raises(ValueError, match="used twice"):
        Network("x", (4, 4, 1), (Conv("c", 1, 4, 3, (4, 4), padding=1), HostOp("c", "relu")))
    with pytest.raises(ValueError, match="kind must be"):
        HostOp("h", "softmax")
    with pytest.raises(ValueError, match="policy must be"):
        Conv("c", 1, 4, 3, (4, 4), ff="half")
    net = cnn(width=4)
    assert net.with_policy({"conv2": {"bp": "dense"}}).item("conv2").bp == "dense"
    with pytest.raises(KeyError, match="no GEMM layer named"):
        net.with_policy({"relu1": {"ff": "dense"}})


def test_imagenet_resnet18():
    net = resnet18_imagenet()
    assert net.item("maxpool").shape == (56, 56, 64) and net.item("layer4.1.conv2").out_hw == (7, 7)
    assert net.item("conv1").ff == net.item("conv1").bp == "dense"


@pytest.mark.parametrize("build", [lambda: resnet18_cifar(image=8, width=8, channels=1),
                                   lambda: vgg16_cifar(image=8, width=8, channels=1), lambda: cnn(width=8),
                                   lambda: mlp(width=16)])
def test_one_description_three_consumers(build):
    """The trainable model, the schedule and the cycle model see the same GEMM layers, shapes and pass modes."""
    net = build()
    model = Graph.from_network(net, 0)
    gemm = {la.name: la for la in model.gemm_layers}
    assert list(gemm) == [la.name for la in net.layers]
    nm = (2, 8)
    modes = model.pass_modes(nm)
    sched = schedule.schedule_iteration(net, 2, SATConfig(rows=4, cols=4), nm, orientation="normal")
    for rec in net.layers:
        assert gemm[rec.name].weight.shape == (rec.c_out, rec.k)
        ff, bp, wu = layer_gemms(rec, 2, nm)
        assert (ff.rows, ff.red, ff.cols) == (rec.pixels(2), rec.k, rec.c_out)
        assert (ff.n != 0) == (modes[rec.name]["ff"] == "sparse") == (sched.gemm(rec.name, "ff").n != 0)
        if modes[rec.name]["bp"] == "skipped":
            with pytest.raises(KeyError):
                sched.gemm(rec.name, "bp")
        else:
            assert (bp.n != 0) == (modes[rec.name]["bp"] == "sparse") == (sched.gemm(rec.name, "bp").n != 0)
        assert sched.gemm(rec.name, "wu").red == wu.red
