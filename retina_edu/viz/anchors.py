"""Anchors on an image (notebook 01): one pyramid level's anchors of one shape, its static figure and its widget.

The anchors come from :func:`retina_edu.analysis.anchor_grid`, i.e. from the anchor settings
object :class:`retina_edu.anchors.AnchorGenerator` (the paper's by default); this module only
draws them. The widget (:func:`anchor_explorer`) and its static twin (:func:`anchor_figure`, for
the figure that precedes it in the notebook: GitHub does not render widgets) draw the same picture.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..analysis import anchor_grid
from ..anchors import AnchorGenerator
from ._common import ImageLike, class_color, level_name, new_figure, to_display_array
from .images import show_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer


def _scale_label(scale: float) -> str:
    """``2^(1/3)``-style names for the paper's scales, ``"1.5"`` for others."""
    exponent = math.log2(scale) * 3
    if abs(exponent - round(exponent)) < 1e-6:
        k = int(round(exponent))
        return "2^0" if k == 0 else (f"2^({k}/3)" if k % 3 else f"2^{k // 3}")
    return f"{scale:.3g}"


def _scale_names(generator: AnchorGenerator) -> list[str]:
    """A name per scale index: the scale (``2^(1/3)``) or, when the sizes are given per level, P3's size."""
    if generator.scales is not None:
        return [_scale_label(scale) for scale in generator.scales]
    return [f"{size:g} px" for size in generator.level_sizes[0]]


def _size_text(generator: AnchorGenerator, level: int, scale_index: int) -> str:
    """E.g. ``"size 64·2^(1/3) = 80.6 px"`` (or ``"size 80 px"`` when the sizes are given per level)."""
    size = generator.level_sizes[level][scale_index]
    base = generator.sizes[level]
    if generator.scales is None or isinstance(base, tuple):
        return f"size {size:.1f} px"
    return f"size {base:g}·{_scale_label(generator.scales[scale_index])} = {size:.1f} px"


