"""
EM routing: the parents' Gaussians and activations
==================================================

Thirty child capsules vote for three parent capsules. To draw them, the poses here are 2-D
(a matrix capsule's 4x4 pose has 16 entries, and EM routing treats them the same way). The
first 18 children's votes for parent 0 agree closely, the other 12 children's votes for
parent 1 agree less closely, and every other vote is scattered.

``caproute.em_routing`` fits one axis-aligned Gaussian per parent to the votes, weighting
each vote ``V_ij`` by the assignment ``R_ij`` of child ``i`` to parent ``j``. A parent's
activation grows with the mass it explains and with how tight its Gaussian is: the cost
``(beta_u + log sigma_j^h) sum_i R_ij`` falls as the votes agree. The three left panels
draw every child's vote for one parent, sized by its assignment, with the parent's Gaussian
(1 and 2 standard deviations, from the returned assignments) at its pose ``mu_j``; the
right panel draws the activations after 1 .. 5 iterations. ``beta_u``, ``beta_a`` and the
inverse temperature are chosen for this picture: a trained network learns ``beta_u`` and
``beta_a`` per parent.

Run it as ``python examples/plot_em_routing.py [--out em_routing.png] [--seed 0]``: without
``--out`` it shows the figure, or saves ``plot_em_routing.png`` next to this script where there
is no display. Needs matplotlib (``pip install "caproute[examples]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import caproute as cr

TITLE = "EM routing: the parents' Gaussians and activations"
OPTIONS = {"beta_u": 0.0, "beta_a": -20.0, "inverse_temperature": 0.1, "min_var": 5e-4}
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


def make_votes(seed=0, n_in=30, n_out=3):
    """Votes (1, n_in, n_out, 2): children 0-17 agree on parent 0, children 18- on parent 1."""
    rng = np.random.default_rng(seed)
    votes = rng.normal(size=(1, n_in, n_out, 2))
    votes[0, :18, 0] = [1.0, 1.0] + 0.08 * rng.normal(size=(18, 2))
    votes[0, 18:, 1] = [-1.0, 0.5] + 0.15 * rng.normal(size=(n_in - 18, 2))
    return votes


def compute(seed=0, n_iter=5):
    """Route for 1 .. n_iter iterations.

    Returns a dict: ``votes`` (n_in, n_out, 2); ``activations`` (n_iter, n_out), after
    t iterations in row t - 1; and after n_iter iterations: ``pose`` (n_out, 2), ``R``
    (n_in, n_out), the assignments the last M-step used, and ``sigma`` (n_out, 2), the
    parents' standard deviations computed from them as that M-step does.
    """
    votes = make_votes(seed)
    a_in = np.ones(votes.shape[:2])
    activations = []
    for t in range(1, n_iter + 1):
        pose, act, R = cr.em_routing(votes, a_in, n_iter=t, return_assignments=True, **OPTIONS)
        activations.append(act[0])
    # the M-step's variances: sum_i R_ij a_i (V_ij - mu_j)^2 / sum_i R_ij a_i + min_var
    Ra = (R * a_in[..., None])[0, :, :, None]
    var = (Ra * (votes[0] - pose[0]) ** 2).sum(axis=0) / Ra.sum(axis=0) + OPTIONS["min_var"]
    return {
        "votes": votes[0],
        "activations": np.stack(activations),
        "pose": pose[0],
        "R": R[0],
        "sigma": np.sqrt(var),
    }


def draw(result):
    """The figure: each parent's votes and Gaussian, then the activations over iterations."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    votes, R, pose, sigma = result["votes"], result["R"], result["pose"], result["sigma"]
    activations = result["activations"]
    n_in, n_out, _ = votes.shape
    fig, axes = plt.subplots(1, n_out + 1, figsize=(3.2 * (n_out + 1), 3.4), layout="constrained")
    groups = (
        (slice(0, 18), "tab:purple", "children 0-17"),
        (slice(18, n_in), "tab:brown", "children 18-29"),
    )
    lim = np.abs(votes).max() * 1.05
    for j, ax in enumerate(axes[:-1]):
        for children, colour, label in groups:
            v = votes[children, j]
            ax.scatter(
                v[:, 0], v[:, 1], s=4 + 60 * R[children, j], c=colour, alpha=0.7, label=label
            )
        for n_std in (1, 2):
            ax.add_patch(
                Ellipse(
                    pose[j],
                    2 * n_std * sigma[j, 0],
                    2 * n_std * sigma[j, 1],
                    fill=False,
                    color="k",
                    lw=1,
                )
            )
        ax.plot(*pose[j], "k+", ms=9)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
        ax.set_title(f"parent {j}: a = {activations[-1, j]:.2f}", fontsize=10)
        ax.set_xlabel(f"votes V_i{j} (size: R_i{j})", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[-1]
    iterations = np.arange(1, len(activations) + 1)
    for j in range(n_out):
        ax.plot(iterations, activations[:, j], marker="o", label=f"parent {j}")
    ax.set(xlabel="iterations", ylabel="activation a_j", ylim=(0, 1.02), xticks=iterations)
    ax.set_title("activations", fontsize=10)
    ax.legend(fontsize=8)
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the votes (default: 0)")
    parser.add_argument("--n-iter", type=int, default=5, help="iterations drawn (default: 5)")
    args = parser.parse_args(argv)
    if args.n_iter < 1:
        parser.error(f"--n-iter must be at least 1; got {args.n_iter}")
    problem = missing_matplotlib(parser.prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    use_agg_when_headless(args.out)
    result = compute(args.seed, args.n_iter)
    print("activations after each iteration (one column per parent):")
    for t, act in enumerate(result["activations"], start=1):
        print(f"{t}: " + " ".join(f"{a:.3f}" for a in act))
    path = show_or_save(draw(result), args.out, globals().get("__file__", sys.argv[0]))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
