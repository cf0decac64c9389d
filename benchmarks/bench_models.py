"""Inference throughput of two capsule networks: caproute against PyTorch, same weights.

1. The paper's CapsNet (Sabour et al.: conv1 256 x 9x9, 32 x 8-D primary capsules, 10 x 16-D
   class capsules, 3 routing iterations; 6.8M parameters) with random weights.
2. (--matrix) The shipped matrix-capsule network (``matrix-capsnet-fashion-mnist``: conv1,
   primary matrix capsules, two ConvCaps layers and class capsules, EM routing) with its
   trained weights, against a PyTorch implementation of the same network written here (same
   conventions: pose channel = type * 16 + entry, receptive fields ordered (di, dj, type),
   votes V = M W, caproute.em_routing's equations with the layer's options, coordinate
   addition; parents compete per position).

Both sides get the same weights and the same float32 images (28x28); the scores are checked
against each other in the run (max absolute and relative difference); times are medians of
--repeat runs after a warm-up, taken in turns (caproute, then each PyTorch version, repeated)
so that all see the same load, with the same thread count for both (--threads). PyTorch runs
under inference_mode, vectorised over the batch and the positions: the CapsNet's votes as one
batched product over the children, the matrix network's votes likewise, and its EM routing in
two formulations (broadcast sums; batched matrix products over the children), of which the
faster is the peer. The matrix network's PyTorch routing uses the centred two-pass variance,
as caproute does.

GFLOP/s is the work each network needs per image (the convolutions' and the votes'
multiply-adds, 2 flops each; routing counted at 4 flops per vote entry and iteration for
dynamic routing, 10 for EM routing) divided by the time, printed next to the machine's
float32 GEMM peak (NumPy's BLAS, same threads, measured in the run: before and after the
networks, the higher of the two, since a busy machine lowers either).

Not a test: run it by hand.

    pip install ".[bench]"
    python benchmarks/bench_models.py --threads 2 --matrix
    python benchmarks/bench_models.py --device gpu      # CuPy vs PyTorch CUDA
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np

from _peak import describe_peak, gemm_peak

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# -- the paper's CapsNet --------------------------------------------------------------------
def torch_capsnet(torch, weights, n_iter=3, eps=1e-8):
    """The CapsNet forward in PyTorch with caproute's weights (HWIO kernels transposed)."""
    nn = torch.nn.functional
    w1 = torch.from_numpy(np.transpose(weights["conv1.weight"], (3, 2, 0, 1)).copy())
    b1 = torch.from_numpy(weights["conv1.bias"])
    w2 = torch.from_numpy(np.transpose(weights["primary_caps.weight"], (3, 2, 0, 1)).copy())
    b2 = torch.from_numpy(weights["primary_caps.bias"])
    W = torch.from_numpy(weights["class_caps.weight"])  # (n_in, n_out, out_dim, in_dim)
    n_in, n_out, out_dim, in_dim = W.shape
    Wm = W.permute(0, 3, 1, 2).reshape(n_in, in_dim, n_out * out_dim).contiguous()

    def squash(s):
        n2 = (s * s).sum(-1, keepdim=True)
        return n2 / (1 + n2) * s / torch.sqrt(n2 + eps)

    def to(device):
        return [t.to(device) for t in (w1, b1, w2, b2, Wm)]

    def forward(x, params):
        w1_, b1_, w2_, b2_, Wm_ = params
        h = torch.relu(nn.conv2d(x, w1_, b1_))
        p = nn.conv2d(h, w2_, b2_, stride=2)
        b, c, hh, ww = p.shape
        types = c // in_dim
        u = p.view(b, types, in_dim, hh, ww).permute(0, 1, 3, 4, 2).reshape(b, -1, in_dim)
        u = squash(u)
        # votes as one batched matmul over children:
        # (n_in, b, in_dim) @ (n_in, in_dim, n_out*out_dim)
        u_hat = torch.bmm(u.transpose(0, 1), Wm_).view(n_in, b, n_out, out_dim).transpose(0, 1)
        logits = torch.zeros(b, n_in, n_out, device=x.device)
        for it in range(n_iter):
            c = torch.softmax(logits, dim=2)
            v = squash((c[..., None] * u_hat).sum(1))
            if it < n_iter - 1:
                logits = logits + (u_hat * v[:, None]).sum(-1)
        return torch.sqrt((v * v).sum(-1))

    return forward, to


