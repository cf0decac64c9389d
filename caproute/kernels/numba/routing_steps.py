"""Numba kernels for one routing iteration from a given state (the ``*_step`` operations that
the clustering estimators iterate).

A clustering fit routes one sample with many children, so these kernels run in parallel over
fixed chunks of children (not over samples, as the whole-routing kernels do). Each chunk sums
into its own partial buffer, and the partials are added in chunk order afterwards: results do
not depend on the thread count or the schedule. The votes may be a broadcasting view with a
zero stride on the parent axis (every child casting the same vote for every parent): the
kernels then read the one vote per child (``jstep = 0``) from the array the view was made of,
contiguous, and never copy the broadcast. Entry points have the reference's signatures
(NumPy in, NumPy out) and validate nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import njit_cached
from .dynamic_routing import _softmax_into, _squash_parents
from .vector_exp import exp_nonpositive

_FAST = {"reassoc", "contract"}  # vectorisable sums; nothing that assumes finite values
_CHUNK = 256  # children per parallel task: fixed, so partial sums do not depend on threads
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _n_chunks(n_in):
    return (n_in + _CHUNK - 1) // _CHUNK


def _votes_and_step(votes):
    """``(contiguous votes, jstep)``: a view broadcast over the parents (zero stride) becomes
    its one vote per child, read at parent index ``j * jstep`` with ``jstep = 0``."""
    votes = np.asarray(votes)
    if votes.shape[2] > 1 and votes.strides[2] == 0:
        return np.ascontiguousarray(votes[:, :, :1, :]), 0
    return np.ascontiguousarray(votes), 1


@njit_cached(parallel=True, fastmath=_FAST)
def _dynamic_step_chunks(u_hat, jstep, b, v, leaky, b_out, c_out, s_part):
    batch, n_in = u_hat.shape[:2]
    n_out, dim = v.shape[1:]
    n_chunks = s_part.shape[1]
    for task in prange(batch * n_chunks):
        n = task // n_chunks
        start = (task % n_chunks) * _CHUNK
        stop = min(n_in, start + _CHUNK)
        s = s_part[n, task % n_chunks]
        s[:, :] = 0.0
        for i in range(start, stop):
            for j in range(n_out):
                jv = j * jstep
                acc = u_hat[n, i, jv, 0] * v[n, j, 0]
                for d in range(1, dim):
                    acc += u_hat[n, i, jv, d] * v[n, j, d]
                b_out[n, i, j] = b[n, i, j] + acc
            _softmax_into(b_out[n, i], c_out[n, i], leaky)
            for j in range(n_out):
                cij = c_out[n, i, j]
                jv = j * jstep
                for d in range(dim):
                    s[j, d] += cij * u_hat[n, i, jv, d]


@njit_cached(fastmath=_FAST)
def _dynamic_step_parents(s_part, bias, has_bias, eps, v_out):
    batch, n_chunks, n_out, dim = s_part.shape
    s = np.empty((n_out, dim), dtype=s_part.dtype)
    for n in range(batch):
        for j in range(n_out):
            for d in range(dim):
                acc = s_part[n, 0, j, d]
                for k in range(1, n_chunks):  # chunk order: deterministic
                    acc += s_part[n, k, j, d]
                s[j, d] = acc + bias[j, d] if has_bias else acc
        _squash_parents(s, eps, v_out[n])


def dynamic_routing_step(u_hat, logits, v, *, bias, leaky, eps, xp=None):
    """Numba ``dynamic_routing_step`` with the reference's signature: ``(v, c, logits)``."""
    batch, n_in, n_out, dim = u_hat.shape
    u_hat, jstep = _votes_and_step(u_hat)
    dtype = u_hat.dtype
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias, dtype=dtype) if has_bias else np.zeros((1, 1), dtype)
    b_out = np.empty((batch, n_in, n_out), dtype=dtype)
    c_out = np.empty((batch, n_in, n_out), dtype=dtype)
    s_part = np.empty((batch, _n_chunks(n_in), n_out, dim), dtype=dtype)
    _dynamic_step_chunks(
        u_hat,
        jstep,
        np.ascontiguousarray(logits, dtype=dtype),
        np.ascontiguousarray(v, dtype=dtype),
        leaky,
        b_out,
        c_out,
        s_part,
    )
    v_out = np.empty((batch, n_out, dim), dtype=dtype)
    _dynamic_step_parents(s_part, bias, has_bias, dtype.type(eps), v_out)
    return v_out, c_out, b_out


