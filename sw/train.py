"""Training with BDWP on real data: models, data, the training loop and JSON results.

Every model is a network description of :mod:`sat.sw.network` turned into a trainable
:class:`sat.sw.graph.Graph`:

* ``mlp``: ``64 -> 128 -> 128 -> 10`` with ReLU. Three layers, so that one layer (``fc2``) has both a sparse
  FF and a sparse BP pass: in a two-layer MLP the first layer computes no input gradient and the 10-way
  classifier's BP runs dense, so the BP mask would never matter.
* ``cnn``: ``conv3x3 1->16 stride 1 pad 1`` (ReLU), ``conv3x3 16->32 stride 2 pad 1`` (ReLU), flatten,
  ``linear 512 -> 10`` on 8x8x1 channels-last images.
* ``resnet18``, ``vgg16``: :func:`sat.sw.network.resnet18_cifar` and :func:`~sat.sw.network.vgg16_cifar` on the
  8x8x1 images (batch norm, residual adds, max and global-average pooling on the host), channels scaled by
  ``width`` (the first stage's channels; 64 is the full network).

Data: scikit-learn's bundled ``load_digits`` (1797 8x8 images, no network access), pixel values scaled to
``[0, 1]``, a fixed stratified 75/25 train/test split (``random_state=0``) that does not depend on the seed.
The seed sets the weight initialisation and the mini-batch order. No installable package here ships a larger
image classification set inside its wheel (MNIST / CIFAR loaders download at run time), so digits it is.

Each run reports per-iteration means in ``timing`` (see :func:`train`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sat.sw import network as nets
from sat.sw.bdwp import (
    SGD,
    BDWPSettings,
    GemmBackend,
    GoldenBackend,
    LossScaler,
    format_nm,
    parse_nm,
)
from sat.sw.graph import Graph
from sat.sw.meter import Meter
from sat.sw.validate import check_float, check_int

__all__ = ["MODELS", "IMAGE_MODELS", "DATASETS", "FRAMEWORKS", "TORCH_MODELS", "LAMBDA_W", "LAMBDA_W_SPARSE",
           "default_lambda_w",
           "DEFAULT_WIDTH", "TrainConfig", "Dataset", "load_dataset",
           "subset", "model_network", "build_model", "parse_policy", "train", "compare_runs", "weights_digest",
           "write_json"]

MODELS = ("mlp", "cnn", "resnet18", "vgg16")
#: Models that take NHWC images (the others flat vectors).
IMAGE_MODELS = ("cnn", "resnet18", "vgg16")
DATASETS = ("digits",)
#: Where a model is defined: SAT's own layers (:mod:`sat.sw.graph`), or a torch module converted by
#: :func:`sat.torch.convert` (``sat train --framework torch``, :mod:`sat.torch.train`; needs the ``torch`` extra).
FRAMEWORKS = ("sat", "torch")
#: Models with a torch version (:mod:`sat.torch.models`; ResNet-18 is torchvision's).
TORCH_MODELS = ("mlp", "cnn", "resnet18")


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into train and test arrays (float32 inputs, int64 labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int


def load_dataset(name: str = "digits", image: bool = False) -> Dataset:
    """Load a bundled data set.

    Parameters
    ----------
    name : "digits"
        scikit-learn's ``load_digits`` (bundled with scikit-learn, no download).
    image : bool
        Return inputs as NHWC images (B, 8, 8, 1) instead of flat vectors (B, 64).

    Raises
    ------
    ValueError
        For an unknown data set.
    ImportError
        If scikit-learn is missing (``pip install -e ".[data]"``).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: choose one of {DATASETS}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the digits data set needs scikit-learn: pip install -e \".[data]\"") from exc
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    if image:
        x_tr = x_tr.reshape(-1, 8, 8, 1)
        x_te = x_te.reshape(-1, 8, 8, 1)
    return Dataset(name, x_tr, y_tr, x_te, y_te, classes=10)


#: Default ``width`` per model: hidden units of the MLP, channels of the CNN's first convolution, channels of the
#: first stage of ResNet-18 / VGG-16 (64 = full width).
DEFAULT_WIDTH = {"mlp": 128, "cnn": 16, "resnet18": 16, "vgg16": 16}


