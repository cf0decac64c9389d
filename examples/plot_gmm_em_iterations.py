"""
Gaussian mixtures: EM step by step
==================================

Three elongated clusters of points, and a three-component Gaussian mixture with full
covariances fitted to them by EM, one iteration at a time.
``caproute.mixture.GaussianMixture`` starts from random responsibilities
(``init_params="random"``), so the three components begin as near copies of one broad
Gaussian over all the data; with ``warm_start=True`` each ``fit`` continues from where the last
one stopped, ``max_iter=0`` gives the starting point and ``max_iter=1`` one EM iteration
(an E-step, the responsibilities; an M-step, new weights, means and covariances).

Each panel draws the components' 1- and 2-standard-deviation ellipses over the data after the
iterations in its title, with the mean log-likelihood of the data under that mixture. The last
panel draws that log-likelihood after every iteration: EM never lowers it.

Run it as ``python examples/plot_gmm_em_iterations.py [--out em.png] [--seed 0]``: without
``--out`` it shows the figure, or saves ``plot_gmm_em_iterations.png`` next to this script
where there is no display. Needs matplotlib (``pip install "caproute[examples]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from caproute.mixture import GaussianMixture

TITLE = "Gaussian mixtures: EM step by step"
DRAWN = (0, 4, 8, 11, 14, 20, 40)
MATPLOTLIB_MISSING = (
    "{name}: this example draws with matplotlib, which is not installed; "
    'install it with `pip install "caproute[examples]"` (or `pip install matplotlib`).'
)


def missing_matplotlib(name):
    """The message to print when matplotlib cannot be imported, or None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MATPLOTLIB_MISSING.format(name=name)
    return None


def make_data(seed=0, n_per_cluster=150):
    """Three elongated Gaussian clusters in 2-D: (3 * n_per_cluster, 2)."""
    rng = np.random.default_rng(seed)
    centres = [(-3.0, 0.0), (2.5, 2.0), (2.0, -2.5)]
    covariances = [
        [[1.2, 0.8], [0.8, 1.0]],
        [[0.3, 0.0], [0.0, 0.3]],
        [[1.5, -0.6], [-0.6, 0.5]],
    ]
    return np.concatenate(
        [
            rng.multivariate_normal(c, S, size=n_per_cluster)
            for c, S in zip(centres, covariances, strict=True)
        ]
    )


def compute(seed=0, drawn=DRAWN):
    """Step EM one iteration at a time up to ``max(drawn)``.

    Returns a dict: ``X``; ``drawn`` (the iteration counts drawn); ``means``, ``covariances``
    and ``weights`` after each of them; ``loglik``, the mean log-likelihood of X after
    0 .. max(drawn) iterations (``GaussianMixture.score``); and ``lower_bounds``, the
    ``lower_bound_`` that iterations 1 .. max(drawn) recorded.
    """
    X = make_data(seed)
    gm = GaussianMixture(
        n_components=3,
        covariance_type="full",
        init_params="random",
        max_iter=0,
        tol=1e-12,
        warm_start=True,
        random_state=seed,
    )
    params = {"means": [], "covariances": [], "weights": []}
    loglik, lower_bounds = [], []
    with warnings.catch_warnings():
        # every one-iteration fit stops before it converges, on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)  # max_iter=0: the initial parameters only
        gm.set_params(max_iter=1)
        for t in range(max(drawn) + 1):
            if t > 0:
                gm.fit(X)  # warm start: one more EM iteration
                lower_bounds.append(gm.lower_bound_)
            loglik.append(gm.score(X))
            if t in drawn:
                params["means"].append(gm.means_.copy())
                params["covariances"].append(gm.covariances_.copy())
                params["weights"].append(gm.weights_.copy())
    return {
        "X": X,
        "drawn": tuple(drawn),
        **{k: np.stack(v) for k, v in params.items()},
        "loglik": np.array(loglik),
        "lower_bounds": np.array(lower_bounds),
    }


def ellipse_axes(covariance, n_std):
    """Width, height and angle (degrees) of the ellipse at ``n_std`` standard deviations."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    width, height = 2.0 * n_std * np.sqrt(eigenvalues[::-1])
    return width, height, angle


def draw(result):
    """The figure: one panel per drawn iteration, then the log-likelihood over iterations."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    X, drawn = result["X"], result["drawn"]
    n_cols = 4
    n_rows = -(-(len(drawn) + 1) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.8 * n_cols, 2.5 * n_rows), layout="constrained"
    )
    axes = axes.ravel()
    colours = ("tab:blue", "tab:orange", "tab:green")
    pad = 0.15 * (X.max(axis=0) - X.min(axis=0))
    xlim, ylim = zip(X.min(axis=0) - pad, X.max(axis=0) + pad, strict=True)
    for panel, t in enumerate(drawn):
        ax = axes[panel]
        ax.scatter(X[:, 0], X[:, 1], s=2, c="0.6", linewidths=0)
        for k, colour in enumerate(colours):
            mean = result["means"][panel, k]
            for n_std in (1, 2):
                width, height, angle = ellipse_axes(result["covariances"][panel, k], n_std)
                ax.add_patch(
                    Ellipse(mean, width, height, angle=angle, fill=False, color=colour, lw=1.2)
                )
            ax.plot(*mean, "+", c=colour, ms=8)
        ax.set_title(f"{t} iterations: {result['loglik'][t]:.3f}", fontsize=9)
        ax.set(xticks=[], yticks=[], aspect="equal", xlim=xlim, ylim=ylim)
    ax = axes[len(drawn)]
    ax.plot(result["loglik"], c="k")
    ax.plot(drawn, result["loglik"][list(drawn)], "o", c="tab:red", ms=4)
    ax.set(xlabel="EM iterations", ylabel="mean log-likelihood")
    ax.set_title("never decreases", fontsize=9)
    for ax in axes[len(drawn) + 1 :]:
        ax.set_axis_off()
    return fig


def show_or_save(fig, out, script):
    """Save to ``out``; else leave it to sphinx-gallery, show it, or save next to the script."""
    import matplotlib
    import matplotlib.pyplot as plt

    if out is None and "sphinx_gallery" in sys.modules:
        return None  # sphinx-gallery collects the open figure
    if out is None and matplotlib.get_backend().lower() != "agg":
        plt.show()
        return None
    path = Path(out) if out is not None else Path(script).with_suffix(".png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def use_agg_when_headless(out):
    """Draw with Agg when saving to a file or when there is no display."""
    import matplotlib

    no_display = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if out is not None or no_display:
        matplotlib.use("Agg")


def main(argv=None):
    """Run the example; return its exit status (0 done, 1 matplotlib missing)."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--out", help="write the figure to this PNG file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the start")
    args = parser.parse_args(argv)
    problem = missing_matplotlib(parser.prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    use_agg_when_headless(args.out)
    result = compute(args.seed)
    print(
        "mean log-likelihood after "
        + ", ".join(f"{t} iterations: {result['loglik'][t]:.4f}" for t in result["drawn"])
    )
    path = show_or_save(draw(result), args.out, globals().get("__file__", sys.argv[0]))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
