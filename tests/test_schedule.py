"""Tests of the offline scheduler ``sat.sw.schedule``: network shapes, schedule invariants (every GEMM once, modes
from the BDWP policy, descriptors valid, memory regions disjoint and in range, operands inside their regions), the
cycle total against ``perfmodel.gemm_counters`` over the GEMM unit's tiles (``sat.sw.tiling.tile_plan``),
orientation choice, split-K and pre-generation."""

from __future__ import annotations

import sys

import pytest

from sat.sw.bdwp import pass_is_sparse
from sat.sw.config import SATConfig
from sat.sw.descriptor import FLAG_A_TRANS, FLAG_B_TRANS, FLAG_SPARSE, ConvDescriptor
from sat.sw.network import Linear
from sat.sw.perfmodel import gemm_counters
from sat.sw.schedule import (
    NetworkBuilder,
    from_torch,
    resnet18_cifar,
    schedule_iteration,
    vgg16_cifar,
)

CFG = SATConfig(rows=8, cols=8, adder_latency=4)


def _tiny():
    return (NetworkBuilder("tiny", 8, 8, 3).conv("conv1", 16, 3).relu().save("b").conv("conv2", 16, 3).add("b")
            .relu().conv("conv3", 32, 3, stride=2).relu().avgpool().flatten().linear("fc", 10).build())


def test_network_shapes():
    net = resnet18_cifar()
    layers = {la.name: la for la in net.layers}
    assert len(layers) == 21                      # 17 3x3 convs + 3 shortcut convs + fc
    assert layers["conv1"].out_hw == (32, 32) and layers["conv1"].k == 27
    assert layers["layer2.0.conv1"].out_hw == (16, 16) and layers["layer2.0.downsample"].out_hw == (16, 16)
    assert layers["layer4.1.conv2"].out_hw == (4, 4) and layers["layer4.1.conv2"].k == 9 * 512
    assert layers["fc"].k == 512 and layers["fc"].c_out == 10
    vgg = vgg16_cifar()
    assert len(vgg.layers) == 16 and vgg.layers[12].out_hw == (2, 2) and vgg.layers[13].k == 512
    # forward MACs of ResNet-18 on 32x32 inputs: ~0.56 GMAC (well known figure)
    assert 0.5e9 < net.macs_per_image() < 0.6e9


def test_scaled_networks():
    """``width`` scales every layer's channels and keeps the structure (the scaled-down RTL samples use it)."""
    for build in (resnet18_cifar, vgg16_cifar):
        full, small = build(), build(width=8)
        assert [la.name for la in full.layers] == [la.name for la in small.layers]
        for f, s in zip(full.layers[:-1], small.layers[:-1], strict=True):
            assert f.c_out == 8 * s.c_out
        assert full.layers[-1].c_out == small.layers[-1].c_out == 10


def test_builder_errors():
    b = NetworkBuilder("x", 4, 4, 3).conv("c", 8)
    with pytest.raises(ValueError, match="flat input"):
        b.linear("fc", 10)
    with pytest.raises(ValueError, match="used twice"):
        b.conv("c", 8)
    with pytest.raises(ValueError, match="no tensor saved"):
        b.conv("d", 8, source="nope")
    with pytest.raises(ValueError, match="cannot add"):
        NetworkBuilder("y", 4, 4, 3).save("in").conv("c", 8).add("in")


