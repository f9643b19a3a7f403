"""Drawing images, boxes and detections with matplotlib.

All functions draw on a matplotlib ``Axes`` (or make one) and accept images as a CHW float tensor,
an HWC numpy array or a PIL image, and boxes as ``Tensor[N, 4]`` / arrays in pixels (``xyxy`` unless
``fmt`` says otherwise). Each class has a fixed colour (:func:`class_color`), so a class looks the
same in every figure of the course. ``matplotlib.pyplot`` is imported only inside the functions that
create figures, so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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

    rectangles, captions, captioned = [], [], []
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
            captioned.append((x1, y1, x2, y2))
    _place_captions(ax, captions, captioned)
    return rectangles + captions


def _place_captions(ax: Axes, captions: Sequence[Any], boxes: Sequence[Sequence[float]]) -> None:
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
            outside = (extent.x0 < frame.x0 - 1 or extent.x1 > frame.x1 + 1
                       or extent.y0 < frame.y0 - 1 or extent.y1 > frame.y1 + 1)
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
    ax.set_xlim(0, width)  # boxes poking out must not shrink the image (and captions are placed in this view)
    ax.set_ylim(height, 0)
    draw_boxes(ax, boxes, labels=labels, scores=scores, class_names=class_names, fmt=fmt)
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


# ---------------------------------------------------------------------------------------------
# --- focal loss widgets (notebook 03) ---
# ---------------------------------------------------------------------------------------------
FOCAL_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)  # the curves of the paper's Figure 1
LOSS_GROUPS = ("easy negatives", "hard negatives", "positives")
_GROUP_COLORS = ("#9ecae1", "#08519c", "#ff7f0e")
_GAMMA_COLORS = ("#1f77b4", "#9467bd", "#d62728", "#2ca02c", "#ff7f0e")  # γ = 0, .5, 1, 2, 5


def focal_loss_vs_pt(p_t: Any, gamma: float, alpha: float | None = None) -> dict[str, np.ndarray]:
    """Focal loss of one *positive* example as a function of p_t, with its gradient.

    The loss comes from :func:`retina_edu.losses.sigmoid_focal_loss` at the logit
    ``x = log(p_t / (1 - p_t))`` (target 1, so p_t = sigmoid(x)); the gradient d loss / d x from
    autograd, in float64. A negative example at the same p_t has the same curves with ``1 - alpha``
    instead of ``alpha`` (and the gradient's sign flipped).

    Args:
        p_t: probabilities in (0, 1), any shape (array, list or tensor).
        gamma: focusing parameter, >= 0.
        alpha: the positives' weight α, or ``None`` for no weighting.

    Returns:
        ``{"loss", "ce", "factor", "grad", "ce_grad"}``: numpy float64 arrays shaped like ``p_t``;
        ``ce`` is plain cross entropy ``-log p_t`` (no α), ``factor`` the modulating factor
        ``(1 - p_t)^γ``, ``ce_grad`` the gradient of plain CE, ``p_t - 1``.
    """
    import torch

    from .losses import sigmoid_focal_loss

    p = torch.as_tensor(_to_numpy(p_t), dtype=torch.float64)
    if bool(((p <= 0) | (p >= 1)).any()):
        raise ValueError("focal_loss_vs_pt: p_t must lie strictly between 0 and 1")
    logits = torch.logit(p).requires_grad_(True)
    loss = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha=alpha, gamma=gamma)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    p_np = p.numpy()
    return {
        "loss": loss.detach().numpy(),
        "ce": -np.log(p_np),
        "factor": (1 - p_np) ** gamma,
        "grad": grad.numpy(),
        "ce_grad": p_np - 1,
    }


def _shade_well_classified(ax: Axes, label_y: float | None = 0.97) -> None:
    ax.axvspan(0.5, 1.0, color="0.92", zorder=0)
    if label_y is not None:
        ax.text(0.75, label_y, "well-classified\nexamples", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=7, color="0.35")


def plot_focal_loss_curves(
    ax: Axes | None = None, gammas: Sequence[float] = FOCAL_GAMMAS, shade: bool = True
) -> Axes:
    """The paper's Figure 1: focal loss against p_t for several γ (no α), CE being γ = 0.

    Args:
        ax: axes to draw on; ``None`` makes a new figure.
        gammas: the γ values, one curve each.
        shade: shade p_t > 0.5, the "well-classified examples".

    Returns:
        The axes; its lines are the curves, in the order of ``gammas``.
    """
    new_figure = ax is None
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.5))
    p_t = np.linspace(0.001, 0.999, 400)
    for i, gamma in enumerate(gammas):
        loss = focal_loss_vs_pt(p_t, gamma)["loss"]
        name = f"γ = {gamma:g}" + (" (CE)" if gamma == 0 else "")
        ax.plot(p_t, loss, color=_GAMMA_COLORS[i % len(_GAMMA_COLORS)], lw=1.8, label=name)
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


def _format_times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def focal_loss_readout(gamma: float, alpha: float | None = None, p_t: float = 0.9) -> str:
    """The numbers behind the focal loss explorer, as a short HTML text.

    E.g. ``focal_loss_readout(2.0)`` says that at p_t = 0.9 the loss is 100× smaller than CE
    (the modulating factor (1 - 0.9)² = 0.01), and gives the same ratio at p_t = 0.5.
    """
    factor = (1 - p_t) ** gamma
    half = 0.5**gamma
    if gamma == 0:
        first = f"<b>γ = {gamma:.1f}</b>: the focal loss is cross entropy (modulating factor 1 everywhere)."
    else:
        first = (
            f"<b>γ = {gamma:.1f}</b>: at p<sub>t</sub> = {p_t:g} the loss is <b>{_format_times(1 / factor)}</b> "
            f"smaller than CE (modulating factor (1 − p<sub>t</sub>)<sup>γ</sup> = {factor:.3g}); "
            f"at p<sub>t</sub> = 0.5 it is {_format_times(1 / half)} smaller."
        )
    if alpha is None or alpha < 0:
        second = "No α: positives and negatives weigh the same."
    else:
        second = (
            f"<b>α = {alpha:.2f}</b> scales a positive's loss by {alpha:.2f} and a negative's by {1 - alpha:.2f}"
        )
        if alpha > 0:
            second += (
                f": a positive at p<sub>t</sub> = {p_t:g} weighs {_format_times(1 / (alpha * factor))} "
                f"less than under plain CE."
            )
        else:
            second += "."
    return f"<div>{first}<br>{second}</div>"


class _FocalPanels:
    """Three panels (loss with CE, modulating factor, gradient w.r.t. the logit), redrawn in place."""

    def __init__(self, axes: Sequence[Axes], p_mark: float = 0.9):
        self.axes = list(axes)
        self.p_mark = p_mark
        self.p_t = np.linspace(0.001, 0.999, 400)
        ref = focal_loss_vs_pt(self.p_t, 0.0)
        ax_loss, ax_factor, ax_grad = self.axes
        for ax in self.axes:
            _shade_well_classified(ax, label_y=0.5 if ax is ax_loss else None)
            ax.axvline(p_mark, color="0.5", ls=":", lw=1)
            ax.set_xlim(0, 1)
            ax.set_xlabel("$p_t$")
        ax_loss.plot(self.p_t, ref["ce"], color="0.45", ls="--", lw=1.2, label="CE")
        (self.loss_line,) = ax_loss.plot(self.p_t, ref["loss"], color="#2ca02c", lw=2, label="FL")
        (self.loss_dot,) = ax_loss.plot([p_mark], [0.0], "o", color="#2ca02c", ms=4)
        ax_loss.set_ylim(0, 5)
        ax_loss.set_title("loss (a positive example)", fontsize=9)
        ax_loss.legend(fontsize=7, loc="upper right")
        ax_factor.axhline(1.0, color="0.45", ls="--", lw=1.2, label="CE (factor 1)")
        (self.factor_line,) = ax_factor.plot(self.p_t, ref["factor"], color="#9467bd", lw=2, label="FL")
        (self.factor_dot,) = ax_factor.plot([p_mark], [0.0], "o", color="#9467bd", ms=4)
        self.factor_text = ax_factor.text(0.97, 0.6, "", transform=ax_factor.transAxes, ha="right", fontsize=8,
                                          bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        ax_factor.set_ylim(0, 1.05)
        ax_factor.set_title("modulating factor $(1-p_t)^\\gamma$", fontsize=9)
        ax_factor.legend(fontsize=7, loc="lower left")
        ax_grad.plot(self.p_t, ref["ce_grad"], color="0.45", ls="--", lw=1.2, label="CE")
        (self.grad_line,) = ax_grad.plot(self.p_t, ref["grad"], color="#d62728", lw=2, label="FL")
        ax_grad.axhline(0.0, color="0.6", lw=0.8)
        ax_grad.set_ylim(-1.35, 0.05)  # FL's gradient dips below CE's for hard examples: -1.31 at γ = 5
        ax_grad.set_title("gradient d loss / d logit", fontsize=9)
        ax_grad.legend(fontsize=7, loc="lower right")
        self.gamma = self.alpha = None

    def update(self, gamma: float, alpha: float | None) -> None:
        self.gamma, self.alpha = gamma, alpha
        curves = focal_loss_vs_pt(self.p_t, gamma, alpha)
        mark = focal_loss_vs_pt([self.p_mark], gamma, alpha)
        self.loss_line.set_ydata(curves["loss"])
        self.loss_dot.set_ydata(mark["loss"])
        self.factor_line.set_ydata(curves["factor"])
        self.factor_dot.set_ydata(mark["factor"])
        self.factor_text.set_text(f"at $p_t$ = {self.p_mark:g}: {mark['factor'][0]:.3g}")
        self.grad_line.set_ydata(curves["grad"])
        label = f"FL, γ = {gamma:.1f}" + ("" if alpha is None else f", α = {alpha:.2f}")
        self.loss_line.set_label(label)
        self.axes[0].legend(fontsize=7, loc="upper right")


def plot_focal_loss_panels(
    gamma: float = 2.0, alpha: float | None = None, axes: Sequence[Axes] | None = None, p_mark: float = 0.9
) -> Figure:
    """Three panels for one setting: the loss (CE for reference), (1 - p_t)^γ, and d loss / d logit.

    All for a positive example as a function of p_t (:func:`focal_loss_vs_pt`); the static twin of
    :func:`focal_loss_explorer`.

    Args:
        gamma: focusing parameter.
        alpha: the positives' weight, or ``None``.
        axes: three axes to draw on; ``None`` makes a new 1 x 3 figure.
        p_mark: the p_t marked with a dotted line and a dot (0.9, the paper's example).

    Returns:
        The figure.
    """
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    else:
        fig = axes[0].figure
    panels = _FocalPanels(axes, p_mark)
    panels.update(gamma, alpha)
    fig.tight_layout()
    return fig


def _figure_png(fig: Figure) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _gamma_slider(value: float, css_class: str):
    import ipywidgets as widgets

    slider = widgets.FloatSlider(
        value=value, min=0.0, max=5.0, step=0.1, description="γ", continuous_update=False, readout_format=".1f"
    )
    slider.add_class(css_class)
    return slider


def focal_loss_explorer(gamma: float = 2.0, alpha: float = 0.25, use_alpha: bool = False, p_mark: float = 0.9):
    """Sliders for γ and α that redraw the loss, the modulating factor and the gradient.

    Layout (an ``ipywidgets.VBox``): a row of controls (γ slider, α slider, "no α" checkbox), an
    ``HTML`` readout with the numbers for the current setting (:func:`focal_loss_readout`), and the
    three panels of :func:`plot_focal_loss_panels` as an ``Image``. Each change redraws at once
    (the sliders report on release: ``continuous_update=False``).

    For tests, the parts are also attributes of the returned box: ``gamma_slider`` (description
    "γ", CSS class ``focal-gamma``), ``alpha_slider`` (CSS class ``focal-alpha``),
    ``no_alpha`` (the checkbox), ``readout`` (CSS class ``focal-readout``), ``image`` and
    ``figure`` (the matplotlib figure behind the image).

    Args:
        gamma: initial γ, in [0, 5].
        alpha: initial α, in [0, 1].
        use_alpha: start with α on (``False``: the "no α" box is ticked, as in the paper's Figure 1).
        p_mark: the p_t the readout and the dots talk about.

    Returns:
        The ``VBox``.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    gamma_slider = _gamma_slider(gamma, "focal-gamma")
    alpha_slider = widgets.FloatSlider(
        value=alpha, min=0.0, max=1.0, step=0.05, description="α", continuous_update=False,
        readout_format=".2f", disabled=not use_alpha,
    )
    alpha_slider.add_class("focal-alpha")
    no_alpha = widgets.Checkbox(value=not use_alpha, description="no α", indent=False,
                                layout=widgets.Layout(width="80px"))
    readout = widgets.HTML()
    readout.add_class("focal-readout")

    figure = Figure(figsize=(10, 3), dpi=80)
    panels = _FocalPanels(figure.subplots(1, 3), p_mark)
    image = widgets.Image(format="png")

    def redraw(_change: Any = None) -> None:
        current_alpha = None if no_alpha.value else float(alpha_slider.value)
        alpha_slider.disabled = bool(no_alpha.value)
        panels.update(float(gamma_slider.value), current_alpha)
        figure.tight_layout()
        readout.value = focal_loss_readout(float(gamma_slider.value), current_alpha, p_mark)
        image.value = _figure_png(figure)

    for control in (gamma_slider, alpha_slider, no_alpha):
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([gamma_slider, alpha_slider, no_alpha]), readout, image])
    box.add_class("focal-loss-explorer")
    box.gamma_slider, box.alpha_slider, box.no_alpha = gamma_slider, alpha_slider, no_alpha
    box.readout, box.image, box.figure, box.panels = readout, image, figure, panels
    return box


def _loss_groups(logits: Any, targets: Any, easy_threshold: float):
    import torch

    logits = torch.as_tensor(logits).detach().reshape(-1).float()
    targets = torch.as_tensor(targets).detach().reshape(-1).to(logits.dtype)
    if logits.shape != targets.shape:
        raise ValueError(f"loss_shares: {logits.numel()} logits but {targets.numel()} targets")
    positive = targets > 0.5
    p_t = torch.where(positive, torch.sigmoid(logits), torch.sigmoid(-logits))
    easy_negative = ~positive & (p_t > easy_threshold)
    masks = (easy_negative, ~positive & ~easy_negative, positive)
    return logits, targets, masks


def loss_shares(
    logits: Any, targets: Any, gamma: float, alpha: float | None = None, easy_threshold: float = 0.5
) -> dict[str, float]:
    """How the total focal loss splits between easy negatives, hard negatives and positives.

    Args:
        logits: ``[N]`` (any shape, flattened) classifier logits, one per (anchor, class) pair that
            counts in the loss (ignored anchors left out).
        targets: same shape, 1 for the positives, 0 for the negatives.
        gamma: focusing parameter (0: cross entropy).
        alpha: the positives' weight, or ``None``.
        easy_threshold: a negative is easy when its p_t exceeds this (0.5: it is classified right).

    Returns:
        ``{"easy negatives", "hard negatives", "positives"}`` shares of the total (summing to 1),
        plus ``"total"``, the summed loss, and ``"count: <group>"`` the number of entries per group.
    """
    from .losses import sigmoid_focal_loss

    logits, targets, masks = _loss_groups(logits, targets, easy_threshold)
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma).double()
    total = float(loss.sum())
    out = {name: float(loss[mask].sum()) / total for name, mask in zip(LOSS_GROUPS, masks)}
    out["total"] = total
    out.update({f"count: {name}": int(mask.sum()) for name, mask in zip(LOSS_GROUPS, masks)})
    return out


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
                ax.text(x, b + h / 2, f"{h:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if color == _GROUP_COLORS[1] else "black")
        bottom += heights
    ax.set_xticks(positions, [label for label, _ in columns], fontsize=8)
    ax.set_ylim(0, 109)  # head room for the labels of thin top segments
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylabel("share of the total loss (%)")
    handles, labels = ax.get_legend_handles_labels()  # top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def plot_loss_shares(
    logits: Any,
    targets: Any,
    gammas: Sequence[float] = FOCAL_GAMMAS,
    alpha: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Stacked bars: the share of the loss carried by easy negatives, hard negatives and positives, per γ.

    Args:
        logits, targets: as in :func:`loss_shares`.
        gammas: one bar each (γ = 0 is cross entropy).
        alpha: the positives' weight, or ``None``.
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes (bars in ``ax.patches``: group by group, γ by γ).
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3))
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
        f"The total loss is {_format_times(ce['total'] / fl['total'])} smaller."
    )


