"""The shared validation vocabulary (caproute/_lib/validation.py): array subclasses refused with
a message naming the argument, check_finite without touching the process-wide warnings filters,
and layer arguments checked at construction under their public names."""

import re
import warnings

import numpy as np
import pytest

import caproute as cr
from caproute import models
from caproute._backend import array_namespace
from caproute._lib.validation import check_choice, check_finite
from caproute.cluster import EMRoutingClustering
from caproute.mixture import GaussianMixture


def exactly(message):
    return "^" + re.escape(message) + "$"


def masked_message(name):
    return (
        f"`{name}` must be a plain array; got a numpy.ma.MaskedArray (its mask would be "
        f"ignored). Fill the masked entries (e.g. {name}.filled(0.0)) or remove them first."
    )


def matrix_message(name):
    return f"`{name}` must be a plain array; got numpy.matrix; use np.asarray({name})."


def masked(shape):
    values = np.random.default_rng(0).random(shape)
    return np.ma.masked_array(values, mask=values > 0.9)


def matrix(rows):
    with warnings.catch_warnings():  # NumPy recommends against np.matrix when one is made
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(np.random.default_rng(0).random((rows, 3)))


# -- masked arrays and np.matrix ------------------------------------------------------------------


def test_routing_functions_refuse_masked_arrays():
    with pytest.raises(TypeError, match=exactly(masked_message("u_hat"))):
        cr.dynamic_routing(masked((2, 3, 4, 5)))
    with pytest.raises(TypeError, match=exactly(masked_message("s"))):
        cr.squash(masked((2, 3)))


def test_routing_functions_refuse_np_matrix():
    with pytest.raises(TypeError, match=exactly(matrix_message("u_hat"))):
        cr.dynamic_routing(matrix(4))
    with pytest.raises(TypeError, match=exactly(matrix_message("s"))):
        cr.squash(matrix(4))


@pytest.mark.parametrize(
    "make",
    [lambda: GaussianMixture(2), lambda: EMRoutingClustering(2)],
    ids=["GaussianMixture", "EMRoutingClustering"],
)
def test_estimators_refuse_masked_X_and_np_matrix(make):
    with pytest.raises(TypeError, match=exactly(masked_message("X"))):
        make().fit(masked((20, 3)))
    with pytest.raises(TypeError, match=exactly(matrix_message("X"))):
        make().fit(matrix(20))
    fitted = make().fit(np.random.default_rng(1).random((20, 3)))
    with pytest.raises(TypeError, match=exactly(masked_message("X"))):
        fitted.predict(masked((5, 3)))


def test_clustering_refuses_masked_sample_weight():
    X = np.random.default_rng(1).random((20, 3))
    with pytest.raises(TypeError, match=exactly(masked_message("sample_weight"))):
        EMRoutingClustering(2).fit(X, sample_weight=masked((20,)))


def test_model_refuses_masked_images():
    net = models.Model([models.Activation("relu", name="act")], input_shape=(2, 2, 1))
    with pytest.raises(TypeError, match=exactly(masked_message("x"))):
        net.forward(masked((3, 2, 2, 1)))


def test_plain_arrays_and_their_data_still_pass():
    m = masked((2, 3))
    np.testing.assert_array_equal(cr.squash(m.filled(0.0)), cr.squash(np.asarray(m.filled(0.0))))
    cr.squash(np.asarray(matrix(4)))


# -- check_finite: NumPy's overflow warning hidden per thread -----------------------------------


class _SpyNamespace:
    """An array namespace that records the warnings filters in force when ``sum`` runs."""

    def __init__(self, xp):
        self._xp = xp
        self.filters_seen = []

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def sum(self, *args, **kwargs):
        self.filters_seen.append((warnings.filters, list(warnings.filters)))
        return self._xp.sum(*args, **kwargs)


