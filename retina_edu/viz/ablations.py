"""Ablation figures (notebook 10): bars over seeds, the paper's Figure 4, and Figure 4 with a γ slider.

The Figure-4 numbers come from :func:`retina_edu.analysis.anchor_losses`,
:func:`retina_edu.analysis.loss_cdf` and :func:`retina_edu.analysis.hardest_share`; this module
only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analysis import anchor_losses, hardest_share, loss_cdf
from ._common import PALETTE, ArrayLike, _axes, finish_axes, to_numpy

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from torch import Tensor

    from ._explorer import Explorer

HARDEST_FRACTION = 0.1  # the explorer's readout: the share of the loss carried by the hardest 10 %


def plot_ablation_bars(
    values: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str = "AP",
    reference: Mapping[str, float] | None = None,
    colors: Mapping[str, Any] | None = None,
) -> Axes:
    """One bar per setting at the mean over seeds, each seed a dot, the spread (min to max) a line.

    Args:
        values: ``{setting: [metric of seed 0, seed 1, ...]}`` in the order to draw; a NaN (a run
            that diverged) is left out of the mean and written under the bar.
        ax: axes to draw on; ``None`` makes a new figure.
        title, ylabel: labels.
        reference: optional ``{setting: value}`` drawn as a black tick on each bar (e.g. the
            paper's AP, on its own scale: say so in the label).
        colors: optional colour per setting.

    Returns:
        The axes.
    """
    ax = _axes(ax)
    for i, (label, vals) in enumerate(values.items()):
        v = np.asarray([float(x) for x in vals], dtype=np.float64)
        ok = v[np.isfinite(v)]
        color = (colors or {}).get(label, PALETTE[i % len(PALETTE)])
        if len(ok):
            ax.bar(i, ok.mean(), color=color, alpha=0.55, width=0.7)
            ax.plot([i, i], [ok.min(), ok.max()], color="black", lw=1)
            ax.plot(
                np.full(len(ok), i) + np.linspace(-0.12, 0.12, len(ok)),
                ok,
                "o",
                color=color,
                mec="black",
                mew=0.5,
                ms=4,
            )
        if len(ok) < len(v):
            ax.text(i, 0, f"{len(v) - len(ok)} diverged", ha="center", va="bottom", fontsize=6, rotation=90)
        if reference and label in reference:
            ax.plot([i - 0.35, i + 0.35], [reference[label]] * 2, color="black", lw=2)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    return finish_axes(ax, title)


def _cdf_axes(ax: Axes, title: str | None) -> None:
    """The frame of a Figure-4 panel: the diagonal (every sample carrying the same loss), labels, legend."""
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("fraction of samples (sorted by loss)")
    ax.set_ylabel("cumulative normalised loss")
    ax.legend(fontsize=7, loc="upper left")
    finish_axes(ax, title)


def _from_origin(fraction: ArrayLike, cumulative: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """A :func:`retina_edu.analysis.loss_cdf` curve with the point (0, 0) in front, for drawing."""
    x = np.concatenate([[0.0], to_numpy(fraction).astype(np.float64)])
    y = np.concatenate([[0.0], to_numpy(cumulative).astype(np.float64)])
    return x, y


def plot_loss_cdfs(
    curves: Mapping[Any, tuple[ArrayLike, ArrayLike]],
    ax: Axes | None = None,
    title: str | None = None,
    label_format: str = "γ = {}",
) -> Axes:
    """The paper's Figure 4: cumulative normalised loss against the fraction of samples.

    Args:
        curves: ``{γ: (fraction, cumulative)}`` as :func:`retina_edu.analysis.loss_cdf` returns
            them, in the order to draw.
        ax: axes to draw on; ``None`` makes a new figure.
        title: e.g. "negative anchors".
        label_format: legend text for a key.

    Returns:
        The axes; the diagonal (every sample carrying the same loss) is drawn dotted.
    """
    from matplotlib import colormaps

    ax = _axes(ax)
    colors = colormaps["viridis"](np.linspace(0.0, 0.85, max(1, len(curves))))
    for color, (key, (fraction, cumulative)) in zip(colors, curves.items()):
        ax.plot(*_from_origin(fraction, cumulative), color=color, lw=1.5, label=label_format.format(key))
    _cdf_axes(ax, title)
    return ax


def loss_cdf_readout(shares: Mapping[str, float], reference: Mapping[str, float], gamma: float) -> str:
    """One sentence: the hardest 10 % of each group's share of its loss at γ, and at γ = 0."""
    return (
        f"γ = {gamma:.1f}: the hardest 10% of the negatives carry <b>{shares['negative']:.0%}</b> "
        f"of the negatives' loss (γ = 0: {reference['negative']:.0%}); the hardest 10% "
        f"of the positives carry <b>{shares['positive']:.0%}</b> (γ = 0: {reference['positive']:.0%})"
    )


def loss_cdf_explorer(
    positive: Tensor, negative: Tensor, gamma: float = 2.0, figsize: tuple[float, float] = (9, 3.4)
) -> Explorer:
    """A γ slider over the paper's Figure 4 for one trained model's anchors.

    Args:
        positive: ``[P]`` logits of the positive anchors' true classes.
        negative: ``[N, K]`` (or ``[N]``) logits of negative anchors.
        gamma: the slider's start.
        figsize: of the two panels (positives, negatives).

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with one control, ``"gamma"``, a readout
        (:func:`loss_cdf_readout`) and the figure; ``.result`` holds the hardest 10 % of each
        group's share of its loss at the slider's γ (:func:`retina_edu.analysis.hardest_share`),
        as ``{"positive": float, "negative": float}``. The γ = 0 (cross entropy) curve stays in
        grey for reference.
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider

    negative = torch.as_tensor(negative)
    logits = {
        "positive": torch.as_tensor(positive).reshape(-1),
        "negative": negative[:, None] if negative.dim() == 1 else negative,
    }  # [N] is one class: [N, 1]
    groups = ("positive", "negative")
    ce = anchor_losses(logits, gammas=(0.0,))[0.0]
    ce_curves = {name: _from_origin(*loss_cdf(ce[name])) for name in groups}
    ce_shares = {name: hardest_share(ce[name], HARDEST_FRACTION) for name in groups}
    figure = Figure(figsize=figsize, dpi=80)
    panels = figure.subplots(1, 2)

    def draw(values: dict[str, Any]) -> dict[str, float]:
        g = float(values["gamma"])
        fl = anchor_losses(logits, gammas=(g,))[g]
        for ax, name in zip(panels, groups):
            ax.clear()
            ax.plot(*ce_curves[name], color="0.6", lw=1.2, label="γ = 0 (CE)")
            ax.plot(*_from_origin(*loss_cdf(fl[name])), color="#d62728", lw=1.8, label=f"γ = {g:.1f}")
            ax.axvline(1 - HARDEST_FRACTION, color="0.8", lw=0.8)
            _cdf_axes(ax, f"{name} anchors ({len(fl[name]):,})")
        figure.tight_layout()
        return {name: hardest_share(fl[name], HARDEST_FRACTION) for name in groups}

    return Explorer(
        {"gamma": float_slider(gamma, 0.0, 5.0, 0.5, "γ", readout_format=".1f")},
        draw,
        figure,
        readout=lambda shares, values: loss_cdf_readout(shares, ce_shares, values["gamma"]),
    )
