"""The plumbing every ``sat`` subcommand shares: one error path, argument types, and checks of input and output files.

**Error path.** :func:`sat.sw.cli.main` runs every handler through :func:`run_command`. Whatever a handler raises
for a reason the user can act on (:class:`CLIError`, ``ValueError``, ``OSError``, ``RuntimeError`` such as a
driver, simulator or tool failure) ends as one line ``sat: error: <what went wrong and what to do>`` on stderr and
exit status 2; Ctrl-C ends as ``sat: interrupted`` (130). Anything else is a bug in SAT and says so. A Python
traceback is shown only when asked for, with ``sat --debug ...`` or ``SAT_DEBUG=1``. Argument errors that argparse
finds go the same way (:class:`ArgumentParser`). ``docs/errors.md`` lists the errors.

**Before the work.** Handlers validate everything first: argument types below (``type=positive_int``...), input
files (:func:`input_file`, :func:`load_matrix`, :func:`load_config_file`) and outputs (:func:`output_dir`,
:func:`output_file`), so a long simulation or training run never fails at its end on a typo. A result that is
finished but cannot be written where asked goes to a fallback file instead (:func:`write_text_safely`).

A new subcommand gets all of this by using these helpers::

    @subcommand("sim", help="...")
    def _sim(p):
        p.add_argument("--m", type=positive_int)
        p.add_argument("--out", help="output directory")
        def run(args):
            out = output_dir(args.out, "--out")      # checked before any work
            ...
            raise CLIError("what went wrong: what to do")
        return run
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .validate import check_float, check_identifier, check_int, real_array

__all__ = [
    "CLIError", "ArgumentParser", "DEBUG_ENV", "debug_requested", "run_command", "describe_error",
    "positive_int", "nonnegative_int", "int_range", "power_of_two", "finite_float", "probability", "nm_pattern",
    "array_shape", "verilog_name", "int_list", "path_arg",
    "input_file", "load_array", "load_matrix", "load_config_file", "output_dir", "output_file", "write_text_safely",
]

#: Environment variable that makes the error path show Python tracebacks (``SAT_DEBUG=1``).
DEBUG_ENV = "SAT_DEBUG"

#: Exit status of an error (the command could not do its work), as argparse uses for usage errors.
ERROR_STATUS = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_STATUS = 130


class CLIError(Exception):
    """An error a ``sat`` subcommand reports as ``sat: error: <message>`` with exit status ``status``.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    status : int
        Exit status (default 2).
    """

    def __init__(self, message: str, status: int = ERROR_STATUS) -> None:
        super().__init__(message)
        self.status = status


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` on the one error path: usage errors print the usage line, then
    ``sat: error: ...``, exit 2. Every parser (subcommands inherit the class) takes ``--debug``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"show the Python traceback of an error (or set {DEBUG_ENV}=1)")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ERROR_STATUS, f"sat: error: {message} (see `{self.prog} --help`)\n")


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """True when ``--debug`` was given or ``SAT_DEBUG`` is set to 1/true/yes/on."""
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The message and exit status the error path shows for ``exc``."""
    if isinstance(exc, CLIError):
        return str(exc), exc.status
    if isinstance(exc, OSError) and exc.strerror is not None:
        return _os_error_message(exc), ERROR_STATUS
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (f"the Python package {exc.name!r} is not installed: install SAT with the extra that needs it, e.g. "
                f"pip install -e '.[dev]' (all), '.[sim]' (simulation), '.[data]' (data sets), '.[synth]' "
                f"(resource estimates), '.[plot]' (plots), '.[torch]' (the PyTorch front end)"), ERROR_STATUS
    if isinstance(exc, MemoryError) and not str(exc):
        return "out of host memory: use smaller sizes (or a machine with more memory)", ERROR_STATUS
    if isinstance(exc, (ValueError, OSError, RuntimeError, AssertionError, MemoryError, ImportError)):
        # ValueError: bad input to the API; RuntimeError: driver, transport, simulator or tool failures;
        # ImportError: an optional part missing (sat.torch without PyTorch names its extra);
        # AssertionError: a testbench that failed (sat.sim.runner.run_cocotb)
        return str(exc).strip() or type(exc).__name__, ERROR_STATUS
    return (f"internal error ({type(exc).__name__}: {exc}). This is a bug in SAT: rerun with `sat --debug ...` or "
            f"{DEBUG_ENV}=1 to see the traceback, and report it"), ERROR_STATUS


_OS_HINTS = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "the disk is full: free some space or choose another path",
    errno.EISDIR: "it is a directory: give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENOENT: "check the path",
}