@pytest.mark.parametrize("library", ["numpy", "array_api_strict"])
def test_check_finite_overflowing_sum_is_quiet_and_leaves_the_warnings_filters(library):
    if library == "numpy":
        x = np.full((1000,), 3e38, dtype=np.float32)  # finite; the sum overflows float32
    else:
        import array_api_strict

        x = array_api_strict.full((1000,), 3e38, dtype=array_api_strict.float32)
    spy = _SpyNamespace(array_namespace(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # as the project's pytest config does
        before, before_content = warnings.filters, list(warnings.filters)
        check_finite(x, name="x", xp=spy)  # neither raises nor warns
        assert warnings.filters is before and warnings.filters == before_content
    assert spy.filters_seen, "check_finite no longer sums"
    for filters, content in spy.filters_seen:  # the sum ran under the caller's filters, unchanged
        assert filters is before and content == before_content


def test_check_finite_still_reports_nan_and_inf():
    x = np.array([1.0, np.nan, np.inf, 3e38], dtype=np.float32)
    with pytest.raises(
        ValueError, match=exactly("`x` must contain only finite values; got 1 NaN and 1 inf.")
    ):
        check_finite(x, name="x", xp=array_namespace(x))


# -- layer arguments, checked at construction under their public names --------------------------


SQUASH_EPS_0 = exactly("`squash_eps` must be a finite real number > 0; got 0.0.")


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.PrimaryCaps(4, 8, squash_eps=0),
        lambda: models.DenseCaps(10, 16, squash_eps=0),
        lambda: models.capsnet(squash_eps=0.0),
    ],
    ids=["PrimaryCaps", "DenseCaps", "capsnet"],
)
def test_squash_eps_zero_rejected_at_construction(make):
    with pytest.raises(ValueError, match=SQUASH_EPS_0):
        make()


def test_squash_eps_zero_in_a_saved_description_is_rejected_on_rebuild():
    config = models.capsnet().get_config()
    config["layers"][-1]["config"]["squash_eps"] = 0.0
    with pytest.raises(ValueError, match=SQUASH_EPS_0):
        models.Model.from_config(config)


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (
            lambda: models.Conv2D(2.5, 3),
            TypeError,
            "`filters` must be an int >= 1; got 2.5 (float).",
        ),
        (
            lambda: models.Conv2D(2, 3, stride=True),
            TypeError,
            "`stride` must be an int >= 1; got True (bool).",
        ),
        (
            lambda: models.Conv2D(2, 3, padding=-1),
            ValueError,
            (
                '`padding` must be an int >= 0 (zeros on every side), "valid" (none), "same" '
                "(TensorFlow/Keras: the output has ceil(size / stride) positions, the odd zero "
                "after), a pair (rows, columns) of ints, or a pair of pairs ((top, bottom), "
                "(left, right)); got -1."
            ),
        ),
        (
            lambda: models.Conv2D(2, 3, use_bias="no"),
            TypeError,
            "`use_bias` must be True or False; got 'no' (str).",
        ),
        (
            lambda: models.DenseCaps(10, 16, leaky=1),
            TypeError,
            "`leaky` must be True or False; got 1 (int).",
        ),
        (
            lambda: models.PrimaryCaps(4, 8, order="row-major"),
            ValueError,
            "`order` must be one of 'type-major', 'position-major'; got 'row-major'.",
        ),
        (
            lambda: models.Activation("hard_sigmoid"),
            ValueError,
            (
                "`activation` must be one of 'linear', 'relu', 'sigmoid', 'tanh', 'elu', 'selu', "
                "'softplus', 'gelu', 'gelu_tanh', 'swish', 'silu', 'leaky_relu', None, or a dict "
                "such as {'name': 'leaky_relu', 'negative_slope': 0.3}; got 'hard_sigmoid'."
            ),
        ),
    ],
)
def test_layer_arguments_use_the_shared_checks(make, exc, message):
    with pytest.raises(exc, match=exactly(message)):
        make()


def test_layer_integers_and_choices_come_back_as_python_types():
    layer = models.Conv2D(np.int64(2), 3, data_format=np.str_("NCHW"))
    assert type(layer.filters) is int and type(layer.data_format) is str


def test_check_choice_never_matches_an_array():
    with pytest.raises(
        ValueError, match=exactly("`x` must be one of 'a', None; got array(['a'], dtype='<U1').")
    ):
        check_choice(np.array(["a"]), name="x", choices=["a", None])
    assert check_choice(None, name="x", choices=["a", None]) is None
