"""Sphinx configuration of caproute's documentation.

Build it, warnings as errors, from the repository root::

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The pages are the Markdown files of ``docs/`` (myst-parser), the API reference (``docs/api/``,
autosummary over every public name, numpydoc docstrings) and the gallery of ``examples/``
(sphinx-gallery: ``plot_*.py`` scripts run and their figures are shown; the other scripts are
shown without running). ``docs/_ext/caproute_docs.py`` generates the backend-support table from
``caproute._backend.dispatch.CAPABILITIES`` and checks that the API reference documents every
public name. Nothing here reaches the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

# The examples draw with matplotlib: no display, whatever the machine has.
os.environ.setdefault("MPLBACKEND", "Agg")

import caproute  # noqa: E402  (the version below; imported after the path set-up)

project = "caproute"
author = "The caproute developers"
copyright = "The caproute developers, BSD-3-Clause"
release = caproute.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "caproute_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["api/_templates"]
exclude_patterns = [
    "_build",
    "_ext",
    "api/_templates",
    # sphinx-gallery's per-run index of execution times, written next to the pages
    "sg_execution_times.rst",
    "**/*.ipynb",
]

# -- Markdown (myst-parser) ------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
# "## Section" headings get anchors, so that [text](page.md#section) links resolve.
myst_heading_anchors = 3

# -- API reference (autosummary, autodoc, numpydoc) ------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_member_order = "groupwise"
autodoc_inherit_docstrings = True
# numpydoc renders the docstrings; the class template (api/_templates/autosummary/class.rst)
# documents the methods, so numpydoc's own member tables would repeat them.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc validation is tests/test_docstrings.py's job (run by pytest), not the build's.
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# -- Gallery (sphinx-gallery) ----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    # Only plot_*.py scripts run (on small sizes: the build stays within minutes); the others
    # (a 2 GiB fit, the full benchmark...) are shown as code.
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "image_scrapers": ("matplotlib",),
    # A failing example fails the build (-W turns sphinx-gallery's report into an error too).
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "write_computation_times": False,
    "show_memory": False,
    "backreferences_dir": None,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

# -- HTML (pydata-sphinx-theme) --------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"caproute {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
# No static files of our own: say so, or Sphinx warns about a missing _static directory.
html_static_path: list[str] = []
