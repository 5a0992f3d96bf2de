"""Training testbench: ``sat.sw.train.train`` through the unchanged driver on the RTL simulation of the core.

``train_run`` attaches the cocotb transport (:func:`sat.sim.cocotb_transport.attach`) to ``SATCore`` with the
GEMM unit (:func:`sat.hw.gemm_unit.sat_core`), opens ``SATDevice`` on it and runs
``train(cfg, DeviceBackend(device))`` in a ``cocotb.task.bridge`` thread: every FF, BP
and WU GEMM (and the test-set inference) runs on the RTL, reductions longer than the unit's buffers split into
K chunks; loss, updates, re-pruning and re-upload run on the host. With ``golden`` the same run is repeated on
``GoldenBackend(k_limit=backend.k_limit)`` (same K chunks, same partial-sum order) and compared bit for bit:
every step's loss, the final weights (``weights_sha256``) and the accuracies.

The report (JSON, written to ``report``) is ``train``'s result dict plus ``sim``: simulated ``cycles`` (clock
cycles the simulation advanced during training), ``core_cycles`` (the core's ``CYCLES`` counter summed over the
GEMMs), ``gemms``, ``descriptors``, ``wall_seconds``, ``cycles_per_second``, the array and buffer depths; with
``golden`` also ``golden`` (the golden run's losses, digest, accuracies) and ``bit_identical``.

Parameters (``SAT_TB_PARAMS``): ``config`` (with the buffer depths), ``memory_bytes``, ``seed``, ``pause``,
``train`` (:class:`~sat.sw.train.TrainConfig` fields), ``golden``, ``report``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import cocotb

from sat.sw.config import SATConfig

from .cocotb_transport import attach
from .tb import error_to_report, rng_for, tb_params, without_host_lowering

__all__ = ["train_config", "compare"]


def train_config(fields: dict[str, Any]):
    """A :class:`~sat.sw.train.TrainConfig` from its JSON fields (lists back to tuples)."""
    from sat.sw.train import TrainConfig

    fields = dict(fields)
    fields["policy"] = tuple(fields.get("policy", ()))
    return TrainConfig(**fields)


def compare(result: dict, golden: dict) -> dict:
    """Bit-for-bit comparison of two ``train`` results (:func:`sat.sw.train.compare_runs`):
    ``{"bit_identical": bool, "golden_match": bool, "differences": [...]}``."""
    from sat.sw.train import compare_runs

    out = compare_runs(result, golden)
    return {"bit_identical": out["golden_match"], **out}


@cocotb.test()
async def train_run(dut: Any) -> None:
    """Train on the RTL through the driver; report as JSON (see the module docstring)."""
    from cocotb.task import bridge

    from sat.sw.bdwp import GoldenBackend
    from sat.sw.driver.device import DeviceBackend, SATDevice
    from sat.sw.train import IMAGE_MODELS, load_dataset, train

    params = tb_params()
    if "train" not in params:
        return
    with error_to_report(params["report"]):
        config = SATConfig.from_dict(params["config"])
        cfg = train_config(params["train"])
        transport = await attach(dut, config, memory_bytes=int(params["memory_bytes"]),
                                 pause=float(params.get("pause", 0.0)), rng=rng_for(params, "train/pauses"))

        device = await bridge(lambda: SATDevice(transport, config))()
        backend = DeviceBackend(device, timeout_s=float(params.get("timeout_s", 36000.0)))
        data = load_dataset(cfg.dataset, image=cfg.model in IMAGE_MODELS)       # not timed: imports scikit-learn
        c0, t0 = transport.cycle(), time.perf_counter()
        # the device path never lowers a convolution on the host: the lowerings refuse to run while it trains
        result = await bridge(lambda: without_host_lowering(
            lambda: train(cfg, backend, progress=False, data=data)))()
        wall = time.perf_counter() - t0
        cycles = transport.cycle() - c0
        result["backend"] = "sim"
        result["sim"] = {
            "array": [config.rows, config.cols], "adder_latency": config.adder_latency, "a_depth": config.a_depth,
            "b_depth": config.b_depth, "memory": type(transport.ram).__name__, "cycles": cycles,
            "core_cycles": backend.stats["cycles"], "gemms": backend.stats["gemms"],
            "descriptors": backend.stats["descriptors"], "narrow_descriptors": backend.stats["narrow"],
            "wall_seconds": wall,
            "cycles_per_second": cycles / wall if wall > 0 else 0.0, "k_limit_dense": backend.k_limit(),
        }
        if params.get("golden"):
            ref = train(cfg, GoldenBackend(k_limit=backend.k_limit), progress=False, data=data)
            result["golden"] = {k: ref[k] for k in ("step_losses", "weights_sha256", "final_test_accuracy",
                                                   "final_train_accuracy", "skipped_steps", "epochs")}
            result.update(compare(result, ref))
        with open(params["report"], "w") as f:
            json.dump(result, f, indent=2)
        dut._log.info(f"train: {result['steps']} steps, losses {result['step_losses']}, {result['sim']['cycles']} "
                      f"cycles in {result['sim']['wall_seconds']:.1f} s"
                      + (f", bit-identical to golden: {result['bit_identical']}" if "bit_identical" in result else ""))
