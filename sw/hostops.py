"""Host-side layers of BDWP training: ReLU, batch norm, max / global-average pooling, residual add, flatten.

They run on the host in float32 on channels-last (NHWC) tensors, between the passes that run on the card (until an
on-chip vector engine takes them, SPEC section 4). Each has ``forward(x, s, train)`` and ``backward(dy, s)`` like
the GEMM layers of :mod:`sat.sw.bdwp`; :class:`Add` takes two inputs and returns two gradients. Every reduction
runs in a fixed order, so results are deterministic and the same on every backend.

* :class:`BatchNorm`: per-channel statistics over every axis but the last, in float32 (mean, then the biased
  variance of the centred values); train mode normalises with the batch statistics and updates the running
  mean and (unbiased) variance with ``momentum``; eval mode uses the running statistics. ``weight`` (gamma) and
  ``bias`` (beta) are FP32 master parameters that :class:`sat.sw.bdwp.SGD` updates (no SR-STE, no mask).
* :class:`MaxPool`: padding taps never win; ties go to the first tap in ``(kh, kw)`` order, which receives the
  gradient.
* :class:`GlobalAvgPool`: the mean over ``H`` and ``W``.
"""

from __future__ import annotations

import numpy as np

from sat.sw.bdwp import BDWPSettings, Flatten, Layer

__all__ = ["ReLU", "BatchNorm", "MaxPool", "GlobalAvgPool", "Add", "Flatten"]

