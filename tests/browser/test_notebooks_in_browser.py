"""The course as a learner meets it: JupyterLab in headless Chromium, run through the UI, looked at.

nbval runs the notebooks' code but renders nothing. Here each notebook is opened in JupyterLab
(``/lab/tree/<name>``), its outputs cleared (Edit > Clear Outputs of All Cells) and run with
Run > Run All Cells on its own kernel ``retina-edu``; then the page is checked: every code cell ran,
no cell shows an error, every figure is an image of real size, every widget rendered. In notebook 03
the focal loss explorer's γ and α sliders are moved with the keyboard and its readout and plot must follow
(:func:`move_slider_and_check`, which ``test_widgets_in_browser.py`` uses for the other notebooks' explorers).

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
def notebook_in_lab(
    page: Any, lab: Any, name: str, run_all_timeout_ms: int = RUN_ALL_TIMEOUT_MS
) -> Iterator[NotebookRun]:
    """Open ``name`` in JupyterLab on a fresh ``retina-edu`` kernel, clear its outputs, run all cells from the menu.

    ``run_all_timeout_ms``: how long Run All may take (notebooks that train need more than the default).

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
            f"{name} should run on one {lab.kernel_name!r} kernel; sessions: {sessions}"
        )

        # Nothing stale: the saved outputs go, so whatever is seen below comes from this run.
        click_menu(page, "Edit", "editmenu:clear-all")
        page.wait_for_function(
            "(sel) => document.querySelectorAll(sel).length === 0",
            arg=".jp-Notebook .jp-OutputArea-output",
            timeout=10_000,
        )

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
                timeout=run_all_timeout_ms,
                polling=500,
            )
        except Exception as error:  # playwright's TimeoutError
            running = [c for c in notebook_report(page, name)["cells"] if c["count"] is None]
            pytest.fail(
                f"{name}: Run All did not finish within {run_all_timeout_ms / 1000:.0f} s "
                f"({len(running)} code cells without a result, first: "
                f"{describe(running[0]) if running else '-'}): {error}"
            )
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
    assert not errors and not tracebacks, f"{run.name}: error outputs in JupyterLab:\n  " + "\n  ".join(
        errors + [f"on the page: {t}" for t in tracebacks]
    )
    not_run = [describe(c) for c in report["cells"] if c["count"] is None]
    assert not not_run, f"{run.name}: code cells that did not run: {not_run}"
    expected = stored_outputs(run.path)["code_cells"]
    assert len(report["cells"]) == expected, (
        f"{run.name}: {len(report['cells'])} code cells in the page, {expected} in the file"
    )


def check_figures_and_widgets(run: NotebookRun, min_widgets: int | None = None) -> dict[str, int]:
    """Every image output decodes to a real picture; at least as many figures and widgets as the saved notebook.

    ``min_widgets`` lowers the widget count for notebooks whose saved outputs hold progress bars that
    a rerun may not show (a training run that is already finished draws none).
    """
    page = run.page
    stored = stored_outputs(run.path)
    if min_widgets is not None:
        stored["widgets"] = min(stored["widgets"], min_widgets)
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
        f"{run.name}: {len(figures)} figures rendered, the saved notebook has {stored['figures']}"
    )
    failed_widgets = (
        page.locator(".jp-Notebook .jp-OutputArea-output")
        .filter(has_text=re.compile("Error displaying widget|Loading widget"))
        .count()
    )
    assert failed_widgets == 0, f"{run.name}: {failed_widgets} widget(s) failed to display"
    return {"figures": len(figures), "images": len(images), "widgets": stored["widgets"]}


@dataclass
class SliderMove:
    """What :func:`move_slider_and_check` saw: the slider's value, the readout's text, the picture, before and after."""

    value_before: str
    value_after: str
    text_before: str
    text_after: str
    pixels_before: bytes
    pixels_after: bytes


