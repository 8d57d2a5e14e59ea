"""On-disk volume cache: crops equal the in-memory array's, samplers give the same batches with and without it,
nothing stays mapped, and building a cached sampler holds a bounded number of volumes whatever the cohort size."""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest
import torch

from pipeline.data.cache import CachedArray, LazyVolumes, VolumeCache
from pipeline.data.sr_sampler import SRPatchSampler
from pipeline.data.unpaired_sampler import UnpairedSampler
from pipeline.data.volumes import SRPair, Volume, sr_pairs
from pipeline.models.cyclegan import CycleGANConfig
from tests.unit.sr_helpers import make_sr_dataset

KEYS = [
    (slice(3, 19), slice(5, 21), slice(4, 5)),        # a 2D crop across the last axis
    (slice(10, 26), slice(20, 30), 7),                # running into the padding, int on the last axis
    (27, slice(None), slice(None)),                   # a whole slice inside the padding: zeros
    (Ellipsis, 2),
    (slice(-6, None), 3, slice(2, 2)),                # negative start, empty axis
    (slice(0, 16), slice(0, 8), np.array([0, 0, 1, 2, 3])),  # a context-slice stack (edges repeated)
    (slice(0, 30, 3),),                               # strided: read whole, then index
    (np.array([1, 2]), 3, slice(None)),               # numpy's mixed advanced indexing
]


@pytest.fixture
def cache(tmp_path):
    c = VolumeCache(tmp_path / "cache")
    yield c
    c.close()


