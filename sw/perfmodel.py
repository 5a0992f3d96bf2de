"""Cycle model of the GEMM engine (``sat.hw.gemm.GemmEngine``): the counters a GEMM command produces.

The model follows the engine's sequencing pass by pass (``docs/architecture.md``, "Cycle model") and is exact:
the RTL tests compare every counter with it. Time 0 is the cycle in which the engine accepts the command.

* ``S`` = steps per output: ``red`` (dense) or ``ceil(red / M) * N`` (sparse N:M). A pass (one ``(R*L) x C``
  output tile) is ``S`` groups of ``L`` steps; passes = ``ceil(rows / (R*L)) * ceil(cols / C)``.
* The first group is issued (feeder stage A) at cycle ``2`` (accept, setup), groups follow back to back.
* The last group of pass ``q >= 1`` may be issued at cycle ``x`` only if pass ``q-1`` left the capture banks
  (transfer at cycle ``T[q-1]``) by ``x - 1``; otherwise the feeder issues bubble groups (``L`` cycles each,
  counted as stall cycles) until it may.
* Pass ``q`` is captured by PE ``(R-1, C-1)`` at ``Y[q] = x_last[q] + FILL`` with
  ``FILL = (L - 1) + 1 + (R - 1) + (C - 1) + (3 + L)`` (last slot, buffer read, skew, PE latency), and moves to
  the drain chains at ``T[q] = max(Y[q] + 1, T[q-1] + R*L)`` (the drain shifts ``R*L`` rows, one per cycle).
* ``cycles = T[last] + R*L + 1`` (drain of the last pass, then ``done``); ``busy_cycles = passes * S * L``;
  ``macs = rows * cols * S``.

No stall ever happens when ``S*L >= max(R*L, FILL + 2)``: then a pass takes exactly ``S*L`` cycles and the
utilization of a large GEMM tends to ``(rows * cols) / (passes * R*L * C)`` (edge tiles). The model assumes the
result stream is always ready (back-pressure only adds cycles).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SATConfig

__all__ = [
    "GemmCounters", "steps_per_output", "gemm_counters", "descriptor_counters", "FIRST_ISSUE", "fill_cycles",
    "GemmShape", "ConvLayer", "layer_gemms", "resnet18_layers", "network_counters",
]

#: Cycle (after the accept cycle 0 and the setup cycle 1) in which the first group is issued.
FIRST_ISSUE = 2
#: Multiplier latency of the PE (``sat.hw.fp.FPMultiplier.LATENCY``).
MULTIPLIER_LATENCY = 3


@dataclass(frozen=True)
class GemmCounters:
    """Counters of one GEMM command (the engine's ``cycles``, ``busy_cycles``, ``stall_cycles``, ``macs``)."""

    cycles: int
    busy_cycles: int
    stall_cycles: int
    macs: int
    passes: int

    def utilization(self, config: SATConfig) -> float:
        """Useful MACs per PE per cycle: ``macs / (R * C * cycles)``."""
        return self.macs / (config.rows * config.cols * self.cycles)

    def as_dict(self) -> dict[str, int]:
        return {"cycles": self.cycles, "busy_cycles": self.busy_cycles, "stall_cycles": self.stall_cycles,
                "macs": self.macs, "passes": self.passes}


def steps_per_output(red: int, n: int = 0, m: int = 0) -> int:
    """``S``: reduction steps per output, ``red`` dense or ``ceil(red / M) * N`` for N:M."""
    if n and m and n != m:
        return -(-red // m) * n
    return red


def fill_cycles(config: SATConfig) -> int:
    """``FILL``: cycles from issuing the last group of a pass to its capture by PE ``(R-1, C-1)``."""
    L = config.adder_latency
    return (L - 1) + 1 + (config.rows - 1) + (config.cols - 1) + (MULTIPLIER_LATENCY + L)


def gemm_counters(config: SATConfig, rows: int, red: int, cols: int, n: int = 0, m: int = 0) -> GemmCounters:
    """Predicted counters of one GEMM command ``(rows x red) . (red x cols)``, dense or N:M (``n:m``).

    Parameters
    ----------
    config : SATConfig
        The build (array size, ``adder_latency``).
    rows, red, cols : int
        GEMM shape (each >= 1).
    n, m : int
        N:M pattern of ``B``; 0 (or ``n == m``) for dense.

    Raises
    ------
    ValueError
        For a shape below 1 or an N:M pattern the build does not support.
    """
    for name, value in (("rows", rows), ("red", red), ("cols", cols)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if n and m and n != m and (n, m) not in config.nm_set:
        raise ValueError(f"{n}:{m} is not in this build's nm_set {config.nm_set}")
    R, C, L = config.rows, config.cols, config.adder_latency
    RL = R * L
    S = steps_per_output(red, n, m)
    passes = -(-rows // RL) * -(-cols // C)
    fill = fill_cycles(config)
    x = FIRST_ISSUE           # stage-A cycle of the pass's first group
    t_prev = None             # transfer cycle of the previous pass
    stall = 0
    q = 0
    prev_offset = None
    while q < passes:
        x_last = x + (S - 1) * L
        bubbles = 0
        if t_prev is not None and x_last < t_prev + 1:
            bubbles = -(-(t_prev + 1 - x_last) // L)
            x_last += bubbles * L
        y = x_last + fill
        t = y + 1 if t_prev is None else max(y + 1, t_prev + RL)
        stall += bubbles * L
        x_next = x_last + L
        q += 1
        # Every pass has the same length, so once the offset between the transfer and the next issue repeats,
        # every later pass repeats the same increments: jump to the end.
        offset = t - x_next
        if prev_offset is not None and offset == prev_offset and q < passes:
            left = passes - q
            period = x_next - x
            x_next += left * period
            t += left * period
            stall += left * bubbles * L
            q = passes
        prev_offset = offset
        x, t_prev = x_next, t
    return GemmCounters(cycles=t_prev + RL + 1, busy_cycles=passes * S * L, stall_cycles=stall,
                        macs=rows * cols * S, passes=passes)


def descriptor_counters(desc, config: SATConfig) -> GemmCounters:
    """:func:`gemm_counters` of a :class:`sat.sw.descriptor.GemmDescriptor`."""
    if desc.sparse:
        return gemm_counters(config, desc.rows, desc.red, desc.cols, desc.n, desc.m)
    return gemm_counters(config, desc.rows, desc.red, desc.cols)


@dataclass(frozen=True)
class GemmShape:
    """One GEMM command of a training iteration: ``pass_`` is "ff", "bp" or "wu"; ``n = m = 0`` for dense."""

    layer: str
    pass_: str
    rows: int
    red: int
    cols: int
    n: int = 0
    m: int = 0


@dataclass(frozen=True)
class ConvLayer:
    """A convolution (or, with ``kernel = 1`` and ``out_hw = 1``, a linear layer), lowered channels-last.

    ``sparse`` = False runs all three GEMMs dense (e.g. the first convolution with 3 input channels).
    """

    name: str
    c_in: int
    c_out: int
    kernel: int
    out_hw: int
    sparse: bool = True


def layer_gemms(layer: ConvLayer, batch: int, nm: tuple[int, int] | None) -> list[GemmShape]:
    """FF, BP and WU GEMMs of ``layer`` (``docs/bdwp.md``): FF ``(B*HW) x K x C_out`` sparse along ``K``,
    BP ``(B*HW) x C_out x K`` sparse along ``C_out``, WU ``C_out x (B*HW) x K`` dense."""
    k = layer.kernel * layer.kernel * layer.c_in
    pixels = batch * layer.out_hw * layer.out_hw
    n, m = nm if (nm is not None and layer.sparse) else (0, 0)
    return [
        GemmShape(layer.name, "ff", pixels, k, layer.c_out, n, m),
        GemmShape(layer.name, "bp", pixels, layer.c_out, k, n, m),
        GemmShape(layer.name, "wu", layer.c_out, pixels, k),
    ]


def resnet18_layers(image: int = 224, classes: int = 1000) -> list[ConvLayer]:
    """The convolutions and the classifier of ResNet-18 (shortcut 1x1 convolutions included)."""
    layers = [ConvLayer("conv1", 3, 64, 7, image // 2, sparse=False)]
    hw = image // 4
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512)):
        if stage:
            hw //= 2
        for block in range(2):
            first = block == 0 and stage > 0
            layers.append(ConvLayer(f"layer{stage + 1}.{block}.conv1", c_in if block == 0 else c_out, c_out, 3, hw))
            layers.append(ConvLayer(f"layer{stage + 1}.{block}.conv2", c_out, c_out, 3, hw))
            if first:
                layers.append(ConvLayer(f"layer{stage + 1}.{block}.downsample", c_in, c_out, 1, hw))
        c_in = c_out
    layers.append(ConvLayer("fc", 512, classes, 1, 1))
    return layers


def network_counters(config: SATConfig, layers: list[ConvLayer], batch: int,
                     nm: tuple[int, int] | None) -> list[tuple[GemmShape, GemmCounters]]:
    """:func:`gemm_counters` of every GEMM of one training iteration (FF, BP, WU of every layer)."""
    out = []
    for layer in layers:
        for g in layer_gemms(layer, batch, nm):
            out.append((g, gemm_counters(config, g.rows, g.red, g.cols, g.n, g.m)))
    return out
