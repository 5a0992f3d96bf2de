"""``sat train --framework torch``: a converted torch model inside ``sat.sw.train.train``'s loop.

:class:`TorchModel` gives a torch module the interface ``sat.sw.train.train`` drives (``train_step``, ``predict``,
``pass_modes``, ``set_policy``, ``digest_arrays``), so the torch run uses the same data, batch order, learning-rate
schedule, loss scaling policy, JSON results and timing (``timing`` meters every pass the converted layers send to
the backend) as ``sat train``, and ``--backend sim`` trains it on the RTL through ``sim/tb_train.py`` unchanged.

One step: NCHW batch, forward through the converted module (FF of every converted layer on the backend, everything
else torch), ``F.cross_entropy``, backward of the scaled loss (WU and BP on the backend), :class:`~sat.torch.LossScaler`
check, then ``torch.optim.SGD`` (momentum, weight decay on weights and batch-norm scales, none on biases, as
:class:`sat.sw.bdwp.SGD`) with the SR-STE hook (:func:`~sat.torch.add_sr_ste`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sat.sw import bdwp
from sat.sw.network import POLICIES

from . import models
from .modules import convert, pass_modes, sat_layers
from .optim import LossScaler, add_sr_ste

__all__ = ["TorchModel", "build_torch_model"]


class TorchModel:
    """A torch classifier converted to SAT, trained by ``sat.sw.train.train``.

    Parameters
    ----------
    module : nn.Module
        Takes NCHW images (``image=True``) or flat vectors; returns logits. Converted in place with ``settings``.
    settings : BDWPSettings
        N:M pattern, format, BP mask and backend (the training loop's, metered).
    image : bool
        Inputs arrive as NHWC arrays and are handed to the module as NCHW.
    """

    def __init__(self, module: nn.Module, settings: bdwp.BDWPSettings, image: bool = True) -> None:
        self.module = convert(module, settings.nm, bp_mask=settings.bp_mask, backend=settings.backend,
                              fmt=settings.fmt, results="narrow" if settings.narrow else "fp32")
        self.image = image
        self.optimizer: torch.optim.Optimizer | None = None

    def _input(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return t.permute(0, 3, 1, 2).contiguous() if self.image else t

    def _optimizer(self, opt: bdwp.SGD) -> torch.optim.Optimizer:
        if self.optimizer is None:
            named = list(self.module.named_parameters())
            decay = [p for n, p in named if not n.endswith("bias")]
            rest = [p for n, p in named if n.endswith("bias")]
            self.optimizer = torch.optim.SGD([{"params": decay, "weight_decay": opt.weight_decay},
                                              {"params": rest, "weight_decay": 0.0}], lr=opt.lr,
                                             momentum=opt.momentum)
            add_sr_ste(self.optimizer, self.module, opt.lambda_w)
        for group in self.optimizer.param_groups:
            group["lr"] = opt.lr
        return self.optimizer

    def train_step(self, x: np.ndarray, labels: np.ndarray, s: bdwp.BDWPSettings, opt: bdwp.SGD,
                   scaler: bdwp.LossScaler) -> dict[str, float | bool]:
        """One BDWP iteration (see the module docstring); returns ``{"loss", "applied", "scale"}``."""
        optimizer = self._optimizer(opt)
        optimizer.zero_grad(set_to_none=True)
        self.module.train()
        # An FP16 overflow (Inf operands, NaN gradients) is expected now and then: the loss scaler skips the step.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = self.module(self._input(x))
            loss = F.cross_entropy(logits, torch.from_numpy(np.asarray(labels, np.int64)))
            scale = scaler.scale
            (loss * scale).backward()
        applied = LossScaler(state=scaler).step(optimizer, loss.detach())
        return {"loss": float(loss.detach()), "applied": applied, "scale": scale}

    def predict(self, x: np.ndarray, s: bdwp.BDWPSettings, batch_size: int = 256) -> np.ndarray:
        """Class predictions in eval mode (batch norm with running statistics), FF on the backend."""
        self.module.eval()
        out = []
        with torch.no_grad(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(x), batch_size):
                out.append(self.module(self._input(x[i:i + batch_size])).argmax(dim=1).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def pass_modes(self, nm: bdwp.NM) -> dict[str, dict[str, str]]:
        """:func:`sat.torch.pass_modes` of the module (BP ``"skipped"`` where the last backward needed no dX)."""
        return pass_modes(self.module)

    def set_policy(self, name: str, ff: str | None = None, bp: str | None = None) -> None:
        """Override the FF and/or BP policy of the converted layer ``name``.

        Raises
        ------
        KeyError
            If no converted layer has that name.
        ValueError
            For an unknown mode.
        """
        layers = {layer.sat_name: layer for layer in sat_layers(self.module)}
        if name not in layers:
            raise KeyError(f"no converted layer named {name!r}; they are {sorted(layers)}")
        for mode in (ff, bp):
            if mode is not None and mode not in POLICIES:
                raise ValueError(f"pass policy must be one of {POLICIES}, not {mode!r}")
        if ff is not None:
            layers[name].ff_policy = ff
        if bp is not None:
            layers[name].bp_policy = bp

    def digest_arrays(self) -> list[np.ndarray]:
        """Every floating-point tensor of the ``state_dict`` (weights, biases, batch-norm statistics), in order."""
        return [t.detach().numpy() for t in self.module.state_dict().values() if t.is_floating_point()]


def build_torch_model(name: str, seed: int, classes: int, width: int | None, settings: bdwp.BDWPSettings,
                      image_size: int = 8, channels: int = 1) -> TorchModel:
    """Model ``name`` (:data:`sat.torch.models.TORCH_MODELS`) built from ``seed`` and converted with ``settings``.

    Sets torch to one intra-op thread: the host work of these small models is tiny, and a thread pool on a shared
    machine spent most of an iteration waiting (ResNet-18 at width 8, batch 32: 2.2 s of host time per iteration
    with two threads, 0.33 s with one); one thread also makes the reductions' order independent of the machine.

    Raises
    ------
    ValueError
        For a model without a torch version.
    """
    from sat.sw.train import DEFAULT_WIDTH

    torch.set_num_threads(1)
    w = DEFAULT_WIDTH.get(name, 16) if width is None else width
    module = models.build(name, seed, classes, w, image_size, channels)
    return TorchModel(module, settings, image=name != "mlp")
