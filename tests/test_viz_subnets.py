"""Tests of retina_edu.viz.subnets (notebook 06): the first loss against π, the first steps, the π explorer."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from retina_edu.analysis import prior_first_steps, prior_initial_loss
from retina_edu.viz import plot_prior_first_steps, plot_prior_initial_loss, plot_prior_panels, prior_explorer

COUNTS = (100, 20_000, 4)  # P, N, K


def test_initial_loss_curves_are_the_closed_form_for_ce_and_fl() -> None:
    ax = plot_prior_initial_loss(*COUNTS, pi=0.01)
    ce, fl = ax.lines[0], ax.lines[1]
    for line, (gamma, alpha) in ((ce, (0.0, None)), (fl, (2.0, 0.25))):
        pis = line.get_xdata()
        expected = [prior_initial_loss(p, *COUNTS, gamma=gamma, alpha=alpha)["total"] for p in pis]
        np.testing.assert_allclose(line.get_ydata(), expected)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    plt.close("all")


def test_first_steps_draw_one_run_per_loss_and_return_them() -> None:
    fig, ax = plt.subplots()
    runs = plot_prior_first_steps(0.5, *COUNTS, steps=5, reference=0.01, ax=ax)
    assert set(runs) == {"CE", "FL"}
    expected = prior_first_steps(0.5, *COUNTS, gamma=0.0, alpha=None, steps=5)
    assert runs["CE"] == expected
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected["loss"])
    assert len(ax.lines) == 4  # CE and FL at π, and their dashed π = 0.01 references
    plt.close("all")


def test_static_panels_have_the_curves_and_one_panel_per_pi() -> None:
    fig = plot_prior_panels(*COUNTS, pis=(0.01, 0.5), steps=4)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_prior_explorer_slider_is_logarithmic_from_1e_4_to_bias_0_and_the_readout_names_pi() -> None:
    box = prior_explorer(*COUNTS, pi=0.01)
    slider = box.controls["pi"]
    assert slider.description == "π" and "prior-pi" in slider._dom_classes
    assert 10**slider.min == pytest.approx(1e-4) and 10**slider.max == pytest.approx(0.5)
    assert "π = 0.01" in box.readout.value
    slider.value = 0.5
    assert "π = 0.5" in box.readout.value and "b = −log((1 − π)/π) = 0.00" in box.readout.value
    first = prior_initial_loss(0.5, *COUNTS, gamma=0.0, alpha=None)["total"]
    assert box.result["CE"]["loss"][0] == pytest.approx(first)
    assert plt.get_fignums() == []
