"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))  # the package, without installing it
sys.path.insert(0, str(DOCS / "_ext"))

import softmax_xp

project = "softmax-xp"
author = "softmax-xp developers"
copyright = "softmax-xp developers, BSD-3-Clause"
release = version = softmax_xp.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinxcontrib.katex",
    "numpydoc",
    "softmax_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# README.md is the index for readers browsing docs/ on GitHub; _generated holds
# the tables softmax_docs writes, pulled into pages with {include}
exclude_patterns = ["_build", "_generated", "README.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as GitHub renders them

autodoc_typehints = "none"  # numpydoc's Parameters section says it in words
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# The formulas are rendered while the site is built (KaTeX, run by Node.js), so
# a page needs no script and no network to show them. The browser draws KaTeX's
# MathML itself; softmax-xp.css hides the HTML copy of each formula, which would
# need KaTeX's stylesheet and fonts from a CDN. katex_css_path names the file
# that replaces that stylesheet (KaTeX's default is the CDN's URL).
katex_prerender = True
katex_css_path = "softmax-xp.css"

html_theme = "furo"
html_title = f"softmax-xp {release}"
html_static_path = ["_static"]
html_copy_source = False
