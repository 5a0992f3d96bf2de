"""Imports run one way (STYLE.md, issue 11): configuration, numerics, formats and the driver do not pull in the
training code, the gateware never imports the driver, the driver never imports the gateware. Each check imports
a module in a fresh interpreter and lists what came with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TRAINING = {"sat.sw.bdwp", "sat.sw.train", "sat.sw.schedule", "sat.sw.bench", "sat.sw.pregen"}


def _loaded(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('sat.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ["sat.sw.config", "sat.sw.numerics", "sat.sw.nm", "sat.sw.nmformat",
                                    "sat.sw.tiling", "sat.sw.descriptor", "sat.sw.regmap", "sat.sw.perfmodel",
                                    "sat.sw.backend", "sat.sw.driver"])
def test_foundations_do_not_import_training_code(module: str) -> None:
    assert not _loaded(module) & TRAINING, f"{module} imports training code"


def test_gateware_and_driver_stay_apart() -> None:
    assert not {m for m in _loaded("sat.hw.core") if m.startswith("sat.sw.driver")}, "the gateware imports the driver"
    assert not {m for m in _loaded("sat.sw.driver") if m.startswith("sat.hw")}, "the driver imports the gateware"
    assert not {m for m in _loaded("sat.hw.core") if m.startswith("sat.sim")}, "the gateware imports test code"
