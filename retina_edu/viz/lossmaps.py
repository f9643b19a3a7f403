"""Per-anchor loss maps of a trained detector (notebook 09): where its classification loss sits on an
image under cross entropy and under focal loss, level by level, and the explorer with γ and α.

The numbers come from :func:`retina_edu.analysis.anchor_loss_map` (per-anchor losses summed over
classes and over the anchors of each location); these functions only draw them. A map is drawn as
each location's *share* of the image's total loss at that γ, on one logarithmic colour scale, so
that rows at different γ compare: what fades is what carries a smaller part of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import LOSS_GROUPS, LOSS_MAP_ALPHA, anchor_loss_map
from ._common import (
    ArrayLike,
    BoxesLike,
    ImageLike,
    class_color,
    format_times,
    level_name,
    to_display_array,
    to_numpy,
)
from .images import draw_boxes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer

__all__ = ["SHARE_RANGE", "draw_loss_map", "loss_map_explorer", "loss_map_readout", "plot_loss_maps"]

SHARE_RANGE = (1e-5, 1e-1)
"""The colour scale of every loss map: a location's share of the image's total loss, log scale."""


def draw_loss_map(
    ax: Axes,
    image: ImageLike,
    loss_map: ArrayLike,
    total: float,
    boxes: BoxesLike | None = None,
    labels: ArrayLike | None = None,
    padded_size: tuple[int, int] | None = None,
    share_range: tuple[float, float] = SHARE_RANGE,
    cmap: str = "inferno",
) -> Any:
    """One level's loss map over the image: each location's share of ``total``, log colour scale.

    Args:
        ax: axes to draw on.
        image: the network's input image (see :func:`to_display_array`), ``H x W`` pixels.
        loss_map: ``[H_l, W_l]`` summed loss per location (``anchor_loss_map(...)["maps"][l]``).
        total: the image's total loss at that γ (``anchor_loss_map(...)["total"]``), > 0.
        boxes: optional ``[N, 4]`` xyxy ground truth in the image's pixels, drawn in class colours.
        labels: optional ``[N]`` classes of the boxes (their colours).
        padded_size: ``(H, W)`` the level's grid covers (the padded input; default the image's size).
        share_range: the colour scale's ends; shares below the first are drawn at it.
        cmap: matplotlib colour map.

    Returns:
        The ``AxesImage`` of the map (for a colour bar).
    """
    from matplotlib.colors import LogNorm

    if total <= 0:
        raise ValueError(f"draw_loss_map: total must be > 0, got {total}")
    picture = to_display_array(image)
    height, width = picture.shape[:2]
    pad_h, pad_w = padded_size if padded_size is not None else (height, width)
    share = np.clip(to_numpy(loss_map).astype(np.float64) / total, share_range[0], None)
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, extent=(0, width, height, 0))
    handle = ax.imshow(
        share, cmap=cmap, norm=LogNorm(*share_range), alpha=0.8, extent=(0, pad_w, pad_h, 0), interpolation="nearest"
    )
    if boxes is not None:  # class colours, no captions: the map stays readable
        count = len(to_numpy(boxes).reshape(-1, 4))
        colors = "white" if labels is None else [class_color(int(k)) for k in to_numpy(labels).reshape(-1)]
        draw_boxes(ax, boxes, colors=colors if count else "white", linewidth=0.9)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return handle


def _share_line(result: dict[str, Any]) -> str:
    shares = result["shares"]
    return " · ".join(f"{name} {100 * shares[name]:.0f}%" for name in LOSS_GROUPS)


def plot_loss_maps(
    image: ImageLike,
    results: Sequence[dict[str, Any]],
    row_titles: Sequence[str],
    boxes: BoxesLike | None = None,
    labels: ArrayLike | None = None,
    levels: Sequence[int] | None = None,
    padded_size: tuple[int, int] | None = None,
    share_range: tuple[float, float] = SHARE_RANGE,
) -> Figure:
    """Loss maps at several γ: one row per result, one column per pyramid level, one colour scale.

    Args:
        image: the network's input image; boxes/labels: its ground truth (drawn on every panel).
        results: :func:`retina_edu.analysis.anchor_loss_map` results, e.g. at γ = 0, 1, 2.
        row_titles: a title per row (e.g. ``"γ = 0 (CE)"``); the row's loss shares are added.
        levels: level indices to show (default all).
        padded_size: ``(H, W)`` of the padded input the grids cover.
        share_range: colour scale of the shares.

    Returns:
        The figure: ``len(results) x len(levels)`` panels, then a colour bar.
    """
    import matplotlib.pyplot as plt

    if len(row_titles) != len(results) or not results:
        raise ValueError(f"plot_loss_maps: {len(results)} results but {len(row_titles)} row titles")
    levels = list(range(len(results[0]["maps"]))) if levels is None else list(levels)
    fig, grid = plt.subplots(
        len(results), len(levels), figsize=(1.75 * len(levels) + 0.9, 1.95 * len(results)), squeeze=False
    )
    handle = None
    for row, (result, title) in enumerate(zip(results, row_titles)):
        for col, level in enumerate(levels):
            ax = grid[row, col]
            handle = draw_loss_map(
                ax, image, result["maps"][level], result["total"], boxes, labels, padded_size, share_range
            )
            h, w = result["maps"][level].shape
            ax.set_title(f"{level_name(level)} ({h}×{w}): {100 * result['level_shares'][level]:.0f}%", fontsize=7.5)
        grid[row, 0].text(
            -0.08,
            0.5,
            f"{title}\n{_share_line(result)}".replace(" · ", "\n"),
            transform=grid[row, 0].transAxes,
            rotation=0,
            ha="right",
            va="center",
            fontsize=7.5,
        )
    fig.subplots_adjust(left=0.2, right=0.9, wspace=0.08, hspace=0.3, top=0.92, bottom=0.03)
    bar = fig.colorbar(handle, ax=list(grid.ravel()), shrink=0.8, fraction=0.025, pad=0.02)
    bar.set_label("share of the image's loss per location", fontsize=7.5)
    bar.ax.tick_params(labelsize=7)
    return fig


def loss_map_readout(result: dict[str, Any], values: dict[str, Any]) -> str:
    """HTML: γ and α, the shares of the three groups under CE and FL, CE/FL, the level's share."""
    level = int(values["level"])
    alpha = values["alpha"]
    cells = "".join(
        f"<tr><td>{name}</td><td>{100 * result['ce_shares'][name]:.1f}%</td>"
        f"<td>{100 * result['shares'][name]:.1f}%</td></tr>"
        for name in LOSS_GROUPS
    )
    return (
        f"γ = {values['gamma']:.2f}, α = {alpha:.2f}: the whole image's loss is "
        f"<b>{format_times(result['ce_over_fl'])}</b> smaller under FL than under CE (γ = 0, same α). "
        f"{level_name(level)} carries {100 * result['ce_level_shares'][level]:.1f}% of the CE "
        f"and {100 * result['level_shares'][level]:.1f}% of the FL."
        f"<table style='font-size:90%'><tr><th>share of the loss</th><th>CE</th><th>FL</th></tr>"
        f"{cells}</table>"
    )


