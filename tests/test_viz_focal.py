"""Tests of the focal loss figures and widgets of retina_edu.viz (notebook 03), on matplotlib's Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from retina_edu.losses import sigmoid_focal_loss  # noqa: E402
from retina_edu.viz import (  # noqa: E402
    FOCAL_GAMMAS,
    LOSS_GROUPS,
    focal_loss_explorer,
    focal_loss_readout,
    focal_loss_vs_pt,
    loss_share_explorer,
    loss_shares,
    plot_focal_loss_curves,
    plot_focal_loss_panels,
    plot_loss_shares,
)


@pytest.fixture
def scored_anchors() -> tuple[torch.Tensor, torch.Tensor]:
    """Many easy negatives, a few hard ones, a handful of positives: the shape of a detector's batch."""
    g = torch.Generator().manual_seed(0)
    n = 20_000
    targets = (torch.rand(n, generator=g) < 0.005).float()
    hard = torch.rand(n, generator=g) < 0.03
    noise = torch.randn(n, generator=g)
    logits = torch.where(hard, -1.0 + 1.5 * noise, -5.0 + noise)
    logits = torch.where(targets > 0, 1.0 + 2.0 * noise, logits)
    return logits, targets


def _closed_form(p: np.ndarray, gamma: float, alpha: float | None) -> tuple[np.ndarray, np.ndarray]:
    a = 1.0 if alpha is None else alpha
    loss = -a * (1 - p) ** gamma * np.log(p)
    # d/dx of -α (1 - p)^γ log p with p = sigmoid(x), dp/dx = p (1 - p)
    grad = a * (1 - p) ** gamma * (gamma * p * np.log(p) - (1 - p))
    return loss, grad


