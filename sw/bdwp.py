"""BDWP (bidirectional weight pruning): N:M masks, GEMM lowering of layers, and the training step.

``nm_mask`` is the single definition of N:M selection used by the golden model, the compressed format,
the driver and the tests: in every group of ``m`` consecutive elements along ``axis`` it keeps the ``n``
largest magnitudes, ties going to the lower index.

Every layer runs three passes per iteration (``docs/bdwp.md``):

* **FF**  ``Y  = X . W_ff^T``  with ``W_ff = prune(W, N, M, axis=K)`` (sparse along the reduction axis ``K``);
* **BP**  ``dX = dY . W_bp``   with ``W_bp = prune(W, N, M, axis=C_out)`` (sparse along ``C_out``), pruned
  from the dense master weights (``bp_mask="independent"``, default) or from ``W_ff`` (``bp_mask="nested"``);
* **WU**  ``dW = dY^T . X``    dense.

For a convolution these are the implicit-GEMM passes of :mod:`sat.sw.conv` (BP is a transposed convolution);
a linear layer is their ``1 x 1`` case. Every pass goes through a :class:`GemmBackend` (its ``conv`` entry point
when it has one, else its GEMMs on the lowered operands); the training code never calls
:mod:`sat.sw.numerics` directly, so the same code trains on the golden model, in RTL simulation or on the card.
Operands are quantized to the operand format (FP16 or BF16) before each pass, results are FP32. Everything else
(bias, ReLU, loss, the SGD/SR-STE update, loss scaling; batch norm, pooling and residual adds in
:mod:`sat.sw.hostops`) runs on the host in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from sat.sw import conv as _conv
from sat.sw import numerics
from sat.sw.conv import ConvShape, conv_output_size, im2col
from sat.sw.network import POLICIES, PassPolicy, pass_is_sparse

from .backend import (
    Float32Backend,
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
    "GemmBackend", "GoldenBackend", "Float32Backend", "resident", "release",
    "k_chunks", "sum_partials", "sparse_chunk", "register_backend", "get_backend",
    "backend_names",
    "PassPolicy", "BPMask", "BDWPSettings", "pass_is_sparse",
    "ff_weights", "bp_weights", "gemm_ff", "gemm_bp", "gemm_wu", "FFState", "layer_ff", "layer_wu_bp",
    "ConvShape", "im2col", "col2im", "conv_output_size",
    "Layer", "GemmLayer", "Linear", "Conv2d", "Flatten", "Sequential",
    "softmax_cross_entropy", "LossScaler", "SGD",
]


def resident(backend: GemmBackend, x: np.ndarray, fmt: str):
    """Hand an operand-format activation tensor to ``backend`` for reuse by several passes.

    A device backend (one with ``put``) copies it to device memory once and returns the handle, which its
    ``conv`` entry point accepts wherever an array is accepted (the FF input reused by WU, the output gradient
    reused by BP and WU); other backends get the array itself. Pair every call with :func:`release`.
    """
    put = getattr(backend, "put", None)
    return x if put is None else put(x, fmt)


def release(backend: GemmBackend, handle) -> None:
    """Give back a handle from :func:`resident` (no-op for a plain array or ``None``)."""
    free = getattr(backend, "release", None)
    if free is not None and handle is not None and not isinstance(handle, np.ndarray):
        free(handle)


# ----------------------------------------------------------------------------------------------------------
# Settings and the dense/sparse policy

BPMask = Literal["independent", "nested"]
_POLICIES = POLICIES
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
    narrow : bool
        Mixed precision as SPEC section 2 and the paper's AMP: FF results (activations) and BP results (activation
        gradients) in the operand format, each final FP32 result rounded once (the descriptors' RESULT field on a
        device; :func:`sat.sw.numerics.result_values` in the golden model); WU results (weight gradients) stay
        FP32. ``False``: every result FP32.

    Raises
    ------
    ValueError
        For an invalid pattern, format or ``bp_mask``.
    """

    nm: NM = (2, 8)
    fmt: str = "fp16"
    bp_mask: BPMask = "independent"
    backend: GemmBackend = field(default_factory=GoldenBackend)
    narrow: bool = True

    @property
    def act_fmt(self) -> str:
        """Format of FF and BP results: the operand format with :attr:`narrow`, else "fp32"."""
        return self.fmt if self.narrow else "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nm", parse_nm(self.nm))
        object.__setattr__(self, "fmt", numerics.get_format(self.fmt).name)
        if self.bp_mask not in _BP_MASKS:
            raise ValueError(f"bp_mask must be one of {_BP_MASKS}, not {self.bp_mask!r}")
        if not isinstance(self.backend, GemmBackend):
            raise ValueError(f"backend must provide dense(a, b, fmt) and sparse(a, op, fmt), "
                             f"got {self.backend!r}")


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
# One layer's passes (the Linear / Conv2d layers below and the PyTorch front end, sat.torch, call these)

