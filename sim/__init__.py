"""RTL simulation of SAT's generated Verilog with cocotb (see ``docs/simulation.md``).

* :mod:`sat.sim.verilog` - Verilog generation, cached per (top, configuration, sources).
* :mod:`sat.sim.runner` - simulator selection (``SIM``), build once, run a cocotb module, fail on failures.
* :mod:`sat.sim.tb` - testbench helpers: parameters, clock/reset, random stalls, pipelined streaming,
  FP32 scoreboard against :mod:`sat.sw.numerics`.
* :mod:`sat.sim.lint` - ``verilator --lint-only -Wall`` with documented waivers.
* :mod:`sat.sim.tops` - the generated tops under test (FP units, PE).
* ``tb_*`` - cocotb test modules (``tb_fp``: FPMultiplier/FP32Adder, ``tb_pe``: PE).

Importing this package does not import cocotb; only the ``tb_*`` modules do.
"""