def capsnet_flops(net):
    """Flops per image the CapsNet needs: convolutions, votes, routing (4 per vote entry and
    iteration: the weighted sum and the agreement)."""
    from caproute.models import Conv2D, DenseCaps, PrimaryCaps

    total, shape = 0, net.input_shape
    for layer in net.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, (Conv2D, PrimaryCaps)):
            c_in = shape[-1]
            positions = out[0] * out[1] if isinstance(layer, Conv2D) else out[0] // layer.n_types
            c_out = layer.filters if isinstance(layer, Conv2D) else layer.n_types * layer.dim
            total += 2 * positions * layer.kernel_size**2 * c_in * c_out
        elif isinstance(layer, DenseCaps):
            n_in, in_dim = shape
            entries = n_in * layer.n_out * layer.out_dim
            total += 2 * entries * in_dim + 4 * entries * layer.n_iter
        shape = out
    return total


# -- the matrix-capsule network ---------------------------------------------------------------
PAPER_EM = {
    "competition": "position",
    "pose_momentum": None,
    "e_step_log_var_weight": 0.5,
    "e_step_norm": "softmax",
    "mass_floor": "max",
    "cost_log_var": "half_log_var",
    "renormalize_assignments": False,
    "weight_layout": "caproute",
    "beta_per_pose": False,
}


def _check_torch_supports(net):
    """The PyTorch version below implements the shipped network's options; refuse others."""
    from caproute.models import (
        ClassMatrixCaps,
        Conv2D,
        ConvMatrixCaps,
        PrimaryMatrixCaps,
    )

    kinds = [type(layer) for layer in net.layers]
    if (
        kinds[0] is not Conv2D
        or kinds[1] is not PrimaryMatrixCaps
        or kinds[-1] is not ClassMatrixCaps
    ):
        raise SystemExit(
            "bench_models: the PyTorch matrix network expects conv, primary, ..., class"
        )
    for layer in net.layers[2:]:
        cfg = layer.get_config()
        for key, value in PAPER_EM.items():
            if key in cfg and cfg[key] != value:
                raise SystemExit(f"bench_models: layer {layer.name!r} has {key}={cfg[key]!r}")
        if isinstance(layer, ClassMatrixCaps) and (
            cfg["coordinate_grid"] != "centre" or not cfg["coordinate_addition"]
        ):
            raise SystemExit("bench_models: class capsules without centre coordinate addition")
        if not isinstance(layer, (ConvMatrixCaps, ClassMatrixCaps)):
            raise SystemExit(f"bench_models: unexpected layer {layer.name!r}")
    conv = net.layers[0].get_config()
    if conv["padding"] != 0 or conv["activation"] != "relu" or conv["data_format"] != "NHWC":
        raise SystemExit("bench_models: conv1 must be unpadded, ReLU, NHWC")


