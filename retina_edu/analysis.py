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


# ---------------------------------------------------------------------------------------------
# The whole RetinaNet loss: box losses and the normaliser (notebook 04)
# ---------------------------------------------------------------------------------------------
def box_losses_vs_offset(offsets: Any, beta: float | None = None) -> dict[str, Tensor]:
    """The box losses of one coordinate predicted ``offsets`` away from its target, with gradients.

    L1 and smooth L1 (:func:`retina_edu.losses.smooth_l1_loss`) of an error ``x`` in one delta,
    and the GIoU loss (:func:`retina_edu.losses.giou_loss`) of a unit square shifted sideways by
    ``x`` widths (the box an error ``x`` in ``dx`` decodes to). Gradients come from autograd, in
    float64.

    Args:
        offsets: the errors ``x``, any shape (tensor, array or list).
        beta: smooth L1's β (``None``: the paper's ``SMOOTH_L1_BETA`` = 0.11; 0 is L1).

    Returns:
        ``{"l1", "smooth_l1", "giou", "l1_grad", "smooth_l1_grad", "giou_grad"}``: float64
        tensors shaped like ``offsets``.
    """
    from .losses import SMOOTH_L1_BETA, giou_loss, smooth_l1_loss

    beta = SMOOTH_L1_BETA if beta is None else float(beta)
    if beta < 0:
        raise ValueError(f"box_losses_vs_offset: beta must be >= 0, got {beta}")
    x = torch.as_tensor(offsets, dtype=torch.float64).detach().cpu().clone().requires_grad_(True)
    zero = torch.zeros_like(x)
    out: dict[str, Tensor] = {}
    out["l1"] = smooth_l1_loss(x, zero, beta=0.0, reduction="none")
    out["smooth_l1"] = smooth_l1_loss(x, zero, beta=beta, reduction="none")
    unit = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    shifted = unit + torch.stack([x, zero, x, zero], dim=-1)
    out["giou"] = giou_loss(shifted, unit.expand_as(shifted), reduction="none", eps=0.0)
    for name in ("l1", "smooth_l1", "giou"):
        (grad,) = torch.autograd.grad(out[name].sum(), x, retain_graph=True)
        out[f"{name}_grad"] = grad
    return {name: value.detach() for name, value in out.items()}


def positive_box_targets(
    anchors: Tensor, targets: list[dict[str, Tensor]], box_coder: Any = None
) -> dict[str, Tensor]:
    """The regression targets of a batch: every positive anchor, its box and its offsets.

    Anchors are labelled by :func:`retina_edu.matching.label_anchors` (the paper's rule) and the
    offsets encoded by :class:`retina_edu.boxes.BoxCoder` (weights (1, 1, 1, 1)), as
    ``retinanet_loss`` does.

    Args:
        anchors: ``Tensor[A, 4]`` xyxy, shared by the batch.
        targets: one ``{"boxes": Tensor[N_i, 4] xyxy, "labels": Tensor[N_i]}`` per image.
        box_coder: a ``BoxCoder``; ``None`` for RetinaNet's.

    Returns:
        ``{"deltas": Tensor[P, 4] (dx, dy, dw, dh), "anchors": Tensor[P, 4], "boxes": Tensor[P, 4],
        "image": LongTensor[P]}`` for the P positive anchors, image by image, anchor order.
    """
    from .boxes import BoxCoder
    from .matching import label_anchors

    box_coder = box_coder or BoxCoder()
    labelled = label_anchors(anchors, targets)
    positive = labelled.positive
    pos_anchors = anchors[None].expand(len(targets), -1, -1)[positive]
    boxes = labelled.boxes[positive]
    return {
        "deltas": box_coder.encode(pos_anchors, boxes),
        "anchors": pos_anchors,
        "boxes": boxes,
        "image": positive.nonzero()[:, 0],
    }


