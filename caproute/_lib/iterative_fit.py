"""The iterative-fit driver that GaussianMixture and the routing clusterers share.

It follows scikit-learn's ``BaseMixture.fit_predict`` step for step: ``n_init`` runs from one
``RandomState`` per fit call, each iterating until the change falls below ``tol`` or
``max_iter`` is reached; the run with the best score wins; ``warm_start`` continues from the
previous fit with a single run; ``max_iter=0`` only initialises; a ``ConvergenceWarning`` when
the best run did not converge; scikit-learn's verbose messages.

A subclass supplies the algorithm through these hooks (``fit_state`` is a dict of whatever the
subclass needs during one fit: the validated data, its namespace, the selected kernels; the
driver adds ``n_runs``, the number of runs of this fit):

- ``_start_fit(X, y, **fit_params) -> fit_state`` validates the data once;
- ``_initialize(fit_state, random_state) -> params``;
- ``_iterate(fit_state, params) -> (params, score)``: one iteration; ``score`` may be None when
  the algorithm has no per-iteration objective;
- ``_change(prev_params, params, prev_score, score) -> float`` (default: score difference) and
  ``_converged(change) -> bool`` (default: ``abs(change) < tol``);
- ``_effective_max_iter()`` (default: ``max_iter``) and ``_convergence_warning(change)``
  (the warning's message, or None for none);
- ``_run_score(fit_state, params, score) -> float``: what the best run is chosen by (default:
  the last score);
- ``_get_parameters()``, ``_set_parameters(params)`` (the warm start reads the former),
  ``_end_fit(fit_state, best)`` to set the remaining fitted attributes.
"""

from __future__ import annotations

import math
import warnings
from time import time

from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from .._config import get_config


class FitResult:
    """The best run of a fit: its parameters, iterations, score, history and convergence."""

    __slots__ = ("converged", "history", "n_iter", "params", "score")

    def __init__(self, params, n_iter, score, history, converged):
        self.params = params
        self.n_iter = n_iter
        self.score = score
        self.history = history
        self.converged = converged


class IterativeFit(BaseEstimator):
    """Private base class: the fit loop (see the module docstring for the hooks)."""

    #: what the verbose output calls the change per iteration
    _change_label = "ll change"

    # -- hooks with defaults -------------------------------------------------------------------
    def _change(self, prev_params, params, prev_score, score):
        return score - prev_score

    def _converged(self, change):
        return abs(change) < self.tol

    def _run_score(self, fit_state, params, score):
        return score

    def _effective_max_iter(self):
        return self.max_iter

    def _convergence_warning(self, change):
        """The ConvergenceWarning's message, or None for no warning."""
        return (
            "Best performing initialization did not converge. Try different init "
            "parameters, or increase max_iter, tol, or check for degenerate data."
        )

    def _backend(self):
        return get_config()["backend"] if self.backend is None else self.backend

    # -- the loop ------------------------------------------------------------------------------
    def _fit_loop(self, fit_state):
        """Run the fit; returns the best run's :class:`FitResult` (parameters already set)."""
        max_iter = self._effective_max_iter()
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        fit_state["n_runs"] = n_init
        random_state = check_random_state(self.random_state)
        best = None
        last_change = math.inf
        self.converged_ = False
        for init in range(n_init):
            self._verbose_init_beg(init)
            params = (
                self._initialize(fit_state, random_state) if do_init else self._get_parameters()
            )
            score = -math.inf if do_init else self._warm_score()
            history = []
            if max_iter == 0:
                best = FitResult(params, 0, -math.inf, [], False)
                continue
            converged = False
            change = math.inf
            for n_iter in range(1, max_iter + 1):
                prev_params, prev_score = params, score
                params, score = self._iterate(fit_state, params)
                if score is not None:
                    history.append(score)
                change = self._change(prev_params, params, prev_score, score)
                self._verbose_iter_end(n_iter, change)
                if self._converged(change):
                    converged = True
                    break
            run_score = self._run_score(fit_state, params, score)
            self._verbose_init_end(run_score, converged)
            if best is None or run_score > best.score or best.score == -math.inf:
                best = FitResult(params, n_iter, run_score, history, converged)
                self.converged_ = converged
                last_change = change
        message = self._convergence_warning(last_change)
        if not self.converged_ and max_iter > 0 and message is not None:
            warnings.warn(message, ConvergenceWarning, stacklevel=3)
        self._set_parameters(best.params)
        self.n_iter_ = best.n_iter
        return best

    def _warm_score(self):
        return getattr(self, "lower_bound_", -math.inf)

    # -- verbose output (scikit-learn's format) ------------------------------------------------
    def _verbose_init_beg(self, n_init):
        if self.verbose >= 1:
            print(f"Initialization {n_init}")
        if self.verbose >= 2:
            self._init_prev_time = time()
            self._iter_prev_time = self._init_prev_time

    def _verbose_iter_end(self, n_iter, change):
        if n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {n_iter}")
            elif self.verbose >= 2:
                cur = time()
                lapse = cur - self._iter_prev_time
                print(
                    f"  Iteration {n_iter}\t time lapse {lapse:.5f}s\t "
                    f"{self._change_label} {change:.5f}"
                )
                self._iter_prev_time = cur

    def _verbose_init_end(self, score, converged):
        msg = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {msg}.")
        elif self.verbose >= 2:
            t = time() - self._init_prev_time
            print(f"Initialization {msg}. time lapse {t:.5f}s\t lower bound {score:.5f}.")
