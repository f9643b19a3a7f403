"""Tests of retina_edu.viz.loss (notebook 04): the box-loss curves, the per-anchor histograms, the
normaliser bars and the β explorer (its explorer contract is checked in test_viz_explorers)."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from retina_edu.analysis import box_losses_per_anchor, box_losses_vs_offset, normalise_loss, quadratic_share
from retina_edu.losses import SMOOTH_L1_BETA
from retina_edu.viz import (
    BOX_LOSS_COLORS,
    box_loss_explorer,
    box_loss_readout,
    plot_box_loss_curves,
    plot_box_losses_per_anchor,
    plot_normalisers,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def deltas() -> torch.Tensor:
    """Offsets shaped like a matcher's: small, with a tail."""
    g = torch.Generator().manual_seed(0)
    return 0.15 * torch.randn(500, 4, generator=g) + 0.5 * (torch.rand(500, 4, generator=g) < 0.05)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _line_by_color(ax: Any, color: str) -> Any:
    return next(line for line in ax.get_lines() if line.get_color() == color)


@pytest.mark.parametrize("beta", [0.0, SMOOTH_L1_BETA, 0.4])
def test_box_loss_curves_draw_the_analysis_curves(deltas, beta):
    fig = plot_box_loss_curves(deltas, beta)
    ax_loss, ax_grad = fig.axes[0], fig.axes[1]
    x = _line_by_color(ax_loss, BOX_LOSS_COLORS["smooth_l1"]).get_xdata()
    expected = box_losses_vs_offset(x, beta)
    for name, color in BOX_LOSS_COLORS.items():
        np.testing.assert_allclose(_line_by_color(ax_loss, color).get_ydata(), expected[name].numpy())
        np.testing.assert_allclose(_line_by_color(ax_grad, color).get_ydata(), expected[f"{name}_grad"].numpy())
    assert any(f"β = {beta:.2f}" in t.get_text() for t in ax_loss.get_legend().get_texts())


def test_box_loss_curves_draw_on_given_axes(deltas):
    fig, axes = plt.subplots(1, 2)
    assert plot_box_loss_curves(deltas, axes=axes) is fig


def test_box_loss_curves_reject_empty_offsets():
    with pytest.raises(ValueError, match="at least one"):
        plot_box_loss_curves(torch.zeros(0, 4))


def test_box_losses_per_anchor_histograms_state_the_means(deltas):
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(len(deltas), 1)
    from retina_edu.boxes import BoxCoder

    boxes = BoxCoder().decode(anchors, deltas)
    losses = box_losses_per_anchor(anchors, boxes)
    ax = plot_box_losses_per_anchor(losses)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for name, text in zip(("l1", "smooth_l1", "giou"), texts):
        assert f"mean {losses[name].mean():.3f}" in text
    assert len(ax.patches) == 3  # one step histogram per loss


def test_normaliser_bars_are_the_normalised_shares():
    sums = {
        "classification": torch.tensor([150.0, 10.0], dtype=torch.float64),
        "bbox_regression": torch.tensor([60.0, 4.0], dtype=torch.float64),
        "positives": torch.tensor([200, 8]),
    }
    fig = plot_normalisers(sums, names=["crowded", "sparse"])
    ax_count, ax_share = fig.axes
    assert [p.get_height() for p in ax_count.patches] == [200, 8]
    heights = [p.get_height() for p in ax_share.patches]
    for k, normalize in enumerate(("batch", "image")):
        parts = normalise_loss(sums, normalize)["per_image"].numpy()
        np.testing.assert_allclose(heights[2 * k : 2 * k + 2], 100 * parts / parts.sum())
    assert heights[3] > heights[1]  # per image, the sparse image weighs more than per batch
    assert [t.get_text() for t in ax_share.get_xticklabels()] == ["crowded", "sparse"]


def test_readout_names_beta_and_the_quadratic_share(deltas):
    text = box_loss_readout(deltas, 0.2)
    assert "β = 0.20" in text and f"{100 * quadratic_share(deltas, 0.2):.0f}%" in text
    assert f"{box_losses_vs_offset(deltas)['l1'].sum(-1).mean():.3f}" in text
    with pytest.raises(ValueError, match=r"Tensor\[P, 4\]"):
        box_loss_readout(torch.zeros(10), 0.1)


def test_explorer_moves_the_smooth_l1_curve_and_the_band(deltas):
    box = box_loss_explorer(deltas)
    slider = box.controls["beta"]
    assert isinstance(slider, widgets.FloatSlider) and not slider.continuous_update
    assert slider.value == pytest.approx(SMOOTH_L1_BETA) and "box-loss-beta" in slider._dom_classes
    assert "box-loss-explorer" in box._dom_classes and "box-loss-readout" in box.readout._dom_classes
    ax_loss = box.figure.axes[0]
    line = _line_by_color(ax_loss, BOX_LOSS_COLORS["smooth_l1"])
    before = np.array(line.get_ydata())
    slider.value = 0.4
    after = np.array(line.get_ydata())
    np.testing.assert_allclose(after, box_losses_vs_offset(line.get_xdata(), 0.4)["smooth_l1"].numpy())
    assert not np.allclose(before, after)
    assert box.result == {"beta": 0.4, "quadratic_share": quadratic_share(deltas, 0.4)}
    assert "β = 0.40" in box.readout.value