def box_losses_per_anchor(
    anchors: Tensor, boxes: Tensor, deltas: Tensor | None = None, beta: float | None = None
) -> dict[str, Tensor]:
    """Each positive anchor's box loss under L1, smooth L1 and GIoU, for predicted ``deltas``.

    Args:
        anchors: ``Tensor[P, 4]`` xyxy.
        boxes: ``Tensor[P, 4]`` xyxy, the box each anchor is matched to.
        deltas: ``Tensor[P, 4]`` predicted offsets; ``None`` predicts zeros (the anchor itself,
            what a box subnet initialised to zero outputs).
        beta: smooth L1's β (``None``: ``SMOOTH_L1_BETA``).

    Returns:
        ``{"l1", "smooth_l1", "giou"}``: ``Tensor[P]`` float64, L1 and smooth L1 summed over the
        four offsets, GIoU on the decoded boxes.
    """
    from .boxes import BoxCoder
    from .losses import SMOOTH_L1_BETA, giou_loss, smooth_l1_loss

    beta = SMOOTH_L1_BETA if beta is None else float(beta)
    anchors, boxes = anchors.double(), boxes.double()
    if anchors.shape != boxes.shape or anchors.shape[-1:] != (4,):
        raise ValueError(f"box_losses_per_anchor: anchors {list(anchors.shape)} and boxes {list(boxes.shape)} "
                         f"must both be [P, 4]")
    deltas = torch.zeros_like(anchors) if deltas is None else deltas.double()
    coder = BoxCoder()
    target = coder.encode(anchors, boxes)
    return {
        "l1": smooth_l1_loss(deltas, target, beta=0.0, reduction="none").sum(-1),
        "smooth_l1": smooth_l1_loss(deltas, target, beta=beta, reduction="none").sum(-1),
        "giou": giou_loss(coder.decode(anchors, deltas), boxes, reduction="none", eps=0.0),
    }


def quadratic_share(errors: Any, beta: float) -> float:
    """The share of ``errors`` that fall in smooth L1's quadratic zone, ``|x| < β`` (0 when β = 0)."""
    errors = torch.as_tensor(errors, dtype=torch.float64).flatten()
    if errors.numel() == 0:
        raise ValueError("quadratic_share needs at least one error")
    return float((errors.abs() < beta).double().mean())


def loss_sums_per_image(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    box_loss: str = "smooth_l1",
    beta: float | None = None,
) -> dict[str, Tensor]:
    """Per image, the RetinaNet loss before it is divided: the sums and the counts a normaliser uses.

    The focal loss (α = 0.25, γ = 2) summed over every class of every anchor that is not ignored,
    the box loss summed over the positive anchors, and the anchor counts; ``retinanet_loss`` is
    :func:`normalise_loss` of this.

    Args:
        cls_logits: ``Tensor[B, A, K]``; box_deltas: ``Tensor[B, A, 4]``; anchors: ``Tensor[A, 4]``.
        targets: one ``{"boxes", "labels"}`` dict per image (``N = 0`` allowed).
        box_loss: ``"smooth_l1"``, ``"l1"`` or ``"giou"``.
        beta: smooth L1's β (``None``: ``SMOOTH_L1_BETA``).

    Returns:
        ``{"classification", "bbox_regression"}``: ``Tensor[B]`` float64 sums; ``{"positives",
        "negatives", "ignored"}``: ``LongTensor[B]`` anchor counts.
    """
    from .boxes import BoxCoder
    from .losses import SMOOTH_L1_BETA, giou_loss, sigmoid_focal_loss, smooth_l1_loss
    from .matching import label_anchors

    beta = SMOOTH_L1_BETA if beta is None else float(beta)
    if box_loss not in ("smooth_l1", "l1", "giou"):
        raise ValueError(f"loss_sums_per_image: box_loss must be 'smooth_l1', 'l1' or 'giou', got {box_loss!r}")
    labelled = label_anchors(anchors, targets)
    positive, valid = labelled.positive, labelled.valid
    x = cls_logits.detach().double()
    onehot = torch.nn.functional.one_hot(labelled.labels.clamp(min=0), x.shape[-1]).double() * positive[..., None]
    cls = (sigmoid_focal_loss(x, onehot) * valid[..., None]).sum((1, 2))
    coder = BoxCoder()
    all_anchors = anchors.double()[None].expand(len(targets), -1, -1)
    deltas, boxes = box_deltas.detach().double(), labelled.boxes.double()
    if box_loss == "giou":
        per_anchor = giou_loss(coder.decode(all_anchors, deltas), boxes, reduction="none", eps=0.0)
    else:
        encoded = coder.encode(all_anchors, boxes)
        per_anchor = smooth_l1_loss(deltas, encoded, beta=0.0 if box_loss == "l1" else beta, reduction="none").sum(-1)
    box = torch.where(positive, per_anchor, torch.zeros_like(per_anchor)).sum(1)
    return {
        "classification": cls,
        "bbox_regression": box,
        "positives": positive.sum(1),
        "negatives": (labelled.matches == -1).sum(1),
        "ignored": (~valid).sum(1),
    }


