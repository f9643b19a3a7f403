"""Tests of retina_edu.viz.inference (notebook 07): score maps per level, NMS and its explorer."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import batched_nms

from retina_edu.viz import class_color, draw_nms, nms_explorer, show_level_maps


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


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
        tuple(np.round(class_color(k), 6)) for k in (0, 1)
    }


def test_draw_nms_rejects_mismatched_inputs() -> None:
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        draw_nms(ax, np.zeros((8, 8, 3)), torch.zeros(2, 4), torch.zeros(1))


def test_nms_explorer_redraws_when_the_sliders_move() -> None:
    boxes, scores, labels = _candidates()
    box = nms_explorer(np.zeros((100, 100, 3)), boxes, scores, labels, iou_thresh=0.5, score_thresh=0.0)
    assert box.result["candidates"] == 12
    assert box.result["kept"] == len(batched_nms(boxes, scores, labels, 0.5)) < 12
    box.controls["iou"].value = 1.0  # nothing overlaps more than IoU 1: everything stays
    assert box.result["kept"] == 12
    assert "<b>12</b> after NMS" in box.readout.value
    box.controls["score"].value = 0.95
    assert box.result["candidates"] == int((scores >= 0.95).sum())


# ---------------------------------------------------------------------------------------------
# draw_threshold_nms and its explorer (notebook 09)
# ---------------------------------------------------------------------------------------------
def _judged_candidates() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    gt_boxes, gt_labels = torch.tensor([[0.0, 0, 40, 40], [50, 50, 90, 90]]), torch.tensor([1, 0])
    candidates = {
        "boxes": torch.tensor([[0.0, 0, 40, 40], [2.0, 0, 42, 40], [50, 50, 90, 90], [60, 0, 90, 30]]),
        "scores": torch.tensor([0.9, 0.8, 0.4, 0.2]),
        "labels": torch.tensor([1, 1, 1, 0]),
    }
    return candidates, gt_boxes, gt_labels


def test_draw_threshold_nms_colours_true_and_false_positives_and_marks_the_missed() -> None:
    from retina_edu.analysis import threshold_and_nms
    from retina_edu.viz.inference import FP_COLOR, MISSED_COLOR, TP_COLOR, draw_threshold_nms

    candidates, gt_boxes, gt_labels = _judged_candidates()
    _, ax = plt.subplots()
    result = draw_threshold_nms(ax, np.zeros((100, 100, 3)), candidates, gt_boxes, gt_labels, 0.3, 0.95)
    want = threshold_and_nms(candidates, gt_boxes, gt_labels, 0.3, 0.95)
    assert (
        result["counts"]
        == want["counts"]
        == {"candidates": 4, "above threshold": 3, "kept": 3, "tp": 1, "fp": 2, "missed": 1}
    )
    edges = [tuple(np.round(p.get_edgecolor(), 3)) for p in _rectangles(ax)]
    from matplotlib.colors import to_rgba

    # two ground-truth boxes (the class-0 one missed: the class-1 box on it is a wrong class), three kept
    assert edges.count(tuple(np.round(to_rgba(MISSED_COLOR), 3))) == 1
    assert edges.count(tuple(np.round(to_rgba(TP_COLOR), 3))) == 1
    assert edges.count(tuple(np.round(to_rgba(FP_COLOR), 3))) == 2
    assert "1 TP, 2 FP, 1 missed" in ax.get_title()


def test_threshold_nms_explorer_follows_its_sliders_and_images() -> None:
    from retina_edu.viz.inference import threshold_nms_explorer, threshold_nms_readout

    candidates, gt_boxes, gt_labels = _judged_candidates()
    targets = [{"boxes": gt_boxes, "labels": gt_labels}, {"boxes": gt_boxes[:1], "labels": gt_labels[:1]}]
    explorer = threshold_nms_explorer(
        [np.zeros((100, 100, 3))] * 2, [candidates] * 2, targets, score_thresh=0.3, nms_iou=0.5
    )
    assert explorer.result["counts"]["kept"] == 2
    explorer.controls["iou"].value = 0.95  # the duplicate survives NMS: one more false positive
    assert (explorer.result["counts"]["kept"], explorer.result["counts"]["fp"]) == (3, 2)
    explorer.controls["score"].value = 0.85
    assert explorer.result["counts"]["kept"] == 1
    explorer.controls["image"].value = 1
    assert explorer.result["counts"]["missed"] == 0
    assert explorer.readout.value == threshold_nms_readout(explorer.result, explorer.values)
    assert explorer.draw_count == 4
    with pytest.raises(ValueError, match="2 images, 1 candidate sets"):
        threshold_nms_explorer([np.zeros((8, 8, 3))] * 2, [candidates], targets)
