"""``caproute convert`` on the PyTorch fixtures of tests/models/fixtures/torch (see
tests/models/test_torch_import.py): the command builds each network, prints it layer by layer,
writes a model file that gives PyTorch's outputs, and refuses what it cannot do in one line."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caproute import cli, models

FIXTURES = Path(__file__).parent / "models" / "fixtures" / "torch"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def run_main(capsys, *args):
    """``cli.main(args)`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def options(name):
    """The command-line options that give a fixture's hints."""
    hints = MANIFEST[name]["hints"]
    act = hints["activation"]
    if isinstance(act, dict):
        act = f"{act['name']}:{act['negative_slope']}"
    elif isinstance(act, list):
        act = ",".join(act)
    out = ["--activation", act, "--n-iter", hints["n_iter"]]
    out += ["--input-shape", ",".join(map(str, hints["input_shape"]))]
    if "batchnorm_eps" in hints:
        out += ["--batchnorm-eps", hints["batchnorm_eps"]]
    em = hints.get("em_options")
    if em is not None:
        out += ["--em-options", em if isinstance(em, str) else json.dumps(em)]
    return out


def reference(name):
    with np.load(FIXTURES / MANIFEST[name]["outputs"]) as f:
        return f["input"], f["scores"]


def scores(model, x):
    out = model.forward(x)
    return out[1] if isinstance(out, tuple) else np.sqrt(np.sum(out * out, axis=-1))


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if n != "gram_ai_relu_pt"))
def test_convert_each_layout(capsys, tmp_path, name):
    source = FIXTURES / MANIFEST[name]["file"]
    target = tmp_path / "net.safetensors"
    status, out, err = run_main(capsys, "convert", source, target, *options(name))
    assert status == 0, err
    net = models.load(target)
    # the architecture, layer by layer with shapes, and the notes
    for layer, (_, shape) in zip(net.layers, net._shapes, strict=True):
        shown = shape[0] if isinstance(shape[0], tuple) else shape
        assert f"{layer.name}" in out and str(tuple(shown)) in out
    assert "notes:" in out and "given" in out and f"to {target}" in out
    x, want = reference(name)
    np.testing.assert_allclose(scores(net, x), want, rtol=1e-4, atol=1e-7)


def test_json_document_and_a_caproute_file(capsys, tmp_path):
    target = tmp_path / "g.safetensors"
    status, out, err = run_main(
        capsys, "--json", "convert", FIXTURES / "gram_ai_relu.safetensors", target,
        *options("gram_ai_relu"), "--classes", "a,b,c,d,e",
    )  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    assert doc["layout"] == "gram-ai" and doc["source_kind"] == "safetensors"
    assert doc["dropped"] == ["decoder.0.bias", "decoder.0.weight", "decoder.2.bias", "decoder.2.weight"]  # fmt: skip
    assert doc["input_shape"] == [14, 14, 1] and doc["classes"] == list("abcde")
    assert [layer["class"] for layer in doc["architecture"]["layers"]] == [
        "Conv2D",
        "PrimaryCaps",
        "DenseCaps",
    ]
    # a caproute model file is read and written again
    status, out, err = run_main(capsys, "convert", target, tmp_path / "again.safetensors")
    assert status == 0, err
    assert "already a caproute model file: read and written again" in out
    assert models.load(tmp_path / "again.safetensors").classes == list("abcde")


def test_what_the_file_does_not_record_is_asked_for(capsys, tmp_path):
    source = FIXTURES / "matrix_yl1993.safetensors"
    target = tmp_path / "m.safetensors"
    full = options("matrix_yl1993")
    for option, cli_name in (
        ("--activation", "--activation"),
        ("--em-options", "--em-options"),
        ("--batchnorm-eps", "--batchnorm-eps"),
        ("--n-iter", "--n-iter"),
    ):
        i = full.index(option)
        status, _, err = run_main(capsys, "convert", source, target, *full[:i], *full[i + 2 :])
        assert status == 1, option
        assert "is not recorded" in err or "does not record" in err
        assert f"(on the command line: {cli_name})" in err
        assert not target.exists()
    status, _, err = run_main(capsys, "convert", source, target, *full, "--em-options", "tf")
    assert status == 1 and "`em_options` must be one of ['paper', 'yl-1993']" in err


def test_bad_usage_exits_2(capsys, tmp_path):
    source = FIXTURES / "gram_ai_relu.safetensors"
    target = tmp_path / "x.safetensors"
    status, _, err = run_main(capsys, "convert", source, target, "--activation", "leaky_relu")
    assert status == 2 and "leaky_relu needs its slope: leaky_relu:0.01" in err
    status, _, err = run_main(capsys, "convert", source, target, "--strides", "conv1=")
    assert status == 2 and "expected LAYER=N pairs" in err
    status, _, err = run_main(capsys, "convert", source, target, "--em-options", "{bad")
    assert status == 2 and "expected a preset name or JSON" in err
    status, _, err = run_main(
        capsys, "convert", source, target, *options("gram_ai_relu"), "--weight-layout", "keras"
    )
    assert status == 2 and "--weight-layout applies to Keras weights-only files" in err
    status, _, err = run_main(capsys, "convert", source, target, "--caps-name", "digitcaps")
    assert status == 2 and "--caps-name apply to Keras HDF5 files" in err
    status, _, err = run_main(capsys, "convert", source, target, "--layout", "keras")
    assert status == 2 and "invalid choice: 'keras'" in err
    assert not target.exists()


def test_bad_files_fail_with_one_line(capsys, tmp_path):
    data = (FIXTURES / "gram_ai_relu.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:1000])
    status, _, err = run_main(
        capsys, "convert", tmp_path / "cut.safetensors", tmp_path / "o.st", *options("gram_ai_relu")
    )
    assert status == 1 and "cut.safetensors" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "w.pt").write_bytes(pickle.dumps({"conv1.weight": [1.0]}))
    status, _, err = run_main(capsys, "convert", tmp_path / "w.pt", tmp_path / "o.st")
    assert status == 1 and "caproute never unpickles arbitrary objects" in err
    # a layout that is not known: the closest one, and what to do
    sd = models.read_state_dict(FIXTURES / "gram_ai_relu.safetensors")
    sd["caps.W"] = sd.pop("digit_capsules.route_weights")
    np.savez(tmp_path / "renamed.npz", **sd)
    status, _, err = run_main(
        capsys, "convert", tmp_path / "renamed.npz", tmp_path / "o.st", *options("gram_ai_relu")
    )
    assert status == 1 and "unknown tensor 'caps.W'" in err and "--state-dict" in err
    assert not (tmp_path / "o.st").exists()


def test_a_pytorch_checkpoint_by_subprocess(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    source = FIXTURES / "gram_ai_relu.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "caproute", "convert", str(source), "net.safetensors"]
        + [str(o) for o in options("gram_ai_relu_pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "class_caps    DenseCaps    (5, 6)" in proc.stdout
    x, want = reference("gram_ai_relu_pt")
    np.testing.assert_allclose(
        scores(models.load(tmp_path / "net.safetensors"), x), want, rtol=1e-4, atol=1e-7
    )
    # convert-torch: the tensors only, as before
    legacy = subprocess.run(
        [sys.executable, "-m", "caproute", "convert-torch", str(source), "sd.safetensors"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert legacy.returncode == 0, legacy.stderr
    assert "tensors to sd.safetensors" in legacy.stdout
    assert "digit_capsules.route_weights" in models.read_state_dict(tmp_path / "sd.safetensors")
