"""What convolutions on the card save per training iteration: bytes between host and card, bytes between the core
and device memory, and the host's lowering time, before (the host lowers every convolution: ``im2col`` before
FF and WU, GEMM + ``col2im`` for BP) and after (convolution descriptors: the core lowers on the fly).

    python benchmarks/conv_traffic.py [--network resnet18] [--batch 32] [--nm 2:8] [--json FILE]

* host <-> card: the iteration's schedule (``sat.sw.schedule``): every region the host writes (``h2c`` steps) or
  reads back (``c2h``) once. *After* is the schedule as built; *before* replaces each convolution's activation
  regions with the lowered matrices the host moved: FF's and WU's ``im2col(X)`` (``P x K`` FP16) instead of ``X``,
  BP's lowered ``dX`` (``P x K`` FP32, which the host folded with ``col2im``) instead of ``dX``.
* core <-> device memory: the bytes the GEMM unit reads (operand loads, as its tiling issues them; a convolution's
  zero pieces read nothing) and writes (results), plus the host's DMA into and out of device memory.
* host lowering: ``sat.sw.conv.im2col`` of every FF input and ``sat.sw.bdwp.col2im`` of every BP result at the
  network's full size, timed on this machine (median of 3); zero after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from sat.sw.bdwp import col2im
from sat.sw.bench import default_config
from sat.sw.conv import im2col
from sat.sw.descriptor import ConvDescriptor
from sat.sw.network import Linear
from sat.sw.nm import parse_nm
from sat.sw.nmformat import packed_nbytes
from sat.sw.schedule import get_network, schedule_iteration
from sat.sw.tiling import tile_plan


def _operand_reads(config, d) -> tuple[int, int]:
    """Bytes the unit reads for one descriptor: ``(A, B)``, as its tiles load them."""
    n, m = (d.n, d.m) if d.sparse else (0, 0)
    plan = tile_plan(config, d.rows, d.red, d.cols, n, m)
    a = b = 0
    prev_r0 = None
    for i, (r0, rt, _c0, ct) in enumerate(plan.tiles):
        if r0 != prev_r0:
            a += 2 * rt * d.red
        if not (plan.single_column_tile and i):
            b += packed_nbytes(n, m, d.red, ct) if n else 2 * d.red * ct
        prev_r0 = r0
    if isinstance(d, ConvDescriptor):     # zero pieces (padding taps, stride gaps) are not read
        a = int(a * _data_share(d, "a" if d.pass_ != "wu" else "b"))
    return a, b


def _data_share(d: ConvDescriptor, which: str) -> float:
    """Share of the lowered implicit operand that comes from memory (not padding or stride gaps)."""
    from sat.sw.conv import ConvShape, bp_lower

    shape = ConvShape(d.batch, d.height, d.width, d.c_in, d.c_out, d.kh, d.kw, d.stride, d.padding)
    small = ConvShape(1, shape.height, shape.width, 1, 1, shape.kh, shape.kw, shape.stride, shape.padding)
    if d.pass_ == "bp":
        low = bp_lower(np.ones(small.y_shape, np.float32), small)
    else:
        low = im2col(np.ones(small.x_shape, np.float32), small.kh, small.kw, small.stride, small.padding)
    return float(low.mean())


def traffic(network: str, batch: int, nm) -> dict:
    config = default_config()
    net = get_network(network)
    s = schedule_iteration(net, batch, config, nm, orientation="auto")
    convs = {la.name: la for la in net.layers if not isinstance(la, Linear)}
    moved = {st.region: st.kind for st in s.steps if st.kind in ("h2c", "c2h")}
    after = sum(s.regions[r].nbytes for r in moved)
    before = after
    lowered_ff = 0
    for name, la in convs.items():
        h, w = la.in_hw
        P, K = la.pixels(batch), la.k
        x_bytes, xlow_bytes = 2 * batch * h * w * la.c_in, 2 * P * K
        if f"{name}.X" in moved:
            before += xlow_bytes - x_bytes
            lowered_ff += xlow_bytes
        if f"{name}.dX" in moved:
            before += 4 * P * K - 4 * batch * h * w * la.c_in
    reads = writes = 0
    for d in s.descriptors:
        a, b = _operand_reads(config, d)
        reads += a + b
        writes += 4 * d.rows * d.cols
    core_after = reads + writes + after
    # before: the lowered GEMMs read their lowered A in full (no zero pieces skipped) and the host's DMA moves more
    reads_before = 0
    for d in s.descriptors:
        a, b = _operand_reads(config, d)
        if isinstance(d, ConvDescriptor):
            a = int(a / _data_share(d, "a"))
        reads_before += a + b
    core_before = reads_before + writes + before
    return {"network": network, "batch": batch, "nm": "dense" if nm is None else f"{nm[0]}:{nm[1]}",
            "host_card_bytes": {"before": before, "after": after},
            "lowered_ff_activation_bytes_before": lowered_ff,
            "core_memory_bytes": {"before": core_before, "after": core_after}}


def lowering_seconds(network: str, batch: int, repeats: int = 3) -> dict:
    """Host time of the lowering the card now does: im2col of every FF input, col2im of every BP result."""
    net = get_network(network)
    rng = np.random.default_rng(0)
    times = {"im2col": [], "col2im": []}
    for _ in range(repeats):
        t_i = t_c = 0.0
        for la in net.layers:
            if isinstance(la, Linear):
                continue
            h, w = la.in_hw
            x = rng.standard_normal((batch, h, w, la.c_in)).astype(np.float32)
            t0 = time.perf_counter()
            im2col(x, la.kernel, la.kernel, la.stride, la.padding)
            t_i += time.perf_counter() - t0
            cols = rng.standard_normal((la.pixels(batch), la.k)).astype(np.float32)
            t0 = time.perf_counter()
            col2im(cols, x.shape, la.kernel, la.kernel, la.stride, la.padding)
            t_c += time.perf_counter() - t0
        times["im2col"].append(t_i)
        times["col2im"].append(t_c)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--nm", default="2:8")
    p.add_argument("--json", help="write the figures as JSON")
    args = p.parse_args()
    out = traffic(args.network, args.batch, parse_nm(args.nm))
    out["host_lowering_seconds_before"] = lowering_seconds(args.network, args.batch)
    out["host_lowering_seconds_after"] = 0.0
    mb = 1e-6
    print(f"{args.network}, batch {args.batch}, {out['nm']}, per training iteration:")
    for key, label in (("host_card_bytes", "host <-> card"), ("core_memory_bytes", "core/host <-> DRAM")):
        v = out[key]
        print(f"  {label:20s} before {v['before'] * mb:9.1f} MB   after {v['after'] * mb:9.1f} MB")
    print(f"  lowered FF activations moved before: {out['lowered_ff_activation_bytes_before'] * mb:.1f} MB")
    hl = out["host_lowering_seconds_before"]
    print(f"  host lowering        before {hl['im2col'] + hl['col2im']:.3f} s (im2col {hl['im2col']:.3f} s, "
          f"col2im {hl['col2im']:.3f} s)   after 0 s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
