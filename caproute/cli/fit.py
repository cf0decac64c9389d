"""``caproute cluster`` and ``caproute mixture``: fit the user's data from a CSV, .npy or
.parquet file."""

from __future__ import annotations

import csv
import os
import time
import warnings

import numpy as np

from ._common import (
    NPY_MAGIC,
    UsageError,
    WorkError,
    atomic_write,
    compiling_notice,
    input_file,
    load_npy,
    output_file,
    read_magic,
)

DATA_HELP = """\
FILE is a CSV file (numeric columns, separated by commas, semicolons or tabs;
a header row of column names is allowed), a .npy file holding an
(n_samples, n_features) array, or a .parquet file (needs pyarrow). --columns
picks columns by name or number (from 0). Missing values, text cells, NaN and
inf are refused with the row and column where they are.
"""

CLUSTER_DESCRIPTION = f"""\
Cluster points with dynamic routing (`dynamic`), EM routing (`em`) or a
Gaussian mixture (`gmm`).

{DATA_HELP}
Output: the number of points in each cluster, the iterations run and whether
the fit converged; -o writes one label per point (a CSV with a `label`
column, in the order of the rows of FILE).
"""

CLUSTER_EPILOG = """\
examples:
  caproute cluster points.csv --method gmm --n-clusters 3 -o labels.csv
  caproute cluster points.npy --method dynamic --n-clusters 5 --seed 1 --json
"""

MIXTURE_DESCRIPTION = f"""\
Fit a Gaussian mixture by EM (caproute.mixture.GaussianMixture, with
scikit-learn's interface and numbers).

{DATA_HELP}
Output: the weights and means of the components, the BIC and AIC (lower is
better), the log-likelihood, the iterations run and whether EM converged;
-o writes a JSON file with every fitted parameter (weights, means,
covariances, precisions) and those numbers.
"""

MIXTURE_EPILOG = """\
examples:
  caproute mixture points.csv --n-components 3
  caproute mixture points.csv --n-components 4 --covariance-type diag -o model.json
"""

