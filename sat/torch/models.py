"""Torch versions of ``sat train``'s models, for ``sat train --framework torch``.

* :func:`resnet18`: torchvision's ResNet-18 (``weights=None``) with a CIFAR-style stem (a ``3 x 3`` stride-1
  convolution on the input channels, no max pool) and its channels scaled by ``width / 64`` (``width, 2 width,
  4 width, 8 width``): torchvision's own ``BasicBlock`` and ``ResNet.forward``, the layer structure of
  :func:`sat.sw.network.resnet18_cifar`. Weights are initialised as torchvision does (Kaiming-normal, fan-out,
  for convolutions; batch norm 1 and 0; torch's default for the classifier).
* :func:`cnn` and :func:`mlp`: the digits CNN and MLP of :mod:`sat.sw.train` as ``nn.Sequential`` (small enough
  for the RTL simulation).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["resnet18", "cnn", "mlp", "TORCH_MODELS", "build"]


def resnet18(classes: int = 10, width: int = 64, channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 with a CIFAR-style stem and ``width`` first-stage channels (64: full width).

    Raises
    ------
    ValueError
        For a width or channel count below 1.
    """
    import torchvision

    if width < 1 or channels < 1 or classes < 1:
        raise ValueError(f"width, channels and classes must be positive, got {width}, {channels}, {classes}")
    model = torchvision.models.resnet18(weights=None, num_classes=classes)

    def scaled(c: int) -> int:
        return c * width // 64

    def rebuild(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if child is model.conv1:
                continue
            if isinstance(child, nn.Conv2d):
                new: nn.Module = nn.Conv2d(scaled(child.in_channels), scaled(child.out_channels), child.kernel_size,
                                           child.stride, child.padding, bias=child.bias is not None)
            elif isinstance(child, nn.BatchNorm2d):
                new = nn.BatchNorm2d(scaled(child.num_features))
            elif isinstance(child, nn.Linear):
                new = nn.Linear(scaled(child.in_features), child.out_features)
            else:
                rebuild(child)
                continue
            setattr(parent, name, new)

    model.conv1 = nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    rebuild(model)
    for m in model.modules():          # torchvision's initialisation, on the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def cnn(classes: int = 10, width: int = 16, image: int = 8, channels: int = 1) -> nn.Module:
    """The digits CNN: ``conv3x3 -> width`` (stride 1) and ``conv3x3 -> 2 width`` (stride 2), both padded, with bias
    and ReLU, flatten, ``linear -> classes``."""
    side = (image + 2 - 3) // 2 + 1
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * width * side * side, classes))


def mlp(classes: int = 10, width: int = 128, features: int = 64) -> nn.Module:
    """The digits MLP: ``features -> width -> width -> classes`` with ReLU."""
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, classes))


TORCH_MODELS = ("mlp", "cnn", "resnet18")


def build(name: str, seed: int = 0, classes: int = 10, width: int = 16, image: int = 8,
          channels: int = 1) -> nn.Module:
    """Model ``name`` of :data:`TORCH_MODELS`, initialised from ``torch.manual_seed(seed)``.

    Raises
    ------
    ValueError
        For a model without a torch version.
    """
    if name not in TORCH_MODELS:
        raise ValueError(f"--framework torch trains {TORCH_MODELS}, not {name!r}")
    torch.manual_seed(seed)
    if name == "resnet18":
        return resnet18(classes, width, channels)
    if name == "cnn":
        return cnn(classes, width, image, channels)
    return mlp(classes, width, image * image * channels)
