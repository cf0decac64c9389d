"""Train an EM-routing matrix-capsule network (Hinton et al. 2018) on Fashion-MNIST with PyTorch.

Development only. The network follows caproute's conventions exactly (see
caproute/models/layers/matrix_caps.py): pose channel = type * 16 + entry, receptive fields
ordered (di, dj, type), votes V = M W, EM routing as caproute.em_routing (variance floor
5e-4, eps 1e-8, cost (beta_u + log sigma) * sum R, log-space E-step), parents compete per
position, coordinate addition at (y + 0.5) / H, (x + 0.5) / W in vote entries 3 and 7.

    python tools/train/train_matrix_capsnet.py --A 128 --B 8 --C 8 --D 8 --n-iter 2 \
        --inverse-temperature 0.001 --epochs 6 --threads 2 --max-minutes 100

(the shipped model's command: 72 minutes on the 2-core CPU, 87.21% test accuracy; the paper's
A = B = C = D = 32 takes about 19 s per batch of 64 there, so it wants a GPU: --device cuda)

The inverse temperature is fixed at 1e-3 (as several public implementations do): with the
official schedule's 0.01 the class activations saturate at once and the spread loss does not
start to fall in the first hundred steps (tried here: chance accuracy after 80 steps, against
69% with 1e-3).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from common import Log, accuracy, load_data, out_dir, save_checkpoint, shift_augment, spread_loss

MIN_VAR, EPS = 5e-4, 1e-8
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def em_routing(votes, a_in, beta_u, beta_a, lambdas):
    """votes (N, n_in, n_out, 16), a_in (N, n_in) -> pose (N, n_out, 16), act (N, n_out).

    caproute.em_routing's equations, arranged for training speed: the per-parent sums are
    batched matrix products against the votes and their squares, so the variance is the
    uncentred E[V^2] - mu^2 here (caproute's inference uses the centred two-pass form; in
    float32 the two differ by ~1e-6, and the shipped accuracy is what caproute computes).
    """
    n, n_in, n_out, d = votes.shape
    V = votes.permute(0, 2, 1, 3)  # (N, n_out, n_in, d)
    V2 = V * V
    R = votes.new_full((n, n_out, n_in), 1.0 / n_out)
    beta_u = beta_u.reshape(n_out, -1)
    for it, lam in enumerate(lambdas):
        Ra = R * a_in[:, None, :]
        sum_R = Ra.sum(-1)
        denom = sum_R.clamp(min=EPS)[..., None]
        mu = (Ra[:, :, None, :] @ V).squeeze(2) / denom
        ex2 = (Ra[:, :, None, :] @ V2).squeeze(2) / denom
        var = ((ex2 - mu * mu * (sum_R[..., None] / denom)).clamp(min=0) + MIN_VAR).clamp(min=EPS)
        cost = (beta_u + 0.5 * torch.log(var)) * sum_R[..., None]
        logit = lam * (beta_a - cost.sum(-1))
        if it + 1 < len(lambdas):
            inv = 0.5 / var
            quad = (
                (V2 @ inv[..., None]).squeeze(-1)
                - 2 * (V @ (mu * inv)[..., None]).squeeze(-1)
                + (mu * mu * inv).sum(-1, keepdim=True)
            )
            log_p = -quad - 0.5 * torch.log(var).sum(-1, keepdim=True) - d * HALF_LOG_2PI
            R = torch.softmax(log_p + nn.functional.logsigmoid(logit)[..., None], dim=1)
    return mu, torch.sigmoid(logit)


def votes_of(M, W):
    """M (..., n_in, 16), W (n_in, n_out, 4, 4) -> (..., n_in, n_out, 16)."""
    lead = M.shape[:-1]
    V = M.reshape(*lead, 1, 4, 4) @ W
    return V.reshape(*lead, W.shape[1], 16)


class ConvCaps(nn.Module):
    def __init__(self, t_in, t_out, k, stride, lambdas):
        super().__init__()
        self.k, self.stride, self.t_out, self.lambdas = k, stride, t_out, lambdas
        self.weight = nn.Parameter(torch.randn(k, k, t_in, t_out, 4, 4) / 2 + torch.eye(4))
        self.beta_u = nn.Parameter(torch.zeros(t_out))
        self.beta_a = nn.Parameter(torch.zeros(t_out))

    def forward(self, pose, act):
        b = pose.shape[0]
        k, s = self.k, self.stride
        pp = pose.unfold(1, k, s).unfold(2, k, s).permute(0, 1, 2, 5, 6, 3, 4)
        ap = act.unfold(1, k, s).unfold(2, k, s).permute(0, 1, 2, 4, 5, 3)
        ho, wo = pp.shape[1], pp.shape[2]
        n_in = k * k * pose.shape[3]
        V = votes_of(pp.reshape(b * ho * wo, n_in, 16), self.weight.reshape(n_in, self.t_out, 4, 4))
        mu, a = em_routing(V, ap.reshape(b * ho * wo, n_in), self.beta_u, self.beta_a, self.lambdas)
        return mu.reshape(b, ho, wo, self.t_out, 16), a.reshape(b, ho, wo, self.t_out)


class ClassCaps(nn.Module):
    def __init__(self, t_in, n_cls, lambdas):
        super().__init__()
        self.n_cls, self.lambdas = n_cls, lambdas
        self.weight = nn.Parameter(torch.randn(t_in, n_cls, 4, 4) / 2 + torch.eye(4))
        self.beta_u = nn.Parameter(torch.zeros(n_cls))
        self.beta_a = nn.Parameter(torch.zeros(n_cls))

    def forward(self, pose, act):
        b, h, w, t = act.shape
        V = votes_of(pose, self.weight)  # (b, h, w, t, n_cls, 16)
        off = torch.zeros(h, w, 1, 1, 16, device=pose.device)
        off[..., 3] = ((torch.arange(h, device=pose.device) + 0.5) / h)[:, None, None, None]
        off[..., 7] = ((torch.arange(w, device=pose.device) + 0.5) / w)[None, :, None, None]
        V = (V + off).reshape(b, h * w * t, self.n_cls, 16)
        return em_routing(V, act.reshape(b, h * w * t), self.beta_u, self.beta_a, self.lambdas)


class MatrixCapsNet(nn.Module):
    def __init__(self, A, B, C, D, n_iter, inverse_temperature):
        super().__init__()
        lambdas = [inverse_temperature] * n_iter
        self.conv1 = nn.Conv2d(1, A, 5, stride=2)
        self.pose = nn.Conv2d(A, B * 16, 1)
        self.act = nn.Conv2d(A, B, 1)
        self.conv_caps1 = ConvCaps(B, C, 3, 2, lambdas)
        self.conv_caps2 = ConvCaps(C, D, 3, 1, lambdas)
        self.class_caps = ClassCaps(D, 10, lambdas)
        self.B = B

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        b, _, hh, ww = h.shape
        pose = self.pose(h).permute(0, 2, 3, 1).reshape(b, hh, ww, self.B, 16)
        act = torch.sigmoid(self.act(h)).permute(0, 2, 3, 1)
        pose, act = self.conv_caps1(pose, act)
        pose, act = self.conv_caps2(pose, act)
        return self.class_caps(pose, act)[1]

    def export(self):
        """Tensors under caproute's names (conv kernels still in PyTorch layout)."""
        return {
            "conv1.weight": self.conv1.weight,
            "conv1.bias": self.conv1.bias,
            "primary_caps.pose_weight": self.pose.weight,
            "primary_caps.pose_bias": self.pose.bias,
            "primary_caps.act_weight": self.act.weight,
            "primary_caps.act_bias": self.act.bias,
            **{
                f"{name}.{p}": getattr(getattr(self, name), p)
                for name in ("conv_caps1", "conv_caps2", "class_caps")
                for p in ("weight", "beta_u", "beta_a")
            },
        }


