"""How anchors are labelled (notebook 02): positives, ignored and negatives on the image, the IoU
histogram beside them, and the widget that moves the two thresholds.

The labels come from :func:`retina_edu.matching.match_anchors` (``BACKGROUND`` / ``IGNORE`` / a box
index), the counts from :func:`retina_edu.analysis.match_counts` and the IoUs from
:func:`retina_edu.analysis.best_iou`; this module only draws them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analysis import best_iou, match_counts
from ..matching import BACKGROUND, IGNORE, match_anchors
from ._common import (
    MATCH_COLORS,
    ArrayLike,
    BoxesLike,
    ImageLike,
    boxes_xyxy,
    gt_color,
    new_figure,
    to_display_array,
    to_numpy,
)
from .images import show_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer


def _box(x1: float, y1: float, x2: float, y2: float, **style: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style)


def _unique_centres(centres: np.ndarray) -> np.ndarray:
    """One point per location (the anchors of a location share their centre)."""
    return np.unique(np.round(centres, 3), axis=0).reshape(-1, 2)


def draw_matching(
    ax: Axes,
    image: ImageLike,
    anchors: BoxesLike,
    gt_boxes: BoxesLike,
    matches: ArrayLike,
    ignored_boxes: bool = False,
    negative_alpha: float = 0.35,
) -> dict[str, Any]:
    """Draw how anchors are labelled: positives as thin boxes in their object's colour with a dot at
    their centre, ignored anchors as orange crosses at their centres (or dashed boxes), negatives as
    small white dots at their centres (one per location, however many of its anchors are negative),
    ground-truth boxes as thick outlines. Each object has its own colour (:func:`gt_color`).

    Args:
        ax: matplotlib axes.
        image: see :func:`to_display_array`.
        anchors: ``[A, 4]`` xyxy.
        gt_boxes: ``[M, 4]`` xyxy.
        matches: ``[A]``: box index, ``BACKGROUND`` (-1) or ``IGNORE`` (-2), as
            :func:`retina_edu.matching.match_anchors` returns them.
        ignored_boxes: draw the ignored anchors as dashed boxes too, not only their centres.
        negative_alpha: opacity of the negatives' dots.

    Returns:
        ``{"gt": [Rectangle] (two per box: a white halo and the colour), "positive": [Rectangle],
        "positive_centres": PathCollection, "ignored": PathCollection, "ignored_boxes": [Rectangle],
        "negative": PathCollection, "counts": match_counts(matches)}``.
    """
    anchors_np = boxes_xyxy(anchors, where="draw_matching")
    gt_np = boxes_xyxy(gt_boxes, where="draw_matching")
    m = to_numpy(matches).reshape(-1).astype(np.int64)
    if len(m) != len(anchors_np):
        raise ValueError(f"draw_matching: {len(anchors_np)} anchors but {len(m)} matches")
    negative, ignored = m == BACKGROUND, m == IGNORE
    show_image(ax, image)
    height, width = to_display_array(image).shape[:2]
    centres = (anchors_np[:, :2] + anchors_np[:, 2:]) / 2
    negatives, ignored_dots = _draw_negative_and_ignored_centres(ax, centres, negative, ignored, negative_alpha)
    dashed = [_add_ignored_box(ax, *box) for box in anchors_np[ignored]] if ignored_boxes else []
    positives, positive_centres = _draw_positives(ax, anchors_np, centres, m)
    gts = []
    for j, (x1, y1, x2, y2) in enumerate(gt_np):
        gts.append(ax.add_patch(_box(x1, y1, x2, y2, edgecolor="white", linewidth=3.4, zorder=5)))
        gts.append(ax.add_patch(_box(x1, y1, x2, y2, edgecolor=gt_color(j), linewidth=2.0, zorder=6)))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    return {
        "gt": gts,
        "positive": positives,
        "positive_centres": positive_centres,
        "ignored": ignored_dots,
        "ignored_boxes": dashed,
        "negative": negatives,
        "counts": match_counts(m),
    }


def _draw_negative_and_ignored_centres(
    ax: Axes, centres: np.ndarray, negative: np.ndarray, ignored: np.ndarray, negative_alpha: float
) -> tuple[Any, Any]:
    """White dots at the negatives' centres and orange crosses at the ignored anchors' (one per location)."""
    negative_centres = _unique_centres(centres[negative])
    negatives = ax.scatter(
        negative_centres[:, 0],
        negative_centres[:, 1],
        s=4,
        c="white",
        alpha=min(1.0, 2 * negative_alpha),
        linewidths=0,
        zorder=2,
        label="negative (centres)",
    )
    ignored_centres = _unique_centres(centres[ignored])
    ignored_dots = ax.scatter(
        ignored_centres[:, 0],
        ignored_centres[:, 1],
        s=18,
        marker="x",
        c=MATCH_COLORS["ignored"],
        linewidths=1.0,
        zorder=4,
        label="ignored (centres)",
    )
    return negatives, ignored_dots


def _add_ignored_box(ax: Axes, x1: float, y1: float, x2: float, y2: float) -> Any:
    return ax.add_patch(
        _box(x1, y1, x2, y2, linestyle="--", edgecolor=MATCH_COLORS["ignored"], linewidth=0.7, alpha=0.7)
    )


def _draw_positives(ax: Axes, anchors: np.ndarray, centres: np.ndarray, m: np.ndarray) -> tuple[list[Any], Any]:
    """Each positive anchor as a thin box in its object's colour, and a dot at its centre."""
    positive = m >= 0
    positives = []
    for i in np.flatnonzero(positive):
        positives.append(ax.add_patch(_box(*anchors[i], edgecolor=gt_color(m[i]), linewidth=0.6, alpha=0.6, zorder=3)))
    # A dot at each positive's centre (one per location and object), so that the positives of small
    # objects, whose boxes pile up, can still be told apart.
    pos_keys = np.unique(np.column_stack([np.round(centres[positive], 3), m[positive]]), axis=0).reshape(-1, 3)
    positive_centres = ax.scatter(
        pos_keys[:, 0],
        pos_keys[:, 1],
        s=10,
        c=[gt_color(int(j)) for j in pos_keys[:, 2]],
        edgecolors="white",
        linewidths=0.5,
        zorder=4,
        label="positive (centres)",
    )
    return positives, positive_centres


