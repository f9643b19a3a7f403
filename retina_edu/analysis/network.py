"""The network (notebook 05): which pyramid level an object is assigned to, and the tensor shapes
through a RetinaNet."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..anchors import anchors_per_level
from ..boxes import box_iou
from ..matching import IGNORE, match_anchors

__all__ = [
    "box_level_assignment",
    "network_shapes",
]


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
