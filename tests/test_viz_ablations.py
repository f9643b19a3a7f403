"""retina_edu.viz, ablation figures (notebook 09): bars with the seed spread, Figure 4 curves, the γ explorer."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from retina_edu.ablations import anchor_losses, hardest_share, loss_cdf  # noqa: E402
from retina_edu.viz import loss_cdf_explorer, plot_ablation_bars, plot_loss_cdfs  # noqa: E402


def test_bars_are_the_mean_over_seeds_and_diverged_runs_are_left_out():
    fig, ax = plt.subplots()
    plot_ablation_bars({"a": [0.1, 0.3], "b": [0.5, math.nan]}, ax=ax, reference={"a": 0.25})
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.2, 0.5])
    assert any("1 diverged" in t.get_text() for t in ax.texts)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)


def test_cdf_curves_start_at_the_origin_and_end_at_one():
    fig, ax = plt.subplots()
    curves = {g: loss_cdf(torch.rand(50) ** g) for g in (1, 3)}
    plot_loss_cdfs(curves, ax=ax)
    lines = ax.get_lines()[:2]
    for line in lines:
        x, y = line.get_data()
        assert (x[0], y[0]) == (0.0, 0.0) and y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["γ = 1", "γ = 3"]
    plt.close(fig)


def test_explorer_readout_follows_the_slider_and_matches_the_package():
    g = torch.Generator().manual_seed(0)
    logits = {"positive": torch.randn(40, generator=g), "negative": torch.randn(500, 4, generator=g) - 3}
    box = loss_cdf_explorer(logits["positive"], logits["negative"], gamma=0.0)
    at_zero = dict(box.shares)
    box.controls["gamma"].value = 2.0
    losses = anchor_losses(logits, gammas=(2.0,))[2.0]
    assert box.shares["negative"] == pytest.approx(hardest_share(losses["negative"]))
    assert box.shares["positive"] == pytest.approx(hardest_share(losses["positive"]))
    assert box.shares["negative"] > at_zero["negative"]
    assert "γ = 2.0" in box.readout.value
