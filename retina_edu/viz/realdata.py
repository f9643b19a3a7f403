"""Real images (notebook 11, aerial tree crowns): box sizes against anchors, the crowns no anchor
matches, the tiles of a large image, and a widget that moves the anchors along the size axis.

The numbers come from :mod:`retina_edu.anchors` (``anchor_coverage``, ``fit_anchor_sizes``) and
:mod:`retina_edu.tiling`; this module only draws them. The widget (:func:`anchor_fit_explorer`)
draws the same picture as its static twin (:func:`anchor_fit_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import PALETTE, BoxesLike, ImageLike, boxes_xyxy, finish_axes, new_figure, to_numpy
from .images import show_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..anchors import AnchorCoverage
    from ._explorer import Explorer

__all__ = [
    "MATCHED_COLOR",
    "UNMATCHED_COLOR",
    "anchor_fit_explorer",
    "anchor_fit_figure",
    "anchor_fit_readout",
    "draw_best_iou",
    "draw_size_histogram",
    "draw_tiles",
    "draw_unmatched",
]

MATCHED_COLOR = "#2ca02c"  # an anchor reaches IoU >= 0.5
UNMATCHED_COLOR = "#d62728"  # none does: only a low-quality match teaches it


def _anchor_span(sizes: Sequence[float], scales: Sequence[float]) -> list[tuple[float, float]]:
    """Each level's smallest and largest anchor size (``base * scale``)."""
    return [(s * min(scales), s * max(scales)) for s in sizes]


def draw_size_histogram(
    ax: Axes,
    box_sizes: Any,
    anchor_sets: Mapping[str, Sequence[float]],
    scales: Sequence[float] | None = None,
    title: str | None = None,
) -> Axes:
    """The objects' sizes (``sqrt(w * h)``, log axis) under the anchor sizes of each set.

    Args:
        ax: axes to draw on.
        box_sizes: ``[N]`` object sizes in pixels.
        anchor_sets: ``{name: base size per level}``; each level's span ``base * scales`` is shaded.
        scales: the scales per level (default the paper's three).
        title: optional title.
    """
    from ..anchors import PAPER_SCALES

    scales = PAPER_SCALES if scales is None else scales
    sizes = to_numpy(box_sizes).astype(float).reshape(-1)
    if sizes.size == 0:
        raise ValueError("draw_size_histogram: no object sizes to draw")
    spans = [span for bases in anchor_sets.values() for span in _anchor_span(bases, scales)]
    low = min(sizes.min(), min(s for s, _ in spans)) * 0.8
    high = max(sizes.max(), max(e for _, e in spans)) * 1.25
    bins = np.geomspace(sizes.min() * 0.95, sizes.max() * 1.05, 30)
    ax.hist(sizes, bins=bins, color="#7f7f7f", alpha=0.8, label=f"{sizes.size} objects")
    top = ax.get_ylim()[1]
    for k, (name, bases) in enumerate(anchor_sets.items()):
        color = PALETTE[k % len(PALETTE)]
        y = top * (1.04 + 0.07 * k)
        for level, (start, end) in enumerate(_anchor_span(bases, scales)):
            ax.plot([start, end], [y, y], color=color, lw=4, solid_capstyle="butt", label=name if level == 0 else None)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(0, top * (1.12 + 0.07 * len(anchor_sets)))
    ax.set_xlabel("object size √(w·h), pixels")
    ax.set_ylabel("objects")
    ax.legend(fontsize=7, loc="center right")
    return finish_axes(ax, title)