@pytest.mark.parametrize("order", ["C", "F"])
def test_cached_array_crops_equal_the_padded_in_memory_array(cache, order):
    a = np.random.default_rng(0).random((23, 28, 9), dtype=np.float32)
    padded = np.pad(a, [(0, 7), (0, 4), (0, 0)])
    h = cache.put(f"a{order}", a, order).padded(padded.shape)
    assert h.shape == padded.shape and len(h) == 30 and h.ndim == 3 and h.dtype == np.float32
    for key in KEYS:
        got, want = h[key], padded[key]
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=str(key))
        assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(np.asarray(h), padded)
    with pytest.raises(IndexError):
        h[30]
    # int32 rows (crop centres) read one at a time
    centres = cache.put(f"c{order}", np.argwhere(a > 0.99).astype(np.int32))
    np.testing.assert_array_equal(centres[len(centres) - 1], np.argwhere(a > 0.99)[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_nothing_stays_mapped_after_a_read(cache):
    h = cache.put("v", np.ones((16, 16, 16), np.float32))
    h[2:10, 3:9, 4]
    with open("/proc/self/maps") as fh:
        assert str(h.path) not in fh.read()


def test_cache_close_removes_its_files_and_empty_parent(tmp_path):
    parent = tmp_path / "out" / "cache"
    c = VolumeCache(parent, prefix="t-")
    path = c.put("x", np.zeros(3)).path
    assert path.is_file() and path.parent.parent == parent
    with pytest.raises(ValueError, match="name"):
        c.put("../x", np.zeros(3))
    c.close()
    assert not path.exists() and not parent.exists() and c.closed
    with pytest.raises(RuntimeError, match="closed"):
        c.put("y", np.zeros(3))


def test_lazy_volumes_read_on_access():
    calls = []
    seq = LazyVolumes(["a", "b", "c"], lambda i: calls.append(i) or i * 10)
    assert len(seq) == 3 and seq.names == ["a", "b", "c"] and not calls
    assert list(seq) == [0, 10, 20] and seq[-1] == 20 and seq[1:] == [10, 20]
    assert calls == [0, 1, 2, 2, 1, 2]
    with pytest.raises(IndexError):
        seq[3]


def _batches_equal(a, b, steps):
    for step in steps:
        x, y = a(step), b(step)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"step {step}: {k} differs"


def _pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(n):
        shape = (32 + 4 * (k % 2), 28, 5 + k % 3)  # different sizes: padding matters
        hr = rng.random(shape, dtype=np.float32)
        lr = hr.reshape(shape[0] // 4, 4, shape[1] // 4, 4, shape[2]).mean(axis=(1, 3))
        mask = np.zeros(shape, bool)
        mask[4:-4, 4:-4] = True
        pairs.append(SRPair(f"s{k}", lr, hr, mask, np.eye(4), np.eye(4)))
    return pairs


@pytest.mark.parametrize(("patch_size", "interp", "context"), [(16, "zerofill", 0), (0, "nearest", 0), (16, "none", 1)])
def test_sr_sampler_batches_unchanged_with_cache(tmp_path, patch_size, interp, context):
    pairs = _pairs(3)
    kw = dict(spatial_dims=2, patch_size=patch_size, batch_size=5, seed=3, interp=interp, context_slices=context)
    memory = SRPatchSampler(pairs, **kw)
    with VolumeCache(tmp_path) as cache:
        cached = SRPatchSampler(pairs, **kw, cache=cache)
        assert all(isinstance(x, CachedArray) for x in cached.hr + cached.lr + cached.centres)
        _batches_equal(memory, cached, range(6))


def test_sr_sampler_3d_and_lazy_pairs_unchanged_with_cache(tmp_path):
    data = make_sr_dataset(tmp_path / "d", shape=(16, 16, 16), scale=2, axes=(0, 1, 2))
    lazy = sr_pairs(data, "T1w", "train")
    assert isinstance(lazy, LazyVolumes) and lazy.names == ["sub-001", "sub-002"]
    kw = dict(spatial_dims=3, patch_size=8, batch_size=3, seed=1)
    memory = SRPatchSampler(list(lazy), **kw)
    cache = VolumeCache(tmp_path / "c")
    cached = SRPatchSampler(lazy, **kw, cache=cache)
    _batches_equal(memory, cached, range(4))
    cached.close()
    assert not cache.root.exists()


def _cyc_cfg(**kw) -> CycleGANConfig:
    base = dict(patch_size=8, batch_size=3, warmup_steps=0, warmup_downsample=2, train_downsample=1)
    base.update(kw)
    return CycleGANConfig(**base)


def _volumes(n, seed=0):
    rng = np.random.default_rng(seed)
    a, b = [], []
    for k in range(n):
        shape = (14 + 2 * k, 12, 6)
        mask = np.zeros(shape, bool)
        mask[2:-2, 2:-2, 1:-1] = True
        a.append(Volume(f"s{k}", rng.random(shape, dtype=np.float32), mask, np.eye(4)))
        b.append(Volume(f"s{k}", rng.random(shape, dtype=np.float32), mask, np.eye(4)))
    return a, b


@pytest.mark.parametrize("cfg", [_cyc_cfg(), _cyc_cfg(patch_size=0, train_downsample=2, warmup_steps=2),
                                 _cyc_cfg(spatial_dims=3, patch_size=8)])
def test_unpaired_sampler_batches_unchanged_with_cache(tmp_path, cfg):
    a, b = _volumes(4)
    memory = UnpairedSampler(a, b, cfg, seed=5)
    with VolumeCache(tmp_path) as cache:
        lazy_a = LazyVolumes([v.subject for v in a], lambda i: a[i])
        cached = UnpairedSampler(lazy_a, b, cfg, seed=5, cache=cache)
        assert isinstance(next(iter(cached.domains["A"].values()))[0], CachedArray)
        _batches_equal(memory, cached, range(5))


def _peak_mb_building(n: int, tmp_path, cached: bool) -> float:
    """Peak traced memory (MB) while building an SR sampler over `n` lazily generated 128 kB subjects."""
    shape = (32, 32, 32)

    def load(k):
        rng = np.random.default_rng(k)
        hr = rng.random(shape, dtype=np.float32)
        lr = np.ascontiguousarray(hr[::4, ::4])
        return SRPair(f"s{k}", lr, hr, np.ones(shape, bool), np.eye(4), np.eye(4))

    pairs = LazyVolumes([f"s{k}" for k in range(n)], load)
    cache = VolumeCache(tmp_path / f"c{n}{cached}") if cached else None
    tracemalloc.start()
    try:
        sampler = SRPatchSampler(pairs, 2, 16, 4, seed=0, interp="nearest", cache=cache)
        sampler(0)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    sampler.close()
    return peak


def test_cached_sampler_memory_does_not_grow_with_the_cohort(tmp_path):
    small, large = _peak_mb_building(2, tmp_path, True), _peak_mb_building(8, tmp_path, True)
    assert large < small + 0.2, f"cached sampler: {small:.2f} MB for 2 subjects, {large:.2f} MB for 8"
    # the check can fail: the in-memory sampler grows by ~0.15 MB (HR, centres; torch allocated the skip) per subject
    memory_large = _peak_mb_building(8, tmp_path, False)
    assert memory_large > large + 0.6, f"in memory {memory_large:.2f} MB vs cached {large:.2f} MB (8 subjects)"


def test_dicom_discovery_keeps_no_headers_in_memory(make_dicom_series, tmp_path):
    """Ingest: discovered DICOM files hold their path and series UID only; headers are read again on demand."""
    import pydicom

    from pipeline.ingest import discover as disc
    from pipeline.ingest.dicom_series import group_series

    make_dicom_series("a", shape=(16, 16, 4), seed=0)
    make_dicom_series("b", shape=(16, 16, 3), seed=1)
    found = disc.discover(tmp_path)
    assert len(found.dicom) == 7
    assert not any(isinstance(v, pydicom.Dataset) for f in found.dicom for v in vars(f).values())
    assert sorted(len(s.files) for s in group_series(found.dicom)) == [3, 4]
    f = found.dicom[0]
    assert f.header.SeriesInstanceUID == f.series_uid and f.header is f.header  # cached while recently used
