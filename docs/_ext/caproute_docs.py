"""caproute's Sphinx extension: what the documentation generates from the code and checks.

- ``.. caproute-capabilities::`` (in Markdown: ```` ```{caproute-capabilities} ````) writes the
  backend-support table from ``caproute._backend.dispatch.CAPABILITIES``, the table
  :func:`caproute.capabilities` and ``select_impl`` read: one row per operation, one column per
  implementation (the pure Array API reference, the Numba kernels, the GPU kernels). A kernel
  added to the table appears in the documentation at the next build.
- The API reference documents every public name: after reading the pages, every name in the
  ``__all__`` of caproute's public modules (:data:`PUBLIC_MODULES`) must be documented, under
  that name or, for a re-export, under another public name of the same object; each missing
  one is a warning (an error under ``sphinx-build -W``) that names it.
- Methods a class inherits from scikit-learn or from Python's built-in classes
  (``get_params``, ``set_output``, ``with_traceback``...) are left out of the class pages: they
  are documented by their owners, and caproute's docstring checks (tests/test_docstrings.py)
  cover what caproute itself defines.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

# The modules whose ``__all__`` is caproute's public API (tests/test_docstrings.py checks the
# same list's docstrings).
PUBLIC_MODULES = (
    "caproute",
    "caproute.routing",
    "caproute.mixture",
    "caproute.cluster",
    "caproute.models",
    "caproute.datasets",
    "caproute.testing",
)

# Column order and headings of the backend-support table.
IMPLEMENTATIONS = {
    "reference": "Reference (Array API: NumPy, CuPy, array_api_strict...)",
    "numba": "Numba kernel (CPU, NumPy input)",
    "cupy": "GPU kernel (numba-cuda, CuPy input)",
}

# What an operation of the capability table is, and which public names run it.
OPERATIONS = {
    "squash": "the squash non-linearity: :func:`caproute.squash`",
    "dynamic_routing": "dynamic routing of given votes: :func:`caproute.dynamic_routing`",
    "dense_dynamic_routing": "votes and dynamic routing in one pass: "
    ":func:`caproute.dense_dynamic_routing`, :class:`caproute.models.DenseCaps`",
    "dynamic_routing_step": "one dynamic-routing step: "
    ":class:`caproute.cluster.DynamicRoutingClustering`",
    "em_routing": "EM routing: :func:`caproute.em_routing`, "
    ":class:`caproute.models.ClassMatrixCaps`, :class:`caproute.models.ConvMatrixCaps`",
    "em_routing_e_step": "EM routing's E-step: :class:`caproute.cluster.EMRoutingClustering`",
    "em_routing_step": "one EM-routing step: :class:`caproute.cluster.EMRoutingClustering`",
    "em_routing_all_positions": "EM routing where parents at every position compete for a "
    "child: :class:`caproute.models.ConvMatrixCaps`",
    "conv2d": "convolution with bias and ReLU as cache-sized BLAS products: "
    ":class:`caproute.models.Conv2D`, :class:`caproute.models.PrimaryCaps`, "
    ":class:`caproute.models.PrimaryMatrixCaps`",
    "primary_squash": "primary capsules cut from the convolution and squashed: "
    ":class:`caproute.models.PrimaryCaps`",
    "conv_matrix_votes": "the votes V = M W of every receptive field: "
    ":class:`caproute.models.ConvMatrixCaps`, :class:`caproute.models.ClassMatrixCaps`",
    "gmm_estep_stats": "the Gaussian-mixture E-step and its sufficient statistics: "
    ":class:`caproute.mixture.GaussianMixture`",
}


class CapabilitiesTable(SphinxDirective):
    """The backend-support table, generated from ``CAPABILITIES``."""

    has_content = False
    required_arguments = 0
    optional_arguments = 0

    def run(self):
        from caproute._backend import dispatch
        from caproute._backend.dispatch import CAPABILITIES

        # the page is read again whenever the table's module changes
        self.env.note_dependency(dispatch.__file__)

        unknown = sorted(
            {impl for impls in CAPABILITIES.values() for impl in impls} - set(IMPLEMENTATIONS)
        )
        if unknown:
            logger.warning(
                "caproute-capabilities: CAPABILITIES names implementations %s that the table "
                "has no column for; add them to IMPLEMENTATIONS in docs/_ext/caproute_docs.py",
                unknown,
                location=self.get_location(),
            )
        header = ["Operation", "What runs it", *IMPLEMENTATIONS.values()]
        rows = []
        for op, impls in CAPABILITIES.items():
            if op not in OPERATIONS:
                logger.warning(
                    "caproute-capabilities: operation %r of CAPABILITIES has no description; "
                    "add it to OPERATIONS in docs/_ext/caproute_docs.py",
                    op,
                    location=self.get_location(),
                )
            cells = [f"``{op}``", OPERATIONS.get(op, "")]
            cells += ["yes" if impl in impls else "--" for impl in IMPLEMENTATIONS]
            rows.append(cells)
        return [self._table(header, rows)]

    def _table(self, header, rows):
        table = nodes.table(classes=["caproute-capabilities"])
        group = nodes.tgroup(cols=len(header))
        table += group
        for width in (18, 30, 18, 18, 18):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row(header)
        body = nodes.tbody()
        group += body
        for cells in rows:
            body += self._row(cells)
        return table

    def _row(self, cells):
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            parsed, messages = self.state.inline_text(text, self.lineno)
            paragraph += parsed
            entry += paragraph
            entry += messages
            row += entry
        return row


def _documented_objects(env):
    """Every Python object the pages document: ``{full name: object}`` (modules included)."""
    py = env.get_domain("py")
    names = set(py.objects) | set(py.modules)
    found = {}
    for name in names:
        obj = _resolve(name)
        if obj is not _MISSING:
            found[name] = obj
    return found


_MISSING = object()


def _resolve(name):
    """The object a dotted name names, or ``_MISSING``."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def check_public_names(app, env):
    """Warn about every public name that the API reference does not document."""
    documented = _documented_objects(env)
    # Re-exports count as documented when the same object is documented under another public
    # name (caproute.dynamic_routing is caproute.routing.dynamic_routing). Only objects that
    # have an identity of their own (functions, classes, modules) are matched this way.
    by_identity = {
        id(obj) for obj in documented.values() if inspect.isroutine(obj) or inspect.isclass(obj)
    }
    by_identity |= {id(obj) for obj in documented.values() if inspect.ismodule(obj)}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            full = f"{module_name}.{name}"
            if full in documented:
                continue
            obj = getattr(module, name)
            shared = inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj)
            if shared and id(obj) in by_identity:
                continue
            logger.warning(
                "the API reference does not document the public name %s (in %s.__all__); "
                "add it to an autosummary table in docs/api/",
                full,
                module_name,
                type="caproute",
                subtype="api",
            )


