"""Straightforward NumPy versions of caproute's layers, written from the definitions with
explicit loops and indexing (no shared code with caproute). float64 throughout."""

import math

import numpy as np

from tests.routing.oracle import dynamic_routing_loops, em_routing_loops


def conv2d_loops(x, w, b, stride, padding):
    """x (B, H, W, C), w (k, k, C, F) -> (B, Ho, Wo, F), one output pixel at a time."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    B, H, W, C = x.shape
    k = w.shape[0]
    ho, wo = (H - k) // stride + 1, (W - k) // stride + 1
    out = np.zeros((B, ho, wo, w.shape[3]))
    for y in range(ho):
        for xx in range(wo):
            window = x[:, y * stride : y * stride + k, xx * stride : xx * stride + k, :]
            out[:, y, xx, :] = np.tensordot(window, w, axes=([1, 2, 3], [0, 1, 2]))
    return out + (0 if b is None else b)


def squash_np(s, eps):
    n2 = np.sum(s * s, axis=-1, keepdims=True)
    return n2 / (1 + n2) * s / np.sqrt(n2 + eps)


def primary_caps_np(x, w, b, n_types, dim, stride, order, eps):
    out = conv2d_loops(x, w, b, stride, 0)  # (B, ho, wo, n_types*dim)
    B, ho, wo, _ = out.shape
    caps = np.zeros((B, ho * wo * n_types, dim))
    for y in range(ho):
        for xx in range(wo):
            for t in range(n_types):
                pos = y * wo + xx
                i = t * ho * wo + pos if order == "type-major" else pos * n_types + t
                caps[:, i, :] = out[:, y, xx, t * dim : (t + 1) * dim]
    return squash_np(caps, eps)


def dense_caps_np(u, W, n_iter, bias, leaky, eps):
    """W in caproute's layout (n_in, n_out, out_dim, in_dim)."""
    B, n_in, _ = u.shape
    n_out, out_dim = W.shape[1], W.shape[2]
    u_hat = np.zeros((B, n_in, n_out, out_dim))
    for i in range(n_in):
        for j in range(n_out):
            u_hat[:, i, j, :] = u[:, i, :] @ W[i, j].T
    return dynamic_routing_loops(u_hat, n_iter, bias=bias, leaky=leaky, eps=eps)[0]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def primary_matrix_caps_np(x, pw, pb, aw, ab, n_types):
    pose = conv2d_loops(x, pw, pb, 1, 0)
    B, h, w, _ = pose.shape
    return pose.reshape(B, h, w, n_types, 16), sigmoid(conv2d_loops(x, aw, ab, 1, 0))


def _vote(M16, W44):
    return (M16.reshape(4, 4) @ W44).reshape(16)


def _window(pose, act, y, x, k, stride):
    """Children of output position (y, x): lists of (input position, type) in (di, dj, t) order."""
    kids = []
    for di in range(k):
        for dj in range(k):
            for t in range(act.shape[-1]):
                kids.append((y * stride + di, x * stride + dj, t))
    return kids


def conv_matrix_caps_np(pose, act, W, beta_u, beta_a, k, stride, lambdas, min_var, eps):
    """Per-position competition: every receptive field routed on its own."""
    B, H, Wd, t_in = act.shape
    t_out = W.shape[3]
    ho, wo = (H - k) // stride + 1, (Wd - k) // stride + 1
    out_pose = np.zeros((B, ho, wo, t_out, 16))
    out_act = np.zeros((B, ho, wo, t_out))
    bu = np.broadcast_to(np.reshape(beta_u, (t_out, -1)), (t_out, 16))
    for y in range(ho):
        for x in range(wo):
            kids = _window(pose, act, y, x, k, stride)
            V = np.zeros((B, len(kids), t_out, 16))
            a = np.zeros((B, len(kids)))
            for n, (iy, ix, t) in enumerate(kids):
                di, dj = iy - y * stride, ix - x * stride
                a[:, n] = act[:, iy, ix, t]
                for j in range(t_out):
                    for b in range(B):
                        V[b, n, j] = _vote(pose[b, iy, ix, t], W[di, dj, t, j])
            p, ac, _ = em_routing_loops(V, a, bu, beta_a, lambdas, min_var=min_var, eps=eps)
            out_pose[:, y, x], out_act[:, y, x] = p, ac
    return out_pose, out_act