def _matching_legend(ax: Axes, num_boxes: int) -> None:
    """The legend under the image: one entry for the objects' colours, one per anchor label."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    object_colors = tuple(Line2D([], [], color=gt_color(j), linewidth=2) for j in range(max(1, min(num_boxes, 4))))
    handles = [
        object_colors,
        Line2D([], [], color=MATCH_COLORS["ignored"], marker="x", linestyle="none"),
        Line2D([], [], color="white", marker="o", markersize=3, markeredgecolor="0.4", linestyle="none"),
    ]
    labels = [
        "one colour per object: its box (thick), its positive anchors (thin), their centres (dots)",
        "ignored anchors (centres)",
        "negative anchors (centres: one dot per location of 9 anchors)",
    ]
    ax.legend(
        handles,
        labels,
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
        loc="upper left",
        bbox_to_anchor=(0.0, -0.01),
        ncol=1,
        fontsize=7,
        frameon=False,
        handlelength=3.0,
    )


def _draw_iou_histogram(
    ax: Axes, iou: np.ndarray, m: np.ndarray, fg_iou: float, bg_iou: float, allow_low_quality: bool
) -> None:
    """Every anchor's best IoU as a histogram (log counts) stacked by label, with the two thresholds."""
    bins = np.linspace(0, 1, 51)
    groups = [(iou[m == BACKGROUND], "negative"), (iou[m == IGNORE], "ignored"), (iou[m >= 0], "positive")]
    ax.hist(
        [g for g, _ in groups],
        bins=bins,
        stacked=True,
        log=True,
        color=[MATCH_COLORS[name] for _, name in groups],
        label=[f"{name} ({len(g)})" for g, name in groups],
    )
    ax.axvline(bg_iou, color="k", linestyle=":", linewidth=1.2, label=f"bg_iou = {bg_iou:.2f}")
    ax.axvline(fg_iou, color="k", linestyle="--", linewidth=1.2, label=f"fg_iou = {fg_iou:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0.4)
    # Low-quality positives (IoU < fg_iou) sit on top of thousands of negatives: invisible on a log
    # scale, so mark them under the bars.
    low_quality = iou[(m >= 0) & (iou < fg_iou)]
    if len(low_quality):
        ax.scatter(
            low_quality,
            np.full(len(low_quality), 0.55),
            marker="^",
            s=45,
            c=MATCH_COLORS["positive"],
            edgecolors="black",
            linewidths=0.6,
            zorder=5,
            clip_on=False,
        )
        lo, hi = float(low_quality.min()), float(low_quality.max())
        span = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}"
        plural = "s" if len(low_quality) != 1 else ""
        note = (
            f"▲ {len(low_quality)} low-quality positive{plural} (IoU {span}):\n"
            f"stacked on the negatives of {'their' if plural else 'its'} bin,\ntoo few to see on a log scale"
        )
        ax.annotate(
            note,
            xy=(float(np.median(low_quality)), 0.55),
            xytext=(0.98, 0.97),
            textcoords="axes fraction",
            fontsize=7,
            ha="right",
            va="top",
            arrowprops={"arrowstyle": "->", "color": "0.25", "lw": 0.8, "shrinkB": 5},
            bbox={"facecolor": "white", "edgecolor": "0.6", "pad": 2},
        )
    ax.set_xlabel("best IoU of the anchor with any box")
    ax.set_ylabel("anchors (log scale)")
    low = "with" if allow_low_quality else "without"
    ax.set_title(f"{len(m)} anchors, {low} low-quality matches", fontsize=8)
    ax.legend(fontsize=7, loc="center right")