def skip_foreign_members(app, what, name, obj, skip, options):
    """Leave out members that caproute does not define (scikit-learn's, Python's)."""
    if what not in ("class", "exception"):
        return None
    target = obj.fget if isinstance(obj, property) else obj
    target = getattr(target, "__func__", target)
    module = getattr(target, "__module__", None)
    if module is None:
        # a slot wrapper, a built-in method or a plain attribute: not caproute's code
        return True if inspect.isroutine(target) or inspect.ismethoddescriptor(target) else None
    if not module.split(".")[0] == "caproute":
        return True
    return None


def document_constants(app, what, name, obj, options, lines):
    """Give a public constant the ``#:`` comment written where it is defined.

    A constant re-exported by a package (``caproute.datasets.CLASS_NAMES``, defined in
    ``caproute/datasets/fashion_mnist.py``) has no comment in the package's ``__init__``, and
    autodoc would show its type's docstring instead ("Built-in immutable sequence."). The
    comment is looked up in the caproute modules that define the same object under that name;
    a constant without one is shown with its value only.
    """
    if what != "data" or not name.startswith("caproute."):
        return
    type_doc = inspect.getdoc(type(obj)) or ""
    if "\n".join(lines).strip() != type_doc.strip():
        return  # autodoc found a docstring of the constant's own
    attr = name.rpartition(".")[2]
    lines[:] = []
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("caproute") or vars(module).get(attr, _MISSING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        comment = docs.get(("", attr))
        if comment:
            lines[:] = list(comment)
            return


def clear_stale_stubs(app):
    """Remove the API pages autosummary generated last time, before it generates them again.

    A page left from an earlier build (a name since removed from a table or renamed) would
    otherwise still document the name and hide it from :func:`check_public_names`.
    """
    generated = Path(app.srcdir) / "api" / "generated"
    if generated.is_dir():
        shutil.rmtree(generated)


def setup(app):
    app.add_directive("caproute-capabilities", CapabilitiesTable)
    # before autosummary (priority 500) generates the stubs
    app.connect("builder-inited", clear_stale_stubs, priority=400)
    app.connect("env-check-consistency", check_public_names)
    app.connect("autodoc-skip-member", skip_foreign_members)
    # before numpydoc (priority 500) rewrites the lines
    app.connect("autodoc-process-docstring", document_constants, priority=100)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