def conv_matrix_caps_all_np(pose, act, W, beta_u, beta_a, k, stride, lambdas, min_var, eps):
    """All-position competition: a child's assignments sum to 1 over every (position, parent)
    it feeds. Written with explicit dictionaries of edges (child -> parent)."""
    B, H, Wd, t_in = act.shape
    t_out = W.shape[3]
    ho, wo = (H - k) // stride + 1, (Wd - k) // stride + 1
    bu = np.broadcast_to(np.reshape(beta_u, (t_out, -1)), (t_out, 16))
    out_pose = np.zeros((B, ho, wo, t_out, 16))
    out_act = np.zeros((B, ho, wo, t_out))
    for b in range(B):
        edges = []  # (child, parent, vote)
        for y in range(ho):
            for x in range(wo):
                for iy, ix, t in _window(pose, act, y, x, k, stride):
                    di, dj = iy - y * stride, ix - x * stride
                    for j in range(t_out):
                        edges.append(
                            ((iy, ix, t), (y, x, j), _vote(pose[b, iy, ix, t], W[di, dj, t, j]))
                        )
        fan = {}
        for child, _, _ in edges:
            fan[child] = fan.get(child, 0) + 1
        R = [1.0 / fan[c] for c, _, _ in edges]
        for it, lam in enumerate(lambdas):
            stats = {}
            for e, (child, parent, v) in enumerate(edges):
                w = R[e] * act[b][child]
                stats.setdefault(parent, []).append((w, v))
            mu, var, logit = {}, {}, {}
            for parent, items in stats.items():
                ws = np.array([w for w, _ in items])
                vs = np.array([v for _, v in items])
                sw = ws.sum()
                den = max(sw, eps)
                m = (ws[:, None] * vs).sum(0) / den
                s2 = np.maximum((ws[:, None] * (vs - m) ** 2).sum(0) / den + min_var, eps)
                cost = ((bu[parent[2]] + 0.5 * np.log(s2)) * sw).sum()
                mu[parent], var[parent] = m, s2
                logit[parent] = lam * (beta_a[parent[2]] - cost)
            if it + 1 < len(lambdas):
                logs = []
                for _child, parent, v in edges:
                    lp = -np.sum((v - mu[parent]) ** 2 / (2 * var[parent]))
                    lp -= 0.5 * np.sum(np.log(2 * math.pi * var[parent]))
                    logs.append(lp + math.log(sigmoid(logit[parent])))
                total = {}
                for e, (child, _, _) in enumerate(edges):
                    total.setdefault(child, []).append(logs[e])
                lse = {
                    c: max(v) + math.log(sum(math.exp(x - max(v)) for x in v))
                    for c, v in total.items()
                }
                R = [math.exp(logs[e] - lse[c]) for e, (c, _, _) in enumerate(edges)]
        for (y, x, j), m in mu.items():
            out_pose[b, y, x, j] = m
            out_act[b, y, x, j] = sigmoid(logit[(y, x, j)])
    return out_pose, out_act


def class_matrix_caps_np(pose, act, W, beta_u, beta_a, lambdas, min_var, eps, coord=True):
    B, H, Wd, t_in = act.shape
    n_cls = W.shape[1]
    bu = np.broadcast_to(np.reshape(beta_u, (n_cls, -1)), (n_cls, 16))
    V = np.zeros((B, H * Wd * t_in, n_cls, 16))
    a = np.zeros((B, H * Wd * t_in))
    n = 0
    for y in range(H):
        for x in range(Wd):
            for t in range(t_in):
                a[:, n] = act[:, y, x, t]
                for j in range(n_cls):
                    for b in range(B):
                        v = _vote(pose[b, y, x, t], W[t, j])
                        if coord:
                            v[3] += (y + 0.5) / H
                            v[7] += (x + 0.5) / Wd
                        V[b, n, j] = v
                n += 1
    p, ac, _ = em_routing_loops(V, a, bu, beta_a, lambdas, min_var=min_var, eps=eps)
    return p, ac
