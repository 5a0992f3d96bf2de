"""SATConfig validation and serialisation."""

import json

import pytest

from sat.sw.config import SATConfig


def test_round_trips_through_json(tmp_path):
    cfg = SATConfig(rows=8, cols=2, fmt="bf16", nm_set=((2, 8), (1, 4)), adder_latency=5)
    path = tmp_path / "cfg.json"
    path.write_text(cfg.to_json())
    assert SATConfig.load(path) == cfg
    assert SATConfig.load(path).digest() == cfg.digest()


def test_nm_set_is_normalised_and_drives_supports():
    cfg = SATConfig(nm_set=((2, 8), (1, 4), (2, 8)))
    assert cfg.nm_set == ((1, 4), (2, 8))
    assert cfg.max_m == 8
    assert cfg.supports(2, 8) and cfg.supports(4, 4) and not cfg.supports(2, 4)


def test_digest_changes_with_any_parameter():
    base = SATConfig()
    others = [base.replace(rows=8), base.replace(fmt="bf16"), base.replace(nm_set=((2, 4),)),
              base.replace(adder_latency=3)]
    assert len({base.digest(), *(c.digest() for c in others)}) == 1 + len(others)


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "rows must be an integer between 1 and 256"),
    ({"fmt": "fp8"}, "fmt must be one of"),
    ({"nm_set": ((3, 6),)}, "M must be a power of two"),
    ({"nm_set": ((5, 4),)}, r"N must be between 1 and M \(4\)"),
    ({"nm_set": ((4, 4),)}, "dense mode is always built in"),
    ({"adder_latency": 0}, "adder_latency"),
    ({"axi_data_width": 100}, "axi_data_width"),
])
def test_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SATConfig(**kwargs)


def test_load_reports_unknown_keys_and_bad_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 4, "colums": 4}))
    with pytest.raises(ValueError, match="unknown SATConfig keys.*colums"):
        SATConfig.load(bad)
    bad.write_text("{rows: 4")
    with pytest.raises(ValueError, match="not valid JSON"):
        SATConfig.load(bad)
