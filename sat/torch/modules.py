"""Converted layers: ``nn.Conv2d`` / ``nn.Linear`` whose FF, BP and WU passes run on a SAT backend.

:func:`convert` changes the class of every supported ``nn.Conv2d`` and ``nn.Linear`` of a module (in place: the
same module objects, parameters, hooks and ``state_dict`` keys) to :class:`SATConv2d` / :class:`SATLinear`. Their
forward is one autograd function whose three passes are the project's own (``sat.sw.bdwp.layer_ff`` and
``layer_wu_bp``, the code ``sat train`` runs): FF with ``W`` pruned N:M along ``K`` (channels-last order
``(kh, kw, c_in)``), BP with ``W`` pruned along ``C_out`` (independent or nested mask), WU dense, its gradient going
to the dense FP32 master weights (straight-through). Masks come from the current weights at every forward pass.

Torch conventions are kept: NCHW activations, ``weight`` an ``nn.Parameter`` of shape ``(C_out, C_in, kh, kw)``
(or ``(C_out, C_in)``) holding the dense FP32 master weights, ``weight.grad`` the dense ``dW``. The layout changes
to and from the card's NHWC and ``(C_out, kh, kw, C_in)`` happen inside the layer; the bias is added by torch on
the host (float32), so its gradient is torch's.

:func:`reference` switches converted layers to a reference mode that computes the same three passes, with the
same layout changes and the same lowerings (:func:`sat.sw.conv.im2col`, :func:`~sat.sw.conv.bp_lower`,
:func:`~sat.sw.conv.bp_weight_matrix`), in the input's own precision (float64 for ``torch.autograd.gradcheck``)
and without quantization, masks optional.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from sat.sw.bdwp import (
    BDWPSettings,
    FFState,
    GemmBackend,
    get_backend,
    layer_ff,
    layer_wu_bp,
    nm_mask,
    release,
)
from sat.sw.conv import ConvShape, bp_lower, bp_weight_matrix, im2col
from sat.sw.network import POLICIES, pass_is_sparse

__all__ = ["SATLayer", "SATConv2d", "SATLinear", "UnsupportedLayerWarning", "convert", "sat_layers", "pass_modes",
           "reference", "open_backend"]


class UnsupportedLayerWarning(UserWarning):
    """:func:`convert` left GEMM layers in torch that SAT cannot run (the message lists them and why)."""


def open_backend(backend: str | GemmBackend) -> GemmBackend:
    """The backend named ``backend`` (``"golden"``, ``"model"``, ``"xdma"``, ``"sim"``, ``"fast"``), or ``backend``
    itself when it already is one.

    ``"sim"`` exists only inside a cocotb testbench that drives the RTL (``sat train --framework torch --backend
    sim``, or ``sat sim torch SCRIPT``), which registers its device backend under that name.

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        For ``"sim"`` outside a testbench, or ``"xdma"`` without a card.
    """
    if not isinstance(backend, str):
        return backend
    import importlib

    for module in ("sat.sw.driver", "sat.sim.cli"):  # they register "model", "xdma" and "sim"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # pragma: no cover - an install without the simulation extra
            if not (exc.name or "").startswith(("sat.", "cocotb")):
                raise
    return get_backend(backend)


# ----------------------------------------------------------------------------------------------------------
# The engines: where a converted layer's three passes are computed

class _SATEngine:
    """The BDWP passes on a SAT backend: ``sat.sw.bdwp.layer_ff`` / ``layer_wu_bp``."""

    def __init__(self, settings: BDWPSettings) -> None:
        self.s = settings

    def ff(self, w: np.ndarray, x: np.ndarray, shape: ConvShape, sparse: bool) -> tuple[np.ndarray, FFState]:
        return layer_ff(w, x, shape, self.s, sparse)

    def wu_bp(self, state: FFState, w: np.ndarray, dy: np.ndarray, bp_sparse: bool,
              input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return layer_wu_bp(state, w, dy, self.s, bp_sparse, input_grad, keep_input=True)

    def release(self, state: FFState) -> None:
        release(self.s.backend, state.x)


def _bp_lowering(dy: np.ndarray, shape: ConvShape) -> np.ndarray:
    """:func:`sat.sw.conv.bp_lower` of ``dy`` in ``dy``'s own dtype: the lowering is a gather (each entry is one
    element of ``dY`` or zero), so it is taken from the lowering of the element numbers ``1..size``, which float32
    holds exactly."""
    size = dy.size
    if size >= 1 << 24:
        raise ValueError(f"reference mode lowers at most 2^24 output-gradient elements, got {size}: use a smaller "
                         "batch")
    numbers = np.arange(1, size + 1, dtype=np.float32).reshape(shape.y_shape)
    index = bp_lower(numbers, shape).astype(np.int64)
    return np.concatenate([np.zeros(1, dy.dtype), dy.reshape(-1)])[index]


class _ReferenceEngine:
    """The same passes in the input's precision, unquantized, through the golden model's lowerings; masks on or
    off (off: ``W_ff = W_bp = W``, so FF, BP and WU are the exact gradient triple of a convolution)."""

    def __init__(self, settings: BDWPSettings, masks: bool) -> None:
        self.s = settings
        self.masks = masks

    def ff(self, w: np.ndarray, x: np.ndarray, shape: ConvShape, sparse: bool) -> tuple[np.ndarray, FFState]:
        nm = self.s.nm
        mask = nm_mask(w, nm[0], nm[1], axis=1) if sparse and self.masks and nm is not None else None
        w_ff = w if mask is None else np.where(mask, w, np.zeros((), w.dtype))
        x = x.reshape(shape.x_shape)
        y = im2col(x, shape.kh, shape.kw, shape.stride, shape.padding) @ w_ff.T
        return y.reshape(shape.y_shape), FFState(shape, x, w_ff, mask)

    def wu_bp(self, state: FFState, w: np.ndarray, dy: np.ndarray, bp_sparse: bool,
              input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        shape, nm = state.shape, self.s.nm
        dy = dy.reshape(shape.y_shape)
        cols = im2col(state.x, shape.kh, shape.kw, shape.stride, shape.padding)
        dw = dy.reshape(shape.pixels, shape.c_out).T @ cols
        dx = None
        if input_grad:
            base = state.w_ff if self.s.bp_mask == "nested" else w
            if bp_sparse and self.masks and nm is not None:
                base = np.where(nm_mask(base, nm[0], nm[1], axis=0), base, np.zeros((), base.dtype))
            w_bp = bp_weight_matrix(base.reshape(shape.w_shape), shape)
            dx = (_bp_lowering(dy, shape) @ w_bp).reshape(shape.x_shape)
        return dw, dx

    def release(self, state: FFState) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------
# The autograd function

def _tensor(a: np.ndarray) -> torch.Tensor:
    """``a`` as a CPU tensor (shared memory when ``a`` is writable, else a copy)."""
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class _Pending:
    """One forward pass of a recorded graph: its engine, FF state and weights. The resident input is released
    when the graph is freed (after ``backward()``, or when it is dropped unused); backward passes over a retained
    graph (``retain_graph=True``, gradcheck) reuse it."""

    def __init__(self, engine: Any, state: FFState, w: np.ndarray, bp_sparse: bool) -> None:
        self.engine, self.state, self.w, self.bp_sparse = engine, state, w, bp_sparse
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            self.engine.release(self.state)

    def __del__(self) -> None:
        self.close()


class _Passes(torch.autograd.Function):
    """FF in ``forward``; WU and BP in ``backward`` (STE: ``dW`` goes to the dense master weights)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, layer: SATLayer) -> torch.Tensor:
        engine = layer._engine()
        shape = layer.conv_shape(tuple(x.shape))
        w = layer.weight_matrix(weight)
        y, state = engine.ff(w, layer.to_device_layout(x), shape, layer.ff_sparse())
        if any(ctx.needs_input_grad[:2]):
            ctx.layer, ctx.x_shape = layer, tuple(x.shape)
            ctx.pending = _Pending(engine, state, w, layer.bp_sparse())
            layer.mask_ff = None if state.mask_ff is None else layer.to_torch_weight(state.mask_ff)
        else:
            engine.release(state)
        return layer.from_device_layout(y, tuple(x.shape))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        pending: _Pending = ctx.pending
        layer: SATLayer = ctx.layer
        input_grad = bool(ctx.needs_input_grad[0])
        dw, dx = pending.engine.wu_bp(pending.state, pending.w, layer.to_device_layout(dy), pending.bp_sparse,
                                      input_grad)
        layer.last_bp = ("sparse" if pending.bp_sparse else "dense") if input_grad else "skipped"
        grad_x = layer.from_input_layout(dx, ctx.x_shape) if dx is not None else None
        grad_w = layer.to_torch_weight(dw) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None