def model_network(name: str, classes: int = 10, width: int | None = None, image: int = 8,
                  channels: int = 1) -> nets.Network:
    """The network description of model ``name`` (see the module docstring) for ``image x image x channels``
    inputs (the MLP takes ``image * image * channels`` features).

    Raises
    ------
    ValueError
        For an unknown model or a width below 1.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {MODELS}")
    w = DEFAULT_WIDTH[name] if width is None else width
    if isinstance(w, bool) or not isinstance(w, int) or w < 1:
        raise ValueError(f"width must be a positive integer, not {width!r}")
    if name == "mlp":
        return nets.mlp(classes, w, image * image * channels)
    if name == "cnn":
        return nets.cnn(classes, w, image, channels)
    if name == "resnet18":
        return nets.resnet18_cifar(classes, image, w, channels)
    return nets.vgg16_cifar(classes, image, w, channels)


def build_model(name: str, seed: int = 0, classes: int = 10, width: int | None = None) -> Graph:
    """The trainable model ``name`` (see the module docstring) with He-normal weights from ``seed``.

    Parameters
    ----------
    name : "mlp", "cnn", "resnet18" or "vgg16"
    seed : int
    classes : int
    width : int, optional
        Hidden units of both MLP hidden layers, output channels of the CNN's ``conv1`` (``conv2`` has twice as
        many), or the first-stage channels of ResNet-18 / VGG-16; default :data:`DEFAULT_WIDTH`. Smaller models
        keep RTL simulation runs short.

    Raises
    ------
    ValueError
        For an unknown model or a width below 1.
    """
    return Graph.from_network(model_network(name, classes, width), np.random.default_rng(seed))


def parse_policy(items: tuple[str, ...] | list[str]) -> list[tuple[str, str, str]]:
    """Parse per-layer pass overrides ``"LAYER.PASS=MODE"`` (PASS ``ff``/``bp``; MODE auto, dense, sparse).

    Raises
    ------
    ValueError
        For malformed items.
    """
    out = []
    for item in items:
        head, eq, mode = item.partition("=")
        layer, dot, which = head.rpartition(".")
        if not eq or not dot or which not in ("ff", "bp") or mode not in ("auto", "dense", "sparse"):
            raise ValueError(f"policy override must look like 'fc3.bp=dense' (pass ff or bp, mode auto, "
                             f"dense or sparse), not {item!r}")
        out.append((layer, which, mode))
    return out


#: SR-STE coefficient of the method (Zhou et al., ICLR 2021; the BDWP default).
LAMBDA_W = 2e-4
#: SR-STE coefficient for patterns keeping at most 1 of 8 (see :func:`default_lambda_w`).
LAMBDA_W_SPARSE = 2e-3


def default_lambda_w(nm: tuple[int, int] | None) -> float:
    """The default SR-STE coefficient for ``nm``: :data:`LAMBDA_W`, or :data:`LAMBDA_W_SPARSE` when ``N/M <= 1/8``.

    With independent BP masks, BP uses the largest master weights along ``C_out``, also those FF pruned away; only
    SR-STE's decay keeps those small. At 1:8, seven of eight weights are FF-pruned and 2e-4 no longer holds them
    back: they grow, the BP mask drifts onto them (the BP pass then propagates through weights the forward pass
    never used), and the weights and the loss diverge on some seeds. Ten times the decay keeps every seed stable
    (``docs/bdwp.md``)."""
    if nm is not None and nm[0] * 8 <= nm[1]:
        return LAMBDA_W_SPARSE
    return LAMBDA_W


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Parameters
    ----------
    model : "mlp", "cnn", "resnet18" or "vgg16"
    dataset : "digits"
    nm : str
        ``"dense"`` or ``"N:M"``.
    fmt : "fp16" or "bf16"
    bp_mask : "independent" or "nested"
    seed : int
    epochs, batch_size : int
    lr, momentum, weight_decay : float
        SGD with momentum.
    lambda_w : float or "auto"
        The SR-STE coefficient; ``"auto"`` (default) is :func:`default_lambda_w` of the N:M pattern: 2e-4, and
        2e-3 for patterns that keep 1 of 8 or fewer (see ``docs/bdwp.md``, "1:8 and independent BP masks").
    lr_schedule : "cosine" or "constant"
        Per-epoch cosine decay from ``lr`` to 0, or constant.
    loss_scale : "dynamic" or float
        FP16 loss scaling (BF16 runs unscaled).
    policy : tuple of str
        Per-layer pass overrides, ``"LAYER.PASS=MODE"``.
    width : int, optional
        Model width (see :func:`build_model`); default the standard models.
    max_steps : int, optional
        Stop after this many optimizer steps in total (the epoch in progress ends early and is evaluated);
        ``epochs`` still sets the learning-rate schedule. For short runs on slow backends (RTL simulation).
    train_subset, test_subset : int, optional
        Train on the first ``train_subset`` samples of the (shuffled, stratified) training split, evaluate on
        the first ``test_subset`` of the test split; default all (1347 and 450 digits).
    results : "narrow" or "fp32"
        ``narrow`` (default, SPEC section 2): activations (FF results) and activation gradients (BP results) in the
        operand format, weight gradients FP32 (:attr:`BDWPSettings.narrow`); ``fp32``: every GEMM result FP32.
    framework : "sat" or "torch"
        ``sat``: the model built from SAT's layers; ``torch``: its torch version (:data:`TORCH_MODELS`; ResNet-18
        is torchvision's) converted by :func:`sat.torch.convert`, batch norm, pooling, loss and optimizer in torch.

    Raises
    ------
    ValueError
        For an invalid value.
    """

    model: str = "mlp"
    dataset: str = "digits"
    nm: str = "2:8"
    fmt: str = "fp16"
    bp_mask: str = "independent"
    seed: int = 0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lambda_w: float | str = "auto"
    lr_schedule: str = "cosine"
    loss_scale: str | float = "dynamic"
    policy: tuple[str, ...] = field(default_factory=tuple)
    width: int | None = None
    max_steps: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    framework: str = "sat"
    results: str = "narrow"

    def __post_init__(self) -> None:
        if self.results not in ("narrow", "fp32"):
            raise ValueError(f"results must be 'narrow' or 'fp32', not {self.results!r}")
        for name in ("width", "max_steps", "train_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {v!r}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {MODELS}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}: choose one of {DATASETS}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {self.framework!r}: choose one of {FRAMEWORKS}")
        if self.framework == "torch" and self.model not in TORCH_MODELS:
            raise ValueError(f"--framework torch trains {TORCH_MODELS}, not {self.model!r}")
        object.__setattr__(self, "nm", format_nm(parse_nm(self.nm)))
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.seed, "seed", low=0)
        # finite and in range up front: NaN or Inf here would train to NaN and still "succeed"
        for name in ("lr", "weight_decay"):
            object.__setattr__(self, name, check_float(getattr(self, name), name, low=0.0))
        object.__setattr__(self, "momentum", check_float(self.momentum, "momentum", low=0.0, high=1.0,
                                                         high_open=True))
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', not {self.lr_schedule!r}")
        if self.loss_scale != "dynamic":
            try:
                scale = float(self.loss_scale)
            except (TypeError, ValueError):
                scale = -1.0
            if not 0 < scale < math.inf:
                raise ValueError(f"loss_scale must be 'dynamic' or a positive, finite number, "
                                 f"not {self.loss_scale!r}")
            object.__setattr__(self, "loss_scale", scale)
        if self.lambda_w != "auto":
            try:
                lam = check_float(self.lambda_w, "lambda_w", low=0.0)
            except ValueError:
                raise ValueError(f"lambda_w must be 'auto' or a finite number >= 0, not {self.lambda_w!r}") from None
            object.__setattr__(self, "lambda_w", lam)
        object.__setattr__(self, "policy", tuple(self.policy))
        parse_policy(self.policy)

    @property
    def sr_ste_lambda(self) -> float:
        """The SR-STE coefficient of this run (``lambda_w``, with ``"auto"`` resolved)."""
        return default_lambda_w(parse_nm(self.nm)) if self.lambda_w == "auto" else float(self.lambda_w)

    def settings(self, backend: GemmBackend | None = None) -> BDWPSettings:
        """The :class:`BDWPSettings` of this run on ``backend`` (default golden)."""
        return BDWPSettings(parse_nm(self.nm), self.fmt, self.bp_mask,
                            backend if backend is not None else GoldenBackend(), narrow=self.results == "narrow")


