"""The ``sat`` command line (console script entry point ``sat.sw.cli:main``).

Subcommands register themselves with :func:`subcommand`; ``sat train`` lives here, and other parts of SAT add
theirs (``sat sim``, ``sat build``) either in this module or in a module listed in :data:`COMMAND_MODULES`,
which :func:`build_parser` imports when it exists::

    @subcommand("sim", help="run a cocotb testbench")
    def _sim(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
        p.add_argument(...)
        return run_sim          # called with the parsed namespace; returns the exit status

Handlers run on one error path (:mod:`sat.sw.cliutil`): an exception the user can act on ends as
``sat: error: <message>`` with exit status 2, never as a traceback (unless ``sat --debug`` or ``SAT_DEBUG=1``).
Build arguments with the types in :mod:`sat.sw.cliutil` (``positive_int``, ``probability``, ``nm_pattern``...) and
check input and output paths with its helpers before any long work. See ``docs/errors.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .cliutil import (
    ArgumentParser,
    CLIError,
    array_shape,
    debug_requested,
    describe_error,
    finite_float,
    nm_pattern,
    nonnegative_int,
    output_file,
    path_arg,
    positive_int,
    power_of_two,
    probability,
    run_command,
    write_text_safely,
)
from .config import MAX_DEPTH, MIN_DEPTH
from .validate import check_float

__all__ = ["Subcommand", "SUBCOMMANDS", "COMMAND_MODULES", "subcommand", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Handler]


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: ``configure`` adds its arguments and returns the handler to run."""

    name: str
    help: str
    configure: Configure


SUBCOMMANDS: dict[str, Subcommand] = {}

# Modules that register further subcommands at import time (skipped when not installed yet).
COMMAND_MODULES: tuple[str, ...] = (
    "sat.sw.driver",    # registers the "model" and "xdma" GEMM backends for `sat train --backend`
    "sat.boards.cli",   # sat build / generate / report / board
    "sat.sim.cli",      # sat sim gemm (skipped until that module exists)
    "sat.sw.bench",     # sat bench (skipped until that module exists)
)


def subcommand(name: str, help: str) -> Callable[[Configure], Configure]:
    """Decorator registering ``configure(parser) -> handler`` as ``sat NAME``.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """
    def register(configure: Configure) -> Configure:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice: pick another name")
        SUBCOMMANDS[name] = Subcommand(name, help, configure)
        return configure
    return register


def _scale_arg(text: str) -> str | float:
    if text == "dynamic":
        return text
    try:
        return check_float(float(text), "loss scale", low=0.0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"loss scale must be 'dynamic' or a positive, finite number, not "
                                         f"{text!r}") from None