def draw_best_iou(
    ax: Axes,
    coverages: Mapping[str, AnchorCoverage],
    title: str | None = None,
) -> Axes:
    """Each object's best IoU with any anchor against its size, one colour per anchor set.

    Points under the dashed threshold line have no anchor at IoU >= 0.5; the legend counts them.
    """
    if not coverages:
        raise ValueError("draw_best_iou: no coverages to draw")
    threshold = next(iter(coverages.values())).threshold
    for k, (name, cov) in enumerate(coverages.items()):
        ax.scatter(
            to_numpy(cov.box_sizes),
            to_numpy(cov.best_iou),
            s=5,
            alpha=0.5,
            color=PALETTE[k % len(PALETTE)],
            label=f"{name}: {cov.num_unmatched} of {cov.num_objects} unmatched",
            linewidths=0,
        )
    ax.axhline(threshold, color="black", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("object size √(w·h), pixels")
    ax.set_ylabel("best IoU with any anchor")
    ax.legend(fontsize=7, loc="lower right", markerscale=3)
    return finish_axes(ax, title)


def anchor_fit_figure(
    coverages: Mapping[str, AnchorCoverage],
    scales: Sequence[float] | None = None,
    fig: Figure | None = None,
    figsize: tuple[float, float] = (9.5, 3.4),
) -> Figure:
    """The static figure of notebook 11's anchor fit: sizes under the anchors (left), best IoU (right).

    Args:
        coverages: ``{name: AnchorCoverage}`` of the same objects (``anchor_coverage`` results).
        scales: the anchor scales (default the paper's).
        fig: draw on this figure (cleared) instead of a new pyplot one (the explorer passes its own).
        figsize: size of a new figure.
    """
    fig = new_figure(fig, figsize)
    fig.clear()
    left, right = fig.subplots(1, 2)
    first = next(iter(coverages.values()))
    draw_size_histogram(
        left,
        first.box_sizes,
        {name: cov.sizes for name, cov in coverages.items()},
        scales,
        title="object sizes and anchor sizes per level",
    )
    draw_best_iou(right, coverages, title="the best anchor of each object")
    fig.tight_layout()
    return fig


def anchor_fit_readout(coverage: AnchorCoverage, reference: AnchorCoverage) -> str:
    """One line: the chosen anchors' coverage and unmatched count, next to the reference's."""
    sizes = ", ".join(f"{s:g}" for s in coverage.sizes)
    return (
        f"anchors <b>({sizes})</b>: <b>{coverage.coverage:.1%}</b> of {coverage.num_objects} objects have an "
        f"anchor at IoU ≥ {coverage.threshold:g}, <b style='color:{UNMATCHED_COLOR}'>{coverage.num_unmatched}"
        f"</b> have none (the reference: {reference.coverage:.1%}, {reference.num_unmatched} unmatched)"
    )


def anchor_fit_explorer(
    coverages: Mapping[float, AnchorCoverage],
    reference: AnchorCoverage,
    value: float | None = None,
    figsize: tuple[float, float] = (9.5, 3.4),
) -> Explorer:
    """A slider over P3's base anchor size, redrawing :func:`anchor_fit_figure` against a reference.

    Args:
        coverages: ``{P3 base size: AnchorCoverage}``, computed beforehand (``anchor_coverage`` for
            each size) so that moving the slider only draws.
        reference: the anchors to compare with (the paper's).
        value: the base size shown first (default the smallest).
        figsize: figure size in inches.

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with one control ``"base"``; ``.result`` is
        the chosen ``AnchorCoverage``.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from ._explorer import Explorer

    if not coverages:
        raise ValueError("anchor_fit_explorer: no coverages to choose from")
    options = sorted(coverages)
    value = options[0] if value is None else value
    if value not in coverages:
        raise ValueError(f"anchor_fit_explorer: value {value!r} is not one of the sizes {options}")
    controls = {
        "base": widgets.SelectionSlider(
            options=[(f"{b:g}", b) for b in options],
            value=value,
            description="P3 anchor",
            continuous_update=False,
            style={"description_width": "70px"},
        )
    }
    figure = Figure(figsize=figsize)

    def draw(values: dict[str, Any]) -> AnchorCoverage:
        chosen = coverages[values["base"]]
        anchor_fit_figure({"reference": reference, "chosen": chosen}, fig=figure)
        return chosen

    return Explorer(
        controls,
        draw,
        figure,
        readout=lambda chosen, values: anchor_fit_readout(chosen, reference),
        css_class="anchor-fit-explorer",
    )


def draw_unmatched(
    ax: Axes,
    image: ImageLike,
    boxes: BoxesLike,
    best_iou: Any,
    threshold: float = 0.5,
    title: str | None = None,
) -> dict[str, int]:
    """An image's objects: green when some anchor reaches ``threshold``, red (thicker) when none does.

    Args:
        ax: axes to draw on; image: see :func:`~retina_edu.viz.to_display_array`.
        boxes: ``[N, 4]`` xyxy; best_iou: ``[N]`` each box's best IoU with any anchor.
        threshold: the foreground IoU.
        title: optional title (the counts are appended).

    Returns:
        ``{"matched": ..., "unmatched": ...}``.
    """
    from matplotlib.patches import Rectangle

    xyxy = boxes_xyxy(boxes, where="draw_unmatched")
    iou = to_numpy(best_iou).astype(float).reshape(-1)
    if len(iou) != len(xyxy):
        raise ValueError(f"draw_unmatched: {len(xyxy)} boxes but {len(iou)} best IoUs")
    show_image(ax, image)
    matched = iou >= threshold
    for (x1, y1, x2, y2), ok in zip(xyxy, matched):
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=MATCHED_COLOR if ok else UNMATCHED_COLOR,
                linewidth=0.9 if ok else 1.8,
            )
        )
    counts = {"matched": int(matched.sum()), "unmatched": int((~matched).sum())}
    text = f"{counts['unmatched']} of {len(iou)} with no anchor at IoU ≥ {threshold:g} (red)"
    finish_axes(ax, f"{title}\n{text}" if title else text)
    return counts


def draw_tiles(
    ax: Axes,
    image: ImageLike,
    windows: Sequence[Sequence[int]],
    boxes: BoxesLike | None = None,
    title: str | None = None,
) -> Axes:
    """An image with its tiles outlined (alternating colours, slightly inset so overlaps show) and,
    optionally, its boxes in white.

    Args:
        ax: axes to draw on; image: see :func:`~retina_edu.viz.to_display_array`.
        windows: ``(x1, y1, x2, y2)`` per tile (``retina_edu.tiling.tile_windows``).
        boxes: optional ``[N, 4]`` xyxy.
        title: optional title.
    """
    from matplotlib.patches import Rectangle

    show_image(ax, image)
    if boxes is not None:
        for x1, y1, x2, y2 in boxes_xyxy(boxes, where="draw_tiles"):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=0.5))
    for k, (x1, y1, x2, y2) in enumerate(windows):
        inset = 2 + 3 * (k % 3)
        ax.add_patch(
            Rectangle(
                (x1 + inset, y1 + inset),
                x2 - x1 - 2 * inset,
                y2 - y1 - 2 * inset,
                fill=False,
                edgecolor=PALETTE[k % len(PALETTE)],
                linewidth=1.4,
            )
        )
    return finish_axes(ax, title)