def _accuracy(model: Graph, x: np.ndarray, y: np.ndarray, s: BDWPSettings) -> float:
    return float(np.mean(model.predict(x, s) == y))


def train(config: TrainConfig, backend: GemmBackend | None = None, *, progress: bool = True,
          data: Dataset | None = None) -> dict:
    """Train ``config.model`` on ``config.dataset`` with BDWP and return a JSON-serialisable results dict.

    Parameters
    ----------
    config : TrainConfig
    backend : GemmBackend, optional
        Where the GEMMs run; default :class:`~sat.sw.bdwp.GoldenBackend`.
    progress : bool
        Show a tqdm progress bar over the iterations.
    data : Dataset, optional
        Pre-loaded data (default: ``load_dataset(config.dataset)``).

    Returns
    -------
    dict
        ``config``, ``backend``, ``pass_modes`` (per layer: ff/bp/wu dense, sparse or skipped),
        ``epochs`` (per epoch: mean training ``loss``, ``test_accuracy``, ``lr``, ``skipped_steps``,
        ``loss_scale``), ``final_test_accuracy``, ``final_train_accuracy``, ``skipped_steps``, ``seconds``,
        ``steps`` (optimizer steps run), ``step_losses`` and ``losses`` (the loss of every step, in order),
        ``weights_sha256`` (SHA-256 over the FP32 bits of every layer's final parameters and batch-norm
        statistics: two runs trained bit for bit alike have the same digest), ``diverged`` (None, or why the
        result is meaningless: a non-finite final loss, non-finite weights, or every step skipped; ``sat train``
        then exits 1) and ``timing``: per training
        iteration (inference not counted) the means of ``host_seconds`` (wall time outside the backend: host
        work), ``backend_seconds`` (inside it), ``pcie_bytes`` (host <-> card: measured on a device
        backend; on the golden model the bytes a card with conv descriptors would move, see
        :mod:`sat.sw.meter`) and ``device_cycles`` (the device's
        ``CYCLES`` counters, or on the golden model the cycle model of the default build), with ``source``
        saying which.

    Raises
    ------
    ValueError
        For a policy naming an unknown layer, or weights that became NaN in a sparse run (they cannot be pruned).
    """
    from sat.sw.config import SATConfig
    from sat.sw.meter import device_counters

    meter = Meter(backend if backend is not None else GoldenBackend())
    s = config.settings(meter)
    if data is None:
        data = load_dataset(config.dataset, image=config.model in IMAGE_MODELS)
    data = subset(data, config.train_subset, config.test_subset)
    if config.framework == "torch":
        from sat.torch.train import build_torch_model

        model = build_torch_model(config.model, config.seed, data.classes, config.width, s)
    else:
        model = build_model(config.model, config.seed, data.classes, config.width)
    for layer, which, mode in parse_policy(config.policy):
        try:
            model.set_policy(layer, **{which: mode})
        except KeyError as exc:
            raise ValueError(f"policy override names unknown layer {layer!r}; the {config.model} layers are "
                             f"{list(model.pass_modes(None))}") from exc
    opt = SGD(config.lr, config.momentum, config.weight_decay, config.sr_ste_lambda)
    scaler = LossScaler.for_format(config.fmt, config.loss_scale)
    rng = np.random.default_rng(config.seed + 1_000_003)
    n = len(data.x_train)
    steps = math.ceil(n / config.batch_size)
    history = []
    step_losses: list[float] = []
    iterations: list[dict[str, float]] = []
    cycle_config = SATConfig(fmt=config.fmt)
    total_steps = config.epochs * steps if config.max_steps is None else min(config.max_steps,
                                                                              config.epochs * steps)
    t0 = time.perf_counter()
    bar = tqdm(total=total_steps, disable=not progress, leave=False,
               desc=f"{config.model} {config.nm} {config.fmt} {config.bp_mask} s{config.seed}")
    for epoch in range(config.epochs):
        if config.lr_schedule == "cosine":
            opt.lr = 0.5 * config.lr * (1 + math.cos(math.pi * epoch / config.epochs))
        order = rng.permutation(n)
        losses = []
        skipped_before = scaler.skipped
        for i in range(steps):
            if len(step_losses) >= total_steps:
                break
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            before = (time.perf_counter(), meter.seconds, meter.model_bytes, len(meter.gemms),
                      device_counters(meter))
            out = model.train_step(data.x_train[idx], data.y_train[idx], s, opt, scaler)
            after = device_counters(meter)
            if after is not None and before[4] is None:      # a lazily opened device: nothing moved before
                before = (*before[:4], dict.fromkeys(after, 0))
            wall = time.perf_counter() - before[0]
            inside = meter.seconds - before[1]
            it = {"host_seconds": wall - inside, "backend_seconds": inside}
            if after is None:
                it["pcie_bytes"] = meter.model_bytes - before[2]
                it["device_cycles"] = meter.model_cycles(cycle_config, meter.gemms[before[3]:])
            else:
                it.update({k: after[v] - before[4][v] for k, v in (("pcie_bytes", "pcie_bytes"),
                                                                   ("device_cycles", "cycles"))})
                it["measured"] = 1.0
            iterations.append(it)
            losses.append(out["loss"])
            step_losses.append(float(out["loss"]))
            bar.update(1)
        acc = _accuracy(model, data.x_test, data.y_test, s)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "test_accuracy": acc,
                        "lr": opt.lr, "skipped_steps": scaler.skipped - skipped_before,
                        "loss_scale": scaler.scale})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{acc:.3f}")
        if len(step_losses) >= total_steps:
            break
    bar.close()
    problems = []
    if not math.isfinite(history[-1]["loss"]):
        problems.append(f"final loss {history[-1]['loss']}")
    weights = (model.digest_arrays() if hasattr(model, "digest_arrays") else      # a torch model: its state_dict
               [p for layer in model.gemm_layers for _, p, _ in layer.parameters()])
    if not all(np.isfinite(p).all() for p in weights):
        problems.append("non-finite weights")
    if step_losses and scaler.skipped >= len(step_losses):
        problems.append(f"every one of the {len(step_losses)} steps was skipped (gradients overflowed)")
    cfg = asdict(config)
    cfg["policy"] = list(config.policy)
    cfg["lambda_w_used"] = config.sr_ste_lambda
    timing: dict = {k: float(np.mean([it[k] for it in iterations])) for k in iterations[0]} if iterations else {}
    timing["iterations"] = len(iterations)
    measured = bool(timing.pop("measured", 0))
    timing["source"] = ("device counters and measured DMA" if measured else
                        f"cycle model ({cycle_config.rows}x{cycle_config.cols} engine, default buffers) and "
                        "modelled DMA")
    return {
        "config": cfg,
        "backend": type(meter.inner).__name__,
        "pass_modes": model.pass_modes(s.nm),
        "epochs": history,
        "final_test_accuracy": history[-1]["test_accuracy"],
        "final_train_accuracy": _accuracy(model, data.x_train, data.y_train, s),
        "skipped_steps": scaler.skipped,
        "seconds": time.perf_counter() - t0,
        "steps": len(step_losses),
        "step_losses": step_losses,
        "losses": step_losses,
        "weights_sha256": weights_digest(model),
        "diverged": "; ".join(problems) or None,
        "timing": timing,
    }