def _os_error_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    hint = _OS_HINTS.get(exc.errno or 0)
    return f"{where}{exc.strerror}" + (f" ({hint})" if hint else "")


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand handler on the one error path (see the module docstring); returns the exit status.

    With ``--debug`` the handler runs with ``SAT_DEBUG=1`` in the environment (restored afterwards), so child
    processes such as the simulator's testbench show their tracebacks too.
    """
    debug = debug_requested(args)
    saved = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("sat: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except Exception as exc:
        if debug:
            raise
        message, status = describe_error(exc)
        sys.stdout.flush()
        print(f"sat: error: {message}", file=sys.stderr)
        return status
    finally:
        if saved is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = saved


# ----------------------------------------------------------------------------------------------------------
# argument types (argparse ``type=``): each returns the parsed value or raises ArgumentTypeError


def _typed(check: Callable[[str], object], name: str) -> Callable[[str], object]:
    def parse(text: str):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise ValueError(f"expected an integer, not {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, not {text!r}") from None


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """Argument type: an integer within ``[low, high]`` (either bound optional)."""
    return _typed(lambda t: check_int(_int(t), "the value", low=low, high=high), "int_range")


positive_int = int_range(1)
positive_int.__doc__ = "Argument type: an integer >= 1."
nonnegative_int = int_range(0)
nonnegative_int.__doc__ = "Argument type: an integer >= 0 (seeds)."


def power_of_two(low: int, high: int) -> Callable[[str], int]:
    """Argument type: a power of two within ``[low, high]`` (buffer depths)."""
    def check(text: str) -> int:
        v = _int(text)
        if v < low or v > high or v & (v - 1):
            raise ValueError(f"must be a power of two between {low} and {high}, not {text!r}")
        return v
    return _typed(check, "power_of_two")


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """Argument type: a finite number within the bounds (``nan``/``inf`` are refused)."""
    return _typed(lambda t: check_float(_float(t), "the value", low=low, high=high, low_open=low_open,
                                        high_open=high_open), "finite_float")


probability = finite_float(0.0, 1.0, high_open=True)
probability.__doc__ = "Argument type: a probability in [0, 1) (1 would pause a channel forever)."


def _nm(text: str) -> str:
    from .bdwp import format_nm, parse_nm

    return format_nm(parse_nm(text))


nm_pattern = _typed(_nm, "nm_pattern")
nm_pattern.__doc__ = "Argument type: ``dense`` or ``N:M`` (e.g. ``2:8``), returned in canonical form."


def _shape(text: str) -> tuple[int, int]:
    rows, x, cols = text.lower().partition("x")
    try:
        shape = (int(rows), int(cols))
    except ValueError:
        shape = (0, 0)
    if not x or min(shape) < 1:
        raise ValueError(f"array must look like 4x4 (rows x columns), not {text!r}")
    return shape


array_shape = _typed(_shape, "array_shape")
array_shape.__doc__ = "Argument type: ``RxC`` (e.g. ``4x4``) as ``(rows, cols)``."

verilog_name = _typed(lambda t: check_identifier(t, "the name"), "verilog_name")
verilog_name.__doc__ = "Argument type: a Verilog identifier (no path separators; see ``validate.check_identifier``)."


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a path, not an empty string")
    return text


path_arg = _typed(_path, "path_arg")
path_arg.__doc__ = "Argument type: a non-empty path (an empty one would silently mean the current directory)."


def _int_list(text: str) -> tuple[int, ...]:
    values = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            v = _int(part)
            if v < 1:
                raise ValueError(f"expected positive integers separated by commas, not {text!r}")
            values.append(v)
    return tuple(values)


int_list = _typed(_int_list, "int_list")
int_list.__doc__ = "Argument type: comma-separated positive integers (``32,64``; empty gives ``()``)."


# ----------------------------------------------------------------------------------------------------------
# input files


def _nonempty(path: str | os.PathLike, what: str) -> None:
    if not str(path).strip():
        raise CLIError(f"{what} is empty: give a path")


def input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` checked to be an existing, readable regular file.

    Raises
    ------
    CLIError
        Naming ``what`` (e.g. ``"--a"``) and the problem.
    """
    _nonempty(path, what)
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} {p}: no such file (check the path)")
    if p.is_dir():
        raise CLIError(f"{what} {p} is a directory: give a file")
    if not p.is_file():
        raise CLIError(f"{what} {p} is not a regular file")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise CLIError(f"{what} {p} cannot be read: {exc.strerror}") from None
    return p


