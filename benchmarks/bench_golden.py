"""Golden-model throughput: N:M masks + compression + AXI packing on ResNet-50's weights, and GEMM speed.

A plain script (no assertions about speed): ``python benchmarks/bench_golden.py [--nm 2:8] [--json]``.
It pins NumPy's BLAS/OpenMP pools to one thread so the figures are single-core figures.

* Pre-generation: for every ResNet-50 weight (53 conv layers + FC, 25.5 M weights, ``C_out x K`` with
  ``K = kh*kw*c_in``) time ``nm_mask`` along ``K`` (FF) and along ``C_out`` (BP), the rest of
  ``compress_ff`` / ``compress_bp``, and ``pack``. Target: FF masks + pack of the whole net under 1 s.
* GEMM: ``matmul`` (dense) and ``matmul_sparse`` (compressed operand) in GMAC/s for a few sizes; sparse
  figures are given both as executed MACs (``K*N/M`` per output) and as dense-equivalent MACs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from sat.sw.bdwp import nm_mask  # noqa: E402
from sat.sw.nmformat import compress, pack  # noqa: E402
from sat.sw.numerics import matmul, matmul_sparse  # noqa: E402

__all__ = ["resnet50_layers", "bench_pregeneration", "bench_gemm", "main"]


def resnet50_layers() -> list[tuple[str, int, int]]:
    """ResNet-50 (torchvision, v1.5) weight matrices as ``(name, C_out, K)``, ``K = kh * kw * c_in``."""
    layers = [("conv1", 64, 7 * 7 * 3)]
    c_in = 64
    for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        out = 4 * width
        for blk in range(blocks):
            name = f"layer{stage}.{blk}"
            layers += [(f"{name}.conv1", width, c_in), (f"{name}.conv2", width, 9 * width),
                       (f"{name}.conv3", out, width)]
            if blk == 0:
                layers.append((f"{name}.downsample", out, c_in))
            c_in = out
    layers.append(("fc", 1000, 2048))
    return layers


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def bench_pregeneration(n: int, m: int, fmt: str, repeats: int, seed: int = 0) -> dict:
    """Best-of-``repeats`` seconds for masks, compression and packing over all ResNet-50 weights."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((c_out, k), dtype=np.float32) for _, c_out, k in resnet50_layers()]
    best: dict[str, float] = {}
    packed_bytes = 0
    for _ in range(repeats):
        t = dict.fromkeys(("ff_mask", "ff_compress", "ff_pack", "bp_mask", "bp_compress", "bp_pack"), 0.0)
        packed_bytes = 0
        for w in weights:
            # FF: B = W^T (K x C_out), groups along K;  BP: B = W (C_out x K), groups along C_out
            for tag, b in (("ff", w.T), ("bp", w)):
                mask, dt = _timed(nm_mask, b, n, m, axis=0)
                t[f"{tag}_mask"] += dt
                op, dt = _timed(compress, b, n, m, mask=mask)
                t[f"{tag}_compress"] += dt
                data, dt = _timed(pack, op, fmt)
                t[f"{tag}_pack"] += dt
                packed_bytes += data.size
        best = t if not best else {key: min(best[key], t[key]) for key in t}
    total_weights = sum(w.size for w in weights)
    best["ff_total"] = best["ff_mask"] + best["ff_compress"] + best["ff_pack"]
    best["bp_total"] = best["bp_mask"] + best["bp_compress"] + best["bp_pack"]
    return {"n": n, "m": m, "fmt": fmt, "layers": len(weights), "weights": total_weights,
            "packed_bytes_ff_plus_bp": packed_bytes, "seconds": best,
            "mweights_per_s_ff_total": total_weights / best["ff_total"] / 1e6}


def bench_gemm(sizes: list[tuple[int, int, int]], n: int, m: int, fmt: str, seed: int = 0) -> list[dict]:
    """GMAC/s of ``matmul`` and ``matmul_sparse`` for ``(rows, K, cols)`` sizes."""
    rng = np.random.default_rng(seed)
    rows_out = []
    for rows, k, cols in sizes:
        a = rng.standard_normal((rows, k), dtype=np.float32)
        b = rng.standard_normal((k, cols), dtype=np.float32)
        op = compress(b, n, m)
        _, t_dense = _timed(matmul, a, b, fmt)
        _, t_sparse = _timed(matmul_sparse, a, op.values, op.indices, m, fmt)
        macs = rows * k * cols
        rows_out.append({"rows": rows, "k": k, "cols": cols, "dense_s": t_dense, "sparse_s": t_sparse,
                         "dense_gmac_s": macs / t_dense / 1e9,
                         "sparse_gmac_s_executed": macs * n / m / t_sparse / 1e9,
                         "sparse_gmac_s_dense_equiv": macs / t_sparse / 1e9})
    return rows_out


def main(argv: list[str] | None = None) -> dict:
    """Run both benchmarks, print a table (or JSON with ``--json``) and return the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nm", default="2:8", help="N:M pattern, e.g. 2:8 (default)")
    p.add_argument("--fmt", default="fp16", choices=["fp16", "bf16"])
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs (pre-generation)")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM benchmark")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        n, m = (int(x) for x in args.nm.split(":"))
    except ValueError:
        p.error(f"--nm must look like 2:8, not {args.nm!r}")
    pre = bench_pregeneration(n, m, args.fmt, args.repeats)
    sizes = [(64, 576, 64), (128, 1152, 128), (256, 2304, 256)]
    gemm = [] if args.no_gemm else bench_gemm(sizes, n, m, args.fmt)
    result = {"machine": platform.processor() or platform.machine(), "numpy": np.__version__,
              "threads": 1, "pregeneration": pre, "gemm": gemm}
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    s = pre["seconds"]
    print(f"ResNet-50 weights: {pre['layers']} layers, {pre['weights'] / 1e6:.2f} M weights, {n}:{m}, "
          f"{args.fmt}, 1 thread, best of {args.repeats}")
    print(f"{'pass':<4} {'nm_mask':>9} {'compress':>9} {'pack':>9} {'total':>9}   (seconds)")
    for tag in ("ff", "bp"):
        print(f"{tag.upper():<4} {s[tag + '_mask']:9.3f} {s[tag + '_compress']:9.3f} {s[tag + '_pack']:9.3f} "
              f"{s[tag + '_total']:9.3f}")
    print(f"FF masks+compress+pack: {pre['mweights_per_s_ff_total']:.1f} M weights/s "
          f"(target: whole net < 1 s); FF+BP packed size {pre['packed_bytes_ff_plus_bp'] / 2**20:.1f} MiB")
    if gemm:
        print(f"\n{'rows':>5} {'K':>6} {'cols':>5} {'dense GMAC/s':>13} {'sparse GMAC/s':>14} "
              f"{'(dense-equiv)':>14}")
        for r in gemm:
            print(f"{r['rows']:5d} {r['k']:6d} {r['cols']:5d} {r['dense_gmac_s']:13.3f} "
                  f"{r['sparse_gmac_s_executed']:14.3f} {r['sparse_gmac_s_dense_equiv']:14.3f}")
    return result


if __name__ == "__main__":
    main()