def normalise_loss(sums: dict[str, Tensor], normalize: str = "batch") -> dict[str, Any]:
    """Divide the per-image sums of :func:`loss_sums_per_image` the paper's way or torchvision's.

    ``"batch"`` (the paper, Detectron): every sum over the batch divided by the batch's positive
    anchors (at least 1). ``"image"`` (torchvision): each image's sums divided by its own
    positives (at least 1), then the mean over the images.

    Returns:
        ``{"classification", "bbox_regression"}``: the two losses (floats); ``"per_image"``:
        ``Tensor[B]`` float64, each image's part of their sum (the parts add up to the loss);
        ``"weight"``: ``Tensor[B]`` float64, the factor each image's sums are multiplied by
        (the weight of one unit of loss of that image in the gradient).
    """
    pos = sums["positives"].double()
    batch = pos.numel()
    if normalize == "batch":
        weight = torch.full_like(pos, 1.0 / float(pos.sum().clamp(min=1)))
    elif normalize == "image":
        weight = 1.0 / (pos.clamp(min=1) * batch)
    else:
        raise ValueError(f"normalise_loss: normalize must be 'batch' or 'image', got {normalize!r}")
    cls, box = sums["classification"].double() * weight, sums["bbox_regression"].double() * weight
    return {
        "classification": float(cls.sum()),
        "bbox_regression": float(box.sum()),
        "per_image": cls + box,
        "weight": weight,
    }


# ---------------------------------------------------------------------------------------------
# Widgets of notebooks 03, 05 and 06: both sides of the focal loss, the prior, levels, shapes
# ---------------------------------------------------------------------------------------------
ILLUSTRATIVE_NEGATIVES_PER_POSITIVE = 500  # notebook 03's batch: 1 positive decision per ~500 negatives


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


def _check_counts(where: str, num_positive: int, num_negative: int, num_classes: int) -> None:
    if num_positive < 1 or num_negative < 0 or num_classes < 1:
        raise ValueError(f"{where}: need num_positive >= 1, num_negative >= 0, num_classes >= 1, got "
                         f"{num_positive}, {num_negative}, {num_classes}")


def prior_initial_loss(
    pi: float, num_positive: int, num_negative: int, num_classes: int, gamma: float = 2.0, alpha: float | None = 0.25
) -> dict[str, float]:
    """The classification loss at the first step when every score is p = π, divided by P (notebook 06).

    Each of the P positive anchors makes one decision with target 1 and K - 1 with target 0; each
    of the N negative anchors K decisions with target 0. So the loss is
    ``[(N K + P (K - 1)) (1 - α) π^γ (-log(1 - π)) + P α (1 - π)^γ (-log π)] / P``.

    Args:
        pi: the prior probability every score starts at, in (0, 1).
        num_positive, num_negative: P and N, the positive and background anchors of the batch.
        num_classes: K.
        gamma, alpha: the focal loss's (γ = 0 and α = ``None`` for cross entropy).

    Returns:
        ``{"total", "background", "objects"}``: the loss and its parts from the targets 0 (background)
        and the targets 1 (objects), each divided by P.
    """
    _check_counts("prior_initial_loss", num_positive, num_negative, num_classes)
    if not 0 < pi < 1:
        raise ValueError(f"prior_initial_loss: pi must lie in (0, 1), got {pi}")
    w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    zeros = num_negative * num_classes + num_positive * (num_classes - 1)
    background = zeros * w_neg * pi**gamma * -math.log(1 - pi) / num_positive
    objects = w_pos * (1 - pi) ** gamma * -math.log(pi)
    return {"total": background + objects, "background": background, "objects": objects}


