"""Images, boxes and detections (notebooks 00, 02, 07-09 and the ``detect`` command).

All functions draw on a matplotlib ``Axes`` (or make one) and accept images as a CHW float tensor,
an HWC numpy array or a PIL image (:data:`ImageLike`), and boxes as ``[N, 4]`` tensors, arrays or
lists in pixels (``xyxy`` unless ``fmt`` says otherwise). Each class has a fixed colour
(:func:`class_color`), so a class looks the same in every figure of the course.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import (
    DEFAULT_COLOR,
    ArrayLike,
    BoxesLike,
    ImageLike,
    _axes,
    boxes_xyxy,
    class_color,
    to_display_array,
    to_numpy,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from torch.utils.data import Dataset


def show_image(ax: Axes, image: ImageLike, title: str | None = None) -> Axes:
    """Show ``image`` on ``ax`` with the axis lines hidden.

    Args:
        ax: matplotlib axes.
        image: see :func:`to_display_array`.
        title: optional axes title.

    Returns:
        ``ax``.
    """
    array = to_display_array(image)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255 if array.dtype == np.uint8 else 1)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def _box_colors(colors: Any, labels: np.ndarray | None, n: int) -> list[Any]:
    """One colour per box: by class (``colors=None``), one colour for all, or one given per box."""
    single_color = isinstance(colors, str) or (
        isinstance(colors, tuple) and len(colors) in (3, 4) and all(isinstance(c, (int, float)) for c in colors)
    )
    if colors is None:
        return [class_color(label) for label in labels] if labels is not None else [DEFAULT_COLOR] * n
    if single_color:
        return [colors] * n
    box_colors = list(colors)
    if len(box_colors) != n:
        raise ValueError(f"draw_boxes: {n} boxes but {len(box_colors)} colors")
    return box_colors


def draw_boxes(
    ax: Axes,
    boxes: BoxesLike,
    labels: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    colors: Any = None,
    linewidth: float = 1.5,
    fmt: str = "xyxy",
    fontsize: float = 7,
) -> list[Artist]:
    """Draw boxes as rectangles, with a caption "name 0.87" when labels or scores are given.

    Args:
        ax: matplotlib axes (the image should already be shown on it).
        boxes: ``[N, 4]`` tensor, array or list, in pixels, in format ``fmt``.
        labels: optional ``[N]`` class labels; they pick the colour and the caption's name.
        scores: optional ``[N]`` confidences, shown with two decimals.
        class_names: names by label; without them the caption shows the label number.
        colors: ``None`` (colour by class), one matplotlib colour for all boxes, or one per box.
        linewidth: rectangle line width in points.
        fmt: ``"xyxy"`` (x1, y1, x2, y2), ``"xywh"`` (COCO) or ``"cxcywh"``.
        fontsize: caption font size.

    Returns:
        The artists added: N rectangles, then the captions (``Text``), if any.
    """
    from matplotlib.patches import Rectangle

    xyxy = boxes_xyxy(boxes, fmt)
    n = len(xyxy)
    labels_np = None if labels is None else to_numpy(labels).reshape(-1).astype(np.int64)
    scores_np = None if scores is None else to_numpy(scores).reshape(-1).astype(np.float64)
    for name, values in (("labels", labels_np), ("scores", scores_np)):
        if values is not None and len(values) != n:
            raise ValueError(f"draw_boxes: {n} boxes but {len(values)} {name}")
    box_colors = _box_colors(colors, labels_np, n)

    rectangles, captions, captioned = [], [], []
    for i, (x1, y1, x2, y2) in enumerate(xyxy):
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=box_colors[i], linewidth=linewidth)
        rectangles.append(ax.add_patch(rect))
        text = _caption_text(i, labels_np, scores_np, class_names)
        if text is not None:
            captions.append(_add_caption(ax, x1, y1, text, box_colors[i], fontsize))
            captioned.append((x1, y1, x2, y2))
    _place_captions(ax, captions, captioned)
    return rectangles + captions


def _caption_text(
    i: int, labels: np.ndarray | None, scores: np.ndarray | None, class_names: Sequence[str] | None
) -> str | None:
    """Box ``i``'s caption: its class name (or label number) and its score with two decimals; None without
    labels and scores."""
    parts = []
    if labels is not None:
        label = int(labels[i])
        named = class_names is not None and 0 <= label < len(class_names)
        parts.append(class_names[label] if named else str(label))
    if scores is not None:
        parts.append(f"{scores[i]:.2f}")
    return " ".join(parts) if parts else None


def _add_caption(ax: Axes, x: float, y: float, text: str, color: Any, fontsize: float) -> Text:
    """White text on a box of ``color`` at the box's top-left corner (``_place_captions`` may move it)."""
    return ax.text(
        x,
        y,
        text,
        fontsize=fontsize,
        color="white",
        va="bottom",
        ha="left",
        clip_on=True,
        bbox={"facecolor": color, "alpha": 0.8, "pad": 1.0, "edgecolor": "none"},
    )