def torch_matrix_capsnet(torch, net, routing="matmul"):
    """The matrix-capsule network's forward in PyTorch with ``net``'s weights.

    ``routing``: "broadcast" (EM's sums written with broadcasting, as most public code does) or
    "matmul" (the sums over the children as batched matrix products). Returns ``(forward, to)``
    where ``forward(x, params)`` takes NCHW images and returns the class activations.
    """
    _check_torch_supports(net)
    F = torch.nn.functional
    weights = net.get_weights()
    conv1, primary, *caps, cls = net.layers

    def t(name):
        return torch.from_numpy(np.ascontiguousarray(weights[name]))

    def oihw(name):
        return torch.from_numpy(np.transpose(weights[name], (3, 2, 0, 1)).copy())

    host = {
        "w1": oihw(f"{conv1.name}.weight"),
        "b1": t(f"{conv1.name}.bias"),
        # the pose and activation 1x1 convolutions as one (pose channels first)
        "wp": torch.cat(
            [oihw(f"{primary.name}.pose_weight"), oihw(f"{primary.name}.act_weight")], 0
        ),
        "bp": torch.cat([t(f"{primary.name}.pose_bias"), t(f"{primary.name}.act_bias")], 0),
    }
    layers = []
    for layer in caps:
        W = t(f"{layer.name}.weight")  # (k, k, t_in, t_out, 4, 4)
        k, _, t_in, t_out = W.shape[:4]
        n_in = k * k * t_in
        # (n_in, 4 (row of W), t_out * 4 (column)) for the votes' batched product
        host[f"{layer.name}.W"] = (
            W.reshape(n_in, t_out, 4, 4)
            .permute(0, 2, 1, 3)
            .reshape(n_in, 4, t_out * 4)
            .contiguous()
        )
        host[f"{layer.name}.beta_u"] = t(f"{layer.name}.beta_u")
        host[f"{layer.name}.beta_a"] = t(f"{layer.name}.beta_a")
        layers.append((layer.name, k, layer.stride, t_out, layer._schedule))
    W = t(f"{cls.name}.weight")  # (t_in, n_cls, 4, 4)
    t_in, n_cls = W.shape[:2]
    host["cls.W"] = W.permute(0, 2, 1, 3).reshape(t_in, 4, n_cls * 4).contiguous()
    host["cls.beta_u"] = t(f"{cls.name}.beta_u")
    host["cls.beta_a"] = t(f"{cls.name}.beta_a")
    min_var = {layer.name: layer.min_var for layer in [*caps, cls]}
    eps = {layer.name: layer.eps for layer in [*caps, cls]}
    n_types = primary.n_types
    stride1 = conv1.stride

    def votes_of(M, Wm, n_out):
        """M (N, n_in, 16), Wm (n_in, 4, n_out * 4) -> V (N, n_out, n_in, 16) with
        V[., j, i] = M_i W_ij (4x4 products), one batched product over the children."""
        n, n_in = M.shape[:2]
        Mi = M.view(n, n_in, 4, 4).permute(1, 0, 2, 3).reshape(n_in, n * 4, 4)
        V = torch.bmm(Mi, Wm).view(n_in, n, 4, n_out, 4)
        return V.permute(1, 3, 0, 2, 4).reshape(n, n_out, n_in, 16)

    def em_broadcast(V, a, beta_u, beta_a, lambdas, min_var, eps):
        """V (N, n_out, n_in, D), a (N, n_in) -> (mu (N, n_out, D), act (N, n_out))."""
        n, n_out, n_in, d = V.shape
        R = V.new_full((n, n_out, n_in), 1.0 / n_out)
        for it, lam in enumerate(lambdas):
            Ra = (R * a[:, None, :])[..., None]  # (N, n_out, n_in, 1)
            sum_R = Ra.sum(2)  # (N, n_out, 1)
            denom = sum_R.clamp_min(eps)
            mu = (Ra * V).sum(2) / denom
            d2 = (V - mu[:, :, None]) ** 2
            var = ((Ra * d2).sum(2) / denom + min_var).clamp_min(eps)
            log_var = torch.log(var)
            logit = lam * (beta_a - ((beta_u[:, None] + 0.5 * log_var) * sum_R).sum(-1))
            if it + 1 < len(lambdas):
                log_p = (
                    -(d2 / (2.0 * var[:, :, None])).sum(-1)
                    - 0.5 * log_var.sum(-1, keepdim=True)
                    - d * HALF_LOG_2PI
                )
                R = torch.softmax(log_p + F.logsigmoid(logit)[..., None], dim=1)
        return mu, torch.sigmoid(logit)

    def em_matmul(V, a, beta_u, beta_a, lambdas, min_var, eps):
        n, n_out, n_in, d = V.shape
        R = V.new_full((n, n_out, n_in), 1.0 / n_out)
        for it, lam in enumerate(lambdas):
            Ra = R * a[:, None, :]  # (N, n_out, n_in)
            sum_R = Ra.sum(-1, keepdim=True)  # (N, n_out, 1)
            denom = sum_R.clamp_min(eps)
            Ra_row = Ra.unsqueeze(2)  # (N, n_out, 1, n_in)
            mu = torch.matmul(Ra_row, V).squeeze(2) / denom  # (N, n_out, D)
            d2 = (V - mu.unsqueeze(2)).square_()
            var = (torch.matmul(Ra_row, d2).squeeze(2) / denom + min_var).clamp_min(eps)
            log_var = torch.log(var)
            logit = lam * (beta_a - ((beta_u[:, None] + 0.5 * log_var) * sum_R).sum(-1))
            if it + 1 < len(lambdas):
                quad = torch.matmul(d2, (0.5 / var).unsqueeze(-1)).squeeze(-1)  # (N, n_out, n_in)
                log_p = quad.neg_() - (0.5 * log_var.sum(-1, keepdim=True) + d * HALF_LOG_2PI)
                R = torch.softmax(log_p + F.logsigmoid(logit)[..., None], dim=1)
        return mu, torch.sigmoid(logit)

    em = em_matmul if routing == "matmul" else em_broadcast

    def forward(x, p):
        h = F.relu(F.conv2d(x, p["w1"], p["b1"], stride=stride1))
        y = F.conv2d(h, p["wp"], p["bp"]).permute(0, 2, 3, 1)  # (b, H, W, types * 17)
        b, hh, ww, _ = y.shape
        pose = y[..., : n_types * 16].reshape(b, hh, ww, n_types, 16)
        act = torch.sigmoid(y[..., n_types * 16 :])
        for name, k, s, t_out, lambdas in layers:
            # receptive fields (b, ho, wo, k, k, t_in, 16): unfold, then one copy
            pp = pose.unfold(1, k, s).unfold(2, k, s).permute(0, 1, 2, 5, 6, 3, 4)
            ap = act.unfold(1, k, s).unfold(2, k, s).permute(0, 1, 2, 4, 5, 3)
            ho, wo = pp.shape[1], pp.shape[2]
            n = b * ho * wo
            M = pp.reshape(n, -1, 16)
            V = votes_of(M, p[f"{name}.W"], t_out)
            mu, a_out = em(
                V,
                ap.reshape(n, -1),
                p[f"{name}.beta_u"],
                p[f"{name}.beta_a"],
                lambdas,
                min_var[name],
                eps[name],
            )
            pose = mu.reshape(b, ho, wo, t_out, 16)
            act = a_out.reshape(b, ho, wo, t_out)
        hh, ww, t_in = act.shape[1:]
        V = votes_of(pose.reshape(b * hh * ww, t_in, 16), p["cls.W"], n_cls)
        V = V.view(b, hh, ww, n_cls, t_in, 16)
        rows = (torch.arange(hh, dtype=V.dtype, device=V.device) + 0.5) / hh
        cols = (torch.arange(ww, dtype=V.dtype, device=V.device) + 0.5) / ww
        V[..., 3] += rows[None, :, None, None, None]
        V[..., 7] += cols[None, None, :, None, None]
        # children ordered (y, x, type), as caproute flattens them
        V = V.permute(0, 3, 1, 2, 4, 5).reshape(b, n_cls, hh * ww * t_in, 16)
        _, a_cls = em(
            V,
            act.reshape(b, -1),
            p["cls.beta_u"],
            p["cls.beta_a"],
            cls._schedule,
            min_var[cls.name],
            eps[cls.name],
        )
        return a_cls

    def to(device):
        return {k: v.to(device) for k, v in host.items()}

    return forward, to