def prior_first_steps(
    pi: float,
    num_positive: int,
    num_negative: int,
    num_classes: int,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    steps: int = 10,
    lr: float = 0.01,
    momentum: float = 0.9,
) -> dict[str, list[float]]:
    """The first SGD steps of a tiny model: the class bias b alone, started at ``prior_bias(π)``.

    Every decision of the batch has the logit b (what the prior initialisation gives, up to the
    σ = 0.01 weights), so the loss is that of :func:`prior_initial_loss` at p = sigmoid(b), and
    SGD with momentum (the paper's 0.01 and 0.9) moves b. It shows what the first steps spend
    their effort on: from a bias far from the background's, the first steps push all scores down.
    One shared logit takes the whole gradient; the real network spreads it over its A·K bias
    entries and all the weights below them, so this is the direction and the size of the push on
    the logits, not the step of any one parameter.

    Returns:
        ``{"loss", "bias", "p"}``: one value per step (``steps + 1``, the start included): the
        classification loss (divided by P), the bias and sigmoid(bias).
    """
    _check_counts("prior_first_steps", num_positive, num_negative, num_classes)
    if not 0 < pi < 1:
        raise ValueError(f"prior_first_steps: pi must lie in (0, 1), got {pi}")
    zeros = float(num_negative * num_classes + num_positive * (num_classes - 1))
    ones = float(num_positive)
    bias = torch.tensor(math.log(pi / (1 - pi)), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([bias], lr=lr, momentum=momentum)
    out: dict[str, list[float]] = {"loss": [], "bias": [], "p": []}
    for step in range(steps + 1):
        logit = bias.reshape(1)
        loss = (zeros * sigmoid_focal_loss(logit, torch.zeros(1, dtype=torch.float64), alpha=alpha, gamma=gamma)
                + ones * sigmoid_focal_loss(logit, torch.ones(1, dtype=torch.float64), alpha=alpha, gamma=gamma)
                ).sum() / num_positive
        out["loss"].append(float(loss.detach()))
        out["bias"].append(float(bias.detach()))
        out["p"].append(float(torch.sigmoid(bias.detach())))
        if step < steps:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return out


def box_level_assignment(
    size: float,
    aspect: float = 1.0,
    image_size: tuple[int, int] = (512, 512),
    center: tuple[float, float] | None = None,
    **anchor_kwargs: Any,
) -> dict[str, Any]:
    """Which pyramid level an object of a given size and aspect ratio is assigned to (notebook 05).

    The box has ``sqrt(w h) = size`` and ``h / w = aspect`` and is centred at ``center`` (default:
    the image's centre); it is matched with :func:`retina_edu.matching.match_anchors` against the
    anchors of :func:`retina_edu.anchors.anchors_per_level` (the paper's, unless ``anchor_kwargs``
    say otherwise).

    Returns:
        ``{"box": [x1, y1, x2, y2], "best_iou": [float per level], "best_anchor": [[x1, y1, x2, y2]
        per level] (each level's best anchor), "positives": [int per level] (anchors matched to the box),
        "ignored": [int per level], "level": int (the level of the best anchor overall)}``.
    """
    from .anchors import anchors_per_level
    from .matching import match_anchors

    if size <= 0 or aspect <= 0:
        raise ValueError(f"box_level_assignment: size and aspect must be positive, got {size}, {aspect}")
    cy, cx = (image_size[0] / 2, image_size[1] / 2) if center is None else (center[1], center[0])
    w, h = size / math.sqrt(aspect), size * math.sqrt(aspect)
    box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=torch.float32)
    levels = anchors_per_level(image_size, **anchor_kwargs)
    matches = match_anchors(torch.cat(levels), box[None])
    best_iou, best_anchor, positives, ignored = [], [], [], []
    start = 0
    for anchors in levels:
        iou = box_iou(anchors, box[None])[:, 0]
        k = int(iou.argmax())
        best_iou.append(float(iou[k]))
        best_anchor.append(anchors[k])
        level_matches = matches[start : start + len(anchors)]
        positives.append(int((level_matches >= 0).sum()))
        ignored.append(int((level_matches == IGNORE).sum()))
        start += len(anchors)
    return {  # plain lists: an explorer compares results with ==
        "box": box.tolist(),
        "best_iou": best_iou,
        "best_anchor": torch.stack(best_anchor).tolist(),
        "positives": positives,
        "ignored": ignored,
        "level": max(range(len(levels)), key=lambda i: best_iou[i]),
    }


