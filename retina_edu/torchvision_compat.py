"""torchvision's RetinaNet -> retina_edu's, weights and all (notebook 07).

``from_torchvision`` reads every choice a torchvision ``RetinaNet`` made (P6 from P5 or C5, truncated
anchor sizes, corner-aligned anchors, GroupNorm heads, L1/GIoU box loss, its resizing and
thresholds) into a ``RetinaNetConfig``, builds our model from it and copies the weights, so the two
give the same detections and the same training losses (``tests/test_model.py`` checks both).
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .model import RetinaNet, RetinaNetConfig

__all__ = ["from_torchvision", "load_torchvision_state_dict"]


def _torchvision_key(key: str) -> str | None:
    """Our parameter name for a torchvision RetinaNet state-dict key (None: not ours)."""
    rules = [
        ("backbone.body.", "backbone.body."),
        ("backbone.fpn.extra_blocks.p6.", "fpn.p6."),
        ("backbone.fpn.extra_blocks.p7.", "fpn.p7."),
        ("head.classification_head.conv.", "class_subnet.convs."),
        ("head.classification_head.cls_logits.", "class_subnet.out."),
        ("head.regression_head.conv.", "box_subnet.convs."),
        ("head.regression_head.bbox_reg.", "box_subnet.out."),
    ]
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old) :]
    for old, new in (("backbone.fpn.inner_blocks.", "fpn.lateral."), ("backbone.fpn.layer_blocks.", "fpn.output.")):
        if key.startswith(old):  # inner_blocks.{i}.0.weight -> lateral.{i}.weight
            i, _, rest = key[len(old) :].split(".", 2)
            return f"{new}{i}.{rest}"
    return None


def _torchvision_backbone_name(body: nn.Module) -> str:
    blocks = [len(getattr(body, f"layer{i}")) for i in range(1, 5)]
    bottleneck = isinstance(body.layer1[0], torchvision.models.resnet.Bottleneck)
    table = {
        (False, (2, 2, 2, 2)): "resnet18",
        (False, (3, 4, 6, 3)): "resnet34",
        (True, (3, 4, 6, 3)): "resnet50",
        (True, (3, 4, 23, 3)): "resnet101",
    }
    try:
        return table[(bottleneck, tuple(blocks))]
    except KeyError:
        raise ValueError(
            f"unsupported torchvision backbone with blocks {blocks}: a ResNet-18/34/50/101 is expected"
        ) from None


def from_torchvision(tv_model: nn.Module) -> RetinaNet:
    """A retina_edu ``RetinaNet`` with the configuration and weights of a torchvision RetinaNet.

    Works for ``retinanet_resnet50_fpn`` (P6 from P5, heads without norm, L1 box loss) and
    ``retinanet_resnet50_fpn_v2`` (P6 from C5, GroupNorm heads, GIoU), any class count, and
    other ResNet depths built the same way. The result gives the same detections: torchvision's
    anchors (truncated sizes, rounded corners, strides taken from the feature map sizes), its
    resizing, padding to 32 and its 300 detections per image are all copied into the config.

    Example (with internet, for COCO-trained weights)::

        tv = torchvision.models.detection.retinanet_resnet50_fpn(weights="DEFAULT")
        model = from_torchvision(tv).eval()
    """
    from torchvision.models.detection import RetinaNet as TVRetinaNet

    if not isinstance(tv_model, TVRetinaNet):
        raise ValueError(f"expected a torchvision.models.detection.RetinaNet, got {type(tv_model).__name__}")
    model = RetinaNet(config=_torchvision_config(tv_model))
    load_torchvision_state_dict(model, tv_model.state_dict())
    # FrozenBatchNorm's eps is not in the state dict (COCO weights set it to 0): copy it.
    ours = dict(model.backbone.body.named_modules())
    for name, module in tv_model.backbone.body.named_modules():
        if hasattr(module, "eps") and name in ours:
            ours[name].eps = module.eps
    return model.train(tv_model.training)


def _torchvision_loss_type(tv_model: nn.Module) -> str:
    """The box loss of a torchvision RetinaNet, after checking that its anchors and resizing are ones we
    can copy."""
    if len({tuple(r) for r in tv_model.anchor_generator.aspect_ratios}) != 1:
        raise ValueError("torchvision anchor generators with different aspect ratios per level are not supported")
    if getattr(tv_model.transform, "fixed_size", None) is not None:
        raise ValueError("torchvision models with a fixed_size transform are not supported")
    loss_type = getattr(tv_model.head.regression_head, "_loss_type", "l1")
    if loss_type not in ("l1", "smooth_l1", "giou"):
        raise ValueError(f"unsupported box loss {loss_type!r}")
    return loss_type


def _torchvision_config(tv_model: nn.Module) -> RetinaNetConfig:
    """Every choice a torchvision RetinaNet made, as a ``RetinaNetConfig``."""
    loss_type = _torchvision_loss_type(tv_model)
    body, fpn, gen, transform = (
        tv_model.backbone.body,
        tv_model.backbone.fpn,
        tv_model.anchor_generator,
        tv_model.transform,
    )
    cls_head = tv_model.head.classification_head
    first_block = cls_head.conv[0]
    head_norm = "group" if any(isinstance(m, nn.GroupNorm) for m in first_block.modules()) else None
    return RetinaNetConfig(
        num_classes=cls_head.num_classes,
        backbone=_torchvision_backbone_name(body),
        frozen_bn=isinstance(body.bn1, FrozenBatchNorm2d),
        fpn_channels=tv_model.backbone.out_channels,
        p6_from="p5" if fpn.extra_blocks.use_P5 else "c5",
        head_convs=len(cls_head.conv),
        head_norm=head_norm,
        anchor_sizes=tuple(tuple(s) for s in gen.sizes),
        anchor_scales=None,
        aspect_ratios=tuple(gen.aspect_ratios[0]),
        round_anchors=True,
        strides_from_grid=True,
        resize=True,
        min_size=int(transform.min_size[-1]),
        max_size=int(transform.max_size),
        size_divisible=int(transform.size_divisible),
        image_mean=tuple(transform.image_mean),
        image_std=tuple(transform.image_std),
        score_thresh=float(tv_model.score_thresh),
        topk_candidates=int(tv_model.topk_candidates),
        nms_thresh=float(tv_model.nms_thresh),
        detections_per_img=int(tv_model.detections_per_img),
        fg_iou=float(tv_model.proposal_matcher.high_threshold),
        bg_iou=float(tv_model.proposal_matcher.low_threshold),
        allow_low_quality=bool(tv_model.proposal_matcher.allow_low_quality_matches),
        box_loss="l1" if loss_type == "l1" else loss_type,
        smooth_l1_beta=0.0 if loss_type == "l1" else 1.0,
        loss_normalize="image",
    )


def load_torchvision_state_dict(model: RetinaNet, state_dict: dict[str, Tensor]) -> None:
    """Load a torchvision RetinaNet state dict into ``model``, renaming keys; every key must fit."""
    renamed = {}
    for key, value in state_dict.items():
        new = _torchvision_key(key)
        if new is None:
            raise ValueError(f"unexpected key {key!r} in the torchvision state dict")
        renamed[new] = value
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
