"""Elementwise activations by name (or name and parameters), and a layer that applies one.

An activation *spec* is a name (``"relu"``, ``"gelu"``, ...), None, or a dict
``{"name": ..., **parameters}`` for the activations that take parameters: ``leaky_relu``
(``negative_slope``, required) and ``elu`` (``alpha``, default 1). :func:`check_activation`
turns a spec into its normal form (what ``get_config`` stores); :func:`apply_activation`
applies one.
"""

from __future__ import annotations

import math
import numbers

from ..._lib.stable_math import log_sigmoid
from .base import Layer

# SELU's constants (Klambauer et al. 2017, "Self-Normalizing Neural Networks"), as Keras and
# PyTorch write them
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
# (1969) 631-637; the coefficient sets of his SPECFUN routine CALERF (Netlib), the published
# numbers. Region 1 (|x| <= 0.46875): erf(x) = x * P_A(x^2) / Q_B(x^2); region 2
# (0.46875 < |x| <= 4): erfc(x) = exp(-x^2) * P_C(x) / Q_D(x); region 3 (|x| > 4):
# erfc(x) = exp(-x^2) / x * (1/sqrt(pi) - z * P_P(z) / Q_Q(z)) with z = 1/x^2.
_ERF_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)  # fmt: skip
_ERF_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_ERF_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
_ERF_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_ERF_Q = (
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_ERF_SPLIT = 0.46875
_INV_SQRT_PI = 5.6418958354775628695e-1


def _exp_neg_square(y, xp):
    """exp(-y^2) for y >= 0, with y^2 split as in CALERF: y = a + d with a a multiple of 1/16,
    so that a^2 is exact and the rounding of y^2 does not cost relative accuracy."""
    a = xp.trunc(y * 16.0) / 16.0
    return xp.exp(-a * a) * xp.exp(-(y - a) * (y + a))


def _erfc_abs(y, xp):
    """erfc(y) for y = |x| >= 0 (regions 2 and 3; region 1 is taken from erf)."""
    # erfc(40) = 1e-697 is 0 in float64: larger y (inf included) change nothing, and the
    # clip keeps y^2 finite in float32
    y = xp.minimum(y, 40.0)
    # region 2: a rational in y
    y2 = xp.minimum(y, 4.0)
    num, den = _ERF_C[8] * y2, y2
    for i in range(7):
        num, den = (num + _ERF_C[i]) * y2, (den + _ERF_D[i]) * y2
    mid = (num + _ERF_C[7]) / (den + _ERF_D[7])
    # region 3: a rational in 1/y^2 (y clipped so that no lane divides by 0)
    y3 = xp.maximum(y, 4.0)
    z = 1.0 / (y3 * y3)
    num, den = _ERF_P[5] * z, z
    for i in range(4):
        num, den = (num + _ERF_P[i]) * z, (den + _ERF_Q[i]) * z
    far = (_INV_SQRT_PI - z * (num + _ERF_P[4]) / (den + _ERF_Q[4])) / y3
    return xp.where(y <= 4.0, mid, far) * _exp_neg_square(y, xp)


def _erf_small(x, xp):
    """erf(x) for |x| <= 0.46875 (region 1), computed for every x (callers select)."""
    x = xp.clip(x, -_ERF_SPLIT, _ERF_SPLIT)
    t = x * x
    num, den = _ERF_A[4] * t, t
    for i in range(3):
        num, den = (num + _ERF_A[i]) * t, (den + _ERF_B[i]) * t
    return x * (num + _ERF_A[3]) / (den + _ERF_B[3])


def erf(x, xp):
    """The error function, elementwise, to float64 accuracy (Cody 1969; see above)."""
    y = xp.abs(x)
    tail = 1.0 - _erfc_abs(y, xp)
    return xp.where(y <= _ERF_SPLIT, _erf_small(x, xp), xp.where(x < 0, -tail, tail))


def erfc(x, xp):
    """The complementary error function 1 - erf(x), elementwise, accurate in relative terms
    also where it is tiny (large positive x)."""
    y = xp.abs(x)
    tail = _erfc_abs(y, xp)
    return xp.where(y <= _ERF_SPLIT, 1.0 - _erf_small(x, xp), xp.where(x < 0, 2.0 - tail, tail))


def _relu(x, xp, **_):
    return xp.maximum(x, xp.zeros_like(x))


def _sigmoid(x, xp, **_):
    # exp(log_sigmoid) never overflows, unlike 1 / (1 + exp(-x)) for very negative x
    return xp.exp(log_sigmoid(x, xp=xp))


def _elu(x, xp, alpha=1.0):
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, xp.zeros_like(x))))


