"""A PyTorch script on the RTL: ``sat sim torch SCRIPT`` runs it in a ``cocotb.task.bridge`` thread.

``torch_script`` attaches the cocotb transport to the simulated core (``SATCore`` with its GEMM unit), opens the
unchanged driver's ``SATDevice`` on it, registers ``DeviceBackend(device)`` as the GEMM backend ``"sim"`` of this
process (:func:`sat.sw.bdwp.register_backend`) and runs the script as ``__main__`` (``runpy``) with ``sys.argv``
set to the script and its arguments. The script converts its model with ``sat.torch.convert(model, ...,
backend="sim")``: every FF, BP and WU pass of a converted layer then runs on the RTL through the driver, while
torch, the loss and the optimizer run on the host, exactly as on the card. (``sat train --framework torch
--backend sim`` needs no script: ``sim/tb_train.py`` trains the torch model.)

The report (JSON, written to ``report``) holds ``script``, ``argv`` and ``sim``: simulated ``cycles``,
``core_cycles`` (the core's ``CYCLES`` summed over the passes), ``gemms`` (passes), ``descriptors``,
``wall_seconds``, the array and buffer depths. An exception in the script fails the cocotb test (and
``sat sim torch`` exits 1 with its message).

Parameters (``SAT_TB_PARAMS``): ``config``, ``memory_bytes``, ``seed``, ``pause``, ``script``, ``argv``,
``report``, ``timeout_s``.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from typing import Any

import cocotb

from sat.sw.config import SATConfig

from .cocotb_transport import attach
from .tb import rng_for, tb_params

__all__: list[str] = []


@cocotb.test()
async def torch_script(dut: Any) -> None:
    """Run a torch script with the ``"sim"`` backend on the RTL (see the module docstring)."""
    from cocotb.task import bridge

    from sat.sw.bdwp import register_backend
    from sat.sw.driver.device import DeviceBackend, SATDevice

    params = tb_params()
    if "script" not in params:
        return
    config = SATConfig.from_dict(params["config"])
    transport = await attach(dut, config, memory_bytes=int(params["memory_bytes"]),
                             pause=float(params.get("pause", 0.0)), rng=rng_for(params, "torch/pauses"))
    device = await bridge(lambda: SATDevice(transport, config))()
    backend = DeviceBackend(device, timeout_s=float(params.get("timeout_s", 36000.0)))
    import sat.sim.cli  # noqa: F401  (registers the placeholder "sim" first, so it cannot replace this one later)

    register_backend("sim", lambda: backend)
    script, argv = str(params["script"]), [str(a) for a in params.get("argv", [])]

    def run() -> None:
        saved = sys.argv
        sys.argv = [script, *argv]
        try:
            runpy.run_path(script, run_name="__main__")
        finally:
            sys.argv = saved

    c0, t0 = transport.cycle(), time.perf_counter()
    await bridge(run)()
    wall = time.perf_counter() - t0
    cycles = transport.cycle() - c0
    report = {"script": script, "argv": argv, "sim": {
        "array": [config.rows, config.cols], "fmt": config.fmt, "a_depth": config.a_depth,
        "b_depth": config.b_depth, "cycles": cycles, "core_cycles": backend.stats["cycles"],
        "gemms": backend.stats["gemms"], "descriptors": backend.stats["descriptors"], "wall_seconds": wall}}
    with open(params["report"], "w") as f:
        json.dump(report, f, indent=2)
    dut._log.info(f"torch script {script}: {backend.stats['gemms']} passes, {cycles} cycles in {wall:.1f} s")
