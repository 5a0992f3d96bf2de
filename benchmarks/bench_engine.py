"""Sparse tensor engine benchmark: PE utilization and sparse-over-dense cycle ratios, on the RTL and the model.

Part 1 (RTL, cocotb + Verilator): an 8x8 array (L = 4, FP16) runs the FF and BP GEMMs of one layer, dense and
at every N:M of the build, plus the dense WU, through ``sim/tb_gemm.py`` (results checked bit for bit, counters
against the cycle model). Part 2 (cycle model): the same and larger GEMMs, and a ResNet-18 training iteration,
on a 32x32 array.

Reported: utilization = useful MACs / (PEs x cycles), and per N:M the dense/sparse cycle ratio as a fraction of
the ideal ``M/N``. Targets: dense utilization >= 90 % on large GEMMs, sparse >= 90 % of ``M/N``.

Usage::

    python benchmarks/bench_engine.py              # RTL + model: ~7 min on 2 shared cores (4.5 min build)
    python benchmarks/bench_engine.py --model-only
    python benchmarks/bench_engine.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sat.sw.config import SATConfig
from sat.sw.network import resnet18_imagenet
from sat.sw.perfmodel import gemm_counters, network_counters

RTL_CONFIG = SATConfig(rows=8, cols=8, fmt="fp16", adder_latency=4)
MODEL_CONFIG = SATConfig(rows=32, cols=32, fmt="fp16", adder_latency=4)


def _table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'GEMM':38s} {'rows':>6s} {'red':>6s} {'cols':>6s} {'cycles':>10s} {'model':>10s} {'util':>7s} "
          f"{'speedup':>8s} {'of M/N':>7s}")
    for r in rows:
        print(f"{r['label']:38s} {r['rows']:6d} {r['red']:6d} {r['cols']:6d} {r['cycles']:10d} "
              f"{r.get('model_cycles', r['cycles']):10d} {100 * r['util']:6.1f}% "
              f"{r.get('speedup', 1.0):7.2f}x {100 * r.get('of_ideal', 1.0):6.1f}%")


def _speedups(rows: list[dict]) -> None:
    dense = {(r["kind"], r["dense_key"]): r["cycles"] for r in rows if r["n"] == 0}
    for r in rows:
        if r["n"]:
            base = dense.get((r["kind"], r["dense_key"]))
            if base:
                r["speedup"] = base / r["cycles"]
                r["of_ideal"] = r["speedup"] / (r["m"] / r["n"])


def rtl_rows(batch: int, c_out: int, k: int, seed: int = 1) -> list[dict]:
    """Run the FF/BP/WU GEMMs of a ``c_out x k`` layer on the 8x8 RTL engine; one dict per GEMM."""
    from sat.sim.runner import run_cocotb
    from sat.sim.tops import gemm_top

    config = RTL_CONFIG.replace(a_depth=4096, b_depth=16384)
    specs = []
    for nm in [None, *config.nm_set]:
        specs.append({"kind": "ff", "batch": batch, "c_out": c_out, "k": k, "nm": list(nm) if nm else None})
        specs.append({"kind": "bp", "batch": batch, "c_out": k, "k": c_out, "nm": list(nm) if nm else None})
    specs.append({"kind": "wu", "batch": batch, "c_out": c_out, "k": k, "nm": None})
    top = gemm_top(config)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        run_cocotb(top, "sat.sim.tb_gemm", testcase="gemm_sweep", run_name="bench_engine",
                   params={"config": config.to_dict(), "seed": seed, "cases": specs, "report": str(report)})
        lines = [json.loads(x) for x in report.read_text().splitlines()]
    rows = []
    pes = config.rows * config.cols
    for x in lines:
        rtl, model = x["rtl"], x["model"]
        rows.append({"label": f"RTL {x['label']}", "kind": x["kind"], "rows": x["rows"], "red": x["red"],
                     "cols": x["cols"], "n": x["n"], "m": x["m"], "dense_key": x["kind"],
                     "cycles": rtl["cycles"], "model_cycles": model["cycles"], "macs": rtl["macs"],
                     "util": rtl["macs"] / (pes * rtl["cycles"]), "model_exact": rtl == {
                         k: v for k, v in model.items() if k != "passes"} | {"error": 0}})
    _speedups(rows)
    return rows


def model_rows(config: SATConfig, shapes: list[tuple[int, int, int]]) -> list[dict]:
    """Model counters of dense and every N:M for each ``(rows, red, cols)``."""
    rows = []
    for shape in shapes:
        for nm in [(0, 0), *config.nm_set]:
            c = gemm_counters(config, *shape, *nm)
            label = f"model {shape[0]}x{shape[1]}x{shape[2]} " + ("dense" if not nm[0] else f"{nm[0]}:{nm[1]}")
            rows.append({"label": label, "kind": "gemm", "rows": shape[0], "red": shape[1], "cols": shape[2],
                         "n": nm[0], "m": nm[1], "dense_key": shape, "cycles": c.cycles, "macs": c.macs,
                         "util": c.utilization(config)})
    _speedups(rows)
    return rows


def resnet_summary(config: SATConfig, batch: int) -> dict:
    """Whole-iteration ResNet-18 cycles, dense vs every N:M (first convolution dense)."""
    out = {}
    pes = config.rows * config.cols
    dense = network_counters(config, resnet18_imagenet(), batch, None)
    d_cycles = sum(c.cycles for _, c in dense)
    out["dense"] = {"cycles": d_cycles, "util": sum(c.macs for _, c in dense) / (pes * d_cycles)}
    for nm in config.nm_set:
        res = network_counters(config, resnet18_imagenet(), batch, nm)
        cyc = sum(c.cycles for _, c in res)
        ff_bp = [(g, c) for g, c in res if g.pass_ in ("ff", "bp") and g.n]
        ff_bp_dense = {(g.layer, g.pass_): c.cycles for g, c in dense}
        ratio = sum(ff_bp_dense[(g.layer, g.pass_)] for g, _ in ff_bp) / sum(c.cycles for _, c in ff_bp)
        out[f"{nm[0]}:{nm[1]}"] = {"cycles": cyc, "speedup": d_cycles / cyc,
                                   "ideal": 3 / (2 * nm[0] / nm[1] + 1), "ff_bp_speedup": ratio,
                                   "ff_bp_of_ideal": ratio / (nm[1] / nm[0])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-only", action="store_true", help="skip the RTL part")
    parser.add_argument("--json", type=Path, help="write all numbers as JSON here")
    parser.add_argument("--batch", type=int, default=64, help="RTL GEMM rows (batch)")
    parser.add_argument("--c-out", type=int, default=64)
    parser.add_argument("--k", type=int, default=256)
    args = parser.parse_args(argv)
    result: dict = {}
    if not args.model_only:
        t0 = time.time()
        rows = rtl_rows(args.batch, args.c_out, args.k)
        _table(rows, f"RTL, {RTL_CONFIG.rows}x{RTL_CONFIG.cols} array, L={RTL_CONFIG.adder_latency} "
                     f"({time.time() - t0:.0f} s incl. build); every GEMM bit-exact, "
                     f"model exact: {all(r['model_exact'] for r in rows)}")
        result["rtl"] = rows
    rows8 = model_rows(RTL_CONFIG, [(args.batch, args.k, args.c_out), (args.batch, args.c_out * 4, args.k),
                                    (1024, 1024, 1024)])
    _table(rows8, f"Model, {RTL_CONFIG.rows}x{RTL_CONFIG.cols} array")
    rows32 = model_rows(MODEL_CONFIG, [(4096, 4096, 4096), (3136 * 32 // 32, 576, 64), (25088, 64, 576),
                                       (256, 2304, 256)])
    _table(rows32, f"Model, {MODEL_CONFIG.rows}x{MODEL_CONFIG.cols} array")
    resnet = resnet_summary(MODEL_CONFIG, 32)
    print(f"\nResNet-18 training iteration, batch 32, {MODEL_CONFIG.rows}x{MODEL_CONFIG.cols} array (model):")
    for key, v in resnet.items():
        extra = (f" speedup {v['speedup']:.2f}x (ideal {v['ideal']:.2f}x); sparse FF+BP {v['ff_bp_speedup']:.2f}x"
                 f" = {100 * v['ff_bp_of_ideal']:.1f}% of M/N") if key != "dense" else f" util {100 * v['util']:.1f}%"
        print(f"  {key:6s} {v['cycles']:12d} cycles{extra}")
    result.update(model8=rows8, model32=rows32, resnet18=resnet)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
