"""The RetinaNet loss figures and widget (notebook 04): L1, smooth L1 and GIoU side by side over the
offsets the matcher produces, a β slider, and what the normaliser does to each image's weight.

The curves come from :func:`retina_edu.analysis.box_losses_vs_offset`, the per-anchor losses from
:func:`retina_edu.analysis.box_losses_per_anchor`, the normalised parts from
:func:`retina_edu.analysis.normalise_loss`; this module only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analysis import box_losses_vs_offset, normalise_loss, quadratic_share
from ..losses import SMOOTH_L1_BETA
from ._common import _axes, _axes_row

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer

__all__ = [
    "BOX_LOSS_COLORS",
    "box_loss_explorer",
    "box_loss_readout",
    "plot_box_loss_curves",
    "plot_box_losses_per_anchor",
    "plot_normalisers",
]

BOX_LOSS_COLORS = {"l1": "#1f77b4", "smooth_l1": "#d62728", "giou": "#2ca02c"}
_LABELS = {"l1": "L1", "smooth_l1": "smooth L1", "giou": "GIoU (dx only)"}
_ERRORS = np.linspace(-1.0, 1.0, 401)  # the x axis of the curves: an error in one offset
_NORMALISER_COLORS = {"batch": "#08519c", "image": "#ff7f0e"}


def _offsets(deltas: Any) -> np.ndarray:
    values = torch.as_tensor(deltas, dtype=torch.float64).detach().cpu().flatten().numpy()
    if values.size == 0:
        raise ValueError("the box loss figures need at least one target offset")
    return values


def _deltas(deltas: Any) -> torch.Tensor:
    offsets = torch.as_tensor(deltas, dtype=torch.float64).detach().cpu()
    if offsets.dim() != 2 or offsets.shape[1] != 4 or offsets.shape[0] == 0:
        raise ValueError(f"deltas must be a Tensor[P, 4] of target offsets with P >= 1, got {list(offsets.shape)}")
    return offsets


class _BoxLossPanels:
    """Loss and gradient against the error in one offset, over the histogram of the batch's offsets."""

    def __init__(self, panel_axes: Sequence[Axes], deltas: Any):
        self.axes = list(panel_axes)
        offsets = _offsets(deltas)
        ax_loss, ax_grad = self.axes
        self.zones = []
        for ax in self.axes:
            hist = ax.twinx()
            hist.hist(np.clip(offsets, -1, 1), bins=np.linspace(-1, 1, 61), color="0.85", zorder=0)
            hist.set_yticks([])
            hist.set_zorder(0)
            ax.set_zorder(1)
            ax.patch.set_visible(False)
            self.zones.append(ax.axvspan(-SMOOTH_L1_BETA, SMOOTH_L1_BETA, color="#d62728", alpha=0.08, lw=0))
            ax.axvline(0, color="0.6", lw=0.8)
            ax.set_xlim(-1, 1)
            ax.set_xlabel("error in one offset, x (prediction − target)")
        curves = box_losses_vs_offset(_ERRORS, SMOOTH_L1_BETA)
        self.lines: dict[str, Any] = {}
        for name in ("l1", "giou", "smooth_l1"):
            style = {
                "color": BOX_LOSS_COLORS[name],
                "lw": 2 if name == "smooth_l1" else 1.4,
                "ls": "--" if name == "giou" else "-",
            }
            (self.lines[name],) = ax_loss.plot(_ERRORS, curves[name].numpy(), label=_LABELS[name], **style)
            (self.lines[name + "_grad"],) = ax_grad.plot(_ERRORS, curves[name + "_grad"].numpy(), **style)
        ax_loss.set_ylim(0, 1.05)
        ax_loss.set_title("loss (grey: the batch's target offsets)", fontsize=9)
        ax_loss.legend(fontsize=7, loc="upper center")
        ax_grad.set_ylim(-2.05, 2.05)
        ax_grad.set_title("gradient d loss / d x", fontsize=9)

    def update(self, beta: float) -> None:
        curves = box_losses_vs_offset(_ERRORS, beta)
        self.lines["smooth_l1"].set_ydata(curves["smooth_l1"].numpy())
        self.lines["smooth_l1_grad"].set_ydata(curves["smooth_l1_grad"].numpy())
        self.lines["smooth_l1"].set_label(f"smooth L1, β = {beta:.2f}")
        self.axes[0].legend(fontsize=7, loc="upper center")
        for zone in self.zones:  # the quadratic zone |x| < β
            zone.set_x(-beta)
            zone.set_width(2 * beta)


def plot_box_loss_curves(deltas: Any, beta: float = SMOOTH_L1_BETA, axes: Sequence[Axes] | None = None) -> Figure:
    """L1, smooth L1 and GIoU against the error in one offset, over the batch's target offsets.

    Left, the losses; right, their gradients (autograd, :func:`retina_edu.analysis.box_losses_vs_offset`).
    GIoU is the loss of a unit square shifted sideways by ``x`` widths. The pale red band is smooth
    L1's quadratic zone ``|x| < β``; the grey histogram, all four offsets of every positive anchor
    (clipped to [-1, 1]). The static twin of :func:`box_loss_explorer`.

    Args:
        deltas: ``Tensor[P, 4]`` target offsets (``positive_box_targets(...)["deltas"]``).
        beta: smooth L1's β.
        axes: two axes to draw on; ``None`` makes a new 1 x 2 figure.

    Returns:
        The figure.
    """
    fig, axes = _axes_row(axes, 2, (9, 3))
    _BoxLossPanels(axes, deltas).update(beta)
    fig.tight_layout()
    return fig