def network_shapes(model: torch.nn.Module, image_size: tuple[int, int] = (512, 512)) -> dict[str, Any]:
    """The tensor shapes through a :class:`retina_edu.model.RetinaNet`, measured by running it.

    Runs ``model.backbone``, ``model.fpn`` and both subnets on a zero batch of one image of
    ``image_size`` (already normalised: no resizing), with forward hooks on each subnet's last conv
    to record its per-level output before the reshape.

    Returns:
        ``{"input": [1, 3, H, W], "C": [shape of C3, C4, C5], "P": [shapes of P3..P7],
        "class_raw": [[1, A K, H_l, W_l] per level], "box_raw": [[1, 4 A, H_l, W_l] per level],
        "class": [1, sum H_l W_l A, K], "box": [1, sum H_l W_l A, 4]}``, shapes as lists of ints.
    """
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"network_shapes: image_size must be (H, W) with positive sides, got {image_size}")
    raw: dict[str, list[list[int]]] = {"class_raw": [], "box_raw": []}
    hooks = [
        subnet.out.register_forward_hook(lambda _m, _i, out, key=key: raw[key].append(list(out.shape)))
        for key, subnet in (("class_raw", model.class_subnet), ("box_raw", model.box_subnet))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, *image_size)
            cs = model.backbone(x)
            ps = model.fpn(*cs)
            cls, box = model.class_subnet(ps), model.box_subnet(ps)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {
        "input": list(x.shape),
        "C": [list(c.shape) for c in cs],
        "P": [list(p.shape) for p in ps],
        **raw,
        "class": list(cls.shape),
        "box": list(box.shape),
    }


# ---------------------------------------------------------------------------------------------
# Loss maps and the detector's output on one image (notebook 09)
# ---------------------------------------------------------------------------------------------
from .matching import label_anchors as _label_anchors  # noqa: E402
from .postprocess import postprocess_detections as _postprocess_detections  # noqa: E402

LOSS_MAP_ALPHA = 0.25  # the paper's α for γ = 2 (Table 1b)
MATCH_IOU = 0.5  # a kept detection is a true positive when it overlaps a free same-class box this much


