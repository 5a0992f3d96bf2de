"""The optimizer side of BDWP for torch: the SR-STE term and FP16 loss scaling (``docs/bdwp.md``).

* :func:`add_sr_ste` registers a step pre-hook on any ``torch.optim.Optimizer`` that adds SR-STE's
  ``lambda_w * (1 - mask_ff) * W`` to the gradient of every converted layer's weight (``mask_ff`` the FF mask of
  the layer's last forward pass; nothing for a dense FF pass), just before the optimizer uses the gradients.
* :class:`LossScaler` is the golden model's loss scaling (:class:`sat.sw.bdwp.LossScaler`: static, or dynamic
  from ``2^15``, halving on an overflow, doubling after 200 good steps; BF16 unscaled) for a torch loop:
  ``scaler.scale(loss).backward()``, then ``scaler.step(optimizer)`` checks every gradient for Inf/NaN, skips the
  step on an overflow and otherwise divides the gradients by the scale and steps.

With both, one torch iteration applies ``g = dW / S + lambda_w (1 - mask_ff) W`` (+ the optimizer's own weight decay
and momentum), the golden contract's update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sat.sw import bdwp

from .modules import sat_layers

__all__ = ["add_sr_ste", "LossScaler"]


def add_sr_ste(optimizer: torch.optim.Optimizer, module: nn.Module, lambda_w: float = 2e-4) -> Any:
    """Add the SR-STE term to ``optimizer``'s steps for the converted layers of ``module``.

    Before every ``optimizer.step()`` the weight gradient of each converted layer that the optimizer updates gets
    ``lambda_w * (1 - mask_ff) * W`` added, in float32 (``mask_ff``: :attr:`sat.torch.SATLayer.mask_ff`, the FF
    mask of the layer's last training forward pass; a dense FF pass adds nothing). Skipped steps (an FP16
    overflow, :class:`LossScaler`) never reach the hook.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Any optimizer.
    module : nn.Module
        A module converted by :func:`sat.torch.convert`.
    lambda_w : float
        The SR-STE coefficient (BDWP default 2e-4; ``sat.sw.train.default_lambda_w`` gives 2e-3 at 1:8).

    Returns
    -------
    torch.utils.hooks.RemovableHandle
        ``handle.remove()`` takes the term off again.

    Raises
    ------
    ValueError
        For a negative ``lambda_w`` or a module without converted layers.
    """
    if not lambda_w >= 0:
        raise ValueError(f"lambda_w must be >= 0, not {lambda_w!r}")
    layers = sat_layers(module)
    if not layers:
        raise ValueError("the module has no SAT layers: convert it with sat.torch.convert(module, ...) first")
    lam = torch.tensor(lambda_w, dtype=torch.float32)

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        managed = {id(p) for group in opt.param_groups for p in group["params"]}
        with torch.no_grad():
            for layer in layers:
                w = layer.weight
                if layer.mask_ff is None or w.grad is None or id(w) not in managed or not lambda_w:
                    continue
                w.grad.add_(lam * w.masked_fill(layer.mask_ff, 0.0))

    return optimizer.register_step_pre_hook(hook)


class LossScaler:
    """FP16 loss scaling for a torch training loop, with the golden contract's policy (see the module docstring).

    Parameters
    ----------
    fmt : "fp16" or "bf16"
        BF16 runs unscaled (scale 1, static).
    loss_scale : "dynamic" or float
        FP16: dynamic scaling (default) or a static scale.
    state : sat.sw.bdwp.LossScaler, optional
        Use this scaler's state (and policy) instead of a new one.

    Attributes
    ----------
    state : sat.sw.bdwp.LossScaler
        The scale, the count of good steps and of skipped steps.
    """

    def __init__(self, fmt: str = "fp16", loss_scale: str | float = "dynamic", *,
                 state: bdwp.LossScaler | None = None) -> None:
        self.state = state if state is not None else bdwp.LossScaler.for_format(fmt, loss_scale)

    @property
    def loss_scale(self) -> float:
        """The current scale ``S``."""
        return self.state.scale

    @property
    def skipped(self) -> int:
        """Steps skipped so far because a gradient (or the loss) was not finite."""
        return self.state.skipped

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * S``: call ``.backward()`` on it."""
        return loss * self.state.scale

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor | float | None = None) -> bool:
        """Check, unscale and apply one step; returns whether it was applied.

        Every gradient of ``optimizer``'s parameters (and ``loss``, if given) is checked for Inf/NaN; the scaler's
        policy records the result (:meth:`sat.sw.bdwp.LossScaler.update`: on an overflow the step is skipped and a
        dynamic scale halves). An applied step multiplies every gradient by ``1 / S`` (float32; ``S`` is a power of
        two for the dynamic scale, so exactly) and calls ``optimizer.step()``.
        """
        scale = self.state.scale
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if loss is not None:
            finite = finite and bool(torch.isfinite(torch.as_tensor(loss)).all())
        if not self.state.update(finite):
            return False
        inv = torch.tensor(1.0 / scale, dtype=torch.float32)
        with torch.no_grad():
            for g in grads:
                g.mul_(inv)
        optimizer.step()
        return True

    def __repr__(self) -> str:
        return f"sat.torch.LossScaler({self.state!r})"
