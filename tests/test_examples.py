"""The examples run end to end (they are documentation; a broken one misleads)."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cluster_toy_datasets_example(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the example draws with matplotlib (test extra)")
    example = _load("cluster_toy_datasets")
    out = tmp_path / "figure.png"
    example.main(["--out", str(out)])
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    for name in ("DynamicRoutingClustering", "EMRoutingClustering", "KMeans", "GaussianMixture"):
        assert name in printed
    for data in ("blobs, varied spread", "anisotropic blobs", "iris (4-D)", "digits (64-D)"):
        assert data in printed


def test_classify_fashion_mnist_example(capsys):
    example = _load("classify_fashion_mnist")
    example.main([])
    printed = capsys.readouterr().out
    for name in (
        "capsnet-fashion-mnist",
        "matrix-capsnet-fashion-mnist",
        "Ankle boot",
        "most confused",
    ):
        assert name in printed


def test_fit_beyond_memory_example(tmp_path):
    # A process of its own: the example judges its budget by the process's peak resident
    # memory, which inside pytest would include whatever earlier tests allocated.
    args = ["--gib", "0.02", "--budget-mib", "1024", "--dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "fit_beyond_memory.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    printed = out.stdout
    assert "peak resident memory of this process" in printed
    distance = float(printed.split("and its true centre: ")[1].split()[0])
    assert distance < 0.1
    assert list(tmp_path.iterdir()) == []  # the data file is removed


def test_cluster_toy_datasets_seed_draws_other_blobs():
    example = _load("cluster_toy_datasets")
    a, b = example.datasets(0), example.datasets(1)
    assert not np.array_equal(a["blobs, varied spread"][0], b["blobs, varied spread"][0])
    np.testing.assert_array_equal(a["iris (4-D)"][0], b["iris (4-D)"][0])


def test_cluster_toy_datasets_without_matplotlib_fails_fast():
    """Without matplotlib the example says so and exits 1 before fitting anything."""
    code = (
        "import sys, runpy; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['x', '--out', 'unused.png']; runpy.run_path({str(EXAMPLES / 'cluster_toy_datasets.py')!r}, run_name='__main__')"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "matplotlib, which is not installed" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert time.perf_counter() - t0 < 30  # no fitting happened (the imports take a few s)
