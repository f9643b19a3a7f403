"""The network's figures (notebook 05): feature maps level by level, and which level each object lands on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..anchors import PYRAMID_LEVEL_NAMES
from ._common import ArrayLike, _axes, finish_axes, to_numpy

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import Tensor

    from ._explorer import Explorer


def _chw(feature: Tensor | np.ndarray) -> np.ndarray:
    """A feature map as a float ``[C, H, W]`` array (accepts ``[1, C, H, W]``, ``[C, H, W]``, ``[H, W]``)."""
    array = to_numpy(feature).astype(np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"show_feature_maps: a feature map must be [C, H, W] or [1, C, H, W], got {array.shape}")
    return array


def _normalized(panel: np.ndarray) -> np.ndarray:
    """``panel`` scaled to [0, 1] (all zeros when it is constant)."""
    low, high = float(panel.min()), float(panel.max())
    return (panel - low) / (high - low) if high > low else np.zeros_like(panel)


def show_feature_maps(
    features: Sequence[Tensor | np.ndarray],
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
    _check_feature_maps(len(arrays), names, strides, channels)
    rows, cols = channels + 1, len(arrays)
    fig, grid = plt.subplots(rows, cols, figsize=figsize or (1.25 * cols, 1.25 * rows + 0.4), squeeze=False)
    for j, array in enumerate(arrays):
        c, h, w = array.shape
        title = names[j] if names is not None else str(j)
        title += f"\n{c}×{h}×{w}" + (f", s={strides[j]}" if strides is not None else "")
        _draw_feature_column(grid[:, j], array, title, channels, cmap)
    fig.tight_layout(pad=0.3)
    return fig


def _check_feature_maps(count: int, names: Sequence[str] | None, strides: Sequence[int] | None, channels: int) -> None:
    if not count:
        raise ValueError("show_feature_maps: no feature maps given")
    if names is not None and len(names) != count:
        raise ValueError(f"show_feature_maps: {count} feature maps but {len(names)} names")
    if strides is not None and len(strides) != count:
        raise ValueError(f"show_feature_maps: {count} feature maps but {len(strides)} strides")
    if channels < 0:
        raise ValueError(f"show_feature_maps: channels must be >= 0, got {channels}")


def _draw_feature_column(column: Sequence[Axes], array: np.ndarray, title: str, channels: int, cmap: str) -> None:
    """One map (``[C, H, W]``) down a column of axes: the mean |x|, then the ``channels`` channels that
    vary most over the image, each scaled to its own range."""
    c = array.shape[0]
    spread = array.reshape(c, -1).std(axis=1)
    picked = np.argsort(-spread, kind="stable")[:channels]
    panels = [("mean |x|", np.abs(array).mean(axis=0))] + [(f"ch {k}", array[k]) for k in picked]
    for i, ax in enumerate(column):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(panels):  # fewer channels than rows
            ax.set_axis_off()
            continue
        label, panel = panels[i]
        ax.imshow(_normalized(panel), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.text(
            0.03,
            0.03,
            label,
            transform=ax.transAxes,
            fontsize=7.5,
            color="white",
            va="bottom",
            bbox={"facecolor": "black", "alpha": 0.65, "pad": 1.0, "edgecolor": "none"},
        )
        if i == 0:
            ax.set_title(title, fontsize=8)


def _level_colors(n: int) -> list[tuple[float, float, float, float]]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.1, 0.85, n)]


def _draw_anchor_ranges(ax: Axes, anchor_sizes: Sequence[Sequence[float]], colors: Sequence[Any], top: float) -> None:
    """Each level's anchor sizes as a bar under the histogram, in the level's colour."""
    for k, level_sizes in enumerate(anchor_sizes):
        y = -top * (0.04 + 0.025 * k)
        ax.plot(
            [min(level_sizes), max(level_sizes)],
            [y, y],
            color=colors[k],
            lw=3,
            solid_capstyle="butt",
            marker="|",
            markersize=6,
        )
    ticks = [t for t in ax.get_yticks() if 0 <= t <= top]
    ax.set_ylim(-top * (0.06 + 0.025 * len(anchor_sizes)), top)
    ax.set_yticks(ticks)
    ax.axhline(0, color="black", lw=0.5)
    ax.text(0.01, 0.01, "anchor sizes per level", transform=ax.transAxes, fontsize=6, va="bottom")


def plot_level_assignment(
    sizes: ArrayLike,
    levels: ArrayLike,
    covered: ArrayLike | None = None,
    level_names: Sequence[str] = PYRAMID_LEVEL_NAMES,
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
    sizes_np, levels_np, covered_np = _checked_level_inputs(sizes, levels, covered, len(level_names))
    ax = _axes(ax)
    low = sizes_np.min() if len(sizes_np) else 1.0
    high = sizes_np.max() if len(sizes_np) else 2.0
    if anchor_sizes is not None:
        low = min(low, min(min(s) for s in anchor_sizes))
        high = max(high, max(max(s) for s in anchor_sizes))
    edges = np.geomspace(low / 1.05, high * 1.05, bins + 1)
    colors = _level_colors(len(level_names))
    groups, group_colors, group_labels = _level_groups(sizes_np, levels_np, covered_np, level_names, colors)
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
        _draw_anchor_ranges(ax, anchor_sizes, colors, top)
    ax.legend(fontsize=7, loc="upper center", ncol=3, columnspacing=1.0, handlelength=1.2, borderaxespad=0.3)
    return finish_axes(ax, title)


def _checked_level_inputs(
    sizes: ArrayLike, levels: ArrayLike, covered: ArrayLike | None, num_levels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sizes [N] float64, levels [N] int64, covered [N] bool)``, checked to fit together."""
    sizes_np = to_numpy(sizes).reshape(-1).astype(np.float64)
    levels_np = to_numpy(levels).reshape(-1).astype(np.int64)
    if len(sizes_np) != len(levels_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(levels_np)} levels")
    if len(levels_np) and (levels_np.min() < 0 or levels_np.max() >= num_levels):
        raise ValueError(
            f"plot_level_assignment: levels must be in [0, {num_levels}), got {levels_np.min()}..{levels_np.max()}"
        )
    if np.any(sizes_np <= 0):
        raise ValueError("plot_level_assignment: sizes must be positive (the axis is logarithmic)")
    covered_np = np.ones(len(sizes_np), bool) if covered is None else to_numpy(covered).reshape(-1).astype(bool)
    if len(covered_np) != len(sizes_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(covered_np)} covered flags")
    return sizes_np, levels_np, covered_np


