"""Table 1d's baseline: RetinaNet trained with online hard example mining instead of the focal loss."""

from __future__ import annotations

from torch import Tensor

from ..losses import OHEM_NEG_POS_RATIO, ohem_classification_loss, retinanet_loss
from ..matching import label_anchors
from ..model import RetinaNet

__all__ = ["OHEMRetinaNet"]


class OHEMRetinaNet(RetinaNet):
    """RetinaNet trained with OHEM instead of the focal loss (Table 1d's baseline).

    The classification loss is :func:`retina_edu.losses.ohem_classification_loss`: plain cross
    entropy on every positive anchor and on the ``neg_pos_ratio`` x P hardest negative anchors of
    the batch (the SSD-style 1:3 ratio the paper also tried), divided by P. The box loss is
    unchanged.
    """

    neg_pos_ratio: int = OHEM_NEG_POS_RATIO

    def compute_loss(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """``{"classification": OHEM CE, "bbox_regression": the usual box loss}`` for a batch."""
        c = self.config
        box = retinanet_loss(
            cls_logits,
            box_deltas,
            anchors,
            targets,
            alpha=None,
            gamma=0.0,
            box_loss=c.box_loss,
            beta=c.smooth_l1_beta,
            fg_iou=c.fg_iou,
            bg_iou=c.bg_iou,
            allow_low_quality=c.allow_low_quality,
            normalize="batch",
            box_coder=self.box_coder,
        )["bbox_regression"]
        labelled = label_anchors(anchors, targets, c.fg_iou, c.bg_iou, c.allow_low_quality)
        cls = ohem_classification_loss(cls_logits, labelled, self.neg_pos_ratio)
        return {"classification": cls, "bbox_regression": box}
