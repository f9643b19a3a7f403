"""The course website (``make site``): every page of ``build/site`` opened in headless Chromium, offline.

``build/site`` is served on 127.0.0.1 and each page is loaded in a fresh tab in which any request
for another host is refused (and reported). A page passes when it logs no console error, every
request it makes succeeds, its math is typeset by MathJax (served from the site), every ``<img>``
has loaded, every saved widget is drawn from the embedded widget state (with the notice beside each
explorer that it needs a live kernel), and every link inside the site reaches an existing page and
anchor. The landing page must link every notebook, in course order, to its page.

Run: ``make test-site`` (builds the site first when needed), or ``pytest tests/site -m site``. The
checks skip, saying why, when the site is not built or Chromium / Playwright is missing.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

pytestmark = pytest.mark.site

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "build" / "site"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"  # as tools/build_site.py
VIEWPORT = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 60_000  # a notebook page: up to a few MB of HTML, MathJax, the widget manager
WIDGET_TIMEOUT_MS = 30_000  # every saved widget drawn (a few seconds here)
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
NOT_BUILT = "the course website is not built (build/site/index.html missing): run `make site`"
CONTROLS = ".widget-slider, .widget-dropdown, .widget-checkbox, .widget-toggle-buttons, .widget-radio"


def _site_pages() -> list[str]:
    if not (SITE / "index.html").exists():
        return []
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html") if p.parts[len(SITE.parts)] != "_static")


PAGES = _site_pages() or [pytest.param("index.html", marks=pytest.mark.skip(reason=NOT_BUILT))]


class _Ids(HTMLParser):
    """Every ``id`` (and ``<a name>``) in a page: the anchors a link may point to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is not None and (key == "id" or (tag == "a" and key == "name")):
                self.ids.add(value)
            if tag == "a" and key == "href" and value is not None:
                self.links.append(value)


_parsed: dict[Path, _Ids] = {}


def _parse(path: Path) -> _Ids:
    if path not in _parsed:
        parser = _Ids()
        parser.feed(path.read_text(encoding="utf-8"))
        _parsed[path] = parser
    return _parsed[path]


def _broken_internal_links(hrefs: list[str], base: str, site: Path) -> list[str]:
    """The links (absolute URLs, as the browser resolved them) under ``base`` that reach no page or anchor."""
    broken = []
    for href in hrefs:
        if not href.startswith(base):
            continue  # another site (a paper, say): not ours to check, and never loaded
        url, fragment = urldefrag(href)
        path = unquote(urlsplit(url).path)
        target = site / path.lstrip("/")
        if path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href}: no such file")
        elif fragment and target.suffix == ".html" and unquote(fragment) not in _parse(target).ids:
            broken.append(f"{href}: no anchor #{fragment}")
    return broken


def test_site_built_without_warnings(site_dir: Path) -> None:
    """Sphinx's warnings (a link to a missing notebook, a bad directive) from the last ``make site``."""
    log = REPO / "build" / "site-warnings.log"
    assert log.exists(), "build/site-warnings.log missing: rebuild the site (make site)"
    warnings = log.read_text(encoding="utf-8").strip()
    assert not warnings, f"the site's build warned:\n{warnings}"


# ---------------------------------------------------------------------------------------------
# the landing page: the README's course map, each notebook linked to its page
# ---------------------------------------------------------------------------------------------
def test_course_map_links_every_notebook_in_order(site_dir: Path) -> None:
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob(NOTEBOOK_GLOB))
    links = _parse(site_dir / "index.html").links
    assert not [link for link in links if ".ipynb" in link], "the course map still links .ipynb files"
    linked = []
    for link in links:
        match = re.fullmatch(r"notebooks/([0-9][0-9]_[^/#]+)\.html", link)
        if match and match.group(1) not in linked:
            linked.append(match.group(1))
    assert linked == notebooks, (
        f"the landing page links {linked}, the course has {notebooks}: rebuild the site (make site), "
        "and check the README's course map between its course-map markers"
    )
    for stem in notebooks:
        assert (site_dir / "notebooks" / f"{stem}.html").is_file(), f"no page for {stem}: run make site"


