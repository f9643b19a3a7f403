"""The numbers the course's figures draw, computed with the package and tested (notebooks 01-03, 10).

``retina_edu.viz`` only draws: every quantity a figure or a widget shows comes from here (or from
the core modules) so that it has one source of truth and a test. All functions are plain torch:

* :func:`focal_loss_vs_pt`: the focal loss of one positive example against p_t, with its
  gradient (notebook 03, the paper's Figure 1);
* :func:`loss_shares`: how the total focal loss splits between easy negatives, hard negatives
  and positives (notebook 03);
* :func:`match_counts`, :func:`best_iou`: the labels of the anchors and the IoU they were
  labelled from (notebook 02);
* :func:`anchor_grid`: one pyramid level's anchors of one shape, as a grid (notebook 01);
* :func:`anchor_losses`, :func:`loss_cdf`, :func:`hardest_share`: the paper's Figure 4
  (notebook 10).

This module imports only core modules (boxes, anchors, matching, losses), never ``viz`` or ``train``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .anchors import AnchorGenerator, feature_map_sizes
from .boxes import box_iou
from .losses import sigmoid_focal_loss
from .matching import BACKGROUND, IGNORE

__all__ = [
    "EASY_THRESHOLD",
    "FIGURE4_GAMMAS",
    "LOSS_GROUPS",
    "anchor_grid",
    "best_iou",
    "anchor_losses",
    "focal_loss_vs_pt",
    "hardest_share",
    "loss_cdf",
    "loss_shares",
    "match_counts",
]

FIGURE4_GAMMAS = (0.0, 0.5, 1.0, 2.0)  # the γ of the paper's Figure 4
LOSS_GROUPS = ("easy negatives", "hard negatives", "positives")
EASY_THRESHOLD = 0.5  # a negative with p_t above this is classified right: an "easy" negative


# ---------------------------------------------------------------------------------------------
# Focal loss (notebook 03)
# ---------------------------------------------------------------------------------------------
def focal_loss_vs_pt(p_t: Any, gamma: float, alpha: float | None = None) -> dict[str, Tensor]:
    """Focal loss of one *positive* example as a function of p_t, with its gradient.

    The loss comes from :func:`retina_edu.losses.sigmoid_focal_loss` at the logit
    ``x = log(p_t / (1 - p_t))`` (target 1, so p_t = sigmoid(x)); the gradient d loss / d x from
    autograd, in float64. A negative example at the same p_t has the same curves with ``1 - alpha``
    instead of ``alpha`` (and the gradient's sign flipped).

    Args:
        p_t: probabilities in (0, 1), any shape (tensor, array or list).
        gamma: focusing parameter, >= 0.
        alpha: the positives' weight α, or ``None`` for no weighting.

    Returns:
        ``{"loss", "ce", "factor", "grad", "ce_grad"}``: float64 tensors shaped like ``p_t``;
        ``ce`` is plain cross entropy ``-log p_t`` (no α), ``factor`` the modulating factor
        ``(1 - p_t)^γ``, ``ce_grad`` the gradient of plain CE, ``p_t - 1``.
    """
    p = torch.as_tensor(p_t, dtype=torch.float64).detach().cpu()
    if bool(((p <= 0) | (p >= 1)).any()):
        raise ValueError("focal_loss_vs_pt: p_t must lie strictly between 0 and 1")
    logits = torch.logit(p).requires_grad_(True)
    loss = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha=alpha, gamma=gamma)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    return {
        "loss": loss.detach(),
        "ce": -torch.log(p),
        "factor": (1 - p) ** gamma,
        "grad": grad,
        "ce_grad": p - 1,
    }


def _loss_groups(
    logits: Any, targets: Any, easy_threshold: float = EASY_THRESHOLD
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Flatten ``logits``/``targets`` and split the entries into the three :data:`LOSS_GROUPS`.

    Returns:
        ``(logits Tensor[N] float32, targets Tensor[N], (easy negatives, hard negatives, positives))``,
        the groups as ``BoolTensor[N]`` masks that partition the N entries.
    """
    logits = torch.as_tensor(logits).detach().reshape(-1).float()
    targets = torch.as_tensor(targets).detach().reshape(-1).to(logits.dtype)
    if logits.shape != targets.shape:
        raise ValueError(f"loss_shares: {logits.numel()} logits but {targets.numel()} targets")
    positive = targets > 0.5
    p_t = torch.where(positive, torch.sigmoid(logits), torch.sigmoid(-logits))
    easy_negative = ~positive & (p_t > easy_threshold)
    return logits, targets, (easy_negative, ~positive & ~easy_negative, positive)


def loss_shares(
    logits: Any, targets: Any, gamma: float, alpha: float | None = None, easy_threshold: float = EASY_THRESHOLD
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
    logits, targets, masks = _loss_groups(logits, targets, easy_threshold)
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma).double()
    total = float(loss.sum())
    out = {name: float(loss[mask].sum()) / total for name, mask in zip(LOSS_GROUPS, masks)}
    out["total"] = total
    out.update({f"count: {name}": int(mask.sum()) for name, mask in zip(LOSS_GROUPS, masks)})
    return out


# ---------------------------------------------------------------------------------------------
# Anchors and matching (notebooks 01-02)
# ---------------------------------------------------------------------------------------------
def match_counts(matches: Any) -> dict[str, int]:
    """How many anchors are positive (``>= 0``), ignored (``IGNORE``) and negative (``BACKGROUND``).

    Args:
        matches: ``LongTensor[A]`` (any shape) matched box index per anchor, ``BACKGROUND`` or
            ``IGNORE``, as returned by :func:`retina_edu.matching.match_anchors`.

    Returns:
        ``{"positive": int, "ignored": int, "negative": int}``.
    """
    m = torch.as_tensor(matches).reshape(-1)
    return {
        "positive": int((m >= 0).sum()),
        "ignored": int((m == IGNORE).sum()),
        "negative": int((m == BACKGROUND).sum()),
    }


def best_iou(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Each anchor's best IoU with any ground-truth box (what the 0.5 / 0.4 thresholds compare).

    Args:
        anchors: ``Tensor[A, 4]`` xyxy.
        gt_boxes: ``Tensor[M, 4]`` xyxy, M >= 0.

    Returns:
        ``Tensor[A]``: ``max_j IoU(anchor, box_j)``, 0 for every anchor when there are no boxes.
    """
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    if len(gt_boxes) == 0:
        return torch.zeros(len(anchors))
    return box_iou(gt_boxes, anchors).max(dim=0).values


def anchor_grid(
    image_size: tuple[int, int],
    level: int,
    scale_index: int,
    ratio_index: int,
    generator: AnchorGenerator | None = None,
) -> Tensor:
    """One pyramid level's anchors of one scale and aspect ratio, laid out as the level's grid.

    Args:
        image_size: ``(H, W)`` of the image.
        level: index of the level in the generator's strides (0 is P3).
        scale_index: index of the scale within a location (``0..len(scales) - 1``).
        ratio_index: index of the aspect ratio (height / width) within a location.
        generator: the anchor settings; ``None`` means the paper's (``AnchorGenerator()``).

    Returns:
        ``Tensor[H_l, W_l, 4]`` xyxy float32 in pixels: the anchor of that shape at every location
        of the level, exactly as ``generator(image_size)`` makes them.
    """
    generator = AnchorGenerator() if generator is None else generator
    num_scales = len(generator.level_sizes[0])
    for name, index, count in (("level", level, len(generator.strides)), ("scale_index", scale_index, num_scales),
                               ("ratio_index", ratio_index, len(generator.aspect_ratios))):
        if not 0 <= index < count:
            raise ValueError(f"anchor_grid: {name} must be in 0..{count - 1}, got {index}")
    image_size = (int(image_size[0]), int(image_size[1]))
    per_level = torch.split(generator(image_size), generator.num_anchors_per_level(image_size))
    grid_h, grid_w = feature_map_sizes(image_size, generator.strides)[level]
    # anchor index within a location: ratio major, scale minor (retina_edu.anchors' order)
    per_location = generator.num_anchors_per_location
    return per_level[level].view(grid_h, grid_w, per_location, 4)[:, :, ratio_index * num_scales + scale_index]


# ---------------------------------------------------------------------------------------------
# The paper's Figure 4 (notebook 10)
# ---------------------------------------------------------------------------------------------
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
