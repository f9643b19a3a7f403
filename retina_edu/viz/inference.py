"""Inference figures (notebook 07): class scores level by level, and non-maximum suppression with its widget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._common import (
    DEFAULT_COLOR,
    ArrayLike,
    BoxesLike,
    ImageLike,
    boxes_xyxy,
    class_color,
    level_name,
    to_display_array,
    to_numpy,
)
from .images import draw_boxes, show_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer


def show_level_maps(
    maps: Sequence[ArrayLike],
    image: ImageLike | None = None,
    names: Sequence[str] | None = None,
    vmax: float | None = 1.0,
    cmap: str = "inferno",
    alpha: float = 0.6,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One panel per pyramid level: a ``[H_l, W_l]`` map (e.g. the best class score at each
    location) laid over the image, so coarse levels show as big blocks.

    Args:
        maps: one ``[H_l, W_l]`` array or tensor per level.
        image: optional image under the maps (see :func:`to_display_array`): the network input
            the maps were computed on; each map is stretched over all of it.
        names: a title per map (default P3, P4, ...).
        vmax: top of the colour scale (``None``: each map's own maximum); the bottom is 0.
        cmap: matplotlib colour map.
        alpha: opacity of the maps over the image.
        figsize: default 2 in per panel.

    Returns:
        The figure (one axes per map, then a colour bar).
    """
    import matplotlib.pyplot as plt

    arrays = [to_numpy(m).astype(np.float32) for m in maps]
    if not arrays or any(a.ndim != 2 for a in arrays):
        raise ValueError("show_level_maps: expected a non-empty list of [H, W] maps")
    names = list(names) if names is not None else [level_name(i) for i in range(len(arrays))]
    if len(names) != len(arrays):
        raise ValueError(f"show_level_maps: {len(arrays)} maps but {len(names)} names")
    fig, panels = plt.subplots(1, len(arrays), figsize=figsize or (2 * len(arrays) + 0.6, 2.3), squeeze=False)
    picture = None
    if image is not None:
        picture = to_display_array(image)
        height, width = picture.shape[:2]
    for ax, array, name in zip(panels[0], arrays, names):
        h, w = array.shape
        extent = (0, width, height, 0) if picture is not None else (0, w, h, 0)
        if picture is not None:
            show_image(ax, picture)
        handle = ax.imshow(
            array,
            cmap=cmap,
            vmin=0,
            vmax=vmax if vmax is not None else max(float(array.max()), 1e-12),
            alpha=alpha if picture is not None else 1.0,
            extent=extent,
            interpolation="nearest",
        )
        ax.set_axis_off()
        ax.set_title(f"{name} ({h}×{w}), max {array.max():.2f}", fontsize=8)
    fig.colorbar(handle, ax=list(panels[0]), shrink=0.8, fraction=0.02)
    return fig


def _nms_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, iou_thresh: float) -> np.ndarray:
    """Indices NMS keeps, best score first: ``torchvision.ops.batched_nms`` (one group when no labels)."""
    from torchvision.ops import batched_nms

    groups = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else torch.from_numpy(labels)
    keep = batched_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), groups, float(iou_thresh))
    return keep.numpy()


def draw_nms(
    ax: Axes,
    image: ImageLike,
    boxes: BoxesLike,
    scores: ArrayLike,
    labels: ArrayLike | None = None,
    iou_thresh: float | None = 0.5,
    score_thresh: float = 0.0,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    captions: bool = True,
) -> dict[str, int]:
    """Draw candidates before and after non-maximum suppression on one image.

    Candidates scoring at least ``score_thresh`` are drawn; NMS (class-aware when ``labels`` are
    given, ``torchvision.ops.batched_nms``) keeps some, drawn in their class colour with a caption,
    and the suppressed ones are drawn as thin dashed grey lines.

    Args:
        ax: axes to draw on.
        image: see :func:`to_display_array`.
        boxes: ``[N, 4]`` xyxy candidates in pixels; scores: ``[N]``; labels: optional ``[N]``.
        iou_thresh: NMS IoU threshold; ``None`` draws every candidate as kept (no NMS).
        score_thresh: candidates below it are not drawn at all.
        class_names: names by label for the captions.
        title: optional title (the counts are appended).
        captions: write "class score" on the kept boxes (``False``: colours only, for crowded pictures).

    Returns:
        ``{"candidates": shown, "kept": after NMS}``.
    """
    from matplotlib.patches import Rectangle

    boxes_np, scores_np, labels_np = _nms_candidates(boxes, scores, labels)
    show = scores_np >= score_thresh
    boxes_np, scores_np = boxes_np[show], scores_np[show]
    labels_np = None if labels_np is None else labels_np[show]
    if iou_thresh is None:
        keep = np.argsort(-scores_np, kind="stable")
    else:
        keep = _nms_keep(boxes_np, scores_np, labels_np, iou_thresh)
    suppressed = np.setdiff1d(np.arange(len(boxes_np)), keep)

    show_image(ax, image)
    height, width = to_display_array(image).shape[:2]
    for x1, y1, x2, y2 in boxes_np[suppressed]:
        ax.add_patch(
            Rectangle(
                (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=(0.85, 0.85, 0.85), linewidth=0.6, linestyle="--"
            )
        )
    kept_labels = None if labels_np is None else labels_np[keep]
    _draw_kept(ax, boxes_np[keep], scores_np[keep], kept_labels, class_names, captions)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    counts = {"candidates": int(len(boxes_np)), "kept": int(len(keep))}
    text = f"{counts['candidates']} boxes ≥ {score_thresh:g}" + (
        "" if iou_thresh is None else f" → NMS {iou_thresh:g} → {counts['kept']}"
    )
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=8)
    return counts


