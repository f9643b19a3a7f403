"""Training: presets, the loop, checkpoints, a time budget, several GPUs (notebook 08).

The loop is the one you would write by hand (``train_step`` below fits on a screen):

    images, targets -> model(images, targets) -> {"classification", "bbox_regression"}
    loss = sum -> backward -> clip gradients -> optimizer step -> learning-rate step

``train`` reads as its steps: check the data and the output folder, build the model, optimizer
and schedule (a ``_TrainState``), ``_resume`` from a checkpoint if asked, ``_run_epoch`` until the
last step (``_record_step`` after each, a checkpoint every ``checkpoint_every`` steps), then
``_finish``: save, and only then validate.

Around it: a preset (``Preset.cpu()`` / ``Preset.gpu()``), the paper's SGD (momentum 0.9,
weight decay 1e-4, lr 0.01 per 16 images, scaled with the batch) or AdamW, a linear warmup then
cosine or step decay, mixed precision on CUDA, a progress bar, a time budget (``minutes``: the
steps are fitted to the machine and the whole schedule runs over them), a NaN guard that never saves broken
weights, atomic checkpoints that resume to the same weights (also after Ctrl-C) and open without
running any code (``weights_only=True``), and DistributedDataParallel when started by ``torchrun``
(the device helpers live in :mod:`retina_edu.device`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import pickle
import random
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .device import (
    average_buffers,
    cpu_bf16_speedup,
    cpu_has_native_bf16,
    default_device,
    dist_is_on,
    is_main_process,
    mixed_precision_dtype,
    setup_distributed,
)
from .files import write_atomic, write_json_atomic
from .model import RetinaNet, RetinaNetConfig

if TYPE_CHECKING:
    from .evaluate import EvalResult

__all__ = [
    "CHECKPOINT_NAME",
    "OutputError",
    "Preset",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_output_folder",
    "choose_preset",
    "data_fingerprint",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "train",
    "train_step",
    # moved to retina_edu.device, re-exported here (notebooks and ablations import them from train)
    "average_buffers",
    "cpu_bf16_speedup",
    "cpu_has_native_bf16",
    "default_device",
    "dist_is_on",
    "is_main_process",
    "mixed_precision_dtype",
    "setup_distributed",
]

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "retina-edu-checkpoint-v1"
HISTORY_NAME = "history.json"
PAPER_LR_PER_16_IMAGES = 0.01  # SGD, section 4 "Optimization"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
# Settings a resumed run may change: they do not alter the weights a step computes.
RESUMABLE_CHANGES = ("epochs", "num_workers", "checkpoint_every", "eval_every")
# A time budget (train(minutes=...)): the steps after the first (which includes start-up) are timed
# up to this many, all within the warmup when it is that long (the warmup does not depend on the
# number of steps, so no step is taken at a learning rate the plan would change).
BUDGET_MEASURED_STEPS = 10
# Plan to end at 97% of the budget: step times drift (other programs, checkpoints, a live plot).
BUDGET_SAFETY = 0.97
# Validation is timed on this many images and extrapolated, plus 10% for COCOeval's own work.
BUDGET_EVAL_SAMPLE, BUDGET_EVAL_OVERHEAD = 8, 1.1
_clock: Callable[[], float] = time.perf_counter  # the budget's clock; tests put a fake one here


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
        for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 1), ("warmup_steps", 0),
                          ("num_workers", 0), ("eval_every", 0), ("checkpoint_every", 1), ("seed", 0)):
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
            raise ValueError(f"Preset.model_overrides: {unknown} are not RetinaNetConfig fields "
                             f"(choose from {sorted(model_fields)})")

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
        kwargs.update(num_classes=num_classes, anchor_sizes=tuple(self.anchor_sizes), resize=True,
                      min_size=self.image_size, max_size=self.image_size)
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


def _check_number(name: str, value: Any, low: float, high: float | None = None, low_open: bool = False,
                  high_open: bool = False, none: str = "") -> None:
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
        return Preset.gpu(), (f"a CUDA GPU is available ({gpu_name}): the paper's ResNet-50-FPN architecture, "
                              f"adapted to the shapes data")
    threads = torch.get_num_threads()
    return Preset.cpu(), f"no GPU found: the small CPU preset, sized for {threads} CPU threads"


# ---------------------------------------------------------------------------------------------
# Data: a sampler that decides the order and the flips, so a resumed run sees the same batches
# ---------------------------------------------------------------------------------------------
class _EpochSampler(Sampler):
    """Yields ``(index, flip)`` for one epoch: the order from a ``DistributedSampler`` (shuffled by
    seed and epoch, split across processes), the flips from a generator seeded the same way.
    ``start`` skips the samples a resumed run has already seen this epoch."""

    def __init__(self, dataset: Dataset, rank: int, world: int, seed: int, hflip: bool):
        self.base = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                       drop_last=False)
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
            flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            target = dict(target, boxes=flipped)
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
    return sorted(i for image, i in zip(images, indices, strict=True) if not bool(torch.isfinite(image).all()))


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a training set: ``{"num_images": N, "sha256": hex}``.

    The hash covers each image's file name, boxes and labels, in dataset order (read from the
    annotations, not the pixels, so it takes a moment even for COCO). A checkpoint records it, and
    resuming on other data with the same class names is refused. Datasets without
    ``image_path``/``get_target`` (e.g. your own) are identified by their size only.
    """
    base, indices = dataset, range(len(dataset))
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, dataset.indices
    fingerprint: dict[str, Any] = {"num_images": len(dataset)}
    if hasattr(base, "image_path") and hasattr(base, "get_target"):
        h = hashlib.sha256()
        for i in indices:
            target = base.get_target(i)
            h.update(Path(base.image_path(i)).name.encode() + b"\0")
            h.update(np.asarray(target["boxes"], dtype=np.float32).tobytes())
            h.update(np.asarray(target["labels"], dtype=np.int64).tobytes())
        fingerprint["sha256"] = h.hexdigest()
    return fingerprint


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


