"""Checkpoints of the popular implementations' layouts, imported and compared output for
output: a gram-ai-style PyTorch CapsNet built here with random weights, and a Keras-style HDF5
file written here with h5py."""

import subprocess
import sys

import numpy as np
import pytest

from caproute import models
from caproute.models import WeightsMismatchError
from caproute.models.weights_file import save_file

from . import reference as ref

# ---------------------------------------------------------------- PyTorch (gram-ai layout) ----


def _torch_capsnet(torch, c1=16, n_types=6, dim=8, n_out=10, out_dim=16, eps=1e-8):
    nn = torch.nn

    def squash(s, dim_=-1):
        n2 = (s * s).sum(dim_, keepdim=True)
        return n2 / (1 + n2) * s / torch.sqrt(n2 + eps)

    class Primary(nn.Module):
        def __init__(self):
            super().__init__()
            self.capsules = nn.ModuleList([nn.Conv2d(c1, n_types, 9, stride=2) for _ in range(dim)])

        def forward(self, x):
            u = [cap(x).view(x.size(0), -1, 1) for cap in self.capsules]
            return squash(torch.cat(u, dim=-1))

    class Digit(nn.Module):
        def __init__(self, n_in):
            super().__init__()
            self.route_weights = nn.Parameter(0.1 * torch.randn(n_out, n_in, dim, out_dim))

        def forward(self, u):  # the paper's routing: softmax over the parents (dim 0)
            priors = u[None, :, :, None, :] @ self.route_weights[:, None, :, :, :]
            logits = torch.zeros_like(priors[..., :1])
            for it in range(3):
                probs = torch.softmax(logits, dim=0)
                outputs = squash((probs * priors).sum(dim=2, keepdim=True))
                if it < 2:
                    logits = logits + (priors * outputs).sum(dim=-1, keepdim=True)
            return outputs.squeeze(2).squeeze(2).transpose(0, 1)  # (B, n_out, out_dim)

    class CapsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 9)
            self.primary_capsules = Primary()
            self.digit_capsules = Digit(n_types * 36)
            self.decoder = nn.Sequential(nn.Linear(n_out * out_dim, 32), nn.ReLU())

        def forward(self, x):
            v = self.digit_capsules(self.primary_capsules(torch.relu(self.conv1(x))))
            return v.norm(dim=-1)

    return CapsNet()


@pytest.fixture(scope="module")
def torch_net():
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )
    torch.manual_seed(0)
    net = _torch_capsnet(torch).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        expected = net(x).numpy()
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return torch, net, x.numpy(), expected, sd


def _check(model, images, expected):
    out = model.predict_scores(images[:, 0], dtype="float32")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    assert np.array_equal(out.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("container", ["safetensors", "npz", "dict"])
def test_gram_ai_state_dict(torch_net, tmp_path, container):
    _, _, x, expected, sd = torch_net
    if container == "safetensors":
        save_file(tmp_path / "sd.safetensors", sd)
        source = tmp_path / "sd.safetensors"
    elif container == "npz":
        np.savez(tmp_path / "sd.npz", **sd)
        source = tmp_path / "sd.npz"
    else:
        source = sd
    model = models.capsnet_from_torch(source)
    assert model.parameter_shapes()["class_caps.weight"] == (
        10,
        216,
        8,
        16,
    )  # kept in the torch layout
    _check(model, x, expected)
    for backend in ("numpy", "numba"):
        np.testing.assert_allclose(
            model.predict_scores(x[:, 0], backend=backend), expected, rtol=1e-5, atol=1e-7
        )


def test_file_from_safetensors_package(torch_net, tmp_path):
    torch, net, x, expected, _ = torch_net
    st = pytest.importorskip("safetensors.torch", reason="the safetensors package is not installed")
    st.save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "m.safetensors")
    )
    _check(models.capsnet_from_torch(tmp_path / "m.safetensors"), x, expected)


