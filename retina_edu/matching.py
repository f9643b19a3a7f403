"""Matching: which ground-truth box, if any, each anchor learns from (notebook 02).

Paper, section 4: "anchors are assigned to ground-truth object boxes using an
intersection-over-union (IoU) threshold of 0.5; and to background if their IoU is in [0, 0.4).
As each anchor is assigned to at most one object box [...]. Anchors that are unassigned, which
happens with overlap in [0.4, 0.5), are ignored during training."

Like Detectron and torchvision we also add *low-quality matches*: every ground-truth box keeps
the anchor(s) that overlap it best, even below 0.5, so that no object goes without a positive
anchor (small objects need this: see notebook 01's coverage plot).

The result is one integer per anchor: the index of its ground-truth box, ``BACKGROUND = -1``
or ``IGNORE = -2``, the same convention and result as ``torchvision``'s ``Matcher(0.5, 0.4, True)``.

``label_anchors`` is the whole step a loss needs, named as in detectron2's RetinaNet: pad the
batch's boxes, match, then gather each anchor's class and box (``AnchorLabels``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from .boxes import box_iou, check_boxes

__all__ = ["BACKGROUND", "FG_IOU", "BG_IOU", "IGNORE", "AnchorLabels", "label_anchors", "match_anchors", "pad_boxes"]

FG_IOU = 0.5  # IoU >= 0.5: foreground
BG_IOU = 0.4  # IoU < 0.4: background; in between: ignored
BACKGROUND = -1
IGNORE = -2


def pad_boxes(boxes: list[Tensor], labels: list[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Stack per-image boxes into a padded batch.

    Args:
        boxes: one ``Tensor[N_i, 4]`` per image.
        labels: optionally one ``Tensor[N_i]`` per image.

    Returns:
        ``(boxes [B, M, 4], mask [B, M] bool, labels [B, M] or None)`` with ``M = max N_i``
        (at least 1, so that shapes stay non-empty); padded rows are zeros and ``mask`` False.
    """
    batch = len(boxes)
    if batch == 0:
        raise ValueError("pad_boxes needs at least one image")
    counts = torch.tensor([int(b.shape[0]) for b in boxes], device=boxes[0].device)
    m = max(1, int(counts.max()))
    # pad_sequence copies in C++, one call for the batch; an extra all-padding row keeps m >= 1.
    out = pad_sequence([*boxes, boxes[0].new_zeros((m, 4))], batch_first=True)[:batch]
    mask = torch.arange(m, device=counts.device)[None, :] < counts[:, None]
    lab = None
    if labels is not None:
        padding = labels[0].new_zeros(m, dtype=torch.int64)
        lab = pad_sequence([*[l.long() for l in labels], padding], batch_first=True)[:batch]
    return out, mask, lab


# Kept whole: the rule notebook 02 checks against torchvision's Matcher, read top to bottom (half is docstring).
def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    fg_iou: float = FG_IOU,
    bg_iou: float = BG_IOU,
    allow_low_quality: bool = True,
    gt_mask: Tensor | None = None,
) -> Tensor:
    """Assign every anchor to a ground-truth box, to background, or to the ignored band.

    Args:
        anchors: ``Tensor[A, 4]`` xyxy.
        gt_boxes: ``Tensor[M, 4]`` for one image, or a padded batch ``Tensor[B, M, 4]``.
        fg_iou: IoU at or above which an anchor is foreground (0.5).
        bg_iou: IoU below which an anchor is background (0.4); in between it is ignored.
        allow_low_quality: also match each box's best anchor(s) (ties included), even below
            ``fg_iou``. As in Detectron and torchvision, such an anchor takes the box it overlaps
            most.
        gt_mask: ``Tensor[B, M]`` bool, which rows of a padded batch are real boxes (see
            ``pad_boxes``). Default: all rows are real.

    Returns:
        ``LongTensor[A]`` (or ``[B, A]``): the matched box index, ``-1`` background, ``-2`` ignored.
        An image with no boxes is all background.
    """
    check_boxes(anchors, "anchors")
    check_boxes(gt_boxes, "gt_boxes", allow_batch=True)
    if not 0 <= bg_iou <= fg_iou <= 1:
        raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
    single = gt_boxes.dim() == 2
    if single:
        gt_boxes = gt_boxes[None]
        if gt_mask is not None:
            gt_mask = gt_mask[None]
    batch, num_gt = gt_boxes.shape[:2]
    if gt_mask is None:
        gt_mask = torch.ones((batch, num_gt), dtype=torch.bool, device=gt_boxes.device)
    elif gt_mask.shape != (batch, num_gt):
        raise ValueError(f"gt_mask must have shape {[batch, num_gt]}, got {list(gt_mask.shape)}")

    if num_gt == 0:
        matches = torch.full((batch, anchors.shape[0]), BACKGROUND, dtype=torch.int64, device=anchors.device)
        return matches[0] if single else matches

    # IoU of every box with every anchor: [B, M, A]. Padded rows get -1 so they never win.
    iou = box_iou(gt_boxes, anchors.to(gt_boxes.dtype)[None].expand(batch, -1, -1))
    iou.masked_fill_(~gt_mask[:, :, None], -1.0)

    best_iou, matches = iou.max(dim=1)  # per anchor: [B, A]
    best_box = matches.clone()
    matches[best_iou < fg_iou] = IGNORE
    matches[best_iou < bg_iou] = BACKGROUND

    if allow_low_quality:
        # For each box, its best IoU over all anchors; every anchor reaching it (ties included)
        # is restored to the box it overlaps most.
        best_for_box = iou.max(dim=2, keepdim=True).values  # [B, M, 1]
        is_best = (iou == best_for_box) & gt_mask[:, :, None]
        restore = is_best.any(dim=1)  # [B, A]
        matches = torch.where(restore, best_box, matches)

    # An image whose rows are all padding has IoU -1 everywhere: all background, nothing restored.
    return matches[0] if single else matches


