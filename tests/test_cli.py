import pytest

from caproute import cli


def test_toy_finds_the_hidden_parents(capsys):
    rc = cli.main(["toy", "--batch", "32", "--n-in", "16", "--backend", "numpy"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dynamic routing" in out and "EM routing" in out and "100.0%" in out


def test_toy_float64_auto(capsys):
    assert cli.main(["toy", "--batch", "8", "--dtype", "float64"]) == 0


def test_info_prints_capability_table(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for op in ("dynamic_routing", "em_routing", "squash"):
        assert op in out


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--backend", "torch"])
    assert info.value.code == 2
    assert cli.main(["demo", "--batch", "0"]) == 2
    assert "--batch must be >= 1" in capsys.readouterr().err


def test_demo_classifies_the_bundled_images(capsys):
    from caproute import models

    rc = cli.main(
        [
            "demo",
            "--model",
            "capsnet-fashion-mnist",
            "--limit",
            "60",
            "--show",
            "2",
            "--backend",
            "numpy",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "bundled Fashion-MNIST test subset (60 images)" in out
    assert "capsnet-fashion-mnist image 0: predicted" in out
    recorded = models.pretrained_info("capsnet-fashion-mnist")["test_accuracy"]
    assert f"{recorded:.2%}" in out and "images/s" in out


def test_demo_progress_bar(capsys):
    assert (
        cli.main(
            [
                "demo",
                "--model",
                "capsnet-fashion-mnist",
                "--limit",
                "30",
                "--batch",
                "10",
                "--progress",
            ]
        )
        == 0
    )
    assert "30/30 images" in capsys.readouterr().err


def test_demo_bad_model_and_data(capsys, tmp_path):
    assert cli.main(["demo", "--model", "nope"]) == 2
    assert "no shipped model named 'nope'" in capsys.readouterr().err
    assert cli.main(["demo", "--data", str(tmp_path)]) == 2
    assert "not found in" in capsys.readouterr().err


def test_convert_torch_needs_a_state_dict(tmp_path, capsys):
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert (
        cli.main(["convert-torch", str(tmp_path / "list.pt"), str(tmp_path / "o.safetensors")]) == 2
    )
    assert "does not hold a state dict" in capsys.readouterr().err


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


def test_python_m_caproute_and_version():
    import subprocess
    import sys

    import caproute

    out = subprocess.run(
        [sys.executable, "-m", "caproute", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"caproute {caproute.__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "caproute", "nonsense"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'nonsense'" in bad.stderr
