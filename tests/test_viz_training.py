"""Tests of retina_edu.viz.training (notebooks 06, 08, 10): the live loss plot and loss curves of several runs."""

from __future__ import annotations

import numpy as np

from retina_edu.viz import LiveLossPlot, plot_loss_curves


# ---------------------------------------------------------------------------------------------
# plot_loss_curves
# ---------------------------------------------------------------------------------------------
def test_plot_loss_curves_stops_a_diverged_run_at_its_first_nan_and_marks_it() -> None:
    ax = plot_loss_curves(
        {"prior": [3.0, 2.0, 1.5, 1.2], "bias 0": [100.0, 50.0, 1e6, float("nan"), float("nan")]},
        colors={"prior": "tab:blue"},
    )
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
# LiveLossPlot
# ---------------------------------------------------------------------------------------------
def _history(steps: int, evals: int) -> dict[str, list]:
    train = [
        {"step": s, "loss": 2.0 / (s + 1), "classification": 1.5 / (s + 1), "bbox_regression": 0.5 / (s + 1)}
        for s in range(steps)
    ]
    return {"train": train, "eval": [{"step": 10 * (e + 1), "AP": 0.1 * e, "AP50": 0.2 * e} for e in range(evals)]}


def test_live_loss_plot_draws_raw_and_smoothed_curves_of_the_three_losses() -> None:
    history = _history(steps=30, evals=0)
    fig = LiveLossPlot(smooth=5).figure(history)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 6  # raw and smoothed, for loss, classification and bbox_regression
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "classification", "bbox_regression"]
    raw, smoothed = lines[0].get_ydata(), lines[1].get_ydata()
    np.testing.assert_allclose(raw, [r["loss"] for r in history["train"]])
    np.testing.assert_allclose(smoothed, np.convolve(raw, np.ones(5) / 5, mode="valid"))  # a 5-step moving average
    assert list(lines[1].get_xdata()) == list(range(4, 30))


def test_live_loss_plot_adds_an_ap_panel_when_there_are_evaluations() -> None:
    fig = LiveLossPlot().figure(_history(steps=20, evals=2))
    assert len(fig.axes) == 2
    ap = fig.axes[1].get_lines()[0]
    assert list(ap.get_xdata()) == [10, 20] and list(ap.get_ydata()) == [0.0, 0.1]


def test_live_loss_plot_draws_nothing_outside_a_jupyter_kernel() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    LiveLossPlot(every=1)("step", _history(steps=3, evals=0))
    assert plt.get_fignums() == before
