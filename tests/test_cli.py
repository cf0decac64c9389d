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