def _level_groups(
    sizes: np.ndarray, levels: np.ndarray, covered: np.ndarray, level_names: Sequence[str], colors: Sequence[Any]
) -> tuple[list[np.ndarray], list[Any], list[str]]:
    """The histogram's stacks, one per level: the sizes of its covered objects, its colour, its label."""
    groups, group_colors, group_labels = [], [], []
    for k, name in enumerate(level_names):
        pick = (levels == k) & covered
        groups.append(sizes[pick])
        group_colors.append(colors[k])
        group_labels.append(f"{name} ({int(pick.sum())})")
    return groups, group_colors, group_labels


# ---------------------------------------------------------------------------------------------
# Which level gets one box (the explorer), and the architecture drawn from measured shapes
# ---------------------------------------------------------------------------------------------
def draw_box_levels(
    result: dict[str, Any],
    image_size: tuple[int, int] = (512, 512),
    fig: Figure | None = None,
    level_names: Sequence[str] = PYRAMID_LEVEL_NAMES,
) -> Figure:
    """One box, each level's best anchor on the image, and the best IoU per level as bars.

    Args:
        result: :func:`retina_edu.analysis.box_level_assignment`'s dict.
        image_size: ``(H, W)`` of the image the box lies in.
        fig: a figure to clear and draw on (an explorer's); ``None`` makes a new pyplot figure.
        level_names: the levels' names, P3 first.

    Returns:
        The figure: ``axes[0]`` the image with the box (gold) and the best anchors (the assigned
        level's thick), ``axes[1]`` the bars (``patches`` in level order) with the 0.5 and 0.4 lines.
    """
    from ._common import new_figure

    fig = new_figure(fig, (9, 3.6))
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    colors = _level_colors(len(level_names))
    _draw_best_anchors(ax_img, result, image_size, colors)
    _draw_best_iou_bars(ax_bar, result, colors, level_names)
    fig.tight_layout()
    return fig