def plot_box_losses_per_anchor(losses: Mapping[str, Any], ax: Axes | None = None) -> Axes:
    """Histograms of each positive anchor's box loss under L1, smooth L1 and GIoU.

    Args:
        losses: ``{"l1", "smooth_l1", "giou"}`` of ``Tensor[P]`` (:func:`retina_edu.analysis.box_losses_per_anchor`).
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes (one step histogram per loss, in that order, with its mean in the legend).
    """
    ax = _axes(ax, (5, 3))
    values = {name: torch.as_tensor(losses[name]).double().numpy() for name in ("l1", "smooth_l1", "giou")}
    top = max(float(np.quantile(v, 0.99)) for v in values.values())
    bins = np.linspace(0, max(top, 1e-6), 41)
    for name, v in values.items():
        ax.hist(
            np.clip(v, 0, bins[-1]),
            bins=bins,
            histtype="step",
            lw=1.8,
            color=BOX_LOSS_COLORS[name],
            label=f"{_LABELS[name].split(' (')[0]}: mean {v.mean():.3f}",
        )
    ax.set_xlabel("box loss of one positive anchor")
    ax.set_ylabel("positive anchors")
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax


def plot_normalisers(
    sums: Mapping[str, Any], names: Sequence[str] | None = None, axes: Sequence[Axes] | None = None
) -> Figure:
    """Each image's positives, and its part of the loss under the paper's and torchvision's normaliser.

    Args:
        sums: per-image sums and counts (:func:`retina_edu.analysis.loss_sums_per_image`).
        names: one label per image (default "image 0", "image 1", ...).
        axes: two axes to draw on; ``None`` makes a new 1 x 2 figure.

    Returns:
        The figure (right: bars of :func:`retina_edu.analysis.normalise_loss`'s ``per_image``,
        as a share of the loss, batch then image).
    """
    fig, axes = _axes_row(axes, 2, (8, 2.8))
    positives = torch.as_tensor(sums["positives"]).numpy()
    names = list(names) if names is not None else [f"image {i}" for i in range(len(positives))]
    x = np.arange(len(positives))
    ax_count, ax_share = axes
    ax_count.bar(x, positives, color="0.5", width=0.6)
    for xi, n in zip(x, positives):
        ax_count.text(xi, n, f"{n}", ha="center", va="bottom", fontsize=8)
    ax_count.set_xticks(x, names, fontsize=8)
    ax_count.set_ylabel("positive anchors")
    ax_count.set_ylim(0, positives.max() * 1.2 + 1)
    width = 0.38
    for k, normalize in enumerate(("batch", "image")):
        parts = normalise_loss(dict(sums), normalize)["per_image"].numpy()
        share = 100 * parts / parts.sum()
        label = "per batch (paper)" if normalize == "batch" else "per image (torchvision)"
        bars = ax_share.bar(x + (k - 0.5) * width, share, width=width, color=_NORMALISER_COLORS[normalize], label=label)
        for bar, s in zip(bars, share):
            ax_share.text(bar.get_x() + width / 2, s, f"{s:.0f}%", ha="center", va="bottom", fontsize=7)
    ax_share.set_xticks(x, names, fontsize=8)
    ax_share.set_ylabel("share of the loss (%)")
    ax_share.set_ylim(0, 115)
    ax_share.legend(fontsize=7, loc="upper center", ncols=2, frameon=False)
    fig.tight_layout()
    return fig


def box_loss_readout(deltas: Any, beta: float) -> str:
    """The numbers behind the β explorer: the share of the batch's offsets in the quadratic zone, and
    the mean loss per positive anchor of predicting the anchor unchanged, under L1 and smooth L1."""
    offsets = _deltas(deltas)
    share = quadratic_share(offsets, beta)
    curves = box_losses_vs_offset(offsets, beta)
    l1, smooth = float(curves["l1"].sum(-1).mean()), float(curves["smooth_l1"].sum(-1).mean())
    return (
        f"<div><b>β = {beta:.2f}</b>: <b>{100 * share:.0f}%</b> of the batch's {offsets.numel():,} target offsets "
        f"lie in the quadratic zone |x| &lt; β, where the gradient x/β is smaller than L1's 1. "
        f"Predicting every anchor unchanged costs {l1:.3f} per positive anchor under L1 and "
        f"<b>{smooth:.3f}</b> under smooth L1.</div>"
    )


def box_loss_explorer(deltas: Any, beta: float = SMOOTH_L1_BETA) -> Explorer:
    """A β slider over the box losses and their gradients (:func:`plot_box_loss_curves`).

    An :class:`~retina_edu.viz._explorer.Explorer` (CSS class ``box-loss-explorer``) with one
    control, ``"beta"`` (description "β", CSS class ``box-loss-beta``, 0 to 0.5); its readout (CSS
    class ``box-loss-readout``) is :func:`box_loss_readout`, and ``.result`` is
    ``{"beta", "quadratic_share"}``.

    Args:
        deltas: ``Tensor[P, 4]`` target offsets of a batch's positive anchors.
        beta: initial β (0 is L1; the paper's Detectron uses 0.11).

    Returns:
        The explorer (an ``ipywidgets.VBox``).
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider

    offsets = _deltas(deltas)
    controls = {"beta": float_slider(beta, 0.0, 0.5, 0.01, "β", css_class="box-loss-beta")}
    figure = Figure(figsize=(9, 3), dpi=80)
    panels = _BoxLossPanels(figure.subplots(1, 2), offsets)

    def draw(values: dict[str, Any]) -> dict[str, float]:
        b = float(values["beta"])
        panels.update(b)
        figure.tight_layout()
        return {"beta": b, "quadratic_share": quadratic_share(offsets, b)}

    return Explorer(
        controls,
        draw,
        figure,
        readout=lambda _, values: box_loss_readout(offsets, float(values["beta"])),
        css_class="box-loss-explorer",
        readout_class="box-loss-readout",
    )
