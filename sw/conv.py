"""Golden model of a convolution's three passes on channels-last tensors (SPEC section 1.1, implicit GEMM).

Shapes: ``X (B, H, W, C_in)``, ``W (C_out, kh, kw, C_in)``, ``dY (B, OH, OW, C_out)``, stride ``s``, padding ``p``,
``OH = (H + 2p - kh) div s + 1``. Every output is one FP32 chain (:mod:`sat.sw.numerics`) in this order:

* **FF** ``Y[b,oh,ow,co]``: chain over ``(kh, kw, ci)`` ascending (``ci`` fastest) of
  ``X[b, oh*s+kh-p, ow*s+kw-p, ci] * W_ff[co,kh,kw,ci]``, padding taps zero.
* **BP** (a transposed convolution) ``dX[b,ih,iw,ci]``: chain over ``(kh, kw, co)`` ascending (``co`` fastest) of
  ``dY[b,oh,ow,co] * W_bp[co,kh,kw,ci]`` where ``oh = (ih+p-kh)/s`` and ``ow = (iw+p-kw)/s`` are integers inside
  the output; missing taps are zero activations. Sparse: only the kept ``co`` of each N:M group (groups along
  ``co`` for each ``(kh, kw, ci)``).
* **WU** ``dW[co,kh,kw,ci]``: chain over ``(b, oh, ow)`` ascending of ``dY[b,oh,ow,co] * X[b, oh*s+kh-p, ...]``.

Each pass is, bit for bit, one GEMM on a lowered operand, and that is how this module computes it:

* FF: ``im2col(X)`` (``B*OH*OW x K``, ``K = (kh, kw, ci)``) times ``W_ff^T`` (``K x C_out``), sparse along ``K``;
* BP: ``bp_lower(dY)`` (``B*H*W x K'``, ``K' = (kh, kw, co)``; row ``(b, ih, iw)``, column ``(i, j, co)`` holds
  ``dY[b, (ih+p-i)/s, (iw+p-j)/s, co]`` or zero) times ``W_bp`` viewed as ``K' x C_in`` (:func:`bp_weight_matrix`),
  sparse along ``K'``: with ``C_out`` a multiple of ``M`` (else zero-padded to one, ``co_pad``), every N:M group of
  ``K'`` is ``M`` consecutive ``co`` of one tap;
* WU: ``dY^T`` (``C_out x B*OH*OW``) times ``im2col(X)``, dense.

Only the position of each product in its chain matters, and the lowered GEMM adds the same products in the same
order (zero taps add an exact zero, which leaves a finite sum unchanged). **K chunks**: where a lowered reduction
is longer than one descriptor may hold, it is split by :func:`sat.sw.bdwp.k_chunks` (chunks of the lowered
``K``, ``K'`` or ``B*OH*OW`` index, all but the last of one length, on group boundaries when sparse) and the
chunks' FP32 partials are added in chunk order (:func:`sat.sw.bdwp.sum_partials`); ``GoldenBackend(k_limit=...)``
does this, as the driver does. A linear layer is the ``1 x 1`` convolution of a ``1 x 1`` image: its lowerings
are the identity, so its passes are the plain GEMMs of ``docs/bdwp.md``.

The card lowers convolutions itself (conv descriptors, :meth:`sat.sw.driver.device.SATDevice.conv`); these
lowerings are the golden model's and the tests'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from sat.sw import numerics
from sat.sw.validate import check_int

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sat.sw.bdwp import GemmBackend
    from sat.sw.nmformat import NMOperand

__all__ = ["ConvPass", "PASSES", "ConvShape", "conv_output_size", "im2col", "bp_lower", "bp_weight_matrix",
           "ff_operand", "bp_operand", "lowered_gemm", "conv_ff", "conv_bp", "conv_wu", "conv_pass"]

ConvPass = Literal["ff", "bp", "wu"]
PASSES: tuple[str, ...] = ("ff", "bp", "wu")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one spatial axis, ``(size + 2 padding - kernel) div stride + 1``.

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


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ConvShape:
    """The geometry of one convolution (and of its three passes).

    Parameters
    ----------
    batch, height, width, c_in : int
        Input ``X`` (B, H, W, C_in).
    c_out : int
        Output channels.
    kh, kw : int
        Kernel size.
    stride, padding : int
        Same along H and W.

    Raises
    ------
    ValueError
        For a non-positive size, a negative padding, or a kernel that does not fit the padded input.
    """

    batch: int
    height: int
    width: int
    c_in: int
    c_out: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    padding: int = 0

    def __post_init__(self) -> None:
        for name in ("batch", "height", "width", "c_in", "c_out", "kh", "kw", "stride"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        object.__setattr__(self, "padding", _positive("padding", self.padding, 0))
        conv_output_size(self.height, self.kh, self.stride, self.padding)
        conv_output_size(self.width, self.kw, self.stride, self.padding)

    @classmethod
    def linear(cls, batch: int, c_in: int, c_out: int) -> ConvShape:
        """A linear layer as the ``1 x 1`` convolution of a ``1 x 1`` image."""
        return cls(batch, 1, 1, c_in, c_out)

    @property
    def oh(self) -> int:
        return conv_output_size(self.height, self.kh, self.stride, self.padding)

    @property
    def ow(self) -> int:
        return conv_output_size(self.width, self.kw, self.stride, self.padding)

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, self.c_in)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.oh, self.ow, self.c_out)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.kh, self.kw, self.c_in)

    @property
    def k(self) -> int:
        """FF reduction length ``kh * kw * C_in`` (the columns of ``W`` viewed as ``C_out x K``)."""
        return self.kh * self.kw * self.c_in

    @property
    def pixels(self) -> int:
        """Output pixels ``B * OH * OW``: rows of FF, the reduction of WU."""
        return self.batch * self.oh * self.ow

    @property
    def in_pixels(self) -> int:
        """Input pixels ``B * H * W``: rows of BP."""
        return self.batch * self.height * self.width

    def co_pad(self, m: int = 1) -> int:
        """Channels per tap of the BP reduction ``K'``: ``C_out`` rounded up to a multiple of ``m``, so that no N:M
        group straddles two taps; a single-tap kernel (``1 x 1``, linear layers) keeps ``C_out`` (its ragged last
        group is zero-padded by the compressed format itself)."""
        return self.c_out if self.kh * self.kw == 1 else -(-self.c_out // m) * m

    def bp_k(self, m: int = 1) -> int:
        """BP reduction length ``kh * kw * co_pad(m)``."""
        return self.kh * self.kw * self.co_pad(m)

    def check(self, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``array`` as float32, or a ``ValueError`` naming ``name`` if it is not of ``shape``."""
        array = np.asarray(array, np.float32)
        if array.shape != tuple(shape):
            raise ValueError(f"{name} has shape {array.shape}, this convolution needs {tuple(shape)} ({self})")
        return array


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Channels-last im2col: ``x`` (B, H, W, C) -> (B*OH*OW, kh*kw*C), the FF (and WU) lowering.

    Row ``(b*OH + oh)*OW + ow`` holds the receptive field of output pixel ``(b, oh, ow)``; column
    ``(i*kw + j)*C + c`` holds ``x_padded[b, oh*stride + i, ow*stride + j, c]`` (``c`` fastest, then ``j``,
    then ``i``), the order of ``K`` in the weight view ``W`` (C_out, K).

    Raises
    ------
    ValueError
        If ``x`` is not 4-D or the kernel does not fit.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col expects NHWC input (B, H, W, C), got shape {x.shape}")
    b, h, w, c = x.shape
    oh = conv_output_size(h, kh, stride, padding)
    ow = conv_output_size(w, kw, stride, padding)
    if kh == kw == 1 and stride == 1 and padding == 0:
        return x.reshape(b * h * w, c)
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else x
    taps = [xp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=3).reshape(b * oh * ow, kh * kw * c)


