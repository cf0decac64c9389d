"""Inference throughput of the paper's CapsNet: caproute against PyTorch, same weights.

The network is Sabour et al.'s (conv1 256 x 9x9, 32 x 8-D primary capsules, 10 x 16-D class
capsules, 3 routing iterations; 6.8M parameters) with random weights, float32, on 28x28
images. Both sides get the same weights and the same images; the scores are checked against
each other in the run; times are medians of --repeat runs after a warm-up, with the same
thread count for both (--threads). PyTorch runs the same conventions (type-major primary
capsules, routing logits reset per image, softmax over parents) under inference_mode.

Optionally (--matrix) the shipped-size matrix-capsule network is timed in caproute alone.
Not a test: run it by hand.

    pip install ".[bench]"
    python benchmarks/bench_models.py --threads 2
    python benchmarks/bench_models.py --device gpu      # CuPy vs PyTorch CUDA
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


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


def median_time(fn, repeat, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


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
    net = models.capsnet().initialize(random_state=0)
    weights = net.get_weights()
    rng = np.random.default_rng(0)
    images = rng.random((args.images, 28, 28)).astype(np.float32)

    forward, to = torch_capsnet(torch, weights)
    gpu = args.device == "gpu"
    tdev = "cuda" if gpu else "cpu"
    tparams = to(tdev)
    timages = torch.from_numpy(images[:, None]).to(tdev)

    def run_torch():
        with torch.inference_mode():
            return torch.cat(
                [
                    forward(timages[i : i + args.batch], tparams)
                    for i in range(0, args.images, args.batch)
                ]
            )

    if gpu:
        import cupy

        cimages = cupy.asarray(images)
        sync = cupy.cuda.Device().synchronize

        def run_caproute():
            return net.predict_scores(cimages, backend="cupy", batch_size=args.batch)

        tsync = torch.cuda.synchronize
        device_name = torch.cuda.get_device_name()
    else:
        sync = tsync = lambda: None

        def run_caproute():
            return net.predict_scores(images, backend="auto", batch_size=args.batch)

        device_name = platform.processor() or platform.machine()

    with threadpool_limits(args.threads):
        ours = to_numpy(run_caproute())
        theirs = run_torch().cpu().numpy()
        err = float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-6)))
        t_ours, _ = median_time(run_caproute, args.repeat, sync)
        t_torch, _ = median_time(run_torch, args.repeat, tsync)
        print(
            f"CapsNet (paper size, {net.n_parameters():,} parameters), float32, "
            f"{args.images} images in batches of {args.batch}, {args.threads} threads, "
            f"{device_name}"
        )
        print(
            f"  scores agree: max relative difference {err:.2e}; same predictions: "
            f"{bool(np.all(ours.argmax(1) == theirs.argmax(1)))}"
        )
        print(f"  caproute  {args.images / t_ours:10,.0f} images/s  (median {t_ours:.3f} s)")
        print(f"  PyTorch   {args.images / t_torch:10,.0f} images/s  (median {t_torch:.3f} s)")
        print(f"  ratio caproute / PyTorch throughput: {t_torch / t_ours:.2f}x")

        if args.matrix:
            mnet = models.load_pretrained("matrix-capsnet-fashion-mnist")
            t_m, _ = median_time(
                lambda: mnet.predict_scores(images, batch_size=args.batch), args.repeat
            )
            print(
                f"  shipped matrix-capsule network ({mnet.n_parameters():,} parameters): "
                f"{args.images / t_m:,.0f} images/s"
            )


if __name__ == "__main__":
    main()
