"""The configuration of one ablation run, the ``Preset`` it trains with, and its cache key."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from .. import train as training
from ..anchors import PAPER_ASPECT_RATIOS, PAPER_SCALES
from ..files import file_sha256

__all__ = ["CACHE_VERSION", "Ablation", "ablation_key", "dataset_fingerprint", "make_preset"]

CACHE_VERSION = 1  # bump when the runner changes what a cached result means
CPU_PRESET_IMAGE_SIZE = 256  # Preset.cpu()'s anchors (16..256 px) are sized for 256 px images


@dataclass
class Ablation:
    """One training run of an ablation study.

    The run is ``Preset.cpu()`` with these changes: images resized to ``image_size`` pixels (the
    model's own resize, so objects shrink with the image) and anchors shrunk by the same factor,
    ``steps`` steps of ``batch_size`` images (the first ``steps * batch_size`` training images, one
    pass, the warmup and cosine decay spanning exactly these steps), then any ``preset`` field.

    Args:
        name: a label for tables and legends; not part of the cache key (two names for the same
            configuration share one run).
        gamma, alpha, prior_probability: the loss and the prior init (Table 1a/1b, section 4).
        anchor_scales, aspect_ratios: anchors per location (Table 1c): ``(1.0,), (1.0,)`` is one.
        loss: ``"focal"`` (``gamma = 0`` is α-balanced CE) or ``"ohem"`` (CE on the positives and
            the hardest negatives, Table 1d; see :class:`OHEMRetinaNet`).
        seed: weights, data order and flips.
        steps, batch_size: the budget. More steps than one pass over the data gives several
            epochs over a subset sized to make exactly ``steps``.
        image_size: the side of the (square) input in pixels.
        val_images: mAP on the first ``val_images`` images of the val data (None: all).
        preset: other ``Preset`` fields (``{"optimizer": "sgd", "base_lr": 0.02}``).
        trunk: start the backbone and FPN from the weights another run ends with (run first, or
            read from the cache); the subnets start from scratch, as in the paper, whose
            backbone comes pretrained on ImageNet. Its BatchNorms are frozen (as Detectron does).
        freeze_trunk: with ``trunk``, train only the subnets (the trunk gets no gradient).
        keep_weights: save the trained model's weights beside the result (a trunk needs them).
    """

    name: str
    gamma: float = 2.0
    alpha: float | None = 0.25
    prior_probability: float = 0.01
    anchor_scales: tuple = PAPER_SCALES
    aspect_ratios: tuple = PAPER_ASPECT_RATIOS
    loss: str = "focal"
    seed: int = 0
    steps: int = 80
    batch_size: int = 8
    image_size: int = 128
    val_images: int | None = 100
    preset: dict = field(default_factory=dict)
    trunk: Ablation | None = None
    freeze_trunk: bool = True
    keep_weights: bool = False

    def __post_init__(self):
        if self.loss not in ("focal", "ohem"):
            raise ValueError(f"{self.name}: loss must be 'focal' or 'ohem', got {self.loss!r}")
        if self.steps < 1 or self.batch_size < 1 or self.image_size < 32:
            raise ValueError(
                f"{self.name}: need steps >= 1, batch_size >= 1 and image_size >= 32, got "
                f"{self.steps}, {self.batch_size}, {self.image_size}"
            )
        self.anchor_scales = tuple(float(s) for s in self.anchor_scales)
        self.aspect_ratios = tuple(float(r) for r in self.aspect_ratios)
        if isinstance(self.trunk, dict):  # read back from a cached result
            self.trunk = Ablation(**self.trunk)
        if self.trunk is not None and not self.trunk.keep_weights:
            raise ValueError(f"{self.name}: its trunk {self.trunk.name!r} must be run with keep_weights=True")
        known = {f.name for f in fields(training.Preset)}
        unknown = sorted(set(self.preset) - known)
        if unknown:
            raise ValueError(f"{self.name}: unknown Preset fields {unknown}")

    @property
    def anchors_per_location(self) -> int:
        return len(self.anchor_scales) * len(self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_preset(ablation: Ablation, num_train: int) -> tuple[training.Preset, int]:
    """The ``Preset`` an ablation trains with, and the training subset size it needs.

    Returns:
        ``(preset, num_images)``: train on the first ``num_images`` images for ``preset.epochs``
        epochs; ``preset.epochs * (num_images // batch_size)`` is the number of steps.
    """
    a = ablation
    if num_train < a.batch_size:
        raise ValueError(f"{a.name}: {num_train} training images are fewer than one batch of {a.batch_size}")
    epochs = math.ceil(a.steps * a.batch_size / num_train)
    steps_per_epoch = math.ceil(a.steps / epochs)
    num_images = steps_per_epoch * a.batch_size
    factor = a.image_size / CPU_PRESET_IMAGE_SIZE
    overrides: dict[str, Any] = dict(
        name=f"ablation:{a.name}",
        image_size=a.image_size,
        anchor_sizes=tuple(s * factor for s in training.Preset.cpu().anchor_sizes),
        batch_size=a.batch_size,
        epochs=epochs,
        warmup_steps=max(1, round(0.1 * epochs * steps_per_epoch)),
        gamma=a.gamma,
        alpha=a.alpha,
        prior_probability=a.prior_probability,
        seed=a.seed,
        num_workers=0,  # the images are small: worker processes cost more than they save
        checkpoint_every=10**9,
    )
    overrides.update(a.preset)
    model_overrides = {"anchor_scales": a.anchor_scales, "aspect_ratios": a.aspect_ratios}
    if a.trunk is not None:
        model_overrides["frozen_bn"] = True  # a pretrained trunk keeps its BatchNorm statistics
    overrides["model_overrides"] = {**model_overrides, **a.preset.get("model_overrides", {})}
    return training.Preset.cpu(**overrides), num_images


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset for the cache: its class names, size, the hash of its annotation
    file (``CocoDetection``: the shapes images are generated with it) and the indices of any
    ``Subset`` around it."""
    indices = None
    base = dataset
    while isinstance(base, Subset):
        indices = [base.indices[i] for i in (indices if indices is not None else range(len(base)))]
        base = base.dataset
    ident: dict[str, Any] = {
        "type": type(base).__name__,
        "classes": list(getattr(base, "classes", [])),
        "size": len(base),
    }
    ann_file = getattr(base, "ann_file", None)
    if ann_file is not None and Path(ann_file).is_file():
        ident["annotations_sha256"] = file_sha256(ann_file)
    else:  # no file to hash: the image ids (or the repr) stand for the content
        ident["ids"] = [str(i) for i in getattr(base, "ids", [])] or repr(base)
    if indices is not None:
        ident["indices_sha256"] = hashlib.sha256(json.dumps(indices).encode()).hexdigest()
    return ident


def ablation_key(ablation: Ablation, train_data: Dataset, val_data: Dataset | None) -> str:
    """A 16-hex-digit key for (configuration, data): everything that changes the result but the name."""
    preset, num_images = make_preset(ablation, len(train_data))
    config = _without_names(ablation.to_dict())
    preset_dict = {k: v for k, v in preset.to_dict().items() if k != "name"}
    payload = {
        "cache_version": CACHE_VERSION,
        "ablation": config,
        "preset": preset_dict,
        "num_images": num_images,
        "train": dataset_fingerprint(train_data),
        "val": dataset_fingerprint(val_data) if val_data is not None else None,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_names(config: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in config.items() if k != "name"}
    if config.get("trunk") is not None:
        config["trunk"] = _without_names(config["trunk"])
    return config
