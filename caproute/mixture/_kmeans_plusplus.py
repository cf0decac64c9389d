"""k-means++ seeding over chunks, in flat memory: scikit-learn's ``kmeans_plusplus`` point for
point without anything of size n_samples.

scikit-learn (``sklearn.cluster._kmeans._kmeans_plusplus``, 1.9) keeps ``closest_dist_sq``,
one number per point. Here the points are reachable only through a callable that yields
chunks, so each pass recomputes every point's closest squared distance from the centres
chosen so far (the kernels' docstring says why that is exact) and keeps only what the
algorithm reads from it:

- First centre: ``random_state.choice(n, p=w / w.sum())`` (scikit-learn passes ``p`` even
  unweighted, with ``w`` all ones of X's dtype). ``choice`` converts ``p`` to float64, takes
  its sequential ``cumsum``, divides it by its last element and returns the first index whose
  quotient exceeds one ``random_sample()`` (searchsorted, side right: a zero weight is never
  chosen). ``w.sum()`` is NumPy's pairwise sum, reproduced exactly over the chunks
  (:func:`_pairwise_sum`); the cumsum is carried from chunk to chunk (a sequential sum
  carried is the same sum).
- Each later centre: ``rand_vals = random_state.uniform(size=L) * current_pot``; the first
  index whose ``np.cumsum(w * closest_dist_sq)`` (plain cumsum in 1.9, not
  ``stable_cumsum``; in X's dtype, compared in float64) reaches each value, clipped to n - 1
  as scikit-learn does; then each candidate's potential and the first argmin.

Passes over the chunks: unweighted, 2 * n_clusters: one (stopping at it) for the first
centre's row, one for its potential, then two per later centre, a search that copies the
candidates' rows as it finds them (stopping once all are found) and the candidates'
potentials. Weighted, two more: the first centre takes the weights' sum, ``cdf[-1]`` and its
search (which copies the row).

The potentials are sums over chunks in float64 where scikit-learn takes one BLAS dot
product: they differ from scikit-learn's in the last bits (for float32 data, where
scikit-learn sums in float32, by a float32 rounding or two), so a draw that falls that close
to a point's boundary in the cumulative sum can go the other way; so can two candidates
whose potentials tie in exact arithmetic, and the draws once every potential is rounding
noise (more clusters than distinct points, with coordinates that do not round exactly).
"""

from __future__ import annotations

import numpy as np

_PW_BLOCK = 128  # NumPy's pairwise-summation block (PW_BLOCKSIZE)
_ONES_CHUNK = 65536  # chunk of the implicit unit weights when unweighted


def kmeans_plusplus_indices(
    chunks,
    n_samples,
    n_features,
    n_clusters,
    *,
    random_state,
    weighted,
    dtype,
    n_local_trials=None,
):
    """Indices and rows of scikit-learn's k-means++ seeds, over chunks, in flat memory.

    ``chunks()``: a callable returning a fresh iterator of ``(start, X_chunk, w_chunk)`` with
    X_chunk a C-contiguous NumPy array (m, n_features) of dtype ``dtype`` covering rows
    start..start+m in order, and w_chunk a NumPy float array (m,) or None when ``weighted`` is
    False (then every weight is 1, as scikit-learn's default). An iterator may be abandoned
    before its end (a pass stops once it has found what it looks for). ``random_state``: a
    NumPy RandomState, consumed exactly as ``sklearn.cluster.kmeans_plusplus`` consumes it.
    Returns (indices int64 array (n_clusters,), centers array (n_clusters, n_features) of
    ``dtype``): the same as ``kmeans_plusplus(X, n_clusters, sample_weight=w,
    random_state=random_state, n_local_trials=n_local_trials)`` returns, reversed.
    """
    from ..kernels.numba import kmeans_plusplus as kern

    dtype = np.dtype(dtype)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    data = _Data(chunks, n_samples, weighted, dtype)

    indices = np.full(n_clusters, -1, dtype=np.int64)
    centers = np.empty((n_clusters, n_features), dtype=dtype)

    indices[0], centers[0] = _first_centre(data, random_state, kern)
    cn = np.empty(n_clusters)
    cn[:1] = kern.squared_norms(centers[:1])
    current_pot = data.potentials(kern, centers, cn, 0, centers[:1], cn[:1])[0]

    for c in range(1, n_clusters):
        # scikit-learn: uniform(size=L) * current_pot, current_pot a (1,) array of X's dtype
        rand_vals = random_state.uniform(size=n_local_trials) * np.asarray([current_pot])
        order = np.argsort(rand_vals, kind="stable")
        ids, rows = data.search(kern, centers, cn, c, np.ascontiguousarray(rand_vals[order]))
        ids[ids < 0] = n_samples - 1  # scikit-learn's clip (its last row is in rows already)
        candidate_ids = np.empty(n_local_trials, dtype=np.int64)
        candidate_ids[order] = ids
        candidates = np.empty((n_local_trials, n_features), dtype=dtype)
        candidates[order] = rows
        candn = kern.squared_norms(candidates)
        pots = data.potentials(kern, centers, cn, c, candidates, candn)
        best = int(np.argmin(pots))
        current_pot = pots[best]
        indices[c] = candidate_ids[best]
        centers[c] = candidates[best]
        cn[c] = candn[best]
    return indices, centers


class _Data:
    """The passes over the chunks (X in the kernels' layout, the weights in X's dtype)."""

    def __init__(self, chunks, n_samples, weighted, dtype):
        self.chunks = chunks
        self.n_samples = n_samples
        self.weighted = bool(weighted)
        self.dtype = dtype
        self.no_weights = np.empty(0, dtype=dtype)

    def passes(self):
        """A pass: (start, X_chunk, w_chunk), contiguous, in X's dtype (w empty unweighted)."""
        for start, X, w in self.chunks():
            X = np.ascontiguousarray(X, dtype=self.dtype)
            if self.weighted:
                w = np.ascontiguousarray(w, dtype=self.dtype)
            else:
                w = self.no_weights
            yield int(start), X, w

    def weights(self):
        """A pass over the weights alone: (start, w_chunk)."""
        for start, _, w in self.passes():
            yield start, w

    def row(self, i):
        for start, X, _ in self.passes():
            if start <= i < start + X.shape[0]:
                return X[i - start].copy()
        raise IndexError(i)  # pragma: no cover - the chunks cover every row

    def potentials(self, kern, centers, cn, nc, cand, candn):
        """Each candidate's potential (L,) in X's dtype, as scikit-learn's ``@`` gives it."""
        total = np.zeros(cand.shape[0])
        for _, X, w in self.passes():
            kern.potentials_chunk(X, w, self.weighted, centers, cn, nc, cand, candn, total)
        return total.astype(self.dtype)

    def search(self, kern, centers, cn, nc, thresholds):
        """First index with cumsum(w * closest) >= each threshold (ascending), and its row.

        -1 (and the last row) where the cumulative sum never reaches the threshold.
        """
        L = thresholds.shape[0]
        found = np.full(L, -1, dtype=np.int64)
        rows = np.empty((L, centers.shape[1]), dtype=self.dtype)
        carry = np.zeros(1, dtype=self.dtype)
        n_found = 0
        for start, X, w in self.passes():
            new = kern.search_chunk(
                X, w, self.weighted, centers, cn, nc, carry, thresholds, found, n_found, start
            )
            rows[n_found:new] = X[found[n_found:new] - start]
            n_found = new
            if n_found == L:
                break
            rows[n_found:] = X[-1]
        return found, rows


def _ones(n, dtype):
    def chunks():
        ones = np.ones(min(n, _ONES_CHUNK), dtype=dtype)
        for start in range(0, n, ones.shape[0]):
            yield start, ones[: min(ones.shape[0], n - start)]

    return chunks


def _first_centre(data, random_state, kern):
    """``random_state.choice(n_samples, p=w / w.sum())`` over chunks, and that row.

    Unweighted, the weights are all ones and these passes read no data but the row's.
    """
    n = data.n_samples
    weights = data.weights if data.weighted else _ones(n, data.dtype)
    total = _pairwise_sum(weights(), n, data.dtype)
    carry = np.zeros(1)
    for _, w in weights():
        kern.probability_scan(w, total, carry, 0.0, 0.0)
    cdf_last = carry[0]
    u = random_state.random_sample()
    carry[0] = 0.0
    if not data.weighted:
        for start, w in weights():
            i = kern.probability_scan(w, total, carry, cdf_last, u)
            if i >= 0:
                return start + i, data.row(start + i)
    else:
        for start, X, w in data.passes():
            i = kern.probability_scan(w, total, carry, cdf_last, u)
            if i >= 0:
                return start + i, X[i]
    raise AssertionError("cdf[-1] / cdf[-1] == 1 > u")  # pragma: no cover


class _Stream:
    """A 1-D array read in order from an iterator of (start, chunk), for the pairwise sum."""

    def __init__(self, iterator):
        self.iterator = iterator
        self.start = 0
        self.chunk = np.empty(0)

    def stop(self):
        return self.start + self.chunk.shape[0]

    def seek(self, offset):
        while offset >= self.stop():
            self.start, self.chunk = next(self.iterator)

    def take(self, offset, n):
        """a[offset:offset + n], across chunks when it must (n <= _PW_BLOCK then)."""
        self.seek(offset)
        lo = offset - self.start
        if offset + n <= self.stop():
            return self.chunk[lo : lo + n]
        pieces = [self.chunk[lo:]]
        got = pieces[0].shape[0]
        while got < n:
            self.seek(offset + got)
            pieces.append(self.chunk[: n - got])
            got += pieces[-1].shape[0]
        return np.concatenate(pieces)


def _pairwise_sum(iterator, n, dtype):
    """``a.sum()`` of the 1-D array of length n that ``iterator`` yields in chunks, exactly.

    NumPy sums a contiguous array by pairwise summation: a range of more than 128 numbers is
    split at n2 = n // 2 rounded down to a multiple of 8 and its halves added; a smaller one
    is summed by a fixed unrolled loop. So the sum of a range depends only on its length and
    its numbers, and NumPy's own ``sum`` of a range inside one chunk is that range's part of
    the tree; ranges across chunks are split as NumPy splits them.
    """
    stream = _Stream(iterator)
    try:
        total = _pairwise_node(stream, 0, n)
    finally:
        _close(iterator)
    return np.asarray(total, dtype=dtype)[()]


def _pairwise_node(stream, offset, size):
    stream.seek(offset)
    if offset + size <= stream.stop() or size <= _PW_BLOCK:
        return stream.take(offset, size).sum()
    n2 = size // 2
    n2 -= n2 % 8
    return _pairwise_node(stream, offset, n2) + _pairwise_node(stream, offset + n2, size - n2)


def _close(iterator):
    """Close an iterator abandoned before its end (a generator holds its last chunk)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