def _place_captions(ax: Axes, captions: Sequence[Text], boxes: Sequence[Sequence[float]]) -> None:
    """Move each caption to a free spot on its box's outline: above the box or just inside its top
    edge, left- or right-aligned, then below the box or inside its bottom edge; free means that it
    overlaps no caption placed before it and stays inside the axes.

    Captions are placed in order, so the first boxes (e.g. the best-scoring detections) keep the usual
    spot above the box's top-left corner; when no spot is free, the one with the least overlap wins.
    Best effort: positions are measured with the figure's current layout, and nothing moves when the
    figure has no renderer (a bare ``Figure`` without a canvas).
    """
    if not captions:
        return
    try:
        renderer = ax.figure.canvas.get_renderer()
    except AttributeError:
        return
    frame = ax.get_window_extent(renderer)

    def overlap(a: Any, b: Any) -> float:
        return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))

    placed: list[Any] = []
    for text, (x1, y1, x2, y2) in zip(captions, boxes):
        spots = [(x, y, ha, va) for y, va in ((y1, "bottom"), (y1, "top")) for x, ha in ((x1, "left"), (x2, "right"))]
        spots += [(x, y, ha, va) for y, va in ((y2, "top"), (y2, "bottom")) for x, ha in ((x1, "left"), (x2, "right"))]
        best, best_cost = spots[0], None
        for spot in spots:
            text.set_position(spot[:2])
            text.set_ha(spot[2])
            text.set_va(spot[3])
            extent = text.get_window_extent(renderer).padded(1.0)
            outside = (
                extent.x0 < frame.x0 - 1
                or extent.x1 > frame.x1 + 1
                or extent.y0 < frame.y0 - 1
                or extent.y1 > frame.y1 + 1
            )
            cost = sum(overlap(extent, other) for other in placed) + (1e9 if outside else 0.0)
            if best_cost is None or cost < best_cost:
                best, best_cost = spot, cost
            if cost == 0:
                break
        text.set_position(best[:2])
        text.set_ha(best[2])
        text.set_va(best[3])
        placed.append(text.get_window_extent(renderer).padded(1.0))


def show_detections(
    image: ImageLike,
    target_or_prediction: Mapping[str, Any],
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    score_threshold: float = 0.0,
    title: str | None = None,
    fmt: str = "xyxy",
) -> Axes:
    """Show an image with its ground truth or its detections.

    Args:
        image: see :func:`to_display_array`.
        target_or_prediction: a dict with ``"boxes"`` and optionally ``"labels"`` and ``"scores"``
            (a target or a prediction; with scores, boxes under ``score_threshold`` are skipped).
        class_names: names by label.
        ax: axes to draw on; ``None`` makes a new figure.
        score_threshold: smallest score shown.
        title: optional title.
        fmt: box format, as in :func:`draw_boxes`.

    Returns:
        The axes.
    """
    ax = _axes(ax, (5, 5))
    show_image(ax, image, title=title)
    height, width = to_display_array(image).shape[:2]
    boxes = target_or_prediction["boxes"]
    labels = target_or_prediction.get("labels")
    scores = target_or_prediction.get("scores")
    if scores is not None:
        keep = to_numpy(scores).reshape(-1) >= score_threshold
        boxes = to_numpy(boxes).reshape(-1, 4)[keep]
        labels = None if labels is None else to_numpy(labels).reshape(-1)[keep]
        scores = to_numpy(scores).reshape(-1)[keep]
    ax.set_xlim(0, width)  # boxes poking out must not shrink the image (and captions are placed in this view)
    ax.set_ylim(height, 0)
    draw_boxes(ax, boxes, labels=labels, scores=scores, class_names=class_names, fmt=fmt)
    return ax


def show_grid(
    dataset: Dataset,
    indices: Sequence[int],
    ncols: int = 4,
    class_names: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw ``dataset[i]`` for each index, with its ground-truth boxes, in a grid.

    Args:
        dataset: returns ``(image, target)`` pairs (e.g. :class:`retina_edu.data.CocoDetection`).
        indices: which items to show.
        ncols: images per row.
        class_names: names by label; defaults to ``dataset.classes`` when it has them.
        figsize: figure size in inches; default 3 per image.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    indices = list(indices)
    if not indices:
        raise ValueError("show_grid: no indices to show")
    if ncols < 1:
        raise ValueError(f"show_grid: ncols must be >= 1, got {ncols}")
    if class_names is None:
        class_names = getattr(dataset, "classes", None)
    ncols = min(ncols, len(indices))
    nrows = math.ceil(len(indices) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=figsize or (3 * ncols, 3 * nrows), squeeze=False)
    for ax in grid.flat[len(indices) :]:
        ax.set_axis_off()
    for ax, index in zip(grid.flat, indices):
        image, target = dataset[index]
        show_detections(image, target, class_names, ax=ax, title=f"#{index} ({len(target['boxes'])} boxes)")
    fig.tight_layout()
    return fig
