"""Tests of ``sat bench`` (``sat.sw.bench``) on a small array and batch: outputs exist and agree with the
schedule, speedups lie between 1 and the ideal, the markdown update keeps the rest of the file."""

from __future__ import annotations

import csv
import json

import pytest

from sat.sw.bench import BEGIN, END, ideal_speedup, render_markdown, run_bench, update_markdown, write_outputs
from sat.sw.cli import main
from sat.sw.config import SATConfig
from sat.sw.dram import DDR4_2400
from sat.sw.memmap import CARD_MEMORY, default_placement
from sat.sw.schedule import get_network, schedule_iteration


def test_ideal_speedup():
    assert ideal_speedup("2:8") == 2.0 and ideal_speedup("dense") == 1.0
    assert abs(ideal_speedup("2:4") - 1.5) < 1e-12


def test_run_bench_small(tmp_path):
    cfg = SATConfig(rows=16, cols=16)
    result = run_bench(cfg, ["vgg16"], batch=2, modes=("dense", "2:8"), pregen=False)
    entry = result["networks"]["vgg16"]["orientations"]
    for orient in ("normal", "auto-engine", "auto"):
        s = schedule_iteration(get_network("vgg16"), 2, cfg, (2, 8), orientation=orient)
        summary = entry[orient]["2:8"]["summary"]
        gemms = entry[orient]["2:8"]["gemms"]
        assert summary["cycles"] == s.cycles == sum(g["cycles"] for g in gemms)
        assert summary["unit_cycles"] == sum(g["unit_cycles"] for g in gemms)
        # the unit adds operand loads and result writes to the engine's time, never removes any
        assert all(g["unit_cycles"] >= g["cycles"] for g in gemms)
        # the 3/(2N/M+1) ideal assumes FF, BP and WU cost the same dense work, which edge tiles break at batch 2;
        # no pass can gain more than M/N
        assert 1.0 < summary["speedup"] <= 8 / 2 and 1.0 < summary["unit_speedup"] <= 8 / 2
        # the system (the unit with the card's DDR4 channels) waits for the memory on top of the unit's time
        assert summary["system_cycles"] == sum(g["system_cycles"] for g in gemms)
        assert all(g["system_cycles"] >= g["unit_cycles"] for g in gemms)
        assert summary["system_cycles"] > summary["unit_cycles"]
        assert 1.0 < summary["system_speedup"] <= 8 / 2
        assert summary["system_images_per_s"] == pytest.approx(2 * cfg.clock_hz / summary["system_cycles"])
    # each scheduler choice is best for what it optimises
    summary = {o: entry[o]["dense"]["summary"] for o in entry}
    assert summary["auto-engine"]["cycles"] <= summary["normal"]["cycles"]
    assert summary["auto"]["unit_cycles"] <= summary["normal"]["unit_cycles"]
    assert result["memory"]["model"] == "ddr4" and result["memory"]["dram"] == DDR4_2400.as_dict()
    # the card as built: four channels, operands and results apart (sat.sw.memmap)
    assert result["memory"]["channels"] == CARD_MEMORY.channels == 4
    assert result["memory"]["placement"] == default_placement(4)
    files = write_outputs(result, tmp_path, plots=False)
    assert json.loads((tmp_path / "bench.json").read_text())["batch"] == 2
    # summary.json (issue 13's report format): the auto schedule, images/s from the system cycles at the clock
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert summ["config"] == cfg.to_dict() and summ["memory"]["channels"] == 4 and summ["memory"]["model"] == "ddr4"
    net = summ["networks"]["vgg16"]
    assert net["batch"] == 2 and set(net["modes"]) == {"dense", "2:8"}
    for mode, nm in (("dense", None), ("2:8", (2, 8))):
        s = schedule_iteration(get_network("vgg16"), 2, cfg, nm, orientation="auto")
        got = net["modes"][mode]
        system = sum(g["system_cycles"] for g in entry["auto"][mode]["gemms"])
        assert got["engine_cycles"] == s.cycles and got["system_cycles"] == system
        assert got["images_per_s"] == pytest.approx(2 * cfg.clock_hz / system)
        passes = got["passes"]
        assert set(passes) == {"ff", "bp", "wu"}
        assert sum(p["system_cycles"] for p in passes.values()) == system
        assert sum(p["engine_cycles"] for p in passes.values()) == s.cycles
    sparse, dense_ = net["modes"]["2:8"], net["modes"]["dense"]
    assert sparse["engine_speedup"] == pytest.approx(dense_["engine_cycles"] / sparse["engine_cycles"])
    assert sparse["system_speedup"] == pytest.approx(dense_["system_cycles"] / sparse["system_cycles"])
    # with an ideal memory the system is the unit
    ideal = run_bench(cfg, ["vgg16"], batch=2, modes=("dense", "2:8"), pregen=False, dram=None)
    for per_mode in ideal["networks"]["vgg16"]["orientations"].values():
        for data in per_mode.values():
            assert data["summary"]["system_cycles"] == data["summary"]["unit_cycles"]
    # one channel shared by reads and writes: no GEMM is faster than on the card's four, some are slower
    one = run_bench(cfg, ["vgg16"], batch=2, modes=("dense", "2:8"), pregen=False, dram_channels=1)
    assert one["memory"]["channels"] == 1
    slower = []
    for orient, per_mode in one["networks"]["vgg16"]["orientations"].items():
        for mode, data in per_mode.items():
            four = entry[orient][mode]["gemms"]
            assert [g["unit_cycles"] for g in data["gemms"]] == [g["unit_cycles"] for g in four]
            assert all(g1["system_cycles"] >= g4["system_cycles"] for g1, g4 in zip(data["gemms"], four, strict=True))
            slower.append(data["summary"]["system_cycles"] > entry[orient][mode]["summary"]["system_cycles"])
    assert any(slower)
    assert "4 DDR4-2400 channels" in render_markdown(result) and "one DDR4-2400 channel" in render_markdown(one)
    # the per-pass table: its system column adds up to each mode's system cycles, and the text states the ratio
    md = render_markdown(result)
    table = md[md.index("### vgg16: GEMM unit and system time by pass"):].split("\n\n")[4].splitlines()[2:]
    for mode in ("dense", "2:8"):
        rows = [r.split(" | ") for r in table if r.startswith(f"| {mode} |")]
        total = entry["auto"][mode]["summary"]["system_cycles"] / 1e6
        assert sum(float(r[7]) for r in rows) == pytest.approx(total, abs=0.005 * len(rows))
    d = entry["auto"]["dense"]["summary"]
    assert f"**{d['system_cycles'] / d['cycles']:.2f}x** the engine" in md
    with pytest.raises(ValueError, match="channels must be an integer"):
        run_bench(cfg, ["vgg16"], batch=2, modes=("dense",), pregen=False, dram_channels=0)
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(p.exists() for p in files)


def test_markdown_keeps_other_sections(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Accuracy\n\nkeep me\n")
    cfg = SATConfig(rows=8, cols=8)
    result = run_bench(cfg, ["resnet18"], batch=1, modes=("dense", "2:8"), pregen=False)
    update_markdown(doc, render_markdown(result))
    update_markdown(doc, render_markdown(result))   # idempotent: one block
    text = doc.read_text()
    assert text.startswith("# Accuracy\n\nkeep me\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "## resnet18" in text


def test_cli(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(SATConfig(rows=8, cols=8).to_json())
    assert main(["bench", "--out", str(tmp_path / "o"), "--network", "resnet18", "--batch", "1", "--config",
                 str(cfg), "--modes", "dense,2:8", "--no-pregen", "--channels", "2"]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["memory"]["channels"] == 2
    assert (tmp_path / "o" / "bench_speedup.png").stat().st_size > 1000
    assert "resnet18" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:              # argparse refuses it before any work
        main(["bench", "--out", str(tmp_path / "o"), "--batch", "0", "--no-plots"])
    assert exc.value.code == 2
    assert "--batch" in capsys.readouterr().err


def test_host_iteration_counts_the_bytes_a_conv_card_moves():
    """host_iteration's PCIe bytes for conv -> global pool -> fc, dense, batch 2, counted by hand: each resident
    activation and output gradient once (operand format), dense weights (FF: W^T, BP: W as K' x C_in), results
    once (FF and BP narrow, WU FP32); the first layer's BP is not run. Its host time is positive and broken down
    by category."""
    from sat.sw.bench import host_iteration
    from sat.sw.network import NetworkBuilder

    net = NetworkBuilder("t", 4, 4, 8).conv("c", 8, 3).relu().avgpool().flatten().linear("fc", 4).build()
    b = 2
    # narrow results (SPEC section 2): FF's Y and BP's dX in the operand format (2 bytes), WU's dW in FP32
    conv = 2 * b * 4 * 4 * 8 + 2 * 72 * 8 + 2 * b * 4 * 4 * 8 + 2 * b * 4 * 4 * 8 + 4 * 8 * 72
    fc = 2 * b * 8 + 2 * 8 * 4 + 2 * b * 4 + 2 * b * 4 + 4 * 4 * 8 + 2 * 4 * 8 + 2 * b * 8
    r = host_iteration(net, b, "dense")
    assert r["pcie_bytes"] == conv + fc
    assert r["host_seconds"] > 0 and r["breakdown"]["total"] > 0 and set(r["breakdown"]) >= {"batch norm", "other"}


def test_host_breakdown_finds_the_operand_work():
    """Every sparse iteration prunes and packs weights and quantizes activations: the categories that name those
    functions must find them (their callers are the layer passes), and the categories never sum past the total."""
    from sat.sw.bench import host_iteration
    from sat.sw.network import NetworkBuilder

    net = NetworkBuilder("t", 8, 8, 8).conv("c1", 16, 3).relu().conv("c2", 16, 3).relu().avgpool().flatten() \
        .linear("fc", 8).build()
    bd = host_iteration(net, 4, "2:8", iterations=2)["breakdown"]
    assert bd["weight operands: prune, pack, convert (pre-generation)"] > 0
    assert bd["activations to FP16/BF16"] > 0
    parts = sum(v for k, v in bd.items() if k != "total")
    assert parts <= bd["total"] * (1 + 1e-9)


def test_end_to_end_column(tmp_path):
    cfg = SATConfig(rows=8, cols=8)
    result = run_bench(cfg, ["resnet18"], batch=1, modes=("dense", "2:8"), pregen=False, end_to_end=True)
    e2e = result["networks"]["resnet18"]["end_to_end"]
    for mode in ("dense", "2:8"):
        v = e2e[mode]
        assert v["card_seconds"] == result["networks"]["resnet18"]["orientations"]["auto"][mode]["summary"][
            "system_seconds"]
        assert abs(v["total_seconds"] - v["card_seconds"] - v["host_seconds"] - v["pcie_seconds"]) < 1e-12
        assert 0 < v["host_share"] < 1
    assert e2e["2:8"]["pcie_bytes"] < e2e["dense"]["pcie_bytes"]       # packed weights are smaller
    assert "## End to end" in render_markdown(result)


def test_pregen_sweep_reuses_the_runs_own_replay():
    """The sweep row of the run's own batch is the replay the paragraph above it describes (one wall-clock
    measurement, not two that differ); other batches get their own replay with the same task count."""
    cfg = SATConfig(rows=8, cols=8)
    result = run_bench(cfg, ["resnet18"], batch=1, modes=("dense", "2:8"), pregen=True, pregen_batches=(1, 2))
    pregen = result["networks"]["resnet18"]["pregen"]
    own, other = pregen["sweep"]
    assert own["batch"] == 1 and other["batch"] == 2
    for key in ("iteration_s", "work_s", "hidden", "worst_slack_s", "threads_needed"):
        assert own[key] == pregen[key]
    assert other["iteration_s"] > pregen["iteration_s"]        # twice the images: a longer card iteration
