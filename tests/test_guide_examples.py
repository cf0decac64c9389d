"""The user guide's figure scripts (examples/plot_*.py): each runs headless, writes its PNG and
draws what the guide says it draws; each refuses to start, with a clear message, without
matplotlib."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GUIDE = ROOT / "docs" / "guide"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("plot_*.py"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_example(tmp_path, capsys):
    """Run an example's main headless with --out; return (module, printed output, PNG path)."""
    pytest.importorskip("matplotlib", reason="the examples draw with matplotlib (test extra)")

    def run(name, *args):
        import matplotlib.pyplot as plt

        example = _load(name)
        out = tmp_path / f"{name}.png"
        open_before = set(plt.get_fignums())
        assert example.main([*args, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert out.stat().st_size > 10_000  # a drawn figure, not an empty canvas
        assert f"wrote {out}" in printed
        assert set(plt.get_fignums()) == open_before  # saved and closed: nothing left open
        return example, printed, out

    return run


def test_every_guide_script_is_tested_and_its_figure_is_in_the_guide():
    assert SCRIPTS == [
        "plot_confusion_matrix",
        "plot_em_routing",
        "plot_gmm_em_iterations",
        "plot_routing_couplings",
        "plot_squash",
    ]
    pages = "".join(p.read_text(encoding="utf-8") for p in GUIDE.glob("*.md"))
    for name in SCRIPTS:
        figure = name.removeprefix("plot_")
        assert f"](images/{figure}.png)" in pages, figure
        png = GUIDE / "images" / f"{figure}.png"
        assert 10_000 < png.stat().st_size < 150_000, png
        assert f"examples/{name}.py --out docs/guide/images/{figure}.png" in pages


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_is_a_sphinx_gallery_script(name):
    source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
    assert source.startswith('"""\n')
    title, underline = source.splitlines()[1:3]
    assert underline == "=" * len(title)
    assert f'TITLE = "{title}"' in source or f"TITLE = {title!r}" in source
    # sphinx-gallery runs the script without arguments, as __main__, with no __file__
    assert 'if __name__ == "__main__":' in source
    assert "sys.exit(main())" not in source  # a SystemExit(0) would stop the gallery build


def test_squash_example(run_example):
    example, printed, _ = run_example("plot_squash")
    assert "|s| = 1.00 gives |v| = 0.500" in printed
    result = example.compute()
    s, v = result["s"], result["v"]
    s_len, v_len = np.linalg.norm(s, axis=-1), np.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(v_len, s_len**2 / (1 + s_len**2), rtol=1e-6)
    np.testing.assert_allclose(v / v_len[:, None], s / s_len[:, None], rtol=1e-6)
    np.testing.assert_allclose(
        result["v_length"], result["s_length"] ** 2 / (1 + result["s_length"] ** 2), atol=1e-6
    )
    assert np.all(np.diff(result["v_length"]) > 0) and result["v_length"].max() < 1


def test_routing_couplings_example(run_example):
    example, printed, _ = run_example("plot_routing_couplings", "--n-iter", "4")
    result = example.compute(seed=0, n_iter=6)
    c = result["couplings"]  # (iteration, child, parent)
    assert c.shape == (6, 12, 4)
    np.testing.assert_allclose(c.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(c[0], 0.25)  # iteration 1: uniform
    # they concentrate: each child's largest coupling rises, on average, every iteration
    largest = c.max(axis=-1).mean(axis=-1)
    assert np.all(np.diff(largest) > 0.03), largest
    # onto the parent its group agrees on
    assert np.all(c[-1, :6].argmax(axis=-1) == 0) and np.all(c[-1, 6:10].argmax(axis=-1) == 2)
    assert np.all(c[-1, :10].max(axis=-1) > 0.8)
    lengths = result["lengths"]
    assert np.all(np.diff(lengths[:, [0, 2]], axis=0) > 0)  # agreed-on parents grow
    assert np.all(np.diff(lengths[:, [1, 3]], axis=0) < 0)  # the others shrink
    # what the script printed is what the figure draws (4 iterations requested)
    expected = " ".join(f"{m:.3f}" for m in largest[:4])
    assert expected in printed


def test_routing_couplings_seed_changes_the_votes():
    example = _load("plot_routing_couplings")
    assert not np.allclose(example.make_votes(0), example.make_votes(1))


def test_gmm_em_iterations_example(run_example):
    example, printed, _ = run_example("plot_gmm_em_iterations")
    result = example.compute()
    drawn, loglik, bounds = result["drawn"], result["loglik"], result["lower_bounds"]
    assert drawn[0] == 0 and len(loglik) == max(drawn) + 1 == len(bounds) + 1
    # EM never lowers the log-likelihood, and the panels drawn show it rising
    assert np.all(np.diff(loglik) >= -1e-10)
    assert np.all(np.diff(loglik[list(drawn)]) > 0)
    # lower_bound_ of iteration t is the log-likelihood of the parameters after t - 1
    np.testing.assert_allclose(bounds, loglik[:-1], rtol=1e-10)
    # the last panel has found the three clusters
    centres = np.array([(-3.0, 0.0), (2.5, 2.0), (2.0, -2.5)])
    found = result["means"][-1]
    distance = np.linalg.norm(found[:, None] - centres[None], axis=-1).min(axis=0)
    assert np.all(distance < 0.3), distance
    np.testing.assert_allclose(result["weights"].sum(axis=-1), 1.0)
    assert f"40 iterations: {loglik[40]:.4f}" in printed


def test_gmm_em_stepping_equals_one_fit():
    """The figure's warm-started single iterations are those of one fit with max_iter=t."""
    from caproute.mixture import GaussianMixture

    example = _load("plot_gmm_em_iterations")
    result = example.compute(drawn=(0, 6))
    gm = GaussianMixture(3, init_params="random", max_iter=6, tol=1e-12, random_state=0)
    with pytest.warns(Warning, match="Best performing initialization did not converge"):
        gm.fit(example.make_data(0))
    np.testing.assert_allclose(result["means"][-1], gm.means_, rtol=1e-10)
    np.testing.assert_allclose(result["covariances"][-1], gm.covariances_, rtol=1e-10)


def test_em_routing_example(run_example):
    example, printed, _ = run_example("plot_em_routing")
    result = example.compute()
    votes, R, pose, sigma = result["votes"], result["R"], result["pose"], result["sigma"]
    act = result["activations"]
    np.testing.assert_allclose(R.sum(axis=-1), 1.0, rtol=1e-12)
    # the Gaussians drawn are the M-step's: their means are the returned poses
    np.testing.assert_allclose((R[..., None] * votes).sum(0) / R.sum(0)[:, None], pose)
    # parent 0's votes agree most closely, then parent 1's; parent 2's not at all
    assert sigma[0].max() < sigma[1].min() and sigma[1].max() < sigma[2].min()
    assert act[-1, 0] > 0.99 and act[-1, 1] > 0.8 and act[-1, 2] < 0.2
    assert np.all(R[:18].argmax(axis=-1) == 0) and np.all(R[18:].argmax(axis=-1) == 1)
    assert np.all((act > 0) & (act < 1))
    for t, row in enumerate(act, start=1):
        assert f"{t}: " + " ".join(f"{a:.3f}" for a in row) in printed


@pytest.mark.parametrize(
    "model", ["capsnet-fashion-mnist", "matrix-capsnet-fashion-mnist"], ids=["capsnet", "matrix"]
)
def test_confusion_matrix_example(run_example, model):
    from caproute import models
    from caproute.datasets import load_fashion_mnist_subset

    n = 500 if model == "capsnet-fashion-mnist" else 120
    example, printed, _ = run_example(
        "plot_confusion_matrix", "--model", model, "--n-images", str(n)
    )
    result = example.compute(model, n)
    confusion = result["confusion"]
    images, labels = load_fashion_mnist_subset()
    accuracy = np.mean(models.load_pretrained(model).predict(images[:n]) == labels[:n])
    assert confusion.shape == (10, 10) and confusion.sum() == n
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels[:n], minlength=10))
    assert np.trace(confusion) / n == accuracy == result["accuracy"]
    if n == 500:  # the whole bundled subset: the accuracy the registry records
        assert accuracy == models.pretrained_info(model)["subset_accuracy"]
    assert f"accuracy {accuracy:.1%} on {n} bundled test images" in printed


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_without_matplotlib_exits_with_a_clear_message(name, tmp_path):
    out = tmp_path / "figure.png"
    code = (
        "import runpy, sys\n"
        "sys.modules['matplotlib'] = None  # `import matplotlib` raises ImportError\n"
        f"sys.argv = [{str(EXAMPLES / (name + '.py'))!r}, '--out', {str(out)!r}]\n"
        f"runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # nothing computed, nothing printed
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"{name}.py: this example draws with matplotlib, which is not installed; install it "
        """with `pip install "caproute[examples]"` (or `pip install matplotlib`).\n"""
    )
    assert not out.exists()


def test_example_usage_errors_exit_2(capsys):
    example = _load("plot_confusion_matrix")
    with pytest.raises(SystemExit) as exc:
        example.main(["--n-images", "0"])
    assert exc.value.code == 2
    assert "--n-images must be between 1 and 500; got 0" in capsys.readouterr().err
