"""Tests of retina_edu.viz.lossmaps (notebook 09): loss maps drawn from anchor_loss_map, and their explorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_edu.analysis import anchor_loss_map
from retina_edu.matching import BACKGROUND, IGNORE
from retina_edu.viz import SHARE_RANGE, draw_loss_map, loss_map_explorer, loss_map_readout, plot_loss_maps

GRIDS = [(8, 8), (4, 4), (2, 2)]
PER_LOCATION = 3


def fake_outputs(seed: int = 0) -> dict:
    """What ``anchor_outputs`` returns for a 64-pixel image with one object, three levels."""
    g = torch.Generator().manual_seed(seed)
    num_anchors = sum(h * w for h, w in GRIDS) * PER_LOCATION
    logits = torch.randn(num_anchors, 2, generator=g) - 4.0
    matches = torch.full((num_anchors,), BACKGROUND)
    matches[30:36] = 0
    matches[40:44] = IGNORE
    labels = torch.where(matches >= 0, torch.ones_like(matches), matches)
    logits[30:36, 1] += 5.0
    return {
        "cls_logits": logits,
        "matches": matches,
        "labels": labels,
        "grid_sizes": GRIDS,
        "padded_size": (64, 64),
        "boxes": torch.tensor([[8.0, 8, 40, 40]]),
        "gt_labels": torch.tensor([1]),
    }


def test_draw_loss_map_shows_each_locations_share_over_the_whole_padded_input() -> None:
    import matplotlib.pyplot as plt

    out = fake_outputs()
    result = anchor_loss_map(out["cls_logits"], out["matches"], out["labels"], GRIDS, 2.0)
    _, ax = plt.subplots()
    handle = draw_loss_map(
        ax,
        np.zeros((48, 64, 3)),
        result["maps"][0],
        result["total"],
        out["boxes"],
        out["gt_labels"],
        padded_size=(64, 64),
    )
    shown = np.asarray(handle.get_array())
    want = np.clip(result["maps"][0].numpy() / result["total"], SHARE_RANGE[0], None)
    np.testing.assert_allclose(shown, want)
    assert tuple(handle.get_extent()) == (0, 64, 64, 0)
    assert ax.get_ylim() == (48, 0)  # the view is the image, not the padding
    assert len(ax.patches) == 1
    with pytest.raises(ValueError, match="total must be > 0"):
        draw_loss_map(ax, np.zeros((8, 8, 3)), result["maps"][0], 0.0)


def test_plot_loss_maps_draws_one_row_per_gamma_with_its_shares() -> None:
    out = fake_outputs()
    rows = [anchor_loss_map(out["cls_logits"], out["matches"], out["labels"], GRIDS, g) for g in (0.0, 2.0)]
    fig = plot_loss_maps(np.zeros((64, 64, 3)), rows, ["γ = 0", "γ = 2"], out["boxes"], out["gt_labels"])
    assert len(fig.axes) == 2 * len(GRIDS) + 1  # the panels and a colour bar
    assert fig.axes[1].get_title() == f"P4 (4×4): {100 * rows[0]['level_shares'][1]:.0f}%"
    texts = [t.get_text() for t in fig.axes[len(GRIDS)].texts]
    assert any(f"easy negatives {100 * rows[1]['shares']['easy negatives']:.0f}%" in t for t in texts), texts
    with pytest.raises(ValueError, match="2 results but 1 row titles"):
        plot_loss_maps(np.zeros((64, 64, 3)), rows, ["γ = 0"])


def test_loss_map_explorer_redraws_and_reads_out_anchor_loss_map() -> None:
    outputs = [fake_outputs(0), fake_outputs(1)]
    images = [np.zeros((64, 64, 3)), np.ones((64, 64, 3))]
    explorer = loss_map_explorer(images, outputs, names=["a", "b"])
    assert set(explorer.controls) == {"gamma", "alpha", "level", "image"}
    first_png, first_count = explorer.image.value, explorer.draw_count
    explorer.controls["gamma"].value = 0.5
    assert explorer.draw_count == first_count + 1 and explorer.image.value != first_png
    want = anchor_loss_map(outputs[0]["cls_logits"], outputs[0]["matches"], outputs[0]["labels"], GRIDS, 0.5, 0.25)
    assert explorer.result["ce_over_fl"] == pytest.approx(want["ce_over_fl"])
    explorer.controls["image"].value = 1
    explorer.controls["level"].value = 2
    explorer.controls["alpha"].value = 0.5
    want = anchor_loss_map(outputs[1]["cls_logits"], outputs[1]["matches"], outputs[1]["labels"], GRIDS, 0.5, 0.5)
    assert explorer.result["shares"] == pytest.approx(want["shares"])
    assert explorer.readout.value == loss_map_readout(want, explorer.values)
    assert "P5 carries" in explorer.readout.value and "γ = 0.50, α = 0.50" in explorer.readout.value
    assert explorer.figure.axes[1].get_title() == "focal loss, γ = 0.50: P5"
    with pytest.raises(ValueError, match="2 images but 1 outputs"):
        loss_map_explorer(images, outputs[:1])