def _selu(x, xp, **_):
    return SELU_SCALE * _elu(x, xp, alpha=SELU_ALPHA)


def _softplus(x, xp, **_):
    return xp.logaddexp(xp.zeros_like(x), x)


def _leaky_relu(x, xp, negative_slope):
    return xp.where(x >= 0, x, negative_slope * x)


def _gelu(x, xp, **_):
    # x * Phi(x) = x/2 * erfc(-x / sqrt(2)): erfc keeps the tiny values for very negative x
    return 0.5 * x * erfc(-x / math.sqrt(2.0), xp)


def _gelu_tanh(x, xp, **_):
    # x/2 * (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (Hendrycks and
    # Gimpel's approximation, Keras approximate=True, PyTorch approximate="tanh"); x is clipped
    # inside u only, where the sigmoid is saturated anyway, so that x^3 cannot overflow
    c = xp.clip(x, -1e4, 1e4)
    u = math.sqrt(2.0 / math.pi) * (c + 0.044715 * (c * c * c))
    return x * _sigmoid(2.0 * u, xp)


def _swish(x, xp, **_):
    return x * _sigmoid(x, xp)


def _identity(x, xp, **_):
    return x


ACTIVATIONS = {
    None: _identity,
    "linear": _identity,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "tanh": lambda x, xp, **_: xp.tanh(x),
    "elu": _elu,
    "selu": _selu,
    "softplus": _softplus,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "swish": _swish,
    "silu": _swish,
    "leaky_relu": _leaky_relu,
}

# the parameters each activation takes in the dict form: {parameter: default}, None = required
_PARAMETERS = {"leaky_relu": {"negative_slope": None}, "elu": {"alpha": 1.0}}

_LEAKY_HINT = (
    "its negative slope differs between frameworks (Keras's LeakyReLU defaults to 0.3, "
    "PyTorch's nn.LeakyReLU to 0.01), so it must be given: pass "
    "{'name': 'leaky_relu', 'negative_slope': 0.3} (Keras) or "
    "{'name': 'leaky_relu', 'negative_slope': 0.01} (PyTorch), with your model's slope"
)


def _names(*, none=True):
    names = ", ".join(repr(k) for k in ACTIVATIONS if k is not None)
    return names + ", None" if none else names