F32 = np.float32


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where ``x > 0``."""

    def __init__(self, name: str = "relu") -> None:
        self.name = name
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        x = np.asarray(x, F32)
        if train:
            self._mask = x > 0
        return np.maximum(x, F32(0))

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray:
        if self._mask is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(..., train=True) first")
        out = np.where(self._mask, np.asarray(dy, F32), F32(0))
        self._mask = None
        return out


class BatchNorm(Layer):
    """Batch normalisation over the last (channel) axis with FP32 statistics (see the module docstring).

    Parameters
    ----------
    channels : int
    name : str
    eps : float
        Added to the variance.
    momentum : float
        Weight of the batch statistics in the running statistics (PyTorch's convention).

    Raises
    ------
    ValueError
        For a non-positive channel count or eps, or a momentum outside ``(0, 1]``.
    """

    def __init__(self, channels: int, name: str = "bn", eps: float = 1e-5, momentum: float = 0.1) -> None:
        if channels < 1 or not eps > 0 or not 0 < momentum <= 1:
            raise ValueError(f"batch norm {name!r} needs channels >= 1, eps > 0 and 0 < momentum <= 1; got "
                             f"{channels}, {eps}, {momentum}")
        self.name = name
        self.eps = F32(eps)
        self.momentum = F32(momentum)
        self.weight = np.ones(channels, F32)
        self.bias = np.zeros(channels, F32)
        self.running_mean = np.zeros(channels, F32)
        self.running_var = np.ones(channels, F32)
        self.grad_weight: np.ndarray | None = None
        self.grad_bias: np.ndarray | None = None
        self.mask_ff = None                 # no SR-STE term (sat.sw.bdwp.SGD)
        self.needs_input_grad = True
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        x = np.asarray(x, F32)
        if x.shape[-1] != self.weight.size:
            raise ValueError(f"batch norm {self.name!r} has {self.weight.size} channels, its input {x.shape}")
        axes = tuple(range(x.ndim - 1))
        if train:
            count = x.size // x.shape[-1]
            mean = x.mean(axis=axes, dtype=F32)
            centred = x - mean
            var = (centred * centred).mean(axis=axes, dtype=F32)
            inv_std = F32(1) / np.sqrt(var + self.eps)
            unbiased = var * F32(count / max(count - 1, 1))
            self.running_mean = (F32(1) - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (F32(1) - self.momentum) * self.running_var + self.momentum * unbiased
            xhat = centred * inv_std
            self._cache = (xhat, inv_std)
        else:
            xhat = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return (xhat * self.weight + self.bias).astype(F32, copy=False)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"batch norm {self.name!r}: backward() needs a forward(..., train=True) first")
        xhat, inv_std = self._cache
        dy = np.asarray(dy, F32)
        axes = tuple(range(dy.ndim - 1))
        count = F32(dy.size // dy.shape[-1])
        self.grad_bias = dy.sum(axis=axes, dtype=F32)
        self.grad_weight = (dy * xhat).sum(axis=axes, dtype=F32)
        self._cache = None
        if not self.needs_input_grad:
            return None
        return ((self.weight * inv_std / count)
                * (count * dy - self.grad_bias - xhat * self.grad_weight)).astype(F32, copy=False)

    def parameters(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """``(name, value, gradient)`` of gamma and beta."""
        return [("weight", self.weight, self.grad_weight), ("bias", self.bias, self.grad_bias)]


class MaxPool(Layer):
    """Max pooling over ``kernel x kernel`` windows with ``stride`` and ``padding`` (see the module docstring).

    Raises
    ------
    ValueError
        For a kernel or stride below 1, or a padding above half the kernel.
    """

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0, name: str = "maxpool") -> None:
        stride = kernel if stride is None else stride
        if kernel < 1 or stride < 1 or not 0 <= 2 * padding <= kernel:
            raise ValueError(f"max pool {name!r}: need kernel, stride >= 1 and 0 <= padding <= kernel / 2; got "
                             f"{kernel}, {stride}, {padding}")
        self.name, self.kernel, self.stride, self.padding = name, kernel, stride, padding
        self._cache: tuple | None = None

    def _taps(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        k, s, p = self.kernel, self.stride, self.padding
        b, h, w, c = x.shape
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"max pool {self.name!r}: a {k}x{k} window does not fit {x.shape}")
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf) if p else x
        taps = np.stack([xp[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :]
                         for i in range(k) for j in range(k)])
        return taps, oh, ow

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        x = np.asarray(x, F32)
        if x.ndim != 4:
            raise ValueError(f"max pool {self.name!r} expects NHWC input, got shape {x.shape}")
        taps, oh, ow = self._taps(x)
        arg = np.argmax(taps, axis=0)          # first maximal tap wins
        if train:
            self._cache = (x.shape, arg)
        return np.take_along_axis(taps, arg[None], axis=0)[0].astype(F32, copy=False)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError(f"max pool {self.name!r}: backward() needs a forward(..., train=True) first")
        shape, arg = self._cache
        k, st, p = self.kernel, self.stride, self.padding
        b, h, w, c = shape
        oh, ow = arg.shape[1:3]
        dy = np.asarray(dy, F32)
        dxp = np.zeros((b, h + 2 * p, w + 2 * p, c), F32)
        for t in range(k * k):             # taps in (kh, kw) order: a fixed float32 summation order
            i, j = divmod(t, k)
            dxp[:, i:i + st * (oh - 1) + 1:st, j:j + st * (ow - 1) + 1:st, :] += np.where(arg == t, dy, F32(0))
        self._cache = None
        return dxp[:, p:p + h, p:p + w, :]


class GlobalAvgPool(Layer):
    """Mean over ``H`` and ``W``: (B, H, W, C) -> (B, 1, 1, C)."""

    def __init__(self, name: str = "avgpool") -> None:
        self.name = name
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        x = np.asarray(x, F32)
        if x.ndim != 4:
            raise ValueError(f"global average pool {self.name!r} expects NHWC input, got shape {x.shape}")
        if train:
            self._shape = x.shape
        return x.mean(axis=(1, 2), keepdims=True, dtype=F32)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray:
        if self._shape is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(..., train=True) first")
        b, h, w, c = self._shape
        self._shape = None
        return np.broadcast_to(np.asarray(dy, F32).reshape(b, 1, 1, c) / F32(h * w), (b, h, w, c)).copy()


class Add(Layer):
    """Residual add of two tensors of one shape; the gradient goes to both."""

    def __init__(self, name: str = "add") -> None:
        self.name = name

    def forward(self, a: np.ndarray, b: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        a, b = np.asarray(a, F32), np.asarray(b, F32)
        if a.shape != b.shape:
            raise ValueError(f"residual add {self.name!r}: shapes {a.shape} and {b.shape} differ")
        return a + b

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> tuple[np.ndarray, np.ndarray]:
        dy = np.asarray(dy, F32)
        return dy, dy