# ---------------------------------------------------------------------------------------------
# Checkpoints and the run folder
# ---------------------------------------------------------------------------------------------
class OutputError(OSError):
    """A file of the run could not be written; the message names the path and the reason."""


def _unwrap(model: nn.Module) -> RetinaNet:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def check_output_folder(folder: str | Path) -> Path:
    """Make ``folder`` if needed and check that files can be written in it, before any training.

    Raises:
        OutputError: ``folder`` is a file, lies below a file, is read-only, ... (the message says which).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder: choose a folder for the run (out_dir / --out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the run there ({err.strerror or err}): "
                          f"choose another folder (out_dir / --out)") from err
    return folder


def _write(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(path)``, with a failure (disk full, permissions) said in one line naming the path."""
    try:
        write(path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def find_checkpoint(out_dir: str | Path | None) -> Path | None:
    """``out_dir/last.pt`` if a run left one there, else None (what ``resume=True`` continues)."""
    if out_dir is None:
        return None
    path = Path(out_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path``, then rename it into
    place: a crash or Ctrl-C never leaves a half-written checkpoint, and the previous one stays.

    The state is serialised in memory first, so that a write that fails (a full disk) fails as an
    ``OSError`` with its reason instead of torch's "unexpected pos" message.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _legacy_numpy_globals() -> list[Any]:
    """What unpickling a numpy array needs: the RNG state of checkpoints written before the state was
    stored as tensors. Array construction only; it cannot call anything else."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``train``; clear errors for a missing, foreign or unsafe file.

    Opened with ``torch.load(weights_only=True)``: only tensors and plain data (numbers, strings,
    lists, dicts) are read. A file that holds other Python objects (which unpickling could run)
    is refused, and nothing in it runs.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (train with --out DIR writes DIR/{CHECKPOINT_NAME})")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).lower():
            raise ValueError(f"{path}: refused: the file holds Python objects other than tensors and plain data, "
                             f"which could run code when opened (nothing in it was run); only open "
                             f"checkpoints written by retina-edu") from None
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({first_line})") from err
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
    """Every random generator's state as tensors and plain lists (``weights_only`` can read them)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].cpu().numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple in checkpoints written before the states were tensors
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or infinite value."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message says where, which checkpoint is
    good, and what to try."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a Jupyter interrupt) stopped training between two steps; the message says what was
    saved and how to continue. A ``KeyboardInterrupt``, so code that catches that still does."""


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        model: the trained model (unwrapped from DDP), in eval mode.
        history: ``{"train": [one record per step], "eval": [one record per evaluation]}``.
        checkpoint: the ``last.pt`` written, or None without ``out_dir``.
        metrics: the last COCO evaluation on ``val_data``, or None.
        preset: the settings of the run.
        plan: with a time budget, what it planned: ``{"minutes", "steps", "batch_size", "warmup_steps",
            "planned_at" (the step the plan was made at), "step_s" (seconds per step, timed), "eval_s"
            (one validation, estimated)}``; else None.
    """

    model: RetinaNet
    history: dict[str, list[dict[str, float]]]
    checkpoint: Path | None
    metrics: EvalResult | None = None
    preset: Preset | None = None
    plan: dict[str, Any] | None = None


@dataclass
class _Run:
    """What stays fixed during a run: the settings, its size in steps, and where things go.

    ``total_steps`` and ``last_step`` change once, in a run with a time budget: when the measured
    first steps have set the plan (``_plan_budget``). The schedule reads ``total_steps`` then.
    """

    preset: Preset
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int
    world: int
    batch_size: int  # per process
    steps_per_epoch: int
    total_steps: int  # what the schedule spans
    last_step: int  # where this call stops (``max_steps``)
    out_dir: Path | None
    callbacks: tuple[Callable[[str, dict], None], ...]
    budget: _Budget | None = None
    warmup_steps: int | None = None  # the schedule's warmup: the preset's, or shortened by the plan

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None


@dataclass
class _Budget:
    """A time budget being planned: ``minutes`` from ``start`` (a ``_clock()`` reading when ``train``
    was called, ``done`` steps in); steps ``first`` + 1 to ``last`` are timed, and at step ``last`` the
    plan is made."""

    minutes: float
    start: float
    done: int  # steps taken before this call
    first: int
    last: int
    max_steps: int | None
    val_data: Dataset | None
    first_time: float | None = None
    plan: dict[str, Any] | None = None  # what the checkpoint records, once made


@dataclass
class _TrainState:
    """What a step changes and a checkpoint holds: weights, optimiser, schedule, step, history.

    ``record`` is what the checkpoint says about the run besides (format, config, preset, class
    names, data fingerprint); ``last_good`` is the newest checkpoint known to hold finite weights;
    ``in_step`` is True while an optimiser step is half done (a checkpoint then would not resume).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    record: dict[str, Any]
    step: int = 0
    history: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"train": [], "eval": []})
    last_good: Path | None = None
    in_step: bool = False

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume exactly (the random generators included), as plain data."""
        return {
            **self.record,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": _rng_state(),
            "history": self.history,
        }


def _to_device(images, targets, device, channels_last):
    if isinstance(images, Tensor):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
    else:
        images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def train_step(
    model: nn.Module,
    images: Tensor | list[Tensor],
    targets: list[dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    grad_clip: float | None,
) -> dict[str, Tensor]:
    """One optimisation step: forward (under autocast when ``amp_dtype`` is set), backward, clip, step.

    Args:
        model: a model in train mode that returns ``{"classification", "bbox_regression"}`` losses
            when called as ``model(images, targets)`` (torchvision's convention).
        images: ``Tensor[B, 3, H, W]`` in [0, 1], or a list of ``Tensor[3, H, W]``, on the model's device.
        targets: one ``{"boxes": Tensor[N, 4] xyxy pixels, "labels": Tensor[N] int64}`` per image.
        optimizer: steps the model's parameters.
        scaler: a ``GradScaler`` (enabled only for float16; a no-op otherwise).
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for mixed precision, None for float32.
        grad_clip: the maximum gradient norm, or None / 0 for no clipping.

    Returns:
        ``{"loss", "classification", "bbox_regression"}``: detached scalar tensors. Checks nothing
        (``train`` does).
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


class _StopOnInterrupt:
    """While active, Ctrl-C only asks the loop to stop after the step it is in (a checkpoint taken
    mid-step would not resume exactly); a second Ctrl-C interrupts at once. Only the main thread
    can catch signals: elsewhere Ctrl-C keeps its usual effect."""

    def __enter__(self) -> _StopOnInterrupt:
        self.requested, self._previous = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, world: int, device: torch.device) -> bool:
        """Whether any process was asked to stop (all processes must stop at the same step)."""
        if world > 1:
            flag = torch.tensor([float(self.requested)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.requested = bool(flag.item())
        return self.requested


def train(
    preset: Preset,
    train_data: Dataset,
    val_data: Dataset | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[str, dict], None]] = (),
    max_steps: int | None = None,
    model: RetinaNet | None = None,
    resume_from: str | Path | None = None,
    minutes: float | None = None,
) -> TrainResult:
    """Train a RetinaNet on ``train_data`` with ``preset``.

    Args:
        preset: ``Preset.cpu()``, ``Preset.gpu()`` or your own.
        train_data: a dataset of ``(image, target)`` (``CocoDetection``, ``VOCDetection``); it
            must expose ``classes``. Images at their own size: the model resizes them.
        val_data: evaluated with COCO mAP every ``preset.eval_every`` epochs and at the end (after
            the final checkpoint is saved); it must have the same classes.
        out_dir: where ``last.pt`` (the checkpoint) and ``history.json`` go; None: nowhere. Checked
            to be a writable folder before the first step.
        resume: True to continue from ``find_checkpoint(out_dir)`` (``out_dir/last.pt``) if it exists.
        device: default CUDA when available (under torchrun, the local rank's GPU), else CPU.
        progress: show a tqdm progress bar with the loss and images/s.
        callbacks: called as ``cb(event, history)`` with event ``"step"``, ``"eval"`` or ``"end"``
            (``retina_edu.viz.LiveLossPlot`` draws a live curve).
        max_steps: stop after this many steps in total (the schedule still spans all epochs):
            for tests and for splitting a run in pieces.
        model: train this model (e.g. a subclass with another loss) instead of building one from
            ``preset.model_config``; its ``config`` is what the checkpoint records. Any model with
            torchvision's calling convention works (benchmarks train torchvision's RetinaNet with
            this loop); one without a ``config`` cannot be checkpointed (``out_dir`` must be None).
        resume_from: continue from this checkpoint file (or run folder) instead.
        minutes: a time budget instead of ``preset.epochs``: the first steps are timed (and one
            validation batch), then the number of steps is set so that training, validation
            included, ends within ``minutes``, and the whole schedule (warmup, then the decay to its
            end) runs over those steps. The plan is printed, and the checkpoint records it: a resumed
            run finishes the same plan, with or without ``minutes`` (its value is then ignored).

    Raises:
        TrainingDiverged: the loss or the weights became NaN or infinite. The last good checkpoint
            is kept, and the message names it.
        TrainingInterrupted: Ctrl-C; the run was saved after the step it was in (with ``out_dir``).
        OutputError: ``out_dir`` is not a writable folder, or a write failed (disk full).
        ValueError: the data, the model or the checkpoint do not fit together (the message says how).
    """
    start = _clock()
    classes = _check_datasets(train_data, val_data)
    resume_from = _resume_source(resume, resume_from, out_dir)
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, Real)
                                or not math.isfinite(minutes) or minutes <= 0):
        raise ValueError(f"minutes must be a number > 0 or None, got {minutes!r}")
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        # Tiny gradients of the sigma = 0.01 heads underflow into denormal floats, which x86 CPUs
        # process up to 100x slower; flushing them to zero changes nothing measurable but speed.
        torch.set_flush_denormal(True)
    rank, world = setup_distributed(device)
    if max_steps is not None and (not isinstance(max_steps, Integral) or max_steps < 1):
        raise ValueError(f"max_steps must be a whole number >= 1 or None, got {max_steps!r}")

    torch.manual_seed(preset.seed)
    np.random.seed(preset.seed)
    random.seed(preset.seed)
    model = _build_model(preset, classes, model, device)
    if out_dir is not None:
        if getattr(model, "config", None) is None:
            raise ValueError(f"out_dir={str(out_dir)!r}: this model has no .config, so train() cannot write a "
                             f"checkpoint of it; pass out_dir=None (or give the model a RetinaNetConfig)")
        out_dir = check_output_folder(out_dir) if rank == 0 else Path(out_dir)
    saved = load_checkpoint(resume_from, map_location=device) if resume_from is not None else None
    run = _plan_run(preset, len(train_data), device, rank, world, out_dir, max_steps, callbacks)
    run.warmup_steps = preset.warmup_steps
    run.budget = budget = _start_budget(run, saved, minutes, start, max_steps, val_data)
    state = _new_state(model, preset, classes, train_data, run, fingerprint=bool(out_dir or resume_from))
    if budget is not None:
        state.record["plan"] = budget.plan
    if saved is not None:
        _resume(state, resume_from, run, saved)
    if world > 1:
        state.model = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None)

    first_step = state.step
    metrics = _train_loop(state, run, train_data, val_data, progress)
    metrics = _finish(state, run, val_data) or metrics
    if budget is not None and run.is_main:
        seconds = _clock() - start
        steps = f"{state.step} steps" if first_step == 0 else f"steps {first_step + 1}-{state.step} (resumed)"
        print(f"trained {steps} in {seconds // 60:.0f} min {seconds % 60:02.0f} s "
              f"(budget {budget.minutes:g} min, validation included)", flush=True)
    result_model = _unwrap(state.model)
    result_model.eval()
    return TrainResult(result_model, state.history, run.checkpoint_path, metrics, preset,
                       budget.plan if budget is not None else None)


def _check_datasets(train_data: Dataset, val_data: Dataset | None) -> list[str]:
    """The class names, after checking that the data can be trained on (and validated with)."""
    classes = list(getattr(train_data, "classes", []))
    if not classes:
        raise ValueError("train_data must expose its class names as .classes (CocoDetection and VOCDetection do)")
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    if val_data is not None:
        if len(val_data) == 0:
            raise ValueError("val_data is empty: pass None to train without validation")
        val_classes = getattr(val_data, "classes", None)
        if val_classes is not None and list(val_classes) != classes:
            raise ValueError(f"val_data has other classes than train_data: {list(val_classes)} vs {classes}; "
                             f"AP would compare different things")
    return classes


def _resume_source(resume: bool | str | Path, resume_from: str | Path | None, out_dir: str | Path | None):
    """The checkpoint to continue from, or None: ``resume_from``, or with ``resume=True`` the one in
    ``out_dir`` if there is one."""
    if isinstance(resume, (str, Path)):  # the old meaning of resume="path"
        warnings.warn("train(resume=<path>) is deprecated: pass resume_from=<path>", DeprecationWarning, stacklevel=3)
        resume, resume_from = False, resume
    if resume_from is not None:
        return Path(resume_from)
    return find_checkpoint(out_dir) if resume else None


def _build_model(preset: Preset, classes: list[str], model: nn.Module | None, device: torch.device) -> nn.Module:
    """The model of ``preset`` (or the one given, checked against the classes), on ``device``."""
    if model is None:
        model = RetinaNet(config=preset.model_config(len(classes)))
    elif getattr(model, "num_classes", len(classes)) != len(classes):
        raise ValueError(f"the model has {model.num_classes} classes but the data has {len(classes)}: {classes}")
    model = model.to(device)
    if preset.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _plan_run(preset, num_images, device, rank, world, out_dir, max_steps, callbacks) -> _Run:
    """Batch size, steps per epoch and the last step, for ``num_images`` split over ``world`` processes."""
    per_process = math.ceil(num_images / world)
    batch_size = min(preset.batch_size, per_process)
    steps_per_epoch = per_process // batch_size
    total_steps = preset.epochs * steps_per_epoch
    last_step = total_steps if max_steps is None else min(total_steps, max_steps)
    return _Run(preset, device, mixed_precision_dtype(device, preset.amp), rank, world, batch_size,
                steps_per_epoch, total_steps, last_step, out_dir, tuple(callbacks))


def _start_budget(run: _Run, saved: dict[str, Any] | None, minutes: float | None, start: float,
                  max_steps: int | None, val_data: Dataset | None) -> _Budget | None:
    """The run's time budget, or None for a run of ``preset.epochs``.

    A checkpoint that recorded a plan is finished as planned (``run`` is set to its steps, whatever
    ``minutes`` says now); one interrupted before its plan was made plans again, with its minutes
    when none are given. Otherwise ``minutes`` starts a plan: the run stops at step ``last`` (the
    end of the timing), where ``_plan_budget`` sets its real length.
    """
    if saved is not None and "plan" not in saved:  # a run of epochs (or from before budgets existed)
        if minutes is not None and run.is_main:
            print(f"the checkpoint is of a run without a time budget: finishing it as it was ({run.total_steps} "
                  f"steps), minutes={minutes:g} ignored; start in another folder to train for minutes", flush=True)
        return None
    plan = saved.get("plan") if saved is not None else None
    if plan is not None and plan.get("steps") is not None:
        run.total_steps, run.warmup_steps = plan["steps"], plan.get("warmup_steps", run.warmup_steps)
        run.last_step = plan["steps"] if max_steps is None else min(plan["steps"], max_steps)
        if run.is_main:
            print(f"resuming the plan its checkpoint recorded: {plan['steps']} steps of batch "
                  f"{plan['batch_size']} in {plan['minutes']:g} minutes", flush=True)
        return _Budget(plan["minutes"], start, saved["step"], 0, 0, max_steps, None, plan=plan)
    if minutes is None and plan is not None:
        minutes = plan["minutes"]
    if minutes is None:
        return None
    done = saved["step"] if saved is not None else 0
    # Timed: the steps after the first of this call (start-up), within the warmup where it can be.
    last = done + max(2, min(BUDGET_MEASURED_STEPS + 1, run.preset.warmup_steps - done))
    last = last if max_steps is None else max(done + 1, min(last, max_steps))
    first = done + 1 if last - done >= 2 else done
    run.last_step = last
    plan = {"minutes": float(minutes), "steps": None, "batch_size": run.batch_size * run.world}
    return _Budget(float(minutes), start, done, first, last, max_steps, val_data, plan=plan)


def _steps_in_budget(budget_s: float, elapsed_s: float, done: int, step_s: float, eval_s: float,
                     steps_per_epoch: int, eval_every: int) -> int:
    """How many steps in total fit in ``budget_s`` seconds (times ``BUDGET_SAFETY``).

    ``elapsed_s`` have gone by (start-up and the ``done`` steps); each further step takes ``step_s``;
    each validation ``eval_s``: the final one, and one every ``eval_every`` epochs before it. At
    least ``done`` (the steps taken are not undone).
    """
    left = budget_s * BUDGET_SAFETY - elapsed_s - eval_s
    step_s = max(step_s, 1e-9)
    steps = done + max(0, math.floor(left / step_s))
    if eval_every > 0:  # the evaluations during training, counted at the length found without them
        periodic = max(0, (steps - 1) // steps_per_epoch // eval_every)
        steps = done + max(0, math.floor((left - periodic * eval_s) / step_s))
    return max(steps, done)


def _time_validation(model: nn.Module, val_data: Dataset, device: torch.device) -> float:
    """Seconds one validation over ``val_data`` should take: ``BUDGET_EVAL_SAMPLE`` images timed, after
    the same batch once untimed (the first call sets up the kernels for evaluation), the random
    generators untouched (a planned run then trains as it would without the timing)."""
    from .evaluate import predict

    n = min(BUDGET_EVAL_SAMPLE, len(val_data))
    with torch.random.fork_rng(devices=[]):
        predict(model, Subset(val_data, range(n)), batch_size=n, device=device, progress=False)  # warm-up
        tick = _clock()
        predict(model, Subset(val_data, range(n)), batch_size=n, device=device, progress=False)
        seconds = _clock() - tick
    return seconds * len(val_data) / n * BUDGET_EVAL_OVERHEAD


def _plan_budget(state: _TrainState, run: _Run, bar) -> None:
    """At step ``budget.last`` (or earlier if the budget is spent): from the timed steps and one timed
    validation batch, set the run's length so that it ends within the budget, record the plan, print it."""
    budget = run.budget
    now = _clock()
    if state.step == budget.first:
        budget.first_time = now
    spent = now - budget.start >= budget.minutes * 60 * BUDGET_SAFETY
    if state.step < budget.last and (run.world > 1 or not spent):
        return  # still timing (alone, a budget already spent is planned at once: it ends here)
    if budget.first_time is not None and state.step > budget.first:
        step_s, timed = (now - budget.first_time) / (state.step - budget.first), f"{budget.first + 1}-{state.step}"
    else:  # no step after the first: start-up included
        step_s, timed = (now - budget.start) / (state.step - budget.done), f"{budget.done + 1}-{state.step}"
    eval_s = 0.0
    if budget.val_data is not None and run.is_main:
        eval_s = _time_validation(_unwrap(state.model), budget.val_data, run.device)
        state.model.train()
    elapsed = _clock() - budget.start
    if run.world > 1:  # every process must plan the same steps: the slowest sets them
        measured = torch.tensor([step_s, eval_s, elapsed], device=run.device, dtype=torch.float64)
        dist.all_reduce(measured, op=dist.ReduceOp.MAX)
        step_s, eval_s, elapsed = measured.tolist()
    steps = _steps_in_budget(budget.minutes * 60, elapsed, state.step, step_s, eval_s, run.steps_per_epoch,
                             run.preset.eval_every)
    run.total_steps = steps
    run.last_step = steps if budget.max_steps is None else min(steps, budget.max_steps)
    # A run too short for the preset's warmup would end before its decay begins: the warmup then
    # takes half the run (and ends no earlier than now, the steps taken keep their rates).
    run.warmup_steps = min(run.preset.warmup_steps, max(state.step, steps // 2))
    budget.plan.update(steps=steps, warmup_steps=run.warmup_steps, planned_at=state.step,
                       step_s=round(step_s, 4), eval_s=round(eval_s, 2))
    state.record["plan"] = budget.plan
    bar.total = run.last_step
    bar.refresh()
    if run.is_main:
        note = "" if steps > state.step else " (the budget is too short: it ends here)"
        message = (f"plan: about {steps} steps of batch {budget.plan['batch_size']} in {budget.minutes:g} minutes "
                   f"on this machine ({step_s:.2f} s per step, timed over steps {timed}; "
                   f"validation about {eval_s:.0f} s){note}")
        if bar.disable:
            print(message, flush=True)
        else:
            bar.write(message)  # above the progress bar


def _new_state(model, preset, classes, train_data, run: _Run, fingerprint: bool) -> _TrainState:
    """Optimiser (lr scaled with the total batch), warmup + decay schedule, a gradient scaler, and what
    the checkpoint records (with the data's fingerprint when it will be written or compared)."""
    optimizer = make_optimizer(model, preset, preset.lr(run.world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, run.total_steps, run.warmup_steps, preset.schedule))
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)
    config = getattr(model, "config", None)
    record = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict() if config is not None else None,
        "preset": preset.to_dict(),
        "classes": classes,
        "data": data_fingerprint(train_data) if fingerprint else None,
    }
    return _TrainState(model, optimizer, scheduler, scaler, record)


def _resume(state: _TrainState, path: Path, run: _Run, saved: dict[str, Any]) -> None:
    """Load ``saved`` (the checkpoint read from ``path``) into ``state``, after checking that it continues
    this run (same classes, same data, same settings except those in ``RESUMABLE_CHANGES``)."""
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    classes = state.record["classes"]
    if list(saved["classes"]) != classes:
        raise ValueError(f"{path}: the checkpoint was trained on {len(saved['classes'])} classes "
                         f"{saved['classes']}, but the data has {len(classes)}: {classes}")
    data, saved_data = state.record["data"], saved.get("data")
    if data and saved_data and (data["num_images"] != saved_data["num_images"]
                                or data.get("sha256", "") != saved_data.get("sha256", "")):
        raise ValueError(f"{path} was trained on other data ({saved_data['num_images']} images, fingerprint "
                         f"{saved_data.get('sha256', '?')[:12]}) than this ({data['num_images']} images, fingerprint "
                         f"{data.get('sha256', '?')[:12]}), with the same class names: choose another output "
                         f"folder, or train on the data it was trained on")
    now = state.record["preset"]
    changed = {k: (v, now.get(k)) for k, v in saved["preset"].items()
               if k not in RESUMABLE_CHANGES and now.get(k) != v}
    if changed:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"{path} was trained with other settings ({diff}): "
                         f"choose another output folder, or delete this one to start again")
    _unwrap(state.model).load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    _set_rng_state(saved["rng"])
    state.step, state.history = saved["step"], saved["history"]
    if not _non_finite_weights(_unwrap(state.model)):
        state.last_good = path


def _train_loop(state: _TrainState, run: _Run, train_data: Dataset, val_data: Dataset | None,
                progress: bool) -> EvalResult | None:
    """Epochs until ``run.last_step`` (evaluating every ``eval_every`` epochs); stops cleanly on Ctrl-C."""
    from tqdm.auto import tqdm

    sampler = _EpochSampler(train_data, run.rank, run.world, run.preset.seed, run.preset.hflip)
    bar = tqdm(total=run.last_step, initial=state.step, desc=f"train ({run.preset.name})",
               disable=not (progress and run.is_main), unit="step")
    metrics = None
    state.model.train()
    with contextlib.closing(bar), _StopOnInterrupt() as stop:
        try:
            while state.step < run.last_step and not stop.agreed(run.world, run.device):
                _run_epoch(state, run, _epoch_loader(train_data, sampler, state.step, run), bar, stop)
                if not stop.requested and _eval_due(state, run, val_data):
                    metrics = _evaluate(state, run, val_data)
                    state.model.train()
        except KeyboardInterrupt:  # a second Ctrl-C, or one this thread could not catch
            _interrupted(state, run)
        except Exception as err:
            if not stop.requested or isinstance(err, TrainingDiverged):
                raise
            # Ctrl-C also reached the data-loading workers, which then died: that is the interrupt
        if stop.agreed(run.world, run.device):
            _interrupted(state, run)
    return metrics


def _epoch_loader(train_data: Dataset, sampler: _EpochSampler, step: int, run: _Run) -> DataLoader:
    """The batches of the epoch ``step`` falls in, from the first not yet seen."""
    epoch, in_epoch = divmod(step, run.steps_per_epoch)
    sampler.set_epoch(epoch, start=in_epoch * run.batch_size)
    return DataLoader(_TrainView(train_data), batch_size=run.batch_size, sampler=sampler, drop_last=True,
                      num_workers=run.preset.num_workers, collate_fn=_collate,
                      pin_memory=run.device.type == "cuda", persistent_workers=False)


def _run_epoch(state: _TrainState, run: _Run, loader: DataLoader, bar, stop: _StopOnInterrupt) -> None:
    """Steps until the end of the epoch, the last step of the run, or a Ctrl-C."""
    tick = time.perf_counter()
    for images, targets, indices in loader:
        images, targets = _to_device(images, targets, run.device, run.preset.channels_last)
        state.in_step = True
        out = train_step(state.model, images, targets, state.optimizer, state.scaler, run.amp_dtype,
                         run.preset.grad_clip)
        loss = out["loss"].item()
        if not math.isfinite(loss):
            raise _divergence_error(state, run, loss, images, indices)
        state.scheduler.step()
        state.step += 1
        state.in_step = False
        tick = _record_step(state, run, out, tick, bar)
        if run.budget is not None and run.budget.plan["steps"] is None:
            _plan_budget(state, run, bar)
        if state.step % run.preset.checkpoint_every == 0:
            _save_run(state, run, history=False)
        if state.step >= run.last_step or state.step % run.steps_per_epoch == 0 or stop.agreed(run.world, run.device):
            break


def _record_step(state: _TrainState, run: _Run, out: dict[str, Tensor], tick: float, bar) -> float:
    """Append the step's losses, learning rate and speed to the history; tell the callbacks."""
    now = time.perf_counter()
    record = {
        "step": state.step,
        "epoch": state.step / run.steps_per_epoch,
        "loss": out["loss"].item(),
        "classification": out["classification"].item(),
        "bbox_regression": out["bbox_regression"].item(),
        "lr": state.scheduler.get_last_lr()[0],
        "images_per_s": run.batch_size * run.world / max(now - tick, 1e-9),
    }
    state.history["train"].append(record)
    bar.update(1)
    bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.1f}", refresh=False)
    for cb in run.callbacks:
        cb("step", state.history)
    return now


def _last_good_sentence(state: _TrainState) -> str:
    if state.last_good is not None and state.last_good.is_file():
        return f"The last good checkpoint is {state.last_good}."
    return "No checkpoint was written yet."


def _divergence_error(state: _TrainState, run: _Run, loss: float, images, indices: list[int]) -> TrainingDiverged:
    """Where the loss became NaN/inf, which checkpoint is good, and what to try (bad images first)."""
    epoch = state.step // run.steps_per_epoch
    where = (f"the loss became {loss} at step {state.step + 1} (epoch {epoch + 1}, "
             f"learning rate {state.scheduler.get_last_lr()[0]:.3g}).")
    kept = _last_good_sentence(state)
    bad = _non_finite_images(images, indices)
    if bad:
        detail = (f"The batch holds training image(s) with NaN or infinite pixels: dataset index "
                  f"{', '.join(map(str, bad))}. {kept} Fix or drop those images (a corrupt file, "
                  f"or a transform that divides by zero) and train again.")
    else:
        detail = (f"{kept} {_WHAT_TO_TRY}")
    return TrainingDiverged(f"{where} {detail}")


_WHAT_TO_TRY = ("Try: a lower learning rate (base_lr is per 16 images and is scaled with the batch), gradient "
                "clipping (grad_clip), a longer warmup, and check the data for tiny or degenerate boxes.")


def _save_run(state: _TrainState, run: _Run, history: bool = True) -> Path | None:
    """Write ``last.pt`` (and ``history.json``) on the main process, if the weights are finite.

    Every process checks the weights (they are the same on all), so all stop together when they
    are not: a checkpoint with NaN weights would be worse than none.
    """
    if run.out_dir is None:
        return None
    bad = _non_finite_weights(_unwrap(state.model))
    if bad:
        raise TrainingDiverged(
            f"the weights became NaN or infinite by step {state.step} ({len(bad)} tensors, e.g. {bad[0]}), "
            f"although the loss was finite: the update itself diverged. They were not saved. "
            f"{_last_good_sentence(state)} {_WHAT_TO_TRY}")
    if not run.is_main:
        return None
    path = _write(run.checkpoint_path, lambda p: save_checkpoint(p, state.checkpoint()))
    state.last_good = path
    if history:
        _write(run.out_dir / HISTORY_NAME, lambda p: write_json_atomic(p, state.history))
    return path


def _interrupted(state: _TrainState, run: _Run) -> None:
    """Save what a resume needs (only between steps) and raise ``TrainingInterrupted`` saying so."""
    done = f"step {state.step} of {run.last_step}"
    if state.in_step:
        saved = None
        why = f"interrupted during step {state.step + 1}, which cannot be saved half done."
    else:
        saved = _save_run(state, run)
        why = f"interrupted after {done}."
    if saved is not None:
        raise TrainingInterrupted(f"{why} Saved {saved}: train again with resume=True (--resume) "
                                  f"to continue exactly from there.")
    if run.out_dir is None:
        raise TrainingInterrupted(f"{why} Nothing was saved (no out_dir / --out).")
    raise TrainingInterrupted(f"{why} {_last_good_sentence(state)}")


def _eval_due(state: _TrainState, run: _Run, val_data: Dataset | None) -> bool:
    """At the end of every ``eval_every``-th epoch except the last (``_finish`` evaluates that one)."""
    every = run.preset.eval_every
    end_of_epoch = state.step % run.steps_per_epoch == 0
    return (run.is_main and val_data is not None and every > 0 and end_of_epoch
            and (state.step // run.steps_per_epoch) % every == 0 and state.step < run.total_steps)


def _finish(state: _TrainState, run: _Run, val_data: Dataset | None) -> EvalResult | None:
    """Average BatchNorm statistics over processes, save, and only then evaluate: a failing
    validation (a bad val image) must not lose the run."""
    if run.world > 1:
        average_buffers(_unwrap(state.model), run.world)
    _save_run(state, run)
    metrics = None
    if run.is_main:
        if val_data is not None and state.step == run.total_steps:
            metrics = _evaluate(state, run, val_data)
            if run.out_dir is not None:
                _write(run.out_dir / HISTORY_NAME, lambda p: write_json_atomic(p, state.history))
        for cb in run.callbacks:
            cb("end", state.history)
    return metrics


def _evaluate(state: _TrainState, run: _Run, val_data: Dataset) -> EvalResult:
    """COCO mAP on ``val_data``, appended to the history."""
    from .evaluate import coco_map

    metrics = coco_map(_unwrap(state.model), val_data, device=run.device, progress=False)
    state.history["eval"].append({"step": state.step, "epoch": state.step / run.steps_per_epoch, **metrics.as_dict()})
    for cb in run.callbacks:
        cb("eval", state.history)
    return metrics