def test_from_torch_needs_torch(monkeypatch):
    """Without PyTorch, from_torch says which extra installs it (torch hidden: sys.modules entry None)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"sat-nm\[torch\]"):
        from_torch(object(), (32, 32, 3))


@pytest.mark.parametrize("nm", [None, (2, 4), (2, 8), (1, 8)])
@pytest.mark.parametrize("orientation", ["normal", "auto"])
def test_schedule_invariants(nm, orientation):
    net = _tiny()
    memory = 8 << 20
    s = schedule_iteration(net, 4, CFG, nm, orientation=orientation, first_layer_bp=True, memory_bytes=memory)
    # every GEMM of every layer once per pass
    keys = [(g.layer, g.pass_) for g in s.gemms]
    assert sorted(keys) == sorted((la.name, p) for la in net.layers for p in ("ff", "bp", "wu"))
    for layer in net.layers:
        ff, bp, wu = (s.gemm(layer.name, p) for p in ("ff", "bp", "wu"))
        assert ff.sparse == pass_is_sparse(layer.ff, layer.k, nm)
        assert bp.sparse == pass_is_sparse(layer.bp, layer.c_out, nm)
        assert not wu.sparse
        P = layer.pixels(4)
        bp_shape = (P, layer.c_out, layer.k)
        if not isinstance(layer, Linear):     # a convolution: BP is the transposed conv over K' = (kh, kw, co)
            co_pad = layer.c_out if layer.kernel == 1 or not bp.sparse else -(-layer.c_out // nm[1]) * nm[1]
            bp_shape = (4 * layer.in_hw[0] * layer.in_hw[1], layer.kernel ** 2 * co_pad, layer.c_in)
            assert all(isinstance(d, ConvDescriptor) for g in (ff, bp, wu) for d in g.descriptors)
            assert not (ff.transposed or bp.transposed or wu.transposed)
        for g, shape in ((ff, (P, layer.k, layer.c_out)), (bp, bp_shape),
                         (wu, (layer.c_out, P, layer.k))):
            assert g.red == shape[1]
            assert (g.rows, g.cols) == ((shape[2], shape[0]) if g.transposed else (shape[0], shape[2]))
            assert sum(d.red for d in g.descriptors) == g.red
            if g.sparse:
                assert not g.transposed
    # regions disjoint, inside memory
    regions = sorted(s.regions.values(), key=lambda r: r.addr)
    for a, b in zip(regions, regions[1:], strict=False):
        assert a.end <= b.addr
    assert regions[-1].end <= memory
    # descriptors valid, operands inside regions, C in card-written regions only
    assert s.descriptors == [d for g in s.gemms for d in g.descriptors]
    assert s.regions["descriptors"].nbytes == 64 * len(s.descriptors)
    for d in s.descriptors:
        d.validate(CFG, memory)
        for name, lo, hi in d.extents():
            owner = [r for r in regions if r.addr <= lo and hi <= r.end]
            assert len(owner) == 1, (name, d)
            assert owner[0].writer == ("card" if name == "C" else "host")
            if name == "B" and d.flags & FLAG_SPARSE:
                assert owner[0].name.split(".")[-1].startswith("packed")
    # every run step covers its GEMM's descriptors, in list order
    runs = [st for st in s.steps if st.kind == "run"]
    assert [(r.first, r.count) for r in runs] == [(g.first_descriptor, g.split_k) for g in s.gemms]
    # DMA: every host-written operand region is written before the run that reads it
    written = set()
    for st in s.steps:
        if st.kind == "h2c":
            written.add(st.region)
        if st.kind == "run":
            for d in s.descriptors[st.first:st.first + st.count]:
                for _name, lo, _hi in d.extents()[:2]:
                    region = next(r for r in regions if r.addr <= lo < r.end)
                    assert region.name in written


def _reference_cycles(config, rows, red, cols, n, m):
    from sat.sw.tiling import tile_plan

    plan = tile_plan(config, rows, red, cols, n, m)
    return sum(gemm_counters(config, rt, red, ct, n, m).cycles for _r0, rt, _c0, ct in plan.tiles)


@pytest.mark.parametrize("nm", [None, (2, 8)])
def test_cycles_equal_sum_of_perfmodel(nm):
    cfg = SATConfig(rows=16, cols=16)
    s = schedule_iteration(_tiny(), 8, cfg, nm)
    total = 0
    for g in s.gemms:
        per = sum(_reference_cycles(cfg, d.rows, d.red, d.cols, d.n, d.m) for d in g.descriptors)
        assert g.counters.cycles == per
        assert g.counters.macs == sum(d.rows * d.cols * (d.red if not d.n else -(-d.red // d.m) * d.n)
                                      for d in g.descriptors)
        total += per
    assert s.cycles == total


def test_split_k_and_orientation():
    cfg = SATConfig(rows=32, cols=32)
    net = resnet18_cifar()
    dense_fixed = schedule_iteration(net, 4, cfg, None, orientation="normal")
    dense_engine = schedule_iteration(net, 4, cfg, None, orientation="auto-engine")
    dense_auto = schedule_iteration(net, 4, cfg, None, orientation="auto")
    limit = 1024                                   # dense: B buffer depth
    for g in dense_fixed.gemms:
        assert all(d.red <= limit for d in g.descriptors)
        if g.red > limit:
            assert g.split_k >= 2

    def unit(s, g):     # the GEMM unit's time of the scheduled GEMM, from its descriptors
        from sat.sw.perfmodel import unit_cycles

        return sum(unit_cycles(cfg, d.rows, d.red, d.cols, a_trans=bool(d.flags & FLAG_A_TRANS),
                               b_trans=bool(d.flags & FLAG_B_TRANS)).cycles
                   for d in g.descriptors)

    # the scheduler's choice never costs cycles, GEMM by GEMM: engine cycles for auto-engine, unit cycles for auto
    for a, b, c in zip(dense_fixed.gemms, dense_engine.gemms, dense_auto.gemms, strict=True):
        assert b.counters.cycles <= a.counters.cycles
        assert unit(dense_auto, c) <= unit(dense_fixed, a)
    assert any(g.transposed for g in dense_engine.gemms) and any(g.transposed for g in dense_auto.gemms)
    with pytest.raises(ValueError, match="orientation"):
        schedule_iteration(net, 4, cfg, None, orientation="sideways")


def _candidate_chunks(config, red, n, m):
    """Every K split the chooser may take, written out independently of ``sat.sw.schedule``: equal chunks on
    multiples of M (the last one shorter), from the fewest that fit the buffers to ``_CHUNK_RANGE`` times as many."""
    from sat.sw.schedule import _CHUNK_RANGE
    from sat.sw.tiling import max_reduction

    limit, granule = max_reduction(config, n, m), m or 1
    fewest = -(-red // limit)
    out = {}
    for count in range(fewest, _CHUNK_RANGE * fewest + 1):
        per = -(-red // count)
        size = -(-per // granule) * granule
        if size <= limit:
            bounds = [*range(0, red, size), red]
            out.setdefault(len(bounds) - 1, list(zip(bounds[:-1], bounds[1:], strict=True)))
    return list(out.values())


def _modelled_unit_time(config, g, chunks, narrow):
    """The GEMM unit's modelled time of a GEMM in ``chunks``: FP32 partials, or narrow results when one chunk
    computes an FF or BP result in full."""
    from sat.sw.perfmodel import unit_cycles

    final = narrow and g.pass_ != "wu" and len(chunks) == 1
    return sum(unit_cycles(config, g.rows, k1 - k0, g.cols, g.n, g.m, narrow=final).cycles for k0, k1 in chunks)


@pytest.mark.parametrize("nm", [None, (2, 8)])
@pytest.mark.parametrize("b_depth,narrow", [(16, True), (64, True), (64, False), (1024, True)])
def test_chunks_ranked_by_unit_time(nm, b_depth, narrow):
    """The K chunks of every scheduled GEMM tile ``[0, red)`` on multiples of M, fit the buffers, and are the
    candidate split with the least modelled GEMM unit time up to the margin: no other candidate is faster by
    more than ``_CHUNK_MARGIN``, and a split into more chunks than the fewest saves at least that fraction of
    the fewest's time."""
    from sat.sw.schedule import _CHUNK_MARGIN
    from sat.sw.tiling import max_reduction

    cfg = SATConfig(rows=4, cols=4, a_depth=16, b_depth=b_depth)
    s = schedule_iteration(_tiny(), 4, cfg, nm, first_layer_bp=True, narrow=narrow)
    split = 0
    for g in s.gemms:
        starts = [d.k0 if isinstance(d, ConvDescriptor) else None for d in g.descriptors]
        bounds = [0]
        for d in g.descriptors:
            bounds.append(bounds[-1] + d.red)
        chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
        assert bounds[-1] == g.red and all(k1 > k0 for k0, k1 in chunks)
        assert all(k0 % (g.m or 1) == 0 for k0, _ in chunks)
        assert all(k1 - k0 <= max_reduction(cfg, g.n, g.m) for k0, k1 in chunks)
        if starts[0] is not None:
            assert starts == bounds[:-1]
        candidates = _candidate_chunks(cfg, g.red, g.n, g.m)
        assert chunks in candidates
        time = _modelled_unit_time(cfg, g, chunks, narrow)
        for other in candidates:
            assert time * (1 - _CHUNK_MARGIN) <= _modelled_unit_time(cfg, g, other, narrow), (g.layer, g.pass_)
        if len(chunks) > len(candidates[0]):
            assert time < (1 - _CHUNK_MARGIN) * _modelled_unit_time(cfg, g, candidates[0], narrow)
        assert all(d.narrow for d in g.descriptors) == (narrow and g.pass_ != "wu" and len(chunks) == 1)
        split += len(chunks) > 1
    assert split or b_depth == 1024


