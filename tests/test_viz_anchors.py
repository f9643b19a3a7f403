"""Tests of retina_edu.viz.anchors (notebook 01): one level's anchors on an image, its figure and its explorer."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from retina_edu.anchors import PAPER_ANCHOR_SIZES, PAPER_SCALES, AnchorGenerator, anchors_per_level
from retina_edu.viz import anchor_explorer, anchor_figure, draw_anchor_level

IMAGE = np.full((100, 140, 3), 0.5, dtype=np.float32)  # H = 100, W = 140


def _rect_xyxy(rect: Rectangle) -> list[float]:
    x, y = rect.get_xy()
    return [x, y, x + rect.get_width(), y + rect.get_height()]


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


def test_draw_anchor_level_follows_the_generator_settings() -> None:
    generator = AnchorGenerator(strides=(16, 32), sizes=(20, 40), scales=(1.0, 2.0), aspect_ratios=(1.0,), offset=0.5)
    fig, ax = plt.subplots()
    drawn = draw_anchor_level(ax, IMAGE, level=1, scale_index=1, ratio_index=0, generator=generator, max_boxes=1000)
    expected = anchors_per_level((100, 140), (16, 32), (20, 40), (1.0, 2.0), (1.0,), 0.5)[1].view(-1, 2, 4)[:, 1]
    drawn_xyxy = torch.tensor([_rect_xyxy(r) for r in drawn["boxes"]], dtype=torch.float64)
    torch.testing.assert_close(drawn_xyxy, expected.double(), rtol=0, atol=1e-4)
    assert drawn["grid"] == (4, 5) and drawn["anchor"] == pytest.approx((80.0, 80.0))
    assert "stride 32" in ax.get_title() and "size 40·2^1 = 80.0 px" in ax.get_title()


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


def test_anchor_figure_draws_on_a_given_figure_without_pyplot() -> None:
    before = plt.get_fignums()
    fig = Figure()
    assert anchor_figure(IMAGE, level=1, fig=fig) is fig
    assert anchor_figure(IMAGE, level=2, fig=fig) is fig  # drawn again: cleared first
    assert len(fig.axes) == 1 and "P5" in fig.axes[0].get_title()
    assert plt.get_fignums() == before


def test_anchor_explorer_offers_the_generators_levels_scales_and_ratios() -> None:
    explorer = anchor_explorer(IMAGE)
    assert len(explorer.controls["level"].options) == 5
    assert len(explorer.controls["scale"].options) == 3 and len(explorer.controls["ratio"].options) == 3
    generator = AnchorGenerator(strides=(8, 16, 32), sizes=(16, 32, 64), scales=(1.0,), aspect_ratios=(0.5, 1.0))
    explorer = anchor_explorer(IMAGE, generator, ratio_index=0)
    assert [label for label, _ in explorer.controls["level"].options] == [
        "P3 (stride 8)",
        "P4 (stride 16)",
        "P5 (stride 32)",
    ]
    assert len(explorer.controls["scale"].options) == 1 and len(explorer.controls["ratio"].options) == 2


@pytest.mark.parametrize(
    "control, value, expected_in_title",
    [
        ("level", 4, "P7"),
        ("scale", 2, "2^(2/3)"),
        ("ratio", 2, "h/w 2"),
    ],
)
def test_anchor_explorer_redraws_when_a_control_changes(control: str, value: int, expected_in_title: str) -> None:
    explorer = anchor_explorer(IMAGE)
    assert expected_in_title not in explorer.figure.axes[0].get_title()
    explorer.controls[control].value = value
    assert explorer.draw_count == 2
    assert expected_in_title in explorer.figure.axes[0].get_title()
    assert len(explorer.figure.axes) == 1  # redrawn on the cleared figure, not on top


def test_anchor_explorer_readout_counts_the_levels_anchors() -> None:
    explorer = anchor_explorer(IMAGE)
    explorer.controls["level"].value = 2
    grid_h, grid_w = math.ceil(100 / 32), math.ceil(140 / 32)
    assert explorer.result["grid"] == (grid_h, grid_w)
    assert f"{grid_h * grid_w * 9:,} anchors" in explorer.readout.value
