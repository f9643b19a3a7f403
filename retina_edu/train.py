"""Training: presets, the loop, checkpoints, several GPUs (notebook 07).

The loop is the one you would write by hand (``train_step`` below fits on a screen):

    images, targets -> model(images, targets) -> {"classification", "bbox_regression"}
    loss = sum -> backward -> clip gradients -> optimizer step -> learning-rate step

Around it: a preset (``Preset.cpu()`` / ``Preset.gpu()``), the paper's SGD (momentum 0.9,
weight decay 1e-4, lr 0.01 per 16 images, scaled with the batch) or AdamW, a linear warmup then
cosine or step decay, mixed precision on CUDA, a progress bar, a NaN guard, atomic checkpoints
that resume to the same weights, and DistributedDataParallel when started by ``torchrun``.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .files import save_torch_atomic, write_json_atomic
from .model import RetinaNet, RetinaNetConfig

__all__ = [
    "CHECKPOINT_NAME",
    "Preset",
    "TrainingDiverged",
    "TrainResult",
    "choose_preset",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "train",
    "train_step",
]

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "retina-edu-checkpoint-v1"
PAPER_LR_PER_16_IMAGES = 0.01  # SGD, section 4 "Optimization"


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
        kwargs = dict(
            num_classes=num_classes,
            backbone=self.backbone,
            pretrained_backbone=self.pretrained_backbone,
            fpn_channels=self.fpn_channels,
            head_convs=self.head_convs,
            head_norm=self.head_norm,
            anchor_sizes=tuple(self.anchor_sizes),
            resize=True,
            min_size=self.image_size,
            max_size=self.image_size,
            gamma=self.gamma,
            alpha=self.alpha,
            prior_probability=self.prior_probability,
        )
        kwargs.update(self.model_overrides)
        return RetinaNetConfig(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preset:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def choose_preset(name: str | None = None, device: torch.device | str | None = None) -> tuple[Preset, str]:
    """The preset for this machine (or the one named), with the reason in words."""
    if name is not None:
        if name not in ("cpu", "gpu"):
            raise ValueError(f"unknown preset {name!r}: choose 'cpu' or 'gpu'")
        return getattr(Preset, name)(), f"the {name!r} preset was asked for"
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        gpu_name = torch.cuda.get_device_name(device)
        return Preset.gpu(), f"a CUDA GPU is available ({gpu_name}): the paper's ResNet-50-FPN architecture, adapted to the shapes data"
    threads = torch.get_num_threads()
    return Preset.cpu(), f"no GPU found: the small CPU preset, sized for {threads} CPU threads"


def default_device() -> torch.device:
    if dist_is_on() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun)
# ---------------------------------------------------------------------------------------------
def dist_is_on() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; return ``(rank, world)``."""
    if not dist_is_on():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


# ---------------------------------------------------------------------------------------------
# Data: a sampler that decides the order and the flips, so a resumed run sees the same batches
# ---------------------------------------------------------------------------------------------
class _EpochSampler(Sampler):
    """Yields ``(index, flip)`` for one epoch: the order from a ``DistributedSampler`` (shuffled by
    seed and epoch, split across processes), the flips from a generator seeded the same way.
    ``start`` skips the samples a resumed run has already seen this epoch."""

    def __init__(self, dataset: Dataset, rank: int, world: int, seed: int, hflip: bool):
        self.base = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.n, self.seed, self.hflip, self.start = len(dataset), seed, hflip, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.base) - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        flips = (torch.rand(self.n, generator=g) < 0.5) if self.hflip else torch.zeros(self.n, dtype=torch.bool)
        for i, index in enumerate(self.base):
            if i >= self.start:
                yield (index, bool(flips[index]))


class _TrainView(Dataset):
    """``dataset[(index, flip)]``: the image and target, flipped horizontally when asked."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool]):
        index, flip = key
        image, target = self.dataset[index]
        if flip:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"]
            target = dict(target, boxes=torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1))
        return image, target, index


def _collate(batch):
    """``(images, targets, dataset indices)``: images stacked when they share a size."""
    images = [b[0] for b in batch]
    targets = [{"boxes": b[1]["boxes"], "labels": b[1]["labels"]} for b in batch]
    indices = [b[2] for b in batch]
    if len({tuple(im.shape) for im in images}) == 1:
        return torch.stack(images), targets, indices
    return images, targets, indices


def _non_finite_images(images: Tensor | list[Tensor], indices: list[int]) -> list[int]:
    """The dataset indices of the images in a batch that hold a NaN or infinite pixel."""
    return sorted(i for image, i in zip(images, indices) if not bool(torch.isfinite(image).all()))


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, preset: Preset, lr: float) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
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


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> RetinaNet:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path``, then rename it into
    place: a crash or Ctrl-C never leaves a half-written checkpoint, and the previous one stays."""
    return save_torch_atomic(path, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``train``; clear errors for a missing or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (train with --out DIR writes DIR/{CHECKPOINT_NAME})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a retina-edu checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    return state


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[RetinaNet, list[str]]:
    """The trained model of a checkpoint, in eval mode, and its class names."""
    state = load_checkpoint(path, map_location=device)
    model = RetinaNet(config=RetinaNetConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), list(state["classes"])


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


@dataclass
class TrainResult:
    model: RetinaNet
    history: dict[str, list[dict[str, float]]]
    checkpoint: Path | None
    metrics: Any = None  # an EvalResult when val data was given
    preset: Preset | None = None


def _to_device(images, targets, device, channels_last):
    if isinstance(images, Tensor):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
    else:
        images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def train_step(model, images, targets, optimizer, scaler, amp_dtype, grad_clip) -> dict[str, Tensor]:
    """One optimisation step: forward (under autocast when ``amp_dtype`` is set), backward, clip, step.

    Returns the detached losses; checks nothing (``train`` does).
    """
    device_type = (images if isinstance(images, Tensor) else images[0]).device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        losses = model(images, targets)
    loss = losses["classification"] + losses["bbox_regression"]
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}


_CPU_BF16_SPEEDUP: float | None = None


def cpu_bf16_speedup() -> float:
    """How much faster a conv forward+backward runs under bfloat16 autocast than in float32 on
    this CPU (measured once, ~1 s). CPUs with native bfloat16 (AVX512-BF16, AMX) gain 2x or more;
    older ones lose, so mixed precision on the CPU is only used where it is measured to help."""
    global _CPU_BF16_SPEEDUP
    if _CPU_BF16_SPEEDUP is None:
        conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
        x = torch.randn(8, 64, 32, 32)

        def best_of(bf16: bool) -> float:
            times = []
            for _ in range(4):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = conv(x)
                y.float().sum().backward()
                times.append(time.perf_counter() - start)
            return min(times[1:])

        try:
            _CPU_BF16_SPEEDUP = best_of(False) / best_of(True)
        except RuntimeError:  # no bfloat16 kernels at all
            _CPU_BF16_SPEEDUP = 0.0
    return _CPU_BF16_SPEEDUP


