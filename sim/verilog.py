"""Generated Verilog, cached per (top, configuration, gateware sources).

Converting an Amaranth design to Verilog takes a second or more per top; RTL tests of one configuration share one
conversion per test session, and later sessions reuse it while the configuration digest and the ``hw/`` sources are
unchanged. Files live under :func:`build_root` (``<repo>/build`` unless ``SAT_BUILD_DIR`` is set)::

    build/sim/<name>-<hash>/<name>.v       the Verilog top (module ``<name>``)
    build/sim/<name>-<hash>/key.json       what the hash covers (name, key, amaranth version)
    build/sim/<name>-<hash>/<simulator>/    simulator builds and test runs (see :mod:`sat.sim.runner`)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["VerilogTop", "build_root", "hw_sources_hash", "config_key", "generate_verilog", "file_lock"]

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


def hw_sources_hash() -> str:
    """SHA-256 (hex) over the gateware sources: every ``*.py`` below ``sat.hw``, plus the top-level modules
    of ``sat.sw`` (shared formats and configuration that the gateware imports; not ``sw/driver``).

    Any change to these files invalidates every cached Verilog file.
    """
    import sat.hw
    import sat.sw

    h = hashlib.sha256()
    for pkg, pattern in ((sat.hw, "**/*.py"), (sat.sw, "*.py")):
        root = Path(pkg.__file__).resolve().parent
        for f in sorted(root.glob(pattern)):
            h.update(f"{pkg.__name__}/{f.relative_to(root).as_posix()}\0".encode())
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


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
    """Verilog of ``factory()`` as module ``name``, converted once and cached per (name, key, sources).

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
    for part in (name, ckey, hw_sources_hash(), amaranth.__version__):
        h.update(part.encode())
        h.update(b"\0")
    digest = h.hexdigest()[:12]
    directory = build_root() / "sim" / f"{name}-{digest}"
    path = directory / f"{name}.v"
    info = directory / "key.json"
    with file_lock(directory / ".lock"):
        if force or not path.exists() or not info.exists():
            from amaranth.back import verilog

            component = factory()
            meta = {a: getattr(component, a) for a in attrs if hasattr(component, a)}
            text = verilog.convert(component, name=name)
            tmp = path.with_suffix(f".v.tmp{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(path)
            info.write_text(json.dumps(
                {"name": name, "key": ckey, "amaranth": amaranth.__version__, "meta": meta},
                indent=2, default=str) + "\n")
        meta = json.loads(info.read_text()).get("meta", {})
    top = VerilogTop(name=name, path=path, directory=directory, digest=digest, meta=meta)
    _memo[memo_key] = top
    return top
