"""Routing speed and memory: caproute (reference, Numba, CuPy) against PyTorch, same data.

Two layers, float32, 3 iterations:
  DigitCaps  (CapsNet): batch 128, 1152 -> 10 capsules, 8 -> 16 dims, dynamic routing
  ConvCaps   (matrix capsules): batch 32, 6x6 output positions, 3x3x32 children -> 32 parents,
             4x4 poses, EM routing per output position (32 * 36 = 1152 routing problems)

Every implementation gets the same inputs; its outputs are checked against caproute's reference
in the same run; times are medians of --repeat runs after a warm-up, with the same thread count
for all (--threads). Each row also gives the GFLOP/s of the work the algorithm needs (counted
below, the same count for every implementation of a row's task) and that as a percentage of
this machine's float32 GEMM peak, measured in the same run (a NumPy float32 matrix product,
median of a few). Votes-fused rows are compared with PyTorch computing the votes and routing
the same way, the others with the fastest PyTorch routing of the given votes. Peak extra memory
is the growth of the resident set (VmHWM - VmRSS before the call) in a fresh subprocess per
implementation, after a warm-up on a small input, so it counts what the routing call itself
allocates (--no-memory skips it). Not a test: run it by hand.

    pip install ".[bench]"
    python benchmarks/bench_routing.py --threads 2

FLOPs counted (multiply and add = 2; exponentials, divisions and square roots not counted):
  dynamic routing, per iteration: s = sum_i c_ij u_ij (2 B n_in n_out dim) and, from the second
  iteration, the agreement u_ij . v_j (the same); votes-fused adds the votes,
  2 B n_in n_out dim in_dim.
  EM routing, per iteration: M-step means (2), centred variances (3), from the second
  iteration the E-step's Mahalanobis sums (3), each times B n_in n_out pose_dim.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak_growth

LAYERS = {
    "DigitCaps": dict(batch=128, n_in=1152, n_out=10, in_dim=8, dim=16),
    "ConvCaps": dict(batch=32 * 36, n_in=3 * 3 * 32, n_out=32, dim=16),
}
N_ITER = 3


# --------------------------------------------------------------------------- inputs
def make_inputs(layer, scale=1.0):
    cfg = dict(LAYERS[layer])
    if scale != 1.0:
        cfg["batch"] = max(1, int(cfg["batch"] * scale))
    rng = np.random.default_rng(0)
    if layer == "DigitCaps":
        u = (0.3 * rng.normal(size=(cfg["batch"], cfg["n_in"], cfg["in_dim"]))).astype(np.float32)
        w_shape = (cfg["n_in"], cfg["n_out"], cfg["dim"], cfg["in_dim"])
        W = (0.1 * rng.normal(size=w_shape)).astype(np.float32)
        votes = np.ascontiguousarray(
            np.einsum("ijdk,bik->bijd", W, u, optimize=True), dtype=np.float32
        )
        return {"u": u, "W": W, "votes": votes}
    votes_shape = (cfg["batch"], cfg["n_in"], cfg["n_out"], cfg["dim"])
    votes = rng.normal(size=votes_shape).astype(np.float32)
    a_in = rng.uniform(size=(cfg["batch"], cfg["n_in"])).astype(np.float32)
    return {"votes": votes, "a_in": a_in}


# --------------------------------------------------------------------------- PyTorch peers
def torch_dynamic_straightforward(torch, u_hat, n_iter=N_ITER, eps=1e-8):
    """Procedure 1 as public PyTorch implementations write it (broadcast and sum)."""
    b = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype, device=u_hat.device)
    for it in range(n_iter):
        c = torch.softmax(b, dim=-1)
        s = (c.unsqueeze(-1) * u_hat).sum(dim=1)
        n2 = (s * s).sum(-1, keepdim=True)
        v = s * (n2 / ((1 + n2) * torch.sqrt(n2 + eps)))
        if it + 1 < n_iter:
            b = b + (u_hat * v.unsqueeze(1)).sum(-1)
    return v


def torch_dynamic_matmul(torch, u_hat, n_iter=N_ITER, eps=1e-8):
    """The same algorithm with the sums as batched matrix products (a tuned formulation)."""
    uT = u_hat.permute(0, 2, 1, 3).contiguous()  # (batch, n_out, n_in, dim)
    return _torch_matmul_routing(torch, uT, n_iter, eps)


def _torch_matmul_routing(torch, uT, n_iter, eps):
    """Routing of votes laid out (batch, n_out, n_in, dim), sums as batched matrix products."""
    b = torch.zeros(uT.shape[:3], dtype=uT.dtype, device=uT.device)
    for it in range(n_iter):
        c = torch.softmax(b, dim=1)
        s = torch.matmul(c.unsqueeze(2), uT).squeeze(2)
        n2 = (s * s).sum(-1, keepdim=True)
        v = s * (n2 / ((1 + n2) * torch.sqrt(n2 + eps)))
        if it + 1 < n_iter:
            b = b + torch.matmul(uT, v.unsqueeze(-1)).squeeze(-1)
    return v


def torch_votes_routing(torch, u, W, n_iter=N_ITER, eps=1e-8):
    """Votes and routing in PyTorch, the fastest form found here: the votes as one batched
    matrix product per child, laid out (batch, n_out, n_in, dim) as the matmul routing reads
    them, then that routing."""
    n_in, n_out, dim, in_dim = W.shape
    V = torch.matmul(u.permute(1, 0, 2), W.reshape(n_in, n_out * dim, in_dim).transpose(1, 2))
    uT = V.reshape(n_in, -1, n_out, dim).permute(1, 2, 0, 3).contiguous()
    return _torch_matmul_routing(torch, uT, n_iter, eps)


def torch_votes_einsum_routing(torch, u, W, n_iter=N_ITER):
    """Votes by einsum (contiguous), then the matmul routing (PyTorch's other natural form)."""
    return torch_dynamic_matmul(torch, torch.einsum("ijdk,bik->bijd", W, u).contiguous(), n_iter)


def torch_em(torch, V, a_in, beta_u, beta_a, lambdas, min_var=5e-4, eps=1e-8):
    """EM routing (seed eqs. 20-29) written plainly in PyTorch, E-step in log space."""
    F = torch.nn.functional
    D = V.shape[-1]
    R = torch.full(V.shape[:3], 1.0 / V.shape[2], dtype=V.dtype, device=V.device)
    for it, lam in enumerate(lambdas):
        Ra = (R * a_in.unsqueeze(-1)).unsqueeze(-1)
        sum_r = Ra.sum(1)
        den = sum_r.clamp_min(eps)
        mu = (Ra * V).sum(1) / den
        diff = V - mu.unsqueeze(1)
        var = ((Ra * diff * diff).sum(1) / den + min_var).clamp_min(eps)
        log_sigma = 0.5 * torch.log(var)
        logit = lam * (beta_a - ((beta_u + log_sigma) * sum_r).sum(-1))
        if it + 1 == len(lambdas):
            break
        log_p = (
            -(diff * diff / (2 * var.unsqueeze(1))).sum(-1)
            - log_sigma.sum(-1).unsqueeze(1)
            - D * 0.5 * math.log(2 * math.pi)
        )
        R = torch.softmax(log_p + F.logsigmoid(logit).unsqueeze(1), dim=-1)
    return mu, torch.sigmoid(logit)


# --------------------------------------------------------------------------- implementations
def implementations(layer, device):
    """name -> (prepare(inputs) -> state, run(state) -> outputs as NumPy)."""
    import caproute as cr
    from caproute.routing import official_inverse_temperature

    lambdas = official_inverse_temperature(N_ITER)
    impls = {}
    if layer == "DigitCaps":
        for backend in ("numpy", "numba"):
            impls[f"caproute {backend}"] = (
                lambda x: x,
                lambda x, b=backend: cr.dynamic_routing(x["votes"], N_ITER, backend=b),
            )
        impls["caproute numba, votes fused"] = (
            lambda x: x,
            lambda x: cr.dense_dynamic_routing(x["u"], x["W"], N_ITER, backend="numba"),
        )
    else:
        for backend in ("numpy", "numba"):
            impls[f"caproute {backend}"] = (
                lambda x: x,
                lambda x, b=backend: cr.em_routing(
                    x["votes"], x["a_in"], 0.0, 0.0, N_ITER, backend=b
                )[0],
            )
    if device == "gpu":
        import cupy

        def to_gpu(x):
            return {k: cupy.asarray(v) for k, v in x.items()}

        def sync(out):
            cupy.cuda.Stream.null.synchronize()
            return out

        if layer == "DigitCaps":
            impls["caproute cupy"] = (
                to_gpu,
                lambda x: sync(cr.dynamic_routing(x["votes"], N_ITER, backend="cupy")),
            )
        else:
            impls["caproute cupy"] = (
                to_gpu,
                lambda x: sync(
                    cr.em_routing(x["votes"], x["a_in"], 0.0, 0.0, N_ITER, backend="cupy")[0]
                ),
            )
    try:
        import torch
    except ImportError:
        return impls
    dev = "cuda" if device == "gpu" else "cpu"

    def to_torch(x):
        return {k: torch.from_numpy(v).to(dev) for k, v in x.items()}

    def done(t):
        if dev == "cuda":
            torch.cuda.synchronize()
        return t

    if layer == "DigitCaps":
        impls[f"PyTorch {dev}, straightforward"] = (
            to_torch,
            lambda x: done(torch_dynamic_straightforward(torch, x["votes"])),
        )
        impls[f"PyTorch {dev}, matmul"] = (
            to_torch,
            lambda x: done(torch_dynamic_matmul(torch, x["votes"])),
        )
        impls[f"PyTorch {dev}, votes fused: batched matmul"] = (
            to_torch,
            lambda x: done(torch_votes_routing(torch, x["u"], x["W"])),
        )
        impls[f"PyTorch {dev}, votes fused: einsum"] = (
            to_torch,
            lambda x: done(torch_votes_einsum_routing(torch, x["u"], x["W"])),
        )
    else:
        impls[f"PyTorch {dev}"] = (
            to_torch,
            lambda x: done(torch_em(torch, x["votes"], x["a_in"], 0.0, 0.0, lambdas)[0]),
        )
    return impls


def _as_numpy(out):
    import caproute as cr

    if hasattr(out, "detach"):
        return out.detach().cpu().numpy()
    return cr.to_numpy(out)


def set_threads(n):
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    try:
        import numba

        numba.set_num_threads(n)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


# --------------------------------------------------------------------------- memory (child)


def child_memory(layer, name, device, threads):
    set_threads(threads)
    impls = implementations(layer, device)
    prepare, run = impls[name]
    run(prepare(make_inputs(layer, scale=0.02)))  # compile / warm up on a small input
    state = prepare(make_inputs(layer))
    if device == "gpu":
        return {"peak_extra_bytes": None}
    return {"peak_extra_bytes": peak_growth(lambda: run(state))}


def peak_extra(layer, name, device, threads):
    cmd = [sys.executable, __file__, "--child", layer, name, device, str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


# --------------------------------------------------------------------------- work and peak
def flops(layer, fused):
    """FLOPs of one call (see the module's docstring for what is counted)."""
    cfg = LAYERS[layer]
    cells = cfg["batch"] * cfg["n_in"] * cfg["n_out"] * cfg["dim"]
    if layer == "DigitCaps":
        work = 2 * cells * N_ITER + 2 * cells * (N_ITER - 1)
        return work + (2 * cells * cfg["in_dim"] if fused else 0)
    return (2 + 3) * cells * N_ITER + 3 * cells * (N_ITER - 1)


def gemm_peak(dtype=np.float32, n=2048, repeat=5):
    """GFLOP/s of a NumPy (BLAS) n x n matrix product, median of ``repeat``."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def _is_fused(name):
    return "fused" in name


# --------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--layers", nargs="*", default=list(LAYERS))
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only implementations whose name has one of these",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory subprocesses (quicker)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        layer, name, device, threads = args.child
        print(json.dumps(child_memory(layer, name, device, int(threads))))
        return
    set_threads(args.threads)
    peak = gemm_peak()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, threads={args.threads}, "
        f"device={args.device}, float32, {N_ITER} iterations, median of {args.repeat}; "
        f"float32 GEMM peak (NumPy matmul, same threads): {peak:.0f} GFLOP/s"
    )
    for layer in args.layers:
        inputs = make_inputs(layer)
        votes_bytes = inputs["votes"].nbytes
        impls = implementations(layer, args.device)
        ref = None
        rows = []
        for i, (name, (prepare, run)) in enumerate(impls.items()):
            if i > 0 and args.only is not None and not any(k in name for k in args.only):
                continue  # the first implementation, the reference, always runs
            state = prepare(inputs)
            out = _as_numpy(run(state))  # warm-up, and the output to check
            if ref is None:
                ref = out  # the first implementation is caproute's reference
            np.testing.assert_allclose(out, ref, rtol=2e-3, atol=2e-5, err_msg=f"{layer}: {name}")
            slow = "numpy" in name or "PyTorch" in name
            reps = max(1, min(args.repeat, 3)) if slow else args.repeat
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                run(state)
                times.append(time.perf_counter() - t0)
            mem = None if args.no_memory else peak_extra(layer, name, args.device, args.threads)
            rows.append((name, statistics.median(times), mem))

        best_torch = {
            fused: min(
                (t for n, t, _ in rows if n.startswith("PyTorch") and _is_fused(n) == fused),
                default=None,
            )
            for fused in (False, True)
        }

        ref_time = rows[0][1]
        print(
            f"\n{layer}: votes {inputs['votes'].shape} = {votes_bytes / 2**20:.0f} MiB "
            "(outputs match the reference within rtol 2e-3)"
        )
        print(
            "| implementation | ms per call | x faster than reference "
            "| x faster than fastest PyTorch (same task) | GFLOP/s | % of float32 peak "
            "| peak extra memory (MiB) | / votes size |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, sec, mem in rows:
            peer = best_torch[_is_fused(name)]
            vs_torch = f"{peer / sec:.2f}" if peer else "-"
            gflops = flops(layer, _is_fused(name)) / sec / 1e9
            mem_s = "-" if mem is None else f"{mem / 2**20:.0f}"
            ratio = "-" if mem is None else f"{mem / votes_bytes:.2f}"
            print(
                f"| {name} | {sec * 1e3:.1f} | {ref_time / sec:.1f} | {vs_torch} "
                f"| {gflops:.1f} | {100 * gflops / peak:.1f} | {mem_s} | {ratio} |"
            )


if __name__ == "__main__":
    main()