@dataclass
class FFState:
    """What a layer's WU and BP passes need from its FF pass.

    Parameters
    ----------
    shape : ConvShape
        The layer's geometry for this batch.
    x : array or backend handle
        The quantized input, resident on the backend (:func:`resident`); :func:`layer_wu_bp` releases it.
    w_ff : array (C_out, K)
        The FF weights of this iteration (the base of a nested BP mask).
    mask_ff : bool array (C_out, K) or None
        The FF mask (``None``: FF ran dense); the SR-STE term uses it.
    """

    shape: ConvShape
    x: object
    w_ff: np.ndarray
    mask_ff: np.ndarray | None


def layer_ff(weight: np.ndarray, x: np.ndarray, shape: ConvShape, s: BDWPSettings,
             sparse: bool) -> tuple[np.ndarray, FFState]:
    """FF of one layer with FP32 master weights ``weight`` (C_out, K), ``K`` over ``(kh, kw, c_in)``.

    Prunes ``W_ff`` along ``K`` from the current master weights (a sparse pass), quantizes ``x`` to ``s.fmt``,
    makes it resident on the backend and runs the FF pass (:func:`sat.sw.conv.conv_pass`).

    Parameters
    ----------
    weight : float32 array (C_out, K)
    x : float32 array, ``shape.x_shape`` elements
        The input, channels last.
    shape : ConvShape
    s : BDWPSettings
    sparse : bool
        Whether FF runs N:M-sparse (the layer's pass policy, :func:`pass_is_sparse`).

    Returns
    -------
    y : float32 array ``shape.y_shape``
        The result (no bias): FP32, or its values in the operand format (``s.narrow``).
    state : FFState
        For :func:`layer_wu_bp`; release ``state.x`` yourself if there is no backward pass.
    """
    sparse = sparse and s.nm is not None
    mask_ff = nm_mask(weight, s.nm[0], s.nm[1], axis=1) if sparse else None
    w_ff = weight if mask_ff is None else np.where(mask_ff, weight, np.float32(0))
    xh = resident(s.backend, numerics.quantize(x, s.fmt).reshape(shape.x_shape), s.fmt)
    try:
        op = _conv.ff_operand(w_ff, shape, s.fmt, s.nm if sparse else None, mask_ff)
        y = _conv.conv_pass(s.backend, "ff", xh, op, shape, s.fmt, s.act_fmt).reshape(shape.y_shape)
    except BaseException:
        release(s.backend, xh)
        raise
    return y, FFState(shape, xh, w_ff, mask_ff)