def main():
    ap = argparse.ArgumentParser()
    for name, default in (("A", 32), ("B", 8), ("C", 8), ("D", 8)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--n-iter", type=int, default=2)
    ap.add_argument("--inverse-temperature", type=float, default=0.001)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--shift", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=1e9,
        help="stop after the first epoch that ends past this wall time",
    )
    ap.add_argument("--out", default="tools/train/runs/matrix_capsnet")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = out_dir(args.out)
    log = Log(out + "/log.txt")
    data = load_data(args.device)
    x, y = data["train"]
    model = MatrixCapsNet(args.A, args.B, args.C, args.D, args.n_iter, args.inverse_temperature).to(
        args.device
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(len(x) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, args.lr, total_steps=args.epochs * steps_per_epoch
    )
    log(f"args {vars(args)}; {sum(p.numel() for p in model.parameters())} parameters")
    step = 0
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x), device=args.device)
        total = 0.0
        for k, i in enumerate(range(0, len(x), args.batch)):
            idx = perm[i : i + args.batch]
            # spread-loss margin grows from 0.2 to 0.9 over the first half of training
            margin = 0.2 + 0.7 * min(1.0, step / (0.5 * args.epochs * steps_per_epoch))
            loss = spread_loss(model(shift_augment(x[idx], args.shift)), y[idx], margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item()
            if k % 100 == 0:
                log(f"epoch {epoch} step {k} loss {loss.item():.4f} margin {margin:.2f}")
        acc = accuracy(model, *data["test"])
        log(f"epoch {epoch} mean loss {total / (k + 1):.4f} test accuracy (torch) {acc:.4f}")
        meta = {
            "architecture": "matrix_capsnet",
            "epochs": epoch,
            "torch_test_accuracy": acc,
            "args": vars(args),
        }
        save_checkpoint(out + "/checkpoint", model.export(), meta)
        if log.t0 and (__import__("time").perf_counter() - log.t0) / 60 > args.max_minutes:
            log("time budget reached; stopping")
            break


if __name__ == "__main__":
    main()
