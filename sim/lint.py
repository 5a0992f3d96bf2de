"""Verilator lint of generated Verilog (``verilator --lint-only -Wall``).

Amaranth's Verilog backend (Yosys ``write_verilog``) has idioms that ``-Wall`` flags although they are correct
by construction; those warning classes are waived with explicit ``-Wno-<CODE>`` flags (:data:`WAIVED`) and
a Verilator control file (:data:`CONTROL_FILE`) that waives unused-signal warnings only for Yosys-internal
``$``-temporaries. What remains is collected: errors fail :func:`lint`'s callers, warnings are reported and must
belong to :data:`TOLERATED` (documented in ``docs/simulation.md``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .runner import setup_simulator

__all__ = ["WAIVED", "TOLERATED", "CONTROL_FILE", "LintMessage", "LintResult", "lint"]

#: Warning classes switched off, each with the reason (keep in step with docs/simulation.md).
WAIVED: dict[str, str] = {
    "PROCASSINIT": "Yosys declares every register with its reset value (`reg [7:0] r = 8'h00;`) and also "
                   "assigns it in an always block: the initial value is the FPGA power-up value, by design.",
    "WIDTHTRUNC": "Yosys writes reductions as `!x[4:0]` and sizes every operand explicitly; Amaranth's own "
                  "width rules already fixed all widths, so Verilog context-width warnings are noise.",
    "WIDTHEXPAND": "same as WIDTHTRUNC: zero/sign extension is explicit in Amaranth's semantics.",
    "CASEINCOMPLETE": "Yosys emits `casez` without `default` where earlier assignments give the default value.",
    "DECLFILENAME": "Amaranth writes all modules of a design into one file named after the top.",
}

#: Warning classes that may remain after the waivers; anything else is a finding to fix in the gateware.
TOLERATED: dict[str, str] = {
    "UNUSEDSIGNAL": "named signals (or bits) nothing reads: bits a design deliberately ignores (a carry-out, "
                    "the sign of a difference), the alias wires Amaranth emits in a parent for its submodules' "
                    "ports (`a`, `b`, `s` in the PE), and dead intermediate signals that synthesis removes; "
                    "listed by tests/test_lint.py for review. Yosys temporaries are waived in CONTROL_FILE.",
}

#: Verilator control file: unused-signal warnings for names Amaranth/Yosys make up, not for design signals:
#: Yosys temporaries (``$123``), renamed duplicates (``en$22``) and the per-field aliases Amaranth emits for
#: ``data.View`` ports (``act[3]``).
CONTROL_FILE = """`verilator_config
lint_off -rule UNUSEDSIGNAL -file "*" -match "Signal is not used: '*$*'"
lint_off -rule UNUSEDSIGNAL -file "*" -match "Bits of signal are not used: '*$*'*"
lint_off -rule UNUSEDSIGNAL -file "*" -match "Signal is not driven, nor used: '*$*'"
lint_off -rule UNUSEDSIGNAL -file "*" -match "Signal is not used: '*[*]'"
"""

_MSG = re.compile(r"^%(?P<sev>Warning|Error)(?:-(?P<code>[A-Z0-9_]+))?: (?:(?P<file>[^:\s]+):(?P<line>\d+):"
                  r"(?:\d+:)?\s*)?(?P<text>.*)$")


@dataclass(frozen=True)
class LintMessage:
    """One Verilator diagnostic."""

    severity: str  # "Warning" or "Error"
    code: str  # e.g. "UNUSEDSIGNAL"; "" for errors without a code
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        code = f"-{self.code}" if self.code else ""
        return f"%{self.severity}{code}: {Path(self.file).name}:{self.line}: {self.text}"


@dataclass
class LintResult:
    """All diagnostics of one lint run."""

    top: str
    path: Path
    command: list[str]
    returncode: int
    messages: list[LintMessage] = field(default_factory=list)

    @property
    def errors(self) -> list[LintMessage]:
        return [m for m in self.messages if m.severity == "Error"]

    @property
    def warnings(self) -> list[LintMessage]:
        return [m for m in self.messages if m.severity == "Warning"]

    def counts(self) -> dict[str, int]:
        """Number of warnings per code."""
        out: dict[str, int] = {}
        for m in self.warnings:
            out[m.code] = out.get(m.code, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        lines = [f"lint {self.top}: {len(self.errors)} errors, {len(self.warnings)} warnings {self.counts()}"]
        lines += [f"  {m}" for m in self.messages]
        return "\n".join(lines)

    def check(self) -> None:
        """Require a clean result: no error, and no warning outside :data:`TOLERATED`.

        Raises
        ------
        AssertionError
            Listing the findings.
        """
        if self.errors or self.returncode != 0:
            raise AssertionError(self.summary())
        unexpected = [m for m in self.warnings if m.code not in TOLERATED]
        if unexpected:
            raise AssertionError("warnings outside the documented tolerated classes:\n"
                                 + "\n".join(map(str, unexpected)))


def lint(verilog_path: str | Path, top: str, *, extra_args: list[str] | None = None) -> LintResult:
    """Run ``verilator --lint-only -Wall`` with the documented waivers and collect the diagnostics.

    Parameters
    ----------
    verilog_path : path
        Generated Verilog file.
    top : str
        Top module name.
    extra_args : list of str, optional
        More Verilator options.

    Returns
    -------
    LintResult
        Errors and warnings; ``-Wno-fatal`` keeps warnings from setting the exit code, so a nonzero
        ``returncode`` without parsed errors also means failure.

    Raises
    ------
    RuntimeError
        When Verilator is not available (see :func:`sat.sim.runner.setup_simulator`).
    """
    setup_simulator("verilator")
    path = Path(verilog_path).resolve()
    control = path.parent / "lint_waivers.vlt"
    if not control.exists() or control.read_text() != CONTROL_FILE:
        control.write_text(CONTROL_FILE)
    cmd = ["verilator", "--lint-only", "-Wall", "-Wno-fatal", *[f"-Wno-{code}" for code in WAIVED],
           "--top-module", top, str(control), str(path), *(extra_args or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    messages = []
    for raw in (proc.stderr + proc.stdout).splitlines():
        match = _MSG.match(raw)
        if match is None:
            continue
        text = match["text"]
        if match["sev"] == "Error" and text.startswith("Exiting due to"):
            continue
        messages.append(LintMessage(severity=match["sev"], code=match["code"] or "", file=match["file"] or "",
                                    line=int(match["line"] or 0), text=text))
    return LintResult(top=top, path=path, command=cmd, returncode=proc.returncode, messages=messages)