def load_array(path: str | os.PathLike, what: str, ndim: int | None = None) -> np.ndarray:
    """A non-empty array of real numbers from a NumPy ``.npy`` file, as float32.

    Parameters
    ----------
    path : path
        The file.
    what : str
        How messages name it (e.g. ``"--a"``).
    ndim : int, optional
        The number of dimensions it must have.

    Raises
    ------
    CLIError
        If the file is missing, not a ``.npy`` file (``.npz`` archives, pickles, text), holds Python objects,
        strings or complex numbers, is empty, or has another number of dimensions.
    """
    import pickle
    import zipfile

    p = input_file(path, what)
    save = "save it with np.save(path, np.asarray(x, dtype=np.float32))"
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PK\x03\x04":
        raise CLIError(f"{what} {p} is a .npz archive, not one array: {save}")
    if magic != b"\x93NUMPY":
        raise CLIError(f"{what} {p} is not a NumPy .npy file (it lacks the .npy header; text, CSV or pickles are "
                       f"not read): {save}")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = ("it holds Python objects (an object array)" if "object" in str(exc).lower()
                  else f"np.load: {exc}")
        raise CLIError(f"{what} {p} cannot be read as an array of numbers: {reason}; {save}") from None
    try:
        arr = real_array(data, f"{what} {p}")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if (ndim is not None and arr.ndim != ndim) or arr.size == 0:
        kind = f"a non-empty {ndim}-D array" if ndim is not None else "a non-empty array"
        raise CLIError(f"{what} {p} must hold {kind}, not an array of shape {arr.shape}")
    return arr.astype(np.float32)


def load_matrix(path: str | os.PathLike, what: str) -> np.ndarray:
    """A 2-D, non-empty matrix of real numbers from a ``.npy`` file, as float32 (:func:`load_array`)."""
    return load_array(path, what, ndim=2)


def load_config_file(path: str | os.PathLike, what: str = "--config"):
    """The :class:`~sat.sw.config.SATConfig` in a JSON file written by ``SATConfig.to_json()``.

    Raises
    ------
    CLIError
        If the file is missing or unreadable, or ValueError if it is not a valid configuration.
    """
    from .config import SATConfig

    return SATConfig.load(input_file(path, what))


# ----------------------------------------------------------------------------------------------------------
# outputs


def output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create directory ``path`` (and its parents) if needed and check that files can be written into it.

    Call it before the work starts, so a bad ``--out`` fails in a second, not after an hour.

    Raises
    ------
    CLIError
        If ``path`` is an existing file, cannot be created or is not writable.
    """
    _nonempty(path, what)
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{what} {p} exists and is not a directory: choose another path (or remove the file)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{what} {p}: {parent} is a file, not a directory: choose another path")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{what} {p} cannot be created: {_os_error_message(exc)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".sat-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"{what} {p} is not writable: {exc.strerror} (choose another path)") from None
    return p


def output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that file ``path`` can be written (creating its parent directories), without changing it.

    Raises
    ------
    CLIError
        If ``path`` is a directory or cannot be created or overwritten.
    """
    _nonempty(path, what)
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{what} {p} is a directory: give a file name, e.g. {p / 'result.json'}")
    for parent in (p.parent, *p.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{what} {p}: {parent} is a file, not a directory: choose another path")
            break
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{what} {p}: its directory cannot be created: {_os_error_message(exc)}") from None
    try:
        if p.exists():
            with open(p, "a"):
                pass
        else:
            with open(p, "x"):
                pass
            p.unlink()
    except OSError as exc:
        raise CLIError(f"{what} {p} cannot be written: {exc.strerror} (choose another path)") from None
    return p


def write_text_safely(path: str | os.PathLike, text: str, what: str) -> Path:
    """Write a finished result to ``path``; if that fails, to a file in the temporary directory.

    The result is never lost: when ``path`` cannot be written (the disk filled up, the directory vanished while
    the work ran) it goes to ``<tmp>/sat-<name>-<time>-XXXX<suffix>``, and the :class:`CLIError` raised says
    where. If even that fails the text is printed to stdout.

    Returns
    -------
    Path
        ``path``, when it was written.

    Raises
    ------
    CLIError
        When the result had to go elsewhere (the message says where).
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p
    except OSError as exc:
        reason = _os_error_message(exc)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.stem) or "result"
    try:
        fd, fallback = tempfile.mkstemp(prefix=f"sat-{stem}-{time.strftime('%Y%m%d-%H%M%S')}-",
                                        suffix=p.suffix or ".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        raise CLIError(f"could not write {what} to {p} ({reason}), nor to the temporary directory: the result was "
                       f"printed to stdout instead") from None
    raise CLIError(f"could not write {what} to {p} ({reason}); the finished result was saved to {fallback} "
                   f"instead")
