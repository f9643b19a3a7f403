"""Tests of retina_edu.viz.ablations (notebook 10): bars with the seed spread, Figure 4 curves, the γ explorer."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from retina_edu.analysis import anchor_losses, hardest_share, loss_cdf
from retina_edu.viz import loss_cdf_explorer, plot_ablation_bars, plot_loss_cdfs


def test_bars_are_the_mean_over_seeds_and_diverged_runs_are_left_out():
    fig, ax = plt.subplots()
    plot_ablation_bars({"a": [0.1, 0.3], "b": [0.5, math.nan]}, ax=ax, reference={"a": 0.25})
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.2, 0.5])
    assert any("1 diverged" in t.get_text() for t in ax.texts)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]


def test_cdf_curves_are_the_package_curves_from_the_origin():
    fig, ax = plt.subplots()
    curves = {g: loss_cdf(torch.rand(50) ** g) for g in (1, 3)}
    plot_loss_cdfs(curves, ax=ax)
    for line, (fraction, cumulative) in zip(ax.get_lines()[:2], curves.values()):
        x, y = line.get_data()
        assert (x[0], y[0]) == (0.0, 0.0) and y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0)
        np.testing.assert_allclose(x[1:], fraction.numpy())
        np.testing.assert_allclose(y[1:], cumulative.numpy())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["γ = 1", "γ = 3"]


def test_explorer_draws_and_reads_out_the_package_numbers():
    g = torch.Generator().manual_seed(0)
    logits = {"positive": torch.randn(40, generator=g), "negative": torch.randn(500, 4, generator=g) - 3}
    box = loss_cdf_explorer(logits["positive"], logits["negative"], gamma=0.0)
    at_zero = dict(box.result)
    box.controls["gamma"].value = 2.0
    losses = anchor_losses(logits, gammas=(2.0,))[2.0]
    assert box.result["negative"] == pytest.approx(hardest_share(losses["negative"]))
    assert box.result["positive"] == pytest.approx(hardest_share(losses["positive"]))
    assert box.result["negative"] > at_zero["negative"]
    assert "γ = 2.0" in box.readout.value and f"{box.result['negative']:.0%}" in box.readout.value
    negative_panel = box.figure.axes[1]
    fl_line = negative_panel.get_lines()[1]  # [0] is γ = 0 (CE), [1] the slider's γ
    np.testing.assert_allclose(fl_line.get_ydata()[1:], loss_cdf(losses["negative"])[1].numpy())


def test_explorer_takes_one_logit_per_negative_as_one_class():
    g = torch.Generator().manual_seed(0)
    positive, negative = torch.randn(30, generator=g), torch.randn(200, generator=g) - 3
    box = loss_cdf_explorer(positive, negative, gamma=2.0)
    losses = anchor_losses({"positive": positive, "negative": negative[:, None]}, gammas=(2.0,))[2.0]
    assert box.result["negative"] == pytest.approx(hardest_share(losses["negative"]))
    assert "(200)" in box.figure.axes[1].get_title()
