"""Typed checks of values that reach SAT's public API from users: arrays, axes, integers, floats and names.

Each check returns the value in canonical form or raises :class:`ValueError` with a message that names the
argument, shows what was given and says what is accepted, so that every public function that documents
``ValueError`` for bad input raises exactly that (never a ``TypeError``, NumPy's ``AxisError`` or
``UFuncTypeError`` from deep inside NumPy, and never a silent conversion such as a complex array losing its
imaginary part). The CLI (:mod:`sat.sw.cliutil`) builds its argument types on the same checks. See
``docs/errors.md``.
"""

from __future__ import annotations

import math
import numbers
import operator
import re

import numpy as np

__all__ = ["real_array", "check_axis", "check_int", "check_float", "check_identifier", "VERILOG_KEYWORDS"]

#: dtype kinds of arrays SAT computes on: bool, signed and unsigned integers, floats.
_REAL_KINDS = "biuf"


def real_array(x, what: str = "array") -> np.ndarray:
    """``np.asarray(x)``, checked to hold real numbers (bool, integer or floating point).

    Parameters
    ----------
    x : array_like
        The values.
    what : str
        How the message names ``x`` (e.g. ``"operand A"``).

    Raises
    ------
    ValueError
        For complex values (SAT computes on real numbers: the imaginary part would be dropped), strings, Python
        objects (an ``object`` array, or a list mixing numbers and other things) and other non-numeric data.
    """
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:   # ragged nested lists and the like
        raise ValueError(f"{what} is not a numeric array ({exc}): pass a rectangular array of real numbers") from None
    kind = arr.dtype.kind
    if kind in _REAL_KINDS:
        return arr
    if kind == "c":
        raise ValueError(f"{what} must hold real numbers, not complex ones ({arr.dtype}): SAT would drop the "
                         f"imaginary part; pass x.real (or np.abs(x)) explicitly if that is what you mean")
    if kind == "O":
        raise ValueError(f"{what} must hold real numbers, not Python objects (an object array, e.g. with None or "
                         f"mixed types): convert it with np.asarray(x, dtype=np.float32) first")
    raise ValueError(f"{what} must hold real numbers (bool, int or float), not {arr.dtype} data")


def check_axis(axis, ndim: int, what: str = "axis") -> int:
    """``axis`` as a non-negative index into ``ndim`` dimensions (negative values count from the end).

    Raises
    ------
    ValueError
        If ``axis`` is not an integer or lies outside ``[-ndim, ndim)`` (also for a 0-d array, which has no axis).
    """
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"{what} must be an integer, not {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        valid = f"between {-ndim} and {ndim - 1}" if ndim else "none: a 0-d array has no axis"
        raise ValueError(f"{what} {axis} is out of range for an array with {ndim} dimension(s) (valid: {valid})")
    return axis % ndim


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (either bound optional).

    Accepts Python and NumPy integers; rejects bools, floats (even whole ones) and strings, so a typo such as
    ``epochs=2.5`` or ``epochs="3"`` fails here instead of misbehaving later.

    Raises
    ------
    ValueError
        If ``value`` is not an integer or lies outside the bounds.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be an integer {_bounds(low, high)}, not {v}")
    return v


def check_float(value, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` within the bounds (``low_open``/``high_open`` exclude the bound itself).

    Raises
    ------
    ValueError
        If ``value`` is not a real number, is NaN or infinite (a non-finite hyper-parameter trains to NaN), or
        lies outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, not {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {v}")
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        if low == 0 and high is None:
            want = "positive" if low_open else "non-negative (>= 0)"
        else:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            want = " and ".join(s for s in (lo, hi) if s)
        raise ValueError(f"{name} must be {want}, not {v:g}")
    return v


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f">= {low}"
    return f"<= {high}"


#: Reserved words of Verilog-2005 (IEEE 1364) and SystemVerilog (IEEE 1800) that tools refuse as module names.
VERILOG_KEYWORDS = frozenset("""
always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default defparam
design disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive endspecify endtable
endtask event for force forever fork function generate genvar highz0 highz1 if ifnone incdir include initial inout
input instance integer join large liblist library localparam macromodule medium module nand negedge nmos nor
noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown pullup
pulsestyle_onevent pulsestyle_ondetect rcmos real realtime reg release repeat rnmos rpmos rtran rtranif0 rtranif1
scalared showcancelled signed small specify specparam strong0 strong1 supply0 supply1 table task time tran tranif0
tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire vectored wait wand weak0 weak1 while wire wor xnor xor
alias always_comb always_ff always_latch assert assume before bind bins binsof bit break byte chandle checker class
clocking const constraint context continue cover covergroup coverpoint cross dist do endchecker endclass
endclocking endgroup endinterface endpackage endprogram endproperty endsequence enum expect export extends extern
final first_match foreach forkjoin iff ignore_bins illegal_bins import inside int interface intersect join_any
join_none local logic longint matches modport new null package packed priority program property protected pure
rand randc randcase randsequence ref return sequence shortint shortreal solve static string struct super tagged
this throughout timeprecision timeunit type typedef union unique var virtual void wait_order wildcard with within
""".split())

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def check_identifier(name, what: str = "Verilog module name") -> str:
    """``name`` if it is a plain Verilog identifier that is safe as a module and file name.

    A plain identifier starts with a letter or ``_`` and continues with letters, digits, ``_`` or ``$``; it is not
    a Verilog or SystemVerilog keyword and at most 1024 characters long. Such a name can never hold a path
    separator, so files named after it stay in their output directory.

    Raises
    ------
    ValueError
        Otherwise, saying what is allowed.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or len(name) > 1024:
        raise ValueError(f"{what} must be a Verilog identifier (a letter or '_', then letters, digits, '_' or '$'; "
                         f"no path separators or spaces), not {name!r}")
    if name in VERILOG_KEYWORDS:
        raise ValueError(f"{what} {name!r} is a Verilog/SystemVerilog keyword: pick another name, e.g. "
                         f"'{name}_core'")
    return name