def compare_runs(result: dict, golden: dict) -> dict:
    """Bit-for-bit comparison of two :func:`train` results: every step's loss, the final weights' digest, the
    accuracies and skipped steps. Returns ``{"golden_match": bool, "differences": [...]}``."""
    diffs = [key for key in ("step_losses", "weights_sha256", "final_test_accuracy", "final_train_accuracy",
                             "skipped_steps") if result[key] != golden[key]]
    if [e["test_accuracy"] for e in result["epochs"]] != [e["test_accuracy"] for e in golden["epochs"]]:
        diffs.append("epochs.test_accuracy")
    return {"golden_match": not diffs, "differences": diffs}


def weights_digest(model: Graph) -> str:
    """SHA-256 (hex) over the FP32 bit patterns of every parameter layer's weight and bias (and a batch norm's
    running statistics), in layer order; for a torch model (:class:`sat.torch.train.TorchModel`) over its
    ``digest_arrays()``."""
    h = hashlib.sha256()
    if hasattr(model, "digest_arrays"):
        tensors = list(model.digest_arrays())
    else:
        tensors = []
        for layer in model.param_layers:
            tensors += [layer.weight, layer.bias]
            if hasattr(layer, "running_mean"):
                tensors += [layer.running_mean, layer.running_var]
    for t in tensors:
        h.update(np.ascontiguousarray(t, dtype=np.float32).view(np.uint32).astype("<u4").tobytes())
    return h.hexdigest()


def subset(data: Dataset, train: int | None = None, test: int | None = None) -> Dataset:
    """``data`` with only the first ``train`` training and ``test`` test samples (``None``: all).

    Raises
    ------
    ValueError
        For a size above the split's.
    """
    for name, n, x in (("train_subset", train, data.x_train), ("test_subset", test, data.x_test)):
        if n is not None and n > len(x):
            raise ValueError(f"{name}={n} exceeds the {len(x)} samples of the {data.name} split")
    if train is None and test is None:
        return data
    return Dataset(data.name, data.x_train[:train], data.y_train[:train], data.x_test[:test], data.y_test[:test],
                   data.classes)


def write_json(obj: dict | list, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
