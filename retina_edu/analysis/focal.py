"""The focal loss of notebook 03: its curves against p_t, how its total splits between easy negatives,
hard negatives and positives, and notebook 03's made-up batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..losses import sigmoid_focal_loss

__all__ = [
    "EASY_THRESHOLD",
    "ILLUSTRATIVE_NEGATIVES_PER_POSITIVE",
    "LOSS_GROUPS",
    "focal_loss_both_sides",
    "focal_loss_vs_pt",
    "illustrative_batch",
    "loss_shares",
]

LOSS_GROUPS = ("easy negatives", "hard negatives", "positives")
EASY_THRESHOLD = 0.5  # a negative with p_t above this is classified right: an "easy" negative
ILLUSTRATIVE_NEGATIVES_PER_POSITIVE = 500  # notebook 03's batch: 1 positive decision per ~500 negatives


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


def focal_loss_both_sides(p_t: Any, gamma: float, alpha: float | None = None) -> dict[str, Tensor]:
    """Focal loss of a *positive* and of a *negative* example at the same p_t, with their gradients.

    A positive has target 1 and p = p_t; a negative has target 0 and p = 1 - p_t (its logit is
    ``-logit(p_t)``). With ``alpha`` the positive is weighted by α and the negative by 1 - α, so
    the two curves differ by the factor (1 - α) / α; without it they coincide. The gradients are
    d loss / d logit from autograd through :func:`retina_edu.losses.sigmoid_focal_loss`, in float64
    (negative for a positive: raise its logit; positive for a negative: lower it).

    Args:
        p_t: probabilities of the right answer in (0, 1), any shape.
        gamma: focusing parameter, >= 0.
        alpha: the positives' weight α, or ``None`` for no weighting.

    Returns:
        ``{"positive", "negative", "positive_grad", "negative_grad"}``: float64 tensors shaped like ``p_t``.
    """
    p = torch.as_tensor(p_t, dtype=torch.float64).detach().cpu()
    if bool(((p <= 0) | (p >= 1)).any()):
        raise ValueError("focal_loss_both_sides: p_t must lie strictly between 0 and 1")
    out = {}
    for side, target, sign in (("positive", 1.0, 1.0), ("negative", 0.0, -1.0)):
        logits = (sign * torch.logit(p)).requires_grad_(True)
        loss = sigmoid_focal_loss(logits, torch.full_like(logits, target), alpha=alpha, gamma=gamma)
        (grad,) = torch.autograd.grad(loss.sum(), logits)
        out[side], out[f"{side}_grad"] = loss.detach(), grad
    return out


def illustrative_batch(num_positive: int = 1000, seed: int = 3) -> tuple[Tensor, Tensor]:
    """Made-up logits of a partly trained detector (notebook 03's recipe), with their 0/1 targets.

    An illustration, not a measurement: :data:`ILLUSTRATIVE_NEGATIVES_PER_POSITIVE` negative
    decisions per positive; the negatives' logits are N(-5, 1) for 97% of them (background already
    dismissed, p_t ≈ 0.99) and N(-1, 1.5) for the 3% that look like something; the positives' are
    N(1, 2).

    Returns:
        ``(logits Tensor[N] float32, targets Tensor[N] float32)``, positives first, N =
        ``num_positive * (1 + ILLUSTRATIVE_NEGATIVES_PER_POSITIVE)``.
    """
    if num_positive < 1:
        raise ValueError(f"illustrative_batch: num_positive must be >= 1, got {num_positive}")
    num_negative = num_positive * ILLUSTRATIVE_NEGATIVES_PER_POSITIVE
    gen = torch.Generator().manual_seed(seed)
    positives = 1.0 + 2.0 * torch.randn(num_positive, generator=gen)
    noise = torch.randn(num_negative, generator=gen)
    looks_like_something = torch.rand(num_negative, generator=gen) < 0.03
    negatives = torch.where(looks_like_something, -1.0 + 1.5 * noise, -5.0 + 1.0 * noise)
    targets = torch.cat([torch.ones(num_positive), torch.zeros(num_negative)])
    return torch.cat([positives, negatives]), targets
