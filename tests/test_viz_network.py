"""Tests of retina_edu.viz.network (notebook 05): feature maps, object sizes by pyramid level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from retina_edu.anchors import PYRAMID_LEVEL_NAMES
from retina_edu.viz import plot_level_assignment, show_feature_maps


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
    ax = plot_level_assignment(
        sizes, levels, covered, anchor_sizes=[(32, 40, 50), (64, 80, 101), (128, 161, 203), (256,), (512,)]
    )
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


def test_plot_level_assignment_names_the_papers_levels_by_default() -> None:
    ax = plot_level_assignment([20.0, 60.0, 200.0], [0, 1, 4])
    names = [t.get_text().split()[0] for t in ax.get_legend().get_texts()]
    assert names == list(PYRAMID_LEVEL_NAMES)


# ---------------------------------------------------------------------------------------------
# one box's level (the explorer), and the architecture figure
# ---------------------------------------------------------------------------------------------
def test_draw_box_levels_draws_the_best_anchor_of_each_level_and_one_bar_per_level() -> None:
    import matplotlib.pyplot as plt

    from retina_edu.analysis import box_level_assignment
    from retina_edu.viz.network import draw_box_levels

    result = box_level_assignment(90.0)
    fig = draw_box_levels(result)
    ax_img, ax_bar = fig.axes
    rects = [p for p in ax_img.patches if isinstance(p, Rectangle)]
    assert len(rects) == 1 + len(PYRAMID_LEVEL_NAMES) + 1  # the image, one anchor per level, the box
    widths = [r.get_linewidth() for r in rects[1:-1]]
    assert int(np.argmax(widths)) == result["level"]  # the assigned level's anchor is drawn thick
    np.testing.assert_allclose([b.get_height() for b in ax_bar.patches], result["best_iou"])
    assert "P4" in ax_bar.get_title()
    plt.close(fig)


def test_box_level_explorer_follows_size_and_aspect() -> None:
    import matplotlib.pyplot as plt

    from retina_edu.viz.network import box_level_explorer

    box = box_level_explorer(size=32.0)
    size, aspect = box.controls["size"], box.controls["aspect"]
    assert size.description == "size" and "box-size" in size._dom_classes and aspect.description == "h/w"
    assert box.result["level"] == 0 and "Its best anchor is on <b>P3</b>" in box.readout.value
    size.value = 256.0
    assert box.result["level"] == 3 and "256 px" in box.readout.value
    aspect.value = 4.0
    assert box.result["best_iou"][3] < 1.0 and "h/w = 4.00" in box.readout.value
    assert plt.get_fignums() == []


def test_plot_architecture_writes_every_measured_shape() -> None:
    import matplotlib.pyplot as plt

    from retina_edu.analysis import network_shapes
    from retina_edu.model import RetinaNet
    from retina_edu.viz.network import plot_architecture

    shapes = network_shapes(RetinaNet(3, backbone="resnet18", fpn_channels=16, head_convs=1), (128, 128))
    fig = plot_architecture(shapes)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for shape in shapes["C"] + shapes["P"]:
        assert "×".join(map(str, shape[1:])) in texts
    assert f"{shapes['class'][1]}×3" in texts and f"{shapes['box'][1]}×4" in texts
    assert "P7" in texts and "C5" in texts
    plt.close(fig)