def draw_anchor_level(
    ax: Axes,
    image: ImageLike,
    level: int = 0,
    scale_index: int = 0,
    ratio_index: int = 1,
    generator: AnchorGenerator | None = None,
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
        level: index into the generator's strides (0 is P3).
        scale_index: index of the anchor scale.
        ratio_index: index into the aspect ratios (height / width).
        generator: the anchor settings (strides, sizes, scales, aspect ratios, offset, ...);
            ``None`` means the paper's, ``AnchorGenerator()``.
        max_boxes: most anchors drawn as rectangles.
        margin: how far the view extends past the image, as a fraction of its larger side.
        color_by_location: give each drawn anchor its own colour (tab20), which keeps large
            overlapping anchors apart; by default all have the colour of their aspect ratio.

    Returns:
        ``{"centres": PathCollection, "boxes": [Rectangle], "highlight": Rectangle,
        "anchor": (w, h), "grid": (H_l, W_l)}``.
    """
    generator = AnchorGenerator() if generator is None else generator
    array = to_display_array(image)
    height, width = array.shape[:2]
    grid = anchor_grid((height, width), level, scale_index, ratio_index, generator).double().numpy()
    grid_h, grid_w = grid.shape[:2]
    centres = (grid[..., :2] + grid[..., 2:]) / 2

    show_image(ax, array)
    dots = _draw_centres(ax, centres)
    color = class_color(ratio_index)
    boxes, step = _draw_thinned_anchors(ax, grid, max_boxes, color, color_by_location)
    highlight, (anchor_w, anchor_h) = _draw_central_anchor(ax, grid, centres, (height, width), color)
    _frame_with_margin(ax, (height, width), margin)
    title = _level_title(generator, level, scale_index, ratio_index, (grid_h, grid_w), (anchor_w, anchor_h), step)
    ax.set_title(title, fontsize=8)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    return {
        "centres": dots,
        "boxes": boxes,
        "highlight": highlight,
        "anchor": (anchor_w, anchor_h),
        "grid": (grid_h, grid_w),
    }


def _frame_with_margin(ax: Axes, size: tuple[int, int], margin: float) -> None:
    """Extend the view ``margin`` of the image's larger side past each edge, on grey: anchors spilling
    out of the image show."""
    height, width = size
    pad = margin * max(height, width)
    ax.set_xlim(-pad, width + pad)
    ax.set_ylim(height + pad, -pad)
    ax.set_axis_on()
    ax.set_facecolor("#e8e8e8")
    ax.tick_params(labelsize=7)


def _level_title(
    generator: AnchorGenerator,
    level: int,
    scale_index: int,
    ratio_index: int,
    grid: tuple[int, int],
    anchor: tuple[float, float],
    step: int,
) -> str:
    """Two lines: the level, its grid, the anchor's size and shape; which locations are drawn."""
    suffix = "th" if 10 <= step % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    shown = "all locations" if step == 1 else f"every {step}{suffix} location"
    return (
        f"{level_name(level)} (stride {generator.strides[level]}, grid {grid[0]}x{grid[1]}): "
        f"{_size_text(generator, level, scale_index)}, h/w {generator.aspect_ratios[ratio_index]:g}\n"
        f"anchor {anchor[0]:.1f} x {anchor[1]:.1f} px, drawn at {shown}"
    )


def _draw_centres(ax: Axes, centres: Any) -> Any:
    """Every anchor centre of a level (``[H_l, W_l, 2]``) as a dot: small and faint on a dense grid."""
    grid_h, grid_w = centres.shape[:2]
    dense = grid_h * grid_w > 400
    return ax.scatter(
        centres[..., 0].reshape(-1),
        centres[..., 1].reshape(-1),
        s=1.5 if dense else 14,
        c="white",
        edgecolors="none" if dense else "black",
        linewidths=0.4,
        alpha=0.6 if dense else 1.0,
        zorder=3,
        label=f"{grid_h * grid_w} anchor centres",
    )


def _draw_thinned_anchors(
    ax: Axes, grid: Any, max_boxes: int, color: Any, color_by_location: bool
) -> tuple[list[Any], int]:
    """The anchors of ``grid`` (``[H_l, W_l, 4]`` xyxy) at every ``step``-th location in both directions,
    ``step`` the smallest that draws at most ``max_boxes``: ``(rectangles, step)``."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    grid_h, grid_w = grid.shape[:2]
    step = 1
    while math.ceil(grid_h / step) * math.ceil(grid_w / step) > max(1, max_boxes):
        step += 1
    boxes = []
    for k, (x1, y1, x2, y2) in enumerate(grid[::step, ::step].reshape(-1, 4).tolist()):
        edge = colormaps["tab20"](k % 20) if color_by_location else color
        boxes.append(
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=edge, linewidth=1.0, alpha=0.9, zorder=4)
            )
        )
    return boxes, step


def _draw_central_anchor(
    ax: Axes, grid: Any, centres: Any, size: tuple[int, int], color: Any
) -> tuple[Any, tuple[float, float]]:
    """The anchor nearest the image centre, drawn thick: ``(rectangle, (w, h))``."""
    from matplotlib.patches import Rectangle

    height, width = size
    centre_distance = ((centres.reshape(-1, 2) - [width / 2, height / 2]) ** 2).sum(-1)
    x1, y1, x2, y2 = grid.reshape(-1, 4)[int(centre_distance.argmin())].tolist()
    highlight = ax.add_patch(
        Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2.5, zorder=5)
    )
    return highlight, (x2 - x1, y2 - y1)


def anchor_figure(
    image: ImageLike,
    level: int = 0,
    scale_index: int = 0,
    ratio_index: int = 1,
    figsize: tuple[float, float] = (5, 5),
    fig: Figure | None = None,
    **kwargs: Any,
) -> Figure:
    """A figure of :func:`draw_anchor_level` (the static twin of :func:`anchor_explorer`).

    Args:
        image: the image the anchors are drawn on.
        level, scale_index, ratio_index: which anchors (see :func:`draw_anchor_level`).
        figsize: figure size in inches (of a new figure).
        fig: the figure to draw on (cleared first); ``None`` makes a new pyplot figure, so that
            Jupyter shows it. An explorer passes its own bare ``Figure``.
        **kwargs: more arguments of :func:`draw_anchor_level` (``generator``, ``max_boxes``, ...).

    Returns:
        The figure.
    """
    fig = new_figure(fig, figsize)
    draw_anchor_level(fig.add_subplot(), image, level, scale_index, ratio_index, **kwargs)
    fig.tight_layout()
    return fig


def anchor_readout(drawn: dict[str, Any], generator: AnchorGenerator, level: int) -> str:
    """One line: the level's grid and stride, the anchor's size in pixels, the level's anchor count."""
    grid_h, grid_w = drawn["grid"]
    anchor_w, anchor_h = drawn["anchor"]
    count = grid_h * grid_w * generator.num_anchors_per_location
    return (
        f"<b>{level_name(level)}</b>: stride {generator.strides[level]}, grid {grid_h} × {grid_w}; "
        f"this anchor is <b>{anchor_w:.1f} × {anchor_h:.1f} px</b>; the level has "
        f"{grid_h * grid_w:,} locations × {generator.num_anchors_per_location} = {count:,} anchors"
    )


def anchor_explorer(
    image: ImageLike,
    generator: AnchorGenerator | None = None,
    level: int = 0,
    scale_index: int = 0,
    ratio_index: int = 1,
    figsize: tuple[float, float] = (5, 5),
    max_boxes: int = 30,
) -> Explorer:
    """A widget that picks a pyramid level, an anchor scale and an aspect ratio, and redraws the anchors.

    Args:
        image: the image the anchors are drawn on (e.g. matplotlib's ``grace_hopper.jpg``).
        generator: the anchor settings; ``None`` means the paper's, ``AnchorGenerator()``.
        level, scale_index, ratio_index: what is shown first.
        figsize: figure size in inches.
        max_boxes: most anchors drawn as rectangles (see :func:`draw_anchor_level`).

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with controls ``"level"``, ``"scale"`` and
        ``"ratio"``, a readout (:func:`anchor_readout`) and the figure; ``.result`` is what
        :func:`draw_anchor_level` returned.
    """
    from matplotlib.figure import Figure

    from ._explorer import Explorer

    generator = AnchorGenerator() if generator is None else generator
    controls = _anchor_controls(generator, level, scale_index, ratio_index)
    figure = Figure(figsize=figsize)

    def draw(values: dict[str, Any]) -> dict[str, Any]:
        figure.clear()
        drawn = draw_anchor_level(
            figure.add_subplot(),
            image,
            values["level"],
            values["scale"],
            values["ratio"],
            generator,
            max_boxes=max_boxes,
        )
        figure.tight_layout()
        return drawn

    return Explorer(
        controls, draw, figure, readout=lambda drawn, values: anchor_readout(drawn, generator, values["level"])
    )


def _anchor_controls(generator: AnchorGenerator, level: int, scale_index: int, ratio_index: int) -> dict[str, Any]:
    """The anchor explorer's controls: a level dropdown, a scale and an aspect-ratio slider."""
    import ipywidgets as widgets

    style = {"description_width": "50px"}
    return {
        "level": widgets.Dropdown(
            options=[(f"{level_name(i)} (stride {s})", i) for i, s in enumerate(generator.strides)],
            value=level,
            description="level",
            style=style,
            layout=widgets.Layout(width="180px"),
        ),
        "scale": widgets.SelectionSlider(
            options=[(name, i) for i, name in enumerate(_scale_names(generator))],
            value=scale_index,
            description="scale",
            continuous_update=False,
            style=style,
        ),
        "ratio": widgets.SelectionSlider(
            options=[(f"{r:g}", i) for i, r in enumerate(generator.aspect_ratios)],
            value=ratio_index,
            description="h/w",
            continuous_update=False,
            style=style,
        ),
    }