# ----------------------------------------------------------------------------------------------------------
# The layers

class SATLayer:
    """What :class:`SATConv2d` and :class:`SATLinear` share (made by :func:`convert`, never constructed directly).

    Attributes
    ----------
    sat_settings : BDWPSettings
        N:M pattern, operand format, BP mask and backend of the passes.
    sat_name : str
        The layer's qualified name in the converted module (policy keys, :func:`pass_modes`, the scheduler).
    ff_policy, bp_policy : "auto", "dense" or "sparse"
        Pass policy (:func:`sat.sw.network.pass_is_sparse`).
    mask_ff : torch.BoolTensor or None
        The FF mask of the last forward pass that recorded a graph, in ``weight``'s layout (``None``: FF ran dense);
        the SR-STE term (:func:`sat.torch.add_sr_ste`) uses it.
    last_bp : str or None
        How the last backward pass ran BP: ``"sparse"``, ``"dense"`` or ``"skipped"`` (no input gradient needed).
    """

    sat_settings: BDWPSettings
    sat_name: str
    ff_policy: str
    bp_policy: str
    mask_ff: torch.Tensor | None
    last_bp: str | None
    sat_reference: bool | None
    weight: nn.Parameter
    bias: nn.Parameter | None

    # geometry and layout, per layer type -------------------------------------------------------------------

    def conv_shape(self, x_shape: tuple[int, ...]) -> ConvShape:  # pragma: no cover - abstract
        raise NotImplementedError

    def weight_matrix(self, weight: torch.Tensor) -> np.ndarray:  # pragma: no cover - abstract
        """``weight`` as the ``(C_out, K)`` matrix of the contract (a copy)."""
        raise NotImplementedError

    def to_torch_weight(self, wk: np.ndarray) -> torch.Tensor:  # pragma: no cover - abstract
        """A ``(C_out, K)`` array (gradient, mask) in ``weight``'s torch layout."""
        raise NotImplementedError

    def to_device_layout(self, x: torch.Tensor) -> np.ndarray:  # pragma: no cover - abstract
        """An activation (or its gradient) as the channels-last array of the passes."""
        raise NotImplementedError

    def from_device_layout(self, y: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:  # pragma: no cover
        """The FF result (channels last) as the torch output for input shape ``x_shape``."""
        raise NotImplementedError

    def from_input_layout(self, dx: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:  # pragma: no cover
        """The BP result (channels last) as the torch gradient of an input of ``x_shape``."""
        raise NotImplementedError

    # the passes ------------------------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        """FF reduction length ``C_in * kh * kw``."""
        return int(self.weight[0].numel())

    @property
    def c_out(self) -> int:
        return int(self.weight.shape[0])

    def ff_sparse(self) -> bool:
        """Whether FF runs N:M-sparse (group axis ``K``)."""
        return pass_is_sparse(self.ff_policy, self.k, self.sat_settings.nm)

    def bp_sparse(self) -> bool:
        """Whether BP runs N:M-sparse (group axis ``C_out``)."""
        return pass_is_sparse(self.bp_policy, self.c_out, self.sat_settings.nm)

    def _engine(self) -> _SATEngine | _ReferenceEngine:
        if self.sat_reference is not None:
            return _ReferenceEngine(self.sat_settings, self.sat_reference)
        return _SATEngine(self.sat_settings)

    def _check(self, x: torch.Tensor) -> None:
        if not hasattr(self, "sat_settings"):
            raise RuntimeError(f"{type(self).__name__} layers are made by sat.torch.convert(module, ...)")
        tensors = [("input", x), ("weight", self.weight)] + ([("bias", self.bias)] if self.bias is not None else [])
        for what, t in tensors:
            if t.device.type != "cpu":
                raise ValueError(f"layer {self.sat_name!r}: the {what} is on {t.device}; SAT layers take CPU tensors "
                                 "(the backend moves them to the card): call .cpu() on the model and its inputs")
        if self.sat_reference is None:
            for what, t in tensors:
                if t.dtype != torch.float32:
                    raise TypeError(f"layer {self.sat_name!r}: the {what} is {t.dtype}; SAT layers keep FP32 master "
                                    "weights and take float32 activations (the backend rounds them to "
                                    f"{self.sat_settings.fmt}): call .float(), or use sat.torch.reference(model) for "
                                    "a float64 reference")
        elif x.dtype != self.weight.dtype:
            raise TypeError(f"layer {self.sat_name!r}: reference mode needs input and weight of one dtype, got "
                            f"{x.dtype} and {self.weight.dtype}")

    def _sat_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = _Passes.apply(x, self.weight, self)
        return y if self.bias is None else y + self._bias_view()

    def _bias_view(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sat_repr(self) -> str:
        s = self.sat_settings
        nm = "dense" if s.nm is None else f"{s.nm[0]}:{s.nm[1]}"
        ref = "" if self.sat_reference is None else f", reference(masks={self.sat_reference})"
        return (f"nm={nm}, fmt={s.fmt}, bp_mask={s.bp_mask}, ff={self.ff_policy}, bp={self.bp_policy}, "
                f"backend={getattr(s.backend, 'name', type(s.backend).__name__)}{ref}")


class SATConv2d(SATLayer, nn.Conv2d):
    """An ``nn.Conv2d`` (groups 1, dilation 1, zero padding equal on both axes, one stride) whose passes run on
    SAT; see the module docstring. Made by :func:`convert`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sat_forward(x)

    @property
    def sat_padding(self) -> int:
        return int(self.padding[0]) if not isinstance(self.padding, str) else _same_padding(self)

    def conv_shape(self, x_shape: tuple[int, ...]) -> ConvShape:
        if len(x_shape) != 4 or x_shape[1] != self.in_channels:
            raise ValueError(f"layer {self.sat_name!r} expects NCHW input with {self.in_channels} channels, got shape "
                             f"{tuple(x_shape)}")
        b, c, h, w = x_shape
        kh, kw = self.kernel_size
        return ConvShape(b, h, w, c, self.out_channels, kh, kw, int(self.stride[0]), self.sat_padding)

    def weight_matrix(self, weight: torch.Tensor) -> np.ndarray:
        return weight.detach().permute(0, 2, 3, 1).reshape(self.out_channels, -1).numpy().copy()

    def to_torch_weight(self, wk: np.ndarray) -> torch.Tensor:
        kh, kw = self.kernel_size
        return _tensor(wk.reshape(self.out_channels, kh, kw, self.in_channels)).permute(0, 3, 1, 2).contiguous()

    def to_device_layout(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().permute(0, 2, 3, 1).contiguous().numpy()

    def from_device_layout(self, y: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:
        return _tensor(y).permute(0, 3, 1, 2).contiguous()

    def from_input_layout(self, dx: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:
        return _tensor(dx).permute(0, 3, 1, 2).contiguous()

    def _bias_view(self) -> torch.Tensor:
        return self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._sat_repr()


class SATLinear(SATLayer, nn.Linear):
    """An ``nn.Linear`` whose passes run on SAT (the ``1 x 1`` convolution of a ``1 x 1`` image; leading input
    dimensions are the batch); see the module docstring. Made by :func:`convert`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sat_forward(x)

    def conv_shape(self, x_shape: tuple[int, ...]) -> ConvShape:
        if not x_shape or x_shape[-1] != self.in_features:
            raise ValueError(f"layer {self.sat_name!r} expects input (..., {self.in_features}), got shape "
                             f"{tuple(x_shape)}")
        return ConvShape.linear(int(np.prod(x_shape[:-1], dtype=np.int64)), self.in_features, self.out_features)

    def weight_matrix(self, weight: torch.Tensor) -> np.ndarray:
        return weight.detach().numpy().copy()

    def to_torch_weight(self, wk: np.ndarray) -> torch.Tensor:
        return _tensor(wk.reshape(self.out_features, self.in_features))

    def to_device_layout(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().reshape(-1, x.shape[-1]).contiguous().numpy()

    def from_device_layout(self, y: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:
        return _tensor(y).reshape(*x_shape[:-1], self.out_features)

    def from_input_layout(self, dx: np.ndarray, x_shape: tuple[int, ...]) -> torch.Tensor:
        return _tensor(dx).reshape(x_shape)

    def _bias_view(self) -> torch.Tensor:
        return self.bias

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._sat_repr()


# ----------------------------------------------------------------------------------------------------------
# Conversion

def _same_padding(conv: nn.Conv2d) -> int:
    """The zero padding of a string ``padding``: ``"valid"`` none, ``"same"`` (odd square kernel) ``(k - 1) / 2``."""
    return 0 if conv.padding == "valid" else (conv.kernel_size[0] - 1) // 2


def _conv_unsupported(conv: nn.Conv2d) -> str | None:
    """Why SAT cannot run ``conv``, or ``None``."""
    if conv.groups != 1:
        return f"groups={conv.groups}"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if conv.stride[0] != conv.stride[1]:
        return f"stride={tuple(conv.stride)} differs along H and W"
    if isinstance(conv.padding, str):
        kh, kw = conv.kernel_size
        if conv.padding == "same" and not (kh % 2 and kw % 2 and kh == kw):
            return f"padding='same' with a {kh}x{kw} kernel pads unevenly"
    elif conv.padding[0] != conv.padding[1]:
        return f"padding={tuple(conv.padding)} differs along H and W"
    return None


def _unsupported_kind(mod: nn.Module) -> str | None:
    """Why a GEMM-like module that is not exactly ``nn.Conv2d`` / ``nn.Linear`` stays in torch, or ``None`` for
    modules that are not GEMM layers (batch norm, activations, pooling, containers)."""
    if isinstance(mod, nn.modules.lazy.LazyModuleMixin) and mod.has_uninitialized_params():
        return "an uninitialised lazy module: run one forward pass before converting"
    if isinstance(mod, nn.Conv2d):
        return f"a subclass of nn.Conv2d ({type(mod).__name__})"
    if isinstance(mod, nn.Linear):
        return f"a subclass of nn.Linear ({type(mod).__name__})"
    if isinstance(mod, nn.modules.conv._ConvNd):
        return f"{type(mod).__name__} (SAT runs 2-D convolutions)"
    if isinstance(mod, (nn.Bilinear, nn.RNNBase, nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
                        nn.TransformerDecoderLayer)):
        return f"{type(mod).__name__} (its GEMMs are not nn.Linear calls)"
    return None


def _parse_policy(policy: Mapping[str, Mapping[str, str]] | Iterable[str] | None) -> dict[str, dict[str, str]]:
    if policy is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    if isinstance(policy, Mapping):
        for name, passes in policy.items():
            if not isinstance(passes, Mapping) or not set(passes) <= {"ff", "bp"}:
                raise ValueError(f"policy[{name!r}] must map 'ff' and/or 'bp' to a mode, not {passes!r}")
            out[str(name)] = dict(passes)
    else:
        if isinstance(policy, str):
            policy = [policy]
        from sat.sw.train import parse_policy

        for layer, which, mode in parse_policy(list(policy)):
            out.setdefault(layer, {})[which] = mode
    for name, passes in out.items():
        for which, mode in passes.items():
            if mode not in POLICIES:
                raise ValueError(f"policy of {name}.{which} must be one of {POLICIES}, not {mode!r}")
    return out


def convert(module: nn.Module, nm: tuple[int, int] | str | None = (2, 8), *, bp_mask: str = "independent",
            backend: str | GemmBackend = "golden", fmt: str = "fp16",
            policy: Mapping[str, Mapping[str, str]] | Iterable[str] | None = None,
            results: str = "narrow") -> nn.Module:
    """Run the ``nn.Conv2d`` and ``nn.Linear`` layers of ``module`` on SAT with BDWP; in place, returns ``module``.

    Every ``nn.Conv2d`` (groups 1, dilation 1, zero padding equal along H and W, one stride) and ``nn.Linear``
    becomes a :class:`SATConv2d` / :class:`SATLinear` (the same object: parameters, hooks and ``state_dict`` are
    unchanged). Other GEMM layers (grouped or dilated convolutions, ``Conv1d``, subclasses, attention, RNNs) stay
    in torch, and one :class:`UnsupportedLayerWarning` lists them. Batch norm, activations, pooling and the loss
    are torch's. Converting again replaces the settings.

    Parameters
    ----------
    module : nn.Module
        A float32 CPU module (its parameters become the FP32 master weights).
    nm : (n, m), "N:M", "dense" or None
        The N:M pattern of sparse passes (``None`` / ``"dense"``: dense training through SAT).
    bp_mask : "independent" or "nested"
        BP weights pruned from the dense master weights, or from ``W_ff``.
    backend : str or GemmBackend
        ``"golden"`` (bit-exact golden model), ``"model"`` (the software device model through the driver),
        ``"xdma"`` (the card), ``"sim"`` (the RTL, inside a cocotb testbench: see ``docs/pytorch.md``), or a
        backend object.
    fmt : "fp16" or "bf16"
        Operand format.
    policy : mapping or iterable of str, optional
        Per-layer pass policy, by qualified module name: ``{"fc": {"bp": "dense"}}`` or ``["fc.bp=dense"]``
        (modes ``auto``, ``dense``, ``sparse``; default ``auto`` as in ``docs/bdwp.md``).
    results : "narrow" or "fp32"
        ``narrow`` (default, SPEC section 2): FF and BP results in the operand format, WU results FP32
        (``BDWPSettings.narrow``); ``fp32``: every result FP32.

    Returns
    -------
    nn.Module
        ``module``.

    Raises
    ------
    ValueError
        For an invalid pattern, format, BP mask or policy, or a policy naming a layer that was not converted.
    RuntimeError
        For a backend that cannot be opened here (``"sim"`` outside a testbench, ``"xdma"`` without a card).
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"convert() takes a torch.nn.Module, not {type(module).__name__}")
    if results not in ("narrow", "fp32"):
        raise ValueError(f"results must be 'narrow' or 'fp32', not {results!r}")
    settings = BDWPSettings(None if nm == "dense" else nm, fmt, bp_mask, open_backend(backend),
                            narrow=results == "narrow")
    policies = _parse_policy(policy)
    converted: dict[str, SATLayer] = {}
    skipped: list[str] = []
    skipped_prefixes: list[str] = []
    for name, mod in module.named_modules():
        if any(name.startswith(p) for p in skipped_prefixes):
            continue
        kind = type(mod)
        if kind in (nn.Conv2d, SATConv2d):
            why = _conv_unsupported(mod)
            if why is not None:
                skipped.append(f"{name or '<module>'} ({why})")
                continue
            mod.__class__ = SATConv2d
        elif kind in (nn.Linear, SATLinear):
            mod.__class__ = SATLinear
        else:
            why = _unsupported_kind(mod)
            if why is not None:
                skipped.append(f"{name or '<module>'} ({why})")
                skipped_prefixes.append(f"{name}.")
            continue
        layer: SATLayer = mod  # type: ignore[assignment]
        layer.sat_settings = settings
        layer.sat_name = name
        layer.ff_policy = layer.bp_policy = "auto"
        layer.mask_ff = None
        layer.last_bp = None
        layer.sat_reference = None
        converted[name] = layer
    unknown = sorted(set(policies) - set(converted))
    if unknown:
        raise ValueError(f"policy names {unknown}, which are not converted layers; they are {sorted(converted)}")
    for name, passes in policies.items():
        converted[name].ff_policy = passes.get("ff", "auto")
        converted[name].bp_policy = passes.get("bp", "auto")
    if skipped:
        warnings.warn(f"sat.torch.convert: {len(skipped)} layer(s) stay in torch and do not run on SAT: "
                      + "; ".join(skipped), UnsupportedLayerWarning, stacklevel=2)
    return module


def sat_layers(module: nn.Module) -> list[SATLayer]:
    """The converted layers of ``module`` in registration order."""
    return [m for m in module.modules() if isinstance(m, SATLayer)]


def pass_modes(module: nn.Module) -> dict[str, dict[str, str]]:
    """Per converted layer, how FF, BP and WU run: ``"sparse"``, ``"dense"``, or for BP ``"skipped"`` when the
    last backward pass needed no input gradient (the first layer); before any backward pass, BP by its policy."""
    out = {}
    for layer in sat_layers(module):
        bp = layer.last_bp or ("sparse" if layer.bp_sparse() else "dense")
        out[layer.sat_name] = {"ff": "sparse" if layer.ff_sparse() else "dense", "bp": bp, "wu": "dense"}
    return out


@contextlib.contextmanager
def reference(module: nn.Module, masks: bool = False) -> Iterator[nn.Module]:
    """Within the block, the converted layers of ``module`` compute their passes in the input's precision, without
    quantization and off the backend (see the module docstring); ``masks`` keeps BDWP's FF and BP masks (straight-
    through WU), otherwise every pass is dense and the layer is an exact convolution / linear map.

    For example ``with reference(model.double()): torch.autograd.gradcheck(model, (x,))``.
    """
    layers = sat_layers(module)
    old = [layer.sat_reference for layer in layers]
    for layer in layers:
        layer.sat_reference = bool(masks)
    try:
        yield module
    finally:
        for layer, value in zip(layers, old, strict=True):
            layer.sat_reference = value