def test_chunks_on_the_card():
    """The point of ranking K chunks by the unit's time, on the card build (ResNet-18, batch 32, 2:8): the dense
    WU of ``layer1`` (reduction over 32768 pixels) takes chunks that fit half the buffers, so the unit double
    buffers its loads, which chunks of exactly ``b_depth`` (the fewest that fit) would not; the 2:8 FF of
    ``layer1`` (K = 576, well within one chunk) is not split, so its result is written narrow."""
    from sat.sw.bench import default_config
    from sat.sw.tiling import max_reduction, tile_plan

    cfg = default_config()
    assert (cfg.rows, cfg.cols, cfg.a_depth, cfg.b_depth) == (32, 32, 1024, 4096)
    s = schedule_iteration(resnet18_cifar(), 32, cfg, (2, 8))
    wu = s.gemm("layer1.0.conv1", "wu")
    assert (wu.rows, wu.red, wu.cols, wu.sparse) == (64, 32768, 576, False)
    fewest = -(-wu.red // max_reduction(cfg))                                  # 8 chunks of 4096 = b_depth
    assert not tile_plan(cfg, wu.rows, max_reduction(cfg), wu.cols).double     # ... would expose their loads
    assert wu.split_k > fewest and all(tile_plan(cfg, d.rows, d.red, d.cols).double for d in wu.descriptors)
    ff = s.gemm("layer1.0.conv1", "ff")
    assert (ff.rows, ff.red, ff.cols, (ff.n, ff.m)) == (32768, 576, 64, (2, 8))
    assert ff.split_k == 1 and ff.descriptors[0].narrow


@pytest.mark.parametrize("nm", [(2, 4), (2, 8), (1, 8)])
def test_speedup_bounded_by_ideal(nm):
    cfg = SATConfig(rows=16, cols=16, nm_set=((2, 4), (2, 8), (1, 8)))
    net = _tiny()
    dense = schedule_iteration(net, 16, cfg, None)
    sparse = schedule_iteration(net, 16, cfg, nm)
    n, m = nm
    speedup = dense.cycles / sparse.cycles
    assert 1.0 < speedup <= 3 / (2 * n / m + 1) + 1e-9
    assert 0 < sparse.utilization() <= 1


def test_errors():
    with pytest.raises(ValueError, match="nm_set"):
        schedule_iteration(_tiny(), 4, SATConfig(nm_set=((2, 4),)), (2, 8))
    with pytest.raises(ValueError, match="batch"):
        schedule_iteration(_tiny(), 0, CFG, None)
    with pytest.raises(MemoryError, match="device memory"):
        schedule_iteration(_tiny(), 4, CFG, None, memory_bytes=4096)


@pytest.mark.parametrize("nm", [None, (2, 8)])
@pytest.mark.parametrize("orientation", ["normal", "auto"])
@pytest.mark.parametrize("b_depth", [1024, 16])
def test_run_schedule_on_model(nm, orientation, b_depth):
    """The schedule's memory map and descriptors computed on the software device equal the golden GEMMs bit for
    bit, also with a K split: the golden then computes each chunk's product and adds the FP32 partials in chunk
    order with the array's adder (numerics.fp32_add); FF and BP results are narrow (rounded once, by the core for
    one descriptor, by the host after a chunk sum), WU results FP32."""
    import functools

    import numpy as np

    from sat.sw import numerics
    from sat.sw.bdwp import BDWPSettings, gemm_bp, gemm_ff, gemm_wu, nm_mask
    from sat.sw.conv import ConvShape, bp_lower, bp_weight_matrix, im2col
    from sat.sw.descriptor import ConvDescriptor
    from sat.sw.driver import SATDevice
    from sat.sw.driver.model import ModelTransport
    from sat.sw.network import Linear
    from sat.sw.schedule import run_schedule
    from sat.sw.tiling import max_reduction

    cfg = SATConfig(rows=4, cols=4, b_depth=b_depth)
    net = _tiny()
    s = schedule_iteration(net, 2, cfg, nm, orientation=orientation, first_layer_bp=True, memory_bytes=16 << 20)
    # short buffers force K chunks; long ones allow them only where the chunk chooser finds them faster
    assert any(g.split_k > 1 for g in s.gemms) or b_depth != 16
    assert all(d.red <= max_reduction(cfg, d.n, d.m) for d in s.descriptors)
    rng = np.random.default_rng(1)
    convs = {la.name: la for la in net.layers if not isinstance(la, Linear)}
    tensors = {}
    for la in net.layers:       # convolutions get channels-last X: the core lowers it, the test lowers it here
        x = (rng.standard_normal((2, *la.in_hw, la.c_in)) if la.name in convs else
             rng.standard_normal((la.pixels(2), la.k)))
        tensors[la.name] = {"x": x.astype(np.float32),
                            "dy": rng.standard_normal((la.pixels(2), la.c_out)).astype(np.float32),
                            "w": rng.standard_normal((la.c_out, la.k)).astype(np.float32)}
    with SATDevice(ModelTransport(cfg, memory_bytes=16 << 20), cfg) as dev:
        out = run_schedule(dev, s, tensors)
    assert any(isinstance(d, ConvDescriptor) for d in s.descriptors), "convolutions run as conv descriptors"
    st = BDWPSettings(nm=nm, fmt=cfg.fmt)
    split = 0
    for g in s.gemms:
        t = dict(tensors[g.layer])
        la = convs.get(g.layer)
        w_bp, mask_bp = t["w"], (nm_mask(t["w"], *nm, axis=0) if g.sparse else None)
        if la is not None:       # the golden lowering of the convolution (sat.sw.conv)
            shape = ConvShape(2, *la.in_hw, la.c_in, la.c_out, la.kernel, la.kernel, la.stride, la.padding)
            m_eff = nm[1] if g.sparse else 1
            t["x"] = im2col(t["x"], la.kernel, la.kernel, la.stride, la.padding)
            if g.pass_ == "bp":
                t["dy"] = bp_lower(t["dy"].reshape(shape.y_shape), shape, m_eff)
                w_bp = bp_weight_matrix(t["w"].reshape(shape.w_shape), shape, m_eff)
                if mask_bp is not None:
                    mask_bp = bp_weight_matrix(mask_bp.reshape(shape.w_shape), shape, m_eff)
        bounds = np.cumsum([0] + [d.red for d in g.descriptors])
        chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
        parts = []
        for k0, k1 in chunks:
            if g.pass_ == "ff":        # reduction over K
                mask = nm_mask(t["w"], *nm, axis=1)[:, k0:k1] if g.sparse else None
                parts.append(gemm_ff(t["x"][:, k0:k1], t["w"][:, k0:k1], st, g.sparse, mask))
            elif g.pass_ == "bp":      # reduction over C_out (K' = (kh, kw, co) for a convolution)
                mask = mask_bp[k0:k1] if g.sparse else None
                parts.append(gemm_bp(t["dy"][:, k0:k1], w_bp[k0:k1], st, g.sparse, mask))
            else:                      # reduction over the pixels
                parts.append(gemm_wu(t["dy"][k0:k1], t["x"][k0:k1], st))
        ref = functools.reduce(numerics.fp32_add, parts)
        if g.pass_ != "wu":     # narrow results (SPEC section 2): the final FP32 result rounded once
            ref = numerics.result_values(ref, cfg.fmt)
            assert all(d.narrow for d in g.descriptors) == (len(chunks) == 1), "only a final result is narrow"
        got = out[(g.layer, g.pass_)]
        assert got.shape == ref.shape and got.dtype == np.float32, (g.layer, g.pass_)
        np.testing.assert_array_equal(numerics.fp32_bits(got), numerics.fp32_bits(ref),
                                      err_msg=f"{g.layer} {g.pass_} ({len(chunks)} K chunks)")
        split += len(chunks) > 1
    assert split > 0 or b_depth != 16