# ---------------------------------------------------------------------------------------------
# every page, in Chromium
# ---------------------------------------------------------------------------------------------
def _open(browser: Any, url: str, base: str) -> tuple[Any, Any, dict[str, list[str]]]:
    """A fresh tab on ``url`` in which requests for any other host are refused; what went wrong is recorded."""
    problems: dict[str, list[str]] = {"console": [], "requests": [], "outside": []}
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)

    def route(request_route: Any) -> None:
        request_url = request_route.request.url
        if request_url.startswith(base):
            request_route.continue_()
        else:
            problems["outside"].append(request_url)
            request_route.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: problems["console"].append(f"console.error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems["console"].append(f"pageerror: {e}"))
    page.on(
        "requestfailed",
        lambda r: problems["requests"].append(f"{r.url}: {r.failure}") if r.url.startswith(base) else None,
    )
    page.on("response", lambda r: problems["requests"].append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page, problems


def _typeset_math(page: Any) -> dict[str, int]:
    """Wait for MathJax (when the page has math) and count its output."""
    counts = page.evaluate("() => ({math: document.querySelectorAll('.math').length, mathjax: !!window.MathJax})")
    if counts["math"]:
        assert counts["mathjax"], "the page has math but MathJax did not load"
        page.wait_for_function("() => window.MathJax.startup && window.MathJax.startup.promise")
        page.evaluate("() => window.MathJax.startup.promise")
    counts.update(
        page.evaluate(
            """() => ({
                rendered: document.querySelectorAll('mjx-container').length,
                errors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent),
            })"""
        )
    )
    return counts


def _widgets(page: Any) -> dict[str, Any]:
    """Wait for the embedded widgets to be drawn; per view, whether it has controls and a notice beside it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    views = page.locator(WIDGET_VIEW).count()
    if views:
        try:
            page.wait_for_function(
                """(n) => {
                    const areas = Array.from(document.querySelectorAll('.widget-subarea'));
                    return areas.length >= n && areas.every(area => area.querySelector('.jupyter-widgets'));
                }""",
                arg=views,
                timeout=WIDGET_TIMEOUT_MS,
            )
        except PlaywrightTimeout:
            pass  # reported below, widget by widget
    areas = page.evaluate(
        """(controls) => Array.from(document.querySelectorAll('.widget-subarea')).map(area => {
            const output = area.closest('.cell_output') || area.parentElement;
            const notice = output.querySelector('.widget-notice');
            return {
                drawn: area.querySelectorAll('.jupyter-widgets').length > 0,
                controls: area.querySelectorAll(controls).length,
                notice: notice ? notice.textContent : null,
            };
        })""",
        CONTROLS,
    )
    return {"views": views, "areas": areas}


def _images(page: Any) -> list[dict[str, Any]]:
    """Every ``<img>`` once it has loaded or failed: its source and natural width."""
    page.evaluate(
        """() => Promise.all(Array.from(document.images).map(img => img.complete ? null :
                new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })))"""
    )
    return page.evaluate(
        "() => Array.from(document.images).map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth}))"
    )


@pytest.mark.parametrize("page_path", PAGES)
def test_page_works_offline(page_path: str, browser: Any, site_url: str, site_dir: Path, site_artifacts: Path) -> None:
    context, page, problems = _open(browser, site_url + page_path, site_url)
    try:
        math = _typeset_math(page)
        widgets = _widgets(page)
        images = _images(page)
        hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        page.wait_for_load_state("networkidle")  # fonts and components MathJax or the widgets asked for
        page.screenshot(path=str(site_artifacts / (page_path.replace("/", "_") + ".png")))
    finally:
        context.close()

    print(f"{page_path}: math {math}, widgets {widgets['views']}, images {len(images)}, links {len(hrefs)}")
    failures = [f"request leaving 127.0.0.1: {url}" for url in problems["outside"]]
    failures += [f"failed request: {request}" for request in problems["requests"]]
    failures += problems["console"]
    if math["rendered"] < math["math"]:
        failures.append(f"MathJax typeset {math['rendered']} of {math['math']} formulas")
    failures += [f"TeX error: {error}" for error in math["errors"]]
    areas = widgets["areas"]
    if len(areas) < widgets["views"] or not all(area["drawn"] for area in areas):
        drawn = sum(area["drawn"] for area in areas)
        failures.append(f"{widgets['views']} saved widgets, {drawn} drawn from the embedded state")
    for area in areas:
        if area["controls"] and not (area["notice"] and "live" in area["notice"]):
            failures.append("an explorer without the notice that it needs a live kernel")
    failures += [f"image not loaded: {image['src'][:120]}" for image in images if image["width"] == 0]
    failures += [f"internal link to nothing: {link}" for link in _broken_internal_links(hrefs, site_url, site_dir)]
    assert not failures, f"{page_path}:\n" + "\n".join(failures)


def test_saved_outputs_are_on_the_pages(site_dir: Path, stored_outputs: Any) -> None:
    """Each notebook page shows as many figures and widgets as the notebook holds (a stale page fails)."""
    for notebook in sorted((REPO / "notebooks").glob(NOTEBOOK_GLOB)):
        page = site_dir / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}: run make site"
        html = page.read_text(encoding="utf-8")
        stored = stored_outputs(notebook)
        figures = len(re.findall(r'<img[^>]+src="\.\./_images/', html))
        views = html.count('<script type="application/vnd.jupyter.widget-view+json">')
        assert (figures, views) == (stored["figures"], stored["widgets"]), (
            f"{notebook.name}: the page shows {figures} figures and {views} widgets, the notebook holds "
            f"{stored['figures']} and {stored['widgets']}: rebuild the site (make site)"
        )
        state = json.loads(notebook.read_text(encoding="utf-8"))["metadata"].get("widgets")
        if stored["widgets"]:
            assert state and 'type="application/vnd.jupyter.widget-state+json"' in html, (
                f"{notebook.name}: widgets without their saved state on the page"
            )
