"""The examples run end to end (they are documentation; a broken one misleads)."""

import importlib.util
from pathlib import Path

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


def test_fit_beyond_memory_example(tmp_path, capsys):
    example = _load("fit_beyond_memory")
    status = example.main(["--gib", "0.02", "--budget-mib", "2048", "--dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "peak resident memory of this process" in printed
    distance = float(printed.split("and its true centre: ")[1].split()[0])
    assert distance < 0.1
    assert list(tmp_path.iterdir()) == []  # the data file is removed
