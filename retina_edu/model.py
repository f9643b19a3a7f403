"""The network: backbone + FPN + class and box subnets, and the prior init (notebooks 05-07).

Paper, section 4:

* **Backbone + FPN**: a ResNet gives C3, C4, C5 (strides 8, 16, 32). P3-P5 come from them by
  lateral 1x1 convs and top-down nearest-neighbour upsampling, each smoothed by a 3x3 conv.
  **P6 is a 3x3 stride-2 conv on C5**, and P7 a ReLU then a 3x3 stride-2 conv on P6. No P2.
  (torchvision's ``retinanet_resnet50_fpn`` builds P6 from P5 instead: ``p6_from="p5"``.)
* **Class subnet**: ``head_convs`` x (3x3 conv, C channels, ReLU), then a 3x3 conv to K*A
  outputs and a sigmoid. **Box subnet**: the same shape, 4*A outputs. The two share no
  weights; each is shared across all levels.
* **Initialisation**: the subnets' convs get N(0, 0.01²) weights and zero biases, except the
  last class conv whose bias is b = -log((1 - π) / π), π = 0.01: at the start every anchor
  predicts "object" with probability 0.01, so the ~100k background anchors do not swamp the
  loss in the first iterations.

The calling convention is torchvision's: in train mode ``model(images, targets)`` returns the
loss dict; in eval mode ``model(images)`` returns one ``{"boxes", "scores", "labels"}`` per image.
``retina_edu.torchvision_compat.from_torchvision`` turns a torchvision ``RetinaNet`` into this
one, weights and all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .anchors import PAPER_ANCHOR_SIZES, PAPER_ASPECT_RATIOS, PAPER_SCALES, PAPER_STRIDES, AnchorGenerator
from .boxes import BoxCoder
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .device import eval_mode
from .losses import ALPHA, GAMMA, SMOOTH_L1_BETA, retinanet_loss
from .matching import BG_IOU, FG_IOU
from .postprocess import DETECTIONS_PER_IMG, NMS_THRESH, SCORE_THRESH, TOPK_CANDIDATES, postprocess_detections

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRIOR_PROBABILITY",
    "FPN",
    "Backbone",
    "HeadOutputs",
    "Preprocessed",
    "RetinaNet",
    "RetinaNetConfig",
    "Subnet",
    "prior_bias",
]

PRIOR_PROBABILITY = 0.01
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large", "mobilenet_v3_small")


def prior_bias(pi: float = PRIOR_PROBABILITY) -> float:
    """The class bias that makes sigmoid(b) = π: b = -log((1 - π) / π) (≈ -4.595 for π = 0.01)."""
    if not 0 < pi < 1:
        raise ValueError(f"the prior probability must be in (0, 1), got {pi}")
    return -math.log((1 - pi) / pi)


@dataclass
class RetinaNetConfig:
    """Everything that defines a RetinaNet; saved in checkpoints so a model can be rebuilt.

    The defaults are the paper's (ResNet-50-FPN, 256 channels, 4 head convs, 9 anchors, P6 from
    C5, 800-pixel inputs, 0.05 / 1000 / 0.5 / 100 at inference, focal loss 0.25 / 2, smooth L1
    with beta 0.11).
    """

    num_classes: int
    backbone: str = "resnet50"
    pretrained_backbone: bool = False
    frozen_bn: bool | None = None  # None: frozen when the backbone is pretrained
    fpn_channels: int = 256
    p6_from: str = "c5"  # "c5": the paper; "p5": torchvision's retinanet_resnet50_fpn
    head_convs: int = 4
    head_norm: str | None = None  # None: the paper; "group": GroupNorm (torchvision v2)
    prior_probability: float = PRIOR_PROBABILITY
    # anchors
    anchor_sizes: tuple = PAPER_ANCHOR_SIZES
    anchor_scales: tuple | None = PAPER_SCALES
    aspect_ratios: tuple = PAPER_ASPECT_RATIOS
    anchor_offset: float = 0.0
    round_anchors: bool = False
    strides_from_grid: bool = False
    # input
    resize: bool = True
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 128  # Detectron pads to P7's stride so every level's stride is exact
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    # inference
    score_thresh: float = SCORE_THRESH
    topk_candidates: int = TOPK_CANDIDATES
    nms_thresh: float = NMS_THRESH
    detections_per_img: int = DETECTIONS_PER_IMG
    # loss
    alpha: float | None = ALPHA
    gamma: float = GAMMA
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = SMOOTH_L1_BETA
    fg_iou: float = FG_IOU
    bg_iou: float = BG_IOU
    allow_low_quality: bool = True
    loss_normalize: str = "batch"

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int (no background slot), got {self.num_classes!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        if self.p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from must be 'c5' (the paper) or 'p5' (torchvision v1), got {self.p6_from!r}")
        if self.head_norm not in (None, "group"):
            raise ValueError(f"head_norm must be None or 'group', got {self.head_norm!r}")
        # tuples survive a round trip through a checkpoint (which stores lists)
        for name in ("anchor_sizes", "anchor_scales", "aspect_ratios", "image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetinaNetConfig:
        """The config saved by ``to_dict`` (checkpoints); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k != "extra" or v}  # an empty ``extra`` of older checkpoints
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RetinaNetConfig keys {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------
def _load_backbone(name: str, pretrained: bool, norm_layer) -> nn.Module:
    builder = getattr(torchvision.models, name)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(builder).DEFAULT
    try:
        return builder(weights=weights, norm_layer=norm_layer)
    except Exception as err:  # urllib errors, hash mismatches, proxies: all say "no weights"
        if weights is None:
            raise
        raise RuntimeError(
            f"could not load the ImageNet weights of {name} ({weights.url}): {err}.\n"
            f"You are probably offline. Either train from scratch (pretrained_backbone=False: the "
            f"shapes data needs no pretraining), or download the file elsewhere and put it in "
            f"{torch.hub.get_dir()}/checkpoints/"
        ) from err


class Backbone(nn.Module):
    """C3, C4, C5 (strides 8, 16, 32) of a torchvision classification network.

    ResNets keep torchvision's module names under ``body`` (``body.layer1.0.conv1``), so that
    torchvision's weights load without renaming.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = False, frozen_bn: bool | None = None):
        super().__init__()
        frozen = pretrained if frozen_bn is None else frozen_bn
        norm_layer = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
        self.name = name
        net = _load_backbone(name, pretrained, norm_layer)
        if name.startswith("resnet"):
            net.avgpool = nn.Identity()
            net.fc = nn.Identity()
            self.body = net
            width = net.layer4[-1].conv1.in_channels  # 512 (basic blocks) or 2048 (bottlenecks)
            self.out_channels = (width // 4, width // 2, width)
            self._stages = None
        else:  # MobileNetV3: find the last block at strides 8, 16 and 32
            self.body = net.features
            self._stages = self._find_stages(self.body)
            self.out_channels = tuple(c for _, c in self._stages)

    @staticmethod
    def _find_stages(features: nn.Sequential) -> list[tuple[int, int]]:
        stages: dict[int, tuple[int, int]] = {}
        with eval_mode(features), torch.no_grad():
            x = torch.zeros(1, 3, 64, 64)
            for i, block in enumerate(features):
                x = block(x)
                stride = 64 // x.shape[-1]
                if stride in (8, 16, 32):
                    stages[stride] = (i, x.shape[1])
        return [stages[8], stages[16], stages[32]]

    def forward(self, x: Tensor) -> list[Tensor]:
        if self._stages is None:
            b = self.body
            x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
            c2 = b.layer1(x)
            c3 = b.layer2(c2)
            c4 = b.layer3(c3)
            c5 = b.layer4(c4)
            return [c3, c4, c5]
        outs, wanted = [], {i for i, _ in self._stages}
        for i, block in enumerate(self.body):
            x = block(x)
            if i in wanted:
                outs.append(x)
            if i == self._stages[-1][0]:
                break
        return outs


# ---------------------------------------------------------------------------------------------
# Feature pyramid
# ---------------------------------------------------------------------------------------------
class FPN(nn.Module):
    """P3-P7 from C3-C5 (Lin et al. 2017, "Feature Pyramid Networks"; RetinaNet section 4)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, p6_from: str = "c5"):
        super().__init__()
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(in_channels[-1] if p6_from == "c5" else channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # "Xavier/He uniform" as Detectron and torchvision
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, c3: Tensor, c4: Tensor, c5: Tensor) -> list[Tensor]:
        inner5 = self.lateral[2](c5)
        inner4 = self.lateral[1](c4) + F.interpolate(inner5, size=c4.shape[-2:], mode="nearest")
        inner3 = self.lateral[0](c3) + F.interpolate(inner4, size=c3.shape[-2:], mode="nearest")
        p3, p4, p5 = self.output[0](inner3), self.output[1](inner4), self.output[2](inner5)
        p6 = self.p6(c5 if self.p6_from == "c5" else p5)
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]


