"""The focal loss figures and widgets (notebook 03): the paper's Figure 1, three panels with sliders,
and who carries the loss (easy negatives, hard negatives, positives) as γ grows.

The curves come from :func:`retina_edu.analysis.focal_loss_vs_pt`, the shares from
:func:`retina_edu.analysis.loss_shares`; this module only draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import LOSS_GROUPS, focal_loss_both_sides, focal_loss_vs_pt, illustrative_batch, loss_shares
from ..losses import ALPHA
from ._common import ArrayLike, _axes, _axes_row, format_times

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer

FOCAL_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)  # the curves of the paper's Figure 1
_GROUP_COLORS = ("#9ecae1", "#08519c", "#ff7f0e")  # easy negatives, hard negatives, positives
_GAMMA_COLORS = ("#1f77b4", "#9467bd", "#d62728", "#2ca02c", "#ff7f0e")  # γ = 0, .5, 1, 2, 5
_P_T = np.linspace(0.001, 0.999, 400)  # the x axis of every p_t plot
_NEGATIVE_COLOR = "#08519c"  # the negatives' curves (the positives' are green / red)


def _curves(p_t: Any, gamma: float, alpha: float | None = None) -> dict[str, np.ndarray]:
    """:func:`focal_loss_vs_pt` as numpy arrays, for matplotlib."""
    return {name: values.numpy() for name, values in focal_loss_vs_pt(p_t, gamma, alpha).items()}


def _shade_well_classified(ax: Axes, label_y: float | None = 0.97) -> None:
    ax.axvspan(0.5, 1.0, color="0.92", zorder=0)
    if label_y is not None:
        ax.text(
            0.75,
            label_y,
            "well-classified\nexamples",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=7,
            color="0.35",
        )


def plot_focal_loss_curves(ax: Axes | None = None, gammas: Sequence[float] = FOCAL_GAMMAS, shade: bool = True) -> Axes:
    """The paper's Figure 1: focal loss against p_t for several γ (no α), CE being γ = 0.

    Args:
        ax: axes to draw on; ``None`` makes a new figure.
        gammas: the γ values, one curve each.
        shade: shade p_t > 0.5, the "well-classified examples".

    Returns:
        The axes; its lines are the curves, in the order of ``gammas``.
    """
    new_figure = ax is None
    ax = _axes(ax, (5, 3.5))
    for i, gamma in enumerate(gammas):
        name = f"γ = {gamma:g}" + (" (CE)" if gamma == 0 else "")
        ax.plot(_P_T, _curves(_P_T, gamma)["loss"], color=_GAMMA_COLORS[i % len(_GAMMA_COLORS)], lw=1.8, label=name)
    if shade:
        _shade_well_classified(ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("probability of ground truth class, $p_t$")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.08, 1.0))
    if new_figure:
        ax.figure.tight_layout()
    return ax


def focal_loss_readout(
    gamma: float,
    alpha: float | None = None,
    p_t: float = 0.9,
    shares: Mapping[str, float] | None = None,
    ce_shares: Mapping[str, float] | None = None,
    batch: str = "the batch",
) -> str:
    """The numbers behind the focal loss explorer, as a short HTML text.

    E.g. ``focal_loss_readout(2.0)`` says that at p_t = 0.9 the loss is 100× smaller than CE
    (the modulating factor (1 - 0.9)² = 0.01), and gives the same ratio at p_t = 0.5. With α, it
    says how a negative's loss compares with a positive's; with ``shares`` (and ``ce_shares``,
    from :func:`retina_edu.analysis.loss_shares`) the share of the total loss of ``batch`` that
    its easy negatives carry, under this focal loss (and under CE with the same α).
    """
    factor = (1 - p_t) ** gamma
    half = 0.5**gamma
    if gamma == 0:
        first = f"<b>γ = {gamma:.1f}</b>: the focal loss is cross entropy (modulating factor 1 everywhere)."
    else:
        first = (
            f"<b>γ = {gamma:.1f}</b>: at p<sub>t</sub> = {p_t:g} the loss is <b>{format_times(1 / factor)}</b> "
            f"smaller than CE (modulating factor (1 − p<sub>t</sub>)<sup>γ</sup> = {factor:.3g}); "
            f"at p<sub>t</sub> = 0.5 it is {format_times(1 / half)} smaller."
        )
    if alpha is None or alpha < 0:
        second = "No α: positives and negatives weigh the same (the two curves coincide)."
    else:
        second = f"<b>α = {alpha:.2f}</b> scales a positive's loss by {alpha:.2f} and a negative's by {1 - alpha:.2f}"
        if 0 < alpha < 1:
            second += (
                f": a positive at p<sub>t</sub> = {p_t:g} weighs {format_times(1 / (alpha * factor))} "
                f"less than under plain CE, a negative at the same p<sub>t</sub> "
                f"{format_times((1 - alpha) / alpha)} more than that positive."
            )
        else:
            second += "."
    third = ""
    if shares is not None:
        third = (
            f"<br>In {batch}, the <b>easy negatives</b> (p<sub>t</sub> &gt; 0.5) carry "
            f"<b>{100 * shares['easy negatives']:.0f}%</b> of the total loss"
        )
        if ce_shares is not None:
            third += f" (under CE with the same α: {100 * ce_shares['easy negatives']:.0f}%)"
        third += f"; hard negatives {100 * shares['hard negatives']:.0f}%, positives {100 * shares['positives']:.0f}%."
    return f"<div>{first}<br>{second}{third}</div>"


class _FocalPanels:
    """Three panels (loss with CE, modulating factor, gradient w.r.t. the logit), redrawn in place."""

    def __init__(self, panel_axes: Sequence[Axes], p_mark: float = 0.9):
        self.axes = list(panel_axes)
        self.p_mark = p_mark
        self.p_t = _P_T
        ref = _curves(self.p_t, 0.0)
        ax_loss, ax_factor, ax_grad = self.axes
        for ax in self.axes:
            _shade_well_classified(ax, label_y=0.5 if ax is ax_loss else None)
            ax.axvline(p_mark, color="0.5", ls=":", lw=1)
            ax.set_xlim(0, 1)
            ax.set_xlabel("$p_t$")
        ax_loss.plot(self.p_t, ref["ce"], color="0.45", ls="--", lw=1.2, label="CE")
        (self.loss_line,) = ax_loss.plot(self.p_t, ref["loss"], color="#2ca02c", lw=2, label="FL")
        (self.loss_dot,) = ax_loss.plot([p_mark], [0.0], "o", color="#2ca02c", ms=4)
        (self.neg_loss_line,) = ax_loss.plot(
            self.p_t, ref["loss"], color=_NEGATIVE_COLOR, lw=1.6, ls=(0, (4, 2)), label="FL, negative"
        )
        ax_loss.set_ylim(0, 5)
        ax_loss.set_title("loss of a positive and of a negative", fontsize=9)
        ax_loss.legend(fontsize=7, loc="upper right")
        ax_factor.axhline(1.0, color="0.45", ls="--", lw=1.2, label="CE (factor 1)")
        (self.factor_line,) = ax_factor.plot(self.p_t, ref["factor"], color="#9467bd", lw=2, label="FL")
        (self.factor_dot,) = ax_factor.plot([p_mark], [0.0], "o", color="#9467bd", ms=4)
        self.factor_text = ax_factor.text(
            0.97,
            0.6,
            "",
            transform=ax_factor.transAxes,
            ha="right",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
        ax_factor.set_ylim(0, 1.05)
        ax_factor.set_title("modulating factor $(1-p_t)^\\gamma$", fontsize=9)
        ax_factor.legend(fontsize=7, loc="lower left")
        ax_grad.plot(self.p_t, ref["ce_grad"], color="0.45", ls="--", lw=1.2, label="CE")
        (self.grad_line,) = ax_grad.plot(self.p_t, ref["grad"], color="#d62728", lw=2, label="FL")
        ax_grad.axhline(0.0, color="0.6", lw=0.8)
        # a negative's gradient has the opposite sign (it lowers the logit): drawn as -grad, on the same scale
        (self.neg_grad_line,) = ax_grad.plot(
            self.p_t, ref["grad"], color=_NEGATIVE_COLOR, lw=1.6, ls=(0, (4, 2)), label="FL, negative (−grad)"
        )
        ax_grad.set_ylim(-1.35, 0.05)  # FL's gradient dips below CE's for hard examples: -1.31 at γ = 5
        ax_grad.set_title("gradient d loss / d logit", fontsize=9)
        ax_grad.legend(fontsize=7, loc="lower right")

    def update(self, gamma: float, alpha: float | None) -> dict[str, float]:
        """Redraw the curves for (γ, α); returns the loss, factor and gradient at ``p_mark``."""
        curves = _curves(self.p_t, gamma, alpha)
        mark = {name: float(values[0]) for name, values in _curves([self.p_mark], gamma, alpha).items()}
        self.loss_line.set_ydata(curves["loss"])
        self.loss_dot.set_ydata([mark["loss"]])
        self.factor_line.set_ydata(curves["factor"])
        self.factor_dot.set_ydata([mark["factor"]])
        self.factor_text.set_text(f"at $p_t$ = {self.p_mark:g}: {mark['factor']:.3g}")
        self.grad_line.set_ydata(curves["grad"])
        sides = focal_loss_both_sides(self.p_t, gamma, alpha)
        self.neg_loss_line.set_ydata(sides["negative"].numpy())
        self.neg_grad_line.set_ydata(-sides["negative_grad"].numpy())
        self.grad_line.set_label("FL, positive")
        weights = ("", "") if alpha is None else (f", ×{alpha:.2f}", f", ×{1 - alpha:.2f}")
        self.loss_line.set_label(f"FL, positive{weights[0]}")
        self.neg_loss_line.set_label(f"FL, negative{weights[1]}")
        self.axes[0].legend(fontsize=7, loc="upper right")
        self.axes[2].legend(fontsize=7, loc="lower right")
        return mark


def plot_focal_loss_panels(
    gamma: float = 2.0, alpha: float | None = None, axes: Sequence[Axes] | None = None, p_mark: float = 0.9
) -> Figure:
    """Three panels for one setting: the loss (CE for reference), (1 - p_t)^γ, and d loss / d logit.

    As functions of p_t, for a positive (solid, weight α) and a negative (dashed, weight 1 - α;
    its gradient drawn with the sign flipped), from :func:`retina_edu.analysis.focal_loss_vs_pt`
    and :func:`retina_edu.analysis.focal_loss_both_sides`; the static twin of :func:`focal_loss_explorer`.

    Args:
        gamma: focusing parameter.
        alpha: the positives' weight, or ``None``.
        axes: three axes to draw on; ``None`` makes a new 1 x 3 figure.
        p_mark: the p_t marked with a dotted line and a dot (0.9, the paper's example).

    Returns:
        The figure.
    """
    fig, axes = _axes_row(axes, 3, (10, 3))
    _FocalPanels(axes, p_mark).update(gamma, alpha)
    fig.tight_layout()
    return fig


def _gamma_slider(value: float, css_class: str, step: float = 0.1) -> Any:
    from ._explorer import float_slider

    return float_slider(value, 0.0, 5.0, step, "γ", readout_format=".1f", css_class=css_class)


def focal_loss_explorer(
    gamma: float = 2.0,
    alpha: float | None = None,
    p_mark: float = 0.9,
    logits: ArrayLike | None = None,
    targets: ArrayLike | None = None,
    batch: str | None = None,
) -> Explorer:
    """Sliders for γ and α that redraw the loss, the modulating factor and the gradient.

    An :class:`~retina_edu.viz._explorer.Explorer` (CSS class ``focal-loss-explorer``) whose
    controls are ``"gamma"`` (description "γ", CSS class ``focal-gamma``), ``"alpha"`` (CSS class
    ``focal-alpha``) and ``"no_alpha"`` (the "no α" checkbox, which disables the α slider); its
    readout (CSS class ``focal-readout``) is :func:`focal_loss_readout`, its picture the three panels
    of :func:`plot_focal_loss_panels` (a positive and a negative), and ``.result`` the loss, factor
    and gradient of a positive at ``p_mark``, plus ``"shares"`` and ``"ce_shares"``
    (:func:`retina_edu.analysis.loss_shares` of the batch under this focal loss and under CE).

    Args:
        gamma: initial γ, in [0, 5].
        alpha: initial α in [0, 1], or ``None`` to start with the "no α" box ticked (as in the
            paper's Figure 1; the α slider then starts at 0.25).
        p_mark: the p_t the readout and the dots talk about.
        logits, targets: the batch whose loss shares the readout gives (as in
            :func:`retina_edu.analysis.loss_shares`); by default notebook 03's made-up batch,
            :func:`retina_edu.analysis.illustrative_batch`.
        batch: how the readout names the batch.

    Returns:
        The explorer (an ``ipywidgets.VBox``).
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer

    controls = _focal_controls(gamma, alpha)
    logits, targets, batch = _explorer_batch(logits, targets, batch)
    shares = _shares_with_ce(logits, targets)
    figure = Figure(figsize=(10, 3), dpi=80)
    panels = _FocalPanels(figure.subplots(1, 3), p_mark)

    def adjust(changed: str, values: dict[str, Any]) -> None:
        controls["alpha"].disabled = bool(values["no_alpha"])

    def draw(values: dict[str, Any]) -> dict[str, Any]:
        gamma_, alpha_ = float(values["gamma"]), _current_alpha(values)
        result: dict[str, Any] = panels.update(gamma_, alpha_)
        result["shares"], result["ce_shares"] = shares(gamma_, alpha_)
        figure.tight_layout()
        return result

    return Explorer(
        controls,
        draw,
        figure,
        readout=lambda result, values: _focal_readout(result, values, p_mark, batch),
        adjust=adjust,
        css_class="focal-loss-explorer",
        readout_class="focal-readout",
    )


def _current_alpha(values: dict[str, Any]) -> float | None:
    """The focal-loss explorer's α: None while its "no α" box is ticked."""
    return None if values["no_alpha"] else float(values["alpha"])


def _focal_readout(result: dict[str, Any], values: dict[str, Any], p_mark: float, batch: str) -> str:
    return focal_loss_readout(
        float(values["gamma"]), _current_alpha(values), p_mark, result["shares"], result["ce_shares"], batch
    )


def _focal_controls(gamma: float, alpha: float | None) -> dict[str, Any]:
    """The focal-loss explorer's controls: γ, α, and a "no α" box that disables the α slider."""
    import ipywidgets as widgets

    from ._explorer import float_slider

    return {
        "gamma": _gamma_slider(gamma, "focal-gamma"),
        "alpha": float_slider(
            ALPHA if alpha is None else alpha, 0.0, 1.0, 0.05, "α", css_class="focal-alpha", disabled=alpha is None
        ),
        "no_alpha": widgets.Checkbox(
            value=alpha is None, description="no α", indent=False, layout=widgets.Layout(width="80px")
        ),
    }


def _explorer_batch(
    logits: ArrayLike | None, targets: ArrayLike | None, batch: str | None
) -> tuple[ArrayLike, ArrayLike, str]:
    """``(logits, targets, name)`` of the batch whose loss shares an explorer reads out: the one given, or
    notebook 03's made-up batch."""
    if (logits is None) != (targets is None):
        raise ValueError("focal_loss_explorer: give both logits and targets, or neither")
    if logits is None:
        logits, targets = illustrative_batch(num_positive=100)  # 50k decisions: a redraw stays under a second
        batch = batch or "a made-up batch (1 positive per 500 negatives, as in section 5)"
    return logits, targets, batch or "the batch"


def _shares_with_ce(logits: ArrayLike, targets: ArrayLike) -> Callable[[float, float | None], tuple[dict, dict]]:
    """``shares(γ, α) -> (loss_shares at (γ, α), loss_shares of CE at α)`` for one batch; CE's are
    computed once per α (they do not depend on γ)."""
    ce_cache: dict[float | None, dict[str, float]] = {}

    def shares(gamma: float, alpha: float | None) -> tuple[dict, dict]:
        focal = loss_shares(logits, targets, gamma, alpha)
        if alpha not in ce_cache:
            ce_cache[alpha] = loss_shares(logits, targets, 0.0, alpha)
        return focal, ce_cache[alpha]

    return shares


def _draw_share_bars(ax: Axes, columns: Sequence[tuple[str, Mapping[str, float]]]) -> None:
    ax.clear()
    positions = np.arange(len(columns))
    bottom = np.zeros(len(columns))
    for name, color in zip(LOSS_GROUPS, _GROUP_COLORS):
        heights = np.array([100 * shares[name] for _, shares in columns])
        ax.bar(positions, heights, bottom=bottom, color=color, width=0.6, label=name)
        top_group = name == LOSS_GROUPS[-1]
        for x, h, b in zip(positions, heights, bottom):
            if top_group and h < 7:  # too thin to hold its label: write it above the bar
                ax.text(x, b + h + 1.5, f"{h:.0f}%", ha="center", va="bottom", fontsize=8, color="black")
            elif h >= 4:
                ax.text(
                    x,
                    b + h / 2,
                    f"{h:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if color == _GROUP_COLORS[1] else "black",
                )
        bottom += heights
    ax.set_xticks(positions, [label for label, _ in columns], fontsize=8)
    ax.set_ylim(0, 109)  # head room for the labels of thin top segments
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylabel("share of the total loss (%)")
    handles, labels = ax.get_legend_handles_labels()  # top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def plot_loss_shares(
    logits: ArrayLike,
    targets: ArrayLike,
    gammas: Sequence[float] = FOCAL_GAMMAS,
    alpha: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Stacked bars: the share of the loss carried by easy negatives, hard negatives and positives, per γ.

    Args:
        logits, targets: as in :func:`retina_edu.analysis.loss_shares`.
        gammas: one bar each (γ = 0 is cross entropy).
        alpha: the positives' weight, or ``None``.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes (bars in ``ax.patches``: group by group, γ by γ).
    """
    ax = _axes(ax, (6, 3))
    columns = [(f"γ = {g:g}" + ("\n(CE)" if g == 0 else ""), loss_shares(logits, targets, g, alpha)) for g in gammas]
    _draw_share_bars(ax, columns)
    ax.figure.tight_layout()
    return ax


def loss_share_readout(ce: Mapping[str, float], fl: Mapping[str, float], gamma: float) -> str:
    """One sentence: the easy negatives' share under CE and under FL, and how much the total shrank."""
    return (
        f"<b>γ = {gamma:.1f}</b>: easy negatives carry <b>{100 * ce['easy negatives']:.0f}%</b> of the CE loss "
        f"but <b>{100 * fl['easy negatives']:.0f}%</b> of the FL loss; hard negatives "
        f"{100 * ce['hard negatives']:.0f}% → {100 * fl['hard negatives']:.0f}%, positives "
        f"{100 * ce['positives']:.0f}% → {100 * fl['positives']:.0f}%. "
        f"The total loss is {format_times(ce['total'] / fl['total'])} smaller."
    )


def loss_share_explorer(
    logits: ArrayLike, targets: ArrayLike, gamma: float = 2.0, alpha: float | None = None
) -> Explorer:
    """A γ slider over two stacked bars: who carries the loss under CE, and under focal loss at γ.

    An :class:`~retina_edu.viz._explorer.Explorer` (CSS class ``loss-share-explorer``) with one
    control, ``"gamma"`` (description "γ", CSS class ``loss-share-gamma``); its readout (CSS class
    ``loss-share-readout``) is :func:`loss_share_readout`, and ``.result`` is
    ``{"ce": shares, "fl": shares}`` (:func:`retina_edu.analysis.loss_shares`).

    Args:
        logits, targets: as in :func:`retina_edu.analysis.loss_shares`.
        gamma: initial γ, in [0, 5].
        alpha: the positives' weight (the same for CE and FL), or ``None``.

    Returns:
        The explorer (an ``ipywidgets.VBox``).
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer

    ce = loss_shares(logits, targets, 0.0, alpha)
    figure = Figure(figsize=(5.5, 3), dpi=80)
    ax = figure.subplots()

    def draw(values: dict[str, Any]) -> dict[str, Mapping[str, float]]:
        g = float(values["gamma"])
        fl = loss_shares(logits, targets, g, alpha)
        _draw_share_bars(ax, [("CE (γ = 0)", ce), (f"FL (γ = {g:.1f})", fl)])
        figure.tight_layout()
        return {"ce": ce, "fl": fl}

    return Explorer(
        {"gamma": _gamma_slider(gamma, "loss-share-gamma")},
        draw,
        figure,
        readout=lambda shares, values: loss_share_readout(shares["ce"], shares["fl"], values["gamma"]),
        css_class="loss-share-explorer",
        readout_class="loss-share-readout",
    )
