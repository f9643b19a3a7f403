"""The explorers of notebooks 05 and 06 in JupyterLab: each notebook runs through the UI, and a slider
moved with the keyboard changes the readout and the picture (``move_slider_and_check``).

Notebook 03's γ and α sliders are checked in ``test_notebooks_in_browser.py``, with the same helper.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_notebooks_in_browser import (
    check_figures_and_widgets,
    check_ran_without_errors,
    move_slider_and_check,
    notebook_in_lab,
)

pytestmark = pytest.mark.browser

# 05 builds ResNet-50 models: minutes on a busy 2-core machine (417 s at load 15-19).
SLOW_NOTEBOOK_TIMEOUT_MS = 900_000
# 06 trains four short runs: 1536 s under nbconvert at load 15-19 (900 s was not enough in the browser).
TRAINING_NOTEBOOK_TIMEOUT_MS = 2_400_000


def test_backbone_notebook_and_box_size_slider(page: Any, jupyter_lab: Any) -> None:
    """05: the size → pyramid level explorer follows its size slider (and names the size it shows)."""
    name = "05_backbone_and_fpn.ipynb"
    with notebook_in_lab(page, jupyter_lab, name, run_all_timeout_ms=SLOW_NOTEBOOK_TIMEOUT_MS) as run:
        check_ran_without_errors(run)
        print(f"{name}: {check_figures_and_widgets(run)}")
        move = move_slider_and_check(run, "size", within=".box-level-explorer", screenshot="widget-size")
        assert f"{float(move.value_after):.0f} px" in move.text_after, move.text_after


def test_subnets_notebook_and_prior_slider(page: Any, jupyter_lab: Any) -> None:
    """06: the prior explorer follows its π slider (and names the π it shows)."""
    name = "06_subnets_and_prior.ipynb"
    with notebook_in_lab(page, jupyter_lab, name, run_all_timeout_ms=TRAINING_NOTEBOOK_TIMEOUT_MS) as run:
        check_ran_without_errors(run)
        print(f"{name}: {check_figures_and_widgets(run)}")
        move = move_slider_and_check(
            run, "π", within=".prior-explorer", keys=("ArrowRight", "ArrowRight"), screenshot="widget-pi"
        )
        assert f"π = {float(move.value_after):.2g}" in move.text_after, move.text_after
