"""Network descriptions: layer records and a graph, the one source of every network SAT trains or schedules.

A :class:`Network` is a graph of records in forward (topological) order: GEMM layers (:class:`Conv`, and
:class:`Linear`, a ``1 x 1`` convolution of a ``1 x 1`` image) that run on the card, and host operations
(:class:`HostOp`: ReLU, batch norm, max / average pooling, residual add, flatten) that run on the host between
them. Each record names the records whose outputs it reads (``inputs``; ``"input"`` is the network's input), so
residual blocks are graphs, not chains. Shapes are channels-last (``H, W, C``) and bound when the network is built
(:class:`NetworkBuilder` tracks them).

Everything else is derived from these records:

* the trainable model (:func:`sat.sw.graph.Graph.from_network`, used by ``sat train``);
* the schedule of one training iteration (:func:`sat.sw.schedule.schedule_iteration`);
* the cycle model's GEMM list (:func:`sat.sw.perfmodel.layer_gemms`).

The networks: :func:`resnet18_cifar` and :func:`vgg16_cifar` (CIFAR-style, with a channel ``width`` scale and any
input size, so scaled-down samples keep the structure), :func:`resnet18_imagenet` (the 224 x 224 ImageNet
ResNet-18 of the engine benchmark), and the digits models :func:`mlp` and :func:`cnn`.

The dense/sparse rule of a pass (:func:`pass_is_sparse`) lives here too: it is a property of a layer record and
its N:M pattern, shared by the trainer, the scheduler and the cycle model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PassPolicy", "POLICIES", "pass_is_sparse",
    "INPUT", "Conv", "Linear", "HostOp", "HOST_KINDS", "Item", "Network", "NetworkBuilder",
    "resnet18_cifar", "vgg16_cifar", "resnet18_imagenet", "mlp", "cnn", "NETWORKS", "get_network", "from_torch",
]

PassPolicy = Literal["auto", "dense", "sparse"]
POLICIES: tuple[str, ...] = ("auto", "dense", "sparse")


def pass_is_sparse(policy: PassPolicy, length: int, nm: tuple[int, int] | None) -> bool:
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
    if policy not in POLICIES:
        raise ValueError(f"pass policy must be one of {POLICIES}, not {policy!r}")
    if nm is None or policy == "dense":
        return False
    if policy == "sparse":
        return True
    n, m = nm
    return n < m and length >= m and length % m == 0


#: Name of the network input in :attr:`Conv.inputs` / :attr:`HostOp.inputs`.
INPUT = "input"


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution, channels-last: ``K = kernel * kernel * c_in``, ``P = B * H_out * W_out``.

    ``in_hw`` is the input's spatial size (set by :class:`NetworkBuilder`); ``ff``/``bp`` are the per-pass
    policies of :func:`pass_is_sparse`; ``bias`` adds a host-side bias after FF (off where a batch norm follows);
    ``inputs`` names the record it reads (empty: the previous record, filled in by :class:`Network`).
    """

    name: str
    c_in: int
    c_out: int
    kernel: int
    in_hw: tuple[int, int]
    stride: int = 1
    padding: int = 0
    ff: PassPolicy = "auto"
    bp: PassPolicy = "auto"
    bias: bool = False
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for attr in ("c_in", "c_out", "kernel", "stride"):
            if getattr(self, attr) < 1:
                raise ValueError(f"layer {self.name}: {attr} must be >= 1, not {getattr(self, attr)!r}")
        if self.padding < 0:
            raise ValueError(f"layer {self.name}: padding must be >= 0, not {self.padding!r}")
        for label, pol in (("ff", self.ff), ("bp", self.bp)):
            if pol not in POLICIES:
                raise ValueError(f"layer {self.name}: {label} policy must be one of {POLICIES}, not {pol!r}")
        if min(self.out_hw) < 1:
            raise ValueError(f"layer {self.name}: a {self.kernel}x{self.kernel} kernel with stride {self.stride} "
                             f"and padding {self.padding} leaves no output on a {self.in_hw} input")

    @property
    def out_hw(self) -> tuple[int, int]:
        h, w = self.in_hw
        f = self.kernel
        return ((h + 2 * self.padding - f) // self.stride + 1, (w + 2 * self.padding - f) // self.stride + 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output shape ``(H, W, C)``."""
        return (*self.out_hw, self.c_out)

    @property
    def k(self) -> int:
        """Reduction length of FF (columns of ``W``)."""
        return self.kernel * self.kernel * self.c_in

    def pixels(self, batch: int) -> int:
        """Rows of the FF GEMM, ``B * H_out * W_out``."""
        return batch * self.out_hw[0] * self.out_hw[1]

    @property
    def macs_per_image(self) -> int:
        return self.out_hw[0] * self.out_hw[1] * self.k * self.c_out

    def ff_sparse(self, nm: tuple[int, int] | None) -> bool:
        """Whether FF runs N:M-sparse (group axis ``K``)."""
        return pass_is_sparse(self.ff, self.k, nm)

    def bp_sparse(self, nm: tuple[int, int] | None) -> bool:
        """Whether BP runs N:M-sparse (group axis ``C_out``)."""
        return pass_is_sparse(self.bp, self.c_out, nm)


@dataclass(frozen=True)
class Linear(Conv):
    """A fully connected layer: a :class:`Conv` with a 1x1 kernel on a 1x1 input (bias on by default)."""

    kernel: int = 1
    in_hw: tuple[int, int] = (1, 1)
    bias: bool = True


#: Kinds of :class:`HostOp`.
HOST_KINDS: tuple[str, ...] = ("relu", "bn", "maxpool", "avgpool", "add", "flatten", "host")


@dataclass(frozen=True)
class HostOp:
    """An operation the host runs between GEMM layers (no GEMM on the card), on NHWC tensors.

    ``kind``: ``relu``; ``bn`` (batch norm with FP32 statistics, carries the bias of the conv before it);
    ``maxpool`` / ``avgpool`` (``kernel``, ``stride``, ``padding``; ``kernel = 0`` = global, to ``1 x 1``);
    ``add`` (residual: the sum of its two ``inputs``); ``flatten`` (``(h, w, c)`` order); ``host`` (an
    unspecified host step, from :func:`from_torch`). ``shape`` is the output ``(H, W, C)`` (set by the builder).
    """

    name: str
    kind: str
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    inputs: tuple[str, ...] = ()
    shape: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.kind not in HOST_KINDS:
            raise ValueError(f"host operation {self.name}: kind must be one of {HOST_KINDS}, not {self.kind!r}")


Item = Conv | HostOp


@dataclass(frozen=True)
class Network:
    """A network for one input size: its records in forward (topological) order.

    Records without ``inputs`` read the record before them (the first one reads :data:`INPUT`); on construction
    they are filled in, and every input must name an earlier record or :data:`INPUT`.

    Raises
    ------
    ValueError
        For duplicate names, an input that is not an earlier record, or an ``add`` without two inputs.
    """

    name: str
    input_shape: tuple[int, int, int]   # (H, W, C)
    items: tuple[Item, ...]

    def __post_init__(self) -> None:
        seen: set[str] = {INPUT}
        filled = []
        prev = INPUT
        for it in self.items:
            if it.name in seen:
                raise ValueError(f"network {self.name}: the name {it.name!r} is used twice")
            if not it.inputs:
                it = dataclasses.replace(it, inputs=(prev,))
            missing = [s for s in it.inputs if s not in seen]
            if missing:
                raise ValueError(f"network {self.name}: {it.name!r} reads {missing}, which is not an earlier "
                                 "record (list the records in forward order)")
            if isinstance(it, HostOp) and it.kind == "add" and len(it.inputs) != 2:
                raise ValueError(f"network {self.name}: residual add {it.name!r} needs two inputs, got {it.inputs}")
            seen.add(it.name)
            filled.append(it)
            prev = it.name
        object.__setattr__(self, "items", tuple(filled))

    @property
    def layers(self) -> list[Conv]:
        """The GEMM layers (convolutions and linear layers) in forward order."""
        return [it for it in self.items if isinstance(it, Conv)]

    def item(self, name: str) -> Item:
        """The record called ``name``.

        Raises
        ------
        KeyError
            If there is none.
        """
        for it in self.items:
            if it.name == name:
                return it
        raise KeyError(f"network {self.name} has no record named {name!r}")

    def macs_per_image(self) -> int:
        """MACs of one image's forward pass through the GEMM layers (dense)."""
        return sum(layer.macs_per_image for layer in self.layers)

    def with_policy(self, policies: dict[str, dict[str, PassPolicy]]) -> Network:
        """A copy with per-layer pass policies replaced: ``{"conv1": {"ff": "dense"}, ...}``.

        Raises
        ------
        KeyError
            For a name that is not a GEMM layer.
        """
        names = {la.name for la in self.layers}
        unknown = sorted(set(policies) - names)
        if unknown:
            raise KeyError(f"network {self.name} has no GEMM layer named {unknown}; its layers are {sorted(names)}")
        items = tuple(dataclasses.replace(it, **policies[it.name]) if it.name in policies else it
                      for it in self.items)
        return Network(self.name, self.input_shape, items)


class NetworkBuilder:
    """Builds a :class:`Network`, tracking the current tensor (its producer and shape ``(H, W, C)``).

    Example::

        net = (NetworkBuilder("tiny", 8, 8, 3).conv("conv1", 16, 3).relu().maxpool(2)
               .flatten().linear("fc", 10).build())

    Residual blocks: ``save(tag)`` remembers the current tensor, ``conv(..., source=tag)`` reads it (a shortcut
    convolution) and ``add(tag)`` adds it (or a shortcut's output, by name) to the current tensor.

    Raises
    ------
    ValueError
        For a layer that does not fit the current shape (e.g. ``linear`` before ``flatten`` on a feature map),
        duplicate names or an unknown saved tensor.
    """

    def __init__(self, name: str, height: int, width: int, channels: int) -> None:
        if min(height, width, channels) < 1:
            raise ValueError(f"input shape must be positive, not {(height, width, channels)}")
        self._name = name
        self._input = (height, width, channels)
        self._shape = (height, width, channels)
        self._last = INPUT
        self._items: list[Item] = []
        self._saved: dict[str, tuple[str, tuple[int, int, int]]] = {}
        self._count = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Current activation shape ``(H, W, C)``."""
        return self._shape

    def _auto(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def _add(self, item: Item, shape: tuple[int, int, int]) -> NetworkBuilder:
        if any(it.name == item.name for it in self._items) or item.name == INPUT:
            raise ValueError(f"network {self._name}: the name {item.name!r} is used twice")
        self._items.append(item)
        self._last, self._shape = item.name, shape
        return self

    def conv(self, name: str, c_out: int, kernel: int = 3, *, stride: int = 1, padding: int | None = None,
             source: str | None = None, ff: PassPolicy = "auto", bp: PassPolicy = "auto",
             bias: bool = False) -> NetworkBuilder:
        """A convolution on the current tensor (or on the tensor saved as ``source``, e.g. a shortcut);
        ``padding`` defaults to ``kernel // 2``."""
        src, (h, w, c) = (self._last, self._shape) if source is None else self._get(source)
        layer = Conv(name, c, c_out, kernel, (h, w), stride, kernel // 2 if padding is None else padding, ff, bp,
                     bias, (src,))
        return self._add(layer, layer.shape)

    def linear(self, name: str, c_out: int, *, ff: PassPolicy = "auto", bp: PassPolicy = "auto",
               bias: bool = True) -> NetworkBuilder:
        """A fully connected layer; the current tensor must be flat (``H = W = 1``)."""
        h, w, c = self._shape
        if (h, w) != (1, 1):
            raise ValueError(f"network {self._name}: linear layer {name!r} needs a flat input, the current "
                             f"shape is {self._shape}: add .flatten() or a global pooling first")
        return self._add(Linear(name, c, c_out, ff=ff, bp=bp, bias=bias, inputs=(self._last,)), (1, 1, c_out))

    def host(self, kind: str, name: str | None = None) -> NetworkBuilder:
        """A shape-preserving host operation (``relu``, ``bn``)."""
        return self._add(HostOp(name or self._auto(kind), kind, inputs=(self._last,), shape=self._shape),
                         self._shape)

    def relu(self, name: str | None = None) -> NetworkBuilder:
        return self.host("relu", name)

    def bn(self, name: str | None = None) -> NetworkBuilder:
        return self.host("bn", name)

    def _pool(self, kind: str, kernel: int, stride: int | None, padding: int, name: str | None) -> NetworkBuilder:
        h, w, c = self._shape
        s = stride or kernel
        if kernel == 0:
            shape = (1, 1, c)
        else:
            if kernel > min(h, w) + 2 * padding or padding * 2 > kernel:
                raise ValueError(f"network {self._name}: a {kernel}x{kernel} pool with padding {padding} does not "
                                 f"fit {self._shape}")
            shape = ((h + 2 * padding - kernel) // s + 1, (w + 2 * padding - kernel) // s + 1, c)
        return self._add(HostOp(name or self._auto(kind), kind, kernel, s, padding, (self._last,), shape), shape)

    def maxpool(self, kernel: int = 2, stride: int | None = None, padding: int = 0,
                name: str | None = None) -> NetworkBuilder:
        """Max pooling (padding taps never win)."""
        return self._pool("maxpool", kernel, stride, padding, name)

    def avgpool(self, kernel: int = 0, stride: int | None = None, name: str | None = None) -> NetworkBuilder:
        """Average pooling; ``kernel = 0`` is global (to ``1 x 1``)."""
        return self._pool("avgpool", kernel, stride, 0, name)

    def flatten(self, name: str | None = None) -> NetworkBuilder:
        h, w, c = self._shape
        return self._add(HostOp(name or self._auto("flatten"), "flatten", inputs=(self._last,),
                                shape=(1, 1, h * w * c)), (1, 1, h * w * c))

    def save(self, tag: str) -> NetworkBuilder:
        """Remember the current tensor as ``tag`` (block input of a residual block)."""
        self._saved[tag] = (self._last, self._shape)
        return self

    def _get(self, tag: str) -> tuple[str, tuple[int, int, int]]:
        try:
            return self._saved[tag]
        except KeyError:
            raise ValueError(f"network {self._name}: no tensor saved as {tag!r} (use .save({tag!r}) first)") from None

    def add(self, tag: str, name: str | None = None) -> NetworkBuilder:
        """Residual add of the tensor saved as ``tag`` (or of a shortcut convolution's output, by name)."""
        sources = dict(self._saved)
        sources.update({it.name: (it.name, it.shape) for it in self._items if isinstance(it, Conv)})
        if tag not in sources:
            raise ValueError(f"network {self._name}: nothing named {tag!r} to add")
        src, shape = sources[tag]
        if shape != self._shape:
            raise ValueError(f"network {self._name}: cannot add {tag!r} of shape {shape} to {self._shape}")
        return self._add(HostOp(name or self._auto("add"), "add", inputs=(self._last, src), shape=self._shape),
                         self._shape)

    def build(self) -> Network:
        if not any(isinstance(it, Conv) for it in self._items):
            raise ValueError(f"network {self._name} has no GEMM layer")
        return Network(self._name, self._input, tuple(self._items))


def _basic_blocks(b: NetworkBuilder, width: int, c_in: int) -> None:
    for stage, c_out in enumerate((width, 2 * width, 4 * width, 8 * width), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride = 2 if (block == 0 and stage > 1) else 1
            b.save(p)
            b.conv(f"{p}.conv1", c_out, 3, stride=stride).bn(f"{p}.bn1").relu(f"{p}.relu1")
            b.conv(f"{p}.conv2", c_out, 3).bn(f"{p}.bn2")
            if stride != 1 or c_in != c_out:     # shortcut: 1x1 conv + bn on the block input, added to the main path
                b.save(f"{p}.main")
                b.conv(f"{p}.downsample", c_out, 1, stride=stride, padding=0, source=p).bn(f"{p}.downsample.bn")
                b.add(f"{p}.main", f"{p}.add")
            else:
                b.add(p, f"{p}.add")
            b.relu(f"{p}.relu2")
            c_in = c_out


def resnet18_cifar(classes: int = 10, image: int = 32, width: int = 64, channels: int = 3) -> Network:
    """ResNet-18 for CIFAR-sized inputs: a 3x3 stem (no max pool), four stages of two basic blocks
    (64, 128, 256, 512 channels; 1x1 stride-2 shortcut convolutions), global average pool, ``512 -> classes``.

    ``width`` scales the channels (``width, 2 width, 4 width, 8 width``): the same layer structure, scaled
    down for RTL simulation and for training on small data; ``image`` and ``channels`` give the input."""
    b = NetworkBuilder("resnet18", image, image, channels).conv("conv1", width, 3).bn("bn1").relu("relu1")
    _basic_blocks(b, width, width)
    return b.avgpool(name="avgpool").flatten("flatten").linear("fc", classes).build()


def resnet18_imagenet(classes: int = 1000, image: int = 224) -> Network:
    """ResNet-18 for ImageNet-sized inputs: a 7x7 stride-2 stem (dense: 3 input channels) and a 3x3 stride-2 max
    pool, then the stages of :func:`resnet18_cifar` at 56, 28, 14 and 7 pixels, global average pool,
    ``512 -> classes``."""
    b = (NetworkBuilder("resnet18_imagenet", image, image, 3)
         .conv("conv1", 64, 7, stride=2, padding=3, ff="dense", bp="dense").bn("bn1").relu("relu1")
         .maxpool(3, 2, 1, name="maxpool"))
    _basic_blocks(b, 64, 64)
    return b.avgpool(name="avgpool").flatten("flatten").linear("fc", classes).build()


#: VGG-16 convolution widths, ``"M"`` = 2x2 max pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_cifar(classes: int = 10, image: int = 32, width: int = 64, channels: int = 3) -> Network:
    """VGG-16 for CIFAR-sized inputs: 13 3x3 convolutions with batch norm, five 2x2 max pools (32 -> 1), and the
    classifier ``512 -> 512 -> 512 -> classes`` (ReLU between). ``width`` scales every width (64 is the original).
    On inputs smaller than 32 pixels the pools that would go below ``1 x 1`` are left out (8 x 8 digits keep
    three: 8 -> 4 -> 2 -> 1, and the last two stages run at ``1 x 1``)."""
    b = NetworkBuilder("vgg16", image, image, channels)
    i = p = 0
    for v in _VGG16:
        if v == "M":
            if min(b.shape[:2]) >= 2:
                p += 1
                b.maxpool(2, name=f"pool{p}")
        else:
            i += 1
            b.conv(f"conv{i}", v * width // 64, 3).bn(f"bn{i}").relu(f"relu{i}")
    fc = 512 * width // 64
    return (b.flatten("flatten").linear("fc1", fc).relu("relu_fc1").linear("fc2", fc).relu("relu_fc2")
            .linear("fc3", classes).build())


def mlp(classes: int = 10, width: int = 128, features: int = 64) -> Network:
    """The digits MLP: ``features -> width -> width -> classes`` with ReLU (three layers, so that ``fc2`` has both
    a sparse FF and a sparse BP pass)."""
    return (NetworkBuilder("mlp", 1, 1, features).linear("fc1", width).relu("relu1").linear("fc2", width)
            .relu("relu2").linear("fc3", classes).build())


def cnn(classes: int = 10, width: int = 16, image: int = 8, channels: int = 1) -> Network:
    """The digits CNN: ``conv3x3 -> width`` (stride 1) and ``conv3x3 -> 2 width`` (stride 2), both padded, with bias
    and ReLU, flatten, ``linear -> classes``."""
    return (NetworkBuilder("cnn", image, image, channels).conv("conv1", width, 3, bias=True).relu("relu1")
            .conv("conv2", 2 * width, 3, stride=2, bias=True).relu("relu2").flatten("flatten")
            .linear("fc", classes).build())


NETWORKS: dict[str, Callable[..., Network]] = {"resnet18": resnet18_cifar, "vgg16": vgg16_cifar}


def get_network(name: str, **kwargs) -> Network:
    """A network of :data:`NETWORKS` by name (default CIFAR-sized, 10 classes; ``kwargs`` go to its builder)."""
    try:
        build = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETWORKS)}") from None
    return build(**kwargs)


def from_torch(module, input_shape: tuple[int, int, int], name: str = "torch") -> Network:
    """Import the GEMM layers of a PyTorch module (``Conv2d`` and ``Linear``, in registration order).

    Only the layer list is imported: every ``Conv2d`` (square kernel, groups = dilation = 1) and ``Linear``
    with its input size, found by a forward pass with forward hooks on a zero tensor of ``input_shape``
    (``H, W, C``). Everything else runs on the host and is recorded as one ``HostOp("host")`` per gap.

    Raises
    ------
    ImportError
        When PyTorch is not installed (it is not a dependency of SAT).
    ValueError
        For layers the scheduler cannot lower (grouped or dilated convolutions, non-square kernels).
    """
    try:
        import torch
    except ModuleNotFoundError:
        raise ImportError("from_torch needs PyTorch, which SAT does not depend on: install it with "
                          "`pip install torch`, or describe the network with NetworkBuilder") from None
    items: list[Item] = []
    hooks = []

    def hook(mod, inputs, _output, mod_name):
        x = inputs[0]
        if isinstance(mod, torch.nn.Conv2d):
            if mod.groups != 1 or mod.dilation != (1, 1) or mod.kernel_size[0] != mod.kernel_size[1] \
                    or mod.stride[0] != mod.stride[1] or mod.padding[0] != mod.padding[1]:
                raise ValueError(f"{mod_name}: only square, ungrouped, undilated convolutions can be scheduled")
            items.append(Conv(mod_name, mod.in_channels, mod.out_channels, mod.kernel_size[0],
                              (int(x.shape[2]), int(x.shape[3])), mod.stride[0], mod.padding[0],
                              bias=mod.bias is not None))
        else:
            items.append(Linear(mod_name, mod.in_features, mod.out_features, bias=mod.bias is not None))

    for mod_name, mod in module.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(mod.register_forward_hook(functools.partial(hook, mod_name=mod_name)))
    try:
        h, w, c = input_shape
        with torch.no_grad():
            module.eval()(torch.zeros(1, c, h, w))
    finally:
        for handle in hooks:
            handle.remove()
    with_host: list[Item] = []
    for i, it in enumerate(items):
        if i:
            with_host.append(HostOp(f"host{i}", "host"))
        with_host.append(it)
    return Network(name, tuple(input_shape), tuple(with_host))
