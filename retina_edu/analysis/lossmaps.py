"""Loss maps and the detector's output on one image (notebook 09): every anchor's logits and label,
where the classification loss sits (CE against FL), and the counts of a score threshold plus NMS."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..boxes import box_iou
from ..losses import sigmoid_focal_loss
from ..matching import IGNORE, label_anchors
from .focal import EASY_THRESHOLD, LOSS_GROUPS

__all__ = [
    "LOSS_MAP_ALPHA",
    "MATCH_IOU",
    "anchor_loss_map",
    "anchor_outputs",
    "threshold_and_nms",
]

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
    _check_image_and_target(image, target)
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
            labelled = label_anchors(anchors, scaled, c.fg_iou, c.bg_iou, c.allow_low_quality)
            # NMS at IoU 1.0 suppresses nothing: the candidates NMS would see, best first
            (candidates,) = model.postprocess(
                cls_logits,
                box_deltas,
                anchors,
                num_per_level,
                sizes,
                original_sizes,
                nms_thresh=1.0,
                detections_per_img=c.topk_candidates * len(num_per_level),
            )
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


def _check_image_and_target(image: Tensor, target: dict[str, Tensor]) -> None:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"anchor_outputs: image must be a Tensor[3, H, W], got {getattr(image, 'shape', image)}")
    if "boxes" not in target or "labels" not in target:
        raise ValueError("anchor_outputs: target must have 'boxes' and 'labels'")


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
    logits, matches, labels, per_location = _checked_loss_map_inputs(cls_logits, matches, labels, grid_sizes)
    targets, valid, masks = _entry_groups(logits, matches, labels, easy_threshold)
    fl = _loss_summary(logits, targets, valid, masks, grid_sizes, per_location, alpha, float(gamma))
    ce = _loss_summary(logits, targets, valid, masks, grid_sizes, per_location, alpha, 0.0)
    return {
        "loss": fl["loss"],
        "ce": ce["loss"],
        "maps": fl["maps"],
        "ce_maps": ce["maps"],
        "shares": fl["shares"],
        "ce_shares": ce["shares"],
        "level_shares": fl["level_shares"],
        "ce_level_shares": ce["level_shares"],
        "total": fl["total"],
        "ce_total": ce["total"],
        "ce_over_fl": ce["total"] / fl["total"] if fl["total"] > 0 else math.inf,
        "counts": {
            **{name: int(mask.sum()) for name, mask in masks.items()},
            "ignored": int((matches == IGNORE).sum()),
        },
    }


def _checked_loss_map_inputs(
    cls_logits: Tensor, matches: Tensor, labels: Tensor, grid_sizes: Sequence[tuple[int, int]]
) -> tuple[Tensor, Tensor, Tensor, int]:
    """``(logits [A, K] float64, matches [A], labels [A], anchors per location)`` on the CPU, after
    checking that they fit together and fill the grids."""
    logits = torch.as_tensor(cls_logits).detach().double().cpu()
    matches = torch.as_tensor(matches).detach().reshape(-1).cpu()
    labels = torch.as_tensor(labels).detach().reshape(-1).cpu()
    if logits.dim() != 2 or len(matches) != len(logits) or len(labels) != len(logits):
        raise ValueError(
            f"anchor_loss_map: cls_logits must be [A, K] with A matches and labels, got "
            f"{list(logits.shape)}, {len(matches)} matches, {len(labels)} labels"
        )
    num_anchors = len(logits)
    locations = sum(int(h) * int(w) for h, w in grid_sizes)
    if locations == 0 or num_anchors % locations != 0:
        raise ValueError(f"anchor_loss_map: {num_anchors} anchors do not fill the grids {list(grid_sizes)}")
    return logits, matches, labels, num_anchors // locations


def _entry_groups(
    logits: Tensor, matches: Tensor, labels: Tensor, easy_threshold: float
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``(targets [A, K]: 1 for a positive anchor's class, else 0; valid [A, K]: not ignored;
    {group: BoolTensor[A, K]} over LOSS_GROUPS)``: the (anchor, class) entries, grouped."""
    num_classes = logits.shape[1]
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
    return targets, entry_valid, dict(zip(LOSS_GROUPS, (easy, hard, is_positive)))


def _loss_summary(
    logits: Tensor,
    targets: Tensor,
    entry_valid: Tensor,
    masks: dict[str, Tensor],
    grid_sizes: Sequence[tuple[int, int]],
    per_location: int,
    alpha: float | None,
    gamma: float,
) -> dict[str, Any]:
    """The loss at (γ, α): per anchor, its map per level (summed over each location's anchors), the
    total, each group's and each level's share of it."""
    entry = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma) * entry_valid
    per_anchor = entry.sum(dim=1)
    total = float(per_anchor.sum())
    maps, level_totals = [], []
    for (h, w), part in zip(grid_sizes, per_anchor.split([int(h) * int(w) * per_location for h, w in grid_sizes])):
        maps.append(part.view(int(h), int(w), per_location).sum(dim=-1))
        level_totals.append(float(part.sum()))
    safe = total if total > 0 else 1.0
    return {
        "loss": per_anchor,
        "maps": maps,
        "total": total,
        "shares": {name: float(entry[mask].sum()) / safe for name, mask in masks.items()},
        "level_shares": [t / safe for t in level_totals],
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
        "kept": kept,
        "tp": tp,
        "matched_gt": matched,
        "found": found,
        "counts": {
            "candidates": len(scores),
            "above threshold": len(above),
            "kept": len(kept),
            "tp": int(tp.sum()),
            "fp": int((~tp).sum()),
            "missed": int((~found).sum()),
        },
    }
