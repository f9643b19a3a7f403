"""Training curves (notebooks 06, 08, 10): the live loss plot of ``train()`` and loss curves of several runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import PALETTE, _axes, finish_axes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class LiveLossPlot:
    """A training callback that redraws the loss curves (and val AP) while training runs.

    Use ``train(..., callbacks=[LiveLossPlot()])``. In Jupyter the figure updates in place every
    ``every`` steps; elsewhere (a script, a test) it draws nothing until ``figure()`` is called.

    Args:
        every: redraw every ``every`` steps.
        smooth: width (in steps) of the moving average drawn over the raw losses.
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
        """The loss curves (raw and smoothed) and, when there are evaluations, AP against steps.

        Args:
            history: ``train()``'s history: ``{"train": [{"step", "loss", "classification",
                "bbox_regression", ...}], "eval": [{"step", "AP", "AP50", ...}]}``.
        """
        import matplotlib.pyplot as plt

        steps = history["train"]
        evals = history.get("eval", [])
        fig, grid = plt.subplots(1, 2 if evals else 1, figsize=(9 if evals else 5, 3), squeeze=False)
        ax = grid[0, 0]
        if steps:
            x = np.array([r["step"] for r in steps])
            for key, color in (("loss", "k"), ("classification", "tab:blue"), ("bbox_regression", "tab:orange")):
                y = np.array([r[key] for r in steps])
                ax.plot(x, y, color=color, alpha=0.2, lw=0.8)
                k = max(1, min(self.smooth, len(y)))
                ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), color=color, label=key)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title("training loss")
        if evals:
            ax = grid[0, 1]
            ax.plot([e["step"] for e in evals], [e["AP"] for e in evals], "o-", label="AP")
            ax.plot([e["step"] for e in evals], [e["AP50"] for e in evals], "o-", label="AP50")
            ax.set_ylim(0, 1)
            ax.set_xlabel("step")
            ax.set_title("val mAP")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


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
    ax = _axes(ax)
    for i, (label, values) in enumerate(curves.items()):
        y = np.asarray([float(v) for v in values], dtype=np.float64)
        x = np.arange(len(y))
        bad = np.flatnonzero(~np.isfinite(y))
        color = (colors or {}).get(label, PALETTE[i % len(PALETTE)])
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
    return finish_axes(ax, title)
