"""The prior's figures (notebook 06): the first loss of all anchors and the first steps, as π changes.

The numbers come from :func:`retina_edu.analysis.prior_initial_loss` (closed form) and
:func:`retina_edu.analysis.prior_first_steps` (a tiny model: the class bias alone, trained with SGD);
this module only draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import prior_first_steps, prior_initial_loss
from ..model import PRIOR_PROBABILITY
from ._common import _axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._explorer import Explorer

__all__ = ["plot_prior_first_steps", "plot_prior_initial_loss", "prior_explorer", "prior_readout"]

PRIOR_LOSSES = {"CE": {"gamma": 0.0, "alpha": None}, "FL": {"gamma": 2.0, "alpha": 0.25}}
"""The two classification losses the figures compare: cross entropy, and the paper's focal loss."""
_LOSS_COLORS = {"CE": "#d62728", "FL": "#1f77b4"}
_PI_GRID = np.geomspace(1e-4, 0.5, 80)  # the x axis of the initial-loss curves
PI_RANGE = (1e-4, 0.5)  # the π slider's range (0.5 is bias 0, the default initialisation)


def _counts(counts: dict[str, int]) -> tuple[int, int, int]:
    return counts["num_positive"], counts["num_negative"], counts["num_classes"]


def plot_prior_initial_loss(
    num_positive: int, num_negative: int, num_classes: int, pi: float | None = PRIOR_PROBABILITY, ax: Axes | None = None
) -> Axes:
    """The first classification loss of all anchors against the prior π, for CE and FL (log-log).

    Args:
        num_positive, num_negative, num_classes: P, N and K of the batch
            (:func:`retina_edu.analysis.prior_initial_loss`).
        pi: a π to mark with dots (``None``: none).
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes; ``ax.lines[0]`` and ``[1]`` are the CE and FL curves over π.
    """
    ax = _axes(ax, (4.5, 3.2))
    for name, loss in PRIOR_LOSSES.items():
        values = [prior_initial_loss(p, num_positive, num_negative, num_classes, **loss)["total"] for p in _PI_GRID]
        ax.plot(_PI_GRID, values, color=_LOSS_COLORS[name], lw=1.8, label=name)
    if pi is not None:
        for name, loss in PRIOR_LOSSES.items():
            value = prior_initial_loss(pi, num_positive, num_negative, num_classes, **loss)["total"]
            ax.plot([pi], [value], "o", color=_LOSS_COLORS[name], ms=5)
        ax.axvline(pi, color="0.5", ls=":", lw=1)
    ax.axvline(PRIOR_PROBABILITY, color="0.75", lw=3, zorder=0, label="paper's π = 0.01")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("prior π (every score starts at p = π)")
    ax.set_ylabel("first classification loss")
    ax.set_title(f"first loss of all anchors (P = {num_positive:,}, N = {num_negative:,})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_prior_first_steps(
    pi: float,
    num_positive: int,
    num_negative: int,
    num_classes: int,
    steps: int = 10,
    lr: float = 0.01,
    reference: float | None = PRIOR_PROBABILITY,
    ax: Axes | None = None,
) -> dict[str, dict[str, list[float]]]:
    """The first SGD steps of the bias-only model for CE and FL, started at π (log y axis).

    Args:
        pi: the prior the class bias starts at.
        num_positive, num_negative, num_classes: P, N and K (:func:`retina_edu.analysis.prior_first_steps`).
        steps, lr: how many SGD steps (momentum 0.9), at which learning rate.
        reference: a π whose runs are drawn thin and dashed for comparison (``None``: none).
        ax: axes to draw on; ``None`` makes a new figure.

    Returns:
        ``{"CE": run, "FL": run}`` at ``pi`` (each :func:`retina_edu.analysis.prior_first_steps`'s dict).
    """
    ax = _axes(ax, (4.5, 3.2))
    runs = {}
    for name, loss in PRIOR_LOSSES.items():
        runs[name] = prior_first_steps(pi, num_positive, num_negative, num_classes, steps=steps, lr=lr, **loss)
        ax.plot(
            range(steps + 1),
            runs[name]["loss"],
            "o-",
            color=_LOSS_COLORS[name],
            lw=1.8,
            ms=3,
            label=f"{name}, π = {pi:.3g}",
        )
        if reference is not None and not math.isclose(reference, pi, rel_tol=1e-3):
            ref = prior_first_steps(reference, num_positive, num_negative, num_classes, steps=steps, lr=lr, **loss)
            ax.plot(
                range(steps + 1),
                ref["loss"],
                color=_LOSS_COLORS[name],
                lw=1,
                ls="--",
                label=f"{name}, π = {reference:g}",
            )
    ax.set_yscale("log")
    ax.set_xlabel("SGD step (the bias alone, lr 0.01)")
    ax.set_ylabel("classification loss")
    ax.set_title("the first steps", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    return runs


def prior_readout(
    pi: float, num_positive: int, num_negative: int, num_classes: int, runs: dict[str, dict[str, list[float]]]
) -> str:
    """The first loss of CE and FL at π, split into background and objects, and what the first steps do."""
    bias = math.log(pi / (1 - pi))
    parts = []
    for name, loss in PRIOR_LOSSES.items():
        init = prior_initial_loss(pi, num_positive, num_negative, num_classes, **loss)
        run = runs[name]
        parts.append(
            f"<b>{name}</b>: first loss <b>{init['total']:.3g}</b> (background {init['background']:.3g}, "
            f"objects {init['objects']:.3g}); the first step moves b by {run['bias'][1] - run['bias'][0]:+.2f}, "
            f"after {len(run['loss']) - 1} steps the loss is {run['loss'][-1]:.3g}"
        )
    return f"<div><b>π = {pi:.2g}</b>, class bias b = −log((1 − π)/π) = {bias:.2f}.<br>" + "<br>".join(parts) + "</div>"


def prior_explorer(
    num_positive: int,
    num_negative: int,
    num_classes: int,
    pi: float = PRIOR_PROBABILITY,
    steps: int = 10,
    lr: float = 0.01,
) -> Explorer:
    """A π slider over two panels: the first loss of all anchors against π, and the first SGD steps.

    An :class:`~retina_edu.viz._explorer.Explorer` (CSS class ``prior-explorer``) with one control,
    ``"pi"`` (a logarithmic slider, description "π", CSS class ``prior-pi``, from 10⁻⁴ to 0.5, the
    default bias 0); its readout (CSS class ``prior-readout``) is :func:`prior_readout`, and
    ``.result`` the two runs of :func:`plot_prior_first_steps`.

    Args:
        num_positive, num_negative, num_classes: P, N and K of the batch.
        pi: the initial π.
        steps, lr: the first steps' count and learning rate.

    Returns:
        The explorer (an ``ipywidgets.VBox``).
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from ._explorer import Explorer

    slider = widgets.FloatLogSlider(
        value=pi,
        base=10,
        min=math.log10(PI_RANGE[0]),
        max=math.log10(PI_RANGE[1]),
        step=0.05,
        description="π",
        continuous_update=False,
        readout_format=".2g",
    )
    slider.add_class("prior-pi")
    figure = Figure(figsize=(10, 3.4), dpi=80)
    ax_init, ax_steps = figure.subplots(1, 2)
    counts = (num_positive, num_negative, num_classes)

    def draw(values: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
        ax_init.clear()
        ax_steps.clear()
        p = float(values["pi"])
        plot_prior_initial_loss(*counts, pi=p, ax=ax_init)
        runs = plot_prior_first_steps(p, *counts, steps=steps, lr=lr, ax=ax_steps)
        figure.tight_layout()
        return runs

    return Explorer(
        {"pi": slider},
        draw,
        figure,
        readout=lambda runs, values: prior_readout(float(values["pi"]), *counts, runs),
        css_class="prior-explorer",
        readout_class="prior-readout",
    )


def plot_prior_panels(
    num_positive: int,
    num_negative: int,
    num_classes: int,
    pis: Sequence[float] = (PRIOR_PROBABILITY, 0.5),
    steps: int = 10,
) -> Figure:
    """The static twin of :func:`prior_explorer`: the first-loss curves, and the first steps at each of ``pis``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(pis), figsize=(4 * (1 + len(pis)), 3.2), sharey=False)
    plot_prior_initial_loss(num_positive, num_negative, num_classes, pi=None, ax=axes[0])
    for ax, p in zip(axes[1:], pis):
        plot_prior_first_steps(p, num_positive, num_negative, num_classes, steps=steps, reference=None, ax=ax)
        ax.set_title(f"the first steps from π = {p:g}", fontsize=9)
    fig.tight_layout()
    return fig


__all__ += ["plot_prior_panels"]