def anchor_outputs(model: Any, image: Tensor, target: dict[str, Tensor]) -> dict[str, Any]:
    """One image through a trained detector: every anchor's class logits, its training label,
    the pyramid features and the candidate detections before NMS.

    The model is used through its public steps (``preprocess``, ``features``, ``head_outputs``,
    ``postprocess``), in eval mode and without gradients; its training mode is restored after.

    Args:
        model: a :class:`retina_edu.model.RetinaNet` (anything with the same methods and ``config``).
        image: ``Tensor[3, H, W]`` floats in [0, 1].
        target: ``{"boxes": Tensor[N, 4] xyxy pixels, "labels": LongTensor[N]}`` (N may be 0).

    Returns:
        ``{"cls_logits": Tensor[A, K] float32, "matches": LongTensor[A], "labels": LongTensor[A]``
        (the training matcher's labels, :func:`retina_edu.matching.label_anchors`),
        ``"grid_sizes": [(H_l, W_l)]`` per level, ``"features": [Tensor[C, H_l, W_l]]`` (P3-P7),
        ``"input_size": (H, W)`` of the resized image inside the padded input,
        ``"padded_size": (H, W)`` of the padded input the anchors cover,
        ``"boxes"``/``"gt_labels"``: the target in the input's pixels,
        ``"candidates": {"boxes", "scores", "labels"}``: every detection above the model's score
        threshold (top-k per level) *before* NMS, in the image's own pixels, best first}``.
    """
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"anchor_outputs: image must be a Tensor[3, H, W], got {getattr(image, 'shape', image)}")
    if "boxes" not in target or "labels" not in target:
        raise ValueError("anchor_outputs: target must have 'boxes' and 'labels'")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            gt = {"boxes": target["boxes"].to(device).float(), "labels": target["labels"].to(device)}
            batch, sizes, original_sizes, scaled = model.preprocess([image.to(device)], [gt])
            features = model.features(batch)
            cls_logits, box_deltas, anchors, num_per_level = model.head_outputs(batch)
            c = model.config
            labelled = _label_anchors(anchors, scaled, c.fg_iou, c.bg_iou, c.allow_low_quality)
            # NMS at IoU 1.0 suppresses nothing: the candidates NMS would see, best first
            candidates = _postprocess_detections(
                cls_logits, box_deltas, anchors, num_per_level, sizes, score_thresh=c.score_thresh,
                topk_candidates=c.topk_candidates, nms_thresh=1.0,
                detections_per_img=c.topk_candidates * len(num_per_level), box_coder=model.box_coder)[0]
            if tuple(sizes[0]) != tuple(original_sizes[0]):  # back to the image's own pixels
                (h, w), (oh, ow) = sizes[0], original_sizes[0]
                factor = torch.tensor([ow / w, oh / h, ow / w, oh / h], device=device)
                candidates["boxes"] = candidates["boxes"] * factor
    finally:
        model.train(was_training)
    grid_sizes = [tuple(int(s) for s in f.shape[-2:]) for f in features]
    return {
        "cls_logits": cls_logits[0].float().cpu(),
        "matches": labelled.matches[0].cpu(),
        "labels": labelled.labels[0].cpu(),
        "grid_sizes": grid_sizes,
        "features": [f[0].float().cpu() for f in features],
        "input_size": tuple(int(s) for s in sizes[0]),
        "padded_size": tuple(int(s) for s in batch.shape[-2:]),
        "boxes": scaled[0]["boxes"].cpu(),
        "gt_labels": scaled[0]["labels"].cpu(),
        "candidates": {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in candidates.items()},
    }