# ---------------------------------------------------------------------------------------------
# Subnets
# ---------------------------------------------------------------------------------------------
class Subnet(nn.Module):
    """``num_convs`` x (3x3 conv, [GroupNorm], ReLU), then a 3x3 conv to ``A * out_per_anchor``.

    The same module runs on every pyramid level. Its output for all levels is reshaped to
    ``[B, sum_l H_l * W_l * A, out_per_anchor]``, anchors in the order of ``anchors.py``.
    """

    def __init__(
        self,
        channels: int,
        num_anchors: int,
        out_per_anchor: int,
        num_convs: int = 4,
        norm: str | None = None,
        final_bias: float = 0.0,
    ):
        super().__init__()
        self.num_anchors = num_anchors
        self.out_per_anchor = out_per_anchor
        blocks = []
        for _ in range(num_convs):
            layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=norm is None)]
            if norm == "group":
                layers.append(nn.GroupNorm(min(32, channels), channels))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
        self.convs = nn.Sequential(*blocks)
        self.out = nn.Conv2d(channels, num_anchors * out_per_anchor, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # paper: "Gaussian weight fill with sigma = 0.01", bias 0
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.out.bias, final_bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        outs = []
        for x in features:
            y = self.out(self.convs(x))
            n, _, h, w = y.shape
            y = y.view(n, self.num_anchors, self.out_per_anchor, h, w).permute(0, 3, 4, 1, 2)
            outs.append(y.reshape(n, h * w * self.num_anchors, self.out_per_anchor))
        return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------------------------------
# RetinaNet
# ---------------------------------------------------------------------------------------------
class Preprocessed(NamedTuple):
    """What ``RetinaNet.preprocess`` returns (a tuple: ``batch, sizes, original_sizes, targets = ...``)."""

    batch: Tensor  # [B, 3, H_pad, W_pad], normalised, resized and padded to size_divisible
    sizes: list[tuple[int, int]]  # (h, w) of each image after resizing, inside the padding
    original_sizes: list[tuple[int, int]]  # (h, w) of each input image
    targets: list[dict[str, Tensor]] | None  # boxes scaled like their images


class HeadOutputs(NamedTuple):
    """What ``RetinaNet.head_outputs`` returns (a tuple, as torchvision's ``head_outputs`` dict)."""

    cls_logits: Tensor  # [B, A, K], A = anchors of all levels, in anchors.py's order
    box_deltas: Tensor  # [B, A, 4], (dx, dy, dw, dh) against each anchor
    anchors: Tensor  # [A, 4] xyxy pixels in the padded batch, shared by the images
    num_per_level: list[int]  # how many of the A anchors belong to P3, ..., P7


class RetinaNet(nn.Module):
    """RetinaNet with the torchvision calling convention.

    Args:
        num_classes: K, the object classes (no background slot: the sigmoid heads need none).
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``,
            ``"mobilenet_v3_large"`` or ``"mobilenet_v3_small"``.
        config: a full ``RetinaNetConfig`` instead of the arguments.
        **kwargs: any other ``RetinaNetConfig`` field (``fpn_channels=64``, ``resize=False``, ...).

    Inputs: ``images`` is a list of ``Tensor[3, H, W]`` floats in [0, 1] (sizes may differ) or a
    ``Tensor[B, 3, H, W]``; ``targets`` one ``{"boxes": [N, 4] xyxy, "labels": [N]}`` per image.
    The model normalises, resizes (``resize=True``: shorter side to ``min_size``, longer side at
    most ``max_size``) and pads; detections come back in the input images' pixels.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        *,
        config: RetinaNetConfig | None = None,
        **kwargs,
    ):
        super().__init__()
        if config is None:
            if num_classes is None:
                raise ValueError("RetinaNet needs num_classes (or a config)")
            config = RetinaNetConfig(num_classes=num_classes, backbone=backbone, **kwargs)
        elif num_classes is not None or kwargs:
            raise ValueError("pass either a config or arguments, not both")
        self.config = c = config
        self.backbone = Backbone(c.backbone, c.pretrained_backbone, c.frozen_bn)
        self.fpn = FPN(self.backbone.out_channels, c.fpn_channels, c.p6_from)
        self.anchor_generator = AnchorGenerator(
            PAPER_STRIDES,
            c.anchor_sizes,
            c.anchor_scales,
            c.aspect_ratios,
            c.anchor_offset,
            round_base=c.round_anchors,
            strides_from_grid=c.strides_from_grid,
        )
        num_anchors = self.anchor_generator.num_anchors_per_location
        self.class_subnet = Subnet(
            c.fpn_channels, num_anchors, c.num_classes, c.head_convs, c.head_norm, prior_bias(c.prior_probability)
        )
        self.box_subnet = Subnet(c.fpn_channels, num_anchors, 4, c.head_convs, c.head_norm, 0.0)
        self.box_coder = BoxCoder()
        self.register_buffer("image_mean", torch.tensor(c.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(c.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # -- input ------------------------------------------------------------------------------
    def _resize_scale(self, h: int, w: int) -> float:
        c = self.config
        return min(c.min_size / min(h, w), c.max_size / max(h, w))

    def _resized_size(self, h: int, w: int) -> tuple[int, int]:
        """The size ``F.interpolate`` gives for ``_resize_scale`` (it floors); equal sizes skip the resize."""
        scale = self._resize_scale(h, w)
        return (math.floor(h * scale), math.floor(w * scale))

    def preprocess(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> Preprocessed:
        """Normalise, resize and pad a batch, and scale the targets' boxes like their images.

        Args:
            images: ``Tensor[B, 3, H, W]``, or a list of ``Tensor[3, H, W]`` (sizes may differ),
                floats in [0, 1].
            targets: one ``{"boxes": Tensor[N, 4] xyxy pixels, "labels": Tensor[N]}`` per image.

        Returns:
            ``Preprocessed(batch, sizes, original_sizes, targets)``: see ``Preprocessed``.
        """
        image_list = _check_images(images)
        if targets is not None and len(targets) != len(image_list):
            raise ValueError(f"{len(targets)} targets for {len(image_list)} images")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in image_list]
        if isinstance(images, Tensor) or len(set(original_sizes)) == 1:
            # One size: normalise and resize the whole batch at once.
            stacked = images if isinstance(images, Tensor) else torch.stack(image_list)
            batch = self._normalize_resize(stacked)
            sizes = [(int(batch.shape[-2]), int(batch.shape[-1]))] * len(image_list)
        else:
            resized = [self._normalize_resize(img[None])[0] for img in image_list]
            sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
            batch = _paste_into_batch(resized)
        batch = _pad_to_multiple(batch, self.config.size_divisible)
        if targets is not None:
            targets = [_scale_target(t, orig, size) for t, orig, size in zip(targets, original_sizes, sizes)]
        return Preprocessed(batch, sizes, original_sizes, targets)

    def _normalize_resize(self, batch: Tensor) -> Tensor:
        """``Tensor[B, 3, H, W]`` in [0, 1] -> normalised with the image mean/std, resized if the config says so."""
        batch = (batch - self.image_mean.to(batch.dtype)) / self.image_std.to(batch.dtype)
        h, w = batch.shape[-2:]
        if self.config.resize and self._resized_size(h, w) != (h, w):
            batch = F.interpolate(
                batch,
                scale_factor=self._resize_scale(h, w),
                mode="bilinear",
                recompute_scale_factor=True,
                align_corners=False,
            )
        return batch

    # -- the network ------------------------------------------------------------------------
    def features(self, batch: Tensor) -> list[Tensor]:
        """P3-P7 for a normalised, padded batch."""
        return self.fpn(*self.backbone(batch))

    def head_outputs(self, batch: Tensor) -> HeadOutputs:
        """Run backbone, FPN and both subnets on a normalised, padded batch (from ``preprocess``).

        Returns:
            ``HeadOutputs(cls_logits [B, A, K], box_deltas [B, A, 4], anchors [A, 4], num_per_level)``.
        """
        feats = self.features(batch)
        grid_sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_generator(tuple(batch.shape[-2:]), grid_sizes, device=batch.device)
        num_per_level = self.anchor_generator.num_anchors_per_level(tuple(batch.shape[-2:]), grid_sizes)
        return HeadOutputs(self.class_subnet(feats), self.box_subnet(feats), anchors, num_per_level)

    def compute_loss(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The RetinaNet loss with this model's settings (focal loss + box loss; ``losses.retinanet_loss``).

        Args:
            cls_logits: ``Tensor[B, A, K]``; box_deltas: ``Tensor[B, A, 4]``; anchors: ``Tensor[A, 4]`` xyxy.
            targets: one ``{"boxes": Tensor[N, 4] xyxy, "labels": Tensor[N] int64}`` per image, in the
                preprocessed batch's pixels.

        Returns:
            ``{"classification": scalar, "bbox_regression": scalar}`` (torchvision's keys), each already
            divided by the number of positive anchors.
        """
        c = self.config
        return retinanet_loss(
            cls_logits,
            box_deltas,
            anchors,
            targets,
            alpha=c.alpha,
            gamma=c.gamma,
            box_loss=c.box_loss,
            beta=c.smooth_l1_beta,
            fg_iou=c.fg_iou,
            bg_iou=c.bg_iou,
            allow_low_quality=c.allow_low_quality,
            normalize=c.loss_normalize,
            box_coder=self.box_coder,
        )

    def postprocess(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        num_per_level: Sequence[int],
        sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
        nms_thresh: float | None = None,
        detections_per_img: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections in the input images' pixels (``postprocess.postprocess_detections``, then rescaled).

        ``nms_thresh``/``detections_per_img`` replace the config's (``anchor_outputs``: 1.0 keeps every candidate).

        Returns:
            One ``{"boxes": Tensor[D, 4] xyxy, "scores": Tensor[D], "labels": Tensor[D] int64}`` per image,
            best score first, ``D <= detections_per_img``.
        """
        c = self.config
        detections = postprocess_detections(
            cls_logits,
            box_deltas,
            anchors,
            num_per_level,
            sizes,
            score_thresh=c.score_thresh,
            topk_candidates=c.topk_candidates,
            nms_thresh=c.nms_thresh if nms_thresh is None else nms_thresh,
            detections_per_img=c.detections_per_img if detections_per_img is None else detections_per_img,
            box_coder=self.box_coder,
        )
        for det, size, orig in zip(detections, sizes, original_sizes):
            if tuple(size) != tuple(orig):
                det["boxes"] = _scale_boxes(det["boxes"], size, orig)
        return detections

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """torchvision's convention: the loss dict in train mode, detections in eval mode.

        Args:
            images: ``Tensor[B, 3, H, W]`` or a list of ``Tensor[3, H, W]``, floats in [0, 1].
            targets: train mode only: one ``{"boxes": Tensor[N, 4] xyxy pixels, "labels": Tensor[N]}``
                per image (N may be 0).

        Returns:
            Train mode: ``{"classification", "bbox_regression"}`` scalars (see ``compute_loss``).
            Eval mode: one ``{"boxes", "scores", "labels"}`` dict per image (see ``postprocess``).
        """
        if self.training and targets is None:
            raise ValueError(
                "in train mode the model needs targets: model(images, targets); call model.eval() to detect"
            )
        batch, sizes, original_sizes, targets = self.preprocess(images, targets)
        cls_logits, box_deltas, anchors, num_per_level = self.head_outputs(batch)
        if self.training:
            return self.compute_loss(cls_logits, box_deltas, anchors, targets)
        return self.postprocess(cls_logits, box_deltas, anchors, num_per_level, sizes, original_sizes)


def _check_images(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The images as a list of ``Tensor[3, H, W]`` floats; a ValueError naming the first bad one."""
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be a Tensor[B, 3, H, W] or a list of Tensor[3, H, W], got {list(images.shape)}"
            )
        image_list = list(images.unbind(0))
    else:
        image_list = list(images)
        if len(image_list) == 0:
            raise ValueError("images is empty: pass at least one image")
        for i, img in enumerate(image_list):
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3:
                shape = list(img.shape) if isinstance(img, Tensor) else type(img).__name__
                raise ValueError(f"image {i} must be a Tensor[3, H, W] (RGB), got {shape}")
    for i, img in enumerate(image_list):
        if not img.is_floating_point():
            raise ValueError(
                f"image {i} has dtype {img.dtype}: the model expects floats in [0, 1] (use image.float() / 255)"
            )
    return image_list


def _paste_into_batch(images: Sequence[Tensor]) -> Tensor:
    """Images of different sizes, top-left aligned in one zero-padded ``Tensor[B, 3, H_max, W_max]``."""
    max_h = max(img.shape[-2] for img in images)
    max_w = max(img.shape[-1] for img in images)
    batch = images[0].new_zeros((len(images), 3, max_h, max_w))
    for i, img in enumerate(images):
        batch[i, :, : img.shape[1], : img.shape[2]].copy_(img)
    return batch


def _pad_to_multiple(batch: Tensor, divisor: int) -> Tensor:
    """Zero-pad the bottom and right so H and W are multiples of ``divisor`` (every stride exact)."""
    pad_h, pad_w = (-batch.shape[-2]) % divisor, (-batch.shape[-1]) % divisor
    return F.pad(batch, (0, pad_w, 0, pad_h)) if pad_h or pad_w else batch


def _scale_target(
    target: dict[str, Tensor], original_size: tuple[int, int], size: tuple[int, int]
) -> dict[str, Tensor]:
    """A copy of ``target`` with its boxes scaled from ``original_size`` to ``size`` (both (h, w))."""
    target = dict(target)
    if tuple(original_size) != tuple(size):
        target["boxes"] = _scale_boxes(target["boxes"], original_size, size)
    return target


def _scale_boxes(boxes: Tensor, from_size: Sequence[int], to_size: Sequence[int]) -> Tensor:
    """Scale xyxy boxes from an image of ``from_size = (h, w)`` to one of ``to_size`` (as torchvision)."""
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[0], dtype=torch.float32, device=boxes.device
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[1], dtype=torch.float32, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=-1)