def loss_share_explorer(logits: Any, targets: Any, gamma: float = 2.0, alpha: float | None = None):
    """A γ slider over two stacked bars: who carries the loss under CE, and under focal loss at γ.

    Layout (an ``ipywidgets.VBox``): the γ slider (description "γ", CSS class ``loss-share-gamma``),
    an ``HTML`` readout (CSS class ``loss-share-readout``, :func:`loss_share_readout`) and the bars
    as an ``Image``. Also attributes of the box: ``gamma_slider``, ``readout``, ``image``,
    ``figure``.

    Args:
        logits, targets: as in :func:`loss_shares`.
        gamma: initial γ, in [0, 5].
        alpha: the positives' weight (the same for CE and FL), or ``None``.

    Returns:
        The ``VBox``.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    logits, targets, _ = _loss_groups(logits, targets, 0.5)
    ce = loss_shares(logits, targets, 0.0, alpha)
    gamma_slider = _gamma_slider(gamma, "loss-share-gamma")
    readout = widgets.HTML()
    readout.add_class("loss-share-readout")
    figure = Figure(figsize=(5.5, 3), dpi=80)
    ax = figure.subplots()
    image = widgets.Image(format="png")

    def redraw(_change: Any = None) -> None:
        g = float(gamma_slider.value)
        fl = loss_shares(logits, targets, g, alpha)
        _draw_share_bars(ax, [("CE (γ = 0)", ce), (f"FL (γ = {g:.1f})", fl)])
        figure.tight_layout()
        readout.value = loss_share_readout(ce, fl, g)
        image.value = _figure_png(figure)

    gamma_slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([gamma_slider, readout, image])
    box.add_class("loss-share-explorer")
    box.gamma_slider, box.readout, box.image, box.figure = gamma_slider, readout, image, figure
    return box


# --- anchors & matching widgets (notebooks 01-02) ---
# Figures and ipywidgets that show anchors on an image (notebook 01) and how they are labelled
# positive / ignored / negative (notebook 02). Each widget has a static twin (``anchor_figure``,
# ``matching_figure``) that draws the same picture, for the figure that precedes the widget in a
# notebook (GitHub does not render widgets). torch, pyplot and ipywidgets are imported inside.

PYRAMID_LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")
"""Names of the paper's pyramid levels, by index into the anchor settings (strides 8..128)."""