@njit_cached(parallel=True, fastmath=_FAST)
def _em_estep_chunks(V, jstep, a, mu, inv2var, const, R, log_norm, sr_part, srv_part):
    """E-step per child (log space) fused with the next M-step's mass and mean sums."""
    batch, n_in = V.shape[:2]
    n_out, dim = mu.shape[1:]
    n_chunks = sr_part.shape[1]
    for task in prange(batch * n_chunks):
        n = task // n_chunks
        k = task % n_chunks
        start = k * _CHUNK
        stop = min(n_in, start + _CHUNK)
        sr = sr_part[n, k]
        srv = srv_part[n, k]
        sr[:] = 0.0
        srv[:, :] = 0.0
        log_p = np.empty(n_out, dtype=V.dtype)
        for i in range(start, stop):
            m = -np.inf
            for j in range(n_out):
                jv = j * jstep
                dv = V[n, i, jv, 0] - mu[n, j, 0]
                q = dv * dv * inv2var[n, j, 0]
                for h in range(1, dim):
                    dv = V[n, i, jv, h] - mu[n, j, h]
                    q += dv * dv * inv2var[n, j, h]
                lp = const[n, j] - q
                log_p[j] = lp
                if lp > m:
                    m = lp
            z = 0.0
            for j in range(n_out):
                e = exp_nonpositive(log_p[j] - m)
                R[n, i, j] = e
                z += e
            log_norm[n, i] = m + np.log(z)
            inv = 1.0 / z
            for j in range(n_out):
                r = R[n, i, j] * inv
                R[n, i, j] = r
                ra = r * a[n, i]
                sr[j] += ra
                jv = j * jstep
                for h in range(dim):
                    srv[j, h] += ra * V[n, i, jv, h]


@njit_cached(parallel=True, fastmath=_FAST)
def _em_variance_chunks(V, jstep, a, R, mu, var_part):
    batch, n_in = V.shape[:2]
    n_out, dim = mu.shape[1:]
    n_chunks = var_part.shape[1]
    for task in prange(batch * n_chunks):
        n = task // n_chunks
        k = task % n_chunks
        start = k * _CHUNK
        stop = min(n_in, start + _CHUNK)
        acc = var_part[n, k]
        acc[:, :] = 0.0
        for i in range(start, stop):
            for j in range(n_out):
                ra = R[n, i, j] * a[n, i]
                jv = j * jstep
                for h in range(dim):
                    dv = V[n, i, jv, h] - mu[n, j, h]
                    acc[j, h] += ra * dv * dv


@njit_cached()
def _sum_chunks(part):
    """part (batch, n_chunks, ...) summed over the chunks in order."""
    out = part[:, 0].copy()
    for k in range(1, part.shape[1]):
        out += part[:, k]
    return out


def _log_sigmoid(x):
    return -np.logaddexp(np.zeros_like(x), -x)


def _e_step(V, jstep, a, mu, var, logit):
    """The E-step over every child; returns ``(R, log_norm, sr_part, srv_part)``, the last two
    the chunks' partial sums of the next M-step's masses and weighted votes."""
    dtype = V.dtype
    batch, n_in = V.shape[:2]
    n_out, dim = mu.shape[1:]
    mu = np.ascontiguousarray(mu, dtype=dtype)
    var = np.asarray(var, dtype=dtype)
    # the per-parent terms of the log-density (small: batch x n_out x dim)
    inv2var = np.ascontiguousarray(0.5 / var)
    const = np.ascontiguousarray(
        _log_sigmoid(np.asarray(logit, dtype=dtype))
        - 0.5 * np.sum(np.log(var), axis=-1)
        - dim * dtype.type(_HALF_LOG_2PI)
    )
    n_chunks = _n_chunks(n_in)
    R = np.empty((batch, n_in, n_out), dtype=dtype)
    log_norm = np.empty((batch, n_in), dtype=dtype)
    sr_part = np.empty((batch, n_chunks, n_out), dtype=dtype)
    srv_part = np.empty((batch, n_chunks, n_out, dim), dtype=dtype)
    _em_estep_chunks(V, jstep, a, mu, inv2var, const, R, log_norm, sr_part, srv_part)
    return R, log_norm, sr_part, srv_part


def em_routing_e_step(votes, mu, var, logit, *, xp=None):
    """Numba ``e_step`` (EM routing's E-step alone) with the reference's signature:
    ``(R, log_norm)``."""
    V, jstep = _votes_and_step(votes)
    a = np.ones(V.shape[:2], dtype=V.dtype)  # the E-step does not use the activations
    R, log_norm, _, _ = _e_step(V, jstep, a, mu, var, logit)
    return R, log_norm


def em_routing_step(votes, a_in, mu, var, logit, beta_u, beta_a, *, lam, min_var, eps, xp=None):
    """Numba ``em_routing_step`` with the reference's signature:
    ``(mu, var, logit, R, log_norm)``."""
    V, jstep = _votes_and_step(votes)
    dtype = V.dtype
    batch, n_in = V.shape[:2]
    n_out, dim = votes.shape[2], votes.shape[3]
    n_chunks = _n_chunks(n_in)
    a = np.ascontiguousarray(a_in, dtype=dtype)
    R, log_norm, sr_part, srv_part = _e_step(V, jstep, a, mu, var, logit)
    sum_r = _sum_chunks(sr_part)
    den = np.maximum(sum_r, dtype.type(eps))[..., None]
    new_mu = np.ascontiguousarray(_sum_chunks(srv_part) / den)
    var_part = np.empty((batch, n_chunks, n_out, dim), dtype=dtype)
    _em_variance_chunks(V, jstep, a, R, new_mu, var_part)
    new_var = np.maximum(_sum_chunks(var_part) / den + dtype.type(min_var), dtype.type(eps))
    cost = (np.asarray(beta_u, dtype=dtype) + dtype.type(0.5) * np.log(new_var)) * sum_r[..., None]
    new_logit = dtype.type(lam) * (np.asarray(beta_a, dtype=dtype) - np.sum(cost, axis=-1))
    return new_mu, new_var, new_logit, R, log_norm
