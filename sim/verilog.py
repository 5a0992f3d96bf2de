"""Generated Verilog, cached per (top, configuration, gateware sources).

Converting an Amaranth design to Verilog takes seconds per top and compiling it for Verilator tens of seconds;
RTL tests of one configuration share one conversion per test session, and later sessions reuse it while the
configuration and the Python sources it came from are unchanged. The directory is named by a hash of the top name,
the configuration key and the Amaranth version; ``key.json`` records the SHA-256 of every source file the Verilog
depends on (:func:`source_dependencies`: the files named in its ``src`` attributes and the ``sat.*`` modules they
import, transitively), and any change to one of them regenerates the Verilog in place. Editing ``hw/array.py``
therefore does not invalidate the FP unit builds, while editing ``hw/fp.py`` or ``sw/numerics.py`` does.

Files live under :func:`build_root` (``<repo>/build`` unless ``SAT_BUILD_DIR`` is set)::

    build/sim/<name>-<hash>/<name>.v       the Verilog top (module ``<name>``)
    build/sim/<name>-<hash>/key.json       name, key, Amaranth version, component meta, source hashes
    build/sim/<name>-<hash>/<simulator>/    simulator build and test runs (see :mod:`sat.sim.runner`)
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["VerilogTop", "build_root", "source_dependencies", "config_key", "generate_verilog", "file_lock"]

_REPO = Path(__file__).resolve().parent.parent
_memo: dict[tuple[str, str], VerilogTop] = {}


@dataclass(frozen=True)
class VerilogTop:
    """One generated Verilog top level.

    Attributes
    ----------
    name : str
        Verilog module name of the top (and the cocotb ``hdl_toplevel``).
    path : Path
        The ``.v`` file.
    directory : Path
        Cache directory of this (top, configuration); simulator builds go below it.
    digest : str
        Hash over the name, configuration key, ``hw/`` sources and Amaranth version.
    meta : dict
        Properties of the component recorded at conversion (see ``attrs`` of :func:`generate_verilog`),
        e.g. ``meta["latency"]``; available on cache hits without elaborating again.
    """

    name: str
    path: Path
    directory: Path
    digest: str
    meta: dict = field(default_factory=dict, compare=False)


def build_root() -> Path:
    """Root of generated files: ``$SAT_BUILD_DIR`` if set, else ``<repo>/build`` (git-ignored)."""
    env = os.environ.get("SAT_BUILD_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if (_REPO / "pyproject.toml").exists():
        return _REPO / "build"
    return Path.cwd() / "build"


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def _imports(path: Path, module: str | None) -> set[str]:
    """Absolute names of the ``sat.*`` modules that ``path`` imports (relative imports resolved)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError):
        return set()
    package = module.rsplit(".", 1)[0] if module and path.name != "__init__.py" else module
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not package:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {n for n in found if n == "sat" or n.startswith("sat.")}


def _module_name(path: Path) -> str | None:
    import sat.hw
    import sat.sim
    import sat.sw

    for pkg in (sat.hw, sat.sw, sat.sim):
        root = Path(pkg.__file__).resolve().parent
        if path.is_relative_to(root):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            return ".".join([pkg.__name__, *parts])
    return None


def source_dependencies(verilog_text: str) -> list[Path]:
    """Python files the Verilog depends on: every non-Amaranth file named in a ``src`` attribute, plus the
    ``sat.*`` modules those files import, transitively (constants and helpers that leave no ``src`` trace).
    """
    import amaranth

    amaranth_root = Path(amaranth.__file__).resolve().parent
    todo: list[Path] = []
    for attr in re.findall(r'\bsrc = "([^"]+)"', verilog_text):
        for item in attr.split("|"):
            file = Path(re.sub(r":[0-9.]+(-[0-9.]+)?$", "", item.strip()))
            if file.suffix == ".py" and file.exists() and not file.resolve().is_relative_to(amaranth_root):
                todo.append(file.resolve())
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        for module in _imports(file, _module_name(file)):
            dep = _module_file(module)
            if dep is not None and dep not in seen:
                todo.append(dep)
    return sorted(seen)


def _hash_files(files: list[Path]) -> dict[str, str]:
    out = {}
    for f in files:
        try:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError:
            out[str(f)] = "missing"
    return out


def config_key(key: Any) -> str:
    """Canonical string of a configuration key.

    Parameters
    ----------
    key : SATConfig, mapping, str or None
        A :class:`~sat.sw.config.SATConfig` (its ``to_json()``), a JSON-serialisable mapping (sorted JSON),
        a string (used as is) or ``None`` (empty).

    Raises
    ------
    TypeError
        For any other type.
    """
    if key is None:
        return ""
    if isinstance(key, str):
        return key
    if hasattr(key, "to_json") and hasattr(key, "digest"):
        return key.to_json()
    if isinstance(key, Mapping):
        return json.dumps(key, sort_keys=True, default=str)
    raise TypeError(f"config key must be a SATConfig, a mapping, a string or None, not {type(key).__name__}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing), so parallel pytest workers build only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"top name must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_]*), not {name!r}")


def generate_verilog(factory: Callable[[], Any], name: str, key: Any = None, *,
                     attrs: Sequence[str] = ("latency",), force: bool = False) -> VerilogTop:
    """Verilog of ``factory()`` as module ``name``, converted once and cached per (name, key), regenerated
    when a source it depends on changes.

    Parameters
    ----------
    factory : callable
        Returns a fresh ``amaranth.lib.wiring.Component``; called only on a cache miss.
    name : str
        Verilog module name of the top, also the cache directory prefix. It must identify the factory:
        two different factories must not share a name and key.
    key : SATConfig, mapping, str or None
        Everything that parametrizes ``factory`` (see :func:`config_key`).
    attrs : list of str
        Component attributes (JSON-serialisable) to record in :attr:`VerilogTop.meta` when present.
    force : bool
        Convert again even when a cached file exists.

    Returns
    -------
    VerilogTop

    Raises
    ------
    ValueError
        If ``name`` is not a Verilog identifier.
    """
    _check_name(name)
    import amaranth

    ckey = config_key(key)
    memo_key = (name, ckey)
    if not force and memo_key in _memo and _memo[memo_key].path.exists():
        return _memo[memo_key]
    h = hashlib.sha256()
    for part in (name, ckey, amaranth.__version__):
        h.update(part.encode())
        h.update(b"\0")
    digest = h.hexdigest()[:12]
    directory = build_root() / "sim" / f"{name}-{digest}"
    path = directory / f"{name}.v"
    info = directory / "key.json"
    with file_lock(directory / ".lock"):
        stored = json.loads(info.read_text()) if info.exists() and path.exists() else None
        fresh = (stored is not None and not force
                 and _hash_files([Path(f) for f in stored.get("sources", {})]) == stored["sources"])
        if not fresh:
            from sat.hw.netlist import to_verilog

            component = factory()
            meta = {a: getattr(component, a) for a in attrs if hasattr(component, a)}
            text = to_verilog(component, name)
            sources = _hash_files(source_dependencies(text))
            if not path.exists() or path.read_text() != text:  # keep the mtime when nothing changed
                tmp = path.with_suffix(f".v.tmp{os.getpid()}")
                tmp.write_text(text)
                tmp.replace(path)
            stored = {"name": name, "key": ckey, "amaranth": amaranth.__version__, "meta": meta,
                      "sources": sources}
            info.write_text(json.dumps(stored, indent=2, default=str) + "\n")
        meta = stored.get("meta", {})
    top = VerilogTop(name=name, path=path, directory=directory, digest=digest, meta=meta)
    _memo[memo_key] = top
    return top
