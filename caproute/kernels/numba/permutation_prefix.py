"""Numba kernel: the first ``size`` entries of a legacy ``RandomState.permutation(n)``, replayed
from the state of its MT19937 with memory that does not depend on ``n``.

``RandomState.permutation(n)`` shuffles ``arange(n)`` with Fisher-Yates: for ``i = n-1, ..., 1``
it draws ``j = random_interval(i)`` (masked rejection on 32-bit MT19937 outputs while
``i <= 0xFFFFFFFF``) and swaps ``x[i]`` and ``x[j]``. Step ``i`` finalises position ``i``, and
writes position ``j`` with the value that was at position ``i`` before the step. So after the
steps ``n-1, ..., size`` the prefix ``x[:size]`` holds, at position ``q``:

* ``q`` itself if no step ``i >= size`` drew ``j = q``;
* else the value at position ``i*`` before step ``i*``, where ``i*`` is the *last* such step
  (the smallest ``i``); that value is found the same way: ``i*`` itself if no step ``i > i*``
  drew ``j = i*``, else the value at ``i**`` before step ``i**`` for the smallest such ``i**``...

Each prefix position is a chain of positions that grows (about geometrically, so about
``log(n / size)`` links), and each link needs the draws of *earlier* steps than the one that
found it. The steps ``i >= size`` are therefore cut into 64 segments of equal length in
``log(i)``: one replay of the whole stream saves the generator state at the start (in time) of
each segment (2.5 KB each, 160 KB whatever ``n``), then the segments are searched from the last
in time (smallest ``i``) to the first, each replayed from its saved state as often as the chains
hop within it (a replay after a segment's first covers only the steps before the earliest
hop). The positions searched for are in a hash table, behind a bit filter that every draw
checks. The last ``size - 1`` steps only permute the prefix among itself and are applied to it
directly. Memory: about 150 bytes per sample and the saved states; time: the first replay plus
about 1.3 (``size`` 3) to 2.9 (``size`` 1000) replays' worth of searching, at ``n = 1e7``.
"""

from __future__ import annotations

import numpy as np

from ._jit import njit_cached

_MT_N = 624
_MT_M = 397
_MATRIX_A = 0x9908B0DF
_UPPER = 0x80000000
_LOWER = 0x7FFFFFFF
# the number of segments (saved generator states, 2.5 KB each) the steps i >= size are cut into
_N_SEGMENTS = 64


@njit_cached()
def _mt_refill(key):
    """``mt19937_gen``: the next 624 words of the state, in place."""
    for k in range(_MT_N - _MT_M):
        y = (np.int64(key[k]) & _UPPER) | (np.int64(key[k + 1]) & _LOWER)
        key[k] = np.int64(key[k + _MT_M]) ^ (y >> 1) ^ ((y & 1) * _MATRIX_A)
    for k in range(_MT_N - _MT_M, _MT_N - 1):
        y = (np.int64(key[k]) & _UPPER) | (np.int64(key[k + 1]) & _LOWER)
        key[k] = np.int64(key[k + _MT_M - _MT_N]) ^ (y >> 1) ^ ((y & 1) * _MATRIX_A)
    y = (np.int64(key[_MT_N - 1]) & _UPPER) | (np.int64(key[0]) & _LOWER)
    key[_MT_N - 1] = np.int64(key[_MT_M - 1]) ^ (y >> 1) ^ ((y & 1) * _MATRIX_A)


@njit_cached()
def _mask_of(i):
    """The smallest all-ones mask ``>= i`` (``i < 2**32``)."""
    mask = i
    mask |= mask >> 1
    mask |= mask >> 2
    mask |= mask >> 4
    mask |= mask >> 8
    mask |= mask >> 16
    return mask


@njit_cached()
def _tempered(word):
    """``mt19937_next``'s tempering of a state word."""
    y = np.int64(word)
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y


@njit_cached()
def _interval(key, pos, i):
    """``random_interval(bitgen, i)`` for ``1 <= i <= 0xFFFFFFFF``: ``(j, new pos)``.

    32-bit draws (``mt19937_next``: refill when ``pos == 624``, read, temper) under the
    smallest all-ones mask ``>= i``, until one is ``<= i``.
    """
    mask = _mask_of(i)
    while True:
        if pos == _MT_N:
            _mt_refill(key)
            pos = 0
        v = _tempered(key[pos]) & mask
        pos += 1
        if v <= i:
            return v, pos


# The two loops below are _interval for i = hi-1, ..., lo written out, with the mask halved as i
# passes a power of two. Whether a draw is accepted is a coin toss for the branch predictor, so
# neither loop branches on it: _skip_steps is compiled branch-free as it is, and _search_pass
# checks its rare candidates first and updates i arithmetically (with a branch on acceptance
# that guards the lookup, it took 3 times as long).


@njit_cached()
def _skip_steps(key, pos, hi, lo):
    """Draw for the steps ``i = hi-1, ..., lo`` and discard the results; the new ``pos``."""
    i = hi - 1
    mask = _mask_of(i)
    while i >= lo:
        if pos == _MT_N:
            _mt_refill(key)
            pos = 0
        v = _tempered(key[pos]) & mask
        pos += 1
        if v <= i:
            i -= 1
            if i <= (mask >> 1):
                mask >>= 1
    return pos