def bp_lower(dy: np.ndarray, shape: ConvShape, m: int = 1) -> np.ndarray:
    """The transposed-convolution lowering of ``dY`` (B, OH, OW, C_out): ``(B*H*W, kh*kw*co_pad(m))``.

    Row ``(b*H + ih)*W + iw`` is input pixel ``(b, ih, iw)``; column ``(i*kw + j)*co_pad + co`` holds
    ``dY[b, (ih+p-i)/s, (iw+p-j)/s, co]`` when both quotients are integers inside the output, else zero (padding
    taps, stride gaps, and the padded channels ``co >= C_out``).

    Raises
    ------
    ValueError
        If ``dy`` does not have the shape ``shape.y_shape``.
    """
    dy = shape.check("dY", dy, shape.y_shape)
    s, p = shape.stride, shape.padding
    cp = shape.co_pad(m)
    if shape.kh == shape.kw == 1 and s == 1 and p == 0 and cp == shape.c_out:
        return dy.reshape(shape.in_pixels, cp)
    out = np.zeros((shape.batch, shape.height, shape.width, shape.kh, shape.kw, cp), np.float32)
    for i in range(shape.kh):
        # input rows ih with (ih + p - i) = s * oh for an output row 0 <= oh < OH
        ih0 = (i - p) % s
        oh0 = (ih0 + p - i) // s
        ihs = np.arange(ih0, shape.height, s)
        ohs = oh0 + np.arange(len(ihs))
        keep_h = (ohs >= 0) & (ohs < shape.oh)
        ihs, ohs = ihs[keep_h], ohs[keep_h]
        for j in range(shape.kw):
            iw0 = (j - p) % s
            ow0 = (iw0 + p - j) // s
            iws = np.arange(iw0, shape.width, s)
            ows = ow0 + np.arange(len(iws))
            keep_w = (ows >= 0) & (ows < shape.ow)
            iws, ows = iws[keep_w], ows[keep_w]
            if len(ihs) and len(iws):
                out[:, ihs[:, None], iws[None, :], i, j, :shape.c_out] = dy[:, ohs[:, None], ows[None, :], :]
    return out.reshape(shape.in_pixels, shape.kh * shape.kw * cp)


def bp_weight_matrix(w: np.ndarray, shape: ConvShape, m: int = 1) -> np.ndarray:
    """``W`` (C_out, kh, kw, C_in) as the BP operand ``K' x C_in``: row ``(i*kw + j)*co_pad + co`` is
    ``W[co, i, j, :]``; padded channels are zero rows. Works for weights and for masks (bool).

    Raises
    ------
    ValueError
        If ``w`` does not have the shape ``shape.w_shape``.
    """
    w = np.asarray(w)
    if w.shape != shape.w_shape:
        raise ValueError(f"W has shape {w.shape}, this convolution needs {shape.w_shape} ({shape})")
    cp = shape.co_pad(m)
    t = np.transpose(w, (1, 2, 0, 3))       # (kh, kw, C_out, C_in)
    if cp != shape.c_out:
        t = np.concatenate([t, np.zeros((shape.kh, shape.kw, cp - shape.c_out, shape.c_in), t.dtype)], axis=2)
    return np.ascontiguousarray(t).reshape(shape.bp_k(m), shape.c_in)


def ff_operand(w_ff: np.ndarray, shape: ConvShape, fmt: str, nm: tuple[int, int] | None = None,
               mask: np.ndarray | None = None) -> np.ndarray | NMOperand:
    """The FF right operand ``W_ff^T`` (``K x C_out``), quantized to ``fmt``: dense, or compressed N:M along ``K``.

    Parameters
    ----------
    w_ff : array (C_out, kh, kw, C_in) or (C_out, K)
        FF weights (already pruned for a sparse pass).
    shape : ConvShape
    fmt : "fp16" or "bf16"
    nm : (n, m), optional
        Compress with this pattern (sparse pass); ``None``: dense.
    mask : bool array like ``w_ff``, optional
        The selection to compress (the FF mask of the master weights); default ``w_ff``'s own N:M selection.
    """
    from sat.sw.nmformat import compress

    wq = numerics.quantize(np.asarray(w_ff, np.float32).reshape(shape.c_out, shape.k), fmt)
    b = np.ascontiguousarray(wq.T)
    if nm is None:
        return b
    mask_t = None if mask is None else np.ascontiguousarray(np.asarray(mask).reshape(shape.c_out, shape.k).T)
    return compress(b, nm[0], nm[1], mask=mask_t)


def bp_operand(w_bp: np.ndarray, shape: ConvShape, fmt: str, nm: tuple[int, int] | None = None,
               mask: np.ndarray | None = None) -> np.ndarray | NMOperand:
    """The BP right operand: ``W_bp`` viewed as ``K' x C_in`` (:func:`bp_weight_matrix`), quantized; dense, or
    compressed N:M along ``K'`` (groups of ``M`` consecutive ``co`` of one tap, ``C_out`` padded to ``co_pad(M)``).

    Parameters
    ----------
    w_bp : array (C_out, kh, kw, C_in) or (C_out, K)
        BP weights (already pruned along ``C_out`` for a sparse pass).
    shape : ConvShape
    fmt : "fp16" or "bf16"
    nm : (n, m), optional
        Compress with this pattern (sparse pass); ``None``: dense.
    mask : bool array like ``w_bp``, optional
        The selection (the BP mask); default ``w_bp``'s own N:M selection along ``K'``.
    """
    from sat.sw.nmformat import compress

    w4 = numerics.quantize(np.asarray(w_bp, np.float32).reshape(shape.w_shape), fmt)
    m = 1 if nm is None else nm[1]
    b = bp_weight_matrix(w4, shape, m)
    if nm is None:
        return b
    mk = None if mask is None else bp_weight_matrix(np.asarray(mask, bool).reshape(shape.w_shape), shape, m)
    return compress(b, nm[0], nm[1], mask=mk)


def lowered_gemm(backend: GemmBackend, a: np.ndarray, b: np.ndarray | NMOperand, fmt: str) -> np.ndarray:
    """``a . b`` on a GEMM backend: ``b`` dense (``K x cols``) or an N:M operand (compressed along ``K``)."""
    from sat.sw.nmformat import NMOperand

    if isinstance(b, NMOperand):
        return backend.sparse(a, b, fmt)
    return backend.dense(a, b, fmt)


