"""Drawing images, boxes and detections with matplotlib.

All functions draw on a matplotlib ``Axes`` (or make one) and accept images as a CHW float tensor,
an HWC numpy array or a PIL image, and boxes as ``Tensor[N, 4]`` / arrays in pixels (``xyxy`` unless
``fmt`` says otherwise). Each class has a fixed colour (:func:`class_color`), so a class looks the
same in every figure of the course. ``matplotlib.pyplot`` is imported only inside the functions that
create figures, so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# matplotlib's "tab10" qualitative palette, spelled out so that no matplotlib import is needed.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
_DEFAULT_COLOR = (1.0, 0.84, 0.0)  # boxes without labels: gold


def class_color(label: int) -> tuple[float, float, float]:
    """The fixed RGB colour (floats in [0, 1]) of class ``label`` (tab10, cycling after 10 classes)."""
    hex_color = _PALETTE[int(label) % len(_PALETTE)]
    return tuple(int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_display_array(image: Any) -> np.ndarray:
    """Convert an image to an ``[H, W, 3]`` (or ``[H, W]``) array that ``imshow`` shows as-is.

    Args:
        image: ``Tensor[3, H, W]`` / ``Tensor[1, H, W]`` / ``Tensor[H, W]`` (float in [0, 1] or uint8),
            an ``[H, W, 3]`` / ``[H, W]`` numpy array, or a PIL image.

    Returns:
        float arrays are clipped to [0, 1] (so normalised images show, with wrong colours: undo
        :class:`retina_edu.data.Normalize` first with ``denormalize``); uint8 stays uint8.
    """
    if hasattr(image, "convert") and hasattr(image, "size") and not hasattr(image, "shape"):  # PIL
        return np.asarray(image.convert("RGB"))
    is_tensor = hasattr(image, "detach")
    array = _to_numpy(image)
    if array.ndim == 3 and is_tensor:
        if array.shape[0] not in (1, 3):
            raise ValueError(f"show_image: a tensor image must be [C, H, W] with C = 1 or 3, got {tuple(array.shape)}")
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"show_image: expected an image [H, W, 3], [H, W] or tensor [3, H, W], got {array.shape}")
    if array.dtype == np.uint8:
        return array
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def show_image(ax: Axes, image: Any, title: str | None = None) -> Axes:
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


def _boxes_xyxy(boxes: Any, fmt: str) -> np.ndarray:
    array = _to_numpy(boxes).astype(np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"draw_boxes: boxes must be [N, 4], got shape {array.shape}")
    if fmt == "xyxy":
        return array
    if fmt == "xywh":
        return np.concatenate([array[:, :2], array[:, :2] + array[:, 2:]], axis=1)
    if fmt == "cxcywh":
        return np.concatenate([array[:, :2] - array[:, 2:] / 2, array[:, :2] + array[:, 2:] / 2], axis=1)
    raise ValueError(f"draw_boxes: fmt must be 'xyxy', 'xywh' or 'cxcywh', got {fmt!r}")


def draw_boxes(
    ax: Axes,
    boxes: Any,
    labels: Any = None,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    colors: Any = None,
    linewidth: float = 1.5,
    fmt: str = "xyxy",
    fontsize: float = 7,
) -> list[Any]:
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

    xyxy = _boxes_xyxy(boxes, fmt)
    n = len(xyxy)
    labels_np = None if labels is None else _to_numpy(labels).reshape(-1).astype(np.int64)
    scores_np = None if scores is None else _to_numpy(scores).reshape(-1).astype(np.float64)
    for name, values in (("labels", labels_np), ("scores", scores_np)):
        if values is not None and len(values) != n:
            raise ValueError(f"draw_boxes: {n} boxes but {len(values)} {name}")
    single_color = isinstance(colors, str) or (
        isinstance(colors, tuple) and len(colors) in (3, 4) and all(isinstance(c, (int, float)) for c in colors)
    )
    if colors is None:
        box_colors = [class_color(l) for l in labels_np] if labels_np is not None else [_DEFAULT_COLOR] * n
    elif single_color:
        box_colors = [colors] * n
    else:
        box_colors = list(colors)
        if len(box_colors) != n:
            raise ValueError(f"draw_boxes: {n} boxes but {len(box_colors)} colors")

    rectangles, captions = [], []
    for i, (x1, y1, x2, y2) in enumerate(xyxy):
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=box_colors[i], linewidth=linewidth)
        rectangles.append(ax.add_patch(rect))
        parts = []
        if labels_np is not None:
            label = int(labels_np[i])
            named = class_names is not None and 0 <= label < len(class_names)
            parts.append(class_names[label] if named else str(label))
        if scores_np is not None:
            parts.append(f"{scores_np[i]:.2f}")
        if parts:
            captions.append(ax.text(
                x1, y1, " ".join(parts), fontsize=fontsize, color="white", va="bottom", ha="left", clip_on=True,
                bbox={"facecolor": box_colors[i], "alpha": 0.8, "pad": 1.0, "edgecolor": "none"},
            ))
    return rectangles + captions


def show_detections(
    image: Any,
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
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 5))
    show_image(ax, image, title=title)
    height, width = to_display_array(image).shape[:2]
    boxes = target_or_prediction["boxes"]
    labels = target_or_prediction.get("labels")
    scores = target_or_prediction.get("scores")
    if scores is not None:
        keep = _to_numpy(scores).reshape(-1) >= score_threshold
        boxes = _to_numpy(boxes).reshape(-1, 4)[keep]
        labels = None if labels is None else _to_numpy(labels).reshape(-1)[keep]
        scores = _to_numpy(scores).reshape(-1)[keep]
    draw_boxes(ax, boxes, labels=labels, scores=scores, class_names=class_names, fmt=fmt)
    ax.set_xlim(0, width)  # boxes poking out must not shrink the image
    ax.set_ylim(height, 0)
    return ax


def show_grid(
    dataset: Any,
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
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (3 * ncols, 3 * nrows), squeeze=False)
    for ax in axes.flat[len(indices):]:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, indices):
        image, target = dataset[index]
        show_detections(image, target, class_names, ax=ax, title=f"#{index} ({len(target['boxes'])} boxes)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Notebook set-up and the live training curve
# ---------------------------------------------------------------------------------------------
def setup_notebook(seed: int = 0, dpi: int = 80) -> None:
    """The first line of every notebook: seeds, print precision, compact inline figures."""
    import random

    import matplotlib.pyplot as plt
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=3, sci_mode=False)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6, 3.5), "axes.grid": False})


class LiveLossPlot:
    """A training callback that redraws the loss curves (and val AP) while training runs.

    Use ``train(..., callbacks=[LiveLossPlot()])``. In Jupyter the figure updates in place every
    ``every`` steps; elsewhere (a script, a test) it draws nothing until ``figure()`` is called.
    """

    def __init__(self, every: int = 10, smooth: int = 10):
        self.every, self.smooth = every, smooth
        self._handle = None

    def __call__(self, event: str, history: Mapping[str, list]) -> None:
        steps = history["train"]
        if event == "step" and steps and steps[-1]["step"] % self.every != 0:
            return
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover
            return
        if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
            return
        import matplotlib.pyplot as plt

        fig = self.figure(history)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)

    def figure(self, history: Mapping[str, list]) -> Figure:
        """The loss curves (raw and smoothed) and, when there are evaluations, AP against steps."""
        import matplotlib.pyplot as plt

        steps = history["train"]
        evals = history.get("eval", [])
        fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(9 if evals else 5, 3), squeeze=False)
        ax = axes[0, 0]
        if steps:
            x = np.array([r["step"] for r in steps])
            for key, color in (("loss", "k"), ("classification", "tab:blue"), ("bbox_regression", "tab:orange")):
                y = np.array([r[key] for r in steps])
                ax.plot(x, y, color=color, alpha=0.2, lw=0.8)
                k = max(1, min(self.smooth, len(y)))
                ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), color=color, label=key)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title("training loss")
        if evals:
            ax = axes[0, 1]
            ax.plot([e["step"] for e in evals], [e["AP"] for e in evals], "o-", label="AP")
            ax.plot([e["step"] for e in evals], [e["AP50"] for e in evals], "o-", label="AP50")
            ax.set_ylim(0, 1)
            ax.set_xlabel("step")
            ax.set_title("val mAP")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig
