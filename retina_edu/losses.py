"""Losses: focal loss, box losses, and the RetinaNet loss (notebook 03).

Paper, section 3: with p the predicted probability of the true class, p_t = p if y = 1 else
1 - p, and

    CE(p_t) = -log(p_t)                                  (cross entropy)
    CE(p_t) = -α_t log(p_t)                              (α-balanced CE)
    FL(p_t) = -α_t (1 - p_t)^γ log(p_t)                  (focal loss, γ = 2, α = 0.25)

The factor (1 - p_t)^γ shrinks the loss of well-classified examples: at p_t = 0.9 and γ = 2 it
is 100x smaller than CE. Summed over the ~100k anchors of an image and divided by the number of
anchors assigned to an object, it lets the few positives be heard above the easy negatives.

Everything is computed from logits (``binary_cross_entropy_with_logits``), never from clamped
probabilities: clamping p to [eps, 1 - eps] pins a confident mistake at the clamp where the
gradient is zero, and training stalls (pytorch-retinanet #41, "loss stuck at 2.3021").

``ohem_classification_loss`` is the baseline the paper compares the focal loss with (Table 1d):
cross entropy on the positives and only the hardest negatives (notebook 10).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import BoxCoder, box_area
from .matching import BACKGROUND, BG_IOU, FG_IOU, AnchorLabels, label_anchors

__all__ = [
    "ALPHA",
    "GAMMA",
    "OHEM_NEG_POS_RATIO",
    "SMOOTH_L1_BETA",
    "binary_cross_entropy",
    "focal_loss_per_image",
    "giou_loss",
    "ohem_classification_loss",
    "retinanet_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "softmax_focal_loss",
    "validate_targets",
]

ALPHA = 0.25  # Table 1b: best alpha with gamma = 2
GAMMA = 2.0
SMOOTH_L1_BETA = 0.11  # Detectron's; 0 is plain L1 (torchvision and detectron2)

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | None = ALPHA,
    gamma: float = GAMMA,
    reduction: str = "none",
) -> Tensor:
    """Focal loss for independent binary (sigmoid) classifiers.

    FL = -α_t (1 - p_t)^γ log(p_t), with the log term from ``binary_cross_entropy_with_logits``.
    Same values and gradients as ``torchvision.ops.sigmoid_focal_loss``.

    Args:
        logits: any shape; raw scores (before the sigmoid).
        targets: same shape, 0 or 1 (soft targets in between work too).
        alpha: weight of the positives, ``1 - alpha`` of the negatives; ``None`` or a negative
            value disables the weighting.
        gamma: focusing parameter, >= 0; ``gamma = 0`` is (α-balanced) cross entropy.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        The loss, computed in float32 (or float64) even for float16/bfloat16 inputs so that a sum
        over 100k anchors cannot overflow.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha is not None and alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative / None to disable), got {alpha}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {list(logits.shape)} and targets {list(targets.shape)} must have the same shape")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    targets = targets.to(logits.dtype)

    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce
    if gamma != 0:
        # Where 1 - p_t is exactly 0 (a saturated sigmoid) the loss is 0 but the gradient of
        # (1 - p_t)^γ for γ < 1 would be inf * 0 = NaN; the clamp only changes such points.
        one_minus = (1 - p_t).clamp(min=torch.finfo(logits.dtype).tiny)
        loss = ce * one_minus**gamma
    if alpha is not None and alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def binary_cross_entropy(
    logits: Tensor, targets: Tensor, alpha: float | None = None, reduction: str = "none"
) -> Tensor:
    """(α-balanced) cross entropy: focal loss with γ = 0."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=0.0, reduction=reduction)


def softmax_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: Tensor | list[float] | None = None,
    gamma: float = GAMMA,
    reduction: str = "none",
) -> Tensor:
    """The multi-class (softmax) focal loss the paper mentions in section 3.

    FL = -α_t (1 - p_t)^γ log(p_t) with p_t the softmax probability of the true class.

    Args:
        logits: ``Tensor[N, C]``.
        targets: ``LongTensor[N]`` class indices in ``[0, C)``.
        alpha: optional per-class weights ``[C]``.
        gamma: focusing parameter; 0 gives ``F.cross_entropy`` (with ``weight=alpha``, unreduced).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        ``Tensor[N]`` (or a scalar when reduced), in float32 for half inputs.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, C], got {list(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must have shape [{logits.shape[0]}], got {list(targets.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    log_p_t = log_p.gather(1, targets[:, None].long())[:, 0]
    loss = -log_p_t
    if gamma != 0:
        one_minus = (1 - log_p_t.exp()).clamp(min=torch.finfo(logits.dtype).tiny)
        loss = loss * one_minus**gamma
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = alpha[targets] * loss
    return _reduce(loss, reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float = SMOOTH_L1_BETA, reduction: str = "sum") -> Tensor:
    """Smooth L1 (Huber-like) loss: 0.5 x² / β for |x| < β, else |x| - 0.5 β. ``beta = 0`` is L1."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    diff = (input - target).abs()
    if beta == 0:
        loss = diff
    else:
        loss = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
    return _reduce(loss, reduction)


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "sum", eps: float = 1e-7) -> Tensor:
    """Generalised IoU loss, 1 - GIoU, for paired xyxy boxes ``[..., 4]`` (Rezatofighi et al. 2019).

    GIoU = IoU - |C \\ (A ∪ B)| / |C| with C the smallest box enclosing A and B. Equals
    ``torchvision.ops.generalized_box_iou_loss``; torchvision's RetinaNet v2 uses it.
    """
    x1 = torch.max(boxes1[..., 0], boxes2[..., 0])
    y1 = torch.max(boxes1[..., 1], boxes2[..., 1])
    x2 = torch.min(boxes1[..., 2], boxes2[..., 2])
    y2 = torch.min(boxes1[..., 3], boxes2[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / (union + eps)
    cx1 = torch.min(boxes1[..., 0], boxes2[..., 0])
    cy1 = torch.min(boxes1[..., 1], boxes2[..., 1])
    cx2 = torch.max(boxes1[..., 2], boxes2[..., 2])
    cy2 = torch.max(boxes1[..., 3], boxes2[..., 3])
    enclosing = (cx2 - cx1) * (cy2 - cy1)
    giou = iou - (enclosing - union) / (enclosing + eps)
    return _reduce(1 - giou, reduction)


def focal_loss_per_image(
    cls_logits: Tensor,
    labels: Tensor,
    valid: Tensor,
    alpha: float | None = ALPHA,
    gamma: float = GAMMA,
) -> Tensor:
    """Per image, the focal loss summed over every class of every non-ignored anchor, for one-hot
    targets: the fast path of ``retinanet_loss``.

    Equal to ``(sigmoid_focal_loss(cls_logits, one_hot(labels)) * valid[..., None]).sum((1, 2))``
    (``tests/test_losses.py`` checks values and gradients), but without building the ``[B, A, K]``
    targets: all ``B * A * K`` entries are first scored as negatives (target 0), where the loss is
    ``(1 - α) p^γ softplus(x)``, in cache-sized chunks (``_NegativeFocalRows``); then the few
    positive entries swap that term for the positive one, ``α (1 - p)^γ softplus(-x)``.

    Args:
        cls_logits: ``Tensor[B, A, K]``.
        labels: ``LongTensor[B, A]``: the class of each positive anchor, negative elsewhere
            (``AnchorLabels.labels``: -1 background, -2 ignored).
        valid: ``BoolTensor[B, A]``: False for ignored anchors.

    Returns:
        ``Tensor[B]`` in float32 (or float64).
    """
    x = cls_logits.float() if cls_logits.dtype in (torch.float16, torch.bfloat16) else cls_logits
    w_pos, w_neg = (alpha, 1 - alpha) if alpha is not None and alpha >= 0 else (1.0, 1.0)
    batch, num_anchors, num_classes = x.shape

    row_weight = valid.reshape(-1).to(x.dtype) * w_neg  # [B * A]: 0 for ignored anchors
    as_negative = _NegativeFocalRows.apply(x.reshape(-1, num_classes), row_weight, float(gamma))
    per_image = as_negative.view(batch, num_anchors).sum(-1)

    img, anchor = (labels >= 0).nonzero(as_tuple=True)
    xp = x[img, anchor, labels[img, anchor]]
    pp = torch.sigmoid(xp)
    swap = w_pos * F.softplus(-xp) * _modulate(1 - pp, gamma) - w_neg * F.softplus(xp) * _modulate(pp, gamma)
    return per_image.index_add(0, img, swap)


def _modulate(q: Tensor, gamma: float) -> Tensor:
    """``q ** γ``, with ``γ = 2`` as a product (the usual case) and ``0 ** 0 = 1``."""
    if gamma == 0:
        return torch.ones_like(q)
    return q * q if gamma == 2 else q.clamp(min=torch.finfo(q.dtype).tiny) ** gamma


_CHUNK_ELEMENTS = 1 << 17  # 512 KB of float32: a chunk and its temporaries stay in the L2 cache


class _NegativeFocalRows(torch.autograd.Function):
    """``row_weight * Σ_k softplus(x) σ(x)^γ`` for each row of ``x [N, K]``: every entry's focal
    loss as a negative (target 0), summed over the classes.

    The arithmetic is that of ``sigmoid_focal_loss`` with target 0; what differs is the memory
    traffic. At 512 px, batch 8 and 80 classes ``x`` holds 31M entries (125 MB): done in one go,
    each of the ~5 element-wise passes streams a fresh 125 MB temporary through main memory.
    Here the rows go in chunks of ~128K entries whose temporaries stay in cache, and backward
    recomputes σ(x) chunk by chunk instead of keeping [N, K] intermediates alive
    (d/dx [softplus(x) p^γ] = p^(γ+1) + γ p^γ (1 - p) softplus(x), with p = σ(x)).
    """

    @staticmethod
    def forward(ctx, x: Tensor, row_weight: Tensor, gamma: float) -> Tensor:
        ctx.save_for_backward(x, row_weight)
        ctx.gamma = gamma
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for rows in _row_chunks(x):
            xc = x[rows]
            out[rows] = (F.softplus(xc) * _modulate(torch.sigmoid(xc), gamma)).sum(-1)
        return out * row_weight

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, row_weight = ctx.saved_tensors
        gamma = ctx.gamma
        grad_rows = (grad_out * row_weight)[:, None]
        grad_x = torch.empty_like(x)
        for rows in _row_chunks(x):
            xc = x[rows]
            p = torch.sigmoid(xc)
            p_gamma = _modulate(p, gamma)
            d = p * p_gamma + gamma * p_gamma * (1 - p) * F.softplus(xc)
            grad_x[rows] = d * grad_rows[rows]
        return grad_x, None, None


def _row_chunks(x: Tensor) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, x.shape[1]))
    return [slice(r, r + step) for r in range(0, x.shape[0], step)]


def validate_targets(targets: list[dict[str, Tensor]], num_classes: int | None = None) -> None:
    """Raise ``ValueError`` naming the image, the box and the problem for malformed targets.

    Each target needs ``"boxes"`` (``Tensor[N, 4]`` xyxy, finite, ``x2 > x1``, ``y2 > y1``) and
    ``"labels"`` (``Tensor[N]`` integers in ``[0, num_classes)``).
    """
    if not isinstance(targets, (list, tuple)):
        raise ValueError(f"targets must be a list of dicts, one per image, got {type(targets).__name__}")
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise ValueError(f"target {i} must be a dict with 'boxes' and 'labels', got {type(t).__name__}")
        for key in ("boxes", "labels"):
            if key not in t:
                raise ValueError(f"target {i} has no {key!r} key (it has {sorted(t)})")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"target {i}: 'boxes' must be a Tensor[N, 4], got {shape}")
        if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1]:
            shape = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"target {i}: 'labels' must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
        if labels.is_floating_point():
            raise ValueError(f"target {i}: 'labels' must be integers, got {labels.dtype}")

    # The value checks run once on all boxes of the batch (one sync), not image by image.
    counts = [int(t["boxes"].shape[0]) for t in targets]
    if sum(counts) == 0:
        return
    boxes = torch.cat([t["boxes"] for t in targets])
    labels = torch.cat([t["labels"] for t in targets])
    not_finite = ~torch.isfinite(boxes).all(dim=1)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    bad_label = (labels < 0) | (labels >= num_classes) if num_classes is not None else torch.zeros_like(degenerate)
    bad = not_finite | degenerate | bad_label
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0])
    i = int(np.searchsorted(np.cumsum(counts), k, side="right"))
    j = k - sum(counts[:i])
    b = boxes[k].tolist()
    if not_finite[k]:
        raise ValueError(f"target {i}: box {j} {b} is not finite")
    if degenerate[k]:
        what = "x2 <= x1" if b[2] <= b[0] else "y2 <= y1"
        raise ValueError(f"target {i}: box {j} {[round(v, 2) for v in b]} has {what} (zero or negative size)")
    raise ValueError(
        f"target {i}: box {j} has label {int(labels[k])}, outside [0, {num_classes}) "
        f"(labels are contiguous 0..K-1; there is no background class)"
    )


def _check_loss_inputs(
    cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, targets: list, box_loss: str, normalize: str
) -> None:
    """``retinanet_loss``'s shapes and choices, each with a message that says what was wrong."""
    if cls_logits.dim() != 3 or box_deltas.shape != (*cls_logits.shape[:2], 4):
        raise ValueError(
            f"cls_logits must be [B, A, K] and box_deltas [B, A, 4]; got {list(cls_logits.shape)} "
            f"and {list(box_deltas.shape)}"
        )
    batch, num_anchors, _ = cls_logits.shape
    if anchors.shape != (num_anchors, 4):
        raise ValueError(f"anchors must be [{num_anchors}, 4] to match the head outputs, got {list(anchors.shape)}")
    if len(targets) != batch:
        raise ValueError(f"{len(targets)} targets for a batch of {batch} images")
    if box_loss not in ("smooth_l1", "l1", "giou"):
        raise ValueError(f"box_loss must be 'smooth_l1', 'l1' or 'giou', got {box_loss!r}")
    if normalize not in ("batch", "image"):
        raise ValueError(f"normalize must be 'batch' or 'image', got {normalize!r}")


# Kept whole: the reference notebook 04's inline loss is checked against, read top to bottom (most of it is
# the signature and docstring).
def retinanet_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    alpha: float | None = ALPHA,
    gamma: float = GAMMA,
    box_loss: str = "smooth_l1",
    beta: float = SMOOTH_L1_BETA,
    fg_iou: float = FG_IOU,
    bg_iou: float = BG_IOU,
    allow_low_quality: bool = True,
    normalize: str = "batch",
    box_coder: BoxCoder | None = None,
    validate: bool = True,
) -> dict[str, Tensor]:
    """The RetinaNet training loss for a batch, with no Python loop over images.

    Classification: focal loss summed over every anchor that is not ignored, divided by the
    number of anchors assigned to a box (at least 1). Box regression: the box loss over the
    positive anchors only, divided by the same number.

    Args:
        cls_logits: ``Tensor[B, A, K]`` class logits for all anchors (levels concatenated).
        box_deltas: ``Tensor[B, A, 4]`` predicted box offsets.
        anchors: ``Tensor[A, 4]`` xyxy, shared by the batch.
        targets: one dict per image with ``"boxes"`` ``[N, 4]`` xyxy and ``"labels"`` ``[N]``;
            ``N = 0`` is allowed (an image of pure background).
        alpha, gamma: focal loss parameters (``gamma = 0``: α-balanced cross entropy).
        box_loss: ``"smooth_l1"`` (with ``beta``), ``"l1"`` or ``"giou"`` (on decoded boxes).
        fg_iou, bg_iou, allow_low_quality: the matching rule (see ``match_anchors``).
        normalize: ``"batch"`` divides by the positives of the whole batch (the paper,
            Detectron); ``"image"`` divides each image by its own positives and averages over
            images (torchvision).
        box_coder: defaults to ``BoxCoder()``, weights (1, 1, 1, 1).
        validate: check the targets first (a clear error instead of a NaN).

    Returns:
        ``{"classification": Tensor[], "bbox_regression": Tensor[]}`` in float32 (their sum is
        the loss to minimise, as in torchvision).
    """
    _check_loss_inputs(cls_logits, box_deltas, anchors, targets, box_loss, normalize)
    batch, _, num_classes = cls_logits.shape
    if validate:
        validate_targets(targets, num_classes)
    box_coder = box_coder or BoxCoder()

    labelled = label_anchors(anchors, targets, fg_iou, bg_iou, allow_low_quality)  # [B, A] per anchor
    positive, valid = labelled.positive, labelled.valid

    # Classification: one-hot targets for positives, zeros for negatives, ignored anchors masked.
    # Written plainly it is `(sigmoid_focal_loss(cls_logits, one_hot targets) * valid).sum()`;
    # focal_loss_per_image computes the same without building the [B, A, K] targets.
    cls_per_image = focal_loss_per_image(cls_logits, labelled.labels, valid, alpha, gamma)  # [B]

    # Box regression on positives only (boolean indexing: no work for the ~99.9% negatives).
    image_of_pos = positive.nonzero()[:, 0]
    matched_boxes = labelled.boxes[positive]  # [P, 4]
    pos_anchors = anchors[None].expand(batch, -1, -1)[positive]
    pos_deltas = box_deltas[positive].float()
    if box_loss == "giou":
        per_pos = giou_loss(box_coder.decode(pos_anchors, pos_deltas), matched_boxes.float(), reduction="none")
    else:
        target_deltas = box_coder.encode(pos_anchors, matched_boxes.float())
        per_pos = smooth_l1_loss(pos_deltas, target_deltas, beta=0.0 if box_loss == "l1" else beta, reduction="none")
        per_pos = per_pos.sum(dim=1)
    box_per_image = torch.zeros(batch, dtype=per_pos.dtype, device=per_pos.device).index_add_(0, image_of_pos, per_pos)

    pos_per_image = positive.sum(dim=1)
    if normalize == "batch":
        norm = pos_per_image.sum().clamp(min=1).to(cls_per_image.dtype)
        cls_total = cls_per_image.sum() / norm
        box_total = box_per_image.sum() / norm
    else:
        norm = pos_per_image.clamp(min=1).to(cls_per_image.dtype)
        cls_total = (cls_per_image / norm).mean()
        box_total = (box_per_image / norm).mean()
    return {"classification": cls_total, "bbox_regression": box_total}


OHEM_NEG_POS_RATIO = 3  # Table 1d's "OHEM 1:3" (the SSD variant): three negatives per positive


def ohem_classification_loss(
    cls_logits: Tensor, labelled: AnchorLabels, neg_pos_ratio: int = OHEM_NEG_POS_RATIO
) -> Tensor:
    """The classification loss of online hard example mining, the baseline of the paper's Table 1d.

    Plain cross entropy (no α, no γ) on every positive anchor of the batch and on the
    ``neg_pos_ratio x P`` background anchors with the highest loss, divided by P (at least 1).
    A negative anchor's loss is its CE summed over the K classes (all targets 0); ignored anchors
    never count. Unlike the focal loss, which weighs every anchor, OHEM drops the easy ones.

    Differences from the paper's OHEM (section 5.1, Table 1d): the paper scores every
    anchor, runs NMS (threshold 0.5 or 0.7) over the scored examples and keeps a fixed minibatch of
    128, 256 or 512 per image; its 1:3 variant also fixes the share of positives. Here there is no
    NMS, and the minibatch is every positive plus the hardest ``3P`` negatives of the whole batch,
    so its size follows P. Its best OHEM reached 32.8 AP against 36.0 for FL (ResNet-101).

    Args:
        cls_logits: ``Tensor[B, A, K]`` class logits.
        labelled: the anchors' labels for the same batch (``label_anchors``).
        neg_pos_ratio: negatives kept per positive.

    Returns:
        ``Tensor[]``, float32 for float16/bfloat16 logits.
    """
    if cls_logits.shape[:2] != labelled.matches.shape:
        raise ValueError(
            f"cls_logits {list(cls_logits.shape)} and anchor labels {list(labelled.matches.shape)} must agree on [B, A]"
        )
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
    positive, negative = labelled.positive, labelled.matches == BACKGROUND
    one_hot = F.one_hot(labelled.labels.clamp(min=0), cls_logits.shape[-1]).to(cls_logits.dtype)
    cls_targets = one_hot * positive[..., None]
    ce = binary_cross_entropy(cls_logits, cls_targets).sum(dim=-1)  # [B, A], float32
    num_pos = int(positive.sum())
    k = min(neg_pos_ratio * max(num_pos, 1), int(negative.sum()))
    hard = ce.masked_fill(~negative, float("-inf")).flatten().topk(k).values if k else ce.new_zeros(0)
    return (ce[positive].sum() + hard.sum()) / max(num_pos, 1)
