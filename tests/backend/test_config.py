import threading

import pytest

import caproute as cr


def test_defaults_and_set_config():
    assert cr.get_config() == {"backend": "auto"}
    try:
        cr.set_config(backend="numpy")
        assert cr.get_config()["backend"] == "numpy"
        cr.set_config()  # None leaves it as is
        assert cr.get_config()["backend"] == "numpy"
    finally:
        cr.set_config(backend="auto")
    assert cr.get_config()["backend"] == "auto"


def test_get_config_returns_a_copy():
    cfg = cr.get_config()
    cfg["backend"] = "cupy"
    assert cr.get_config()["backend"] == "auto"


def test_config_context_nests_and_restores():
    with cr.config_context(backend="numpy"):
        assert cr.get_config()["backend"] == "numpy"
        with cr.config_context(backend="numba"):
            assert cr.get_config()["backend"] == "numba"
        assert cr.get_config()["backend"] == "numpy"
    assert cr.get_config()["backend"] == "auto"


def test_config_context_restores_after_exception():
    with pytest.raises(RuntimeError):
        with cr.config_context(backend="numpy"):
            raise RuntimeError
    assert cr.get_config()["backend"] == "auto"


def test_config_context_is_local_to_its_thread():
    inside, seen_by_other = threading.Event(), {}
    release = threading.Event()

    def holder():
        with cr.config_context(backend="numpy"):
            inside.set()
            release.wait(5)

    def observer():
        seen_by_other["backend"] = cr.get_config()["backend"]

    t1 = threading.Thread(target=holder)
    t1.start()
    inside.wait(5)
    t2 = threading.Thread(target=observer)
    t2.start()
    t2.join()
    release.set()
    t1.join()
    assert seen_by_other["backend"] == "auto"
    assert cr.get_config()["backend"] == "auto"


@pytest.mark.parametrize("bad", ["torch", "NUMPY", 3])
def test_bad_backend_values(bad):
    msg = r"`backend` must be one of 'auto', 'numpy', 'numba', 'cupy'; got "
    with pytest.raises(ValueError, match=msg):
        cr.set_config(backend=bad)
    with pytest.raises(ValueError, match=msg):
        with cr.config_context(backend=bad):
            pass
    assert cr.get_config()["backend"] == "auto"


def test_unknown_option():
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cr.set_config(colour="blue")
