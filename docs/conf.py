"""Sphinx configuration of the sksketch documentation.

Build with ``make docs`` (warnings are errors). Pages are Markdown (MyST),
the API reference comes from the numpydoc docstrings, and ``examples/`` is
rendered by sphinx-gallery, which executes only the files named ``plot_*.py``.
"""

import re

import sksketch

project = "sksketch"
author = "The sksketch developers"
copyright = "The sksketch developers"
release = sksketch.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, ::: fences, anchors for "page.md#section".
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one page per public name, from the numpydoc docstrings.
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# The gallery: every file of examples/ is shown, only plot_*.py is executed,
# so the build needs neither torch nor a GPU and stays fast.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
}

html_theme = "pydata_sphinx_theme"
html_title = f"sksketch {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False


_UNDERLINE = re.compile(r"""([=\-~^"'`#*+])\1{2,}""")
_LABEL = re.compile(r"^\.\. _sphx_glr_auto_examples_\S+\.py:$", re.MULTILINE)


def _title_untitled_examples(app, docname, source):
    """Give a gallery page a title when its script's docstring has none.

    Examples whose docstring starts with a plain sentence (``examples/demo.py``)
    are shown as they are, titled by that sentence up to its first colon or
    period, so that the build stays free of warnings.
    """
    if not docname.startswith("auto_examples/") or docname.endswith("/index"):
        return
    text = source[0]
    label = _LABEL.search(text)
    if label is None:
        return
    body = text[label.end():].lstrip("\n")
    first, _, rest = body.partition("\n")
    if _UNDERLINE.fullmatch(rest.partition("\n")[0].strip()):
        return
    title = re.split(r"[:.]\s", first.strip() + " ", maxsplit=1)[0].strip()
    if not title:
        return
    source[0] = (text[:label.end()] + "\n\n" + title + "\n" + "=" * len(title)
                 + "\n\n" + body)


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("source-read", _title_untitled_examples)
    app.connect("autodoc-skip-member", _skip_metadata_requests)
