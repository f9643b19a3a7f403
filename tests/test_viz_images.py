"""Tests of retina_edu.viz.images (images, boxes, detections) and of importing retina_edu.viz."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image
from torchvision.ops import box_convert

from retina_edu.data import CocoDetection
from retina_edu.viz import (
    class_color,
    draw_boxes,
    show_detections,
    show_grid,
    show_image,
    to_display_array,
)


def _rect_xyxy(rect: Rectangle) -> list[float]:
    x, y = rect.get_xy()
    return [x, y, x + rect.get_width(), y + rect.get_height()]


def test_importing_viz_does_not_import_pyplot() -> None:
    code = "import sys, retina_edu.viz; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_class_color_is_matplotlib_tab10_and_cycles() -> None:
    tab10 = matplotlib.colormaps["tab10"]
    for label in range(10):
        np.testing.assert_allclose(class_color(label), tab10(label)[:3], atol=1e-3)
    assert class_color(13) == class_color(3)
    assert len({class_color(label) for label in range(10)}) == 10


def test_draw_boxes_adds_one_rectangle_and_one_caption_per_box() -> None:
    fig, ax = plt.subplots()
    boxes = torch.tensor([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 9.0, 8.0]])
    artists = draw_boxes(
        ax,
        boxes,
        labels=torch.tensor([3, 0]),
        scores=torch.tensor([0.9, 0.456]),
        class_names=["ellipse", "rectangle", "triangle", "ring"],
    )
    assert len(ax.patches) == 2 and len(ax.texts) == 2 and len(artists) == 4
    assert [t.get_text() for t in ax.texts] == ["ring 0.90", "ellipse 0.46"]
    assert [_rect_xyxy(p) for p in ax.patches] == boxes.tolist()
    np.testing.assert_allclose(ax.patches[0].get_edgecolor()[:3], class_color(3))


def test_draw_boxes_without_labels_or_scores_adds_no_captions() -> None:
    fig, ax = plt.subplots()
    draw_boxes(ax, np.array([[0, 0, 4, 4], [1, 1, 2, 2], [3, 3, 5, 6]]))
    assert len(ax.patches) == 3 and len(ax.texts) == 0
    draw_boxes(ax, torch.zeros(0, 4))
    assert len(ax.patches) == 3


def test_draw_boxes_caption_shows_label_number_without_class_names() -> None:
    fig, ax = plt.subplots()
    draw_boxes(ax, [[0, 0, 4, 4]], labels=[7])
    assert [t.get_text() for t in ax.texts] == ["7"]


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_draw_boxes_formats_agree_with_torchvision_box_convert(fmt: str) -> None:
    xyxy = torch.tensor([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 9.0, 8.5]])
    fig, ax = plt.subplots()
    draw_boxes(ax, box_convert(xyxy, "xyxy", fmt), fmt=fmt)
    np.testing.assert_allclose([_rect_xyxy(p) for p in ax.patches], xyxy.numpy())


def test_draw_boxes_colors_one_for_all_or_one_per_box() -> None:
    fig, ax = plt.subplots()
    draw_boxes(ax, [[0, 0, 1, 1], [1, 1, 2, 2]], colors="red")
    draw_boxes(ax, [[0, 0, 1, 1], [1, 1, 2, 2]], colors=[(0, 0, 1), (0, 1, 0)])
    edge = [tuple(p.get_edgecolor()[:3]) for p in ax.patches]
    assert edge == [(1, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0)]


def test_draw_boxes_rejects_mismatched_inputs() -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        draw_boxes(ax, [[0, 0, 1, 1], [1, 1, 2, 2]], labels=[1])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        draw_boxes(ax, [[0, 0, 1]])
    with pytest.raises(ValueError, match="fmt"):
        draw_boxes(ax, [[0, 0, 1, 1]], fmt="yxyx")


def test_show_image_accepts_tensor_numpy_and_pil_alike() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    chw_float = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255
    fig, axes = plt.subplots(1, 3)
    show_image(axes[0], chw_float)
    show_image(axes[1], hwc)
    show_image(axes[2], Image.fromarray(hwc))
    shown = [np.asarray(ax.images[0].get_array(), dtype=np.float64) for ax in axes]
    np.testing.assert_allclose(shown[0] * 255, hwc, atol=1e-3)
    np.testing.assert_array_equal(shown[1], hwc)
    np.testing.assert_array_equal(shown[2], hwc)


def test_to_display_array_clips_floats_and_rejects_bad_shapes() -> None:
    assert to_display_array(torch.full((3, 2, 2), 2.0)).max() == 1.0
    assert to_display_array(torch.rand(1, 4, 5)).shape == (4, 5)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_display_array(torch.rand(5, 4, 4))


def test_show_detections_skips_scores_below_the_threshold() -> None:
    prediction = {
        "boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 2.0, 8.0, 8.0], [1.0, 1.0, 3.0, 3.0]]),
        "labels": torch.tensor([0, 1, 2]),
        "scores": torch.tensor([0.9, 0.2, 0.6]),
    }
    ax = show_detections(torch.rand(3, 10, 12), prediction, ["a", "b", "c"], score_threshold=0.5)
    assert [t.get_text() for t in ax.texts] == ["a 0.90", "c 0.60"]
    assert len(ax.patches) == 2
    assert ax.get_xlim() == (0, 12) and ax.get_ylim() == (10, 0)


def test_show_grid_draws_each_image_with_its_ground_truth(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    indices = [0, 1, 2, 3, 4]
    fig = show_grid(dataset, indices, ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3, the last one blank
    for ax, index in zip(fig.axes, indices):
        n = len(dataset.get_target(index)["boxes"])
        assert len(ax.patches) == n and len(ax.images) == 1
        assert {t.get_text().split()[0] for t in ax.texts} <= set(dataset.classes)
    assert len(fig.axes[5].images) == 0
    with pytest.raises(ValueError, match="no indices"):
        show_grid(dataset, [])