def layer_wu_bp(state: FFState, weight: np.ndarray, dy: np.ndarray, s: BDWPSettings, bp_sparse: bool,
                input_grad: bool = True, keep_input: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """WU (dense) and BP of one layer after :func:`layer_ff`; releases the resident input (unless ``keep_input``).

    ``dy`` is quantized to ``s.fmt`` and made resident once for both passes. BP prunes ``W_bp`` along ``C_out``
    from ``weight`` (independent mask) or from ``state.w_ff`` (nested).

    Parameters
    ----------
    state : FFState
        From :func:`layer_ff` of the same iteration.
    weight : float32 array (C_out, K)
        The master weights (as in the FF pass).
    dy : float32 array, ``shape.y_shape`` elements
        The output gradient, channels last.
    s : BDWPSettings
    bp_sparse : bool
        Whether BP runs N:M-sparse.
    input_grad : bool
        Run BP (``False`` for the first layer: nothing consumes ``dX``).
    keep_input : bool
        Leave ``state.x`` resident (another backward pass over the same forward may follow); the caller releases
        it.

    Returns
    -------
    dw : float32 array (C_out, K)
        The dense weight gradient, FP32.
    dx : float32 array ``shape.x_shape`` or None
        The input gradient: FP32, or its values in the operand format (``s.narrow``).
    """
    shape = state.shape
    try:
        dyh = resident(s.backend, numerics.quantize(np.asarray(dy, np.float32), s.fmt).reshape(shape.y_shape),
                       s.fmt)
    except BaseException:
        if not keep_input:
            release(s.backend, state.x)
        raise
    try:
        dw = _conv.conv_pass(s.backend, "wu", dyh, state.x, shape, s.fmt).reshape(shape.c_out, shape.k)
        dx = None
        if input_grad:
            bp_sparse = bp_sparse and s.nm is not None
            base = state.w_ff if s.bp_mask == "nested" else weight
            mask_bp = nm_mask(base, s.nm[0], s.nm[1], axis=0) if bp_sparse else None
            w_bp = base if mask_bp is None else np.where(mask_bp, base, np.float32(0))
            op = _conv.bp_operand(w_bp, shape, s.fmt, s.nm if bp_sparse else None, mask_bp)
            dx = _conv.conv_pass(s.backend, "bp", dyh, op, shape, s.fmt, s.act_fmt).reshape(shape.x_shape)
    finally:
        release(s.backend, dyh)
        if not keep_input:
            release(s.backend, state.x)
    return dw, dx


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

    def geometry(self, x_shape: tuple[int, ...]) -> ConvShape:
        """The :class:`~sat.sw.conv.ConvShape` of this layer on an input of ``x_shape`` (a linear layer is the
        ``1 x 1`` convolution of a ``1 x 1`` image)."""
        if len(x_shape) != 2 or x_shape[1] != self.k:
            raise ValueError(f"layer {self.name!r} expects input (B, {self.k}), got shape {tuple(x_shape)}")
        return ConvShape.linear(x_shape[0], self.k, self.c_out)

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        """FF ``Y = X . W_ff^T`` (+ bias, ReLU) on the backend (:func:`layer_ff`); keeps what BP and WU need when
        ``train``.

        The quantized input goes to the backend once (:func:`resident`) and is reused by WU; the FP32 output
        comes back to the host, whose work (bias, ReLU, the next host operation) needs it.
        """
        x = np.asarray(x, np.float32)
        shape = self.geometry(x.shape)
        y, state = layer_ff(self.weight, x, shape, s, self.ff_sparse(s.nm))
        y2 = y.reshape(shape.pixels, self.c_out)
        if self.bias is not None:
            y2 = y2 + self.bias
        if self.relu:
            y2 = np.maximum(y2, np.float32(0))
        if train:
            release(s.backend, self._cache.get("x"))
            self.mask_ff = state.mask_ff
            self._cache = {"x": state.x, "state": state, "y2": y2, "x_shape": x.shape}
        else:
            release(s.backend, state.x)
        return y2.reshape(self._out_shape(shape))

    def _out_shape(self, shape: ConvShape) -> tuple[int, ...]:
        return (shape.batch, self.c_out)

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> np.ndarray | None:
        """WU ``dW = dY^T . X`` (stored in ``grad_weight``) and BP ``dX = dY . W_bp`` (returned), on the backend.

        Returns ``None`` when ``needs_input_grad`` is false (the first layer).

        Raises
        ------
        RuntimeError
            If called without a preceding ``forward(..., train=True)``.
        """
        if not self._cache:
            raise RuntimeError(f"layer {self.name!r}: backward() needs a forward(..., train=True) first")
        c = self._cache
        state: FFState = c["state"]
        dy2 = np.asarray(dy, np.float32).reshape(state.shape.pixels, self.c_out)
        if self.relu:
            dy2 = np.where(c["y2"] > 0, dy2, np.float32(0))
        self._cache = {}
        if self.bias is not None:
            self.grad_bias = dy2.sum(axis=0, dtype=np.float32)
        self.grad_weight, dx = layer_wu_bp(state, self.weight, dy2, s, self.bp_sparse(s.nm), self.needs_input_grad)
        return None if dx is None else dx.reshape(c["x_shape"])

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
    """Channels-last 2-D convolution ``x`` (B, H, W, C_in) -> (B, OH, OW, C_out); its FF, BP (a transposed
    convolution) and WU passes are those of :mod:`sat.sw.conv` (SPEC section 1.1).

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

    def geometry(self, x_shape: tuple[int, ...]) -> ConvShape:
        if len(x_shape) != 4 or x_shape[3] != self.c_in:
            raise ValueError(f"layer {self.name!r} expects NHWC input with {self.c_in} channels, "
                             f"got shape {tuple(x_shape)}")
        ks = self.kernel_size
        return ConvShape(x_shape[0], x_shape[1], x_shape[2], self.c_in, self.c_out, ks, ks, self.stride,
                         self.padding)

    def _out_shape(self, shape: ConvShape) -> tuple[int, ...]:
        return shape.y_shape


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
