"""Notebook 09 (evaluation) in JupyterLab: it runs through the UI on the detector notebook 08 trained,
its figures and widgets render, moving γ redraws the loss maps and moving the score threshold
redraws the detections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_notebooks_in_browser import (
    check_figures_and_widgets,
    check_ran_without_errors,
    move_slider_and_check,
    notebook_in_lab,
)

pytestmark = pytest.mark.browser

NAME = "09_evaluation.ipynb"
TRAINED_RUN = Path(__file__).resolve().parents[2] / "runs" / "08_training" / "last.pt"
RUN_ALL_TIMEOUT_MS = 600_000  # mAP over 500 images, then the loss maps; an unfinished run is finished first


def test_evaluation_notebook_loss_maps_follow_gamma(page: Any, jupyter_lab: Any) -> None:
    """09: the loss-map explorer redraws when γ moves, and its readout names the new γ;
    the threshold/NMS explorer redraws when the score threshold moves."""
    if not TRAINED_RUN.is_file():
        pytest.skip(
            f"{NAME} evaluates the detector notebook 08 trains, and {TRAINED_RUN} does not exist: "
            "run notebook 08 (or its nbval test) first"
        )
    with notebook_in_lab(page, jupyter_lab, NAME, run_all_timeout_ms=RUN_ALL_TIMEOUT_MS) as run:
        check_ran_without_errors(run)
        # the saved run shows two progress bars that a finished run does not draw: count the explorers
        print(f"{NAME}: {check_figures_and_widgets(run, min_widgets=2)}")
        move = move_slider_and_check(run, "γ", within=".loss-map-explorer", screenshot="widget-gamma")
        gamma = float(move.value_after)
        assert gamma != float(move.value_before)
        assert f"γ = {gamma:.2f}" in move.text_after, f"readout {move.text_after!r} does not name γ = {gamma:.2f}"
        assert "smaller under FL than under CE" in move.text_after, move.text_after
        move = move_slider_and_check(run, "score ≥", within=".threshold-nms-explorer", screenshot="widget-score")
        score = float(move.value_after)
        assert f"≥ {score:.2f}" in move.text_after, move.text_after
