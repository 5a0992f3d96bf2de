"""``sat.sw.pregen``: the real-time replay of pre-generation against the card's timeline. The timing values
depend on the machine; the tests check the replay's invariants against the schedule (release, deadlines, packed
sizes from ``nmformat.packed_nbytes``, thread count, the single H2C channel) and its error paths."""

from __future__ import annotations

import pytest

from sat.sw.config import SATConfig
from sat.sw.nmformat import packed_nbytes
from sat.sw.pregen import pregen_work, replay
from sat.sw.schedule import PCIE_BYTES_PER_S, NetworkBuilder, schedule_iteration

CFG = SATConfig(rows=8, cols=8, adder_latency=4)


def _net():
    return (NetworkBuilder("tiny", 8, 8, 3).conv("conv1", 16, 3).relu().conv("conv2", 32, 3, stride=2).relu()
            .avgpool().flatten().linear("fc", 10).build())


def _spans(s):
    t, spans = 0.0, {}
    for g in s.gemms:
        dt = g.counters.cycles / s.config.clock_hz
        spans[(g.layer, g.pass_)] = (t, t + dt)
        t += dt
    return t, spans


@pytest.mark.parametrize("threads", [1, 2])
def test_replay_timeline(threads):
    s = schedule_iteration(_net(), 4, CFG.replace(b_depth=64), (2, 8))
    r = replay(s, threads=threads, iterations=2, repeats=1)
    iteration, spans = _spans(s)
    assert r.iteration_s == pytest.approx(iteration)
    sparse = {(g.layer, g.pass_): g for g in s.gemms if g.sparse}
    assert {(t.layer, t.pass_) for t in r.tasks} == set(sparse) and len(r.tasks) == len(sparse)
    layers = {la.name: la for la in s.network.layers}
    for t in r.tasks:
        g = sparse[(t.layer, t.pass_)]
        la = layers[t.layer]
        # B = W^T (K x C_out) for FF, W (C_out x K) for a linear BP, W_bp as K' x C_in for a convolution's BP,
        # packed per K chunk
        cols = la.c_out if t.pass_ == "ff" else g.descriptors[0].cols
        assert t.packed_bytes == sum(packed_nbytes(2, 8, d.red, cols) for d in g.descriptors)
        assert t.release_s == pytest.approx(spans[(t.layer, "wu")][1])
        assert t.deadline_s == pytest.approx(iteration + spans[(t.layer, t.pass_)][0])
        assert t.start_s >= t.release_s - 1e-9 and t.host_s > 0
        assert t.ready_s >= t.start_s + t.host_s + t.packed_bytes / PCIE_BYTES_PER_S - 1e-9
        assert t.hidden == (t.ready_s <= t.deadline_s)
    # a layer's BP weights are due after its FF weights (the next iteration's backward pass)
    due = {(t.layer, t.pass_): t.deadline_s for t in r.tasks}
    assert all(due[(la, "bp")] > due[(la, "ff")] for la, p in due if p == "bp" and (la, "ff") in due)
    # never more than `threads` tasks at once
    edges = sorted([(t.start_s, 1) for t in r.tasks] + [(t.start_s + t.host_s, -1) for t in r.tasks],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in edges:
        running += d
        peak = max(peak, running)
    assert peak <= threads
    # one H2C channel: transfers do not overlap
    by_ready = sorted(r.tasks, key=lambda t: t.ready_s)
    for a, b in zip(by_ready, by_ready[1:], strict=False):
        assert b.ready_s - a.ready_s >= b.packed_bytes / PCIE_BYTES_PER_S - 1e-9
    d = r.as_dict()
    assert d["hidden"] == r.hidden and len(d["tasks"]) == len(r.tasks) and r.threads_needed >= 1


def test_work_matches_schedule():
    s = schedule_iteration(_net(), 4, CFG, (1, 4))
    work = pregen_work(s)
    assert [(la, p) for la, p, _ in work] == [(g.layer, g.pass_) for la in reversed(s.network.layers)
                                              for g in s.gemms if g.layer == la.name and g.sparse]
    assert all(fn() > 0 for _, _, fn in work)


def test_replay_errors(monkeypatch):
    with pytest.raises(ValueError, match="dense training"):
        replay(schedule_iteration(_net(), 4, CFG, None))
    s = schedule_iteration(_net(), 4, CFG, (2, 8))
    with pytest.raises(ValueError, match="at least 1"):
        replay(s, threads=0)
    # a failing task ends the replay with its error instead of hanging the other threads
    import threading

    import sat.sw.pregen as pregen

    real = pregen.pack

    def flaky(*args, **kwargs):     # fails only in the replay's worker threads, after the solo timing runs
        if threading.current_thread().name.startswith("pregen-"):
            raise RuntimeError("packer failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pregen, "pack", flaky)
    with pytest.raises(RuntimeError, match="packer failed"):
        replay(s, threads=2, iterations=3, repeats=1)
