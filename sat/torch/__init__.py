"""The PyTorch front end: train a torch model with BDWP, its convolutions and linear layers running on SAT.

:func:`convert` turns the ``nn.Conv2d`` and ``nn.Linear`` layers of a module into :class:`SATConv2d` and
:class:`SATLinear` in place: their FF, BP and WU passes run on a SAT backend (the golden model, the software device
model, the RTL simulation or the card) exactly as ``sat train`` runs its own layers (``sat.sw.bdwp.layer_ff`` and
``layer_wu_bp``), while batch norm, ReLU, pooling, the loss and the optimizer stay in torch. :func:`add_sr_ste` adds
SR-STE's decay of the pruned weights to any torch optimizer; :class:`LossScaler` is FP16 loss scaling as the golden
contract defines it. ``docs/pytorch.md`` has a worked example.

PyTorch is an optional dependency: ``pip install "sat-nm[torch]"`` (from a checkout: ``pip install -e ".[torch]"``).
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ModuleNotFoundError as _exc:  # pragma: no cover - depends on the install
    if _exc.name != "torch":
        raise
    raise ImportError('sat.torch needs PyTorch, which is an optional extra of SAT: pip install "sat-nm[torch]" '
                      '(from a checkout: pip install -e ".[torch]")') from None

from .modules import (
    SATConv2d,
    SATLayer,
    SATLinear,
    UnsupportedLayerWarning,
    convert,
    pass_modes,
    reference,
    sat_layers,
)
from .optim import LossScaler, add_sr_ste

__all__ = ["convert", "SATLayer", "SATConv2d", "SATLinear", "sat_layers", "pass_modes", "reference",
           "UnsupportedLayerWarning", "add_sr_ste", "LossScaler"]