def _lambda_arg(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return check_float(float(text), "lambda", low=0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lambda must be 'auto' or a finite number >= 0, not {text!r}") from None


@subcommand("train", help="train a small network with BDWP (N:M sparse FF and BP) or dense")
def _train(p: argparse.ArgumentParser) -> Handler:
    from sat.sw.bdwp import backend_names
    from sat.sw.train import DATASETS, FRAMEWORKS, MODELS

    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--framework", choices=FRAMEWORKS, default="sat",
                   help="sat: SAT's own layers; torch: the model's torch version (ResNet-18: torchvision's) converted "
                        "by sat.torch.convert, batch norm, loss and optimizer in torch (needs the torch extra; "
                        "docs/pytorch.md)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--nm", type=nm_pattern, default="2:8", help="'dense' or N:M, e.g. 2:8 (default 2:8)")
    p.add_argument("--fmt", choices=["fp16", "bf16"], default="fp16", help="GEMM operand format")
    p.add_argument("--bp-mask", choices=["independent", "nested"], default="independent",
                   help="BP weights pruned from the dense master weights (independent) or from W_ff (nested)")
    p.add_argument("--results", choices=["narrow", "fp32"], default="narrow",
                   help="GEMM results: FF and BP in the operand format, WU in FP32 (narrow, default), or all FP32")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=finite_float(0.0), default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--momentum", type=finite_float(0.0, 1.0, high_open=True), default=0.9,
                   help="SGD momentum in [0, 1) (default 0.9)")
    p.add_argument("--weight-decay", type=finite_float(0.0), default=1e-4)
    p.add_argument("--lambda-w", type=_lambda_arg, default="auto",
                   help="SR-STE coefficient, or 'auto' (default: 2e-4, 2e-3 at 1:8; docs/bdwp.md)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--loss-scale", type=_scale_arg, default="dynamic",
                   help="FP16 loss scaling: 'dynamic' or a static number (BF16 runs unscaled)")
    p.add_argument("--policy", action="append", default=[], metavar="LAYER.PASS=MODE",
                   help="per-layer pass override, e.g. fc3.bp=sparse or conv1.ff=dense (repeatable)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--backend", choices=backend_names(), default="golden",
                   help="where the GEMMs run (sim: the RTL simulation of the core, through the driver)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="model width: MLP hidden units (default 128), conv1 channels of the CNN (default 16), "
                        "first-stage channels of ResNet-18 / VGG-16 (default 16; 64 = full width)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many optimizer steps (the LR schedule still spans --epochs)")
    p.add_argument("--train-subset", type=positive_int, default=None, help="train on the first N training samples")
    p.add_argument("--test-subset", type=positive_int, default=None, help="evaluate on the first N test samples")
    p.add_argument("--json", type=path_arg, metavar="PATH", help="write the results dict as JSON to PATH")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sim = p.add_argument_group("RTL simulation (--backend sim)")
    sim.add_argument("--sim-array", type=array_shape, default=(4, 4), metavar="RxC",
                     help="systolic array of the simulated core (default 4x4)")
    sim.add_argument("--sim-a-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=32,
                     help="32-element words per A bank of the GEMM unit, a power of two (default 32)")
    sim.add_argument("--sim-b-depth", type=power_of_two(MIN_DEPTH, MAX_DEPTH), default=512,
                     help="words of the B buffer, a power of two (default 512)")
    sim.add_argument("--sim-opt", type=int, choices=(0, 1, 2), default=1,
                     help="C++ optimisation of the Verilator model (default 1; built once per level)")
    sim.add_argument("--sim-axi", choices=("lean", "axiram"), default=None,
                     help="AXI memory model of the simulation (default lean: sat.sim.axi_memory)")
    sim.add_argument("--sim-memory-mb", type=positive_int, default=32,
                     help="device memory of the simulated core in MiB (default 32; a build parameter)")
    sim.add_argument("--sim-pause", type=probability, default=0.0,
                     help="random AXI pause probability in [0, 1) (default 0)")
    sim.add_argument("--sim-dram", choices=("ddr4", "ideal"), default=None,
                     help="timing of the simulated device memory: one DDR4-2400 channel (default) or ideal")
    p.add_argument("--check-golden", action="store_true",
                   help="also train on the golden model (same K chunks) and compare bit for bit (JSON key "
                        "golden_match); exit 1 if they differ")

    def run(args: argparse.Namespace) -> int:
        from sat.sw.bdwp import get_backend
        from sat.sw.train import TrainConfig, train

        cfg = TrainConfig(model=args.model, dataset=args.dataset, nm=args.nm, fmt=args.fmt,
                          bp_mask=args.bp_mask, seed=args.seed, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, lambda_w=args.lambda_w,
                          lr_schedule=args.lr_schedule, loss_scale=args.loss_scale,
                          policy=tuple(args.policy), width=args.width, max_steps=args.max_steps,
                          train_subset=args.train_subset, test_subset=args.test_subset, framework=args.framework,
                          results=args.results)
        if args.json is not None:
            output_file(args.json, "--json")          # before training: never lose a run to a bad path
        if args.backend == "sim":
            from sat.sim.cli import run_sim_train

            rows, cols = args.sim_array
            result = run_sim_train(cfg, rows=rows, cols=cols, a_depth=args.sim_a_depth,
                                   b_depth=args.sim_b_depth, opt=args.sim_opt, memory=args.sim_axi,
                                   dram=args.sim_dram, pause=args.sim_pause, golden=args.check_golden,
                                   seed=args.seed,
                                   memory_bytes=args.sim_memory_mb << 20)
        else:
            from sat.sw.bdwp import GoldenBackend
            from sat.sw.train import compare_runs

            backend = get_backend(args.backend)
            result = train(cfg, backend, progress=not args.no_progress)
            if args.check_golden:     # the golden model, splitting K where the backend does
                k_limit = getattr(backend, "k_limit", None)
                ref = train(cfg, GoldenBackend(k_limit=k_limit), progress=not args.no_progress)
                result["golden"] = {k: ref[k] for k in ("step_losses", "weights_sha256", "final_test_accuracy",
                                                        "final_train_accuracy", "skipped_steps", "epochs")}
                result.update(compare_runs(result, ref))
        print(f"{cfg.model}{' (torch)' if cfg.framework == 'torch' else ''} {cfg.nm} {cfg.fmt} "
              f"bp-mask={cfg.bp_mask} seed={cfg.seed}: "
              f"final loss {result['epochs'][-1]['loss']:.4f}, "
              f"test accuracy {100 * result['final_test_accuracy']:.2f} % "
              f"({result['steps']} steps, {result['skipped_steps']} skipped, {result['seconds']:.1f} s)")
        if "sim" in result:
            sim = result["sim"]
            print(f"RTL simulation: {sim['array'][0]}x{sim['array'][1]} array, {sim['gemms']} GEMMs "
                  f"({sim['descriptors']} descriptors), {sim['cycles']} cycles simulated in "
                  f"{sim['wall_seconds']:.1f} s ({sim['cycles_per_second']:.0f} cycles/s)")
        if "golden_match" in result:
            print("bit-identical to the golden model: " + ("yes" if result["golden_match"] else
                                                           f"NO ({', '.join(result['differences'])})"))
        t = result.get("timing", {})
        if t:
            print(f"per iteration: host {1e3 * t['host_seconds']:.1f} ms, backend {1e3 * t['backend_seconds']:.1f} ms, "
                  f"{t['pcie_bytes'] / 1e6:.2f} MB host<->card, {t['device_cycles']:.0f} device cycles "
                  f"({t['source']})")
        if args.json is not None:
            write_text_safely(args.json, json.dumps(result, indent=2) + "\n", "the results (--json)")
        if result.get("diverged"):
            raise CLIError(f"training diverged ({result['diverged']}): the result is meaningless. Lower --lr "
                           f"(now {cfg.lr:g})" + (", or --loss-scale" if cfg.fmt == "fp16" else "")
                           + (f"; the results are in {args.json}" if args.json else ""), status=1)
        return 1 if result.get("golden_match") is False else 0

    return run


def build_parser() -> argparse.ArgumentParser:
    """The ``sat`` argument parser with every registered subcommand."""
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    parser = ArgumentParser(prog="sat", description="SAT: N:M-sparse DNN training on FPGAs",
                            epilog="Errors end as one line `sat: error: ...` (exit status 2); --debug or SAT_DEBUG=1 "
                                   "shows the Python traceback. See docs/errors.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.set_defaults(_handler=cmd.configure(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sat`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
    except Exception as exc:          # a subcommand module that fails to import: still one line, no traceback
        if "--debug" in argv or debug_requested():
            raise
        message, status = describe_error(exc)
        print(f"sat: error: {message}", file=sys.stderr)
        return status
    args = parser.parse_args(argv)
    return run_command(args._handler, args)


if __name__ == "__main__":
    raise SystemExit(main())