def _backend(backend: GemmBackend | None) -> GemmBackend:
    if backend is not None:
        return backend
    from sat.sw.bdwp import GoldenBackend

    return GoldenBackend()


def conv_ff(x: np.ndarray, w: np.ndarray | NMOperand, shape: ConvShape, fmt: str,
            backend: GemmBackend | None = None) -> np.ndarray:
    """FF ``Y`` (B, OH, OW, C_out), FP32: ``im2col(X) . W_ff^T`` on ``backend`` (default the golden model).

    Parameters
    ----------
    x : array (B, H, W, C_in)
        Activations, already quantized to ``fmt``.
    w : array (K, C_out) or NMOperand
        :func:`ff_operand`.
    shape : ConvShape
    fmt : "fp16" or "bf16"
    backend : GemmBackend, optional
        Its ``k_limit`` (if any) splits ``K`` into chunks as the card does.
    """
    x = shape.check("X", x, shape.x_shape)
    a = im2col(x, shape.kh, shape.kw, shape.stride, shape.padding)
    return lowered_gemm(_backend(backend), a, w, fmt).reshape(shape.y_shape)


def conv_bp(dy: np.ndarray, w: np.ndarray | NMOperand, shape: ConvShape, fmt: str,
            backend: GemmBackend | None = None) -> np.ndarray:
    """BP ``dX`` (B, H, W, C_in), FP32: the transposed convolution ``bp_lower(dY) . W_bp[K' x C_in]``.

    Parameters
    ----------
    dy : array (B, OH, OW, C_out)
        Output gradient, already quantized to ``fmt``.
    w : array (K', C_in) or NMOperand
        :func:`bp_operand` (its ``m`` sets the channel padding of the lowering).
    shape : ConvShape
    fmt : "fp16" or "bf16"
    backend : GemmBackend, optional
    """
    from sat.sw.nmformat import NMOperand

    m = w.m if isinstance(w, NMOperand) else 1
    a = bp_lower(dy, shape, m)
    return lowered_gemm(_backend(backend), a, w, fmt).reshape(shape.x_shape)


def conv_wu(dy: np.ndarray, x: np.ndarray, shape: ConvShape, fmt: str,
            backend: GemmBackend | None = None) -> np.ndarray:
    """WU ``dW`` (C_out, kh, kw, C_in), FP32: ``dY^T . im2col(X)``, dense, reduction over ``(b, oh, ow)``."""
    dy = shape.check("dY", dy, shape.y_shape)
    x = shape.check("X", x, shape.x_shape)
    a = np.ascontiguousarray(dy.reshape(shape.pixels, shape.c_out).T)
    b = im2col(x, shape.kh, shape.kw, shape.stride, shape.padding)
    return lowered_gemm(_backend(backend), a, b, fmt).reshape(shape.w_shape)


def conv_pass(backend: GemmBackend | None, pass_: ConvPass, a: np.ndarray, b: np.ndarray | NMOperand,
              shape: ConvShape, fmt: str, out_fmt: str = "fp32") -> np.ndarray:
    """One pass on ``backend``: its own ``conv`` entry point if it has one (the driver), else the lowered GEMM.

    ``pass_`` ``"ff"``: ``a`` = X, ``b`` = :func:`ff_operand`; ``"bp"``: ``a`` = dY, ``b`` = :func:`bp_operand`;
    ``"wu"``: ``a`` = dY, ``b`` = X. Results as :func:`conv_ff`, :func:`conv_bp`, :func:`conv_wu`.

    ``out_fmt`` is the result format (SPEC section 2): "fp32", or ``fmt`` for narrow results, the final FP32
    result (after any K-chunk sum) rounded once (:func:`sat.sw.numerics.result_values`; a device rounds in its
    result writer, or on the host after adding chunk partials: the same bits).

    Raises
    ------
    ValueError
        For an unknown pass, or an ``out_fmt`` that is neither "fp32" nor ``fmt``.
    """
    if pass_ not in PASSES:
        raise ValueError(f"a convolution pass is one of {PASSES}, not {pass_!r}")
    if out_fmt not in ("fp32", fmt):
        raise ValueError(f"a pass's results are 'fp32' or in the operand format {fmt!r}, not {out_fmt!r}")
    run = getattr(backend, "conv", None)
    if run is not None:
        return run(pass_, a, b, shape, fmt) if out_fmt == "fp32" else run(pass_, a, b, shape, fmt, out_fmt)
    y = {"ff": conv_ff, "bp": conv_bp, "wu": conv_wu}[pass_](a, b, shape, fmt, backend)
    return y if out_fmt == "fp32" else numerics.result_values(y, out_fmt)
