"""The whole RetinaNet loss (notebook 04): the box losses against an offset and per anchor, the
regression targets of a batch, the per-image sums and the two normalisers (the paper's, torchvision's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..boxes import BoxCoder
from ..losses import SMOOTH_L1_BETA, giou_loss, sigmoid_focal_loss, smooth_l1_loss
from ..matching import label_anchors

__all__ = [
    "box_losses_per_anchor",
    "box_losses_vs_offset",
    "loss_sums_per_image",
    "normalise_loss",
    "positive_box_targets",
    "quadratic_share",
]


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


def positive_box_targets(anchors: Tensor, targets: list[dict[str, Tensor]], box_coder: Any = None) -> dict[str, Tensor]:
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
    beta = SMOOTH_L1_BETA if beta is None else float(beta)
    anchors, boxes = anchors.double(), boxes.double()
    if anchors.shape != boxes.shape or anchors.shape[-1:] != (4,):
        raise ValueError(
            f"box_losses_per_anchor: anchors {list(anchors.shape)} and boxes {list(boxes.shape)} must both be [P, 4]"
        )
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
