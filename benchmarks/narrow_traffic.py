"""What narrow results save per training iteration: the bytes the GEMM unit writes to device memory, and the unit
and system cycles of the cycle model, with every result FP32 (before) and with FF and BP results in the operand
format (after: ``schedule_iteration(..., narrow=True)``, the default; WU results and K-chunk partials stay FP32).

    python benchmarks/narrow_traffic.py [--network resnet18] [--batch 32] [--modes dense,2:8] [--json FILE]

* written: ``c_item * rows * cols`` of every descriptor of the schedule (2 bytes narrow, 4 FP32);
  read: the operand bytes as in ``sat bench``'s AXI floor (A once, B once per descriptor);
* unit cycles: ``perfmodel.unit_cycles`` of every descriptor from an ideal memory; system cycles: the same with a
  DDR4-2400 channel (``sat.sw.dram.DDR4_2400``), as ``sat bench`` reports them.
"""

from __future__ import annotations

import argparse
import json

from sat.sw.bench import default_config, gemm_unit_timing
from sat.sw.dram import DDR4_2400
from sat.sw.nmformat import packed_nbytes
from sat.sw.schedule import get_network, schedule_iteration


def measure(network: str, batch: int, mode: str, narrow: bool) -> dict:
    """Bytes and cycles of one iteration's schedule."""
    config = default_config()
    s = schedule_iteration(get_network(network), batch, config, None if mode == "dense" else mode, narrow=narrow)
    written = sum(d.c_item * d.rows * d.cols for d in s.descriptors)
    read = sum(2 * d.rows * d.red + (packed_nbytes(d.n, d.m, d.red, d.cols) if d.sparse else 2 * d.red * d.cols)
               for d in s.descriptors)
    unit = sum(gemm_unit_timing(s, g)[0] for g in s.gemms)
    system = sum(gemm_unit_timing(s, g, DDR4_2400)[0] for g in s.gemms)
    return {"written_bytes": written, "read_bytes": read, "unit_cycles": unit, "system_cycles": system,
            "narrow_descriptors": sum(d.narrow for d in s.descriptors), "descriptors": len(s.descriptors),
            "engine_cycles": s.cycles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--modes", default="dense,2:8")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    out = {}
    print(f"{args.network} batch {args.batch}: FP32 results -> narrow FF/BP results")
    print("| mode | written MB | read MB | unit Mcycles | system Mcycles | narrow descriptors |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        before, after = measure(args.network, args.batch, mode, False), measure(args.network, args.batch, mode, True)
        out[mode] = {"fp32": before, "narrow": after}
        print(f"| {mode} | {before['written_bytes'] / 1e6:.1f} -> {after['written_bytes'] / 1e6:.1f} | "
              f"{before['read_bytes'] / 1e6:.1f} | {before['unit_cycles'] / 1e6:.2f} -> "
              f"{after['unit_cycles'] / 1e6:.2f} | {before['system_cycles'] / 1e6:.2f} -> "
              f"{after['system_cycles'] / 1e6:.2f} | {after['narrow_descriptors']} of {after['descriptors']} |")
    if "dense" in out:
        for mode, v in out.items():
            if mode != "dense":
                for k in ("fp32", "narrow"):
                    print(f"{mode} over dense, system, {k} results: "
                          f"{out['dense'][k]['system_cycles'] / v[k]['system_cycles']:.3f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
