"""Notebook 11 (real images, tree crowns) in JupyterLab: it runs through the UI, its figures and widgets
render, and moving the P3 anchor size redraws the anchor-fit explorer with the new coverage."""

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

NAME = "11_real_images_trees.ipynb"
RUN_ALL_TIMEOUT_MS = 900_000  # the training run (continued from runs/11_trees/ when it exists)


def test_trees_notebook_anchor_size_slider_redraws_the_coverage(page: Any, jupyter_lab: Any) -> None:
    with notebook_in_lab(page, jupyter_lab, NAME, run_all_timeout_ms=RUN_ALL_TIMEOUT_MS) as run:
        check_ran_without_errors(run)
        seen = check_figures_and_widgets(run)
        print(f"{NAME}: {seen}")
        move = move_slider_and_check(
            run, "P3 anchor", within=".anchor-fit-explorer", keys=("ArrowRight",), screenshot="anchor-fit"
        )
        assert f"({move.value_after}, " in move.text_after, move.text_after