def _nms_candidates(
    boxes: BoxesLike, scores: ArrayLike, labels: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(boxes [N, 4] xyxy, scores [N] float64, labels [N] int64 or None)`` as arrays, checked to be as many."""
    boxes_np = boxes_xyxy(boxes, where="draw_nms")
    scores_np = to_numpy(scores).reshape(-1).astype(np.float64)
    labels_np = None if labels is None else to_numpy(labels).reshape(-1).astype(np.int64)
    if len(scores_np) != len(boxes_np) or (labels_np is not None and len(labels_np) != len(boxes_np)):
        raise ValueError(
            f"draw_nms: {len(boxes_np)} boxes, {len(scores_np)} scores"
            + ("" if labels_np is None else f", {len(labels_np)} labels")
        )
    return boxes_np, scores_np, labels_np


def _draw_kept(
    ax: Axes,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    captions: bool,
) -> None:
    """The boxes NMS kept, in their class colour, with a "class score" caption unless ``captions`` is False."""
    if captions:
        draw_boxes(ax, boxes, labels=labels, scores=scores, class_names=class_names, linewidth=1.2, fontsize=6)
    else:  # colour by class, no text
        colors = DEFAULT_COLOR if labels is None else [class_color(label) for label in labels]
        draw_boxes(ax, boxes, colors=colors, linewidth=1.2)


def nms_readout(counts: dict[str, int], iou_thresh: float, score_thresh: float) -> str:
    """One line: candidates over the score threshold, and how many NMS keeps."""
    return (
        f"<b>{counts['candidates']}</b> candidates with score ≥ {score_thresh:.2f} → "
        f"<b>{counts['kept']}</b> after NMS at IoU {iou_thresh:.2f}"
    )


def nms_explorer(
    image: ImageLike,
    boxes: BoxesLike,
    scores: ArrayLike,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
    figsize: tuple[float, float] = (4.5, 4.5),
) -> Explorer:
    """Sliders for the NMS IoU threshold and the score threshold over :func:`draw_nms`.

    Low IoU thresholds suppress neighbouring objects too; high ones let duplicates through; the
    score threshold hides the weak candidates before NMS sees them.

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with controls ``"iou"`` and ``"score"``, a
        readout (:func:`nms_readout`) and the figure; ``.result`` is the last :func:`draw_nms` result.
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider

    style = {"description_width": "90px"}
    controls = {
        "iou": float_slider(iou_thresh, 0.05, 1.0, 0.05, "NMS IoU", style=style),
        "score": float_slider(score_thresh, 0.0, 0.95, 0.05, "score ≥", style=style),
    }
    figure = Figure(figsize=figsize, dpi=80)
    ax = figure.subplots()

    def draw(values: dict[str, Any]) -> dict[str, int]:
        ax.clear()
        counts = draw_nms(ax, image, boxes, scores, labels, float(values["iou"]), float(values["score"]), class_names)
        figure.tight_layout()
        return counts

    return Explorer(
        controls, draw, figure, readout=lambda counts, values: nms_readout(counts, values["iou"], values["score"])
    )


# ---------------------------------------------------------------------------------------------
# The trained detector's output: score threshold and NMS IoU against the ground truth (notebook 09)
# ---------------------------------------------------------------------------------------------
TP_COLOR, FP_COLOR, MISSED_COLOR = "#2ca02c", "#d62728", "#ff7f0e"


def draw_threshold_nms(
    ax: Axes,
    image: ImageLike,
    candidates: dict[str, Any],
    gt_boxes: BoxesLike,
    gt_labels: ArrayLike,
    score_thresh: float,
    nms_iou: float,
    title: str | None = None,
) -> dict[str, Any]:
    """A detector's candidates after a score threshold and class-aware NMS, judged against the truth.

    The counts come from :func:`retina_edu.analysis.threshold_and_nms`. Kept detections are drawn
    green when they are true positives at IoU 0.5 (right class, a free ground-truth box), red when
    false positives, with their scores; ground-truth boxes are dashed white, orange when missed.

    Args:
        ax: axes to draw on; image: see :func:`to_display_array`.
        candidates: ``{"boxes": [C, 4] xyxy, "scores": [C], "labels": [C]}`` before NMS
            (``anchor_outputs(...)["candidates"]``).
        gt_boxes: ``[M, 4]`` xyxy; gt_labels: ``[M]``.
        score_thresh, nms_iou: the two knobs.
        title: optional title (the counts are appended).

    Returns:
        The :func:`~retina_edu.analysis.threshold_and_nms` result.
    """
    from matplotlib.patches import Rectangle

    from ..analysis import threshold_and_nms

    result = threshold_and_nms(candidates, torch.as_tensor(gt_boxes), torch.as_tensor(gt_labels), score_thresh, nms_iou)
    show_image(ax, image)
    height, width = to_display_array(image).shape[:2]
    truth = boxes_xyxy(gt_boxes, where="draw_threshold_nms")
    for (x1, y1, x2, y2), found in zip(truth, result["found"].tolist()):
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                linestyle="--",
                edgecolor="white" if found else MISSED_COLOR,
                linewidth=1.0 if found else 1.6,
            )
        )
    kept = result["kept"]
    boxes = to_numpy(candidates["boxes"])[kept.numpy()].reshape(-1, 4)
    scores = to_numpy(candidates["scores"])[kept.numpy()].reshape(-1)
    colors = [TP_COLOR if tp else FP_COLOR for tp in result["tp"].tolist()]
    draw_boxes(ax, boxes, scores=scores, colors=colors, linewidth=1.2, fontsize=6)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    c = result["counts"]
    text = f"score ≥ {score_thresh:.2f}, NMS {nms_iou:.2f}: {c['tp']} TP, {c['fp']} FP, {c['missed']} missed"
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=8)
    return result


