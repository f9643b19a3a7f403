"""Training presets and the optimisation they choose (notebook 08).

``Preset`` (``Preset.cpu()`` / ``Preset.gpu()``) and ``choose_preset``; ``make_optimizer``: the paper's SGD
(momentum 0.9, weight decay 1e-4, lr 0.01 per 16 images, scaled with the batch) or AdamW; ``lr_factor``: a
linear warmup, then cosine or step decay.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

import torch
from torch import nn

from ..device import default_device
from ..model import RetinaNetConfig

PAPER_LR_PER_16_IMAGES = 0.01  # SGD, section 4 "Optimization"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
@dataclass
class Preset:
    """Everything a training run needs besides the data.

    ``base_lr`` is the learning rate for 16 images per step; the run uses
    ``base_lr * batch_size * num_processes / 16`` (the linear scaling rule: most NaN reports in
    mmdetection's tracker come from lr 0.01 with a small batch).
    """

    name: str = "custom"
    # model
    backbone: str = "resnet50"
    pretrained_backbone: bool = False
    fpn_channels: int = 256
    head_convs: int = 4
    head_norm: str | None = None
    anchor_sizes: tuple = (32, 64, 128, 256, 512)
    image_size: int = 800
    # optimisation
    optimizer: str = "sgd"  # "sgd" (the paper) or "adamw"
    base_lr: float = PAPER_LR_PER_16_IMAGES
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 12
    warmup_steps: int = 500
    schedule: str = "step"  # "step": /10 at 2/3 and 8/9 of training (60k, 80k of 90k); or "cosine"
    grad_clip: float | None = 35.0  # max gradient norm (mmdetection restored 35 after NaN reports)
    hflip: bool = True  # the paper's only augmentation
    # loss
    gamma: float = 2.0
    alpha: float | None = 0.25
    prior_probability: float = 0.01
    # machinery
    amp: bool = True  # mixed precision: see mixed_precision_dtype (GPU: bf16/fp16; CPU: bf16 where native)
    channels_last: bool = True
    num_workers: int = 2
    eval_every: int = 0  # epochs between evaluations on the val data (0: only at the end)
    checkpoint_every: int = 500  # steps
    seed: int = 0
    model_overrides: dict = field(default_factory=dict)  # any other RetinaNetConfig field

    def __post_init__(self) -> None:
        """Check every training setting here, so a typo fails when the preset is made, not mid-run."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Preset.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Preset.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("image_size", 1),
            ("warmup_steps", 0),
            ("num_workers", 0),
            ("eval_every", 0),
            ("checkpoint_every", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"Preset.{name} must be a whole number >= {low}, got {value!r}")
        _check_number("base_lr", self.base_lr, low=0.0, low_open=True)
        _check_number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_number("weight_decay", self.weight_decay, low=0.0)
        _check_number("gamma", self.gamma, low=0.0)
        _check_number("prior_probability", self.prior_probability, low=0.0, high=1.0, low_open=True, high_open=True)
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, low=0.0, low_open=True, none="None (no clipping)")
        if self.alpha is not None:
            _check_number("alpha", self.alpha, low=0.0, high=1.0, none="None (no weighting)")
        model_fields = {f.name for f in fields(RetinaNetConfig)} - {"num_classes"}
        unknown = sorted(set(self.model_overrides) - model_fields)
        if unknown:
            raise ValueError(
                f"Preset.model_overrides: {unknown} are not RetinaNetConfig fields (choose from {sorted(model_fields)})"
            )

    @classmethod
    def cpu(cls, **overrides) -> Preset:
        """A useful detector on the shapes data from a 2-core laptop in minutes.

        Small and shallow where it does not hurt: ResNet-18, 64 FPN channels, 2 convs per
        subnet with GroupNorm (trains from scratch at a high learning rate), anchors halved to
        16..256 so that the smallest shapes (8 px and up) have anchors near their size, 256 px
        inputs, AdamW with a cosine decay. 8 images per step rather than 16: for the same number
        of images seen, twice the updates, which is what a short run needs (measured on 200 val
        images after 6,000 training images: AP 0.42 with batches of 8, 0.28 with 16).
        3 epochs of the 2,000 shapes images: about 6 minutes on 2 cores with bfloat16
        (Zen 4 / Sapphire Rapids), about twice that in float32. The data loads in the main
        process (``num_workers=0``): on 2 cores a worker only takes a core from the convolutions.
        """
        base = cls(
            name="cpu",
            backbone="resnet18",
            fpn_channels=64,
            head_convs=2,
            head_norm="group",
            anchor_sizes=(16, 32, 64, 128, 256),
            image_size=256,
            optimizer="adamw",
            base_lr=2e-3,
            batch_size=8,
            weight_decay=1e-4,
            epochs=3,
            warmup_steps=50,
            schedule="cosine",
            grad_clip=10.0,
            num_workers=0,
            checkpoint_every=100,
        )
        return replace(base, **overrides)

    @classmethod
    def gpu(cls, **overrides) -> Preset:
        """The paper's ResNet-50-FPN (256 channels, 4 convs per subnet, SGD 0.01 per 16 images),
        with GroupNorm in the heads to train from scratch, scaled to the shapes data: 512 px
        inputs (the 256 px shapes upsampled 2x), 24 epochs, cosine decay."""
        base = cls(
            name="gpu",
            backbone="resnet50",
            fpn_channels=256,
            head_convs=4,
            head_norm="group",
            anchor_sizes=(32, 64, 128, 256, 512),
            image_size=512,
            optimizer="sgd",
            base_lr=0.01,
            batch_size=16,
            epochs=24,
            warmup_steps=300,
            schedule="cosine",
            grad_clip=35.0,
            num_workers=6,
            checkpoint_every=500,
        )
        return replace(base, **overrides)

    def lr(self, num_processes: int = 1) -> float:
        """The learning rate actually used: ``base_lr`` scaled with the total batch."""
        return self.base_lr * self.batch_size * num_processes / 16

    def model_config(self, num_classes: int) -> RetinaNetConfig:
        """The model these settings describe, for ``num_classes`` classes.

        Fields named as in :class:`RetinaNetConfig` (backbone, fpn_channels, head_convs, head_norm,
        anchor_sizes, gamma, alpha, prior_probability, ...) are passed on as they are; ``image_size``
        becomes a square resize; ``model_overrides`` sets any other field.
        """
        shared = {f.name for f in fields(RetinaNetConfig)} & {f.name for f in fields(Preset)}
        kwargs: dict[str, Any] = {name: getattr(self, name) for name in shared}
        kwargs.update(
            num_classes=num_classes,
            anchor_sizes=tuple(self.anchor_sizes),
            resize=True,
            min_size=self.image_size,
            max_size=self.image_size,
        )
        kwargs.update(self.model_overrides)
        return RetinaNetConfig(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (what a checkpoint records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        """The preset ``to_dict`` wrote (keys of older versions that no longer exist are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _check_number(
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    none: str = "",
) -> None:
    """Raise ValueError unless ``value`` is a finite number in the range (``Preset.<name>``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open or high is None else "]"
        allowed = f"a number in {left}{low:g}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ValueError(f"Preset.{name} must be {allowed}{f' or {none}' if none else ''}, got {value!r}")


def choose_preset(name: str | None = None, device: torch.device | str | None = None) -> tuple[Preset, str]:
    """The preset for this machine (or the one named), with the reason in words."""
    if name is not None:
        if name not in ("cpu", "gpu"):
            raise ValueError(f"unknown preset {name!r}: choose 'cpu' or 'gpu'")
        return getattr(Preset, name)(), f"the {name!r} preset was asked for"
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        gpu_name = torch.cuda.get_device_name(device)
        return Preset.gpu(), (
            f"a CUDA GPU is available ({gpu_name}): the paper's ResNet-50-FPN architecture, adapted to the shapes data"
        )
    threads = torch.get_num_threads()
    return Preset.cpu(), f"no GPU found: the small CPU preset, sized for {threads} CPU threads"


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, preset: Preset, lr: float) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": preset.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if preset.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": preset.momentum}
    elif preset.optimizer == "adamw":
        cls, kwargs = torch.optim.AdamW, {}
    else:
        raise ValueError(f"unknown optimizer {preset.optimizer!r}: choose 'sgd' or 'adamw'")
    try:  # one fused kernel for all parameters instead of a dozen small ops per tensor
        return cls(groups, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, lr=lr, **kwargs)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup from 0.001, then decay."""
    if step < warmup_steps:
        alpha = step / warmup_steps
        return 0.001 * (1 - alpha) + alpha
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":  # the paper: /10 at 60k and 80k of 90k iterations
        return 0.1 ** sum(step >= total_steps * f for f in (2 / 3, 8 / 9))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}: choose 'cosine', 'step' or 'constant'")
