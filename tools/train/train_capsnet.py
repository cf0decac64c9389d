"""Train a dynamic-routing CapsNet (Sabour et al. 2017) on Fashion-MNIST with PyTorch.

Development only. The network is written in caproute's own conventions, so that the export
(`export.py`) is a renaming: primary-capsule channel = type * dim + d, type-major flattening,
DigitCaps weights `W (n_in, n_out, out_dim, in_dim)`, routing logits reset to 0 per image,
softmax over parents, squash with eps inside the square root.

    python tools/train/train_capsnet.py --conv-channels 32 --primary-types 16 --epochs 8
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from common import Log, accuracy, load_data, margin_loss, out_dir, save_checkpoint, shift_augment

EPS = 1e-8


def squash(s, dim=-1):
    n2 = (s * s).sum(dim, keepdim=True)
    return n2 / (1 + n2) * s / torch.sqrt(n2 + EPS)


class CapsNet(nn.Module):
    def __init__(self, conv_channels, primary_types, primary_dim, class_dim, n_classes, n_iter):
        super().__init__()
        self.conv1 = nn.Conv2d(1, conv_channels, 9)
        self.primary = nn.Conv2d(conv_channels, primary_types * primary_dim, 9, stride=2)
        self.types, self.dim, self.n_iter = primary_types, primary_dim, n_iter
        n_in = primary_types * 6 * 6
        self.W = nn.Parameter(0.05 * torch.randn(n_in, n_classes, class_dim, primary_dim))

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        p = self.primary(h)  # (B, types*dim, 6, 6)
        b = p.shape[0]
        u = p.view(b, self.types, self.dim, 6, 6).permute(0, 1, 3, 4, 2).reshape(b, -1, self.dim)
        u = squash(u)
        u_hat = torch.einsum("ijod,bid->bijo", self.W, u)
        logits = torch.zeros(u_hat.shape[:3], device=x.device, dtype=x.dtype)
        for it in range(self.n_iter):
            c = torch.softmax(logits, dim=2)
            v = squash((c[..., None] * u_hat).sum(1))  # (B, n_out, dim)
            if it < self.n_iter - 1:
                logits = logits + (u_hat * v[:, None]).sum(-1)
        return torch.sqrt((v * v).sum(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conv-channels", type=int, default=32)
    ap.add_argument("--primary-types", type=int, default=16)
    ap.add_argument("--primary-dim", type=int, default=8)
    ap.add_argument("--class-dim", type=int, default=16)
    ap.add_argument("--n-iter", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", type=float, default=0.9)
    ap.add_argument("--shift", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="tools/train/runs/capsnet")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = out_dir(args.out)
    log = Log(out + "/log.txt")
    data = load_data(args.device)
    x, y = data["train"]
    model = CapsNet(
        args.conv_channels, args.primary_types, args.primary_dim, args.class_dim, 10, args.n_iter
    ).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, args.decay)
    log(f"args {vars(args)}; {sum(p.numel() for p in model.parameters())} parameters")
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x), device=args.device)
        total = 0.0
        for k, i in enumerate(range(0, len(x), args.batch)):
            idx = perm[i : i + args.batch]
            loss = margin_loss(model(shift_augment(x[idx], args.shift)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            if k % 100 == 0:
                log(f"epoch {epoch} step {k} loss {loss.item():.4f}")
        sched.step()
        acc = accuracy(model, *data["test"])
        log(f"epoch {epoch} mean loss {total / (k + 1):.4f} test accuracy (torch) {acc:.4f}")
        meta = {
            "architecture": "capsnet",
            "epochs": epoch,
            "torch_test_accuracy": acc,
            "args": vars(args),
        }
        save_checkpoint(out + "/checkpoint", dict(model.named_parameters()), meta)


if __name__ == "__main__":
    main()
