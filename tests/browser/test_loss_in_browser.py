"""Notebook 04 (the RetinaNet loss) in JupyterLab: it runs through the UI, its figures and widget render,
and moving the β slider of the box-loss explorer changes the readout and the picture."""

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


def test_loss_notebook_and_beta_slider(page: Any, jupyter_lab: Any) -> None:
    """04: the box-loss explorer follows its β slider (and names the β and the share it shows)."""
    name = "04_the_retinanet_loss.ipynb"
    with notebook_in_lab(page, jupyter_lab, name) as run:
        check_ran_without_errors(run)
        print(f"{name}: {check_figures_and_widgets(run)}")
        move = move_slider_and_check(run, "β", within=".box-loss-explorer", screenshot="widget-beta")
        beta = float(move.value_after)
        assert beta != float(move.value_before)
        assert f"β = {beta:.2f}" in move.text_after, f"readout {move.text_after!r} does not name β = {beta:.2f}"
        assert "quadratic zone" in move.text_after, move.text_after
