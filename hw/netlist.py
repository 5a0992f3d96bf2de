"""Verilog of a SAT component, with every PE of a systolic array emitted once and instanced.

Amaranth netlists each elaboratable separately, so a 32x32 array costs 1024 copies of the PE's netlist: about
0.6 s and 3 MB each, nearly all of the time and memory of a card build. The PEs of an array are identical
(``PE(config)``), so :func:`to_verilog` converts the PE once into a module of its own and lets every
:class:`~sat.hw.array.SystolicArray` elaborated meanwhile instantiate that module instead of elaborating 1024
PEs. The Verilog is functionally the same: the same PE netlist, one level of hierarchy deeper.

The Amaranth simulator cannot run an ``Instance``, so only conversions through :func:`to_verilog` share the PE;
an array elaborated for simulation or by a plain ``amaranth.back.verilog.convert`` contains its PEs as before.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager

from amaranth.hdl import ClockSignal, Instance, ResetSignal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from sat.sw.config import SATConfig

__all__ = ["to_verilog", "shared_pe", "pe_instance", "pe_module_name"]

# While a conversion runs: {PE module name: its Verilog}, filled by the arrays elaborated meanwhile.
_SHARED_PE: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("sat_shared_pe", default=None)


def pe_module_name(config: SATConfig, *, prenormalized: bool = False) -> str:
    """Verilog module name of the shared PE of ``config`` (one per configuration digest and operand format:
    a PE of prenormalized operands, as the arrays build for FP16, is a different module, ``..._norm``)."""
    return f"sat_pe_{config.digest()}" + ("_norm" if prenormalized else "")


@contextmanager
def shared_pe() -> Iterator[dict[str, str]]:
    """Within this context, arrays instantiate one shared PE module per configuration (see the module docstring).

    Yields the ``{module name: Verilog}`` of the PE modules used, to be written beside the design.
    """
    modules: dict[str, str] = {}
    token = _SHARED_PE.set(modules)
    try:
        yield modules
    finally:
        _SHARED_PE.reset(token)


def pe_instance(config: SATConfig, *, prenormalized: bool = False) -> tuple[wiring.PureInterface, Instance] | None:
    """An interface with the ports of ``PE(config, prenormalized=prenormalized)`` and an ``Instance`` of its
    shared module driving it, or ``None`` outside :func:`shared_pe` (then the array elaborates
    :class:`~sat.hw.pe.PE` itself)."""
    modules = _SHARED_PE.get()
    if modules is None:
        return None
    from amaranth.back import verilog

    from .pe import PE

    name = pe_module_name(config, prenormalized=prenormalized)
    pe = PE(config, prenormalized=prenormalized)
    if name not in modules:
        token = _SHARED_PE.set(None)   # the PE itself is converted flat
        try:
            modules[name] = verilog.convert(PE(config, prenormalized=prenormalized), name=name)
        finally:
            _SHARED_PE.reset(token)
    pe._MustUse__silence = True    # only its signature is used
    ports = pe.signature.create(path=("pe",))
    kwargs = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
    for path, member, value in pe.signature.flatten(ports):
        kwargs[("i_" if member.flow == In else "o_") + "_".join(str(p) for p in path)] = Value.cast(value)
    return ports, Instance(name, **kwargs)


_HEADER = re.compile(r"\A(/\*.*?\*/\s*)", re.S)


def to_verilog(component: wiring.Component, name: str) -> str:
    """Verilog of ``component`` as module ``name``, with one module per distinct PE and instances of it.

    The PE modules come first, each as Amaranth converted it (module ``sat_pe_<config digest>``).
    """
    from amaranth.back import verilog

    with shared_pe() as modules:
        top = verilog.convert(component, name=name)
    parts = []
    for text in modules.values():
        parts.append(text if not parts else _HEADER.sub("", text))
    if not parts:
        return top
    return "".join(parts) + "\n" + _HEADER.sub("", top)
