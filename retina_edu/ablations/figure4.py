"""Figure 4's inputs: the class logits of the positive and negative anchors on the val images,
recorded in the same pass that computes COCO mAP. The maths on them (``anchor_losses``,
``loss_cdf``, ``hardest_share``) is :mod:`retina_edu.analysis`'s."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data import collate_fn
from ..device import eval_mode
from ..evaluate import EvalResult, coco_map_from_predictions
from ..matching import BACKGROUND, label_anchors
from ..model import RetinaNet

__all__ = ["MAX_NEGATIVES", "anchor_logits", "evaluate_with_anchor_logits"]

MAX_NEGATIVES = 20_000  # negative anchors kept per run for Figure 4 (a uniform random sample)


@torch.no_grad()
def evaluate_with_anchor_logits(
    model: RetinaNet,
    dataset: Dataset,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    max_negatives: int | None = MAX_NEGATIVES,
    seed: int = 0,
) -> tuple[EvalResult, dict[str, Tensor]]:
    """COCO mAP of ``model`` on ``dataset`` and the class logits of its positive and negative anchors.

    One forward pass per batch gives both: the detections (exactly what ``model(images)`` returns
    in eval mode) and, with the training matcher (IoU >= 0.5 positive, < 0.4 negative, the band
    between ignored), the logits of every anchor.

    Args:
        model: a ``RetinaNet`` (any subclass).
        dataset: ``CocoDetection`` (or a ``Subset`` of one) with images in their own pixels.
        max_negatives: keep a uniform random sample of this many negative anchors (None: all).
        seed: of that sample.

    Returns:
        ``(EvalResult, {"positive": Tensor[P] logit of the true class of each positive anchor,
        "negative": Tensor[N, K] logits of the negative anchors (sampled), "negative_total": how many
        negative anchors there were before sampling})``, float32, on the CPU.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_fn)
    ids, detections, positives, negatives = [], [], [], []
    with eval_mode(model):
        for images, targets in loader:
            images = [im.to(device) for im in images]
            batch, sizes, original_sizes, scaled = model.preprocess(
                images, [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
            )
            cls_logits, box_deltas, anchors, num_per_level = model.head_outputs(batch)
            for det in model.postprocess(cls_logits, box_deltas, anchors, num_per_level, sizes, original_sizes):
                detections.append({k: v.cpu() for k, v in det.items()})
            ids.extend(int(t["image_id"]) for t in targets)
            pos, neg = _split_anchor_logits(cls_logits.float(), anchors, scaled, model.config)
            positives.append(pos.cpu())
            negatives.append(neg.cpu())
    metrics = coco_map_from_predictions(ids, detections, dataset)
    negative = torch.cat(negatives)
    total = len(negative)
    if max_negatives is not None and len(negative) > max_negatives:
        g = torch.Generator().manual_seed(seed)
        negative = negative[torch.randperm(len(negative), generator=g)[:max_negatives]]
    return metrics, {"positive": torch.cat(positives), "negative": negative, "negative_total": torch.tensor(total)}


def _split_anchor_logits(cls_logits: Tensor, anchors: Tensor, targets, config) -> tuple[Tensor, Tensor]:
    """``(true-class logit of each positive anchor [P], logits of each negative anchor [N, K])``."""
    labelled = label_anchors(anchors, targets, config.fg_iou, config.bg_iou, config.allow_low_quality)
    positive = labelled.positive
    pos = cls_logits[positive].gather(1, labelled.labels[positive][:, None])[:, 0]
    neg = cls_logits[labelled.matches == BACKGROUND]
    return pos, neg


def anchor_logits(model: RetinaNet, dataset: Dataset, **kwargs) -> dict[str, Tensor]:
    """The positive and negative anchors' logits of ``model`` on ``dataset`` (see
    :func:`evaluate_with_anchor_logits`, whose mAP this drops)."""
    return evaluate_with_anchor_logits(model, dataset, **kwargs)[1]
