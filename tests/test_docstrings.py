"""numpydoc validation of every public docstring.

Public means: every name in the ``__all__`` of ``caproute`` and of its public subpackages, and
every public method and property of the public classes that caproute itself defines. Methods a
class inherits from scikit-learn (``fit_predict`` from ClusterMixin, ``get_params``,
``set_params``, ``set_output``, the metadata-routing ``set_*_request``) are scikit-learn's
docstrings and out of scope. Module-level constants (``WEIGHT_LAYOUTS``, ``CLASS_NAMES``,
``DEBIAN_PATH``, ``__version__``) cannot carry a docstring of their own and are skipped.

An override without a docstring of its own shows its base method's docstring (``inspect.getdoc``,
``help`` and Sphinx's autodoc all inherit it), so it is the base's docstring that is validated,
provided the override takes the same parameters; an override whose parameters differ needs its
own docstring.
"""

from __future__ import annotations

import inspect

import pytest
from numpydoc.validate import get_doc_object, validate

import caproute
import caproute.cluster
import caproute.datasets
import caproute.mixture
import caproute.models
import caproute.routing
import caproute.testing

PUBLIC_MODULES = (
    caproute,
    caproute.cluster,
    caproute.datasets,
    caproute.mixture,
    caproute.models,
    caproute.routing,
    caproute.testing,
)

# Every numpydoc check runs except these, one reason each. Required in particular: GL08 (a
# docstring exists), SS01-SS04 and SS06 (a one-line summary sentence), PR01-PR10 (every
# parameter documented, in order, with a type and a description), RT01 and RT03-RT05 (a
# described Returns section), YD01 (Yields for generators and context managers), and the layout
# checks GL01-GL03, GL05-GL07, GL09, GL10 (known sections, in numpydoc's order).
IGNORED_EVERYWHERE = {
    "ES01": "an extended summary is welcome but not required: many one-line summaries say it all",
    "SA01": "See Also sections are optional: the user guides in docs/ cross-reference the API",
    "SS05": "its heuristic (first word ends in 's') rejects the noun-phrase summaries used for "
    "accessors and properties, e.g. 'Names of the shipped models.'",
    "RT02": "a single return value may be named ('labels : ndarray of shape (n_samples,)'), as "
    "the numpydoc format guide allows and scikit-learn, whose API caproute follows, does",
}

# EX01 (an Examples section, run as a doctest by pytest --doctest-modules) is required for every
# public function and every public class except exceptions. Not for:
EX01_NOT_REQUIRED = {
    "method": "methods and properties are shown in use by their class's Examples",
    "exception": "an exception class is shown by the Raises sections of what raises it",
}


def _is_caproute(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "caproute"


def _owner(cls, name):
    """The first class of ``cls``'s MRO whose ``__dict__`` defines ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def _param_names(func):
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _unwrap(raw):
    """The function behind a classmethod or staticmethod (numpydoc then checks its Returns and
    drops a leading ``cls``), else ``raw`` itself (a function or a property)."""
    return raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw


def _member_doc_target(cls, name):
    """``(label, object to validate)`` for public member ``name`` of ``cls``, or None if out of
    scope (inherited from scikit-learn or Python, or not a function, classmethod, staticmethod
    or property)."""
    owner = _owner(cls, name)
    if owner is None or not _is_caproute(owner):
        return None
    raw = vars(owner)[name]
    if not isinstance(raw, (property, classmethod, staticmethod)) and not inspect.isfunction(raw):
        return None  # e.g. the set_fit_request descriptors scikit-learn generates
    obj = _unwrap(raw)
    # labelled by the class that defines it: where its docstring is to be fixed
    label = f"{owner.__module__}.{owner.__qualname__}.{name}"
    if obj.__doc__:
        return label, obj
    # an undocumented override: its base method's docstring, if the parameters are the same
    for base in cls.__mro__[cls.__mro__.index(owner) + 1 :]:
        if name not in vars(base) or not _is_caproute(base):
            continue
        base_obj = _unwrap(vars(base)[name])
        same_parameters = isinstance(obj, property) or _param_names(base_obj) == _param_names(obj)
        if base_obj.__doc__ and same_parameters:
            return f"{label} (doc of {base.__qualname__}.{name})", base_obj
        break
    return label, obj


def _targets():
    """``(label, object, kind)`` for every public docstring, each object once."""
    seen = set()
    out = []

    def add(label, obj, kind):
        if id(obj) not in seen:
            seen.add(id(obj))
            out.append((label, obj, kind))

    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                add(f"{obj.__module__}.{obj.__qualname__}", obj, "function")
            elif inspect.isclass(obj):
                kind = "exception" if issubclass(obj, BaseException) else "class"
                add(f"{obj.__module__}.{obj.__qualname__}", obj, kind)
                for member in sorted(dir(obj)):
                    if member.startswith("_"):
                        continue
                    target = _member_doc_target(obj, member)
                    if target is not None:
                        add(*target, "method")
    return out


TARGETS = _targets()


def test_the_public_api_is_covered():
    labels = {label.split(" ")[0] for label, _, _ in TARGETS}
    for expected in (
        "caproute._backend.dispatch.capabilities",
        "caproute.routing.em_routing.em_routing",
        "caproute.cluster.em_routing_clustering.EMRoutingClustering.fit",
        "caproute.cluster._base._RoutingClusteringBase.predict",
        "caproute.cluster.em_routing_clustering.EMRoutingClustering.score_samples",
        "caproute.mixture.gaussian_mixture.GaussianMixture.sample",
        "caproute.models.model.Model.predict_proba",
        "caproute.models.model.Model.data_format",
        "caproute.models.layers.capsules.DenseCaps.forward",
        "caproute.datasets.idx.read_idx",
        "caproute.testing.emulated_gpu",
    ):
        assert expected in labels, f"{expected} is not validated"
    # scikit-learn's own methods are out of scope
    assert not any(
        label.endswith((".get_params", ".set_params", ".set_output")) for label in labels
    )


@pytest.mark.parametrize(("label", "obj", "kind"), TARGETS, ids=[t[0] for t in TARGETS])
def test_numpydoc(label, obj, kind):
    ignored = set(IGNORED_EVERYWHERE)
    if kind in EX01_NOT_REQUIRED:
        ignored.add("EX01")
    result = validate(get_doc_object(obj))
    errors = [f"{code}: {message}" for code, message in result["errors"] if code not in ignored]
    assert not errors, f"{label}:\n  " + "\n  ".join(errors)
