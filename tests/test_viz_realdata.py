"""Tests of retina_edu.viz.realdata (notebook 11): sizes under anchors, best IoUs, unmatched
objects, tiles, and the anchor-fit explorer (the explorer contract: controls, readout, image)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from retina_edu.anchors import anchor_coverage
from retina_edu.tiling import tile_windows
from retina_edu.viz import (
    MATCHED_COLOR,
    UNMATCHED_COLOR,
    anchor_fit_explorer,
    anchor_fit_figure,
    draw_best_iou,
    draw_size_histogram,
    draw_tiles,
    draw_unmatched,
)

IMAGE = np.full((128, 128, 3), 0.5, dtype=np.float32)
# A 12-px object (no paper anchor reaches IoU 0.5) and a 40-px one (the 40-px anchor does).
BOXES = torch.tensor([[10.0, 10, 22, 22], [44.0, 44, 84, 84]])


def _coverages():
    paper = anchor_coverage([BOXES], [(128, 128)])
    small = anchor_coverage([BOXES], [(128, 128)], sizes=(8, 16, 32, 64, 128))
    return paper, small


def test_paper_anchors_miss_the_small_object_and_small_anchors_find_it():
    paper, small = _coverages()
    assert paper.matched.tolist() == [False, True]
    assert small.matched.tolist() == [True, True]


def test_unmatched_objects_are_drawn_red_and_counted():
    paper, _ = _coverages()
    fig, ax = plt.subplots()
    counts = draw_unmatched(ax, IMAGE, BOXES, paper.best_iou)
    assert counts == {"matched": 1, "unmatched": 1}
    colors = [p.get_edgecolor() for p in ax.patches if isinstance(p, Rectangle)]
    assert colors == [plt.matplotlib.colors.to_rgba(UNMATCHED_COLOR), plt.matplotlib.colors.to_rgba(MATCHED_COLOR)]
    assert "1 of 2" in ax.get_title()
    with pytest.raises(ValueError, match="best IoUs"):
        draw_unmatched(ax, IMAGE, BOXES, paper.best_iou[:1])


def test_best_iou_plot_has_one_point_per_object_per_anchor_set():
    paper, small = _coverages()
    fig, ax = plt.subplots()
    draw_best_iou(ax, {"paper": paper, "small": small})
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [2, 2]
    np.testing.assert_allclose(points[0].get_offsets()[:, 1], paper.best_iou.numpy())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["paper: 1 of 2 unmatched", "small: 0 of 2 unmatched"]


def test_size_histogram_counts_every_object_and_draws_each_level_span():
    fig, ax = plt.subplots()
    sizes = np.array([10.0, 20, 30, 40, 80])
    draw_size_histogram(ax, sizes, {"paper": (32, 64, 128, 256, 512)})
    assert sum(p.get_height() for p in ax.patches) == len(sizes)
    spans = [line.get_xdata() for line in ax.get_lines()]
    assert len(spans) == 5
    np.testing.assert_allclose(spans[0], [32, 32 * 2 ** (2 / 3)])
    with pytest.raises(ValueError, match="no object sizes"):
        draw_size_histogram(ax, np.array([]), {"paper": (32,)})


def test_tiles_are_outlined_one_rectangle_each_inside_the_window():
    image = np.zeros((400, 400, 3))
    windows = tile_windows((400, 400), 256, 64)
    fig, ax = plt.subplots()
    draw_tiles(ax, image, windows, boxes=BOXES)
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == len(BOXES) + len(windows)
    for rect, (x1, y1, x2, y2) in zip(rects[len(BOXES) :], windows):
        x, y = rect.get_xy()
        assert x1 < x and y1 < y and x + rect.get_width() < x2 and y + rect.get_height() < y2


def test_anchor_fit_figure_has_two_panels():
    paper, small = _coverages()
    fig = anchor_fit_figure({"paper": paper, "small": small})
    assert len(fig.axes) == 2


def test_anchor_fit_explorer_redraws_on_a_new_size_and_reports_its_coverage():
    paper, small = _coverages()
    explorer = anchor_fit_explorer({8.0: small, 32.0: paper}, reference=paper)
    assert explorer.result is small and explorer.draw_count == 1
    assert "100.0%" in explorer.readout.value and "50.0%" in explorer.readout.value
    first = explorer.image.value
    explorer.controls["base"].value = 32.0
    assert explorer.draw_count == 2 and explorer.result is paper
    assert explorer.image.value != first
    with pytest.raises(ValueError, match="not one of"):
        anchor_fit_explorer({8.0: small}, reference=paper, value=16.0)
