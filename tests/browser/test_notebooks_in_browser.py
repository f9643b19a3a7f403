"""The course as a learner meets it: JupyterLab in headless Chromium, run through the UI, looked at.

nbval runs the notebooks' code but renders nothing. Here each notebook is opened in JupyterLab
(``/lab/tree/<name>``), its outputs cleared (Edit > Clear Outputs of All Cells) and run with
Run > Run All Cells on its own kernel ``retina-edu``; then the page is checked: every code cell ran,
no cell shows an error, every figure is an image of real size, every widget rendered. In notebook 03
the focal loss explorer's γ slider is moved with the keyboard and its readout and plot must follow.

Screenshots (the whole notebook, the widget before and after) and the server log land in
``tests/browser/artifacts/`` (git-ignored). ``docs/focal_loss_widget.png`` (the README's picture) is
``artifacts/03_focal_loss-widget.png``, copied by hand after a passing run::

    cp tests/browser/artifacts/03_focal_loss-widget.png docs/focal_loss_widget.png
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1280, "height": 900}
KERNEL_READY_TIMEOUT_MS = 90_000  # kernel start + first connection, on a busy 2-core machine
RUN_ALL_TIMEOUT_MS = 240_000  # a notebook takes 10-30 s here; generous for a loaded CI machine
WIDGET_TIMEOUT_MS = 30_000

KERNEL_STATUS = '#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]'  # "Python (retina-edu) | Idle"
CODE_PROMPTS = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"  # "[ ]:", "[*]:", "[12]:"


# ---------------------------------------------------------------------------------------------
# what the saved notebook holds (what the learner should see again)
# ---------------------------------------------------------------------------------------------
def stored_outputs(path: Path) -> dict[str, int]:
    """Counts in the saved ``.ipynb``: code cells, static PNG figures, widget views."""
    nb = json.loads(path.read_text())
    counts = {"code_cells": 0, "figures": 0, "widgets": 0}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        counts["code_cells"] += 1
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            counts["figures"] += "image/png" in data
            counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
    return counts


# ---------------------------------------------------------------------------------------------
# driving JupyterLab
# ---------------------------------------------------------------------------------------------
@dataclass
class NotebookRun:
    name: str
    page: Any
    lab: Any  # conftest.JupyterLab
    times: dict[str, float] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def path(self) -> Path:
        return self.lab.notebooks / self.name

    def artifact(self, suffix: str) -> Path:
        return self.lab.artifacts / f"{self.stem}{suffix}"


def click_menu(page: Any, menu: str, command: str) -> None:
    """Open a main-menu entry (e.g. "Run") and click the item with ``data-command``."""
    page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile(rf"^{menu}$")).click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


def notebook_report(page: Any, name: str) -> dict[str, Any]:
    """The notebook model, read in the page: per code cell its execution count, source and error outputs."""
    report = page.evaluate(
        """(path) => {
            const app = window.jupyterapp;
            if (!app) return null;
            const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === path);
            if (!panel) return null;
            const cells = [];
            const model = panel.content.model;
            for (let i = 0; i < model.cells.length; i++) {
                const cell = model.cells.get(i);
                if (cell.type !== 'code') continue;
                const outputs = cell.outputs.toJSON();
                cells.push({
                    index: i,
                    count: cell.executionCount,
                    source: cell.sharedModel.getSource(),
                    errors: outputs.filter(o => o.output_type === 'error')
                                   .map(o => `${o.ename}: ${o.evalue}`),
                });
            }
            const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
            return {kernel: kernel ? kernel.name : null, cells};
        }""",
        name,
    )
    assert report is not None, "cannot read the notebook model (window.jupyterapp or the notebook panel missing)"
    return report


def describe(cell: dict[str, Any]) -> str:
    first = next((line for line in cell["source"].splitlines() if line.strip()), "")
    return f"cell {cell['index']} ({first[:70]!r})"


def screenshot_notebook(run: NotebookRun) -> list[Path]:
    """The whole notebook, top to bottom, with a tall viewport (one file per ~11000 px)."""
    page = run.page
    scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer").first
    if scroller.count() == 0:
        path = run.artifact("-page.png")
        page.screenshot(path=path)
        return [path]
    content = scroller.evaluate("e => e.scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(content + 200, 12_000)})
    page.wait_for_timeout(500)
    paths: list[Path] = []
    top = 0
    while len(paths) < 6:
        scroller.evaluate("(e, top) => { e.scrollTop = top; }", top)
        page.wait_for_timeout(300)
        path = run.artifact("-notebook.png" if not paths else f"-notebook-{len(paths) + 1}.png")
        page.screenshot(path=path)
        paths.append(path)
        height, visible = scroller.evaluate("e => [e.scrollHeight, e.clientHeight]")
        top += visible
        if top >= height:
            break
    page.set_viewport_size(VIEWPORT)
    return paths


@contextmanager
def notebook_in_lab(page: Any, lab: Any, name: str) -> Iterator[NotebookRun]:
    """Open ``name`` in JupyterLab on a fresh ``retina-edu`` kernel, clear its outputs, run all cells from the menu.

    Yields once every cell has finished (no ``[*]`` left, kernel idle). On the way out, always: the
    notebook is screenshotted into ``artifacts/``, its kernel shut down, and the file on disk must be
    unchanged (the test never saves; autosave is off).
    """
    run = NotebookRun(name, page, lab)
    path = run.path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    lab.shutdown_sessions(name)  # a fresh kernel even if an earlier test left one
    start = time.perf_counter()
    failed = False
    try:
        page.goto(lab.url(f"/lab/tree/{name}?reset"))
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        run.times["rendered"] = time.perf_counter() - start
        status = page.locator(KERNEL_STATUS)
        status.filter(has_text=re.compile(r"\| Idle$")).wait_for(timeout=KERNEL_READY_TIMEOUT_MS)
        run.times["kernel ready"] = time.perf_counter() - start
        sessions = lab.sessions_for(name)
        assert [s["kernel"]["name"] for s in sessions] == [lab.kernel_name], (
            f"{name} should run on one {lab.kernel_name!r} kernel; sessions: {sessions}")

        # Nothing stale: the saved outputs go, so whatever is seen below comes from this run.
        click_menu(page, "Edit", "editmenu:clear-all")
        page.wait_for_function("(sel) => document.querySelectorAll(sel).length === 0",
                               arg=".jp-Notebook .jp-OutputArea-output", timeout=10_000)

        click_menu(page, "Run", "runmenu:run-all")
        run_start = time.perf_counter()
        try:
            page.wait_for_function(
                """([prompts, status]) => {
                    const texts = Array.from(document.querySelectorAll(prompts)).map(e => e.textContent);
                    const kernel = document.querySelector(status);
                    return texts.some(t => /\\d/.test(t)) && !texts.some(t => t.includes('*'))
                        && kernel !== null && /\\| Idle$/.test(kernel.textContent);
                }""",
                arg=[CODE_PROMPTS, KERNEL_STATUS],
                timeout=RUN_ALL_TIMEOUT_MS,
                polling=500,
            )
        except Exception as error:  # playwright's TimeoutError
            running = [c for c in notebook_report(page, name)["cells"] if c["count"] is None]
            pytest.fail(f"{name}: Run All did not finish within {RUN_ALL_TIMEOUT_MS / 1000:.0f} s "
                        f"({len(running)} code cells without a result, first: "
                        f"{describe(running[0]) if running else '-'}): {error}")
        run.times["run all"] = time.perf_counter() - run_start
        yield run
    except BaseException:
        failed = True
        raise
    finally:
        try:
            shots = screenshot_notebook(run)
            print(f"{name}: screenshots {', '.join(p.name for p in shots)} in {lab.artifacts}")
        except Exception as error:  # a screenshot must never hide the real failure
            print(f"{name}: no screenshot ({error})")
        try:
            lab.shutdown_sessions(name)
        except Exception as error:
            print(f"{name}: could not shut its kernel down ({error})")
        run.times["total"] = time.perf_counter() - start
        line = f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.times.items())
        print(line)
        with open(lab.artifacts / "timings.txt", "a") as log:
            log.write(line + "\n")
        unchanged = hashlib.sha256(path.read_bytes()).hexdigest() == digest
        if not failed:
            assert unchanged, f"{name} was modified on disk by the browser test (autosave?)"


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def check_ran_without_errors(run: NotebookRun) -> None:
    """Every code cell has an execution count, and no cell has an error output (tracebacks)."""
    report = notebook_report(run.page, run.name)
    kernel = run.lab.kernel_name
    assert report["kernel"] == kernel, f"{run.name} ran on kernel {report['kernel']!r}, not {kernel!r}"
    errors = [f"{describe(c)} -> {e}" for c in report["cells"] for e in c["errors"]]
    # What the learner sees: an error output is a traceback on the page (stderr warnings are not errors).
    tracebacks = run.page.evaluate(
        """() => Array.from(document.querySelectorAll(
                '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
            .map(e => e.textContent).filter(t => t.includes('Traceback (most recent call last)'))
            .map(t => t.trim().split('\\n').slice(-3).join(' | '))"""
    )
    assert not errors and not tracebacks, (
        f"{run.name}: error outputs in JupyterLab:\n  " + "\n  ".join(errors + [f"on the page: {t}" for t in tracebacks]))
    not_run = [describe(c) for c in report["cells"] if c["count"] is None]
    assert not not_run, f"{run.name}: code cells that did not run: {not_run}"
    expected = stored_outputs(run.path)["code_cells"]
    assert len(report["cells"]) == expected, f"{run.name}: {len(report['cells'])} code cells in the page, {expected} in the file"


def check_figures_and_widgets(run: NotebookRun) -> dict[str, int]:
    """Every image output decodes to a real picture; at least as many figures and widgets as the saved notebook."""
    page = run.page
    stored = stored_outputs(run.path)
    page.wait_for_function(
        """([widgets]) => {
            const imgs = Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img'));
            const views = document.querySelectorAll('.jp-Notebook .jp-OutputArea-output > .jupyter-widgets');
            return imgs.every(i => i.complete) && views.length >= widgets;
        }""",
        arg=[stored["widgets"]],
        timeout=WIDGET_TIMEOUT_MS,
    )
    images = page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img')).map(i => ({
            width: i.naturalWidth, height: i.naturalHeight,
            inWidget: i.closest('.jupyter-widgets') !== null,
            mime: i.closest('.jp-OutputArea-output').getAttribute('data-mime-type'),
        }))"""
    )
    figures = [i for i in images if i["mime"] == "image/png" and not i["inWidget"]]
    small = [i for i in images if i["width"] <= 100 or i["height"] <= 50]
    assert not small, f"{run.name}: images that did not render at a real size: {small}"
    assert len(figures) >= max(stored["figures"], 1), (
        f"{run.name}: {len(figures)} figures rendered, the saved notebook has {stored['figures']}")
    failed_widgets = page.locator(".jp-Notebook .jp-OutputArea-output").filter(
        has_text=re.compile("Error displaying widget|Loading widget")).count()
    assert failed_widgets == 0, f"{run.name}: {failed_widgets} widget(s) failed to display"
    return {"figures": len(figures), "images": len(images), "widgets": stored["widgets"]}


def check_gamma_slider(run: NotebookRun) -> None:
    """Notebook 03's focal loss explorer: moving γ with the keyboard redraws the readout and the plot."""
    page = run.page
    explorer = page.locator(".focal-loss-explorer")
    assert explorer.count() == 1, f"expected one focal loss explorer, found {explorer.count()}"
    slider = explorer.locator(".focal-gamma")
    value = slider.locator(".widget-readout")
    readout = explorer.locator(".focal-readout")
    image = explorer.locator("img")
    explorer.scroll_into_view_if_needed()
    assert slider.is_visible(), "the γ slider (.focal-gamma) is not visible"
    assert readout.is_visible(), "the readout (.focal-readout) is not visible"

    def wait_settled(old_src: str | None = None) -> None:
        # The widget shows one state: the readout names the slider's value and the plot is a loaded
        # image (a new one when old_src is given).
        page.wait_for_function(
            """(oldSrc) => {
                const box = document.querySelector('.focal-loss-explorer');
                const value = box.querySelector('.focal-gamma .widget-readout').textContent.trim();
                const text = box.querySelector('.focal-readout').textContent;
                const img = box.querySelector('img');
                return value !== '' && text.includes('γ = ' + value) && img !== null && img.complete
                    && img.naturalWidth > 100 && (oldSrc === null || img.src !== oldSrc);
            }""",
            arg=old_src,
            timeout=WIDGET_TIMEOUT_MS,
        )

    wait_settled()
    gamma_before = value.text_content().strip()
    text_before, src_before = readout.text_content(), image.get_attribute("src")
    explorer.screenshot(path=run.artifact("-widget.png"))
    pixels_before = image.screenshot()

    handle = slider.locator(".noUi-handle")
    handle.focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowLeft"):
        handle.press(key)
    page.wait_for_function(
        "([el, before]) => document.querySelector(el).textContent.trim() !== before",
        arg=[".focal-loss-explorer .focal-gamma .widget-readout", gamma_before], timeout=10_000)
    gamma_after = value.text_content().strip()
    try:
        wait_settled(src_before)
    except Exception:
        explorer.screenshot(path=run.artifact("-widget-moved.png"))
        pytest.fail(
            f"the γ slider moved from {gamma_before} to {gamma_after}, but the widget did not follow within "
            f"{WIDGET_TIMEOUT_MS / 1000:.0f} s: readout {readout.text_content()!r} "
            f"(before: {text_before!r}); plot {'unchanged' if image.get_attribute('src') == src_before else 'changed'}")
    # One redraw per key press: wait for the last one (the plot unchanged for a second).
    deadline = time.perf_counter() + WIDGET_TIMEOUT_MS / 1000
    src = image.get_attribute("src")
    while True:
        page.wait_for_timeout(1000)
        wait_settled()
        src, previous = image.get_attribute("src"), src
        if src == previous or time.perf_counter() > deadline:
            break
    text_after = readout.text_content()
    explorer.screenshot(path=run.artifact("-widget-moved.png"))
    pixels_after = image.screenshot()

    assert gamma_before != gamma_after
    assert text_after != text_before, f"readout unchanged: {text_after!r}"
    assert f"γ = {gamma_after}" in text_after, f"readout {text_after!r} does not name γ = {gamma_after}"
    assert images_differ(pixels_before, pixels_after), "the plot looks the same after moving γ"
    print(f"γ {gamma_before} -> {gamma_after}: readout {text_before[:60]!r} -> {text_after[:60]!r}")


def images_differ(png_a: bytes, png_b: bytes) -> bool:
    from PIL import Image, ImageChops

    a, b = (Image.open(io.BytesIO(png)).convert("RGB") for png in (png_a, png_b))
    return a.size != b.size or ImageChops.difference(a, b).getbbox() is not None


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["00_setup_and_data.ipynb", "01_boxes_and_anchors.ipynb"])
def test_notebook_runs_and_renders_in_jupyterlab(page: Any, jupyter_lab: Any, name: str) -> None:
    with notebook_in_lab(page, jupyter_lab, name) as run:
        check_ran_without_errors(run)
        seen = check_figures_and_widgets(run)
        print(f"{name}: {seen}")


def test_focal_loss_notebook_and_gamma_slider(page: Any, jupyter_lab: Any) -> None:
    with notebook_in_lab(page, jupyter_lab, "03_focal_loss.ipynb") as run:
        check_ran_without_errors(run)
        seen = check_figures_and_widgets(run)
        print(f"03_focal_loss.ipynb: {seen}")
        check_gamma_slider(run)