@njit_cached()
def _search_pass(key, pos, hi, lo, bits, bmask, tab_key, tab_val, tmask, ct, found):
    """Steps ``i = hi-1, ..., lo``: for each chain ``c`` whose position is in the table, the
    smallest ``i > ct[c]`` that drew it, into ``found[c]`` (draws come with ``i`` decreasing, so
    the last match wins). ``bits``: a filter of the positions in the table, with few false
    positives, checked for every draw before the table."""
    i = hi - 1
    mask = _mask_of(i)
    while i >= lo:
        if pos == _MT_N:
            _mt_refill(key)
            pos = 0
        j = _tempered(key[pos]) & mask
        pos += 1
        f = _filter_bit(j, bmask)
        if (bits[f >> 6] >> (f & 63)) & 1:
            if j <= i:
                h = _hash(j, tmask)
                while tab_key[h] != -1:
                    if tab_key[h] == j:
                        c = tab_val[h]
                        if i > ct[c]:
                            found[c] = i
                        break
                    h = (h + 1) & tmask
        i -= 1 + ((i - j) >> 63)  # i -= 1 if the draw is accepted (j <= i)
        mask >>= np.int64(i <= (mask >> 1))


@njit_cached()
def _hash(q, tmask):
    """Slot of position ``q < 2**32`` in the hash table."""
    return ((q * 0x7FEB352D) >> 13) & tmask


@njit_cached()
def _filter_bit(q, bmask):
    """Bit of position ``q < 2**32`` in the filter."""
    return ((q * 0x7FEB352D) >> 7) & bmask


@njit_cached()
def permutation_prefix(key, pos, n, size):
    """``permutation(n)[:size]`` of a legacy RandomState whose MT19937 state is ``(key, pos)``.

    ``key`` (uint32, 624) is advanced in place to the state the shuffle leaves; returns the
    prefix (int64, ``size``) and the new ``pos``. Needs ``0 <= size <= n <= 2**32``.
    """
    out = np.empty(size, np.int64)
    if size == 0:
        return out, _skip_steps(key, pos, n, 1)

    # segments [bounds[k], bounds[k+1]) of the steps i >= size, of equal length in log(i)
    bounds = np.empty(_N_SEGMENTS + 1, np.int64)
    bounds[0] = size
    n_seg = 0
    log_ratio = np.log(n / size) / _N_SEGMENTS
    for k in range(1, _N_SEGMENTS + 1):
        b = n if k == _N_SEGMENTS else min(n, np.int64(size * np.exp(k * log_ratio)))
        if b > bounds[n_seg]:
            n_seg += 1
            bounds[n_seg] = b

    # replay 1: the state at the start (in time) of each segment, then the last steps' draws
    saved_key = np.empty((n_seg, _MT_N), np.uint32)
    saved_pos = np.empty(n_seg, np.int64)
    for k in range(n_seg - 1, -1, -1):
        saved_key[k, :] = key
        saved_pos[k] = pos
        pos = _skip_steps(key, pos, bounds[k + 1], bounds[k])
    tail = np.zeros(size, np.int64)  # tail[i]: j of step i < size
    for i in range(size - 1, 0, -1):
        j, pos = _interval(key, pos, i)
        tail[i] = j

    # the chains: position cq[c] wanted as it was before step ct[c] (after steps > ct[c])
    cq = np.arange(size)
    ct = np.full(size, size - 1, np.int64)
    found = np.full(size, -1, np.int64)
    cap = 16
    while cap < 2 * size:
        cap *= 2
    tmask = cap - 1
    tab_key = np.full(cap, -1, np.int64)
    n_bits = 4096
    while n_bits < 64 * size:
        n_bits *= 2
    bmask = n_bits - 1
    bits = np.zeros(n_bits // 64, np.int64)
    tab_val = np.empty(cap, np.int64)
    slot = np.empty(size, np.int64)
    pend = np.empty(size, np.int64)
    nxt = np.empty(size, np.int64)
    work = np.empty(_MT_N, np.uint32)
    for k in range(n_seg):
        lo = bounds[k]
        hi = bounds[k + 1]
        for c in range(size):
            pend[c] = c
        n_pend = size
        while n_pend > 0:
            t_min = hi
            for a in range(n_pend):
                c = pend[a]
                h = _hash(cq[c], tmask)
                while tab_key[h] != -1:
                    h = (h + 1) & tmask
                tab_key[h] = cq[c]
                tab_val[h] = c
                slot[c] = h
                f = _filter_bit(cq[c], bmask)
                bits[f >> 6] |= np.int64(1) << (f & 63)
                found[c] = -1
                t_min = min(t_min, ct[c])
            work[:] = saved_key[k]
            _search_pass(
                work,
                saved_pos[k],
                hi,
                max(lo, t_min + 1),
                bits,
                bmask,
                tab_key,
                tab_val,
                tmask,
                ct,
                found,
            )
            n_next = 0
            for a in range(n_pend):
                c = pend[a]
                tab_key[slot[c]] = -1
                bits[_filter_bit(cq[c], bmask) >> 6] = 0
                if found[c] >= 0:  # hopped: now the value at found[c] before that step
                    cq[c] = found[c]
                    ct[c] = found[c]
                    nxt[n_next] = c
                    n_next += 1
            pend, nxt = nxt, pend
            n_pend = n_next

    # x[:size] after the steps >= size, then the last steps, which stay inside it
    for c in range(size):
        out[c] = cq[c]
    for i in range(size - 1, 0, -1):
        j = tail[i]
        v = out[i]
        out[i] = out[j]
        out[j] = v
    return out, pos
