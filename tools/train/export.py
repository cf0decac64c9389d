"""Turn a training checkpoint (``.npz`` + ``.json`` from the training scripts) into a shipped
caproute model: convert the tensors, evaluate with caproute on the full Fashion-MNIST test set
and on the bundled subset, write the safetensors file and its registry entry.

    python tools/train/export.py tools/train/runs/capsnet/checkpoint capsnet-fashion-mnist \
        --command "python tools/train/train_capsnet.py --epochs 10"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np

from caproute import models
from caproute.datasets import CLASS_NAMES, load_fashion_mnist, load_fashion_mnist_subset

PRETRAINED = os.path.join(os.path.dirname(__file__), "..", "..", "caproute", "models", "pretrained")


def hwio(w):
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def build_capsnet(arrays, args):
    net = models.capsnet(
        conv_channels=args["conv_channels"],
        primary_types=args["primary_types"],
        primary_dim=args["primary_dim"],
        class_dim=args["class_dim"],
        n_iter=args["n_iter"],
        classes=CLASS_NAMES,
        name="capsnet-fashion-mnist",
    )
    return net.set_weights(
        {
            "conv1.weight": hwio(arrays["conv1.weight"]),
            "conv1.bias": arrays["conv1.bias"],
            "primary_caps.weight": hwio(arrays["primary.weight"]),
            "primary_caps.bias": arrays["primary.bias"],
            "class_caps.weight": arrays["W"],
        }
    )


def build_matrix_capsnet(arrays, args):
    net = models.matrix_capsnet(
        args["A"],
        args["B"],
        args["C"],
        args["D"],
        n_iter=args["n_iter"],
        inverse_temperature=args["inverse_temperature"],
        competition="position",
        classes=CLASS_NAMES,
        name="matrix-capsnet-fashion-mnist",
    )
    weights = {}
    for key, value in arrays.items():
        layer, pname = key.split(".", 1)
        weights[f"{layer}.{pname}"] = (
            hwio(value)
            if pname.endswith("weight") and value.ndim == 4 and layer in ("conv1", "primary_caps")
            else value
        )
    return net.set_weights(weights)


def accuracy(net, images, labels):
    t0 = time.perf_counter()
    pred = np.asarray(net.predict(images, batch_size=250))
    return float((pred == labels).mean()), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", help="path without extension (.npz and .json beside it)")
    ap.add_argument("name", help="registry name, e.g. capsnet-fashion-mnist")
    ap.add_argument("--command", required=True, help="the training command, for the record")
    ap.add_argument("--notes", default="")
    opts = ap.parse_args()

    with open(opts.checkpoint + ".json") as f:
        meta = json.load(f)
    with np.load(opts.checkpoint + ".npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    build = {"capsnet": build_capsnet, "matrix_capsnet": build_matrix_capsnet}[meta["architecture"]]
    net = build(arrays, meta["args"])
    print(net.summary())

    test_acc, secs = accuracy(net, *load_fashion_mnist("test"))
    subset_acc, _ = accuracy(net, *load_fashion_mnist_subset())
    print(
        f"caproute test accuracy {test_acc:.4f} ({secs:.1f} s), subset {subset_acc:.4f}, "
        f"torch said {meta['torch_test_accuracy']:.4f}"
    )

    filename = opts.name + ".safetensors"
    record = {
        "architecture": meta["architecture"],
        "n_parameters": net.n_parameters(),
        "training_command": opts.command,
        "epochs": meta["epochs"],
        "test_accuracy": test_acc,
        "subset_accuracy": subset_acc,
        "input_range": [0, 1],  # the training images were uint8 / 255
        "torch_test_accuracy": meta["torch_test_accuracy"],
        "notes": opts.notes,
    }
    path = os.path.join(PRETRAINED, filename)
    models.save(net, path, metadata={k: json.dumps(v) for k, v in record.items()})
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    reg_path = os.path.join(PRETRAINED, "registry.json")
    with open(reg_path) as f:
        registry = json.load(f)
    registry[opts.name] = {"file": filename, "sha256": digest, **record}
    with open(reg_path, "w") as f:
        json.dump(registry, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, sha256 {digest})")


if __name__ == "__main__":
    main()
