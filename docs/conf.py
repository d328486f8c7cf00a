"""Sphinx configuration of the captum-ext API reference (``make docs``).

The pages only use autodoc and napoleon (Google-style docstrings, as the code writes them). No
extension reaches the network (no intersphinx), and importing the documented modules neither
downloads nor trains anything: models are built and trained only when a function is called.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import captum_ext  # noqa: E402

project = "captum-ext"
author = "captum-ext contributors"
copyright = "captum-ext contributors"  # noqa: A001
release = captum_ext.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]

# Google style only, as the code writes it.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" of dataclasses as :ivar: fields, so they do not clash with autodoc's entries.
napoleon_use_ivar = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
# Type aliases are shown by name, not expanded into long unions.
autodoc_type_aliases: dict[str, str] = {}

nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
