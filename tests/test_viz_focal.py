"""Tests of retina_edu.viz.focal (notebook 03): Figure 1, the three panels, the loss shares and their explorers."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pytest

from retina_edu.viz import (
    FOCAL_GAMMAS,
    LOSS_GROUPS,
    focal_loss_explorer,
    focal_loss_readout,
    loss_share_explorer,
    loss_shares,
    plot_focal_loss_curves,
    plot_focal_loss_panels,
    plot_loss_shares,
)


def _closed_form(p: np.ndarray, gamma: float, alpha: float | None) -> tuple[np.ndarray, np.ndarray]:
    a = 1.0 if alpha is None else alpha
    loss = -a * (1 - p) ** gamma * np.log(p)
    # d/dx of -α (1 - p)^γ log p with p = sigmoid(x), dp/dx = p (1 - p)
    grad = a * (1 - p) ** gamma * (gamma * p * np.log(p) - (1 - p))
    return loss, grad


def test_figure_1_has_one_curve_per_gamma_and_the_shaded_region() -> None:
    ax = plot_focal_loss_curves()
    assert len(ax.lines) == len(FOCAL_GAMMAS)
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "γ = 0 (CE)"
    p = ax.lines[0].get_xdata()
    i = np.searchsorted(p, 0.9)
    at_09 = [line.get_ydata()[i] for line in ax.lines]
    assert all(a > b for a, b in zip(at_09, at_09[1:])), "larger γ must give a smaller loss at p_t = 0.9"
    (span,) = ax.patches
    np.testing.assert_allclose(span.get_x(), 0.5)


def test_static_panels_draw_loss_factor_and_gradient() -> None:
    fig = plot_focal_loss_panels(gamma=2.0, alpha=None)
    ax_loss, ax_factor, ax_grad = fig.axes
    ce, fl = ax_loss.lines[1], ax_loss.lines[2]  # lines[0] is the dotted p_t = 0.9 marker
    p = fl.get_xdata()
    np.testing.assert_allclose(fl.get_ydata(), -((1 - p) ** 2) * np.log(p), rtol=1e-9)
    np.testing.assert_allclose(ce.get_ydata(), -np.log(p))
    factor = ax_factor.lines[2]
    np.testing.assert_allclose(factor.get_ydata(), (1 - p) ** 2)
    assert any(t.get_text() == "at $p_t$ = 0.9: 0.01" for t in ax_factor.texts)
    grad = ax_grad.lines[2]
    np.testing.assert_allclose(grad.get_ydata(), _closed_form(p, 2.0, None)[1], rtol=1e-7)


def test_readout_gives_the_papers_numbers() -> None:
    assert "100×" in focal_loss_readout(2.0)
    assert "at p<sub>t</sub> = 0.5 it is 4× smaller" in focal_loss_readout(2.0)
    assert "1,000×" in focal_loss_readout(3.0)
    assert "cross entropy" in focal_loss_readout(0.0)
    assert "400×" in focal_loss_readout(2.0, alpha=0.25)  # 1 / (0.25 * 0.01)
    assert "No α" in focal_loss_readout(2.0, alpha=None)


def _find(widget: widgets.Widget, kind: type) -> list[widgets.Widget]:
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += _find(child, kind)
    return found


def _fl_lines(box: widgets.Widget) -> tuple:
    """The explorer's loss, factor and gradient curves (each panel's lines[0] is the dotted p_t marker)."""
    return tuple(ax.lines[2] for ax in box.figure.axes)


def test_explorer_has_gamma_and_alpha_sliders_checkbox_readout_and_image() -> None:
    box = focal_loss_explorer()
    assert isinstance(box, widgets.VBox) and "focal-loss-explorer" in box._dom_classes
    gamma, alpha, no_alpha = (box.controls[k] for k in ("gamma", "alpha", "no_alpha"))
    sliders = _find(box, widgets.FloatSlider)
    assert [s for s in sliders if "focal-gamma" in s._dom_classes] == [gamma]
    assert gamma.description == "γ"
    assert (gamma.min, gamma.max, gamma.step) == (0.0, 5.0, 0.1)
    assert gamma.value == 2.0
    assert alpha in sliders and (alpha.min, alpha.max) == (0.0, 1.0) and "focal-alpha" in alpha._dom_classes
    assert _find(box, widgets.Checkbox) == [no_alpha] and no_alpha.description == "no α"
    assert _find(box, widgets.HTML) == [box.readout] and "focal-readout" in box.readout._dom_classes
    assert _find(box, widgets.Image) == [box.image] and box.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(box.figure.axes) == 3


def test_moving_gamma_redraws_the_curves_and_the_readout() -> None:
    box = focal_loss_explorer(gamma=2.0)
    loss, factor, grad = _fl_lines(box)
    before = {"loss": loss.get_ydata().copy(), "factor": factor.get_ydata().copy(), "grad": grad.get_ydata().copy()}
    assert "100×" in box.readout.value
    assert box.result["factor"] == pytest.approx(0.01)  # (1 - 0.9)^2 at the marked p_t

    box.controls["gamma"].value = 0.0
    p = loss.get_xdata()
    np.testing.assert_allclose(loss.get_ydata(), -np.log(p), rtol=1e-9)  # γ = 0: CE
    np.testing.assert_allclose(factor.get_ydata(), 1.0)
    np.testing.assert_allclose(grad.get_ydata(), p - 1, atol=1e-12)
    assert "cross entropy" in box.readout.value

    box.controls["gamma"].value = 5.0
    assert "100,000×" in box.readout.value
    assert (loss.get_ydata() <= before["loss"] + 1e-12).all()
    assert not np.allclose(factor.get_ydata(), before["factor"])
    assert not np.allclose(grad.get_ydata(), before["grad"])


def test_alpha_none_ticks_no_alpha_and_the_checkbox_switches_alpha_on_and_off() -> None:
    box = focal_loss_explorer(gamma=2.0)
    alpha, no_alpha = box.controls["alpha"], box.controls["no_alpha"]
    assert no_alpha.value is True and alpha.disabled and alpha.value == 0.25
    (loss, _, _) = _fl_lines(box)
    without = loss.get_ydata().copy()
    no_alpha.value = False
    assert not alpha.disabled
    np.testing.assert_allclose(loss.get_ydata(), 0.25 * without, rtol=1e-9)
    assert "α = 0.25" in box.readout.value
    alpha.value = 0.5
    np.testing.assert_allclose(loss.get_ydata(), 0.5 * without, rtol=1e-9)
    no_alpha.value = True
    assert alpha.disabled
    np.testing.assert_allclose(loss.get_ydata(), without, rtol=1e-9)
    assert "No α" in box.readout.value


def test_explorer_starts_with_the_given_alpha_on() -> None:
    box = focal_loss_explorer(gamma=2.0, alpha=0.75)
    assert box.controls["no_alpha"].value is False and not box.controls["alpha"].disabled
    assert box.controls["alpha"].value == 0.75
    (loss, _, _) = _fl_lines(box)
    p = loss.get_xdata()
    np.testing.assert_allclose(loss.get_ydata(), -0.75 * (1 - p) ** 2 * np.log(p), rtol=1e-9)


def test_plot_loss_shares_stacks_one_bar_per_gamma_and_group(scored_anchors) -> None:
    logits, targets = scored_anchors
    ax = plot_loss_shares(logits, targets, gammas=(0.0, 2.0))
    assert len(ax.patches) == 2 * len(LOSS_GROUPS)
    tops = {}
    for bar in ax.patches:
        tops[bar.get_x()] = max(tops.get(bar.get_x(), 0.0), bar.get_y() + bar.get_height())
    np.testing.assert_allclose(sorted(tops.values()), [100.0, 100.0])


def test_share_explorer_moves_with_its_gamma_slider(scored_anchors) -> None:
    logits, targets = scored_anchors
    box = loss_share_explorer(logits, targets, gamma=2.0)
    assert isinstance(box, widgets.VBox) and "loss-share-explorer" in box._dom_classes
    gamma = box.controls["gamma"]
    assert _find(box, widgets.FloatSlider) == [gamma]
    assert gamma.description == "γ" and "loss-share-gamma" in gamma._dom_classes
    assert "loss-share-readout" in box.readout._dom_classes
    ax = box.figure.axes[0]

    def easy_fl_height() -> float:
        return ax.patches[1].get_height()  # group 0 (easy negatives), second bar (FL)

    at_2 = easy_fl_height()
    assert ax.patches[0].get_height() == pytest.approx(100 * loss_shares(logits, targets, 0.0)["easy negatives"])
    assert at_2 == pytest.approx(100 * loss_shares(logits, targets, 2.0)["easy negatives"])
    assert box.result["fl"] == loss_shares(logits, targets, 2.0)
    gamma.value = 0.0
    assert easy_fl_height() == pytest.approx(ax.patches[0].get_height())  # γ = 0: FL is CE
    assert easy_fl_height() > at_2
    assert "γ = 0.0" in box.readout.value
