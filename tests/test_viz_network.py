"""Tests of the network and inference figures of retina_edu.viz (notebooks 04-06), on matplotlib's Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torchvision.ops import batched_nms  # noqa: E402

from retina_edu.viz import (  # noqa: E402
    class_color,
    draw_nms,
    nms_explorer,
    plot_level_assignment,
    plot_loss_curves,
    show_feature_maps,
    show_level_maps,
)


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ---------------------------------------------------------------------------------------------
# show_feature_maps
# ---------------------------------------------------------------------------------------------
def test_show_feature_maps_draws_the_average_then_the_most_varied_channels() -> None:
    gen = torch.Generator().manual_seed(0)
    c3 = 0.01 * torch.randn(1, 6, 16, 16, generator=gen)
    c3[0, 4] = 10 * torch.randn(16, 16, generator=gen)  # channel 4 varies most, then channel 1
    c3[0, 1] = 3 * torch.randn(16, 16, generator=gen)
    p7 = torch.randn(6, 2, 2, generator=gen)
    fig = show_feature_maps([c3, p7], names=["C3", "P7"], channels=2, strides=[8, 128])
    axes = np.array(fig.axes).reshape(3, 2)
    assert "C3" in axes[0, 0].get_title() and "6×16×16, s=8" in axes[0, 0].get_title()
    labels = [t.get_text() for t in axes[1, 0].texts] + [t.get_text() for t in axes[2, 0].texts]
    assert labels == ["ch 4", "ch 1"]
    mean_abs = c3[0].abs().mean(0).numpy()
    expected = (mean_abs - mean_abs.min()) / (mean_abs.max() - mean_abs.min())
    np.testing.assert_allclose(axes[0, 0].images[0].get_array(), expected, rtol=1e-5, atol=1e-6)
    assert axes[0, 1].images[0].get_array().shape == (2, 2)  # coarse maps keep their own resolution


def test_show_feature_maps_blanks_rows_a_map_has_no_channels_for() -> None:
    fig = show_feature_maps([torch.randn(1, 2, 4, 4)], channels=3)
    axes = fig.axes
    assert len(axes) == 4
    assert [len(ax.images) for ax in axes] == [1, 1, 1, 0] and not axes[3].axison


def test_show_feature_maps_rejects_mismatched_names_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2 feature maps but 1 names"):
        show_feature_maps([torch.zeros(1, 4, 4), torch.zeros(1, 2, 2)], names=["C3"])
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        show_feature_maps([torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="no feature maps"):
        show_feature_maps([])


# ---------------------------------------------------------------------------------------------
# plot_level_assignment
# ---------------------------------------------------------------------------------------------
def test_plot_level_assignment_stacks_one_group_per_level_and_the_uncovered_in_grey() -> None:
    sizes = np.array([10.0, 12, 40, 45, 50, 90, 100, 180])
    levels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    covered = np.array([False, False, True, True, True, True, True, True])
    ax = plot_level_assignment(sizes, levels, covered, anchor_sizes=[(32, 40, 50), (64, 80, 101), (128, 161, 203),
                                                                    (256,), (512,)])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["P3 (2)", "P4 (2)", "P5 (2)", "P6 (0)", "P7 (0)", "best IoU < 0.5 (2)"]
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
    assert sum(p.get_height() for p in bars) == pytest.approx(len(sizes))
    grey = [p for p in bars if p.get_facecolor()[:3] == pytest.approx((0.7, 0.7, 0.7))]
    assert sum(p.get_height() for p in grey) == pytest.approx(2)
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] < 0  # room for the anchor-size bars


def test_plot_level_assignment_without_covered_has_no_grey_group() -> None:
    ax = plot_level_assignment([20.0, 60.0], [0, 1])
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "P7 (0)"


def test_plot_level_assignment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"levels must be in \[0, 5\)"):
        plot_level_assignment([10.0], [5])
    with pytest.raises(ValueError, match="2 sizes but 1 levels"):
        plot_level_assignment([10.0, 20.0], [0])
    with pytest.raises(ValueError, match="positive"):
        plot_level_assignment([0.0], [0])


# ---------------------------------------------------------------------------------------------
# plot_loss_curves
# ---------------------------------------------------------------------------------------------
def test_plot_loss_curves_stops_a_diverged_run_at_its_first_nan_and_marks_it() -> None:
    ax = plot_loss_curves({"prior": [3.0, 2.0, 1.5, 1.2], "bias 0": [100.0, 50.0, 1e6, float("nan"), float("nan")]},
                          colors={"prior": "tab:blue"})
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) >= {"prior", "bias 0: NaN at step 3"}
    assert list(lines["bias 0: NaN at step 3"].get_xdata()) == [0, 1, 2]
    markers = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [2] and list(markers[0].get_ydata()) == [1e6]
    assert lines["prior"].get_color() == "tab:blue"
    assert ax.get_yscale() == "log"


def test_plot_loss_curves_names_infinity_and_keeps_linear_scale_on_request() -> None:
    ax = plot_loss_curves({"run": [1.0, float("inf")]}, logy=False)
    assert ax.get_lines()[0].get_label() == "run: inf at step 1"
    assert ax.get_yscale() == "linear"


# ---------------------------------------------------------------------------------------------
# show_level_maps
# ---------------------------------------------------------------------------------------------
def test_show_level_maps_draws_each_map_over_the_whole_image() -> None:
    maps = [np.random.rand(8, 8), np.random.rand(4, 4), np.random.rand(2, 2)]
    fig = show_level_maps(maps, image=np.zeros((64, 64, 3)), names=["P3", "P4", "P5"])
    panels = fig.axes[:3]
    assert len(fig.axes) == 4  # three panels and a colour bar
    for ax, m in zip(panels, maps):
        overlay = ax.images[-1]
        assert overlay.get_array().shape == m.shape
        assert tuple(overlay.get_extent()) == (0, 64, 64, 0)
    assert panels[1].get_title().startswith("P4 (4×4)")


def test_show_level_maps_rejects_non_2d_maps_and_wrong_names() -> None:
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        show_level_maps([np.zeros((2, 3, 3))])
    with pytest.raises(ValueError, match="2 maps but 1 names"):
        show_level_maps([np.zeros((2, 2)), np.zeros((1, 1))], names=["P3"])


# ---------------------------------------------------------------------------------------------
# draw_nms and nms_explorer
# ---------------------------------------------------------------------------------------------
def _candidates():
    gen = torch.Generator().manual_seed(0)
    base = torch.tensor([[10.0, 10, 50, 50], [60, 20, 90, 80]])
    boxes = base.repeat_interleave(6, 0) + 3 * torch.randn(12, 4, generator=gen)
    scores = torch.rand(12, generator=gen)
    labels = torch.tensor([0] * 6 + [1] * 5 + [0])
    return boxes, scores, labels


def test_draw_nms_keeps_what_torchvision_batched_nms_keeps() -> None:
    boxes, scores, labels = _candidates()
    _, ax = plt.subplots()
    counts = draw_nms(ax, np.zeros((100, 100, 3)), boxes, scores, labels, iou_thresh=0.5, score_thresh=0.2)
    show = scores >= 0.2
    expected = batched_nms(boxes[show], scores[show], labels[show], 0.5)
    assert counts == {"candidates": int(show.sum()), "kept": len(expected)}
    rects = _rectangles(ax)
    dashed = [r for r in rects if r.get_linestyle() == "--"]
    assert len(rects) == counts["candidates"] and len(dashed) == counts["candidates"] - counts["kept"]
    assert len(ax.texts) == counts["kept"]
    assert "NMS 0.5" in ax.get_title()


def test_draw_nms_is_class_aware_and_none_means_no_suppression() -> None:
    boxes = torch.tensor([[10.0, 10, 50, 50], [10, 10, 50, 50], [11, 11, 51, 51]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, ax = plt.subplots()
    assert draw_nms(ax, np.zeros((64, 64, 3)), boxes, scores, torch.tensor([0, 1, 0]))["kept"] == 2
    _, ax = plt.subplots()
    assert draw_nms(ax, np.zeros((64, 64, 3)), boxes, scores, None)["kept"] == 1  # no labels: one group
    _, ax = plt.subplots()
    assert draw_nms(ax, np.zeros((64, 64, 3)), boxes, scores, torch.tensor([0, 1, 0]), iou_thresh=None)["kept"] == 3


def test_draw_nms_without_captions_colours_boxes_by_class_only() -> None:
    boxes, scores, labels = _candidates()
    _, ax = plt.subplots()
    counts = draw_nms(ax, np.zeros((100, 100, 3)), boxes, scores, labels, captions=False)
    solid = [r for r in _rectangles(ax) if r.get_linestyle() != "--"]
    assert len(ax.texts) == 0 and len(solid) == counts["kept"]
    assert {tuple(np.round(r.get_edgecolor()[:3], 6)) for r in solid} <= {
        tuple(np.round(class_color(k), 6)) for k in (0, 1)}


def test_draw_nms_rejects_mismatched_inputs() -> None:
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        draw_nms(ax, np.zeros((8, 8, 3)), torch.zeros(2, 4), torch.zeros(1))


def test_nms_explorer_redraws_when_the_sliders_move() -> None:
    boxes, scores, labels = _candidates()
    box = nms_explorer(np.zeros((100, 100, 3)), boxes, scores, labels, iou_thresh=0.5, score_thresh=0.0)
    assert box.counts["candidates"] == 12 and box.counts["kept"] < 12
    first_png = box.image.value
    assert first_png[:8] == b"\x89PNG\r\n\x1a\n"
    box.controls["iou"].value = 1.0  # nothing overlaps more than IoU 1: everything stays
    assert box.counts["kept"] == 12 and box.image.value != first_png
    assert "<b>12</b> after NMS" in box.readout.value
    box.controls["score"].value = 0.95
    assert box.counts["candidates"] == int((scores >= 0.95).sum())
    assert box.controls["iou"].continuous_update is False and box.controls["score"].continuous_update is False