# Colours of the three anchor labels in notebook 02's pictures.
MATCH_COLORS = {"positive": "#2ca02c", "ignored": "#ff7f0e", "negative": "#c7c7c7"}
# Positives are coloured by the ground-truth box they match: tab10 without orange and the greys,
# which mean "ignored" and "negative".
_GT_PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#17becf", "#8c564b", "#bcbd22")


def gt_color(index: int) -> str:
    """The colour of ground-truth box ``index`` (and of its positive anchors) in matching pictures."""
    return _GT_PALETTE[int(index) % len(_GT_PALETTE)]


def _scale_label(scale: float) -> str:
    exponent = math.log2(scale) * 3
    if abs(exponent - round(exponent)) < 1e-6:
        k = int(round(exponent))
        return "2^0" if k == 0 else (f"2^({k}/3)" if k % 3 else f"2^{k // 3}")
    return f"{scale:.3g}"


def _level_name(level: int) -> str:
    return PYRAMID_LEVEL_NAMES[level] if 0 <= level < len(PYRAMID_LEVEL_NAMES) else f"level {level}"


def draw_anchor_level(
    ax: Axes,
    image: Any,
    level: int = 0,
    scale_index: int = 0,
    ratio_index: int = 1,
    strides: Sequence[int] | None = None,
    sizes: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    offset: float = 0.0,
    max_boxes: int = 60,
    margin: float = 0.25,
    color_by_location: bool = False,
) -> dict[str, Any]:
    """Draw one pyramid level's anchors of one scale and aspect ratio on an image.

    Every anchor centre of the level is a dot; the anchors of the chosen shape are drawn at an
    evenly thinned subset of the locations (at most ``max_boxes``, all of them when there are
    fewer), and the anchor nearest the image centre is drawn thicker. The view extends ``margin``
    of the image size past each side, so that anchors spilling out of the image show.

    Args:
        ax: matplotlib axes.
        image: see :func:`to_display_array`; its size ``(H, W)`` sets the anchor grid.
        level: index into ``strides``/``sizes`` (0 is P3).
        scale_index: index into ``scales``.
        ratio_index: index into ``aspect_ratios`` (height / width).
        strides, sizes, scales, aspect_ratios, offset: the anchor settings, as in
            :func:`retina_edu.anchors.anchors_per_level`; ``None`` means the paper's.
        max_boxes: most anchors drawn as rectangles.
        margin: how far the view extends past the image, as a fraction of its larger side.
        color_by_location: give each drawn anchor its own colour (tab20), which keeps large
            overlapping anchors apart; by default all have the colour of their aspect ratio.

    Returns:
        ``{"centres": PathCollection, "boxes": [Rectangle], "highlight": Rectangle,
        "anchor": (w, h), "grid": (H_l, W_l)}``.
    """
    import torch
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    from .anchors import (PAPER_ANCHOR_SIZES, PAPER_ASPECT_RATIOS, PAPER_SCALES, PAPER_STRIDES,
                          anchors_per_level)

    strides = tuple(PAPER_STRIDES if strides is None else strides)
    sizes = tuple(PAPER_ANCHOR_SIZES if sizes is None else sizes)
    scales = tuple(PAPER_SCALES if scales is None else scales)
    aspect_ratios = tuple(PAPER_ASPECT_RATIOS if aspect_ratios is None else aspect_ratios)
    for name, index, options in (("level", level, strides), ("scale_index", scale_index, scales),
                                 ("ratio_index", ratio_index, aspect_ratios)):
        if not 0 <= index < len(options):
            raise ValueError(f"draw_anchor_level: {name} must be in 0..{len(options) - 1}, got {index}")
    array = to_display_array(image)
    height, width = array.shape[:2]
    anchors = anchors_per_level((height, width), strides, sizes, scales, aspect_ratios, offset)[level]
    per_location = len(scales) * len(aspect_ratios)
    grid_h, grid_w = math.ceil(height / strides[level]), math.ceil(width / strides[level])
    # anchor index within a location: ratio major, scale minor (retina_edu.anchors' order)
    grid = anchors.view(grid_h, grid_w, per_location, 4)[:, :, ratio_index * len(scales) + scale_index]
    centres = (grid[..., :2] + grid[..., 2:]) / 2

    show_image(ax, array)
    dense = grid_h * grid_w > 400
    dots = ax.scatter(centres[..., 0].reshape(-1).numpy(), centres[..., 1].reshape(-1).numpy(),
                      s=1.5 if dense else 14, c="white", edgecolors="none" if dense else "black",
                      linewidths=0.4, alpha=0.6 if dense else 1.0, zorder=3,
                      label=f"{grid_h * grid_w} anchor centres")
    # Thin the locations evenly in both directions so that at most max_boxes rectangles are drawn.
    step = 1
    while math.ceil(grid_h / step) * math.ceil(grid_w / step) > max(1, max_boxes):
        step += 1
    colour = class_color(ratio_index)
    boxes = []
    for k, (x1, y1, x2, y2) in enumerate(grid[::step, ::step].reshape(-1, 4).tolist()):
        edge = colormaps["tab20"](k % 20) if color_by_location else colour
        boxes.append(ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=edge,
                                            linewidth=1.0, alpha=0.9, zorder=4)))
    flat = grid.reshape(-1, 4)
    centre_distance = ((centres.reshape(-1, 2) - torch.tensor([width / 2, height / 2])) ** 2).sum(-1)
    x1, y1, x2, y2 = flat[int(centre_distance.argmin())].tolist()
    highlight = ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2.5,
                                       zorder=5))
    pad = margin * max(height, width)
    ax.set_xlim(-pad, width + pad)
    ax.set_ylim(height + pad, -pad)
    ax.set_axis_on()
    ax.set_facecolor("#e8e8e8")
    ax.tick_params(labelsize=7)
    anchor_w, anchor_h = x2 - x1, y2 - y1
    size = sizes[level] * scales[scale_index]
    suffix = "th" if 10 <= step % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    shown = "all locations" if step == 1 else f"every {step}{suffix} location"
    ax.set_title(
        f"{_level_name(level)} (stride {strides[level]}, grid {grid_h}x{grid_w}): size {sizes[level]:g}·"
        f"{_scale_label(scales[scale_index])} = {size:.1f} px, h/w {aspect_ratios[ratio_index]:g}\n"
        f"anchor {anchor_w:.1f} x {anchor_h:.1f} px, drawn at {shown}", fontsize=8)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    return {"centres": dots, "boxes": boxes, "highlight": highlight, "anchor": (anchor_w, anchor_h),
            "grid": (grid_h, grid_w)}


def _new_figure(figsize: tuple[float, float], pyplot: bool) -> Figure:
    """A pyplot figure (shown inline by Jupyter) or a bare ``Figure`` (for a widget's ``Image``)."""
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _live_figure(box: Any, picture: Any, controls: dict[str, Any], draw: Callable[[Any], Figure | None]) -> Any:
    """Show ``draw(change)``'s figure in ``picture`` now and again whenever a control changes.

    ``box`` gets ``.controls``, ``.image`` (the ``Image`` widget), ``.figure`` (the figure last
    drawn) and ``.draw_count``. ``draw`` may return None to skip a redraw."""
    box.controls, box.image, box.draw_count = controls, picture, 0

    def redraw(change: Any = None) -> None:
        fig = draw(change)
        if fig is None:
            return
        box.figure = fig
        box.draw_count += 1
        picture.value = _figure_png(fig)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return box


def anchor_figure(image: Any, level: int = 0, scale_index: int = 0, ratio_index: int = 1,
                  figsize: tuple[float, float] = (5, 5), pyplot: bool = True, **kwargs: Any) -> Figure:
    """A figure of :func:`draw_anchor_level` (the static twin of :func:`anchor_explorer`).

    Args:
        image: the image the anchors are drawn on.
        level, scale_index, ratio_index: which anchors (see :func:`draw_anchor_level`).
        figsize: figure size in inches.
        pyplot: make it with pyplot (so that Jupyter shows it); ``False`` makes a bare ``Figure``.
        **kwargs: more arguments of :func:`draw_anchor_level` (strides, sizes, ..., max_boxes).
    """
    fig = _new_figure(figsize, pyplot)
    draw_anchor_level(fig.add_subplot(), image, level, scale_index, ratio_index, **kwargs)
    fig.tight_layout()
    return fig


def anchor_explorer(
    image: Any,
    strides: Sequence[int] | None = None,
    sizes: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    offset: float = 0.0,
    level: int = 0,
    scale_index: int = 0,
    ratio_index: int = 1,
    figsize: tuple[float, float] = (5, 5),
    max_boxes: int = 30,
) -> Any:
    """A widget that picks a pyramid level, an anchor scale and an aspect ratio, and redraws the anchors.

    Args:
        image: the image the anchors are drawn on (e.g. matplotlib's ``grace_hopper.jpg``).
        strides, sizes, scales, aspect_ratios, offset: the anchor settings (``None``: the paper's).
        level, scale_index, ratio_index: what is shown first.
        figsize: figure size in inches.
        max_boxes: most anchors drawn as rectangles (see :func:`draw_anchor_level`).

    Returns:
        An ``ipywidgets.VBox``: the controls (``.controls``: level, scale, ratio) above an ``Image``
        (``.image``) of the figure. ``.figure`` is the figure last drawn and ``.draw_count`` counts
        redraws. The figure travels as PNG bytes in the ``Image`` widget, not through an ``Output``
        widget, so the saved notebook keeps it and executing the notebook headless stays simple.
    """
    import ipywidgets as widgets

    from .anchors import PAPER_ANCHOR_SIZES, PAPER_ASPECT_RATIOS, PAPER_SCALES, PAPER_STRIDES

    strides = tuple(PAPER_STRIDES if strides is None else strides)
    sizes = tuple(PAPER_ANCHOR_SIZES if sizes is None else sizes)
    scales = tuple(PAPER_SCALES if scales is None else scales)
    aspect_ratios = tuple(PAPER_ASPECT_RATIOS if aspect_ratios is None else aspect_ratios)
    style = {"description_width": "50px"}
    level_w = widgets.Dropdown(
        options=[(f"{_level_name(i)} (stride {s})", i) for i, s in enumerate(strides)], value=level,
        description="level", style=style, layout=widgets.Layout(width="180px"))
    scale_w = widgets.SelectionSlider(
        options=[(_scale_label(k), i) for i, k in enumerate(scales)], value=scale_index, description="scale",
        continuous_update=False, style=style)
    ratio_w = widgets.SelectionSlider(
        options=[(f"{r:g}", i) for i, r in enumerate(aspect_ratios)], value=ratio_index, description="h/w",
        continuous_update=False, style=style)
    picture = widgets.Image(format="png")
    box = widgets.VBox([widgets.HBox([level_w, scale_w, ratio_w]), picture])

    def draw(change: Any) -> Figure:
        return anchor_figure(image, level_w.value, scale_w.value, ratio_w.value, figsize=figsize, pyplot=False,
                             strides=strides, sizes=sizes, scales=scales, aspect_ratios=aspect_ratios,
                             offset=offset, max_boxes=max_boxes)

    return _live_figure(box, picture, {"level": level_w, "scale": scale_w, "ratio": ratio_w}, draw)


def match_counts(matches: Any) -> dict[str, int]:
    """How many anchors are positive (``>= 0``), ignored (``-2``) and negative (``-1``).

    Args:
        matches: ``[A]`` matched box index per anchor, as returned by
            :func:`retina_edu.matching.match_anchors`.
    """
    m = _to_numpy(matches).reshape(-1)
    return {"positive": int((m >= 0).sum()), "ignored": int((m == -2).sum()), "negative": int((m == -1).sum())}


def draw_matching(
    ax: Axes,
    image: Any,
    anchors: Any,
    gt_boxes: Any,
    matches: Any,
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
        matches: ``[A]``: box index, ``-1`` negative, ``-2`` ignored (:func:`retina_edu.matching.match_anchors`).
        ignored_boxes: draw the ignored anchors as dashed boxes too, not only their centres.
        negative_alpha: opacity of the negatives' dots.

    Returns:
        ``{"gt": [Rectangle] (two per box: a white halo and the colour), "positive": [Rectangle],
        "positive_centres": PathCollection, "ignored": PathCollection, "ignored_boxes": [Rectangle],
        "negative": PathCollection, "counts": match_counts(matches)}``.
    """
    from matplotlib.patches import Rectangle

    anchors_np = _boxes_xyxy(anchors, "xyxy")
    gt_np = _boxes_xyxy(gt_boxes, "xyxy")
    m = _to_numpy(matches).reshape(-1).astype(np.int64)
    if len(m) != len(anchors_np):
        raise ValueError(f"draw_matching: {len(anchors_np)} anchors but {len(m)} matches")
    show_image(ax, image)
    height, width = to_display_array(image).shape[:2]
    centres = (anchors_np[:, :2] + anchors_np[:, 2:]) / 2
    negative_centres = np.unique(np.round(centres[m == -1], 3), axis=0).reshape(-1, 2)
    negatives = ax.scatter(negative_centres[:, 0], negative_centres[:, 1], s=4, c="white",
                           alpha=min(1.0, 2 * negative_alpha), linewidths=0, zorder=2, label="negative (centres)")
    ignored_centres = np.unique(np.round(centres[m == -2], 3), axis=0).reshape(-1, 2)
    ignored = ax.scatter(ignored_centres[:, 0], ignored_centres[:, 1], s=18, marker="x", c=MATCH_COLORS["ignored"],
                         linewidths=1.0, zorder=4, label="ignored (centres)")
    dashed = []
    if ignored_boxes:
        for x1, y1, x2, y2 in anchors_np[m == -2]:
            dashed.append(ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linestyle="--",
                                                 edgecolor=MATCH_COLORS["ignored"], linewidth=0.7, alpha=0.7)))
    positives = []
    for i in np.flatnonzero(m >= 0):
        x1, y1, x2, y2 = anchors_np[i]
        positives.append(ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=gt_color(m[i]),
                                                linewidth=0.6, alpha=0.6, zorder=3)))
    # A dot at each positive's centre (one per location and object), so that the positives of small
    # objects, whose boxes pile up, can still be told apart.
    pos_keys = np.unique(np.column_stack([np.round(centres[m >= 0], 3), m[m >= 0]]), axis=0).reshape(-1, 3)
    positive_centres = ax.scatter(pos_keys[:, 0], pos_keys[:, 1], s=10, c=[gt_color(int(j)) for j in pos_keys[:, 2]],
                                  edgecolors="white", linewidths=0.5, zorder=4, label="positive (centres)")
    gts = []
    for j, (x1, y1, x2, y2) in enumerate(gt_np):
        gts.append(ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=3.4,
                                          zorder=5)))
        gts.append(ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=gt_color(j), linewidth=2.0,
                                          zorder=6)))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    return {"gt": gts, "positive": positives, "positive_centres": positive_centres, "ignored": ignored,
            "ignored_boxes": dashed, "negative": negatives, "counts": match_counts(m)}


def matching_figure(
    image: Any,
    anchors: Any,
    gt_boxes: Any,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    figsize: tuple[float, float] = (10, 4.8),
    pyplot: bool = True,
) -> Figure:
    """Label the anchors of one image with :func:`retina_edu.matching.match_anchors` and draw the result.

    Left: :func:`draw_matching`. Right: every anchor's best IoU with any box, as a histogram (log
    counts) stacked by the label the anchor got, with the two thresholds as lines; low-quality
    matches show as positives left of the ``fg_iou`` line.

    Args:
        image: see :func:`to_display_array`.
        anchors: ``Tensor[A, 4]`` xyxy.
        gt_boxes: ``Tensor[M, 4]`` xyxy.
        fg_iou: IoU at or above which an anchor is positive.
        bg_iou: IoU below which an anchor is negative (``bg_iou <= fg_iou``).
        allow_low_quality: also give each box its best anchor(s).
        figsize: figure size in inches.
        pyplot: make it with pyplot (so that Jupyter shows it); ``False`` makes a bare ``Figure``.

    Returns:
        The figure; ``fig.match_counts`` holds :func:`match_counts` of the labelling.
    """
    import torch

    from .boxes import box_iou
    from .matching import match_anchors

    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    matches = match_anchors(anchors, gt_boxes, fg_iou, bg_iou, allow_low_quality)
    if len(gt_boxes):
        best_iou = box_iou(gt_boxes, anchors).max(dim=0).values.numpy()
    else:
        best_iou = np.zeros(len(anchors))
    m = matches.numpy()

    fig = _new_figure(figsize, pyplot)
    ax_img, ax_hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    drawn = draw_matching(ax_img, image, anchors, gt_boxes, matches)
    counts = drawn["counts"]
    ratio = counts["negative"] / max(counts["positive"], 1)
    ax_img.set_title(f"{counts['positive']} positive · {counts['ignored']} ignored · {counts['negative']} negative\n"
                     f"(1 positive : {ratio:.0f} negatives)", fontsize=8)
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    object_colours = tuple(Line2D([], [], color=gt_color(j), linewidth=2) for j in range(max(1, min(len(gt_boxes), 4))))
    handles = [
        object_colours,
        Line2D([], [], color=MATCH_COLORS["ignored"], marker="x", linestyle="none"),
        Line2D([], [], color="white", marker="o", markersize=3, markeredgecolor="0.4", linestyle="none"),
    ]
    labels = ["one colour per object: its box (thick), its positive anchors (thin), their centres (dots)",
              "ignored anchors (centres)", "negative anchors (centres: one dot per location of 9 anchors)"]
    ax_img.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, loc="upper left",
                  bbox_to_anchor=(0.0, -0.01), ncol=1, fontsize=7, frameon=False, handlelength=3.0)
    bins = np.linspace(0, 1, 51)
    groups = [(best_iou[m == -1], "negative"), (best_iou[m == -2], "ignored"), (best_iou[m >= 0], "positive")]
    ax_hist.hist([g for g, _ in groups], bins=bins, stacked=True, log=True,
                 color=[MATCH_COLORS[name] for _, name in groups],
                 label=[f"{name} ({len(g)})" for g, name in groups])
    ax_hist.axvline(bg_iou, color="k", linestyle=":", linewidth=1.2, label=f"bg_iou = {bg_iou:.2f}")
    ax_hist.axvline(fg_iou, color="k", linestyle="--", linewidth=1.2, label=f"fg_iou = {fg_iou:.2f}")
    ax_hist.set_xlim(0, 1)
    ax_hist.set_ylim(bottom=0.4)
    # Low-quality positives (IoU < fg_iou) sit on top of thousands of negatives: invisible on a log
    # scale, so mark them under the bars.
    low_quality = best_iou[(m >= 0) & (best_iou < fg_iou)]
    if len(low_quality):
        ax_hist.scatter(low_quality, np.full(len(low_quality), 0.55), marker="^", s=45, c=MATCH_COLORS["positive"],
                        edgecolors="black", linewidths=0.6, zorder=5, clip_on=False)
        lo, hi = float(low_quality.min()), float(low_quality.max())
        span = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}"
        plural = "s" if len(low_quality) != 1 else ""
        note = (f"▲ {len(low_quality)} low-quality positive{plural} (IoU {span}):\n"
                f"stacked on the negatives of {'their' if plural else 'its'} bin,\ntoo few to see on a log scale")
        ax_hist.annotate(note, xy=(float(np.median(low_quality)), 0.55),
                         xytext=(0.98, 0.97), textcoords="axes fraction", fontsize=7, ha="right", va="top",
                         arrowprops={"arrowstyle": "->", "color": "0.25", "lw": 0.8, "shrinkB": 5},
                         bbox={"facecolor": "white", "edgecolor": "0.6", "pad": 2})
    ax_hist.set_xlabel("best IoU of the anchor with any box")
    ax_hist.set_ylabel("anchors (log scale)")
    low = "with" if allow_low_quality else "without"
    ax_hist.set_title(f"{len(m)} anchors, {low} low-quality matches", fontsize=8)
    ax_hist.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.match_counts = counts
    return fig


def matching_explorer(
    image: Any,
    anchors: Any,
    gt_boxes: Any,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    figsize: tuple[float, float] = (10, 4.8),
) -> Any:
    """A widget with the two IoU thresholds and the low-quality switch that redraws :func:`matching_figure`.

    The sliders keep ``bg_iou <= fg_iou``: moving one past the other drags the other along.

    Args:
        image, anchors, gt_boxes: as in :func:`matching_figure`.
        fg_iou, bg_iou, allow_low_quality: the first setting shown.
        figsize: figure size in inches.

    Returns:
        An ``ipywidgets.VBox``: the controls (``.controls``: fg_iou, bg_iou, low_quality) above an
        ``Image`` (``.image``) of the figure; ``.figure`` is the figure last drawn, ``.draw_count``
        counts redraws.
    """
    import ipywidgets as widgets

    style = {"description_width": "60px"}
    fg_w = widgets.FloatSlider(value=fg_iou, min=0.05, max=0.95, step=0.05, description="fg IoU",
                               continuous_update=False, readout_format=".2f", style=style)
    bg_w = widgets.FloatSlider(value=bg_iou, min=0.0, max=0.95, step=0.05, description="bg IoU",
                               continuous_update=False, readout_format=".2f", style=style)
    low_w = widgets.Checkbox(value=allow_low_quality, description="low-quality matches", indent=False)
    picture = widgets.Image(format="png")
    box = widgets.VBox([widgets.HBox([fg_w, bg_w, low_w]), picture])
    busy = {"on": False}  # one redraw when a slider drags the other along

    def draw(change: Any) -> Figure | None:
        if busy["on"]:
            return None
        busy["on"] = True
        try:
            if change is not None and change["owner"] is fg_w and bg_w.value > fg_w.value:
                bg_w.value = fg_w.value
            elif change is not None and change["owner"] is bg_w and bg_w.value > fg_w.value:
                fg_w.value = bg_w.value
        finally:
            busy["on"] = False
        return matching_figure(image, anchors, gt_boxes, fg_w.value, bg_w.value, low_w.value, figsize=figsize,
                               pyplot=False)

    return _live_figure(box, picture, {"fg_iou": fg_w, "bg_iou": bg_w, "low_quality": low_w}, draw)


# ---------------------------------------------------------------------------------------------
# --- network and inference figures (notebooks 04-06) ---
# ---------------------------------------------------------------------------------------------
def _chw(feature: Any) -> np.ndarray:
    """A feature map as a float ``[C, H, W]`` array (accepts ``[1, C, H, W]``, ``[C, H, W]``, ``[H, W]``)."""
    array = _to_numpy(feature).astype(np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"show_feature_maps: a feature map must be [C, H, W] or [1, C, H, W], got {array.shape}")
    return array


def _normalised(panel: np.ndarray) -> np.ndarray:
    low, high = float(panel.min()), float(panel.max())
    return (panel - low) / (high - low) if high > low else np.zeros_like(panel)


def show_feature_maps(
    features: Sequence[Any],
    names: Sequence[str] | None = None,
    channels: int = 3,
    strides: Sequence[int] | None = None,
    cmap: str = "magma",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw feature maps side by side: one column per map, the channel average on top.

    Row 0 shows the mean absolute activation over all channels; the rows below show the
    ``channels`` channels whose values vary most over the image (the least boring ones). Every
    panel is scaled to its own range and drawn at the same size, so the loss of resolution from
    level to level is what the eye sees.

    Args:
        features: ``Tensor[C, H, W]`` (or ``[1, C, H, W]``) per map, e.g. C3-C5 and P3-P7.
        names: a title per map (default ``"0"``, ``"1"``, ...); the shape is added below it.
        channels: individual channels shown under the average.
        strides: optional stride per map, added to the title.
        cmap: matplotlib colour map.
        figsize: default 1.25 in per panel.

    Returns:
        The figure; ``fig.axes`` holds ``(channels + 1) x len(features)`` panels, row-major.
    """
    import matplotlib.pyplot as plt

    arrays = [_chw(f) for f in features]
    if not arrays:
        raise ValueError("show_feature_maps: no feature maps given")
    if names is not None and len(names) != len(arrays):
        raise ValueError(f"show_feature_maps: {len(arrays)} feature maps but {len(names)} names")
    if strides is not None and len(strides) != len(arrays):
        raise ValueError(f"show_feature_maps: {len(arrays)} feature maps but {len(strides)} strides")
    if channels < 0:
        raise ValueError(f"show_feature_maps: channels must be >= 0, got {channels}")
    rows, cols = channels + 1, len(arrays)
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (1.25 * cols, 1.25 * rows + 0.4), squeeze=False)
    for j, array in enumerate(arrays):
        c, h, w = array.shape
        title = names[j] if names is not None else str(j)
        title += f"\n{c}×{h}×{w}" + (f", s={strides[j]}" if strides is not None else "")
        spread = array.reshape(c, -1).std(axis=1)
        picked = np.argsort(-spread, kind="stable")[:channels]
        panels = [("mean |x|", np.abs(array).mean(axis=0))] + [(f"ch {k}", array[k]) for k in picked]
        for i in range(rows):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(panels):  # fewer channels than rows
                ax.set_axis_off()
                continue
            label, panel = panels[i]
            ax.imshow(_normalised(panel), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.text(0.03, 0.03, label, transform=ax.transAxes, fontsize=7.5, color="white", va="bottom",
                    bbox={"facecolor": "black", "alpha": 0.65, "pad": 1.0, "edgecolor": "none"})
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def _level_colors(n: int) -> list[tuple[float, float, float, float]]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.1, 0.85, n)]


def plot_level_assignment(
    sizes: Any,
    levels: Any,
    covered: Any = None,
    level_names: Sequence[str] = ("P3", "P4", "P5", "P6", "P7"),
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    bins: int = 24,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Stacked histogram of object sizes, coloured by the pyramid level each object is assigned to.

    Args:
        sizes: ``[N]`` object sizes, ``sqrt(w * h)`` in pixels (the x axis is logarithmic).
        levels: ``[N]`` level index ``0..len(level_names) - 1`` of each object (0 is P3).
        covered: optional ``[N]`` bool, whether some anchor reaches IoU 0.5 with the object;
            objects that are not are stacked on top in grey ("low-quality match only").
        level_names: the names of the levels, in order.
        anchor_sizes: optional anchor sizes per level (``sqrt`` of their areas); each level's
            range is drawn as a bar under the histogram in the level's colour.
        bins: number of logarithmic bins.
        ax: axes to draw on; ``None`` makes a new figure.
        title: optional title.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    sizes_np = _to_numpy(sizes).reshape(-1).astype(np.float64)
    levels_np = _to_numpy(levels).reshape(-1).astype(np.int64)
    if len(sizes_np) != len(levels_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(levels_np)} levels")
    if len(levels_np) and (levels_np.min() < 0 or levels_np.max() >= len(level_names)):
        raise ValueError(f"plot_level_assignment: levels must be in [0, {len(level_names)}), got "
                         f"{levels_np.min()}..{levels_np.max()}")
    if np.any(sizes_np <= 0):
        raise ValueError("plot_level_assignment: sizes must be positive (the axis is logarithmic)")
    covered_np = np.ones(len(sizes_np), bool) if covered is None else _to_numpy(covered).reshape(-1).astype(bool)
    if len(covered_np) != len(sizes_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(covered_np)} covered flags")
    if ax is None:
        _, ax = plt.subplots()
    low = sizes_np.min() if len(sizes_np) else 1.0
    high = sizes_np.max() if len(sizes_np) else 2.0
    if anchor_sizes is not None:
        low = min(low, min(min(s) for s in anchor_sizes))
        high = max(high, max(max(s) for s in anchor_sizes))
    edges = np.geomspace(low / 1.05, high * 1.05, bins + 1)
    colors = _level_colors(len(level_names))
    groups, group_colors, group_labels = [], [], []
    for k, name in enumerate(level_names):
        pick = (levels_np == k) & covered_np
        groups.append(sizes_np[pick])
        group_colors.append(colors[k])
        group_labels.append(f"{name} ({int(pick.sum())})")
    if covered is not None:
        groups.append(sizes_np[~covered_np])
        group_colors.append((0.7, 0.7, 0.7, 1.0))
        group_labels.append(f"best IoU < 0.5 ({int((~covered_np).sum())})")
    ax.hist(groups, bins=edges, stacked=True, color=group_colors, label=group_labels, edgecolor="white", linewidth=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("object size √(wh), pixels")
    ax.set_ylabel("objects")
    top = ax.get_ylim()[1] * 1.35  # head room for the legend above the bars
    ax.set_ylim(0, top)
    if anchor_sizes is not None:
        for k, level_sizes in enumerate(anchor_sizes):
            y = -top * (0.04 + 0.025 * k)
            ax.plot([min(level_sizes), max(level_sizes)], [y, y], color=colors[k], lw=3, solid_capstyle="butt",
                    marker="|", markersize=6)
        ticks = [t for t in ax.get_yticks() if 0 <= t <= top]
        ax.set_ylim(-top * (0.06 + 0.025 * len(anchor_sizes)), top)
        ax.set_yticks(ticks)
        ax.axhline(0, color="black", lw=0.5)
        ax.text(0.01, 0.01, "anchor sizes per level", transform=ax.transAxes, fontsize=6, va="bottom")
    ax.legend(fontsize=7, loc="upper center", ncol=3, columnspacing=1.0, handlelength=1.2, borderaxespad=0.3)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def plot_loss_curves(
    curves: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    title: str | None = None,
    logy: bool = True,
    xlabel: str = "step",
    ylabel: str = "loss",
    colors: Mapping[str, Any] | None = None,
) -> Axes:
    """Loss against step for several runs; a run that turns NaN or inf is marked where it did.

    Args:
        curves: ``{label: [loss at step 0, 1, ...]}``.
        ax: axes to draw on; ``None`` makes a new figure.
        title: optional title.
        logy: logarithmic y axis (losses that differ by orders of magnitude).
        xlabel, ylabel: axis labels.
        colors: optional colour per label.

    Returns:
        The axes. A run with a non-finite value is drawn up to its last finite one, with a red
        ``×`` there and "NaN at step k" (or "inf") in its legend entry.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    for i, (label, values) in enumerate(curves.items()):
        y = np.asarray([float(v) for v in values], dtype=np.float64)
        x = np.arange(len(y))
        bad = np.flatnonzero(~np.isfinite(y))
        color = (colors or {}).get(label, _PALETTE[i % len(_PALETTE)])
        if len(bad):
            first = int(bad[0])
            what = "NaN" if np.isnan(y[first]) else "inf"
            label = f"{label}: {what} at step {first}"
            y, x = y[:first], x[:first]
        ax.plot(x, y, color=color, lw=1.3, label=label)
        if len(bad) and len(y):
            ax.plot(x[-1], y[-1], marker="x", color="red", markersize=9, mew=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def show_level_maps(
    maps: Sequence[Any],
    image: Any = None,
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

    arrays = [_to_numpy(m).astype(np.float32) for m in maps]
    if not arrays or any(a.ndim != 2 for a in arrays):
        raise ValueError("show_level_maps: expected a non-empty list of [H, W] maps")
    names = list(names) if names is not None else [f"P{3 + i}" for i in range(len(arrays))]
    if len(names) != len(arrays):
        raise ValueError(f"show_level_maps: {len(arrays)} maps but {len(names)} names")
    fig, axes = plt.subplots(1, len(arrays), figsize=figsize or (2 * len(arrays) + 0.6, 2.3), squeeze=False)
    picture = None
    if image is not None:
        picture = to_display_array(image)
        height, width = picture.shape[:2]
    for ax, array, name in zip(axes[0], arrays, names):
        h, w = array.shape
        extent = (0, width, height, 0) if picture is not None else (0, w, h, 0)
        if picture is not None:
            show_image(ax, picture)
        handle = ax.imshow(array, cmap=cmap, vmin=0, vmax=vmax if vmax is not None else max(float(array.max()), 1e-12),
                           alpha=alpha if picture is not None else 1.0, extent=extent, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{name} ({h}×{w}), max {array.max():.2f}", fontsize=8)
    fig.colorbar(handle, ax=list(axes[0]), shrink=0.8, fraction=0.02)
    return fig


def _nms_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, iou_thresh: float) -> np.ndarray:
    import torch
    from torchvision.ops import batched_nms

    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    groups = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else torch.from_numpy(labels)
    keep = batched_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), groups, float(iou_thresh))
    return keep.numpy()


def draw_nms(
    ax: Axes,
    image: Any,
    boxes: Any,
    scores: Any,
    labels: Any = None,
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
    boxes_np = _boxes_xyxy(boxes, "xyxy")
    scores_np = _to_numpy(scores).reshape(-1).astype(np.float64)
    labels_np = None if labels is None else _to_numpy(labels).reshape(-1).astype(np.int64)
    if len(scores_np) != len(boxes_np) or (labels_np is not None and len(labels_np) != len(boxes_np)):
        raise ValueError(f"draw_nms: {len(boxes_np)} boxes, {len(scores_np)} scores"
                         + ("" if labels_np is None else f", {len(labels_np)} labels"))
    show = scores_np >= score_thresh
    boxes_np, scores_np = boxes_np[show], scores_np[show]
    labels_np = None if labels_np is None else labels_np[show]
    if iou_thresh is None:
        keep = np.argsort(-scores_np, kind="stable")
    else:
        keep = _nms_keep(boxes_np, scores_np, labels_np, iou_thresh)
    suppressed = np.setdiff1d(np.arange(len(boxes_np)), keep)
    from matplotlib.patches import Rectangle

    show_image(ax, image)
    height, width = to_display_array(image).shape[:2]
    for x1, y1, x2, y2 in boxes_np[suppressed]:
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=(0.85, 0.85, 0.85),
                               linewidth=0.6, linestyle="--"))
    kept_labels = None if labels_np is None else labels_np[keep]
    if captions:
        draw_boxes(ax, boxes_np[keep], labels=kept_labels, scores=scores_np[keep], class_names=class_names,
                   linewidth=1.2, fontsize=6)
    else:  # colour by class, no text
        colors = _DEFAULT_COLOR if kept_labels is None else [class_color(label) for label in kept_labels]
        draw_boxes(ax, boxes_np[keep], colors=colors, linewidth=1.2)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    counts = {"candidates": int(len(boxes_np)), "kept": int(len(keep))}
    text = f"{counts['candidates']} boxes ≥ {score_thresh:g}" + (
        "" if iou_thresh is None else f" → NMS {iou_thresh:g} → {counts['kept']}")
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=8)
    return counts


def nms_explorer(
    image: Any,
    boxes: Any,
    scores: Any,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
    figsize: tuple[float, float] = (4.5, 4.5),
) -> Any:
    """Sliders for the NMS IoU threshold and the score threshold over :func:`draw_nms`.

    Low IoU thresholds suppress neighbouring objects too; high ones let duplicates through; the
    score threshold hides the weak candidates before NMS sees them.

    Returns:
        An ``ipywidgets.VBox`` of the two sliders (``.controls``: ``"iou"``, ``"score"``), an ``HTML``
        readout (``.readout``) and the figure as an ``Image`` (``.image``); ``.counts`` holds the
        last :func:`draw_nms` result and ``.figure`` the matplotlib figure.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    style = {"description_width": "90px"}
    iou_w = widgets.FloatSlider(value=iou_thresh, min=0.05, max=1.0, step=0.05, description="NMS IoU",
                                continuous_update=False, readout_format=".2f", style=style)
    score_w = widgets.FloatSlider(value=score_thresh, min=0.0, max=0.95, step=0.05, description="score ≥",
                                  continuous_update=False, readout_format=".2f", style=style)
    readout = widgets.HTML()
    image_w = widgets.Image(format="png")
    figure = Figure(figsize=figsize, dpi=80)
    ax = figure.subplots()
    box = widgets.VBox([widgets.HBox([iou_w, score_w]), readout, image_w])
    box.controls = {"iou": iou_w, "score": score_w}
    box.readout, box.image, box.figure = readout, image_w, figure

    def redraw(_change: Any = None) -> None:
        ax.clear()
        box.counts = draw_nms(ax, image, boxes, scores, labels, float(iou_w.value), float(score_w.value), class_names)
        figure.tight_layout()
        readout.value = (f"<b>{box.counts['candidates']}</b> candidates with score ≥ {score_w.value:.2f} → "
                         f"<b>{box.counts['kept']}</b> after NMS at IoU {iou_w.value:.2f}")
        image_w.value = _figure_png(figure)

    for control in (iou_w, score_w):
        control.observe(redraw, names="value")
    redraw()
    return box


# ---------------------------------------------------------------------------------------------
# --- ablation figures (notebook 09) ---
# ---------------------------------------------------------------------------------------------
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
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    for i, (label, vals) in enumerate(values.items()):
        v = np.asarray([float(x) for x in vals], dtype=np.float64)
        ok = v[np.isfinite(v)]
        color = (colors or {}).get(label, _PALETTE[i % len(_PALETTE)])
        if len(ok):
            ax.bar(i, ok.mean(), color=color, alpha=0.55, width=0.7)
            ax.plot([i, i], [ok.min(), ok.max()], color="black", lw=1)
            ax.plot(np.full(len(ok), i) + np.linspace(-0.12, 0.12, len(ok)), ok, "o", color=color, mec="black",
                    mew=0.5, ms=4)
        if len(ok) < len(v):
            ax.text(i, 0, f"{len(v) - len(ok)} diverged", ha="center", va="bottom", fontsize=6, rotation=90)
        if reference and label in reference:
            ax.plot([i - 0.35, i + 0.35], [reference[label]] * 2, color="black", lw=2)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def plot_loss_cdfs(
    curves: Mapping[Any, tuple[Any, Any]],
    ax: Axes | None = None,
    title: str | None = None,
    label_format: str = "γ = {}",
) -> Axes:
    """The paper's Figure 4: cumulative normalised loss against the fraction of samples.

    Args:
        curves: ``{γ: (fraction, cumulative)}`` as :func:`retina_edu.ablations.loss_cdf` returns
            them, in the order to draw.
        ax: axes to draw on; ``None`` makes a new figure.
        title: e.g. "negative anchors".
        label_format: legend text for a key.

    Returns:
        The axes; the diagonal (every sample carrying the same loss) is drawn dotted.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(1, len(curves))))
    for color, (key, (fraction, cumulative)) in zip(colors, curves.items()):
        x = np.concatenate([[0.0], _to_numpy(fraction).astype(np.float64)])
        y = np.concatenate([[0.0], _to_numpy(cumulative).astype(np.float64)])
        ax.plot(x, y, color=color, lw=1.5, label=label_format.format(key))
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("fraction of samples (sorted by loss)")
    ax.set_ylabel("cumulative normalised loss")
    ax.legend(fontsize=7, loc="upper left")
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def _cdf_arrays(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.sort(np.asarray(losses, dtype=np.float64))
    total = s.sum()
    cum = np.cumsum(s) / total if total > 0 else np.zeros_like(s)
    return np.concatenate([[0.0], np.arange(1, len(s) + 1) / len(s)]), np.concatenate([[0.0], cum])


def _anchor_focal_losses(positive: Any, negative: Any, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor focal loss (no α): the true class of each positive, the K classes of each negative summed."""
    import torch

    from .losses import sigmoid_focal_loss

    pos = torch.as_tensor(positive).double()
    neg = torch.as_tensor(negative).double()
    pos_loss = sigmoid_focal_loss(pos, torch.ones_like(pos), alpha=None, gamma=gamma)
    neg_loss = sigmoid_focal_loss(neg, torch.zeros_like(neg), alpha=None, gamma=gamma)
    if neg_loss.dim() > 1:
        neg_loss = neg_loss.sum(dim=-1)
    return pos_loss.numpy(), neg_loss.numpy()


def _hardest_share_np(losses: np.ndarray, fraction: float) -> float:
    k = max(1, math.ceil(fraction * len(losses) - 1e-9))
    return float(np.sort(losses)[-k:].sum() / losses.sum())


def loss_cdf_explorer(positive: Any, negative: Any, gamma: float = 2.0, figsize: tuple[float, float] = (9, 3.4)):
    """A γ slider over the paper's Figure 4 for one trained model's anchors.

    Args:
        positive: ``[P]`` logits of the positive anchors' true classes.
        negative: ``[N, K]`` (or ``[N]``) logits of negative anchors.
        gamma: the slider's start.
        figsize: of the two panels (positives, negatives).

    Returns:
        An ``ipywidgets.VBox`` (slider, readout, image) with ``.controls["gamma"]``, ``.readout``,
        ``.figure`` and ``.shares`` (the hardest 10 % of each group's share of its loss at the
        slider's γ). The γ = 0 (cross entropy) curve stays in grey for reference.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    gamma_w = widgets.FloatSlider(value=gamma, min=0.0, max=5.0, step=0.5, description="γ", continuous_update=False,
                                  readout_format=".1f")
    readout = widgets.HTML()
    image_w = widgets.Image(format="png")
    figure = Figure(figsize=figsize, dpi=80)
    axes = figure.subplots(1, 2)
    ce = _anchor_focal_losses(positive, negative, 0.0)
    box = widgets.VBox([gamma_w, readout, image_w])
    box.controls, box.readout, box.image, box.figure = {"gamma": gamma_w}, readout, image_w, figure

    def redraw(_change: Any = None) -> None:
        g = float(gamma_w.value)
        fl = _anchor_focal_losses(positive, negative, g)
        box.shares = {}
        for ax, name, ref, cur in zip(axes, ("positive", "negative"), ce, fl):
            ax.clear()
            ax.plot(*_cdf_arrays(ref), color="0.6", lw=1.2, label="γ = 0 (CE)")
            ax.plot(*_cdf_arrays(cur), color="#d62728", lw=1.8, label=f"γ = {g:.1f}")
            ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
            ax.axvline(0.9, color="0.8", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("fraction of samples (sorted by loss)")
            ax.set_ylabel("cumulative normalised loss")
            ax.set_title(f"{name} anchors ({len(cur):,})", fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
            box.shares[name] = _hardest_share_np(cur, 0.1)
        figure.tight_layout()
        readout.value = (f"γ = {g:.1f}: the hardest 10% of the negatives carry <b>{box.shares['negative']:.0%}</b> "
                         f"of the negatives' loss (γ = 0: {_hardest_share_np(ce[1], 0.1):.0%}); the hardest 10% "
                         f"of the positives carry <b>{box.shares['positive']:.0%}</b> (γ = 0: {_hardest_share_np(ce[0], 0.1):.0%})")
        image_w.value = _figure_png(figure)

    gamma_w.observe(redraw, names="value")
    redraw()
    return box
