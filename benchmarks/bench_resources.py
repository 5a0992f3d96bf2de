"""Resource estimates of SAT builds on the VCU1525's XCVU9P (Yosys ``synth_xilinx -family xcup``).

Runs :func:`sat.boards.resources.estimate` (core + GEMM unit + engine + array) for candidate array sizes, the
calibration of the method against a full synthesis of a small ``sat_core``, and the small PE baseline of the
default test suite; extrapolates larger arrays from the largest candidate's parts (no synthesis); prints tables and
writes JSON.
With ``--update`` it rewrites ``boards/resource_baselines.json`` (commit it with the gateware change that moved the
numbers). Heavy: minutes per configuration on one core (``nice``-d Yosys); results are cached in
``build/resources``.

    python benchmarks/bench_resources.py [--sizes 16x16,32x32] [--json out.json] [--update]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sat.boards.resources import (
    BASELINES_PATH,
    VU9P,
    VU9P_SOURCE,
    calibration,
    estimate,
    extrapolate,
    part_resources,
)
from sat.boards.vivado import default_card_config
from sat.sw.config import SATConfig

#: Configuration of the fast PE baseline in the default test suite (small: synthesizes in about 10 s).
SMALL_PE = SATConfig(rows=2, cols=2, fmt="bf16", nm_set=((2, 4),), adder_latency=1)
#: Calibration build (estimate vs full synthesis).
CALIBRATION = SATConfig(rows=4, cols=4)
#: The card's build (boards/vcu1525_default.json): candidates differ from it only in the array size, so they
#: keep its buffer depths.
CARD = default_card_config()
#: Candidate sizes for the card default (FP16, default N:M set, L = 4).
CANDIDATES = ((16, 16), (24, 32), (32, 32), (32, 40))
#: Larger sizes extrapolated from the largest candidate's parts (the per-PE parts scale with rows * cols).
EXTRAPOLATED = ((40, 32), (32, 48), (48, 32), (64, 32))
#: Budget for the default card configuration: share of the VU9P's LUTs and DSPs.
BUDGET = 0.75  # issue 13: at most 75 % of the VU9P's LUTs (and DSPs) at the default configuration


def _yosys_version() -> str:
    import subprocess

    from sat.sw.tools import yosys_command

    try:
        return subprocess.run([*yosys_command(), "-V"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return "unknown"


#: Keys of an estimate written to the JSON / baselines.
_KEPT = ("config", "parts", "array", "total", "share", "part_share")


def _row(est: dict) -> None:
    c, t, s = est["config"], est["total"], est["share"]
    print(f"{c['rows']:>3}x{c['cols']:<3} {t['lut']:>10,.0f} {100 * s['lut']:>6.1f} {t['ff']:>10,.0f} "
          f"{100 * s['ff']:>6.1f} {t['dsp']:>6,.0f} {100 * s['dsp']:>6.1f} "
          f"{t['bram36'] + t['bram18'] / 2:>7,.1f} {t['uram']:>5,.0f} {est['parts']['unit']['lut']:>9,.0f} "
          f"{100 * est['part_share']['unit']:>6.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_sizes = ",".join(f"{r}x{c}" for r, c in CANDIDATES)
    ap.add_argument("--sizes", help=f"comma-separated RxC candidates (default: {default_sizes})")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--update", action="store_true", help=f"rewrite {BASELINES_PATH.name}")
    args = ap.parse_args(argv)
    sizes = CANDIDATES if not args.sizes else tuple(tuple(int(x) for x in s.split("x")) for s in args.sizes.split(","))

    t0 = time.time()
    small = part_resources("pe", SMALL_PE)
    print(f"small PE ({SMALL_PE.fmt}, N:M {SMALL_PE.nm_set}, L={SMALL_PE.adder_latency}): {small.to_dict()}",
          flush=True)
    cal = calibration(CALIBRATION)
    print(f"calibration {CALIBRATION.rows}x{CALIBRATION.cols}: estimate {cal['estimate']}\n"
          f"  full {cal['full']}\n  relative error {cal['relative_error']}", flush=True)
    estimates = {}
    print(f"{'size':>7} {'LUT':>10} {'LUT %':>6} {'FF':>10} {'FF %':>6} {'DSP':>6} {'DSP %':>6} {'BRAM36':>7} "
          f"{'URAM':>5} {'unit LUT':>9} {'unit %':>6}  ({time.time() - t0:.0f} s so far)")
    for rows, cols in sizes:
        est = estimate(CARD.replace(rows=rows, cols=cols))
        estimates[f"{rows}x{cols}"] = est
        _row(est)
    fitting = [k for k, e in estimates.items() if e["share"]["lut"] <= BUDGET and e["share"]["dsp"] <= BUDGET]
    best = max(fitting, key=lambda k: estimates[k]["config"]["rows"] * estimates[k]["config"]["cols"], default=None)
    print(f"largest candidate within {100 * BUDGET:.0f} % of LUTs and DSPs: {best} ({time.time() - t0:.0f} s)")
    for key, est in estimates.items():
        print(f"{key} per part (LUT / FF / DSP / RAMB36): " + "; ".join(
            f"{name} {p['lut']:,.0f} / {p['ff']:,.0f} / {p['dsp']:,.0f} / {p['bram36'] + p['bram18'] / 2:,.1f}"
            for name, p in est["parts"].items()))
    extrapolated = {}
    if estimates:
        largest = max(estimates.values(), key=lambda e: e["config"]["rows"] * e["config"]["cols"])
        print(f"extrapolated from the parts of {largest['config']['rows']}x{largest['config']['cols']} "
              f"(core, unit and engine as there: block RAM is a lower bound):")
        for rows, cols in EXTRAPOLATED:
            ext = extrapolate(largest, rows, cols)
            extrapolated[f"{rows}x{cols}"] = ext
            _row(ext)
    result = {
        "yosys": _yosys_version(),
        "device": {"part": "xcvu9p-fsgd2104-2L-e", **VU9P, "source": VU9P_SOURCE},
        "budget": BUDGET,
        "tolerance": 0.05,
        "small_pe": {"config": SMALL_PE.to_dict(), "resources": small.to_dict()},
        "calibration": cal,
        "estimates": {k: {key: e[key] for key in _KEPT} for k, e in estimates.items()},
        "extrapolated": {k: {key: e[key] for key in (*_KEPT, "extrapolated_from")} for k, e in extrapolated.items()},
        "method": next(iter(estimates.values()))["method"] if estimates else "",
        "largest_fitting": best,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.update:
        BASELINES_PATH.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {BASELINES_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