def mixed_precision_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 on GPUs that support it (else float16), bfloat16
    on CPUs that compute it natively, otherwise None (float32)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, read from /proc/cpuinfo).

    A flag rather than a timing, so that the same machine always makes the same choice (and the
    same training run). ``cpu_bf16_speedup()`` measures what it buys."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train(
    preset: Preset,
    train_data: Dataset,
    val_data: Dataset | None = None,
    out_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[str, dict], None]] = (),
    max_steps: int | None = None,
    model: RetinaNet | None = None,
) -> TrainResult:
    """Train a RetinaNet on ``train_data`` with ``preset``.

    Args:
        preset: ``Preset.cpu()``, ``Preset.gpu()`` or your own.
        train_data: a dataset of ``(image, target)`` (``CocoDetection``, ``VOCDetection``); it
            must expose ``classes``. Images at their own size: the model resizes them.
        val_data: evaluated with COCO mAP every ``preset.eval_every`` epochs and at the end.
        out_dir: where ``last.pt`` (the checkpoint) and ``history.json`` go; None: nowhere.
        resume: True to continue from ``out_dir/last.pt`` if it exists, or a checkpoint path.
        device: default CUDA when available (under torchrun, the local rank's GPU), else CPU.
        progress: show a tqdm progress bar with the loss and images/s.
        callbacks: called as ``cb(event, history)`` with event ``"step"``, ``"eval"`` or ``"end"``
            (``retina_edu.viz.LiveLossPlot`` draws a live curve).
        max_steps: stop after this many steps in total (the schedule still spans all epochs):
            for tests and for splitting a run in pieces.
        model: train this model (e.g. a subclass with another loss) instead of building one from
            ``preset.model_config``; its ``config`` is what the checkpoint records. Any model with
            torchvision's calling convention works (benchmarks train torchvision's RetinaNet with
            this loop); one without a ``config`` is trained without checkpoints.

    Raises:
        TrainingDiverged: the loss became NaN or infinite. The last good checkpoint is kept.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        # Tiny gradients of the sigma = 0.01 heads underflow into denormal floats, which x86 CPUs
        # process up to 100x slower; flushing them to zero changes nothing measurable but speed.
        torch.set_flush_denormal(True)
    rank, world = _setup_distributed(device)
    is_main = rank == 0
    classes = list(getattr(train_data, "classes", []))
    if not classes:
        raise ValueError("train_data must expose its class names as .classes (CocoDetection and VOCDetection do)")
    out_dir = Path(out_dir) if out_dir is not None else None
    if len(train_data) == 0:
        raise ValueError("train_data is empty")

    torch.manual_seed(preset.seed)
    np.random.seed(preset.seed)
    random.seed(preset.seed)
    if model is None:
        model = RetinaNet(config=preset.model_config(len(classes)))
    elif getattr(model, "num_classes", len(classes)) != len(classes):
        raise ValueError(f"the model has {model.num_classes} classes but the data has {len(classes)}: {classes}")
    config = getattr(model, "config", None)
    if config is None:
        out_dir = None
    model = model.to(device)
    if preset.channels_last:
        model = model.to(memory_format=torch.channels_last)

    lr = preset.lr(world)
    optimizer = make_optimizer(model, preset, lr)
    per_process = math.ceil(len(train_data) / world)
    batch_size = min(preset.batch_size, per_process)
    steps_per_epoch = per_process // batch_size
    total_steps = preset.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, preset.warmup_steps, preset.schedule)
    )
    amp_dtype = mixed_precision_dtype(device, preset.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    step, history = 0, {"train": [], "eval": []}
    checkpoint_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    resume_from = None
    if resume is True and checkpoint_path is not None and checkpoint_path.exists():
        resume_from = checkpoint_path
    elif resume and resume is not True:
        resume_from = Path(resume)
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        if list(state["classes"]) != classes:
            raise ValueError(
                f"{resume_from}: the checkpoint was trained on {len(state['classes'])} classes "
                f"{state['classes']}, but the data has {len(classes)}: {classes}"
            )
        changed = {k: (v, preset.to_dict().get(k)) for k, v in state["preset"].items()
                   if k not in ("epochs", "num_workers", "checkpoint_every", "eval_every") and preset.to_dict().get(k) != v}
        if changed:
            raise ValueError(
                f"{resume_from} was trained with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}): "
                f"choose another output folder, or delete this one to start again"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        step, history = state["step"], state["history"]

    def checkpoint_state() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": _unwrap(model).state_dict(),
            "config": config.to_dict(),
            "preset": preset.to_dict(),
            "classes": classes,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "rng": _rng_state(),
            "history": history,
        }

    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = _EpochSampler(train_data, rank, world, preset.seed, preset.hflip)
    last_step = total_steps if max_steps is None else min(total_steps, max_steps)
    bar = tqdm(total=last_step, initial=step, desc=f"train ({preset.name})", disable=not (progress and is_main), unit="step")
    metrics = None
    model.train()
    try:
        while step < last_step:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=in_epoch * batch_size)
            loader = DataLoader(
                _TrainView(train_data), batch_size=batch_size, sampler=sampler, drop_last=True,
                num_workers=preset.num_workers, collate_fn=_collate, pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            tick = time.perf_counter()
            for images, targets, indices in loader:
                images, targets = _to_device(images, targets, device, preset.channels_last)
                out = train_step(model, images, targets, optimizer, scaler, amp_dtype, preset.grad_clip)
                loss = out["loss"].item()
                if not math.isfinite(loss):
                    kept = f"The last good checkpoint is {checkpoint_path}." if checkpoint_path and checkpoint_path.exists() else "No checkpoint was written yet."
                    where = f"the loss became {loss} at step {step + 1} (epoch {epoch + 1}, learning rate {scheduler.get_last_lr()[0]:.3g})."
                    bad = _non_finite_images(images, indices)
                    if bad:
                        detail = (f"The batch holds training image(s) with NaN or infinite pixels: dataset index "
                                  f"{', '.join(map(str, bad))}. {kept} Fix or drop those images (a corrupt file, "
                                  f"or a transform that divides by zero) and train again.")
                    else:
                        detail = (f"{kept} Try: a lower learning rate (base_lr is per 16 images and is scaled "
                                  f"with the batch), gradient clipping (grad_clip), a longer warmup, and check "
                                  f"the data for tiny or degenerate boxes.")
                    raise TrainingDiverged(f"{where} {detail}")
                scheduler.step()
                step += 1
                now = time.perf_counter()
                record = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": loss,
                    "classification": out["classification"].item(),
                    "bbox_regression": out["bbox_regression"].item(),
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_s": batch_size * world / max(now - tick, 1e-9),
                }
                tick = now
                history["train"].append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{record['images_per_s']:.1f}", refresh=False)
                for cb in callbacks:
                    cb("step", history)
                if is_main and checkpoint_path is not None and step % preset.checkpoint_every == 0:
                    save_checkpoint(checkpoint_path, checkpoint_state())
                if step >= last_step or step % steps_per_epoch == 0:
                    break
            end_of_epoch = step % steps_per_epoch == 0
            if is_main and val_data is not None and end_of_epoch and preset.eval_every and (step // steps_per_epoch) % preset.eval_every == 0 and step < total_steps:
                metrics = _evaluate(model, val_data, device, history, step, steps_per_epoch, callbacks)
                model.train()
    finally:
        bar.close()

    if world > 1:
        _average_buffers(_unwrap(model), world)
    if is_main:
        if val_data is not None and step == total_steps:
            metrics = _evaluate(model, val_data, device, history, step, steps_per_epoch, callbacks)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, checkpoint_state())
            write_json_atomic(out_dir / "history.json", history)
        for cb in callbacks:
            cb("end", history)
    result_model = _unwrap(model)
    result_model.eval()
    return TrainResult(result_model, history, checkpoint_path, metrics, preset)


def _average_buffers(model: nn.Module, world: int) -> None:
    """Average BatchNorm's running statistics over the processes, so that every rank ends with the
    same model (DDP keeps parameters in sync, but each process updates its own running stats)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= world


def _evaluate(model, val_data, device, history, step, steps_per_epoch, callbacks):
    from .evaluate import coco_map

    metrics = coco_map(_unwrap(model), val_data, device=device, progress=False)
    history["eval"].append({"step": step, "epoch": step / steps_per_epoch, **metrics.as_dict()})
    for cb in callbacks:
        cb("eval", history)
    return metrics