@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, None), (0.5, 0.25), (2.0, None), (5.0, 0.75)])
def test_focal_loss_vs_pt_matches_the_closed_form(gamma: float, alpha: float | None) -> None:
    p = np.linspace(0.01, 0.99, 50)
    curves = focal_loss_vs_pt(p, gamma, alpha)
    loss, grad = _closed_form(p, gamma, alpha)
    np.testing.assert_allclose(curves["loss"], loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curves["grad"], grad, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(curves["ce"], -np.log(p))
    np.testing.assert_allclose(curves["factor"], (1 - p) ** gamma)
    np.testing.assert_allclose(curves["ce_grad"], p - 1)


def test_focal_loss_vs_pt_rejects_probabilities_at_the_ends() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        focal_loss_vs_pt([0.0, 0.5], 2.0)


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
    np.testing.assert_allclose(fl.get_ydata(), -(1 - p) ** 2 * np.log(p), rtol=1e-9)
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


def test_explorer_has_gamma_and_alpha_sliders_checkbox_readout_and_image() -> None:
    box = focal_loss_explorer()
    assert isinstance(box, widgets.VBox)
    sliders = _find(box, widgets.FloatSlider)
    gamma = [s for s in sliders if "focal-gamma" in s._dom_classes]
    assert gamma == [box.gamma_slider]
    assert box.gamma_slider.description == "γ"
    assert (box.gamma_slider.min, box.gamma_slider.max, box.gamma_slider.step) == (0.0, 5.0, 0.1)
    assert box.gamma_slider.continuous_update is False
    assert box.gamma_slider.value == 2.0
    assert box.alpha_slider in sliders and (box.alpha_slider.min, box.alpha_slider.max) == (0.0, 1.0)
    assert _find(box, widgets.Checkbox) == [box.no_alpha] and box.no_alpha.description == "no α"
    assert _find(box, widgets.HTML) == [box.readout] and "focal-readout" in box.readout._dom_classes
    assert _find(box, widgets.Image) == [box.image] and box.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(box.figure.axes) == 3


def test_moving_gamma_redraws_the_curves_the_readout_and_the_image() -> None:
    box = focal_loss_explorer(gamma=2.0)
    panels = box.panels
    before = {
        "loss": panels.loss_line.get_ydata().copy(),
        "factor": panels.factor_line.get_ydata().copy(),
        "grad": panels.grad_line.get_ydata().copy(),
        "readout": box.readout.value,
        "image": box.image.value,
    }
    assert "100×" in before["readout"]

    box.gamma_slider.value = 0.0
    p = panels.loss_line.get_xdata()
    np.testing.assert_allclose(panels.loss_line.get_ydata(), -np.log(p), rtol=1e-9)  # γ = 0: CE
    np.testing.assert_allclose(panels.factor_line.get_ydata(), 1.0)
    np.testing.assert_allclose(panels.grad_line.get_ydata(), p - 1, atol=1e-12)
    assert "cross entropy" in box.readout.value and box.readout.value != before["readout"]
    assert box.image.value != before["image"]

    box.gamma_slider.value = 5.0
    assert "100,000×" in box.readout.value
    assert (panels.loss_line.get_ydata() <= before["loss"] + 1e-12).all()
    assert not np.allclose(panels.factor_line.get_ydata(), before["factor"])
    assert not np.allclose(panels.grad_line.get_ydata(), before["grad"])


def test_no_alpha_checkbox_switches_alpha_on_and_off() -> None:
    box = focal_loss_explorer(gamma=2.0, alpha=0.25)
    assert box.no_alpha.value is True and box.alpha_slider.disabled
    without = box.panels.loss_line.get_ydata().copy()
    box.no_alpha.value = False
    assert not box.alpha_slider.disabled
    np.testing.assert_allclose(box.panels.loss_line.get_ydata(), 0.25 * without, rtol=1e-9)
    assert "α = 0.25" in box.readout.value
    box.alpha_slider.value = 0.5
    np.testing.assert_allclose(box.panels.loss_line.get_ydata(), 0.5 * without, rtol=1e-9)
    box.no_alpha.value = True
    np.testing.assert_allclose(box.panels.loss_line.get_ydata(), without, rtol=1e-9)
    assert "No α" in box.readout.value


def test_loss_shares_sum_to_one_and_match_a_direct_sum(scored_anchors) -> None:
    logits, targets = scored_anchors
    shares = loss_shares(logits, targets, gamma=2.0, alpha=0.25)
    assert sum(shares[name] for name in LOSS_GROUPS) == pytest.approx(1.0)
    loss = sigmoid_focal_loss(logits.double(), targets.double(), alpha=0.25, gamma=2.0)
    positive = targets > 0
    easy = ~positive & (torch.sigmoid(-logits) > 0.5)
    assert shares["total"] == pytest.approx(float(loss.sum()), rel=1e-5)
    assert shares["positives"] == pytest.approx(float(loss[positive].sum() / loss.sum()), rel=1e-5)
    assert shares["easy negatives"] == pytest.approx(float(loss[easy].sum() / loss.sum()), rel=1e-5)
    assert shares["count: positives"] == int(positive.sum())
    assert shares["count: easy negatives"] == int(easy.sum())


def test_easy_negatives_share_falls_as_gamma_grows(scored_anchors) -> None:
    logits, targets = scored_anchors
    easy = [loss_shares(logits, targets, g)["easy negatives"] for g in FOCAL_GAMMAS]
    assert all(a > b for a, b in zip(easy, easy[1:]))
    assert easy[0] > 0.5 and easy[FOCAL_GAMMAS.index(2.0)] < 0.2


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
    assert isinstance(box, widgets.VBox)
    assert _find(box, widgets.FloatSlider) == [box.gamma_slider]
    assert box.gamma_slider.description == "γ" and "loss-share-gamma" in box.gamma_slider._dom_classes
    assert "loss-share-readout" in box.readout._dom_classes
    ax = box.figure.axes[0]

    def easy_fl_height() -> float:
        return ax.patches[1].get_height()  # group 0 (easy negatives), second bar (FL)

    at_2, readout_2, image_2 = easy_fl_height(), box.readout.value, box.image.value
    assert ax.patches[0].get_height() == pytest.approx(100 * loss_shares(logits, targets, 0.0)["easy negatives"])
    assert at_2 == pytest.approx(100 * loss_shares(logits, targets, 2.0)["easy negatives"])
    box.gamma_slider.value = 0.0
    assert easy_fl_height() == pytest.approx(ax.patches[0].get_height())  # γ = 0: FL is CE
    assert easy_fl_height() > at_2
    assert box.readout.value != readout_2 and "γ = 0.0" in box.readout.value
    assert box.image.value != image_2
