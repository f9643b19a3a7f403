"""Fixtures for the course website's checks: ``build/site`` served on 127.0.0.1, opened in headless Chromium.

Chromium is the browser tests' own (``tests/browser/conftest.py``: ``chromium_path`` skips, saying why,
when Playwright or Chromium is missing; ``browser`` launches it with its HOME in a temporary folder).
That conftest is loaded here by path, since pytest shares a conftest's fixtures only below its folder.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SITE = REPO / "build" / "site"
ARTIFACTS = REPO / "build" / "site-test-artifacts"


def _load_browser_module(stem: str):
    """``tests/browser/<stem>.py``, imported under a name of its own."""
    name = f"retina_edu_tests_browser_{stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "browser" / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


_browser_conftest = _load_browser_module("conftest")
chromium_path = _browser_conftest.chromium_path
browser = _browser_conftest.browser
CHROMIUM_ARGS = _browser_conftest.CHROMIUM_ARGS


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="session")
def site_dir() -> Path:
    """``build/site``; skips the site checks, saying how to build it, when it is missing."""
    if not (SITE / "index.html").exists():
        pytest.skip("the course website is not built (build/site/index.html missing): run `make site`")
    return SITE


@pytest.fixture(scope="session")
def site_url(site_dir: Path) -> Iterator[str]:
    """``build/site`` over HTTP on 127.0.0.1 (a free port), in a thread; stopped when the session ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def stored_outputs():
    """``stored_outputs(path)``: the saved notebook's code cells, figures and widget views (the browser tests')."""
    return _load_browser_module("test_notebooks_in_browser").stored_outputs


@pytest.fixture(scope="session")
def site_artifacts() -> Path:
    """``build/site-test-artifacts/``: a screenshot of each page's top from the last run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS
