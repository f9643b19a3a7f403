"""What every viz module shares: array conversion, the type aliases, the palettes, axes and PNG helpers.

``matplotlib.pyplot`` is imported only inside the functions that create figures, so importing
``retina_edu.viz`` stays cheap and never opens a GUI backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch

from ..anchors import PYRAMID_LEVEL_NAMES
from ..boxes import BOX_FORMATS, convert_boxes

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL.Image import Image as PILImage

ImageLike: TypeAlias = "torch.Tensor | np.ndarray | PILImage"
"""An image: ``Tensor[3, H, W]`` / ``[1, H, W]`` / ``[H, W]`` (float in [0, 1] or uint8), an
``[H, W, 3]`` / ``[H, W]`` array, or a PIL image (see :func:`to_display_array`)."""
BoxesLike: TypeAlias = "torch.Tensor | np.ndarray | Sequence[Sequence[float]]"
"""Boxes: ``[N, 4]`` in pixels, as a tensor, an array or a list of lists."""
ArrayLike: TypeAlias = "torch.Tensor | np.ndarray | Sequence[float]"
"""A vector of numbers (labels, scores, sizes, ...): a tensor, an array or a list."""

# matplotlib's "tab10" qualitative palette, spelled out so that no matplotlib import is needed.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DEFAULT_COLOR = (1.0, 0.84, 0.0)  # boxes without labels: gold

# Colours of the three anchor labels in notebook 02's pictures.
MATCH_COLORS = {"positive": "#2ca02c", "ignored": "#ff7f0e", "negative": "#c7c7c7"}
# Positives are coloured by the ground-truth box they match: tab10 without orange and the greys,
# which mean "ignored" and "negative".
_GT_PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#17becf", "#8c564b", "#bcbd22")


def class_color(label: int) -> tuple[float, float, float]:
    """The fixed RGB colour (floats in [0, 1]) of class ``label`` (tab10, cycling after 10 classes)."""
    hex_color = PALETTE[int(label) % len(PALETTE)]
    red, green, blue = (int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return red, green, blue


def gt_color(index: int) -> str:
    """The colour of ground-truth box ``index`` (and of its positive anchors) in matching pictures."""
    return _GT_PALETTE[int(index) % len(_GT_PALETTE)]


def level_name(level: int) -> str:
    """``"P3"`` .. ``"P7"`` for levels 0..4 (:data:`retina_edu.anchors.PYRAMID_LEVEL_NAMES`), else ``"level k"``."""
    return PYRAMID_LEVEL_NAMES[level] if 0 <= level < len(PYRAMID_LEVEL_NAMES) else f"level {level}"


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, with or without grad), an array or a list, as a numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def boxes_xyxy(boxes: BoxesLike, fmt: str = "xyxy", where: str = "draw_boxes") -> np.ndarray:
    """``boxes`` in format ``fmt`` as a float64 ``[N, 4]`` xyxy array (via :func:`retina_edu.boxes.convert_boxes`).

    Raises:
        ValueError: naming ``where`` when the boxes are not ``[N, 4]`` or ``fmt`` is unknown.
    """
    array = to_numpy(boxes).astype(np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{where}: boxes must be [N, 4], got shape {array.shape}")
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{where}: fmt must be 'xyxy', 'xywh' or 'cxcywh', got {fmt!r}")
    return convert_boxes(torch.from_numpy(array), fmt, "xyxy").numpy()


def to_display_array(image: ImageLike) -> np.ndarray:
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
    is_tensor = isinstance(image, torch.Tensor)
    array = to_numpy(image)
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


def _axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> Axes:
    """``ax`` itself, or, when it is ``None``, the axes of a new pyplot figure (so that Jupyter shows it)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _axes_row(axes: Sequence[Axes] | None, ncols: int, figsize: tuple[float, float]) -> tuple[Figure, Sequence[Axes]]:
    """``(figure, axes)`` of the panels given, or, when ``axes`` is ``None``, of a new 1 x ``ncols`` pyplot figure."""
    if axes is not None:
        return axes[0].figure, axes
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize)


def new_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    """``fig`` cleared (an explorer's own bare ``Figure``, redrawn in place), or a new pyplot figure."""
    if fig is not None:
        fig.clear()
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize)


def finish_axes(ax: Axes, title: str | None = None) -> Axes:
    """The common tail of a plot: an optional small title; returns ``ax``."""
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def _figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what an explorer's ``Image`` widget shows)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def format_times(ratio: float) -> str:
    """A ratio for a readout: ``"100×"``, ``"1,000×"``, ``"4×"``, ``"2.5×"``."""
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"
