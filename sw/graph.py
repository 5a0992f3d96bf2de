"""A trainable graph model built from a network description (:class:`sat.sw.network.Network`).

:meth:`Graph.from_network` turns every record into a layer: :class:`~sat.sw.network.Conv` into
:class:`sat.sw.bdwp.Conv2d`, :class:`~sat.sw.network.Linear` into :class:`sat.sw.bdwp.Linear` (their passes run on
the backend: golden model, RTL simulation or card), and every :class:`~sat.sw.network.HostOp` into the host layer
of :mod:`sat.sw.hostops`. Weights are drawn in record order from one generator, He-normal as
:class:`sat.sw.bdwp.GemmLayer` does, so a chain network gets exactly the weights of the equivalent
:class:`sat.sw.bdwp.Sequential`.

Forward runs the records in order; backward in reverse, adding the gradients of a tensor read by several records
(a residual block's input) in float32, in reverse record order. A GEMM layer computes its input gradient only if
something before it has parameters (the first convolution never runs its BP pass).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sat.sw.bdwp import (
    NM,
    SGD,
    BDWPSettings,
    Conv2d,
    Flatten,
    GemmLayer,
    Layer,
    Linear,
    LossScaler,
    PassPolicy,
    softmax_cross_entropy,
)
from sat.sw.hostops import Add, BatchNorm, GlobalAvgPool, MaxPool, ReLU
from sat.sw.network import INPUT, POLICIES, Conv, HostOp, Network
from sat.sw.network import Linear as LinearRecord

__all__ = ["Graph"]


def _host_layer(op: HostOp, in_shape: tuple[int, int, int]) -> Layer:
    if op.kind == "relu":
        return ReLU(op.name)
    if op.kind == "bn":
        return BatchNorm(in_shape[2], op.name)
    if op.kind == "maxpool":
        if op.kernel == 0:
            raise ValueError(f"{op.name}: a global max pool is not implemented; use avgpool")
        return MaxPool(op.kernel, op.stride, op.padding, op.name)
    if op.kind == "avgpool":
        if op.kernel != 0:
            raise ValueError(f"{op.name}: only global average pooling (kernel 0) is implemented")
        return GlobalAvgPool(op.name)
    if op.kind == "add":
        return Add(op.name)
    if op.kind == "flatten":
        return Flatten(op.name)
    raise ValueError(f"{op.name}: a {op.kind!r} host operation cannot be trained (describe it with relu, bn, "
                     "maxpool, avgpool, add or flatten)")


class Graph:
    """A network of BDWP layers (see the module docstring); the same interface as :class:`sat.sw.bdwp.Sequential`.

    Parameters
    ----------
    network : Network
        The description; its records' ``inputs`` give the graph.
    layers : dict
        The layer of every record, by name.
    """

    def __init__(self, network: Network, layers: dict[str, Layer]) -> None:
        self.network = network
        self.layers = [layers[it.name] for it in network.items]
        self._items = list(network.items)
        requires = {INPUT: False}
        for it, layer in zip(self._items, self.layers, strict=True):
            upstream = any(requires[i] for i in it.inputs)
            if isinstance(layer, (GemmLayer, BatchNorm)):
                layer.needs_input_grad = upstream
                requires[it.name] = True
            else:
                requires[it.name] = upstream
        self._requires = requires
        if not self.gemm_layers:
            raise ValueError(f"network {network.name} has no GEMM layer to train")

    @classmethod
    def from_network(cls, network: Network, rng: np.random.Generator | int = 0) -> Graph:
        """Build the trainable model of ``network`` with He-normal weights from ``rng`` (a seed or a generator).

        Raises
        ------
        ValueError
            For a host operation that cannot be trained.
        """
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        shapes: dict[str, tuple[int, int, int]] = {INPUT: tuple(network.input_shape)}
        layers: dict[str, Layer] = {}
        for it in network.items:
            if isinstance(it, LinearRecord):
                layers[it.name] = Linear(it.c_in, it.c_out, name=it.name, ff=it.ff, bp=it.bp, bias=it.bias, rng=rng)
                shapes[it.name] = it.shape
            elif isinstance(it, Conv):
                layers[it.name] = Conv2d(it.c_in, it.c_out, it.kernel, stride=it.stride, padding=it.padding,
                                         name=it.name, ff=it.ff, bp=it.bp, bias=it.bias, rng=rng)
                shapes[it.name] = it.shape
            else:
                layers[it.name] = _host_layer(it, shapes[it.inputs[0]])
                shapes[it.name] = it.shape
        return cls(network, layers)

    @property
    def gemm_layers(self) -> list[GemmLayer]:
        """The layers whose passes run on the backend, in forward order."""
        return [layer for layer in self.layers if isinstance(layer, GemmLayer)]

    @property
    def param_layers(self) -> list[GemmLayer | BatchNorm]:
        """Every layer with trainable parameters (GEMM layers and batch norms), in forward order."""
        return [layer for layer in self.layers if isinstance(layer, (GemmLayer, BatchNorm))]

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
        """Override the FF and/or BP pass policy of GEMM layer ``name``.

        Raises
        ------
        KeyError
            If there is no layer ``name``.
        ValueError
            If ``name`` is not a GEMM layer or a policy is unknown.
        """
        layer = self.layer(name)
        if not isinstance(layer, GemmLayer):
            raise ValueError(f"layer {name!r} has no GEMM passes to configure")
        for pol in (ff, bp):
            if pol is not None and pol not in POLICIES:
                raise ValueError(f"pass policy must be one of {POLICIES}, not {pol!r}")
        if ff is not None:
            layer.ff = ff
        if bp is not None:
            layer.bp = bp

    def pass_modes(self, nm: NM) -> dict[str, dict[str, str]]:
        """Per GEMM layer, whether FF, BP and WU run ``"sparse"``, ``"dense"`` or are ``"skipped"``."""
        return {layer.name: {"ff": "sparse" if layer.ff_sparse(nm) else "dense",
                             "bp": ("sparse" if layer.bp_sparse(nm) else "dense") if layer.needs_input_grad
                             else "skipped",
                             "wu": "dense"}
                for layer in self.gemm_layers}

    def forward(self, x: np.ndarray, s: BDWPSettings, train: bool = True) -> np.ndarray:
        values: dict[str, np.ndarray] = {INPUT: np.asarray(x, np.float32)}
        last_use = {}
        for i, it in enumerate(self._items):
            for src in it.inputs:
                last_use[src] = i
        out = values[INPUT]
        for i, (it, layer) in enumerate(zip(self._items, self.layers, strict=True)):
            ins = [values[src] for src in it.inputs]
            out = layer.forward(*ins, s, train)
            values[it.name] = out
            for src in it.inputs:       # drop tensors no later record reads
                if last_use.get(src) == i and src != it.name:
                    values.pop(src, None)
        return out

    def backward(self, dy: np.ndarray, s: BDWPSettings) -> None:
        grads: dict[str, np.ndarray] = {self._items[-1].name: np.asarray(dy, np.float32)}
        for it, layer in zip(reversed(self._items), reversed(self.layers), strict=True):
            g = grads.pop(it.name, None)
            if g is None:
                continue
            if not self._requires[it.name]:
                continue
            if isinstance(layer, Add):
                outs: Iterable = layer.backward(g, s)
            else:
                dx = layer.backward(g, s)
                outs = [dx]
            for src, d in zip(it.inputs, outs, strict=True):
                if d is None or not self._requires[src]:
                    continue
                grads[src] = d if src not in grads else grads[src] + d

    def train_step(self, x: np.ndarray, labels: np.ndarray, s: BDWPSettings, opt: SGD,
                   scaler: LossScaler) -> dict[str, float | bool]:
        """One BDWP iteration: FF, loss, scaled BP/WU, overflow check, SGD/SR-STE update (batch norm parameters
        too). Returns ``{"loss": float, "applied": bool, "scale": float}``."""
        # An FP16 overflow (Inf operands, NaN gradients) is expected now and then: the loss scaler skips the step.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = self.forward(x, s, train=True)
            loss, dlogits = softmax_cross_entropy(logits.reshape(logits.shape[0], -1), labels)
            scale = scaler.scale
            self.backward((dlogits * np.float32(scale)).reshape(logits.shape), s)
        finite = all(np.isfinite(g).all() for layer in self.param_layers
                     for _, _, g in layer.parameters() if g is not None)
        applied = scaler.update(finite and np.isfinite(loss))
        if applied:
            opt.step(self.param_layers, inv_scale=1.0 / scale)
        return {"loss": loss, "applied": applied, "scale": scale}

    def predict(self, x: np.ndarray, s: BDWPSettings, batch_size: int = 256) -> np.ndarray:
        """Class predictions (argmax of the logits) in eval mode (batch norm with running statistics)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = [np.argmax(self.forward(x[i:i + batch_size], s, train=False).reshape(len(x[i:i + batch_size]),
                                                                                         -1), axis=1)
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)
