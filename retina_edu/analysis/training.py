"""Training (notebook 08): the objects a trained detector misses (the reference of its exercise 2)."""

from __future__ import annotations

from torch import Tensor

from ..boxes import box_iou

__all__ = [
    "missed_objects",
]


def missed_objects(gt_boxes: Tensor, det_boxes: Tensor, iou_threshold: float = 0.5) -> int:
    """How many ground-truth boxes no detection covers with IoU >= ``iou_threshold``, whatever its class.

    Args:
        gt_boxes: ``Tensor[M, 4]``, the objects, xyxy pixels.
        det_boxes: ``Tensor[N, 4]``, the detections kept (e.g. score >= 0.4), xyxy pixels.
        iou_threshold: the overlap that counts as found (COCO's loosest, 0.5).

    Returns:
        The number of missed objects, in ``[0, M]``.
    """
    if len(gt_boxes) == 0:
        return 0
    if len(det_boxes) == 0:
        return len(gt_boxes)
    return int((box_iou(gt_boxes, det_boxes).max(dim=1).values < iou_threshold).sum())
