"""Sphinx configuration of DoLL's documentation.

Build it, warnings as errors, from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Not nitpicky (``-n``): the API page's type hints name torch, pathlib, numpy and pydantic
classes, which no inventory can resolve offline (no intersphinx), and modules this site
does not document; ``-n`` turns each into a warning (about 170).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # doll_core for autodoc, also without an install

project = "DoLL"
author = "DoLL contributors"
copyright = "DoLL contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# docs/gpu/ holds the raw JSON and log records that docs/gpu.md names, not pages
exclude_patterns = ["_build", "gpu/*", "Thumbs.db", ".DS_Store"]

# `[text](page.md#a-section)` links resolve to headings down to level 3
myst_heading_anchors = 3

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "exclude-members": "model_config, model_fields, model_computed_fields",
}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "DoLL"