def _draw_best_anchors(ax: Axes, result: dict[str, Any], image_size: tuple[int, int], colors: Sequence[Any]) -> None:
    """The image as a grey frame, each level's best anchor (the assigned level's thick), the box in gold."""
    from matplotlib.patches import Rectangle

    height, width = image_size
    ax.add_patch(Rectangle((0, 0), width, height, facecolor="0.93", edgecolor="0.6"))
    for k, anchor in enumerate(to_numpy(result["best_anchor"])):
        x0, y0, x1, y1 = anchor
        chosen = k == result["level"]
        ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colors[k],
                lw=2.6 if chosen else 1.0,
                ls="-" if chosen else "--",
            )
        )
    x0, y0, x1, y1 = to_numpy(result["box"])
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=(1.0, 0.84, 0.0, 0.35), edgecolor="#b8860b", lw=1.5))
    ax.set_xlim(-2, width + 2)
    ax.set_ylim(height + 2, -2)
    ax.set_aspect("equal")
    ax.set_xticks([0, width // 2, width])
    ax.set_yticks([0, height // 2, height])
    ax.set_title("the object (gold) and each level's best anchor", fontsize=9)


def _draw_best_iou_bars(ax: Axes, result: dict[str, Any], colors: Sequence[Any], level_names: Sequence[str]) -> None:
    """The best IoU of each level as a bar (with its positives' count), the 0.5 and 0.4 lines."""
    best = result["best_iou"]
    bars = ax.bar(range(len(best)), best, color=colors[: len(best)], width=0.6)
    for k, (bar, positives) in enumerate(zip(bars, result["positives"])):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.02,
            f"{best[k]:.2f}\n{positives} pos.",
            ha="center",
            va="bottom",
            fontsize=7.5,
        )
    ax.axhline(0.5, color="#2ca02c", lw=1, ls="--")
    ax.axhline(0.4, color="#ff7f0e", lw=1, ls=":")
    ax.text(len(best) - 0.5, 0.51, "positive ≥ 0.5", ha="right", va="bottom", fontsize=7, color="#2ca02c")
    ax.text(len(best) - 0.5, 0.39, "background < 0.4", ha="right", va="top", fontsize=7, color="#ff7f0e")
    ax.set_xticks(range(len(best)), list(level_names)[: len(best)])
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("best IoU with an anchor of the level")
    ax.set_title(f"assigned to {level_names[result['level']]} (the best anchor overall)", fontsize=9)


def box_level_readout(
    result: dict[str, Any], size: float, aspect: float, level_names: Sequence[str] = PYRAMID_LEVEL_NAMES
) -> str:
    """One sentence: the box's size, its best IoU per level, where its positive anchors are."""
    level = result["level"]
    per_level = ", ".join(f"{name} {iou:.2f}" for name, iou in zip(level_names, result["best_iou"]))
    with_positives = [f"{name} ({n})" for name, n in zip(level_names, result["positives"]) if n]
    text = (
        f"<b>{size:.0f} px</b> object (h/w = {aspect:.2f}): best IoU per level {per_level}. "
        f"Its best anchor is on <b>{level_names[level]}</b>"
    )
    if result["best_iou"][level] < 0.5:
        text += " (below 0.5: a low-quality match, positive only because it is the box's best)"
    text += ". Positive anchors: " + (", ".join(with_positives) if with_positives else "none") + "."
    return f"<div>{text}</div>"


def box_level_explorer(
    size: float = 64.0, aspect: float = 1.0, image_size: tuple[int, int] = (512, 512), **anchor_kwargs: Any
) -> Explorer:
    """Sliders for an object's size and aspect ratio: which pyramid level (and anchors) it is assigned to.

    An :class:`~retina_edu.viz._explorer.Explorer` (CSS class ``box-level-explorer``) with controls
    ``"size"`` (a logarithmic slider, description "size", CSS class ``box-size``, 8 to 512 px:
    ``sqrt(w h)``) and ``"aspect"`` (logarithmic, description "h/w", CSS class ``box-aspect``, 1/4
    to 4); its readout (CSS class ``box-level-readout``) is :func:`box_level_readout`, its picture
    :func:`draw_box_levels`, and ``.result`` :func:`retina_edu.analysis.box_level_assignment`'s dict
    for a box centred in the image.

    Args:
        size, aspect: the initial object.
        image_size: the image, ``(H, W)``.
        **anchor_kwargs: the anchors (``retina_edu.anchors.anchors_per_level``'s arguments; the paper's by default).

    Returns:
        The explorer (an ``ipywidgets.VBox``).
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from ..analysis import box_level_assignment
    from ._explorer import Explorer

    size_slider = widgets.FloatLogSlider(
        value=size, base=2, min=3, max=9, step=0.125, description="size", continuous_update=False, readout_format=".0f"
    )
    size_slider.add_class("box-size")
    aspect_slider = widgets.FloatLogSlider(
        value=aspect, base=2, min=-2, max=2, step=0.25, description="h/w", continuous_update=False, readout_format=".2f"
    )
    aspect_slider.add_class("box-aspect")
    figure = Figure(figsize=(9, 3.6), dpi=80)

    def draw(values: dict[str, Any]) -> dict[str, Any]:
        result = box_level_assignment(float(values["size"]), float(values["aspect"]), image_size, **anchor_kwargs)
        draw_box_levels(result, image_size, fig=figure)
        return result

    return Explorer(
        {"size": size_slider, "aspect": aspect_slider},
        draw,
        figure,
        readout=lambda result, values: box_level_readout(result, values["size"], values["aspect"]),
        css_class="box-level-explorer",
        readout_class="box-level-readout",
    )


def plot_architecture(shapes: dict[str, Any], title: str | None = None, fig: Figure | None = None) -> Figure:
    """RetinaNet as boxes and arrows, labelled with tensor shapes measured by running the model.

    Columns: the input; the backbone's C3-C5; the FPN's P3-P7; the class and box subnets' outputs
    per level; and their outputs concatenated over the levels, one row per anchor.

    Args:
        shapes: :func:`retina_edu.analysis.network_shapes`'s dict.
        title: optional title.
        fig: a figure to draw on; ``None`` makes a new pyplot figure.

    Returns:
        The figure (one axes, its texts hold the shapes).
    """
    from ._common import new_figure

    fig = new_figure(fig, (11, 5.2))
    ax = fig.add_axes((0, 0, 1, 0.93 if title else 1))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6)
    ax.set_axis_off()
    diagram, colors = _Diagram(ax), _ARCHITECTURE_COLORS
    levels = len(shapes["P"])
    ys = [1.0 + i * 1.0 for i in range(levels)]  # P3 at the bottom, as in the paper's Figure 3
    inp = diagram.node(0.9, 2.0, f"image\n{_shape_text(shapes['input'])}", colors["input"])
    c_nodes = [diagram.node(2.9, ys[i], f"C{i + 3}\n{_shape_text(s)}", colors["C"]) for i, s in enumerate(shapes["C"])]
    p_nodes = [diagram.node(5.0, ys[i], f"P{i + 3}\n{_shape_text(s)}", colors["P"]) for i, s in enumerate(shapes["P"])]
    cls_nodes = [
        diagram.node(7.1, ys[i] + 0.19, f"class {_shape_text(s)}", colors["class"], h=0.34)
        for i, s in enumerate(shapes["class_raw"])
    ]
    box_nodes = [
        diagram.node(7.1, ys[i] - 0.19, f"box {_shape_text(s)}", colors["box"], h=0.34)
        for i, s in enumerate(shapes["box_raw"])
    ]
    for c in c_nodes:
        diagram.link(inp, c)
    _draw_pyramid_arrows(diagram, c_nodes, p_nodes, cls_nodes, box_nodes)
    _draw_top_down(diagram, len(c_nodes), p_nodes, ys)
    out_cls = diagram.node(9.7, 3.7, f"class logits\n{_shape_text(shapes['class'])}", colors["class"], w=1.8)
    out_box = diagram.node(9.7, 2.3, f"box deltas\n{_shape_text(shapes['box'])}", colors["box"], w=1.8)
    for i in range(levels):
        diagram.link(cls_nodes[i], out_cls, dx=0.8)
        diagram.link(box_nodes[i], out_box, dx=0.8)
    for x, text in (
        (0.9, "input"),
        (2.9, "backbone\n(ResNet)"),
        (5.0, "FPN"),
        (7.1, "subnets, per level\n(shared)"),
        (9.7, "all levels\nconcatenated"),
    ):
        ax.text(x, 5.75, text, ha="center", va="top", fontsize=8.5, weight="bold")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


_ARCHITECTURE_COLORS = {"input": "#f0f0f0", "C": "#fdd0a2", "P": "#c6dbef", "class": "#fcbba1", "box": "#c7e9c0"}

_Point = tuple[float, float]


def _shape_text(shape: Sequence[int]) -> str:
    """``C×H×W`` of a ``[B, C, H, W]`` shape (the batch left out)."""
    return "×".join(str(s) for s in shape[1:])


class _Diagram:
    """Rounded boxes with text and arrows between them, on one axes (the architecture figure)."""

    def __init__(self, ax: Axes):
        self.ax = ax

    def node(self, x: float, y: float, text: str, color: str, w: float = 1.55, h: float = 0.62) -> _Point:
        """A ``w x h`` box centred at ``(x, y)`` holding ``text``; returns its centre."""
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", facecolor=color, edgecolor="0.35", lw=0.8
            )
        )
        self.ax.text(x, y, text, ha="center", va="center", fontsize=7.5)
        return x, y

    def arrow(self, start: _Point, end: _Point, color: str = "0.35", lw: float = 0.8, **kw: Any) -> None:
        from matplotlib.patches import FancyArrowPatch

        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, color=color, lw=lw, **kw))

    def link(self, a: _Point, b: _Point, dx: float = 0.8) -> None:
        """An arrow from the right edge of node ``a`` to the left edge of node ``b`` (``dx`` from their centres)."""
        self.arrow((a[0] + dx, a[1]), (b[0] - dx, b[1]))


def _draw_pyramid_arrows(
    diagram: _Diagram, c_nodes: list[_Point], p_nodes: list[_Point], cls_nodes: list[_Point], box_nodes: list[_Point]
) -> None:
    """C_l -> P_l (lateral), C5 -> P6 (a stride-2 conv), P6 -> P7, and each P_l -> its class and box outputs."""
    for i, p in enumerate(p_nodes):
        source = c_nodes[i] if i < len(c_nodes) else (c_nodes[-1] if i == len(c_nodes) else p_nodes[i - 1])
        if i < len(c_nodes):
            diagram.link(source, p)
        elif i == len(c_nodes):  # P6: a stride-2 conv on C5 (the paper; or on P5)
            diagram.arrow((source[0] + 0.8, source[1] + 0.1), (p[0] - 0.8, p[1]), connectionstyle="arc3,rad=0.2")
        else:  # P7: a stride-2 conv on ReLU(P6)
            diagram.arrow((source[0], source[1] + 0.31), (p[0], p[1] - 0.31))
        diagram.link(p, cls_nodes[i], dx=0.78)
        diagram.link(p, box_nodes[i], dx=0.78)


def _draw_top_down(diagram: _Diagram, num_c: int, p_nodes: list[_Point], ys: list[float]) -> None:
    """The FPN's top-down path: upsample 2x and add to the lateral of the level below."""
    for i in range(num_c - 1):
        upper, lower = p_nodes[i + 1], p_nodes[i]
        diagram.arrow((upper[0] - 0.4, upper[1] - 0.31), (lower[0] - 0.4, lower[1] + 0.31), color="#3182bd", lw=1.0)
    diagram.ax.text(
        p_nodes[0][0] - 0.45,
        (ys[0] + ys[1]) / 2,
        "top-down\n2× up",
        ha="right",
        va="center",
        fontsize=6.5,
        color="#3182bd",
    )