def loss_map_explorer(
    images: Sequence[ImageLike],
    outputs: Sequence[dict[str, Any]],
    names: Sequence[str] | None = None,
    gamma: float = 2.0,
    alpha: float = LOSS_MAP_ALPHA,
    level: int = 0,
    figsize: tuple[float, float] = (7.5, 3.6),
) -> Explorer:
    """γ and α sliders, a level and an image selector over CE's and FL's loss maps side by side.

    Args:
        images: the network's input images.
        outputs: one :func:`retina_edu.analysis.anchor_outputs` result per image.
        names: a name per image for the selector (default ``"image 0"``, ...).
        gamma, alpha, level: the starting values.

    Returns:
        An :class:`~retina_edu.viz._explorer.Explorer` with controls ``"gamma"``, ``"alpha"``,
        ``"level"`` and ``"image"``, the readout :func:`loss_map_readout`; ``.result`` is the last
        :func:`retina_edu.analysis.anchor_loss_map` result.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from ._explorer import Explorer, float_slider, image_selector

    if len(images) != len(outputs) or not images:
        raise ValueError(f"loss_map_explorer: {len(images)} images but {len(outputs)} outputs")
    num_levels = len(outputs[0]["grid_sizes"])
    controls = {
        "gamma": float_slider(gamma, 0.0, 5.0, 0.25, "γ", css_class="lossmap-gamma"),
        "alpha": float_slider(alpha, 0.05, 0.95, 0.05, "α", css_class="lossmap-alpha"),
        "level": widgets.Dropdown(
            options=[(level_name(k), k) for k in range(num_levels)],
            value=level,
            description="level",
            layout=widgets.Layout(width="150px"),
        ),
        "image": image_selector(names, len(images)),
    }
    figure = Figure(figsize=figsize, dpi=80)

    def draw(values: dict[str, Any]) -> dict[str, Any]:
        index, level_index = int(values["image"]), int(values["level"])
        out = outputs[index]
        gamma_, alpha_ = float(values["gamma"]), float(values["alpha"])
        result = anchor_loss_map(out["cls_logits"], out["matches"], out["labels"], out["grid_sizes"], gamma_, alpha_)
        _draw_ce_beside_fl(figure, images[index], out, result, level_index, gamma_)
        return result

    return Explorer(
        controls,
        draw,
        figure,
        readout=loss_map_readout,
        css_class="loss-map-explorer",
        readout_class="loss-map-readout",
    )


def _draw_ce_beside_fl(
    figure: Figure, image: ImageLike, out: dict[str, Any], result: dict[str, Any], level: int, gamma: float
) -> None:
    """``figure`` cleared, then one level's loss map under CE (left) and FL at ``gamma`` (right), one colour bar."""
    figure.clear()
    axes = figure.subplots(1, 2)
    handle = None
    for ax, key, total, title in (
        (axes[0], "ce_maps", result["ce_total"], "cross entropy (γ = 0)"),
        (axes[1], "maps", result["total"], f"focal loss, γ = {gamma:.2f}"),
    ):
        handle = draw_loss_map(
            ax, image, result[key][level], total, out.get("boxes"), out.get("gt_labels"), out.get("padded_size")
        )
        ax.set_title(f"{title}: {level_name(level)}", fontsize=9)
    bar = figure.colorbar(handle, ax=list(axes), shrink=0.85, fraction=0.03, pad=0.02)
    bar.set_label("share of the image's loss per location", fontsize=8)
    bar.ax.tick_params(labelsize=7)