def matrix_flops(net):
    """Flops per image the matrix network needs: convolutions, votes (64 multiply-adds per 4x4
    product), EM routing (10 per vote entry and iteration)."""
    from caproute.models import ClassMatrixCaps, Conv2D, ConvMatrixCaps, PrimaryMatrixCaps

    total, shape = 0, net.input_shape
    for layer in net.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, Conv2D):
            total += 2 * out[0] * out[1] * layer.kernel_size**2 * shape[-1] * layer.filters
        elif isinstance(layer, PrimaryMatrixCaps):
            ho, wo = out[0][:2]
            c_out = layer.n_types * 17
            total += 2 * ho * wo * layer.kernel_size**2 * shape[-1] * c_out
        elif isinstance(layer, (ConvMatrixCaps, ClassMatrixCaps)):
            h, w, t_in = shape[1]
            if isinstance(layer, ConvMatrixCaps):
                ho, wo, t_out = out[1]
                n_votes = ho * wo * layer.kernel_size**2 * t_in * t_out
            else:
                n_votes = h * w * t_in * layer.n_classes
            total += 2 * 64 * n_votes + 10 * 16 * n_votes * layer.n_iter
        shape = out
    return total


# -- timing ------------------------------------------------------------------------------------
def interleaved_medians(runs, repeat):
    """``{name: median seconds}`` of ``runs`` (``{name: (fn, sync)}``), each warmed up once,
    then timed in turns (one run of each per round, ``repeat`` rounds): on a shared machine
    whose load changes, every implementation sees the same spells of it."""
    times = {name: [] for name in runs}
    for fn, sync in runs.values():
        fn()
        sync()
    for _ in range(repeat):
        for name, (fn, sync) in runs.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _batches(run_one, n, batch):
    return [run_one(i, min(n, i + batch)) for i in range(0, n, batch)]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument(
        "--matrix", action="store_true", help="also time the shipped matrix-capsule network"
    )
    ap.add_argument(
        "--only-matrix", action="store_true", help="time the matrix-capsule network only"
    )
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from caproute import models, to_numpy

    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    images = rng.random((args.images, 28, 28)).astype(np.float32)
    gpu = args.device == "gpu"
    tdev = "cuda" if gpu else "cpu"
    timages = torch.from_numpy(images[:, None]).to(tdev)
    if gpu:
        import cupy

        cimages = cupy.asarray(images)
        sync = cupy.cuda.Device().synchronize
        tsync = torch.cuda.synchronize
        device_name = torch.cuda.get_device_name()
        backend, ours_in = "cupy", cimages
    else:
        sync = tsync = lambda: None
        device_name = platform.processor() or platform.machine()
        backend, ours_in = "auto", images

    rows = []
    with threadpool_limits(args.threads):
        peak = gemm_peak(args.threads)
        print("before: " + describe_peak(peak, threads=args.threads))
        print(
            f"{args.images} images (28x28, float32) in batches of {args.batch}, "
            f"{args.threads} threads, {device_name}, PyTorch {torch.__version__}"
        )
        nets = []
        if not args.only_matrix:
            net = models.capsnet().initialize(random_state=0)
            forward, to = torch_capsnet(torch, net.get_weights())
            nets.append(("CapsNet (paper size)", net, {"": (forward, to(tdev))}, capsnet_flops))
        if args.matrix or args.only_matrix:
            mnet = models.load_pretrained("matrix-capsnet-fashion-mnist")
            peers = {}
            for kind in ("broadcast", "matmul"):
                forward, to = torch_matrix_capsnet(torch, mnet, routing=kind)
                peers[f", EM {kind}"] = (forward, to(tdev))
            nets.append(("matrix capsules (shipped)", mnet, peers, matrix_flops))

        for title, net, peers, flops_of in nets:

            def run_caproute(net=net):
                return net.predict_scores(ours_in, backend=backend, batch_size=args.batch)

            runs = {"caproute": (run_caproute, sync)}
            ours = to_numpy(run_caproute())
            flops = flops_of(net) * args.images
            print(
                f"{title}: {net.n_parameters():,} parameters, {flops / args.images / 1e9:.3f}"
                " GFLOP per image"
            )
            checks = {}
            for suffix, (forward, params) in peers.items():

                def run_torch(forward=forward, params=params):
                    with torch.inference_mode():
                        return torch.cat(
                            _batches(
                                lambda i, j: forward(timages[i:j], params), args.images, args.batch
                            )
                        )

                theirs = run_torch().cpu().numpy()
                diff = float(np.max(np.abs(ours - theirs)))
                rel = float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-6)))
                same = bool(np.all(ours.argmax(1) == theirs.argmax(1)))
                checks[suffix] = (
                    f"; scores: max abs difference {diff:.2e}, max rel. {rel:.2e}, "
                    f"same predictions: {same}"
                )
                runs[suffix] = (run_torch, tsync)
            times = interleaved_medians(runs, args.repeat)
            t_ours = times.pop("caproute")
            print(
                f"  caproute            {args.images / t_ours:8,.0f} images/s  (median "
                f"{t_ours:.3f} s, {flops / t_ours / 1e9:.0f} GFLOP/s)"
            )
            for suffix, t_torch in times.items():
                print(
                    f"  PyTorch{suffix:<13}{args.images / t_torch:8,.0f} images/s  (median "
                    f"{t_torch:.3f} s, {flops / t_torch / 1e9:.0f} GFLOP/s){checks[suffix]}"
                )
            best = min(times.items(), key=lambda item: item[1])
            ratio = best[1] / t_ours
            print(f"  caproute / fastest PyTorch{best[0]}: {ratio:.2f}x")
            rows.append(
                (
                    title,
                    args.images / t_ours,
                    args.images / best[1],
                    ratio,
                    flops / t_ours / 1e9,
                    flops / best[1] / 1e9,
                )
            )
        after = gemm_peak(args.threads)
        print("after:  " + describe_peak(after, threads=args.threads))
        peak = {dt: max(peak[dt], after[dt]) for dt in peak}
    print()
    print(
        f"| network | caproute (images/s) | PyTorch, fastest (images/s) | caproute / PyTorch "
        f"| caproute GFLOP/s | PyTorch GFLOP/s | float32 GEMM peak (GFLOP/s, {args.threads} "
        "threads) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, ours, theirs, ratio, g_ours, g_theirs in rows:
        print(
            f"| {title} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {g_ours:.0f} "
            f"({100 * g_ours / peak['float32']:.0f}%) | {g_theirs:.0f} | "
            f"{peak['float32']:.0f} |"
        )


if __name__ == "__main__":
    main()