def check_activation(spec, *, name="activation"):
    """An activation spec in its normal form, or ValueError naming ``name``.

    Parameters
    ----------
    spec : str, dict or None
        A name, None (identity) or ``{"name": ..., **parameters}``.
    name : str, default="activation"
        The public argument, for messages.

    Returns
    -------
    str, dict or None
        The name, or a dict (``leaky_relu``; ``elu`` with ``alpha != 1``) with float
        parameters; a dict without parameters becomes its name.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "leaky_relu":
            raise ValueError(f"`{name}` 'leaky_relu' needs its slope: {_LEAKY_HINT}.")
        if spec not in ACTIVATIONS:
            raise ValueError(
                f"`{name}` must be one of {_names()}, or a dict such as "
                f"{{'name': 'leaky_relu', 'negative_slope': 0.3}}; got {spec!r}."
            )
        return str(spec)
    if isinstance(spec, dict):
        kind = spec.get("name")
        if not isinstance(kind, str) or kind not in ACTIVATIONS:
            raise ValueError(
                f"`{name}` as a dict needs 'name', one of {_names(none=False)}; got {spec!r}."
            )
        allowed = _PARAMETERS.get(kind, {})
        extra = sorted(str(k) for k in spec if k != "name" and k not in allowed)
        if extra:
            takes = ", ".join(repr(k) for k in allowed) or "no parameters"
            raise ValueError(
                f"`{name}` {kind!r} takes {takes}; got unknown key(s) {extra} in {spec!r}."
            )
        params = {}
        for key, default in allowed.items():
            value = spec.get(key, default)
            if value is None:
                raise ValueError(f"`{name}` {spec!r} lacks {key!r}: {_LEAKY_HINT}.")
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value))
            ):
                raise ValueError(
                    f"`{name}` {kind!r}: {key!r} must be a finite real number; got {value!r}."
                )
            params[key] = float(value)
        if kind == "elu" and params["alpha"] == 1.0:
            params = {}
        return {"name": kind, **params} if params else kind
    raise TypeError(
        f"`{name}` must be a name (str), a dict {{'name': ..., **parameters}} or None; got "
        f"{type(spec).__name__}."
    )


def activation_config(spec):
    """A normal-form spec as JSON-able data for ``get_config`` (a copy of a dict)."""
    return dict(spec) if isinstance(spec, dict) else spec


def apply_activation(x, spec, *, xp):
    """``x`` through the activation ``spec`` (any valid spec; normal form is fastest)."""
    if isinstance(spec, dict):
        params = {k: v for k, v in spec.items() if k != "name"}
        return ACTIVATIONS[spec["name"]](x, xp, **params)
    if spec == "leaky_relu":
        check_activation(spec)  # raises, with the hint
    return ACTIVATIONS[spec](x, xp)


class Activation(Layer):
    """Layer that applies an elementwise function.

    Parameters
    ----------
    activation : str, dict or None
        A name: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"elu"``, ``"selu"``, ``"softplus"``,
        ``"gelu"`` (exact, with erf: the default of Keras and PyTorch), ``"gelu_tanh"`` (the
        tanh approximation), ``"swish"`` (= ``"silu"``, ``x * sigmoid(x)``) or ``"linear"``
        (None also leaves the input as it is); or a dict for the functions with parameters:
        ``{"name": "leaky_relu", "negative_slope": s}`` (required: Keras's default slope is
        0.3, PyTorch's 0.01, so the plain name ``"leaky_relu"`` is refused) and
        ``{"name": "elu", "alpha": a}`` (default 1).
    name : str, default="activation"
        The layer's name, unique in its model.

    Raises
    ------
    ValueError
        If ``activation`` is not one of these (the message lists them), or is
        ``"leaky_relu"`` without its slope.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import Activation, Model
    >>> net = Model([Activation("relu", name="act")], input_shape=(2, 2, 1))
    >>> net.forward(np.array([[[[-1.0], [2.0]], [[3.0], [-4.0]]]]), check_values=False)[..., 0]
    array([[[0., 2.],
            [3., 0.]]])
    >>> leaky = {"name": "leaky_relu", "negative_slope": 0.3}
    >>> net = Model([Activation(leaky, name="act")], input_shape=(2,))
    >>> net.forward(np.array([[-1.0, 2.0]]), check_values=False)
    array([[-0.3,  2. ]])
    """

    def __init__(self, activation, *, name="activation"):
        super().__init__(name=name)
        self.activation = check_activation(activation)

    def get_config(self):
        return {"activation": activation_config(self.activation), "name": self.name}

    def check_input_shape(self, input_shape):
        if input_shape and isinstance(input_shape[0], tuple):
            raise ValueError(
                f"layer {self.name!r} takes one array per sample; got a map of matrix capsules "
                f"(pose, activation) {input_shape!r}."
            )

    def output_shape(self, input_shape):
        return input_shape

    def forward(self, x, params, *, xp, backend):
        return apply_activation(x, self.activation, xp=xp)
