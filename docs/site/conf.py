"""Sphinx configuration of the course website (``make site``; built by ``tools/build_site.py``).

The sources Sphinx reads are staged in ``build/site-src/`` (this folder's ``index.md``, the README it
includes, the notebooks as saved); this file is read from here with ``sphinx-build -c docs/site``.
Nothing is executed, and the pages load nothing from outside the site: MathJax, RequireJS and the
ipywidgets embed manager are served from ``_static/vendor/`` (fetched once, pinned, by the build script).
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from pathlib import Path

from docutils import nodes
from sphinx import addnodes

REPO = Path(__file__).resolve().parents[2]

project = "retina-edu"
author = "the retina-edu authors"
html_title = "retina-edu"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["README.md", "**/.ipynb_checkpoints"]  # README.md: only included by index.md

# The notebooks' saved outputs, never re-executed.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# Offline: every script from the site itself (tools/build_site.py puts them in build/site-vendor/static).
html_static_path = [str(REPO / "build" / "site-vendor" / "static"), "_static"]
html_css_files = ["course-site.css"]
mathjax_path = "vendor/mathjax/tex-mml-chtml.js"  # MathJax 3.2.2, relative to _static/
# MathJax 3's settings (myst-parser adds which classes it typesets). An undefined TeX macro is an error
# (MathJax would otherwise draw it in red), which the site's tests look for.
mathjax3_config = {"tex": {"packages": {"[-]": ["noundefined"]}}}
nb_ipywidgets_js = {
    "vendor/require.js": {},
    "vendor/html-manager/embed-amd.js": {},
}

html_theme = "furo"  # its fonts, icons and scripts are in the package: nothing from a CDN
html_copy_source = False  # no copy of each notebook under _sources/
html_show_sourcelink = False
html_use_index = False
html_last_updated_fmt = None

# A link to the README from a notebook ("Back to the course map") goes to the landing page.
LINK_TO_PAGE = {"README": root_doc}

# The notice beside each explorer: on the site its controls show the saved picture and do nothing.
WIDGET_NOTICE = (
    "Run the notebook to use this explorer: its sliders need a live Python kernel "
    "(make lab). Here it shows the picture for the values the notebook was saved with."
)
WIDGET_VIEW = '<script type="application/vnd.jupyter.widget-view+json">'
# Widgets that only show something (a progress bar, a picture, a readout): no notice for those alone.
DISPLAY_ONLY_MODELS = {
    "HBoxModel",
    "VBoxModel",
    "BoxModel",
    "GridBoxModel",
    "HTMLModel",
    "HTMLMathModel",
    "LabelModel",
    "ImageModel",
    "FloatProgressModel",
    "IntProgressModel",
    "OutputModel",
    "LayoutModel",
}


# ipywidgets 8 typesets widget labels with MathJax 2's MathJax.Hub.Queue: MathJax 3 gets that call (inline,
# after Sphinx's MathJax settings and before the deferred MathJax script runs).
MATHJAX_HUB_SHIM = (Path(__file__).parent / "mathjax_hub_shim.js").read_text(encoding="utf-8")


def _add_mathjax_hub_shim(app, pagename, templatename, context, doctree) -> None:
    if app.builder.format == "html" and context.get("has_maths_elements"):
        app.builder.add_js_file("", body=MATHJAX_HUB_SHIM, priority=501)  # MathJax's own: priority 500


def _redirect_readme_links(app, doctree) -> None:
    """Turn a link to a staged file that is not a page (``../README.md``) into a link to its page."""
    docname = app.env.docname
    for node in list(doctree.findall(lambda n: isinstance(n, (addnodes.pending_xref, addnodes.download_reference)))):
        target = node.get("reftarget", "").split("#")[0]
        if node.get("refdomain") != "doc":  # a file path relative to the page, not a page name
            target = posixpath.normpath(posixpath.join(posixpath.dirname(docname), target))
        page = LINK_TO_PAGE.get(target.removesuffix(".md"))
        if page is None:
            continue
        xref = addnodes.pending_xref(
            "", refdomain="std", reftype="doc", reftarget="/" + page, refexplicit=True, refdoc=docname
        )
        xref += node.children
        node.replace_self(xref)


@cache
def _widget_state(path: str) -> dict:
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    widgets = notebook.get("metadata", {}).get("widgets", {})
    return widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})


def _has_controls(state: dict, model_id: str) -> bool:
    """Whether the widget ``model_id`` (or anything it holds) is a control a reader would move."""
    seen, todo = set(), [model_id]
    while todo:
        current = todo.pop()
        if current in seen or current not in state:
            continue
        seen.add(current)
        model = state[current]
        name = model.get("model_name", "")
        if name not in DISPLAY_ONLY_MODELS and not name.endswith("StyleModel"):
            return True
        values = list(model.get("state", {}).values())
        while values:
            value = values.pop()
            if isinstance(value, list):
                values.extend(value)
            elif isinstance(value, str) and value.startswith("IPY_MODEL_"):
                todo.append(value.removeprefix("IPY_MODEL_"))
    return False


def _add_widget_notices(app, doctree, docname) -> None:
    """Put the notice beside each saved widget view that has controls."""
    views = [n for n in doctree.findall(nodes.raw) if n.astext().startswith(WIDGET_VIEW)]
    if not views:
        return
    state = _widget_state(str(app.env.doc2path(docname)))
    for view in views:
        model_id = json.loads(view.astext()[len(WIDGET_VIEW) : -len("</script>")]).get("model_id")
        if not _has_controls(state, model_id):
            continue
        before, command, after = WIDGET_NOTICE.partition("make lab")
        notice = nodes.container(classes=["widget-notice"])
        notice += nodes.paragraph("", before, nodes.literal(text=command), nodes.Text(after))
        view.parent.insert(view.parent.index(view), notice)  # above the widget: read before the sliders


def setup(app):
    _widget_state.cache_clear()
    app.connect("doctree-read", _redirect_readme_links, priority=400)  # before Sphinx collects downloads
    app.connect("doctree-resolved", _add_widget_notices)
    app.connect("html-page-context", _add_mathjax_hub_shim)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