class AnchorLabels(NamedTuple):
    """What every anchor of a batch learns (``label_anchors``); ``A`` anchors, ``B`` images.

    Attributes:
        matches: ``LongTensor[B, A]``: the index of the matched box in its image's target,
            ``BACKGROUND`` (-1) or ``IGNORE`` (-2), as ``match_anchors`` returns.
        labels: ``LongTensor[B, A]``: the class (``0..K-1``) of the matched box for a positive
            anchor, ``BACKGROUND`` (-1) for a background anchor and ``IGNORE`` (-2) for an ignored
            one. There is no background class: a sigmoid head's negative is "all K outputs 0".
        boxes: ``Tensor[B, A, 4]`` xyxy in the anchors' dtype: the matched box of a positive
            anchor; zeros elsewhere (select with ``positive``).
    """

    matches: Tensor
    labels: Tensor
    boxes: Tensor

    @property
    def positive(self) -> Tensor:
        """``BoolTensor[B, A]``: anchors matched to a box (they learn its class and its box)."""
        return self.matches >= 0

    @property
    def valid(self) -> Tensor:
        """``BoolTensor[B, A]``: anchors that count in the classification loss (all but the ignored)."""
        return self.matches != IGNORE


def label_anchors(
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
    fg_iou: float = FG_IOU,
    bg_iou: float = BG_IOU,
    allow_low_quality: bool = True,
) -> AnchorLabels:
    """Label every anchor of a batch: pad the boxes, match, gather the matched class and box.

    detectron2's ``RetinaNet.label_anchors`` does this one image at a time; here the whole batch
    goes through one padded ``match_anchors`` call.

    Args:
        anchors: ``Tensor[A, 4]`` xyxy, shared by the batch.
        targets: one dict per image with ``"boxes"`` ``Tensor[N_i, 4]`` xyxy and ``"labels"``
            ``LongTensor[N_i]``; ``N_i = 0`` is an image of pure background.
        fg_iou, bg_iou, allow_low_quality: the matching rule (see ``match_anchors``).

    Returns:
        ``AnchorLabels(matches [B, A], labels [B, A], boxes [B, A, 4])``.
    """
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} must be a dict with 'boxes' and 'labels'")
    gt_boxes, gt_mask, gt_labels = pad_boxes(
        [t["boxes"].to(anchors.dtype) for t in targets], [t["labels"] for t in targets]
    )
    matches = match_anchors(anchors, gt_boxes, fg_iou, bg_iou, allow_low_quality, gt_mask=gt_mask)  # [B, A]
    positive = matches >= 0
    index = matches.clamp(min=0)  # a valid row for every anchor; the non-positives are masked below
    labels = torch.where(positive, gt_labels.gather(1, index), matches)
    boxes = gt_boxes.gather(1, index[..., None].expand(-1, -1, 4))
    boxes = torch.where(positive[..., None], boxes, boxes.new_zeros(()))
    return AnchorLabels(matches, labels, boxes)