def move_slider_and_check(
    run: NotebookRun,
    label: str,
    within: str | None = None,
    keys: tuple[str, ...] = ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowLeft"),
    screenshot: str | None = None,
) -> SliderMove:
    """Find the slider whose description is ``label``, move it with the keyboard, check its explorer followed.

    The slider's explorer is its nearest enclosing ``VBox`` (controls, an HTML readout, an image:
    ``retina_edu.viz._explorer``). After the key presses the slider's value must change, then the
    readout's text and the picture (a new image, different pixels); the last redraw is waited for
    (the picture unchanged for a second). ``within``: a CSS selector that narrows the search (two
    explorers may both have a "γ"). ``screenshot``: an artifact suffix for the explorer before and
    after (``-<screenshot>.png``, ``-<screenshot>-moved.png``).
    """
    page = run.page
    scope = page.locator(within) if within else page.locator(".jp-Notebook")
    sliders = scope.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )
    assert sliders.count() == 1, f"{run.name}: expected one slider labelled {label!r}, found {sliders.count()}"
    slider = sliders.first
    explorer = slider.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' widget-vbox ')][1]")
    value = slider.locator(".widget-readout")
    readout = explorer.locator(".widget-html").first
    image = explorer.locator("img").first
    explorer.scroll_into_view_if_needed()
    assert slider.is_visible() and readout.is_visible(), f"{run.name}: the {label!r} slider or its readout is hidden"
    image.wait_for(timeout=WIDGET_TIMEOUT_MS)
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 100", arg=image.element_handle(), timeout=WIDGET_TIMEOUT_MS
    )
    value_before, text_before = value.text_content().strip(), readout.text_content()
    src_before = image.get_attribute("src")
    if screenshot:
        explorer.screenshot(path=run.artifact(f"-{screenshot}.png"))
    pixels_before = image.screenshot()

    handle = slider.locator(".noUi-handle")
    handle.focus()
    for key in keys:
        handle.press(key)
    deadline = time.perf_counter() + WIDGET_TIMEOUT_MS / 1000
    while value.text_content().strip() == value_before and time.perf_counter() < deadline:
        page.wait_for_timeout(200)
    value_after = value.text_content().strip()
    assert value_after != value_before, f"{run.name}: the {label!r} slider did not move ({value_before})"
    # Wait for the explorer to follow (a new picture and a new readout), then for the last redraw.
    while time.perf_counter() < deadline and (
        image.get_attribute("src") == src_before or readout.text_content() == text_before
    ):
        page.wait_for_timeout(250)
    # One redraw per key press, each a second or more on a busy machine: wait until neither the
    # picture nor the readout has changed for two seconds.
    state = (image.get_attribute("src"), readout.text_content())
    while time.perf_counter() < deadline:
        page.wait_for_timeout(2000)
        state, previous = (image.get_attribute("src"), readout.text_content()), state
        if state == previous:
            break
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 100", arg=image.element_handle(), timeout=WIDGET_TIMEOUT_MS
    )
    text_after = readout.text_content()
    if screenshot:
        explorer.screenshot(path=run.artifact(f"-{screenshot}-moved.png"))
    pixels_after = image.screenshot()
    assert text_after != text_before, (
        f"{run.name}: moving {label!r} {value_before} -> {value_after} left the readout as is: {text_after!r}"
    )
    assert images_differ(pixels_before, pixels_after), f"{run.name}: the picture looks the same after moving {label!r}"
    print(f"{run.name}: {label} {value_before} -> {value_after}: readout {text_before[:60]!r} -> {text_after[:60]!r}")
    return SliderMove(value_before, value_after, text_before, text_after, pixels_before, pixels_after)


def check_gamma_slider(run: NotebookRun) -> None:
    """Notebook 03's focal loss explorer: moving γ with the keyboard redraws the readout and the plot."""
    explorer = run.page.locator(".focal-loss-explorer")
    assert explorer.count() == 1, f"expected one focal loss explorer, found {explorer.count()}"
    move = move_slider_and_check(run, "γ", within=".focal-loss-explorer", screenshot="widget")
    assert f"γ = {move.value_after}" in move.text_after, (
        f"readout {move.text_after!r} does not name γ = {move.value_after}"
    )


def check_alpha_slider(run: NotebookRun) -> None:
    """Notebook 03's focal loss explorer: α moves the negatives' weight 1 − α, in the readout and the plot."""
    move = move_slider_and_check(
        run, "α", within=".focal-loss-explorer", keys=("ArrowLeft", "ArrowLeft"), screenshot="widget-alpha"
    )
    alpha = float(move.value_after)
    assert f"α = {alpha:.2f}" in move.text_after, f"readout {move.text_after!r} does not name α = {alpha:.2f}"
    # the negatives' weight is what the learner must see change (the dashed curve)
    assert f"a negative's by {1 - alpha:.2f}" in move.text_after, move.text_after
    assert f"a negative's by {1 - float(move.value_before):.2f}" in move.text_before, move.text_before


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
        check_alpha_slider(run)