def anchor_loss_map(
    cls_logits: Tensor,
    matches: Tensor,
    labels: Tensor,
    grid_sizes: Sequence[tuple[int, int]],
    gamma: float,
    alpha: float | None = LOSS_MAP_ALPHA,
    easy_threshold: float = EASY_THRESHOLD,
) -> dict[str, Any]:
    """Where one image's classification loss sits: per anchor, per location, per group, CE against FL.

    Each of the K classes is its own binary classifier (sigmoid), as in the paper: an anchor's
    loss is the sum over its K (anchor, class) entries of FL(p_t) = -α_t (1 - p_t)^γ log p_t,
    target 1 for the true class of a positive anchor and 0 for every other entry. Ignored anchors
    (IoU in [0.4, 0.5)) count for nothing, as in training. The groups of :func:`loss_shares` are
    those of the entries: a negative entry is *easy* when its p_t > ``easy_threshold``. "CE" is the
    same loss at γ = 0 with the same α, so ``ce_over_fl`` measures what the factor (1 - p_t)^γ alone
    removes. No division by the number of positives: it scales CE and FL alike.

    Args:
        cls_logits: ``Tensor[A, K]`` one image's class logits, anchors in the package's order
            (level by level; in a level row-major over locations; the anchors of a location last).
        matches: ``LongTensor[A]`` matched box index, ``BACKGROUND`` or ``IGNORE`` per anchor.
        labels: ``LongTensor[A]`` the matched box's class for the positive anchors (others unused).
        grid_sizes: ``(H_l, W_l)`` of each level; ``A`` must be ``sum(H_l * W_l) * anchors per location``.
        gamma: focusing parameter (0: cross entropy).
        alpha: the positives' weight α (negatives ``1 - α``), or ``None`` for none.
        easy_threshold: p_t above which a negative entry is easy.

    Returns:
        A dict, in float64: ``"loss"``/``"ce"``: ``Tensor[A]`` per-anchor loss at (γ, α) and at
        (0, α); ``"maps"``/``"ce_maps"``: per level a ``Tensor[H_l, W_l]``, the sum over the
        anchors of each location; ``"shares"``/``"ce_shares"``: ``{group: share}`` over
        :data:`LOSS_GROUPS` (summing to 1); ``"level_shares"``/``"ce_level_shares"``: each level's
        share; ``"total"``, ``"ce_total"``, ``"ce_over_fl"`` (= ce_total / total); ``"counts"``:
        entries per group, and ``"ignored"`` anchors.
    """
    logits = torch.as_tensor(cls_logits).detach().double().cpu()
    matches = torch.as_tensor(matches).detach().reshape(-1).cpu()
    labels = torch.as_tensor(labels).detach().reshape(-1).cpu()
    if logits.dim() != 2 or len(matches) != len(logits) or len(labels) != len(logits):
        raise ValueError(f"anchor_loss_map: cls_logits must be [A, K] with A matches and labels, got "
                         f"{list(logits.shape)}, {len(matches)} matches, {len(labels)} labels")
    num_anchors, num_classes = logits.shape
    locations = sum(int(h) * int(w) for h, w in grid_sizes)
    if locations == 0 or num_anchors % locations != 0:
        raise ValueError(f"anchor_loss_map: {num_anchors} anchors do not fill the grids {list(grid_sizes)}")
    per_location = num_anchors // locations
    positive = matches >= 0
    valid = matches != IGNORE
    targets = torch.zeros_like(logits)
    rows = positive.nonzero()[:, 0]
    if (labels[rows] < 0).any() or (labels[rows] >= num_classes).any():
        raise ValueError(f"anchor_loss_map: positive anchors need labels in 0..{num_classes - 1}")
    targets[rows, labels[rows]] = 1.0
    p_t = torch.where(targets > 0.5, torch.sigmoid(logits), torch.sigmoid(-logits))
    entry_valid = valid[:, None].expand_as(logits)
    is_positive = (targets > 0.5) & entry_valid
    easy = ~is_positive & entry_valid & (p_t > easy_threshold)
    hard = ~is_positive & entry_valid & ~easy
    masks = dict(zip(LOSS_GROUPS, (easy, hard, is_positive)))

    def summarise(g: float) -> dict[str, Any]:
        entry = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=g) * entry_valid
        per_anchor = entry.sum(dim=1)
        total = float(per_anchor.sum())
        maps, level_totals = [], []
        for (h, w), part in zip(grid_sizes, per_anchor.split([int(h) * int(w) * per_location for h, w in grid_sizes])):
            maps.append(part.view(int(h), int(w), per_location).sum(dim=-1))
            level_totals.append(float(part.sum()))
        safe = total if total > 0 else 1.0
        return {"loss": per_anchor, "maps": maps, "total": total,
                "shares": {name: float(entry[mask].sum()) / safe for name, mask in masks.items()},
                "level_shares": [t / safe for t in level_totals]}

    fl, ce = summarise(float(gamma)), summarise(0.0)
    return {
        "loss": fl["loss"], "ce": ce["loss"], "maps": fl["maps"], "ce_maps": ce["maps"],
        "shares": fl["shares"], "ce_shares": ce["shares"],
        "level_shares": fl["level_shares"], "ce_level_shares": ce["level_shares"],
        "total": fl["total"], "ce_total": ce["total"],
        "ce_over_fl": ce["total"] / fl["total"] if fl["total"] > 0 else math.inf,
        "counts": {**{name: int(mask.sum()) for name, mask in masks.items()}, "ignored": int((~valid).sum())},
    }


