"""GaussianMixture on data read chunk by chunk: NumPy memmaps, Zarr arrays, lists of chunks.

Every pass reads the chunks in order, so the fit must give the in-memory fit's numbers (the
sums are added in another order: float64 rtol 1e-8), for every initialisation and covariance
type, and every method must accept the same inputs.
"""

import os
import warnings

import numpy as np
import pytest

from caproute.mixture import GaussianMixture
from caproute.mixture import gaussian_mixture as gm_module

COV_TYPES = ["full", "tied", "diag", "spherical"]
INITS = ["kmeans", "k-means++", "random", "random_from_data"]


def _blobs(n=2400, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 6.0]])
    X = np.vstack([rng.randn(n // 3, 3) + c for c in centres])
    rng.shuffle(X)
    return X.astype(dtype)


@pytest.fixture(scope="module")
def data():
    return _blobs()


@pytest.fixture(scope="module")
def on_disk(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ooc")
    path = os.fspath(folder / "x.npy")
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=data.dtype, shape=data.shape)
    mm[:] = data
    mm.flush()
    del mm
    raw = os.fspath(folder / "x.raw")
    data.tofile(raw)
    return {"npy": path, "raw": raw, "folder": folder}


def _sources(data, on_disk):
    zarr = pytest.importorskip("zarr", reason="the Zarr cases need zarr (the test extra)")
    z = zarr.create_array(
        store=os.fspath(on_disk["folder"] / "x.zarr"),
        shape=data.shape,
        chunks=(500, 3),
        dtype="f8",
        overwrite=True,
    )
    z[:] = data
    return {
        "npy-memmap": np.load(on_disk["npy"], mmap_mode="r"),
        "raw-memmap": np.memmap(on_disk["raw"], dtype=data.dtype, mode="r", shape=data.shape),
        "zarr": z,
        "list": [data[:700], data[700:1800], data[1800:]],
    }


def _fit(X, sample_weight=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short fits may not converge: same for both
        gm = GaussianMixture(3, random_state=1, tol=1e-10, max_iter=15, **kw)
        return gm.fit(X, sample_weight=sample_weight)


def _assert_same_fit(got, ref, rtol=1e-8):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        a, b = getattr(got, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)
    assert got.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(got.lower_bound_, ref.lower_bound_, rtol=rtol)


@pytest.mark.parametrize("init_params", INITS)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_fit_from_disk_equals_in_memory(data, on_disk, covariance_type, init_params):
    kw = {"covariance_type": covariance_type, "init_params": init_params}
    ref = _fit(data, **kw)
    for name, X in _sources(data, on_disk).items():
        got = _fit(X, chunk_size=333, **kw)
        _assert_same_fit(got, ref), name


def test_every_method_accepts_chunked_input(data, on_disk):
    gm = _fit(data)
    for name, X in _sources(data, on_disk).items():
        np.testing.assert_array_equal(gm.predict(X), gm.predict(data), err_msg=name)
        np.testing.assert_allclose(gm.predict_proba(X), gm.predict_proba(data), rtol=1e-12)
        np.testing.assert_allclose(gm.score_samples(X), gm.score_samples(data), rtol=1e-12)
        np.testing.assert_allclose(gm.score(X), gm.score(data), rtol=1e-12)
        np.testing.assert_allclose(gm.bic(X), gm.bic(data), rtol=1e-12)
        np.testing.assert_allclose(gm.aic(X), gm.aic(data), rtol=1e-12)
    labels = GaussianMixture(3, random_state=1).fit_predict(_sources(data, on_disk)["zarr"])
    np.testing.assert_array_equal(labels, GaussianMixture(3, random_state=1).fit_predict(data))


def test_memmap_is_read_with_file_reads_not_mapped(data, on_disk):
    """A memmap opened on a file is read with readinto (the page cache holds the data, not
    the process); a slice of one keeps its parent's offset, so it is read by slicing."""
    from caproute.mixture._sources import _MemmapReader, _SliceReader, chunk_reader

    mm = np.load(on_disk["npy"], mmap_mode="r")
    assert isinstance(chunk_reader(mm, 100, "GaussianMixture"), _MemmapReader)
    part = mm[100:]
    reader = chunk_reader(part, 100, "GaussianMixture")
    assert isinstance(reader, _SliceReader)
    np.testing.assert_array_equal(np.vstack([c for _, c in reader.read()]), data[100:])
    # the reader reuses one buffer: a chunk is valid until the next one is read
    full = np.vstack([c.copy() for _, c in chunk_reader(mm, 97, "GaussianMixture").read()])
    np.testing.assert_array_equal(full, data)


def test_float32_file_stays_float32(data, tmp_path):
    X32 = data.astype(np.float32)
    path = os.fspath(tmp_path / "x32.npy")
    np.save(path, X32)
    got = _fit(np.load(path, mmap_mode="r"), chunk_size=500)
    ref = _fit(X32)
    assert got.means_.dtype == np.float32
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-4)


def test_integer_chunks_become_float64(data):
    chunks = [
        np.round(data[:1200] * 10).astype(np.int32),
        np.round(data[1200:] * 10).astype(np.int32),
    ]
    got = _fit(chunks)
    ref = _fit(np.round(data * 10).astype(np.int32))
    assert got.means_.dtype == np.float64
    _assert_same_fit(got, ref)


def test_kmeans_init_on_a_sample_above_the_limit(data, monkeypatch):
    """Above KMEANS_SAMPLE_ROWS points read in chunks, KMeans runs on a random sample and
    every point takes its nearest centre; the fit still finds the three blobs."""
    monkeypatch.setattr(gm_module, "KMEANS_SAMPLE_ROWS", 300)
    chunks = [data[:1000], data[1000:]]
    got = _fit(chunks)
    ref = _fit(data)
    order = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(got.means_), order(ref.means_), rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(gm_module, "KMEANS_SAMPLE_ROWS", 10**9)
    _assert_same_fit(_fit(chunks), ref)


# ----------------------------------------------------------------------------- bad input
def test_a_generator_is_refused(data):
    with pytest.raises(TypeError, match="one-shot iterator"):
        GaussianMixture(2).fit(c for c in [data[:100], data[100:]])


def test_chunks_with_other_widths_are_refused(data):
    with pytest.raises(ValueError, match=r"every chunk must have 3 features.*chunk 1"):
        GaussianMixture(2).fit([data[:100], data[100:200, :2]])


def test_nan_in_a_later_chunk_names_the_chunk(data):
    bad = data[1000:].copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN(.|\n)*chunk 1"):
        GaussianMixture(2).fit([data[:1000], bad])
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match=r"Input X contains infinity(.|\n)*chunk 1"):
        GaussianMixture(2).fit([data[:1000], bad])


def test_an_iterable_that_changes_between_passes_is_refused(data):
    class Shrinking:
        def __init__(self):
            self.calls = 0

        def __iter__(self):
            self.calls += 1
            return iter([data[:1000], data[1000 : 2000 - self.calls]])

    with pytest.raises(ValueError, match="different chunks on a second pass"):
        GaussianMixture(2, random_state=0).fit(Shrinking())


def test_predict_checks_the_number_of_features(data):
    gm = _fit(data)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict([data[:10, :2], data[10:20, :2]])


def test_too_few_points_and_sample_weight_length(data):
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit([data[:2], data[2:4]])
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(2400,\)!"):
        GaussianMixture(2).fit([data[:1200], data[1200:]], sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        GaussianMixture(2).fit([data[:1200], data[1200:]], sample_weight=-np.ones(2400))


@pytest.mark.parametrize("init_params", INITS)
def test_empty_chunks_are_skipped(data, init_params):
    w = np.random.RandomState(0).randint(1, 3, size=data.shape[0]).astype(float)
    chunks = [data[:100], data[:0], data[100:2000], data[:0], data[2000:]]
    for weights in (None, w):
        got = _fit(chunks, init_params=init_params, sample_weight=weights)
        ref = _fit(data, init_params=init_params, sample_weight=weights)
        _assert_same_fit(got, ref)
