"""Shared pieces of the training scripts.

Development only; PyTorch is never imported by caproute.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from caproute.datasets import load_fashion_mnist


def load_data(device):
    """Fashion-MNIST as float32 tensors in [0, 1], NCHW, on `device`."""
    out = {}
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(split)
        x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        out[split] = (x.to(device), torch.from_numpy(labels.astype(np.int64)).to(device))
    return out


def margin_loss(scores, labels, m_plus=0.9, m_minus=0.1, lam=0.5):
    """Sabour et al.'s margin loss on class-capsule lengths (or activations)."""
    onehot = torch.nn.functional.one_hot(labels, scores.shape[1]).to(scores.dtype)
    present = onehot * torch.clamp(m_plus - scores, min=0) ** 2
    absent = lam * (1 - onehot) * torch.clamp(scores - m_minus, min=0) ** 2
    return (present + absent).sum(1).mean()


def spread_loss(acts, labels, margin):
    """Hinton et al.'s spread loss on class activations."""
    a_t = acts.gather(1, labels[:, None])
    loss = torch.clamp(margin - (a_t - acts), min=0) ** 2
    loss = loss.sum(1) - margin**2  # the target's own term is margin^2
    return loss.mean()


@torch.no_grad()
def accuracy(model, x, y, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    model.train()
    return correct / len(x)


def shift_augment(x, max_shift=2):
    """Random translation by up to `max_shift` pixels with zero fill, as in Sabour et al."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,))
    dy = torch.randint(0, 2 * max_shift + 1, (n,))
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
    idx = torch.arange(n, device=x.device)
    return padded[idx[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def save_checkpoint(path, arrays, meta):
    """Write tensors to an ``.npz`` (no pickle), the run's description to a ``.json`` beside it."""
    np.savez(path + ".npz", **{k: v.detach().cpu().numpy() for k, v in arrays.items()})
    with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=2)


class Log:
    def __init__(self, path):
        self.path = path
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        line = f"[{time.perf_counter() - self.t0:8.1f} s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def out_dir(path):
    os.makedirs(path, exist_ok=True)
    return path
