"""Boxes: formats, area, IoU and the box coder (notebook 01 and 02).

Every box in retina-edu is a ``Tensor[..., 4]`` of floats. Unless a name says otherwise the
format is ``xyxy``: ``(x1, y1, x2, y2)`` in pixels, with ``x2 > x1`` and ``y2 > y1``. The other
two formats the course meets are ``xywh`` (COCO's ``[x, y, w, h]``) and ``cxcywh`` (centre,
width, height: the form the box coder works in).

The box coder is the parametrisation RetinaNet inherits from Faster R-CNN (Ren et al. 2015,
eq. 2): a box is described relative to its anchor by

    dx = (x - x_a) / w_a     dy = (y - y_a) / h_a
    dw = log(w / w_a)        dh = log(h / h_a)

where ``(x, y)`` is a centre and ``w, h`` a width and height. ``decode`` inverts ``encode``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BOX_FORMATS",
    "BBOX_XFORM_CLIP",
    "BoxCoder",
    "box_area",
    "box_iou",
    "check_boxes",
    "clip_boxes",
    "convert_boxes",
    "box_cxcywh_to_xyxy",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# Largest log-scale change decode will apply (Detectron's choice): exp(4.135) = 1000 / 16, so a
# box can grow at most 62.5x relative to its anchor. It keeps a wild early prediction from
# overflowing to inf.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def check_boxes(boxes: Tensor, name: str = "boxes", allow_batch: bool = False) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a float tensor of shape ``[N, 4]`` with finite values.

    Args:
        boxes: the tensor to check.
        name: what to call it in the message (``"gt_boxes"``, ``"image 3: boxes"``).
        allow_batch: also accept ``[B, N, 4]``.
    """
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, 4], got {type(boxes).__name__}")
    ndims = (2, 3) if allow_batch else (2,)
    if boxes.dim() not in ndims or boxes.shape[-1] != 4:
        expected = "[N, 4] or [B, N, 4]" if allow_batch else "[N, 4]"
        raise ValueError(f"{name} must have shape {expected}, got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {boxes.dtype}")
    finite = torch.isfinite(boxes).all(dim=-1)
    if not bool(finite.all()):
        index = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"{name}: box {list(index)} is not finite: {boxes[index].tolist()}")


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------
def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(x1, y1, w, h)`` (COCO's format)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x1, y1, w, h)`` -> ``(x1, y1, x2, y2)``."""
    x1, y1, w, h = boxes.unbind(-1)
    return torch.stack((x1, y1, x1 + w, y1 + h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


_TO_XYXY = {"xyxy": lambda b: b, "xywh": box_xywh_to_xyxy, "cxcywh": box_cxcywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "xywh": box_xyxy_to_xywh, "cxcywh": box_xyxy_to_cxcywh}


def convert_boxes(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (like ``torchvision.ops.box_convert``)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; expected one of {BOX_FORMATS}")
    return _FROM_XYXY[out_fmt](_TO_XYXY[in_fmt](boxes))


# ---------------------------------------------------------------------------------------------
# Area and IoU
# ---------------------------------------------------------------------------------------------
def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes: ``Tensor[..., 4] -> Tensor[...]``."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection areas, ``[..., N, 4] x [..., M, 4] -> [..., N, M]``."""
    ax1, ay1, ax2, ay2 = (c[..., :, None] for c in a.unbind(-1))
    bx1, by1, bx2, by2 = (c[..., None, :] for c in b.unbind(-1))
    # Overlap along x and along y (0 when the boxes do not meet), one coordinate at a time:
    # [..., N, M] temporaries rather than [..., N, M, 2] ones, half the memory traffic.
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    return w * h


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    IoU(A, B) = |A ∩ B| / |A ∪ B| = inter / (area_a + area_b - inter).

    Args:
        a: ``Tensor[N, 4]`` (or batched ``[B, N, 4]``) in xyxy.
        b: ``Tensor[M, 4]`` (or batched ``[B, M, 4]``) in xyxy.

    Returns:
        ``Tensor[N, M]`` (or ``[B, N, M]``): equal to ``torchvision.ops.box_iou`` for 2-D inputs.
    """
    rows = a.shape[:-1].numel()  # the result is [..., N, M]: `rows` entries per box of b
    if rows * b.shape[-2] <= _IOU_CHUNK_ELEMENTS:
        return _iou(a, b)
    # A large result (every anchor against every box of a batch: 8 x 20 x 49k at 512 px) is
    # filled a slice of ``b`` at a time, so that the temporaries of _iou stay in cache. Same numbers.
    out = a.new_empty((*a.shape[:-1], b.shape[-2]))
    step = max(1, _IOU_CHUNK_ELEMENTS // max(1, rows))
    for start in range(0, b.shape[-2], step):
        out[..., start : start + step] = _iou(a, b[..., start : start + step, :])
    return out


_IOU_CHUNK_ELEMENTS = 1 << 17


def _iou(a: Tensor, b: Tensor) -> Tensor:
    inter = _intersection(a, b)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / union


def clip_boxes(boxes: Tensor, image_size: tuple[int, int] | Tensor) -> Tensor:
    """Clip xyxy boxes to an image.

    Args:
        boxes: ``Tensor[..., 4]``.
        image_size: ``(height, width)``, or a ``Tensor[..., 2]`` of them that broadcasts
            against ``boxes[..., 0]`` (one size per image in a batch).
    """
    if isinstance(image_size, Tensor):
        h = image_size[..., 0, None].to(boxes.dtype)
        w = image_size[..., 1, None].to(boxes.dtype)
        x = boxes[..., 0::2].clamp(min=0)
        y = boxes[..., 1::2].clamp(min=0)
        x = torch.minimum(x, w)
        y = torch.minimum(y, h)
        return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
    h, w = image_size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


# ---------------------------------------------------------------------------------------------
# The box coder
# ---------------------------------------------------------------------------------------------
class BoxCoder:
    """Encode boxes as offsets from anchors, and decode them back.

    The same function as ``torchvision.models.detection._utils.BoxCoder``'s ``encode_single``
    and ``decode_single``, written for any leading shape (``[A, 4]`` or ``[B, A, 4]``).

    Args:
        weights: ``(wx, wy, ww, wh)`` multiply the deltas when encoding and divide them when
            decoding. RetinaNet uses ``(1, 1, 1, 1)``; Faster R-CNN's second stage ``(10, 10, 5, 5)``.
        clip: the largest ``dw``/``dh`` decode applies (see ``BBOX_XFORM_CLIP``).
    """

    def __init__(
        self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0), clip: float = BBOX_XFORM_CLIP
    ):
        self.weights = tuple(float(w) for w in weights)
        self.clip = float(clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, clip={self.clip:.4f})"

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Deltas that turn each anchor into its box.

        Args:
            anchors: ``Tensor[..., 4]`` xyxy.
            boxes: ``Tensor[..., 4]`` xyxy, the same shape (one box per anchor).

        Returns:
            ``Tensor[..., 4]`` of ``(dx, dy, dw, dh)``, already multiplied by ``weights``.
        """
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(boxes.dtype)
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah

        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh

        dx = wx * (bx - ax) / aw
        dy = wy * (by - ay) / ah
        dw = ww * torch.log(bw / aw)
        dh = wh * torch.log(bh / ah)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """Boxes from anchors and deltas: the inverse of ``encode``.

        Args:
            anchors: ``Tensor[..., 4]`` xyxy.
            deltas: ``Tensor[..., 4]`` of ``(dx, dy, dw, dh)``, broadcastable with ``anchors``.

        Returns:
            ``Tensor[..., 4]`` xyxy boxes, in ``deltas``' dtype.
        """
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(deltas.dtype)
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah

        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.clip)

        cx = dx * aw + ax
        cy = dy * ah + ay
        half_w = 0.5 * (torch.exp(dw) * aw)
        half_h = 0.5 * (torch.exp(dh) * ah)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
