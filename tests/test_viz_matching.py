"""Tests of retina_edu.viz.matching (notebook 02): labelled anchors on the image, the IoU histogram, the explorer."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from retina_edu.anchors import generate_anchors
from retina_edu.matching import BACKGROUND, IGNORE, match_anchors
from retina_edu.viz import draw_matching, gt_color, match_counts, matching_explorer, matching_figure

SHAPES_IMAGE = torch.full((3, 128, 128), 0.5)
GT = torch.tensor([[10.0, 12.0, 70.0, 60.0], [90.0, 90.0, 102.0, 101.0]])  # a large box and a 12 px one


def test_draw_matching_draws_one_box_per_positive_in_its_objects_colour() -> None:
    anchors = generate_anchors((128, 128), sizes=(16, 32, 64, 128, 256))
    matches = match_anchors(anchors, GT)
    fig, ax = plt.subplots()
    drawn = draw_matching(ax, SHAPES_IMAGE, anchors, GT, matches)
    assert len(drawn["positive"]) == int((matches >= 0).sum())
    expected = [matplotlib.colors.to_rgba(gt_color(int(j)), 0.6) for j in matches[matches >= 0]]
    assert [r.get_edgecolor() for r in drawn["positive"]] == expected
    assert len(drawn["gt"]) == 2 * len(GT)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert len(drawn["negative"].get_offsets()) == len(torch.unique(centres[matches == BACKGROUND], dim=0))
    assert len(drawn["ignored"].get_offsets()) == len(torch.unique(centres[matches == IGNORE], dim=0))
    assert drawn["counts"] == match_counts(matches)


def test_draw_matching_draws_ignored_anchors_as_dashed_boxes_on_request() -> None:
    anchors = generate_anchors((128, 128), sizes=(16, 32, 64, 128, 256))
    matches = match_anchors(anchors, GT)
    fig, ax = plt.subplots()
    drawn = draw_matching(ax, SHAPES_IMAGE, anchors, GT, matches, ignored_boxes=True)
    assert len(drawn["ignored_boxes"]) == int((matches == IGNORE).sum()) > 0
    assert all(r.get_linestyle() == "--" for r in drawn["ignored_boxes"])


def test_draw_matching_rejects_matches_of_the_wrong_length() -> None:
    fig, ax = plt.subplots()
    anchors = generate_anchors((128, 128))
    with pytest.raises(ValueError, match="matches"):
        draw_matching(ax, SHAPES_IMAGE, anchors, GT, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("fg_iou, bg_iou, low_quality", [(0.5, 0.4, True), (0.7, 0.3, False)])
def test_matching_figure_counts_are_those_of_match_anchors(fg_iou: float, bg_iou: float, low_quality: bool) -> None:
    anchors = generate_anchors((128, 128))
    fig = matching_figure(SHAPES_IMAGE, anchors, GT, fg_iou, bg_iou, low_quality)
    assert fig.match_counts == match_counts(match_anchors(anchors, GT, fg_iou, bg_iou, low_quality))
    assert len(fig.axes) == 2
    ax_hist = fig.axes[1]
    line_x = sorted(line.get_xdata()[0] for line in ax_hist.lines)
    assert line_x == pytest.approx([bg_iou, fg_iou])
    # the stacked histogram holds every anchor once (each group's bars are as tall as its counts)
    heights = sum(p.get_height() for p in ax_hist.patches if isinstance(p, Rectangle))
    assert heights == len(anchors)


def test_matching_figure_draws_on_a_given_figure_without_pyplot() -> None:
    before = plt.get_fignums()
    fig = Figure()
    assert matching_figure(SHAPES_IMAGE, generate_anchors((128, 128)), GT, fig=fig) is fig
    matching_figure(SHAPES_IMAGE, generate_anchors((128, 128)), GT, fg_iou=0.6, fig=fig)
    assert len(fig.axes) == 2  # cleared before drawing again
    assert plt.get_fignums() == before


def test_matching_explorer_redraws_once_per_change_and_keeps_bg_below_fg() -> None:
    anchors = generate_anchors((128, 128))
    explorer = matching_explorer(SHAPES_IMAGE, anchors, GT)
    fg, bg = explorer.controls["fg_iou"], explorer.controls["bg_iou"]
    assert explorer.draw_count == 1
    fg.value = 0.3  # below bg = 0.4: bg follows
    assert bg.value == pytest.approx(0.3)
    assert explorer.draw_count == 2
    assert explorer.result["ignored"] == 0  # no band between equal thresholds
    bg.value = 0.6  # above fg: fg follows
    assert fg.value == pytest.approx(0.6)
    assert explorer.draw_count == 3
    assert explorer.result == match_counts(match_anchors(anchors, GT, 0.6, 0.6))
    assert f"<b>{explorer.result['positive']}</b> positive" in explorer.readout.value


def test_matching_explorer_low_quality_switch_changes_the_small_boxs_positives() -> None:
    anchors = generate_anchors((128, 128))  # the paper's anchors: the 12 px box reaches no IoU 0.5
    explorer = matching_explorer(SHAPES_IMAGE, anchors, GT[1:])
    with_low = explorer.result["positive"]
    explorer.controls["low_quality"].value = False
    assert explorer.draw_count == 2
    assert with_low >= 1
    assert explorer.result["positive"] == 0
