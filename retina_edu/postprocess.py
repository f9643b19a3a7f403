"""From head outputs to detections (notebook 07).

Paper, section 4 ("Inference"): "to improve speed, we only decode box predictions from at most
1k top-scoring predictions per FPN level, after thresholding detector confidence at 0.05. The
top predictions from all levels are merged and non-maximum suppression with a threshold of 0.5
is applied to yield the final detections." Detectron then keeps the best 100 per image
(torchvision keeps 300).

This version works on the whole batch at once: top-k per level is one ``topk`` over
``[B, A_l * K]``, and NMS runs once over every image and class, with boxes of different
(image, class) groups kept apart by ``torchvision.ops.batched_nms``. The loop is over the 5
levels, never over images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import BoxCoder, clip_boxes

__all__ = [
    "DETECTIONS_PER_IMG",
    "NMS_THRESH",
    "SCORE_THRESH",
    "TOPK_CANDIDATES",
    "postprocess_detections",
    "select_top_per_level",
]

SCORE_THRESH = 0.05
TOPK_CANDIDATES = 1000
NMS_THRESH = 0.5
DETECTIONS_PER_IMG = 100


def select_top_per_level(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    *,
    score_thresh: float = SCORE_THRESH,
    topk_candidates: int = TOPK_CANDIDATES,
    box_coder: BoxCoder | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per level: sigmoid, the ``topk_candidates`` best (anchor, class) pairs, threshold, decode.

    Args:
        cls_logits: ``Tensor[B, A, K]``; box_deltas: ``Tensor[B, A, 4]``; anchors: ``Tensor[A, 4]``.
        num_anchors_per_level: how many of the ``A`` anchors belong to each level, in order.

    Returns:
        ``(boxes [B, C, 4], scores [B, C], labels [B, C], keep [B, C] bool)`` with C the candidates
        of all levels; ``keep`` marks those above ``score_thresh``. Boxes are not clipped yet.
    """
    box_coder = box_coder or BoxCoder()
    batch, _, num_classes = cls_logits.shape
    boxes, scores, labels, keep = [], [], [], []
    for logits_l, deltas_l, anchors_l in zip(
        cls_logits.split(list(num_anchors_per_level), dim=1),
        box_deltas.split(list(num_anchors_per_level), dim=1),
        anchors.split(list(num_anchors_per_level), dim=0),
    ):
        scores_l = torch.sigmoid(logits_l.float()).flatten(1)  # [B, A_l * K]
        k = min(topk_candidates, scores_l.shape[1])
        top_scores, top_idx = scores_l.topk(k, dim=1)  # sorted, best first
        anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
        labels_l = top_idx % num_classes
        deltas = deltas_l.float().gather(1, anchor_idx[..., None].expand(-1, -1, 4))
        boxes.append(box_coder.decode(anchors_l[anchor_idx], deltas))
        scores.append(top_scores)
        labels.append(labels_l)
        keep.append(top_scores > score_thresh)
    return torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1), torch.cat(keep, 1)


def postprocess_detections(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    image_sizes: Tensor | Sequence[tuple[int, int]],
    *,
    score_thresh: float = SCORE_THRESH,
    topk_candidates: int = TOPK_CANDIDATES,
    nms_thresh: float = NMS_THRESH,
    detections_per_img: int = DETECTIONS_PER_IMG,
    box_coder: BoxCoder | None = None,
) -> list[dict[str, Tensor]]:
    """Detections for a batch: threshold, top-k per level, decode, clip, class-aware NMS, top N.

    Args:
        cls_logits: ``Tensor[B, A, K]`` class logits of all anchors (levels concatenated).
        box_deltas: ``Tensor[B, A, 4]``.
        anchors: ``Tensor[A, 4]`` xyxy, shared by the batch.
        num_anchors_per_level: anchors per level (``H_l * W_l * A_loc``), in level order.
        image_sizes: ``(H, W)`` of each image inside the padded batch (boxes are clipped to it).
        score_thresh, topk_candidates, nms_thresh, detections_per_img: the paper's 0.05, 1000,
            0.5 and 100; keyword-only, so two thresholds can never be swapped by position.
        box_coder: decodes the deltas (the default ``BoxCoder()`` has RetinaNet's unit weights).

    Returns:
        One dict per image: ``"boxes"`` ``[D, 4]`` xyxy, ``"scores"`` ``[D]``, ``"labels"`` ``[D]``
        int64, best score first, ``D <= detections_per_img``.
    """
    batch, _, num_classes = cls_logits.shape
    device = cls_logits.device
    sizes = torch.as_tensor(image_sizes, device=device).reshape(batch, 2)

    boxes, scores, labels, keep = select_top_per_level(
        cls_logits,
        box_deltas,
        anchors,
        num_anchors_per_level,
        score_thresh=score_thresh,
        topk_candidates=topk_candidates,
        box_coder=box_coder,
    )
    boxes = clip_boxes(boxes, sizes[:, None, :])
    image_idx = torch.arange(batch, device=device)[:, None].expand_as(scores)

    boxes, scores, labels, image_idx = boxes[keep], scores[keep], labels[keep], image_idx[keep]
    # One NMS for the whole batch: a box only suppresses boxes of its own image and class.
    kept = batched_nms(boxes, scores, image_idx * num_classes + labels, nms_thresh)  # best first
    kept, counts = _best_per_image(kept, image_idx, batch, detections_per_img)
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(boxes[kept].split(counts), scores[kept].split(counts), labels[kept].split(counts))
    ]


def _best_per_image(kept: Tensor, image_idx: Tensor, batch: int, detections_per_img: int) -> tuple[Tensor, list[int]]:
    """The best ``detections_per_img`` of each image among ``kept`` (indices, best first), grouped by image,
    and how many each image keeps.

    Still without a loop over images: a stable sort by image keeps the score order inside each image;
    rank = position in image.
    """
    kept = kept[torch.sort(image_idx[kept], stable=True).indices]
    kept_image = image_idx[kept]
    counts = torch.bincount(kept_image, minlength=batch)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(kept.numel(), device=kept.device) - first[kept_image]
    kept = kept[rank < detections_per_img]
    return kept, counts.clamp(max=detections_per_img).tolist()
