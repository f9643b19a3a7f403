"""The paper's Figure 4 (notebook 10): every anchor's focal loss at several γ for one model's logits,
the cumulative normalised loss and the share of the hardest samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..losses import sigmoid_focal_loss

__all__ = [
    "FIGURE4_GAMMAS",
    "anchor_losses",
    "hardest_share",
    "loss_cdf",
]

FIGURE4_GAMMAS = (0.0, 0.5, 1.0, 2.0)  # the γ of the paper's Figure 4


def anchor_losses(
    logits: dict[str, Tensor], gammas: Sequence[float] = FIGURE4_GAMMAS
) -> dict[float, dict[str, Tensor]]:
    """The focal loss of every positive and every negative anchor, at each γ, for one model's logits.

    As in the paper's Figure 4, the model stays the same (it was trained with one γ): only the
    loss applied to its predictions changes. A positive anchor's loss is that of its true class
    (target 1); a negative anchor's is the sum over the K classes (all targets 0). No α: it
    multiplies a whole group by one constant, which the normalisation in :func:`loss_cdf` removes.

    Args:
        logits: ``{"positive": Tensor[P], "negative": Tensor[N, K]}`` (:func:`anchor_logits`).
        gammas: the γ values.

    Returns:
        ``{γ: {"positive": Tensor[P], "negative": Tensor[N]}}`` in float64.
    """
    pos = logits["positive"].double()
    neg = logits["negative"].double()
    out = {}
    for gamma in gammas:
        out[float(gamma)] = {
            "positive": sigmoid_focal_loss(pos, torch.ones_like(pos), alpha=None, gamma=gamma),
            "negative": sigmoid_focal_loss(neg, torch.zeros_like(neg), alpha=None, gamma=gamma).sum(dim=-1),
        }
    return out


def loss_cdf(losses: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's Figure 4 curve: the cumulative normalised loss against the fraction of samples.

    Sort the losses ascending, take the cumulative sum, divide by the total.

    Args:
        losses: ``Tensor[N]`` of non-negative losses, N >= 1, not all zero.

    Returns:
        ``(fraction Tensor[N] = (1..N) / N, cumulative Tensor[N])`` in float64; ``cumulative[i]``
        is the share of the total loss carried by the ``i + 1`` easiest samples (the last is 1).
    """
    losses = torch.as_tensor(losses).detach().flatten().double().cpu()
    if losses.numel() == 0:
        raise ValueError("loss_cdf needs at least one loss")
    if not bool(torch.isfinite(losses).all()) or bool((losses < 0).any()):
        raise ValueError("loss_cdf needs finite, non-negative losses")
    total = losses.sum()
    if total <= 0:
        raise ValueError("loss_cdf: all losses are zero, there is nothing to normalise")
    cumulative = torch.cumsum(losses.sort().values, dim=0) / total
    fraction = torch.arange(1, losses.numel() + 1, dtype=torch.float64) / losses.numel()
    return fraction, cumulative


def hardest_share(losses: Tensor, fraction: float = 0.1) -> float:
    """The share of the total loss carried by the hardest ``fraction`` of the samples (the
    ``ceil(fraction * N)`` largest losses): 1 minus :func:`loss_cdf` read at ``1 - fraction``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    losses = torch.as_tensor(losses).detach().flatten().double()
    k = max(1, math.ceil(fraction * losses.numel() - 1e-9))
    return float(losses.topk(k).values.sum() / losses.sum())
