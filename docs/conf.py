"""Sphinx configuration: the pages of docs/ (MyST markdown) and the API reference.

Built by ``make docs`` (and so by ``make test``) with warnings as errors: a broken link, a
page in no table of contents or a docstring autodoc cannot read fails the build.
"""

from __future__ import annotations

project = "nskernel"
author = "the nskernel authors"
copyright = "the nskernel authors"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# images/ holds the README's picture and the script that draws it, not pages.
exclude_patterns = ["_build", "images"]
# Headings become link targets, so pages can link to a section ("security.md#the-kernel").
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
# Signatures as written, and the hints in the description, where autodoc can show them
# without resolving every name.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_title = "nskernel"