def threshold_and_nms(
    candidates: dict[str, Tensor],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    score_thresh: float,
    nms_iou: float,
    match_iou: float = MATCH_IOU,
    max_detections: int = 100,
) -> dict[str, Any]:
    """Apply a score threshold and class-aware NMS to candidate detections, then count TP and FP.

    The detections kept (score >= ``score_thresh``, then ``torchvision.ops.batched_nms`` per class
    at ``nms_iou``, then the best ``max_detections``) are matched to the ground truth as AP does
    (notebook 09, section 2): best score first, each takes the free same-class box it overlaps most
    if that IoU >= ``match_iou`` (a true positive), else it is a false positive (duplicates too).

    Args:
        candidates: ``{"boxes": Tensor[C, 4] xyxy, "scores": Tensor[C], "labels": LongTensor[C]}``.
        gt_boxes: ``Tensor[M, 4]`` xyxy in the same pixels; gt_labels: ``LongTensor[M]``.
        score_thresh: in [0, 1]; nms_iou: in (0, 1] (1 keeps every box but exact duplicates).
        match_iou: IoU a true positive needs; max_detections: kept at most.

    Returns:
        ``{"kept": LongTensor[D]`` indices into the candidates, best first, ``"tp": BoolTensor[D],
        "matched_gt": LongTensor[D]`` (-1 for a false positive), ``"found": BoolTensor[M]``,
        ``"counts": {"candidates", "above threshold", "kept", "tp", "fp", "missed"}}``.
    """
    from torchvision.ops import batched_nms

    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"threshold_and_nms: score_thresh must be in [0, 1], got {score_thresh}")
    if not 0.0 < nms_iou <= 1.0:
        raise ValueError(f"threshold_and_nms: nms_iou must be in (0, 1], got {nms_iou}")
    boxes = torch.as_tensor(candidates["boxes"]).float().reshape(-1, 4)
    scores = torch.as_tensor(candidates["scores"]).float().reshape(-1)
    labels = torch.as_tensor(candidates["labels"]).long().reshape(-1)
    gt_boxes = torch.as_tensor(gt_boxes).float().reshape(-1, 4)
    gt_labels = torch.as_tensor(gt_labels).long().reshape(-1)
    above = (scores >= score_thresh).nonzero()[:, 0]
    kept = above[batched_nms(boxes[above], scores[above], labels[above], float(nms_iou))][:max_detections]
    found = torch.zeros(len(gt_boxes), dtype=torch.bool)
    matched = torch.full((len(kept),), -1, dtype=torch.long)
    iou = box_iou(boxes[kept], gt_boxes) if len(gt_boxes) else torch.zeros(len(kept), 0)
    for k in range(len(kept)):  # kept is best first: the greedy order AP uses
        candidate_iou = torch.where((gt_labels == labels[kept[k]]) & ~found, iou[k], torch.full_like(iou[k], -1.0))
        if len(gt_boxes) and candidate_iou.max() >= match_iou:
            best = int(candidate_iou.argmax())
            matched[k], found[best] = best, True
    tp = matched >= 0
    return {
        "kept": kept, "tp": tp, "matched_gt": matched, "found": found,
        "counts": {"candidates": len(scores), "above threshold": len(above), "kept": len(kept),
                   "tp": int(tp.sum()), "fp": int((~tp).sum()), "missed": int((~found).sum())},
    }


# --------------------------------------------------------------------------------------------------
# Notebook 08 (training): objects a trained detector misses (the reference of its exercise 2)
# --------------------------------------------------------------------------------------------------
def missed_objects(gt_boxes: Tensor, det_boxes: Tensor, iou_threshold: float = 0.5) -> int:
    """How many ground-truth boxes no detection covers with IoU >= ``iou_threshold``, whatever its class.

    Args:
        gt_boxes: ``Tensor[M, 4]``, the objects, xyxy pixels.
        det_boxes: ``Tensor[N, 4]``, the detections kept (e.g. score >= 0.4), xyxy pixels.
        iou_threshold: the overlap that counts as found (COCO's loosest, 0.5).

    Returns:
        The number of missed objects, in ``[0, M]``.
    """
    from retina_edu.boxes import box_iou

    if len(gt_boxes) == 0:
        return 0
    if len(det_boxes) == 0:
        return len(gt_boxes)
    return int((box_iou(gt_boxes, det_boxes).max(dim=1).values < iou_threshold).sum())
