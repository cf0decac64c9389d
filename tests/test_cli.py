"""The ``caproute`` command: every command run as the user runs it (a subprocess of
``python -m caproute``) on small files written here, and the error cases in-process
(``cli.main``), which is faster and shows the same messages and exit codes."""

import csv
import gzip
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from caproute import cli, models
from caproute.datasets import CLASS_NAMES, load_fashion_mnist_subset


def pillow():
    """PIL.Image, or a skip that says how to get it (the test extra has Pillow)."""
    return pytest.importorskip(
        "PIL.Image", reason="Pillow is not installed (pip install 'caproute[images]')"
    )


MODEL = "capsnet-fashion-mnist"


def caproute(*args, cwd=None, env=None):
    """Run ``python -m caproute ARGS``; the completed process (text)."""
    return subprocess.run(
        [sys.executable, "-m", "caproute", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_fails(proc, status, *fragments):
    """A clean failure: the exit status, ``caproute: error:`` and the fragments, no traceback."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "caproute: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def run_main(capsys, *args):
    """``cli.main(args)`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def subset():
    images, labels = load_fashion_mnist_subset()
    return images[:24], labels[:24]


@pytest.fixture(scope="module")
def expected(subset):
    """The shipped model's classes and probabilities for the subset (uint8 through Model)."""
    net = models.load_pretrained(MODEL)
    images, _ = subset
    return net.predict(images), net.predict_proba(images)


@pytest.fixture(scope="module")
def files(tmp_path_factory, subset):
    """Small inputs: a folder of PNGs, .npy and IDX images, labels, CSV and .npy points."""
    root = tmp_path_factory.mktemp("cli")
    images, labels = subset
    np.savetxt(root / "labels12.txt", labels[:12], fmt="%d")
    np.save(root / "images.npy", images)
    np.save(root / "labels.npy", labels)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 24, 0, 0, 0, 28, 0, 0, 0, 28]) + images.tobytes())
    with open(root / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 24]) + labels.tobytes())
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    truth = np.repeat(np.arange(3), 40)
    points = centres[truth] + rng.normal(scale=0.6, size=(120, 2))
    with open(root / "points.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y"])
        writer.writerows(points.tolist())
    np.save(root / "points.npy", points)
    np.save(root / "truth.npy", truth)
    return root


@pytest.fixture(scope="module")
def pngs(files, subset):
    """A folder ``pngs`` of 12 PNG images (and a text file) in ``files``; ``files``."""
    Image = pillow()
    folder = files / "pngs"
    if not folder.exists():
        folder.mkdir()
        for i in range(12):
            Image.fromarray(subset[0][i]).save(folder / f"img{i:02d}.png")
        (folder / "notes.txt").write_text("not an image\n")
    return files


# ----------------------------------------------------------------------- the command itself
def test_version_help_and_python_m():
    from caproute import __version__

    out = caproute("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"caproute {__version__}"
    help_ = caproute("--help")
    assert help_.returncode == 0
    for command in ("predict", "cluster", "mixture", "convert", "info", "demo", "toy", "bench"):
        assert command in help_.stdout
    assert "exit status:" in help_.stdout and "2  bad usage" in help_.stdout
    # plain text, no reST markup
    assert "``" not in help_.stdout and ":class:" not in help_.stdout
    no_command = caproute()
    assert_fails(no_command, 2, "required: COMMAND")
    bad = caproute("nonsense")
    assert_fails(bad, 2, "invalid choice: 'nonsense'")


def test_every_command_has_plain_help(capsys):
    for command in ("predict", "cluster", "mixture", "convert", "convert-torch", "demo", "toy"):
        status, out, _ = run_main(capsys, command, "--help")
        assert status == 0
        assert f"usage: caproute {command}" in out
        assert "``" not in out and ":func:" not in out and ".. " not in out
    status, out, _ = run_main(capsys, "bench", "--help")
    assert status == 0 and "--suite" in out and "--quick" in out


def test_bad_usage_exits_2_without_traceback(capsys):
    status, _, err = run_main(capsys, "demo", "--backend", "torch")
    assert status == 2 and "caproute: error: argument --backend: invalid choice: 'torch'" in err
    status, _, err = run_main(capsys, "demo", "--batch", "0")
    assert status == 2 and "argument --batch: expected an integer >= 1; got '0'" in err
    status, _, err = run_main(capsys, "cluster", "x.csv", "--method", "kmeans", "--n-clusters", 2)
    assert status == 2 and "invalid choice: 'kmeans'" in err
    status, _, err = run_main(capsys, "cluster", "x.csv", "--method", "gmm")
    assert status == 2 and "required: --n-clusters" in err
    status, _, err = run_main(capsys, "predict", "--model", MODEL, "x.npy", "--scale", "1/0")
    assert status == 2 and "expected a positive number or fraction such as 1/255" in err
    status, _, err = run_main(capsys, "convert", "a.pt", "b.safetensors", "--input-shape", "28,28")
    assert status == 2 and "expected 3 positive integers" in err


# ------------------------------------------------------------------------------------ predict
def test_predict_a_folder_of_pngs(pngs, subset, expected):
    files = pngs
    proc = caproute(
        "predict", "--model", MODEL, "pngs", "--labels", "labels12.txt", "-o", "out.csv", cwd=files
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "skipped 1 entries that are not image files" in proc.stderr
    pred, proba = expected
    labels = subset[1][:12]
    accuracy = np.mean(pred[:12] == labels)
    assert f"accuracy: {accuracy:.2%} ({int(np.sum(pred[:12] == labels))} of 12 images)" in (
        proc.stdout
    )
    assert "confusion matrix (rows: true class, columns: predicted class):" in proc.stdout
    assert "wrote the predictions for 12 images to out.csv" in proc.stdout
    with open(files / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [
        os.path.join("pngs", f"img{i:02d}.png") for i in range(12)
    ]
    assert [int(r["class"]) for r in rows] == pred[:12].tolist()
    assert [r["name"] for r in rows] == [CLASS_NAMES[c] for c in pred[:12]]
    assert [int(r["true"]) for r in rows] == labels.tolist()
    written = np.array([[float(r[f"p_{j}"]) for j in range(10)] for r in rows])
    np.testing.assert_allclose(written, proba[:12], rtol=1e-5, atol=1e-6)


def test_predict_npy_and_idx_as_json(files, subset, expected):
    proc = caproute(
        "predict",
        "--model",
        MODEL,
        "images.npy",
        "t10k-images-idx3-ubyte.gz",
        "--labels",
        "labels.npy",
        "--json",
        cwd=files,
    )
    # two sources of 24 images each, one labels file of 24: refused, clearly
    assert_fails(proc, 1, "holds 24 labels for 48 images")
    doc = json.loads(proc.stdout)
    assert doc["exit_status"] == 1 and "24 labels for 48 images" in doc["error"]
    proc = caproute(
        "--json", "predict", "--model", MODEL, "t10k-images-idx3-ubyte.gz", "--labels",
        "t10k-labels-idx1-ubyte", cwd=files,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # one JSON document, nothing else on stdout
    pred, proba = expected
    labels = subset[1]
    assert doc["model"] == MODEL and doc["classes"] == list(CLASS_NAMES)
    assert doc["n_images"] == 24
    assert [p["image"] for p in doc["predictions"][:2]] == [
        "t10k-images-idx3-ubyte.gz[0]",
        "t10k-images-idx3-ubyte.gz[1]",
    ]
    assert [p["class"] for p in doc["predictions"]] == pred.tolist()
    # the same numbers as the model gives the uint8 images itself
    np.testing.assert_array_equal(
        np.array([p["probabilities"] for p in doc["predictions"]], dtype=np.float32), proba
    )
    assert doc["accuracy"] == pytest.approx(float(np.mean(pred == labels)))
    matrix = np.array(doc["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 24
    assert np.trace(matrix) == int(np.sum(pred == labels))


def test_predict_input_contract(capsys, files, subset, expected, tmp_path):
    images, _ = subset
    pred = expected[0][:4].tolist()

    def classes(*args):
        status, out, err = run_main(capsys, "--json", "predict", "--model", MODEL, *args)
        assert status == 0, err
        return [p["class"] for p in json.loads(out)["predictions"]]

    # floats in [0, 255]: refused with the fix, which then gives uint8's classes
    np.save(tmp_path / "f255.npy", images[:4].astype(np.float32))
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "f255.npy")
    assert status == 1
    assert "has values in [0, 255], but model 'capsnet-fashion-mnist' takes values in [0, 1]" in err
    assert "pass --scale 1/255" in err
    assert classes(tmp_path / "f255.npy", "--scale", "1/255") == pred
    # floats in [0, 1] as given
    np.save(tmp_path / "f1.npy", images[:4] / np.float32(255))
    assert classes(tmp_path / "f1.npy") == pred
    # uint16 needs --scale
    np.save(tmp_path / "u16.npy", images[:4].astype(np.uint16) * 257)
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "u16.npy")
    assert status == 1 and "holds uint16 integers" in err and "--scale 1/65535" in err
    assert classes(tmp_path / "u16.npy", "--scale", "1/65535") == pred
    # NaN
    bad = images[:2].astype(np.float32) / 255
    bad[1, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "nan.npy")
    assert status == 1 and "holds NaN or inf (image 1 of the file)" in err
    # arrays of other shapes
    np.save(tmp_path / "chw.npy", images[:2, None])
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "chw.npy")
    assert status == 1 and "looks channels-first (n, C, H, W)" in err
    np.save(tmp_path / "5d.npy", np.zeros((1, 2, 28, 28, 1), np.uint8))
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "5d.npy")
    assert status == 1 and "expected images of shape (n, H, W) or (n, H, W, C)" in err
    np.save(tmp_path / "bool.npy", np.zeros((1, 28, 28), bool))
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "bool.npy")
    assert status == 1 and "holds bool values" in err


def test_predict_image_files_contract(capsys, subset, expected, tmp_path):
    Image = pillow()
    images, _ = subset
    pred = expected[0][:4].tolist()

    def classes(*args):
        status, out, err = run_main(capsys, "--json", "predict", "--model", MODEL, *args)
        assert status == 0, err
        return [p["class"] for p in json.loads(out)["predictions"]]

    # a 16-bit PNG is scaled by 1/65535
    Image.fromarray(images[0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert classes(tmp_path / "deep.png") == pred[:1]
    # another size: refused with the model's input, or resized on request
    Image.fromarray(images[0]).resize((36, 36)).save(tmp_path / "big.png")
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "big.png")
    assert status == 1
    assert (
        "is 36x36 pixels (height x width), but model 'capsnet-fashion-mnist' takes 28x28 grey"
        in err
    )
    assert "pass --resize" in err
    assert classes(tmp_path / "big.png", "--resize") == pred[:1]
    # colour: grey stored as RGB is grey; real colour needs --grey
    Image.fromarray(np.stack([images[0]] * 3, axis=-1)).save(tmp_path / "rgb_grey.png")
    assert classes(tmp_path / "rgb_grey.png") == pred[:1]
    colour = np.stack([images[0], images[0] // 2, images[0]], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "colour.png")
    assert status == 1 and "is in colour (3 channels)" in err and "pass --grey" in err
    assert len(classes(tmp_path / "colour.png", "--grey")) == 1
    # a palette image of grey levels is grey
    Image.fromarray(images[0]).convert("P").save(tmp_path / "palette.png")
    assert classes(tmp_path / "palette.png") == pred[:1]
    # a light background is warned about; --invert turns it around
    Image.fromarray(255 - images[0]).save(tmp_path / "inverted.png")
    status, out, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "inverted.png")
    assert status == 0 and "caproute: warning: 1 of 1 images have a light background" in err
    assert classes(tmp_path / "inverted.png", "--invert") == pred[:1]


def test_images_need_pillow(capsys, tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "PIL", None)
    status, _, err = run_main(capsys, "predict", "--model", MODEL, tmp_path / "a.png")
    assert status == 1
    assert "needs Pillow: pip install 'caproute[images]' (or pip install pillow)" in err


def test_predict_bad_files(capsys, files, tmp_path):
    pillow()

    def fails(*args):
        status, _, err = run_main(capsys, "predict", "--model", MODEL, *args)
        assert status == 1, err
        assert err.startswith("caproute: error: ")
        return err

    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    assert "is not an image file Pillow can read" in fails(tmp_path / "garbage.png")
    noise = np.random.default_rng(0).integers(256, size=(28, 28), dtype=np.uint8)
    pillow().fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    assert "is damaged or truncated" in fails(tmp_path / "cut.png")
    assert "does not exist" in fails(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    assert f"folder {str(tmp_path / 'empty')!r} holds no image files" in fails(tmp_path / "empty")
    with open(tmp_path / "obj.npy", "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "holds Python objects (an object array), which caproute never unpickles" in fails(
        tmp_path / "obj.npy"
    )
    (tmp_path / "fake.npy").write_bytes(b"\x93NUMPY garbage")
    assert "could not be read as a .npy array" in fails(tmp_path / "fake.npy")
    (tmp_path / "short-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28]))
    assert "IDX file" in fails(tmp_path / "short-idx3-ubyte")
    # labels
    images = files / "images.npy"
    assert f"labels file {str(tmp_path)!r} is a directory; expected a file." in fails(
        images, "--labels", tmp_path
    )
    np.save(tmp_path / "big_labels.npy", np.full(24, 10))
    assert "label 10 (entry 0) is not a class of the model, which has classes 0 to 9" in fails(
        images, "--labels", tmp_path / "big_labels.npy"
    )
    (tmp_path / "words.txt").write_text("\n".join(["Bag"] * 23 + ["Hat"]) + "\n")
    assert "line 24: 'Hat' is not a class index or a class name (T-shirt/top" in fails(
        images, "--labels", tmp_path / "words.txt"
    )
    # the model
    status, _, err = run_main(capsys, "predict", "--model", "no-such-model", images)
    assert status == 2 and "--model 'no-such-model' is neither a shipped model" in err
    status, _, err = run_main(capsys, "predict", "--model", tmp_path, images)
    assert status == 1 and f"model file {str(tmp_path)!r} is a directory; expected a file." in err
    with open(tmp_path / "net.pt", "wb") as f:
        pickle.dump({"w": [1.0]}, f)
    status, _, err = run_main(capsys, "predict", "--model", tmp_path / "net.pt", images)
    assert status == 1 and "convert it once with `caproute convert net.pt" in err
    # the output
    status, _, err = run_main(capsys, "predict", "--model", MODEL, images, "-o", tmp_path)
    assert status == 1 and "is a directory; expected a file name" in err
    status, _, err = run_main(
        capsys, "predict", "--model", MODEL, images, "-o", tmp_path / "no" / "out.csv"
    )
    assert status == 1 and "does not exist" in err


def test_class_names_as_labels_and_image_label_rows(capsys, pngs, subset, expected):
    files = pngs
    labels = subset[1][:12]
    names_file = files / "names.csv"
    names_file.write_text("label\n" + "".join(f"{CLASS_NAMES[c]}\n" for c in labels))
    pairs = files / "pairs.csv"
    rows = [f"img{i:02d}.png,{labels[i]}" for i in reversed(range(12))]  # any order
    pairs.write_text("image,label\n" + "\n".join(rows) + "\n")
    for labels_file in (names_file, pairs):
        status, out, err = run_main(
            capsys, "--json", "predict", "--model", MODEL, files / "pngs", "--labels", labels_file
        )
        assert status == 0, err
        doc = json.loads(out)
        assert [p["true"] for p in doc["predictions"]] == labels.tolist()
        assert doc["accuracy"] == pytest.approx(float(np.mean(expected[0][:12] == labels)))


def test_progress_quiet_and_debug(capsys, files):
    images = files / "images.npy"
    status, _, err = run_main(capsys, "predict", "--model", MODEL, images, "--progress")
    assert status == 0 and "classifying: 100%" in err and "24/24" in err
    status, out, err = run_main(
        capsys, "--quiet", "predict", "--model", MODEL, images, "--progress"
    )
    assert status == 0 and err == "" and "Ankle boot" in out
    proc = caproute("--debug", "predict", "--model", MODEL, "missing.npy", cwd=files)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "WorkError: image file 'missing.npy' does not exist" in (
        proc.stderr
    )


# ----------------------------------------------------------------------- cluster and mixture
def test_cluster_a_csv(files):
    from sklearn.metrics import adjusted_rand_score

    truth = np.load(files / "truth.npy")
    proc = caproute(
        "cluster", "points.csv", "--method", "gmm", "--n-clusters", 3, "-o", "labels.csv",
        cwd=files,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "gmm clustering of 120 points (2 features) into 3 clusters" in proc.stdout
    assert "wrote 120 labels to labels.csv" in proc.stdout and "BIC" in proc.stdout
    with open(files / "labels.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "label" and len(lines) == 121
    labels = np.array([int(v) for v in lines[1:]])
    assert adjusted_rand_score(truth, labels) == 1.0
    for size in np.bincount(labels):
        assert f"{size:>8}  {size / 120:>7.1%}" in proc.stdout


def test_cluster_says_when_it_compiles(files, tmp_path):
    """A fresh Numba cache: the fit compiles its kernels and says so once, on stderr."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    args = ("cluster", "points.npy", "--method", "dynamic", "--n-clusters", 3, "--seed", 1)
    cold = caproute(*args, cwd=files, env=env)
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count("caproute: compiling kernels (first run only") == 1
    warm = caproute(*args, cwd=files, env=env)
    assert warm.returncode == 0 and "compiling kernels" not in warm.stderr

    def timeless(text):
        return re.sub(r"\d+\.\d+ s\b", "", text)

    assert timeless(warm.stdout) == timeless(cold.stdout)  # the same clusters


@pytest.mark.parametrize("method", ["dynamic", "em"])
def test_cluster_with_routing(capsys, files, method):
    from sklearn.metrics import adjusted_rand_score

    status, out, err = run_main(
        capsys, "--json", "cluster", files / "points.npy", "--method", method, "--n-clusters", 3,
        "--seed", 1, "-o", files / f"{method}.csv",
    )  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    assert doc["method"] == method and doc["n_samples"] == 120 and doc["n_features"] == 2
    assert sorted(doc["cluster_sizes"]) == [40, 40, 40]
    assert len(doc["activations"]) == 3 and doc["converged"] is True
    labels = np.loadtxt(files / f"{method}.csv", skiprows=1, dtype=int)
    assert adjusted_rand_score(np.load(files / "truth.npy"), labels) == 1.0


def test_cluster_bad_data(capsys, files, tmp_path, monkeypatch):
    def fails(path, *more, status=1):
        code, _, err = run_main(
            capsys, "cluster", path, "--method", "gmm", "--n-clusters", 2, *more
        )
        assert code == status, err
        return err

    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,x\n")
    assert "line 3, column 'b' holds 'x', not a number; pick the numeric columns" in fails(
        tmp_path / "text.csv"
    )
    (tmp_path / "gap.csv").write_text("1,2\n3,\n5,6\n")
    assert "line 2, column '1' is empty" in fails(tmp_path / "gap.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    assert "line 3: 1 values, but the header has 2" in fails(tmp_path / "ragged.csv")
    (tmp_path / "inf.csv").write_text("1 2\n3 inf\n5 6\n")
    assert "row 2, column '1' is inf; caproute needs finite numbers" in fails(tmp_path / "inf.csv")
    (tmp_path / "ids.csv").write_text("id;a;b\nx;1;2\ny;3;4\nz;8;9\n")
    code, out, err = run_main(
        capsys, "--json", "cluster", tmp_path / "ids.csv", "--method", "gmm", "--n-clusters", 2,
        "--columns", "a,2",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["columns"] == ["a", "b"]
    assert "--columns: 'q' is not a column of" in fails(
        tmp_path / "ids.csv", "--columns", "a,q", status=2
    )
    (tmp_path / "empty.csv").write_text("\n\n")
    assert "is empty" in fails(tmp_path / "empty.csv")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    assert "holds an array of shape (2, 3, 4); expected (n_samples, n_features)" in fails(
        tmp_path / "cube.npy"
    )
    np.save(tmp_path / "two.npy", np.zeros((1, 2)))
    assert "--n-clusters 2 is more than the 1 points of" in fails(tmp_path / "two.npy")
    assert "is a directory; expected a file" in fails(tmp_path)
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert "is not a text (UTF-8) CSV file" in fails(tmp_path / "binary.csv")
    (tmp_path / "weights.npz").write_bytes(b"PK")
    assert ".npz files are not read; give a CSV, .npy or .parquet file" in fails(
        tmp_path / "weights.npz"
    )
    # .parquet without pyarrow
    (tmp_path / "points.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert "needs pyarrow: pip install pyarrow" in fails(tmp_path / "points.parquet")


def test_cluster_a_parquet_file(capsys, files, tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install pyarrow)")
    import pyarrow.parquet as pq

    points = np.load(files / "points.npy")
    table = pa.table({"x": points[:, 0], "y": points[:, 1], "name": ["p"] * len(points)})
    pq.write_table(table, tmp_path / "points.parquet")
    status, _, err = run_main(
        capsys, "cluster", tmp_path / "points.parquet", "--method", "gmm", "--n-clusters", 3
    )
    assert status == 1 and "column 'name' holds string values, not numbers" in err
    status, out, err = run_main(
        capsys, "--json", "cluster", tmp_path / "points.parquet", "--method", "gmm",
        "--n-clusters", 3, "--columns", "x,y",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["columns"] == ["x", "y"]
    assert sorted(json.loads(out)["cluster_sizes"]) == [40, 40, 40]


def test_mixture(files):
    from caproute.mixture import GaussianMixture

    proc = caproute(
        "mixture", "points.csv", "--n-components", 3, "--covariance-type", "diag", "--seed", 2,
        "-o", "gmm.json", cwd=files,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    points = np.load(files / "points.npy")
    gm = GaussianMixture(3, covariance_type="diag", random_state=2).fit(points)
    with open(files / "gmm.json") as f:
        doc = json.load(f)
    assert doc["format"] == "caproute-gaussian-mixture" and doc["covariance_type"] == "diag"
    assert doc["columns"] == ["x", "y"] and doc["n_samples"] == 120
    np.testing.assert_allclose(doc["weights"], gm.weights_, rtol=1e-12)
    np.testing.assert_allclose(doc["means"], gm.means_, rtol=1e-12)
    np.testing.assert_allclose(doc["covariances"], gm.covariances_, rtol=1e-12)
    np.testing.assert_allclose(doc["precisions_cholesky"], gm.precisions_cholesky_, rtol=1e-12)
    assert doc["bic"] == pytest.approx(gm.bic(points), rel=1e-12)
    assert doc["aic"] == pytest.approx(gm.aic(points), rel=1e-12)
    assert doc["log_likelihood"] == pytest.approx(gm.score(points) * 120, rel=1e-12)
    assert doc["n_iter"] == gm.n_iter_ and doc["converged"] is True
    for text in (
        f"BIC                  {doc['bic']:.6g}",
        f"AIC                  {doc['aic']:.6g}",
    ):
        assert text in proc.stdout
    assert "converged            yes" in proc.stdout and "mean x" in proc.stdout


def test_mixture_json_and_warnings(capsys, files):
    status, out, err = run_main(
        capsys, "--json", "mixture", files / "points.npy", "--n-components", 3, "--max-iter", 1
    )
    assert status == 0
    doc = json.loads(out)
    assert doc["converged"] is False and doc["n_iter"] == 1
    assert "did not converge" in doc["warnings"][0]
    assert "caproute: warning: " in err and "did not converge" in err
    assert np.array(doc["covariances"]).shape == (3, 2, 2)


# ------------------------------------------------------------------------------------ convert
def _gram_ai_state_dict():
    rng = np.random.default_rng(0)
    sd = {
        "conv1.weight": (0.1 * rng.normal(size=(16, 1, 9, 9))).astype(np.float32),
        "conv1.bias": np.zeros(16, np.float32),
        "digit_capsules.route_weights": (0.1 * rng.normal(size=(10, 4 * 36, 8, 16))).astype(
            np.float32
        ),
    }
    for d in range(8):
        sd[f"primary_capsules.capsules.{d}.weight"] = (0.1 * rng.normal(size=(4, 16, 9, 9))).astype(
            np.float32
        )
        sd[f"primary_capsules.capsules.{d}.bias"] = np.zeros(4, np.float32)
    return sd


def test_convert_a_pytorch_checkpoint(tmp_path, subset):
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )
    sd = _gram_ai_state_dict()
    torch.save({"epoch": 3, "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}},
               tmp_path / "ckpt.pt")  # fmt: skip
    proc = caproute(
        "convert", "ckpt.pt", "net.safetensors", "--classes", "fashion-mnist",
        "--activation", "relu", "--n-iter", "3", "--input-shape", "28,28,1", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "class_caps    DenseCaps    (10, 16)" in proc.stdout
    assert "to net.safetensors" in proc.stdout
    net = models.load(tmp_path / "net.safetensors")
    reference = models.capsnet_from_torch(sd, classes=CLASS_NAMES)
    assert net.classes == list(CLASS_NAMES)
    np.testing.assert_array_equal(
        net.predict_scores(subset[0][:4]), reference.predict_scores(subset[0][:4])
    )
    # the model file is what `predict --model` takes
    np.save(tmp_path / "four.npy", subset[0][:4])
    used = caproute("--json", "predict", "--model", "net.safetensors", "four.npy", cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert [p["class"] for p in json.loads(used.stdout)["predictions"]] == (
        reference.predict(subset[0][:4]).tolist()
    )
    # convert-torch: the tensors only, as before
    legacy = caproute("convert-torch", "ckpt.pt", "sd.safetensors", cwd=tmp_path)
    assert legacy.returncode == 0, legacy.stderr
    assert f"wrote {len(sd)} tensors to sd.safetensors" in legacy.stdout
    assert models.read_state_dict(tmp_path / "sd.safetensors").keys() == sd.keys()
    # a checkpoint that is no state dict
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert_fails(caproute("convert", "list.pt", "x.safetensors", cwd=tmp_path), 1, "'list.pt'")
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_state_dicts_and_keras(capsys, tmp_path):
    sd = _gram_ai_state_dict()
    np.savez(tmp_path / "sd.npz", **sd)
    status, out, err = run_main(
        capsys, "--json", "convert", tmp_path / "sd.npz", tmp_path / "a.safetensors", "--n-iter", 2,
        "--activation", "relu", "--input-shape", "28,28,1",
    )  # fmt: skip
    assert status == 0, err
    doc = json.loads(out)
    assert doc["source_kind"] == "npz" and doc["n_classes"] == 10
    assert doc["input_shape"] == [28, 28, 1] and "class_caps" in doc["summary"]
    # already a caproute model
    status, out, err = run_main(capsys, "convert", tmp_path / "a.safetensors", tmp_path / "c.st")
    assert status == 0 and "already a caproute model file: read and written again" in out
    # missing tensors: the importer's list, and what to do
    del sd["conv1.bias"]
    np.savez(tmp_path / "bad.npz", **sd)
    status, _, err = run_main(capsys, "convert", tmp_path / "bad.npz", tmp_path / "b.st")
    assert status == 1 and "missing tensor 'conv1.bias'" in err and "--state-dict" in err
    # files that are no checkpoint
    (tmp_path / "notes.txt").write_text("epoch,loss\n1,0.5\n")
    status, _, err = run_main(capsys, "convert", tmp_path / "notes.txt", tmp_path / "b.st")
    assert status == 1 and "is a text file starting with 'epoch,loss'" in err
    with open(tmp_path / "objects.pkl", "wb") as f:
        pickle.dump({"weights": [1.0]}, f)
    status, _, err = run_main(capsys, "convert", tmp_path / "objects.pkl", tmp_path / "b.st")
    assert status == 1 and "caproute never unpickles arbitrary objects" in err
    status, _, err = run_main(
        capsys, "convert", "--state-dict", tmp_path / "sd.npz", tmp_path / "b.st"
    )
    assert status == 2 and "--state-dict converts PyTorch checkpoints" in err
    status, _, err = run_main(capsys, "convert-torch", tmp_path / "sd.npz", tmp_path / "b.st")
    assert status == 2 and "convert-torch converts PyTorch checkpoints" in err
    status, _, err = run_main(capsys, "convert", tmp_path / "sd.npz", tmp_path / "sd.npz")
    assert status == 2 and "TARGET must differ from SOURCE" in err
    assert not (tmp_path / "b.st").exists()
    status, _, err = run_main(capsys, "convert", tmp_path, tmp_path / "b.st")
    assert status == 1 and f"checkpoint {str(tmp_path)!r} is a directory; expected a file." in err
    status, _, err = run_main(capsys, "convert", tmp_path / "sd.npz", tmp_path)
    assert status == 1 and f"output file {str(tmp_path)!r} is a directory" in err
    # Keras HDF5, with the hints the weights do not record
    h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install h5py)")
    rng = np.random.default_rng(1)
    weights = {
        "conv1/kernel": 0.2 * rng.normal(size=(9, 9, 1, 8)),
        "conv1/bias": np.zeros(8),
        "primarycap_conv2d/kernel": 0.2 * rng.normal(size=(9, 9, 8, 32)),
        "primarycap_conv2d/bias": np.zeros(32),
        "digitcaps/W": 0.3 * rng.normal(size=(10, 144, 16, 8)),
    }
    with h5py.File(tmp_path / "k.h5", "w") as f:
        layers = ["conv1", "primarycap_conv2d", "digitcaps"]
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer in layers:
            group = f.create_group(layer)
            mine = {k.split("/")[1]: v for k, v in weights.items() if k.startswith(layer + "/")}
            group.attrs["weight_names"] = np.array([f"{layer}/{w}:0".encode() for w in mine])
            for w, value in mine.items():
                group.create_dataset(f"{layer}/{w}:0", data=value.astype(np.float32))
    status, out, err = run_main(
        capsys, "convert", tmp_path / "k.h5", tmp_path / "k.safetensors",
        "--activation", "relu", "--n-iter", "3", "--input-shape", "28,28,1",
        "--weight-layout", "keras", "--strides", "1,2", "--padding", "valid,valid",
    )  # fmt: skip
    assert status == 0, err
    assert "(144, 8)" in out
    assert models.load(tmp_path / "k.safetensors").n_parameters() > 0
    # by layer names (the common Keras CapsNet), as before
    status, out, err = run_main(
        capsys, "convert", tmp_path / "k.h5", tmp_path / "k2.st", "--caps-name", "digitcaps"
    )
    assert status == 0 and "layers found by the names given" in out


def test_convert_torch_needs_a_state_dict(tmp_path, capsys):
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )
    torch.save([1, 2, 3], tmp_path / "list.pt")
    status, _, err = run_main(
        capsys, "convert-torch", tmp_path / "list.pt", tmp_path / "o.safetensors"
    )
    assert status == 1 and "not a state dict" in err and "weights_only=False" not in err


# ------------------------------------------------------------------- info, demo, toy, bench
def test_info():
    proc = caproute("--json", "info")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] and {"dynamic_routing", "em_routing", "squash"} <= set(
        doc["capabilities"]
    )
    assert doc["capabilities"]["dynamic_routing"]["reference"] is True
    assert [m["name"] for m in doc["models"]] == models.available_pretrained()


def test_info_prints_capability_table(capsys):
    status, out, _ = run_main(capsys, "info")
    assert status == 0
    for op in ("dynamic_routing", "em_routing", "squash"):
        assert op in out
    # the columns line up whatever the operation names' lengths
    lines = out.split("capability table")[1].split("\n\n")[0].splitlines()[1:]
    header, rows = lines[0], lines[1:]
    assert "em_routing_all_positions" in out and len(rows) >= 5
    assert {len(row) for row in rows} == {len(header)}


def test_demo_says_what_it_does_before_the_wait():
    proc = caproute("demo", "--model", MODEL, "--limit", 40, "--show", 2)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    intro = out.index(
        "caproute demo: classifying the bundled Fashion-MNIST test subset (40 images)"
    )
    assert "The first run compiles the Numba kernels" in out
    assert intro < out.index("capsnet-fashion-mnist image 0: predicted") < out.index("accuracy")
    recorded = models.pretrained_info(MODEL)["test_accuracy"]
    assert f"{recorded:.2%}" in out and "images/s" in out and "expected" in out


def test_demo_on_the_bundled_subset_reproduces_the_record(capsys):
    status, out, _ = run_main(capsys, "--json", "demo", "--model", MODEL, "--backend", "numpy")
    assert status == 0
    doc = json.loads(out)
    (row,) = doc["models"]
    info = models.pretrained_info(MODEL)
    assert doc["n_images"] == 500
    assert row["accuracy"] == row["expected_accuracy"] == info["subset_accuracy"]
    assert row["recorded_test_accuracy"] == info["test_accuracy"]


def test_demo_progress_bar(capsys):
    status, _, err = run_main(
        capsys, "demo", "--model", MODEL, "--limit", 30, "--batch", 10, "--progress"
    )
    assert status == 0 and "30/30" in err


def test_demo_bad_model_and_data(capsys, tmp_path):
    status, _, err = run_main(capsys, "demo", "--model", "nope")
    assert status == 2 and "no shipped model named 'nope'" in err
    status, _, err = run_main(capsys, "demo", "--data", tmp_path)
    assert status == 1 and "not found in" in err


def test_toy():
    proc = caproute("toy", "--batch", 32, "--n-in", 16, "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    assert "dynamic routing" in proc.stdout and "EM routing" in proc.stdout
    assert "100.0%" in proc.stdout


def test_toy_failure_says_why(capsys):
    # this used to exit with 1 and no message at all
    status, out, err = run_main(capsys, "toy", "--batch", 64, "--n-in", 1)
    assert status == 1
    assert "found the parent" in out  # the table still shows what happened
    assert "caproute: error: dynamic routing found the hidden parent in" in err
    assert "use more children (--n-in) or longer votes (--dim)" in err
    status, out, _ = run_main(capsys, "--json", "toy", "--batch", 8, "--dtype", "float64")
    assert status == 0 and json.loads(out)["passed"] is True


def test_bench():
    proc = caproute("--json", "bench", "--quick")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc["suites"]) == {"routing", "gmm", "models"}
    routing = doc["suites"]["routing"]["rows"]
    assert {r["operation"] for r in routing} == {"dynamic_routing", "em_routing"}
    for row in routing:
        assert row["ms"] > 0 and row["max_abs_diff"] < 1e-4
    gmm = {r["implementation"]: r for r in doc["suites"]["gmm"]["rows"]}
    assert set(gmm) == {"scikit-learn", "caproute"}
    assert gmm["caproute"]["lower_bound_diff"] < 1e-9
    assert {r["model"] for r in doc["suites"]["models"]["rows"]} == set(
        models.available_pretrained()
    )


def test_bench_one_suite_as_a_table(capsys):
    status, out, _ = run_main(capsys, "bench", "--suite", "gmm", "--quick")
    assert status == 0
    assert out.startswith("GaussianMixture: 2,000 points")
    assert "scikit-learn" in out and "speedup" in out and "1.00x" in out


# -------------------------------------------------------------------------------- machinery
def test_a_slow_first_run_says_so_once():
    import io
    import time

    from caproute.cli import _notice_if_slow

    out = io.StringIO()
    for _ in range(2):
        with _notice_if_slow("compiling (test)...", after=0.05, stream=out):
            time.sleep(0.3)
    assert out.getvalue() == "compiling (test)...\n"
    quick = io.StringIO()
    with _notice_if_slow("compiling...", after=5.0, stream=quick):
        pass
    time.sleep(0.05)
    assert quick.getvalue() == ""


def test_unexpected_errors_are_reported_not_dumped(capsys, monkeypatch):
    from caproute.cli import demo

    def broken(args, out):
        raise RuntimeError("something broke")

    monkeypatch.setattr(demo, "run_info", broken)
    status, _, err = run_main(capsys, "info")
    assert status == 1
    assert "caproute: error: unexpected RuntimeError: something broke (run with --debug" in err
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["--debug", "info"])
