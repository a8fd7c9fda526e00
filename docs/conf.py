"""Sphinx configuration of the geopath documentation site.

Build: ``.venv/bin/pip install -e ".[dev,docs]"`` then ``.venv/bin/sphinx-build -W --keep-going docs
docs/_build/html`` (CI does this in .ci/run). The tutorials (MyST notebooks in ``tutorials/``) are executed
on every build.
"""

from __future__ import annotations

import importlib

from sphinx.util import logging

import geopath

project = "geopath"
author = "geopath authors"
copyright = "2026, geopath authors"
release = geopath.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", ".jupyter_cache", "**/.ipynb_checkpoints"]

html_theme = "furo"
html_title = f"geopath {release}"

# Markdown (MyST): $...$ math in the tutorials, ::: fences, and anchors for ## headings so that pages can
# link to sections.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Notebooks: executed on every build (each cell within 300 s), and a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference: Google-style docstrings, type hints in the parameter lists (not in the signatures).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Attributes", "params_style")]
autodoc_typehints = "none"
# Keep the array aliases by name instead of expanding them into long unions.
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike", "Array": "jax.Array"}
typehints_document_rtype = False
always_document_param_types = False
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autosummary_generate = False

# Every public name must have an API entry: geopath.__all__, geopath.plotting.__all__ and models.__all__
# are compared with the objects the API pages document, and a missing one is a warning (an error under
# -W, as in CI).
_PUBLIC = ("geopath", "geopath.plotting", "models")


def _check_api_coverage(app, env):
    documented = set(env.domaindata["py"]["objects"])
    log = logging.getLogger("geopath.docs")
    for module_name in _PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if f"{module_name}.{name}" not in documented:
                log.warning(f"{module_name}.{name} is public ({module_name}.__all__) but has no API entry")


def setup(app):
    app.connect("env-check-consistency", _check_api_coverage)
