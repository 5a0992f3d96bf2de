"""BDWP (bidirectional weight pruning): N:M masks, GEMM lowering of layers, and the training step.

``nm_mask`` is the single definition of N:M selection used by the golden model, the compressed format,
the driver and the tests: in every group of ``m`` consecutive elements along ``axis`` it keeps the ``n``
largest magnitudes, ties going to the lower index.

Every layer is lowered to three GEMMs per iteration (``docs/bdwp.md``):

* **FF**  ``Y  = X . W_ff^T``  with ``W_ff = prune(W, N, M, axis=K)`` (sparse along the reduction axis ``K``);
* **BP**  ``dX = dY . W_bp``   with ``W_bp = prune(W, N, M, axis=C_out)`` (sparse along ``C_out``), pruned
  from the dense master weights (``bp_mask="independent"``, default) or from ``W_ff`` (``bp_mask="nested"``);
* **WU**  ``dW = dY^T . X``    dense.

All GEMMs go through a :class:`GemmBackend`; the training code never calls :mod:`sat.sw.numerics` directly, so
the same code trains on the golden model, in RTL simulation or on the card. Operands are quantized to the
operand format (FP16 or BF16) before each GEMM, results are FP32. Everything else (bias, ReLU, loss, col2im,
the SGD/SR-STE update, loss scaling) runs on the host in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from sat.sw import numerics

from .backend import (
    GemmBackend,
    GoldenBackend,
    backend_names,
    get_backend,
    k_chunks,
    register_backend,
    sparse_chunk,
    sum_partials,
)
from .nm import NM, check_nm, format_nm, nm_mask, parse_nm, prune
from .validate import check_float, check_int, real_array

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sat.sw.nmformat import NMOperand

__all__ = [
    "check_nm", "nm_mask", "prune",
    "NM", "parse_nm", "format_nm",
    "GemmBackend", "GoldenBackend", "k_chunks", "sum_partials", "sparse_chunk", "register_backend", "get_backend",
    "backend_names",
    "PassPolicy", "BPMask", "BDWPSettings", "pass_is_sparse",
    "ff_weights", "bp_weights", "gemm_ff", "gemm_bp", "gemm_wu",
    "im2col", "col2im", "conv_output_size",
    "Layer", "GemmLayer", "Linear", "Conv2d", "Flatten", "Sequential",
    "softmax_cross_entropy", "LossScaler", "SGD",
]


# ----------------------------------------------------------------------------------------------------------
# Settings and the dense/sparse policy

PassPolicy = Literal["auto", "dense", "sparse"]
BPMask = Literal["independent", "nested"]
_POLICIES = ("auto", "dense", "sparse")
_BP_MASKS = ("independent", "nested")


@dataclass(frozen=True)
class BDWPSettings:
    """How the GEMMs of one training run are executed.

    Parameters
    ----------
    nm : (n, m) or None
        The N:M pattern of sparse passes; ``None`` trains dense.
    fmt : "fp16" or "bf16"
        GEMM operand format.
    bp_mask : "independent" or "nested"
        ``independent``: ``W_bp = prune(W, axis=C_out)`` from the dense master weights;
        ``nested``: ``W_bp = prune(W_ff, axis=C_out)``.
    backend : GemmBackend
        Where the GEMMs run (default: :class:`GoldenBackend`).

    Raises
    ------
    ValueError
        For an invalid pattern, format or ``bp_mask``.
    """

    nm: NM = (2, 8)
    fmt: str = "fp16"
    bp_mask: BPMask = "independent"
    backend: GemmBackend = field(default_factory=GoldenBackend)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nm", parse_nm(self.nm))
        object.__setattr__(self, "fmt", numerics.get_format(self.fmt).name)
        if self.bp_mask not in _BP_MASKS:
            raise ValueError(f"bp_mask must be one of {_BP_MASKS}, not {self.bp_mask!r}")
        if not isinstance(self.backend, GemmBackend):
            raise ValueError(f"backend must provide dense(a, b, fmt) and sparse(a, op, fmt), "
                             f"got {self.backend!r}")


def pass_is_sparse(policy: PassPolicy, length: int, nm: NM) -> bool:
    """Whether a FF or BP pass runs N:M-sparse.

    ``"dense"`` and ``"sparse"`` force the mode (``"sparse"`` zero-pads a ragged last group). ``"auto"``
    runs sparse exactly when the pass's group axis (``K`` for FF, ``C_out`` for BP) has a length that is a
    positive multiple of ``M`` and ``N < M``: then no group is padded and the work shrinks by ``N/M``.
    For 3x3 convolutions ``K = 9 * C_in`` with ``9`` odd, so this is also the condition that no group
    straddles two kernel taps. It keeps the first convolution (``C_in`` of 1 or 3) and the BP pass of a
    10-way classifier dense, as the BDWP method prescribes.

    Parameters
    ----------
    policy : "auto", "dense" or "sparse"
    length : int
        Length of the group axis.
    nm : (n, m) or None
        ``None`` (dense training) always gives ``False``.

    Raises
    ------
    ValueError
        For an unknown policy.
    """
    if policy not in _POLICIES:
        raise ValueError(f"pass policy must be one of {_POLICIES}, not {policy!r}")
    if nm is None or policy == "dense":
        return False
    if policy == "sparse":
        return True
    n, m = nm
    return n < m and length >= m and length % m == 0


# ----------------------------------------------------------------------------------------------------------
# The three GEMMs

def ff_weights(w: np.ndarray, nm: NM, sparse: bool = True) -> np.ndarray:
    """``W_ff``: ``w`` (C_out, K) pruned N:M along ``K`` (axis 1), or ``w`` itself when dense."""
    if nm is None or not sparse:
        return w
    return prune(w, nm[0], nm[1], axis=1)


def bp_weights(w: np.ndarray, w_ff: np.ndarray, nm: NM, bp_mask: BPMask = "independent",
               sparse: bool = True) -> np.ndarray:
    """``W_bp`` (C_out, K): the BP weights.

    The base is ``w`` (``independent``) or ``w_ff`` (``nested``); a sparse pass prunes it N:M along ``C_out``
    (axis 0), a dense pass uses the base unpruned.

    Raises
    ------
    ValueError
        For an unknown ``bp_mask``.
    """
    if bp_mask not in _BP_MASKS:
        raise ValueError(f"bp_mask must be one of {_BP_MASKS}, not {bp_mask!r}")
    base = w_ff if bp_mask == "nested" else w
    if nm is None or not sparse:
        return base
    return prune(base, nm[0], nm[1], axis=0)


def _compress(b: np.ndarray, nm: tuple[int, int], mask: np.ndarray | None) -> NMOperand:
    from sat.sw import nmformat  # the shared compressed format (values + in-group indices)

    return nmformat.compress(b, nm[0], nm[1], mask=mask)


def gemm_ff(x: np.ndarray, w_ff: np.ndarray, s: BDWPSettings, sparse: bool,
            mask: np.ndarray | None = None) -> np.ndarray:
    """FF GEMM ``Y = X . W_ff^T`` for ``x`` (rows, K) and ``w_ff`` (C_out, K); FP32 result (rows, C_out).

    A sparse pass hands the backend ``compress(W_ff^T)``, i.e. ``W_ff^T`` (K x C_out) compressed along K,
    selecting ``mask`` (C_out, K) when given (the FF mask of the master weights), else ``W_ff``'s own N:M
    selection.
    """
    xq = numerics.quantize(x, s.fmt)
    wq = numerics.quantize(w_ff, s.fmt)
    if sparse and s.nm is not None:
        mask_t = None if mask is None else np.ascontiguousarray(mask.T)
        op = _compress(np.ascontiguousarray(wq.T), s.nm, mask_t)
        return s.backend.sparse(xq, op, s.fmt)
    return s.backend.dense(xq, np.ascontiguousarray(wq.T), s.fmt)


def gemm_bp(dy: np.ndarray, w_bp: np.ndarray, s: BDWPSettings, sparse: bool,
            mask: np.ndarray | None = None) -> np.ndarray:
    """BP GEMM ``dX = dY . W_bp`` for ``dy`` (rows, C_out) and ``w_bp`` (C_out, K); FP32 result (rows, K).

    A sparse pass hands the backend ``compress(W_bp)``, compressed along ``C_out`` (its rows), selecting
    ``mask`` (C_out, K) when given.
    """
    dyq = numerics.quantize(dy, s.fmt)
    wq = numerics.quantize(w_bp, s.fmt)
    if sparse and s.nm is not None:
        return s.backend.sparse(dyq, _compress(wq, s.nm, mask), s.fmt)
    return s.backend.dense(dyq, wq, s.fmt)


def gemm_wu(dy: np.ndarray, x: np.ndarray, s: BDWPSettings) -> np.ndarray:
    """WU GEMM ``dW = dY^T . X`` (dense) for ``dy`` (rows, C_out) and ``x`` (rows, K); FP32 (C_out, K)."""
    dyq = numerics.quantize(dy, s.fmt)
    xq = numerics.quantize(x, s.fmt)
    return s.backend.dense(np.ascontiguousarray(dyq.T), xq, s.fmt)


# ----------------------------------------------------------------------------------------------------------
# Convolution lowering (channels-last)

def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one spatial axis.

    Raises
    ------
    ValueError
        If the kernel does not fit the padded input, or for a size, kernel or stride below 1 or a negative padding.
    """
    size, kernel = check_int(size, "input size", low=1), check_int(kernel, "kernel", low=1)
    stride, padding = check_int(stride, "stride", low=1), check_int(padding, "padding", low=0)
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} does not fit an input of {size} with padding {padding}")
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Channels-last im2col: ``x`` (B, H, W, C) -> (B*OH*OW, kh*kw*C).

    Row ``(b*OH + oh)*OW + ow`` holds the receptive field of output pixel ``(b, oh, ow)``; column
    ``(i*kw + j)*C + c`` holds ``x_padded[b, oh*stride + i, ow*stride + j, c]`` (``c`` fastest, then ``j``,
    then ``i``), which is the order of ``K`` in the weight view ``W`` (C_out, K).

    Raises
    ------
    ValueError
        If ``x`` is not 4-D or the kernel does not fit.
    """
    if x.ndim != 4:
        raise ValueError(f"im2col expects NHWC input (B, H, W, C), got shape {x.shape}")
    b, h, w, c = x.shape
    oh = conv_output_size(h, kh, stride, padding)
    ow = conv_output_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else x
    taps = [xp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=3).reshape(b * oh * ow, kh * kw * c)


def col2im(cols: np.ndarray, x_shape: Sequence[int], kh: int, kw: int, stride: int = 1,
           padding: int = 0) -> np.ndarray:
    """Adjoint of :func:`im2col` on the host, in float32: scatter-add columns back to (B, H, W, C).

    The order is fixed: taps are added in ascending ``(i, j)`` (row-major), each a float32 add, so the result
    is deterministic.

    Raises
    ------
    ValueError
        If ``cols`` does not have the shape :func:`im2col` would produce for ``x_shape``.
    """
    b, h, w, c = x_shape
    oh = conv_output_size(h, kh, stride, padding)
    ow = conv_output_size(w, kw, stride, padding)
    if cols.shape != (b * oh * ow, kh * kw * c):
        raise ValueError(f"col2im: columns of shape {cols.shape} do not match input {tuple(x_shape)} "
                         f"with a {kh}x{kw} kernel (expected {(b * oh * ow, kh * kw * c)})")
    d = cols.astype(np.float32, copy=False).reshape(b, oh, ow, kh, kw, c)
    xp = np.zeros((b, h + 2 * padding, w + 2 * padding, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            cols_ = slice(j, j + stride * (ow - 1) + 1, stride)
            xp[:, rows, cols_, :] += d[:, :, :, i, j, :]
    return xp[:, padding:padding + h, padding:padding + w, :]


# ----------------------------------------------------------------------------------------------------------
# Layers

class Layer:
    """A host-side network stage: ``forward(x, s, train)`` and ``backward(dy, s)``."""

    name: str = ""

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray | None:
        raise NotImplementedError


class GemmLayer(Layer):
    """A layer lowered to the FF/BP/WU GEMMs, with FP32 master weights ``weight`` (C_out, K) and ``bias``.

    Parameters
    ----------
    c_out, k : int
        Output features and reduction length.
    name : str
        Layer name (used by per-layer policies and in results).
    ff, bp : "auto", "dense" or "sparse"
        Per-pass policy (see :func:`pass_is_sparse`).
    relu : bool
        Apply a fused ReLU to the output (host side).
    bias : bool
        Add a float32 bias on the host after the GEMM.
    rng : numpy Generator
        For He-normal initialisation of the weights (bias starts at zero).

    Raises
    ------
    ValueError
        For non-positive sizes or an unknown policy.
    """

    def __init__(self, c_out: int, k: int, *, name: str, ff: PassPolicy = "auto", bp: PassPolicy = "auto",
                 relu: bool = False, bias: bool = True, rng: np.random.Generator | None = None) -> None:
        c_out, k = check_int(c_out, f"layer {name!r}: C_out"), check_int(k, f"layer {name!r}: K")
        if c_out < 1 or k < 1:
            raise ValueError(f"layer {name!r}: C_out and K must be positive, got C_out={c_out}, K={k}")
        for label, pol in (("ff", ff), ("bp", bp)):
            if pol not in _POLICIES:
                raise ValueError(f"layer {name!r}: {label} policy must be one of {_POLICIES}, not {pol!r}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.name = name
        self.ff = ff
        self.bp = bp
        self.relu = relu
        self.weight = (rng.standard_normal((c_out, k)) * np.sqrt(2.0 / k)).astype(np.float32)
        self.bias = np.zeros(c_out, np.float32) if bias else None
        self.grad_weight: np.ndarray | None = None
        self.grad_bias: np.ndarray | None = None
        self.mask_ff: np.ndarray | None = None  # FF mask of the last forward pass (None: dense)
        self.needs_input_grad = True
        self._cache: dict[str, np.ndarray] = {}

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    @property
    def k(self) -> int:
        return self.weight.shape[1]

    def ff_sparse(self, nm: NM) -> bool:
        """Whether this layer's FF pass runs sparse for ``nm`` (group axis ``K``)."""
        return pass_is_sparse(self.ff, self.k, nm)

    def bp_sparse(self, nm: NM) -> bool:
        """Whether this layer's BP pass runs sparse for ``nm`` (group axis ``C_out``)."""
        return pass_is_sparse(self.bp, self.c_out, nm)

    # lowering hooks
    def _lower(self, x: np.ndarray) -> np.ndarray:
        return x

    def _raise_output(self, y2: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return y2

    def _lower_grad(self, dy: np.ndarray) -> np.ndarray:
        return dy

    def _raise_input_grad(self, dx2: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return dx2

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        """FF: lower ``x``, ``Y = X . W_ff^T`` (+ bias, ReLU); cache what BP and WU need when ``train``."""
        x = np.asarray(x, np.float32)
        x2 = self._lower(x)
        if x2.shape[1] != self.k:
            raise ValueError(f"layer {self.name!r} expects K={self.k} inputs per row, got {x2.shape[1]}")
        ff_sparse = self.ff_sparse(s.nm)
        mask_ff = nm_mask(self.weight, s.nm[0], s.nm[1], axis=1) if ff_sparse else None
        w_ff = self.weight if mask_ff is None else np.where(mask_ff, self.weight, np.float32(0))
        y2 = gemm_ff(x2, w_ff, s, ff_sparse, mask_ff)
        if self.bias is not None:
            y2 = y2 + self.bias
        if self.relu:
            y2 = np.maximum(y2, np.float32(0))
        if train:
            self.mask_ff = mask_ff
            self._cache = {"x2": x2, "w_ff": w_ff, "y2": y2, "x_shape": np.array(x.shape)}
        return self._raise_output(y2, x.shape)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray | None:
        """BP and WU: ``dW = dY^T . X`` (stored in ``grad_weight``), ``dX = dY . W_bp`` (returned).

        Returns ``None`` when ``needs_input_grad`` is false (the first layer).

        Raises
        ------
        RuntimeError
            If called without a preceding ``forward(..., train=True)``.
        """
        if not self._cache:
            raise RuntimeError(f"layer {self.name!r}: backward() needs a forward(..., train=True) first")
        c = self._cache
        dy2 = self._lower_grad(np.asarray(dy, np.float32))
        if self.relu:
            dy2 = np.where(c["y2"] > 0, dy2, np.float32(0))
        self.grad_weight = gemm_wu(dy2, c["x2"], s)
        if self.bias is not None:
            self.grad_bias = dy2.sum(axis=0, dtype=np.float32)
        dx = None
        if self.needs_input_grad:
            bp_sparse = self.bp_sparse(s.nm)
            base = c["w_ff"] if s.bp_mask == "nested" else self.weight
            mask_bp = nm_mask(base, s.nm[0], s.nm[1], axis=0) if bp_sparse else None
            w_bp = base if mask_bp is None else np.where(mask_bp, base, np.float32(0))
            dx2 = gemm_bp(dy2, w_bp, s, bp_sparse, mask_bp)
            dx = self._raise_input_grad(dx2, tuple(int(v) for v in c["x_shape"]))
        self._cache = {}
        return dx

    def parameters(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """``(name, value, gradient)`` of every parameter array."""
        out = [("weight", self.weight, self.grad_weight)]
        if self.bias is not None:
            out.append(("bias", self.bias, self.grad_bias))
        return out


class Linear(GemmLayer):
    """Fully connected layer: ``x`` (B, C_in) -> (B, C_out); ``W`` is (C_out, K = C_in).

    Parameters
    ----------
    c_in, c_out : int
        Input and output features.
    **kwargs
        See :class:`GemmLayer` (``name``, ``ff``, ``bp``, ``relu``, ``bias``, ``rng``).
    """

    def __init__(self, c_in: int, c_out: int, **kwargs) -> None:
        super().__init__(c_out, c_in, **kwargs)


class Conv2d(GemmLayer):
    """Channels-last 2-D convolution ``x`` (B, H, W, C_in) -> (B, OH, OW, C_out), lowered by :func:`im2col`.

    ``W`` is viewed as (C_out, K) with ``K`` over ``(kh, kw, c_in)``, ``c_in`` fastest; :attr:`kernel` is the
    (C_out, kh, kw, C_in) view of the same array.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    kernel : int
        Square kernel size.
    stride, padding : int
        Stride and zero padding (same along H and W).
    **kwargs
        See :class:`GemmLayer`.

    Raises
    ------
    ValueError
        For non-positive kernel or stride, or negative padding.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, stride: int = 1, padding: int = 0,
                 **kwargs) -> None:
        c_in, kernel = check_int(c_in, "conv C_in"), check_int(kernel, "conv kernel")
        stride, padding = check_int(stride, "conv stride"), check_int(padding, "conv padding")
        if kernel < 1 or stride < 1 or padding < 0:
            raise ValueError(f"conv needs kernel >= 1, stride >= 1, padding >= 0; got kernel={kernel}, "
                             f"stride={stride}, padding={padding}")
        super().__init__(c_out, kernel * kernel * c_in, **kwargs)
        self.c_in = c_in
        self.kernel_size = kernel
        self.stride = stride
        self.padding = padding

    @property
    def kernel(self) -> np.ndarray:
        """The weights as (C_out, kh, kw, C_in) (a view of :attr:`weight`)."""
        ks = self.kernel_size
        return self.weight.reshape(self.c_out, ks, ks, self.c_in)

    def _lower(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[3] != self.c_in:
            raise ValueError(f"layer {self.name!r} expects NHWC input with {self.c_in} channels, "
                             f"got shape {x.shape}")
        return im2col(x, self.kernel_size, self.kernel_size, self.stride, self.padding)

    def _out_hw(self, x_shape: tuple[int, ...]) -> tuple[int, int]:
        return (conv_output_size(x_shape[1], self.kernel_size, self.stride, self.padding),
                conv_output_size(x_shape[2], self.kernel_size, self.stride, self.padding))

    def _raise_output(self, y2: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        oh, ow = self._out_hw(x_shape)
        return y2.reshape(x_shape[0], oh, ow, self.c_out)

    def _lower_grad(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(-1, self.c_out)

    def _raise_input_grad(self, dx2: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        ks = self.kernel_size
        return col2im(dx2, x_shape, ks, ks, self.stride, self.padding)


class Flatten(Layer):
    """Host-side reshape (B, ...) -> (B, prod(...)); for NHWC input the feature order is (h, w, c)."""

    def __init__(self, name: str = "flatten") -> None:
        self.name = name
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError("Flatten.backward() needs a forward() first")
        return dy.reshape(self._shape)


# ----------------------------------------------------------------------------------------------------------
# Loss, loss scaling, optimizer

def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy on the host in float32.

    Parameters
    ----------
    logits : (B, classes) array
    labels : (B,) integer array

    Returns
    -------
    loss : float
        Mean over the batch.
    dlogits : (B, classes) float32
        Gradient of the mean loss, ``(softmax - onehot) / B``.

    Raises
    ------
    ValueError
        If shapes disagree or a label is out of range.
    """
    logits = real_array(logits, "logits").astype(np.float32, copy=False)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers (class indices), not {labels.dtype}")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits (B, classes) and labels (B,), got {logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
    with np.errstate(over="ignore", invalid="ignore"):
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        sum_e = e.sum(axis=1, keepdims=True)
        p = e / sum_e
        rows = np.arange(labels.size)
        loss = float(np.mean(np.log(sum_e[:, 0]) - z[rows, labels]))
    d = p.astype(np.float32)
    d[rows, labels] -= 1
    return loss, d / np.float32(labels.size)


class LossScaler:
    """FP16 loss scaling on the host, static or dynamic.

    The loss gradient is multiplied by :attr:`scale` before BP so small gradients survive FP16 operands; the
    weight gradients are divided by it before the update. A step whose gradients hold Inf or NaN is skipped.
    Dynamic scaling then multiplies the scale by ``backoff_factor`` (default halves it) and, after
    ``growth_interval`` consecutive good steps, by ``growth_factor`` (default doubles it).

    Parameters
    ----------
    init_scale : float
        Initial (or, static, the fixed) scale; 1.0 disables scaling (BF16).
    dynamic : bool
    growth_factor, backoff_factor : float
    growth_interval : int
        Good steps before the scale grows.
    min_scale, max_scale : float
        Bounds of a dynamic scale.

    Raises
    ------
    ValueError
        For a non-positive or non-finite scale, factors on the wrong side of 1, or a non-positive interval.
    """

    def __init__(self, init_scale: float = 2.0**15, dynamic: bool = True, *, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 200, min_scale: float = 1.0,
                 max_scale: float = 2.0**24) -> None:
        init_scale = check_float(init_scale, "loss scale", low=0.0, low_open=True)
        growth_factor = check_float(growth_factor, "growth_factor")
        backoff_factor = check_float(backoff_factor, "backoff_factor")
        if not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError(f"need growth_factor > 1 and 0 < backoff_factor < 1, got {growth_factor}, "
                             f"{backoff_factor}")
        if check_int(growth_interval, "growth_interval") < 1:
            raise ValueError(f"growth_interval must be at least 1, not {growth_interval}")
        self.scale = float(init_scale)
        self.dynamic = dynamic
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.good_steps = 0
        self.skipped = 0

    @classmethod
    def for_format(cls, fmt: str, loss_scale: str | float = "dynamic") -> LossScaler:
        """Default scaler: BF16 none (static 1.0); FP16 ``"dynamic"`` or a static float scale."""
        if numerics.get_format(fmt).name == "bf16":
            return cls(1.0, dynamic=False)
        if loss_scale == "dynamic":
            return cls()
        return cls(float(loss_scale), dynamic=False)

    def update(self, finite: bool) -> bool:
        """Record one step's overflow check; return whether the step may be applied."""
        if not finite:
            self.skipped += 1
            self.good_steps = 0
            if self.dynamic:
                self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            return False
        if self.dynamic:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale = min(self.scale * self.growth_factor, self.max_scale)
                self.good_steps = 0
        return True

    def __repr__(self) -> str:
        return f"LossScaler(scale={self.scale}, dynamic={self.dynamic}, skipped={self.skipped})"


class SGD:
    """SGD with momentum, the SR-STE refinement term and optional weight decay, on FP32 master weights.

    For each weight ``W`` with gradient ``dW`` and FF mask ``mask_ff`` (all ones for a dense FF pass):
    ``g = dW + lambda_w * (1 - mask_ff) * W + weight_decay * W``; ``v = momentum * v + g``; ``W -= lr * v``.
    Biases use ``g = dB`` (no decay, no SR-STE).

    Parameters
    ----------
    lr : float
    momentum : float
    weight_decay : float
    lambda_w : float
        SR-STE coefficient (default 2e-4).

    Raises
    ------
    ValueError
        For a negative or non-finite hyper-parameter (NaN or Inf would train to NaN) or a momentum not below 1.
    """

    def __init__(self, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
                 lambda_w: float = 2e-4) -> None:
        lr, weight_decay = check_float(lr, "lr", low=0.0), check_float(weight_decay, "weight_decay", low=0.0)
        lambda_w = check_float(lambda_w, "lambda_w", low=0.0)
        momentum = check_float(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lambda_w = lambda_w
        self._velocity: dict[int, np.ndarray] = {}

    def direction(self, layer: GemmLayer, inv_scale: float = 1.0) -> dict[str, np.ndarray]:
        """The refined gradients ``g`` of ``layer`` (before momentum), unscaling its raw gradients."""
        f32 = np.float32
        g_w = layer.grad_weight * f32(inv_scale)
        if layer.mask_ff is not None and self.lambda_w:
            g_w = g_w + f32(self.lambda_w) * np.where(layer.mask_ff, f32(0), layer.weight)
        if self.weight_decay:
            g_w = g_w + f32(self.weight_decay) * layer.weight
        out = {"weight": g_w.astype(np.float32)}
        if layer.bias is not None:
            out["bias"] = (layer.grad_bias * f32(inv_scale)).astype(np.float32)
        return out

    def step(self, layers: Iterable[GemmLayer], inv_scale: float = 1.0) -> None:
        """Apply one update to every layer (in place on the master weights)."""
        f32 = np.float32
        for layer in layers:
            for name, g in self.direction(layer, inv_scale).items():
                param = getattr(layer, name)
                key = id(param)
                v = self._velocity.get(key)
                v = g if v is None else f32(self.momentum) * v + g
                self._velocity[key] = v
                param -= f32(self.lr) * v


# ----------------------------------------------------------------------------------------------------------
# Network

class Sequential:
    """A chain of layers trained with BDWP.

    The first :class:`GemmLayer` does not compute an input gradient (``needs_input_grad = False``): nothing
    consumes it, so its BP GEMM is never issued.

    Parameters
    ----------
    layers : sequence of Layer
        Layer names must be unique.

    Raises
    ------
    ValueError
        For duplicate layer names or a chain without any GEMM layer.
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        gemm = self.gemm_layers
        if not gemm:
            raise ValueError("a Sequential needs at least one Linear or Conv2d layer")
        for layer in gemm:
            layer.needs_input_grad = True
        gemm[0].needs_input_grad = False
        self._first = self.layers.index(gemm[0])

    @property
    def gemm_layers(self) -> list[GemmLayer]:
        return [layer for layer in self.layers if isinstance(layer, GemmLayer)]

    def layer(self, name: str) -> Layer:
        """The layer called ``name``.

        Raises
        ------
        KeyError
            If there is none.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers are {[la.name for la in self.layers]}")

    def set_policy(self, name: str, ff: PassPolicy | None = None, bp: PassPolicy | None = None) -> None:
        """Override the FF and/or BP pass policy of layer ``name``.

        Raises
        ------
        ValueError
            If ``name`` is not a GEMM layer or a policy is unknown.
        """
        layer = self.layer(name)
        if not isinstance(layer, GemmLayer):
            raise ValueError(f"layer {name!r} has no GEMM passes to configure")
        for pol in (ff, bp):
            if pol is not None and pol not in _POLICIES:
                raise ValueError(f"pass policy must be one of {_POLICIES}, not {pol!r}")
        if ff is not None:
            layer.ff = ff
        if bp is not None:
            layer.bp = bp

    def pass_modes(self, nm: NM) -> dict[str, dict[str, str]]:
        """Per layer, whether FF, BP and WU run ``"sparse"``, ``"dense"`` or are ``"skipped"``."""
        out = {}
        for layer in self.gemm_layers:
            out[layer.name] = {
                "ff": "sparse" if layer.ff_sparse(nm) else "dense",
                "bp": ("sparse" if layer.bp_sparse(nm) else "dense") if layer.needs_input_grad else "skipped",
                "wu": "dense",
            }
        return out

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, s, train)
        return x

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> None:
        for layer in reversed(self.layers[self._first:]):
            dy = layer.backward(dy, s)

    def train_step(self, x: np.ndarray, labels: np.ndarray, s: BDWPSettings, opt: SGD,
                   scaler: LossScaler) -> dict[str, float | bool]:
        """One BDWP iteration: FF, loss, scaled BP/WU, overflow check, SGD/SR-STE update.

        Returns ``{"loss": float, "applied": bool, "scale": float}`` (``scale``: the one used in this step).
        """
        logits = self.forward(x, s, train=True)
        loss, dlogits = softmax_cross_entropy(logits, labels)
        scale = scaler.scale
        self.backward(dlogits * np.float32(scale), s)
        finite = all(np.isfinite(g).all() for layer in self.gemm_layers
                     for _, _, g in layer.parameters() if g is not None)
        applied = scaler.update(finite and np.isfinite(loss))
        if applied:
            opt.step(self.gemm_layers, inv_scale=1.0 / scale)
        return {"loss": loss, "applied": applied, "scale": scale}

    def predict(self, x: np.ndarray, s: BDWPSettings, batch_size: int = 256) -> np.ndarray:
        """Class predictions (argmax of the logits), computed with the same GEMMs as training."""
        out = [np.argmax(self.forward(x[i:i + batch_size], s, train=False), axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)