def threshold_nms_readout(result: dict[str, Any], values: dict[str, Any]) -> str:
    """One line: candidates above the threshold, kept by NMS, and how many are right (TP/FP at IoU 0.5)."""
    c = result["counts"]
    return (
        f"<b>{c['above threshold']}</b> of {c['candidates']} candidates score ≥ {values['score']:.2f} → "
        f"NMS at IoU {values['iou']:.2f} keeps <b>{c['kept']}</b>: "
        f"<span style='color:{TP_COLOR}'><b>{c['tp']}</b> true positives</span>, "
        f"<span style='color:{FP_COLOR}'><b>{c['fp']}</b> false positives</span> (IoU 0.5); "
        f"<span style='color:{MISSED_COLOR}'><b>{c['missed']}</b></span> of {c['tp'] + c['missed']} objects missed"
    )


def threshold_nms_explorer(
    images: Sequence[ImageLike],
    candidates: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    names: Sequence[str] | None = None,
    score_thresh: float = 0.3,
    nms_iou: float = 0.5,
    figsize: tuple[float, float] = (4.8, 4.8),
) -> Explorer:
    """Sliders for the score threshold and the NMS IoU over a trained detector's candidates.

    Args:
        images: the images; candidates: their candidates before NMS
            (``anchor_outputs(...)["candidates"]``); targets: ``{"boxes", "labels"}`` per image.
        names: a name per image for the selector (default ``"image 0"``, ...).
        score_thresh, nms_iou: the starting values.

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with controls ``"score"``, ``"iou"`` and
        ``"image"``, the readout :func:`threshold_nms_readout`; ``.result`` is the last
        :func:`retina_edu.analysis.threshold_and_nms` result.
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider, image_selector

    if not (len(images) == len(candidates) == len(targets)) or not images:
        raise ValueError(
            f"threshold_nms_explorer: {len(images)} images, {len(candidates)} candidate sets, {len(targets)} targets"
        )
    style = {"description_width": "70px"}
    controls = {
        "score": float_slider(score_thresh, 0.05, 0.95, 0.05, "score ≥", style=style, css_class="nms-score"),
        "iou": float_slider(nms_iou, 0.1, 1.0, 0.05, "NMS IoU", style=style, css_class="nms-iou"),
        "image": image_selector(names, len(images)),
    }
    figure = Figure(figsize=figsize, dpi=80)
    ax = figure.subplots()

    def draw(values: dict[str, Any]) -> dict[str, Any]:
        ax.clear()
        i, score, iou = int(values["image"]), float(values["score"]), float(values["iou"])
        result = draw_threshold_nms(ax, images[i], candidates[i], targets[i]["boxes"], targets[i]["labels"], score, iou)
        figure.tight_layout()
        return result

    return Explorer(
        controls,
        draw,
        figure,
        readout=threshold_nms_readout,
        css_class="threshold-nms-explorer",
        readout_class="threshold-nms-readout",
    )
