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
    if not arrays:
        raise ValueError("show_feature_maps: no feature maps given")
    if names is not None and len(names) != len(arrays):
        raise ValueError(f"show_feature_maps: {len(arrays)} feature maps but {len(names)} names")
    if strides is not None and len(strides) != len(arrays):
        raise ValueError(f"show_feature_maps: {len(arrays)} feature maps but {len(strides)} strides")
    if channels < 0:
        raise ValueError(f"show_feature_maps: channels must be >= 0, got {channels}")
    rows, cols = channels + 1, len(arrays)
    fig, grid = plt.subplots(rows, cols, figsize=figsize or (1.25 * cols, 1.25 * rows + 0.4), squeeze=False)
    for j, array in enumerate(arrays):
        c, h, w = array.shape
        title = names[j] if names is not None else str(j)
        title += f"\n{c}×{h}×{w}" + (f", s={strides[j]}" if strides is not None else "")
        spread = array.reshape(c, -1).std(axis=1)
        picked = np.argsort(-spread, kind="stable")[:channels]
        panels = [("mean |x|", np.abs(array).mean(axis=0))] + [(f"ch {k}", array[k]) for k in picked]
        for i in range(rows):
            ax = grid[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(panels):  # fewer channels than rows
                ax.set_axis_off()
                continue
            label, panel = panels[i]
            ax.imshow(_normalized(panel), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
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


def _draw_anchor_ranges(ax: Axes, anchor_sizes: Sequence[Sequence[float]], colors: Sequence[Any], top: float) -> None:
    """Each level's anchor sizes as a bar under the histogram, in the level's colour."""
    for k, level_sizes in enumerate(anchor_sizes):
        y = -top * (0.04 + 0.025 * k)
        ax.plot([min(level_sizes), max(level_sizes)], [y, y], color=colors[k], lw=3, solid_capstyle="butt",
                marker="|", markersize=6)
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
    sizes_np = to_numpy(sizes).reshape(-1).astype(np.float64)
    levels_np = to_numpy(levels).reshape(-1).astype(np.int64)
    if len(sizes_np) != len(levels_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(levels_np)} levels")
    if len(levels_np) and (levels_np.min() < 0 or levels_np.max() >= len(level_names)):
        raise ValueError(f"plot_level_assignment: levels must be in [0, {len(level_names)}), got "
                         f"{levels_np.min()}..{levels_np.max()}")
    if np.any(sizes_np <= 0):
        raise ValueError("plot_level_assignment: sizes must be positive (the axis is logarithmic)")
    covered_np = np.ones(len(sizes_np), bool) if covered is None else to_numpy(covered).reshape(-1).astype(bool)
    if len(covered_np) != len(sizes_np):
        raise ValueError(f"plot_level_assignment: {len(sizes_np)} sizes but {len(covered_np)} covered flags")
    ax = _axes(ax)
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
        _draw_anchor_ranges(ax, anchor_sizes, colors, top)
    ax.legend(fontsize=7, loc="upper center", ncol=3, columnspacing=1.0, handlelength=1.2, borderaxespad=0.3)
    return finish_axes(ax, title)