def matching_figure(
    image: ImageLike,
    anchors: BoxesLike,
    gt_boxes: BoxesLike,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    figsize: tuple[float, float] = (10, 4.8),
    fig: Figure | None = None,
) -> Figure:
    """Label the anchors of one image with :func:`retina_edu.matching.match_anchors` and draw the result.

    Left: :func:`draw_matching`. Right: every anchor's best IoU with any box
    (:func:`retina_edu.analysis.best_iou`), as a histogram (log counts) stacked by the label the
    anchor got, with the two thresholds as lines; low-quality matches show as positives left of the
    ``fg_iou`` line.

    Args:
        image: see :func:`to_display_array`.
        anchors: ``Tensor[A, 4]`` xyxy.
        gt_boxes: ``Tensor[M, 4]`` xyxy.
        fg_iou: IoU at or above which an anchor is positive.
        bg_iou: IoU below which an anchor is negative (``bg_iou <= fg_iou``).
        allow_low_quality: also give each box its best anchor(s).
        figsize: figure size in inches (of a new figure).
        fig: the figure to draw on (cleared first); ``None`` makes a new pyplot figure, so that
            Jupyter shows it. An explorer passes its own bare ``Figure``.

    Returns:
        The figure; ``fig.match_counts`` holds :func:`retina_edu.analysis.match_counts` of the labelling.
    """
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    matches = match_anchors(anchors, gt_boxes, fg_iou, bg_iou, allow_low_quality)

    fig = new_figure(fig, figsize)
    ax_img, ax_hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    counts = draw_matching(ax_img, image, anchors, gt_boxes, matches)["counts"]
    ax_img.set_title(
        f"{counts['positive']} positive · {counts['ignored']} ignored · {counts['negative']} negative\n"
        f"{_imbalance(counts)}",
        fontsize=8,
    )
    _matching_legend(ax_img, len(gt_boxes))
    _draw_iou_histogram(
        ax_hist, best_iou(anchors, gt_boxes).numpy(), matches.numpy(), fg_iou, bg_iou, allow_low_quality
    )
    fig.tight_layout()
    fig.match_counts = counts
    return fig


def matching_readout(counts: dict[str, int], fg_iou: float, bg_iou: float) -> str:
    """One line: the counts of the three labels at the current thresholds."""
    return (
        f"IoU ≥ {fg_iou:.2f}: <b>{counts['positive']}</b> positive; {bg_iou:.2f} ≤ IoU < {fg_iou:.2f}: "
        f"<b>{counts['ignored']}</b> ignored; IoU < {bg_iou:.2f}: <b>{counts['negative']}</b> negative "
        f"{_imbalance(counts)}"
    )


def _imbalance(counts: dict[str, int]) -> str:
    """``"(1 positive : N negatives)"`` for :func:`retina_edu.analysis.match_counts`."""
    return f"(1 positive : {counts['negative'] / max(counts['positive'], 1):.0f} negatives)"


def matching_explorer(
    image: ImageLike,
    anchors: BoxesLike,
    gt_boxes: BoxesLike,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    figsize: tuple[float, float] = (10, 4.8),
) -> Explorer:
    """A widget with the two IoU thresholds and the low-quality switch that redraws :func:`matching_figure`.

    The sliders keep ``bg_iou <= fg_iou``: moving one past the other drags the other along (one
    redraw per move).

    Args:
        image, anchors, gt_boxes: as in :func:`matching_figure`.
        fg_iou, bg_iou, allow_low_quality: the first setting shown.
        figsize: figure size in inches.

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with controls ``"fg_iou"``, ``"bg_iou"`` and
        ``"low_quality"``, a readout (:func:`matching_readout`) and the figure; ``.result`` (and
        ``.figure.match_counts``) is :func:`retina_edu.analysis.match_counts` of the labelling.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider

    style = {"description_width": "60px"}
    controls = {
        "fg_iou": float_slider(fg_iou, 0.05, 0.95, 0.05, "fg IoU", style=style),
        "bg_iou": float_slider(bg_iou, 0.0, 0.95, 0.05, "bg IoU", style=style),
        "low_quality": widgets.Checkbox(value=allow_low_quality, description="low-quality matches", indent=False),
    }
    figure = Figure(figsize=figsize)

    def adjust(changed: str, values: dict[str, Any]) -> None:
        if values["bg_iou"] > values["fg_iou"]:  # drag the other threshold along
            if changed == "fg_iou":
                controls["bg_iou"].value = values["fg_iou"]
            elif changed == "bg_iou":
                controls["fg_iou"].value = values["bg_iou"]

    def draw(values: dict[str, Any]) -> dict[str, int]:
        return matching_figure(
            image, anchors, gt_boxes, values["fg_iou"], values["bg_iou"], values["low_quality"], fig=figure
        ).match_counts

    return Explorer(
        controls,
        draw,
        figure,
        adjust=adjust,
        readout=lambda counts, values: matching_readout(counts, values["fg_iou"], values["bg_iou"]),
    )
