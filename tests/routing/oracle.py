"""Routing written as plain loops over Python floats, straight from the seed's equations.

Independent of caproute's array code: no vectorisation, no shared helpers. Used as the oracle
for the reference implementation (which is itself the oracle for the kernels).
"""

import math

import numpy as np


def dynamic_routing_loops(u_hat, n_iter, *, bias=None, leaky=False, eps=1e-8, initial_logits=None):
    """Seed eqs. 8-11 (softmax over parents, weighted sum, squash, agreement update)."""
    u = np.asarray(u_hat, dtype=np.float64)
    B, I, J, D = u.shape
    v_out = np.zeros((B, J, D))
    c_out = np.zeros((B, I, J))
    for b in range(B):
        if initial_logits is None:
            logits = [[0.0] * J for _ in range(I)]
        else:
            logits = [[float(initial_logits[b, i, j]) for j in range(J)] for i in range(I)]
        for r in range(n_iter):
            c = []
            for i in range(I):
                row = logits[i] + ([0.0] if leaky else [])
                m = max(row)
                e = [math.exp(x - m) for x in row]
                z = sum(e)
                c.append([e[j] / z for j in range(J)])
            v = []
            for j in range(J):
                s = []
                for d in range(D):
                    acc = sum(c[i][j] * u[b, i, j, d] for i in range(I))
                    if bias is not None:
                        acc += float(bias[j, d])
                    s.append(acc)
                n2 = sum(x * x for x in s)
                v.append([n2 / (1.0 + n2) * x / math.sqrt(n2 + eps) for x in s])
            if r + 1 < n_iter:
                for i in range(I):
                    for j in range(J):
                        logits[i][j] += sum(u[b, i, j, d] * v[j][d] for d in range(D))
        v_out[b] = v
        c_out[b] = c
    return v_out, c_out


def em_routing_loops(votes, a_in, beta_u, beta_a, lambdas, *, min_var, eps=1e-8, initial_R=None):
    """Seed eqs. 20-29. beta_u (J, D), beta_a (J,), one lambda per iteration."""
    V = np.asarray(votes, dtype=np.float64)
    a_in = np.asarray(a_in, dtype=np.float64)
    B, I, J, D = V.shape
    pose = np.zeros((B, J, D))
    act = np.zeros((B, J))
    R_out = np.zeros((B, I, J))
    for b in range(B):
        if initial_R is None:
            R = [[1.0 / J] * J for _ in range(I)]
        else:
            R = [[float(initial_R[b, i, j]) for j in range(J)] for i in range(I)]
        for t, lam in enumerate(lambdas):
            R_used = [row[:] for row in R]
            mu = [[0.0] * D for _ in range(J)]
            var = [[0.0] * D for _ in range(J)]
            a = [0.0] * J
            for j in range(J):
                w = [R[i][j] * a_in[b, i] for i in range(I)]  # eq. 21
                sw = sum(w)
                den = max(sw, eps)
                cost_sum = 0.0
                for h in range(D):
                    m = sum(w[i] * V[b, i, j, h] for i in range(I)) / den  # eq. 22
                    s2 = sum(w[i] * (V[b, i, j, h] - m) ** 2 for i in range(I)) / den
                    s2 = max(s2 + min_var, eps)
                    mu[j][h] = m
                    var[j][h] = s2
                    cost_sum += (float(beta_u[j, h]) + 0.5 * math.log(s2)) * sw  # eq. 26
                z = lam * (float(beta_a[j]) - cost_sum)  # eq. 27
                a[j] = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            if t + 1 < len(lambdas):
                for i in range(I):  # eqs. 28-29, in log space
                    logs = []
                    for j in range(J):
                        lp = 0.0
                        for h in range(D):
                            lp += -((V[b, i, j, h] - mu[j][h]) ** 2) / (2 * var[j][h])
                            lp += -0.5 * math.log(2 * math.pi * var[j][h])
                        logs.append(math.log(a[j]) + lp)
                    m = max(logs)
                    z = sum(math.exp(x - m) for x in logs)
                    R[i] = [math.exp(x - m) / z for x in logs]
        pose[b] = mu
        act[b] = a
        R_out[b] = R_used
    return pose, act, R_out
