"""Tests of the anchor and matching figures and widgets in retina_edu.viz (notebooks 01-02), on Agg."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from retina_edu.anchors import PAPER_ANCHOR_SIZES, PAPER_SCALES, anchors_per_level, generate_anchors  # noqa: E402
from retina_edu.matching import match_anchors  # noqa: E402
from retina_edu.viz import (  # noqa: E402
    anchor_explorer,
    anchor_figure,
    draw_anchor_level,
    draw_matching,
    gt_color,
    match_counts,
    matching_explorer,
    matching_figure,
)

IMAGE = np.full((100, 140, 3), 0.5, dtype=np.float32)  # H = 100, W = 140
SHAPES_IMAGE = np.full((128, 128, 3), 0.5, dtype=np.float32)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GT = torch.tensor([[10.0, 12.0, 70.0, 60.0], [90.0, 90.0, 102.0, 101.0]])  # a large box and a 12 px one


def _rect_xyxy(rect: Rectangle) -> list[float]:
    x, y = rect.get_xy()
    return [x, y, x + rect.get_width(), y + rect.get_height()]


# ---------------------------------------------------------------------------------------------
# Anchors on an image
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 2, 4])
def test_draw_anchor_level_puts_a_dot_on_every_location_of_the_level(level: int) -> None:
    fig, ax = plt.subplots()
    drawn = draw_anchor_level(ax, IMAGE, level=level)
    stride = (8, 16, 32, 64, 128)[level]
    grid = (math.ceil(100 / stride), math.ceil(140 / stride))
    assert drawn["grid"] == grid
    assert len(drawn["centres"].get_offsets()) == grid[0] * grid[1]


def test_draw_anchor_level_draws_package_anchors_of_the_chosen_shape() -> None:
    fig, ax = plt.subplots()
    level, scale_index, ratio_index = 1, 2, 0
    drawn = draw_anchor_level(ax, IMAGE, level, scale_index, ratio_index, max_boxes=1000)
    level_anchors = anchors_per_level((100, 140))[level].view(-1, 9, 4)[:, ratio_index * 3 + scale_index]
    assert len(drawn["boxes"]) == len(level_anchors)  # few enough locations: all are drawn
    drawn_xyxy = torch.tensor([_rect_xyxy(r) for r in drawn["boxes"]], dtype=torch.float64)
    torch.testing.assert_close(drawn_xyxy, level_anchors.double(), rtol=0, atol=1e-4)
    size = PAPER_ANCHOR_SIZES[level] * PAPER_SCALES[scale_index]
    w, h = drawn["anchor"]
    assert w == pytest.approx(size / math.sqrt(0.5), abs=1e-3) and h == pytest.approx(size * math.sqrt(0.5), abs=1e-3)
    assert "P4" in ax.get_title()


def test_draw_anchor_level_thins_dense_levels_to_max_boxes() -> None:
    fig, ax = plt.subplots()
    drawn = draw_anchor_level(ax, IMAGE, level=0, max_boxes=12)
    assert 1 <= len(drawn["boxes"]) <= 12
    assert drawn["highlight"] in ax.patches


@pytest.mark.parametrize("kwargs", [{"level": 5}, {"scale_index": 3}, {"ratio_index": -1}])
def test_draw_anchor_level_rejects_an_index_out_of_range(kwargs: dict) -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="must be in"):
        draw_anchor_level(ax, IMAGE, **kwargs)


def test_anchor_figure_has_one_axes_with_the_image() -> None:
    fig = anchor_figure(IMAGE, level=4)
    assert len(fig.axes) == 1
    assert len(fig.axes[0].images) == 1
    assert "P7" in fig.axes[0].get_title()
    assert fig.number in plt.get_fignums()  # a pyplot figure, so that Jupyter shows it


def test_figures_can_be_made_without_pyplot() -> None:
    before = plt.get_fignums()
    anchor_figure(IMAGE, pyplot=False)
    matching_figure(SHAPES_IMAGE, generate_anchors((128, 128)), GT, pyplot=False)
    assert plt.get_fignums() == before


def test_anchor_explorer_has_controls_above_an_output() -> None:
    import ipywidgets as widgets

    explorer = anchor_explorer(IMAGE)
    assert isinstance(explorer, widgets.VBox)
    controls, picture = explorer.children
    assert isinstance(picture, widgets.Image) and picture is explorer.image
    assert picture.value[:8] == PNG_SIGNATURE
    assert list(controls.children) == [explorer.controls[k] for k in ("level", "scale", "ratio")]
    assert len(explorer.controls["level"].options) == 5
    assert len(explorer.controls["scale"].options) == 3 and len(explorer.controls["ratio"].options) == 3
    assert explorer.draw_count == 1


@pytest.mark.parametrize("control, value, expected_in_title", [
    ("level", 4, "P7"), ("scale", 2, "2^(2/3)"), ("ratio", 2, "h/w 2"),
])
def test_anchor_explorer_redraws_when_a_control_changes(control: str, value: int, expected_in_title: str) -> None:
    explorer = anchor_explorer(IMAGE)
    first, first_png = explorer.figure, explorer.image.value
    assert expected_in_title not in first.axes[0].get_title()
    explorer.controls[control].value = value
    assert explorer.draw_count == 2
    assert explorer.figure is not first
    assert expected_in_title in explorer.figure.axes[0].get_title()
    assert explorer.image.value != first_png and explorer.image.value[:8] == PNG_SIGNATURE


def test_explorers_leave_no_pyplot_figures_open() -> None:
    plt.close("all")
    explorer = anchor_explorer(IMAGE)
    explorer.controls["level"].value = 1
    matching = matching_explorer(SHAPES_IMAGE, generate_anchors((128, 128)), GT)
    matching.controls["fg_iou"].value = 0.6
    assert plt.get_fignums() == []


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------
def test_match_counts_counts_positives_ignored_and_negatives() -> None:
    assert match_counts(torch.tensor([0, 1, -1, -2, -1, 0])) == {"positive": 3, "ignored": 1, "negative": 2}


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
    assert len(drawn["negative"].get_offsets()) == len(torch.unique(centres[matches == -1], dim=0))
    assert len(drawn["ignored"].get_offsets()) == len(torch.unique(centres[matches == -2], dim=0))
    assert drawn["counts"] == match_counts(matches)


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


def test_matching_explorer_redraws_once_per_change_and_keeps_bg_below_fg() -> None:
    anchors = generate_anchors((128, 128))
    explorer = matching_explorer(SHAPES_IMAGE, anchors, GT)
    fg, bg = explorer.controls["fg_iou"], explorer.controls["bg_iou"]
    assert explorer.draw_count == 1
    assert explorer.children[1] is explorer.image and explorer.image.value[:8] == PNG_SIGNATURE
    first_png = explorer.image.value
    fg.value = 0.3  # below bg = 0.4: bg follows
    assert bg.value == pytest.approx(0.3)
    assert explorer.draw_count == 2
    assert explorer.figure.match_counts["ignored"] == 0  # no band between equal thresholds
    assert explorer.image.value != first_png
    bg.value = 0.6  # above fg: fg follows
    assert fg.value == pytest.approx(0.6)
    assert explorer.draw_count == 3
    assert explorer.figure.match_counts == match_counts(match_anchors(anchors, GT, 0.6, 0.6))


def test_matching_explorer_low_quality_switch_changes_the_small_boxs_positives() -> None:
    anchors = generate_anchors((128, 128))  # the paper's anchors: the 12 px box reaches no IoU 0.5
    explorer = matching_explorer(SHAPES_IMAGE, anchors, GT[1:])
    with_low = explorer.figure.match_counts["positive"]
    explorer.controls["low_quality"].value = False
    assert explorer.draw_count == 2
    assert with_low >= 1
    assert explorer.figure.match_counts["positive"] == 0