METHODS = ("dynamic", "em", "gmm")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _common_options(p):
    from .._config import BACKENDS
    from ._common import non_negative_int, positive_int

    p.add_argument("file", metavar="FILE", help="CSV, .npy or .parquet file of points")
    p.add_argument(
        "--columns",
        metavar="COLS",
        help="comma-separated column names or numbers (from 0) to use (default: all)",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, metavar="N", help="random seed (default 0)"
    )
    p.add_argument(
        "--max-iter",
        type=positive_int,
        default=100,
        metavar="N",
        help="maximum iterations (default 100)",
    )
    p.add_argument(
        "--n-init",
        type=positive_int,
        default=1,
        metavar="N",
        help="initialisations; the best fit is kept (default 1)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="where to run")


def add_parsers(sub, parents):
    from ._common import positive_int

    c = sub.add_parser(
        "cluster",
        parents=parents,
        help="cluster the points of a CSV, .npy or .parquet file",
        description=CLUSTER_DESCRIPTION,
        epilog=CLUSTER_EPILOG,
    )
    _common_options(c)
    c.add_argument("--method", choices=METHODS, required=True, help="the clustering algorithm")
    c.add_argument(
        "--n-clusters", type=positive_int, required=True, metavar="K", help="number of clusters"
    )
    c.add_argument("-o", "--output", metavar="FILE", help="write one label per point (CSV)")
    c.set_defaults(func=run_cluster)
    m = sub.add_parser(
        "mixture",
        parents=parents,
        help="fit a Gaussian mixture to a CSV, .npy or .parquet file",
        description=MIXTURE_DESCRIPTION,
        epilog=MIXTURE_EPILOG,
    )
    _common_options(m)
    m.add_argument(
        "--n-components",
        type=positive_int,
        required=True,
        metavar="K",
        help="number of mixture components",
    )
    m.add_argument(
        "--covariance-type",
        choices=COVARIANCE_TYPES,
        default="full",
        help="each component's own full matrix, one shared (tied) matrix, its own diagonal, "
        "or its own single variance (default full)",
    )
    m.add_argument("-o", "--output", metavar="FILE", help="write the fitted mixture (JSON)")
    m.set_defaults(func=run_mixture)


# ------------------------------------------------------------------------------------ data
def read_points(path, columns=None):
    """(X, column names) from a CSV, .npy or .parquet file: float64, finite, 2-D."""
    path = input_file(path, what="data file")
    head = read_magic(path)
    lower = path.lower()
    if head.startswith(NPY_MAGIC) or lower.endswith(".npy"):
        X, names = _from_npy(path)
        picked = _resolve(columns, names, path)
        X, names = X[:, picked], [names[j] for j in picked]
    elif head.startswith(b"PAR1") or lower.endswith((".parquet", ".pq")):
        X, names = _from_parquet(path, columns)
    elif lower.endswith((".npz", ".h5", ".hdf5", ".xlsx", ".xls", ".json", ".pkl", ".pickle")):
        raise WorkError(
            f"data file {path!r}: {os.path.splitext(path)[1]} files are not read; give a CSV, "
            ".npy or .parquet file."
        )
    else:
        X, names = _from_csv(path, columns)
    if X.shape[0] == 0:
        raise WorkError(f"data file {path!r} holds no rows of data.")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise WorkError(
            f"data file {path!r}: row {row + 1}, column {names[col]!r} is {X[row, col]}; "
            "caproute needs finite numbers (remove or fill the missing values first)."
        )
    return X, names


def _from_npy(path):
    arr = load_npy(path, what="data file")
    if arr.dtype.names is not None:
        names = list(arr.dtype.names)
        try:
            arr = np.stack([arr[n].astype(np.float64) for n in names], axis=1)
        except (TypeError, ValueError):
            raise WorkError(f"data file {path!r}: its fields must all be numeric.") from None
        return arr, names
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise WorkError(
            f"data file {path!r} holds an array of shape {tuple(arr.shape)}; expected "
            "(n_samples, n_features)."
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise WorkError(f"data file {path!r} holds {arr.dtype} values; expected numbers.")
    return arr.astype(np.float64), [str(i) for i in range(arr.shape[1])]


def _from_parquet(path, columns):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise WorkError(
            f"reading the .parquet file {path!r} needs pyarrow: pip install pyarrow (or save "
            "the data as CSV or .npy)."
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise WorkError(f"data file {path!r} could not be read as parquet: {exc}") from None
    all_names = [str(n) for n in table.column_names]
    names, cols = [], []
    for j in _resolve(columns, all_names, path):
        col = table.column(j)
        values = col.to_numpy(zero_copy_only=False)
        if values.dtype == np.bool_ or not (
            np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
        ):
            raise WorkError(
                f"data file {path!r}: column {all_names[j]!r} holds {col.type} values, not "
                "numbers; pick the numeric columns with --columns."
            )
        names.append(all_names[j])
        cols.append(values.astype(np.float64))
    if not cols:
        raise WorkError(f"data file {path!r} has no columns.")
    return np.stack(cols, axis=1), names


def _from_csv(path, columns):
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise WorkError(
            f"data file {path!r} is not a text (UTF-8) CSV file, nor a .npy or .parquet file."
        ) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise WorkError(f"data file {path!r} is empty.")
    first = next(line for line in lines if line.strip())
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    if delimiter is None:  # whitespace-separated, or a single column
        rows = [line.split() for line in lines]
    else:
        rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delimiter)]
    numbered = [(i, r) for i, r in enumerate(rows) if any(c for c in r)]
    header = bool(numbered) and not all(_is_number(c) for c in numbered[0][1])
    width = len(numbered[0][1])
    names = [c or str(j) for j, c in enumerate(numbered[0][1])] if header else None
    names = names or [str(j) for j in range(width)]
    if header:
        numbered = numbered[1:]
    picked = _resolve(columns, names, path)
    X = np.empty((len(numbered), len(picked)), np.float64)
    for r, (i, row) in enumerate(numbered):
        if len(row) != width:
            raise WorkError(
                f"data file {path!r}, line {i + 1}: {len(row)} values, but the "
                f"{'header' if header else 'first row'} has {width}."
            )
        for k, j in enumerate(picked):
            cell = row[j]
            try:
                X[r, k] = float(cell)
            except ValueError:
                what = "is empty" if not cell else f"holds {cell!r}, not a number"
                raise WorkError(
                    f"data file {path!r}, line {i + 1}, column {names[j]!r} {what}; pick "
                    "the numeric columns with --columns, and remove or fill missing values."
                ) from None
    return X, [names[j] for j in picked]


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _resolve(columns, names, path):
    """The indices of the ``--columns`` (names or numbers from 0); all when None."""
    if columns is None:
        return list(range(len(names)))
    picked = []
    for item in (c.strip() for c in columns.split(",")):
        if item in names:
            picked.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            picked.append(int(item))
        else:
            raise UsageError(
                f"--columns: {item!r} is not a column of {path!r}; its columns are {names} "
                f"(or numbers 0 to {len(names) - 1})."
            )
    return picked


# ------------------------------------------------------------------------------- progress
def _tracked(cls, bar):
    """``cls`` whose every iteration advances ``bar`` (through the fit driver's per-iteration
    hook, which prints scikit-learn's verbose lines)."""

    class Tracked(cls):
        def _verbose_iter_end(self, n_iter, change):
            bar.update(1)
            return super()._verbose_iter_end(n_iter, change)

    Tracked.__name__ = cls.__name__
    Tracked.__qualname__ = cls.__qualname__
    return Tracked


def _fit(estimator_cls, params, X, out, desc):
    """Fit with a progress bar over the iterations; warnings reported on stderr."""
    with out.bar(total=params["max_iter"] * params["n_init"], desc=desc, unit=" it") as bar:
        est = _tracked(estimator_cls, bar)(**params)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            with compiling_notice(out):
                est.fit(X)
            seconds = time.perf_counter() - t0
        bar.total = bar.n  # converged early: the bar ends full
        bar.refresh()
    messages = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in messages:
            messages.append(text)
            out.warning(text)
    return est, seconds, messages


# ---------------------------------------------------------------------------------- cluster
def run_cluster(args, out):
    from .._backend import to_numpy
    from ..cluster import DynamicRoutingClustering, EMRoutingClustering
    from ..mixture import GaussianMixture

    if args.output is not None:
        output_file(args.output)
    with out.waiting(f"reading {args.file}"):
        X, names = read_points(args.file, args.columns)
    common = {
        "max_iter": args.max_iter,
        "n_init": args.n_init,
        "random_state": args.seed,
        "backend": args.backend,
    }
    if args.method == "gmm":
        cls, params = GaussianMixture, {"n_components": args.n_clusters, **common}
    else:
        cls = DynamicRoutingClustering if args.method == "dynamic" else EMRoutingClustering
        params = {"n_clusters": args.n_clusters, **common}
    _check_k(X, args.n_clusters, "--n-clusters", args.file)
    out.notice(
        f"caproute cluster: {X.shape[0]} points, {X.shape[1]} features, method "
        f"{args.method!r}, {args.n_clusters} clusters"
    )
    est, seconds, messages = _fit(cls, params, X, out, f"fitting ({args.method})")
    labels = (to_numpy(est.predict(X)) if args.method == "gmm" else to_numpy(est.labels_)).astype(
        np.int64
    )
    sizes = np.bincount(labels, minlength=args.n_clusters)
    doc = {
        "file": args.file,
        "method": args.method,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "columns": names,
        "n_clusters": args.n_clusters,
        "cluster_sizes": sizes,
        "n_iter": int(est.n_iter_),
        "converged": bool(est.converged_),
        "seconds": seconds,
        "warnings": messages,
        "output": args.output,
    }
    if args.method != "gmm":
        doc["activations"] = to_numpy(est.activations_)
    else:
        doc["bic"], doc["aic"] = float(est.bic(X)), float(est.aic(X))
    if args.output is not None:
        with atomic_write(args.output, "w", newline="", encoding="utf-8") as f:
            f.write("label\n")
            f.write("".join(f"{v}\n" for v in labels))
    out.print(
        f"{args.method} clustering of {X.shape[0]} points ({X.shape[1]} features) into "
        f"{args.n_clusters} clusters: {est.n_iter_} iterations, "
        f"{'converged' if est.converged_ else 'NOT converged'}, {seconds:.2f} s"
    )
    out.print()
    extra = "activation" if args.method != "gmm" else ""
    out.print(f"{'cluster':>7}  {'points':>8}  {'share':>7}" + (f"  {extra:>10}" if extra else ""))
    for j, size in enumerate(sizes):
        line = f"{j:>7}  {int(size):>8}  {size / max(1, X.shape[0]):>7.1%}"
        if extra:
            line += f"  {float(doc['activations'][j]):>10.3f}"
        out.print(line)
    if args.method == "gmm":
        out.print(f"\nBIC {doc['bic']:.6g}   AIC {doc['aic']:.6g}")
    if args.output is not None:
        out.print(f"\nwrote {X.shape[0]} labels to {args.output}")
    out.document(doc)
    return 0


def _check_k(X, k, option, path):
    if k > X.shape[0]:
        raise WorkError(
            f"{option} {k} is more than the {X.shape[0]} points of {path!r}; ask for at most "
            f"{X.shape[0]}."
        )


# ---------------------------------------------------------------------------------- mixture
def run_mixture(args, out):
    from .. import __version__
    from .._backend import to_numpy
    from ..mixture import GaussianMixture

    if args.output is not None:
        output_file(args.output)
    with out.waiting(f"reading {args.file}"):
        X, names = read_points(args.file, args.columns)
    _check_k(X, args.n_components, "--n-components", args.file)
    out.notice(
        f"caproute mixture: {X.shape[0]} points, {X.shape[1]} features, {args.n_components} "
        f"components, covariance {args.covariance_type!r}"
    )
    params = {
        "n_components": args.n_components,
        "covariance_type": args.covariance_type,
        "max_iter": args.max_iter,
        "n_init": args.n_init,
        "random_state": args.seed,
        "backend": args.backend,
    }
    gm, seconds, messages = _fit(GaussianMixture, params, X, out, "fitting (EM)")
    mean_ll = float(gm.score(X))
    doc = {
        "format": "caproute-gaussian-mixture",
        "version": 1,
        "caproute_version": __version__,
        "file": args.file,
        "columns": names,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "n_components": args.n_components,
        "covariance_type": args.covariance_type,
        "seed": args.seed,
        "weights": to_numpy(gm.weights_),
        "means": to_numpy(gm.means_),
        "covariances": to_numpy(gm.covariances_),
        "precisions": to_numpy(gm.precisions_),
        "precisions_cholesky": to_numpy(gm.precisions_cholesky_),
        "bic": float(gm.bic(X)),
        "aic": float(gm.aic(X)),
        "log_likelihood": mean_ll * X.shape[0],
        "mean_log_likelihood": mean_ll,
        "lower_bound": float(gm.lower_bound_),
        "n_iter": int(gm.n_iter_),
        "converged": bool(gm.converged_),
        "seconds": seconds,
        "warnings": messages,
    }
    if args.output is not None:
        import json

        from ._common import to_json

        with atomic_write(args.output, "w", encoding="utf-8") as f:
            json.dump(to_json(doc), f, indent=2, allow_nan=False)
            f.write("\n")
    out.print(
        f"Gaussian mixture of {args.n_components} components ({args.covariance_type} "
        f"covariances) fitted to {X.shape[0]} points, {X.shape[1]} features"
    )
    out.print()
    shown = names[:8]
    width = max(9, *(len(n) for n in shown))
    out.print(
        f"{'component':>9}  {'weight':>7}  "
        + "  ".join(f"{'mean ' + n:>{width + 5}}" for n in shown)
        + ("  ..." if len(names) > len(shown) else "")
    )
    for j in range(args.n_components):
        out.print(
            f"{j:>9}  {float(doc['weights'][j]):>7.4f}  "
            + "  ".join(f"{float(v):>{width + 5}.5g}" for v in doc["means"][j][: len(shown)])
        )
    out.print()
    out.print(f"BIC                  {doc['bic']:.6g}")
    out.print(f"AIC                  {doc['aic']:.6g}")
    out.print(f"log-likelihood       {doc['log_likelihood']:.6g} (mean {mean_ll:.6g} per point)")
    out.print(f"iterations           {doc['n_iter']}")
    out.print(f"converged            {'yes' if doc['converged'] else 'NO'}")
    if args.output is not None:
        out.print(f"\nwrote the fitted mixture to {args.output}")
    doc["output"] = args.output
    out.document(doc)
    return 0