def test_convert_torch_command(torch_net, tmp_path):
    torch, net, x, expected, _ = torch_net
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "ckpt.pt")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "caproute.cli",
            "convert-torch",
            str(tmp_path / "ckpt.pt"),
            str(tmp_path / "ckpt.safetensors"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout
    _check(models.capsnet_from_torch(tmp_path / "ckpt.safetensors"), x, expected)


def test_gram_ai_mismatches_listed(torch_net):
    _, _, _, _, sd = torch_net
    bad = dict(sd)
    del bad["conv1.bias"]
    del bad["primary_capsules.capsules.3.bias"]
    bad["fc.weight"] = np.zeros(2, np.float32)
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet_from_torch(bad)
    msg = str(info.value)
    assert "missing tensor 'conv1.bias'" in msg
    assert "missing tensor 'primary_capsules.capsules.3.bias'" in msg
    assert "unexpected tensor 'fc.weight'" in msg
    bad = dict(sd)
    bad["digit_capsules.route_weights"] = bad["digit_capsules.route_weights"][:, :100]
    with pytest.raises(
        WeightsMismatchError, match=r"tensor 'class_caps.weight' has shape \(10, 100, 8, 16\)"
    ):
        models.capsnet_from_torch(bad)


# ---------------------------------------------------------------- Keras HDF5 ----------------


def _keras_forward(x, k1, b1, k2, b2, W, dim, eps=1e-7):
    """The common Keras CapsNet, in NumPy: position-major primary capsules, W[j, i] @ u_i,
    softmax over parents, squash with Keras' epsilon inside the square root."""
    h = np.maximum(ref.conv2d_loops(x, k1, b1, 1, 0), 0)
    p = ref.conv2d_loops(h, k2, b2, 2, 0)
    u = ref.squash_np(p.reshape(p.shape[0], -1, dim), eps)
    u_hat = np.einsum("jiod,bid->bjio", W, u)
    b = np.zeros(u_hat.shape[:3])
    for it in range(3):
        c = np.exp(b - b.max(1, keepdims=True))
        c /= c.sum(1, keepdims=True)
        v = ref.squash_np(np.einsum("bji,bjio->bjo", c, u_hat), eps)
        if it < 2:
            b = b + np.einsum("bjo,bjio->bji", v, u_hat)
    return np.linalg.norm(v, axis=-1)


def _write_keras_h5(path, weights, full_model):
    h5py = pytest.importorskip(
        "h5py", reason="h5py is not installed (pip install 'caproute[keras]')"
    )
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names = ["input_1", "conv1", "primarycap_conv2d", "primarycap_reshape", "digitcaps"]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer in names:
            group = root.create_group(layer)
            mine = {k.split("/")[1]: v for k, v in weights.items() if k.split("/")[0] == layer}
            group.attrs["weight_names"] = np.array([f"{layer}/{w}:0".encode() for w in mine])
            for w, value in mine.items():
                group.create_dataset(f"{layer}/{w}:0", data=value)


@pytest.mark.parametrize("full_model", [False, True])
def test_keras_h5(tmp_path, full_model):
    rng = np.random.default_rng(0)
    c1, n_types, dim = 8, 4, 8
    weights = {
        "conv1/kernel": 0.2 * rng.normal(size=(5, 5, 1, c1)).astype(np.float32),
        "conv1/bias": 0.1 * rng.normal(size=c1).astype(np.float32),
        "primarycap_conv2d/kernel": 0.2
        * rng.normal(size=(5, 5, c1, n_types * dim)).astype(np.float32),
        "primarycap_conv2d/bias": 0.1 * rng.normal(size=n_types * dim).astype(np.float32),
        "digitcaps/W": 0.3 * rng.normal(size=(10, 9 * n_types, 16, dim)).astype(np.float32),
    }
    path = tmp_path / "capsnet.h5"
    _write_keras_h5(path, weights, full_model)
    model = models.capsnet_from_keras_h5(path, primary_dim=dim, input_shape=(14, 14, 1))
    x = rng.random((3, 14, 14, 1)).astype(np.float32)
    expected = _keras_forward(
        x.astype(np.float64), *(w.astype(np.float64) for w in weights.values()), dim
    )
    np.testing.assert_allclose(model.predict_scores(x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict_scores(x, dtype="float64"), expected, rtol=1e-11)
    assert models.read_keras_h5(path).keys() == weights.keys()


def test_keras_h5_missing_layers(tmp_path):
    path = tmp_path / "bad.h5"
    _write_keras_h5(path, {"conv1/kernel": np.zeros((3, 3, 1, 2), np.float32)}, False)
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet_from_keras_h5(path)
    assert "missing tensor 'digitcaps/W'" in str(info.value)
    assert "missing tensor 'conv1/bias'" in str(info.value)


def test_keras_h5_not_keras(tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py is not installed")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("a", data=np.zeros(3))
    with pytest.raises(models.WeightsFileError, match="not a Keras 2 weights file"):
        models.read_keras_h5(tmp_path / "x.h5")
    (tmp_path / "y.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(models.WeightsFileError, match="could not be opened as HDF5"):
        models.read_keras_h5(tmp_path / "y.h5")
