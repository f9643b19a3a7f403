"""The training loop (notebook 08): ``train``, ``train_step``, ``TrainResult`` and the errors
``TrainingDiverged`` / ``TrainingInterrupted``.

``train`` reads as its steps: check the data and the output folder, build the model, optimizer and schedule
(a ``_TrainState``), ``_resume`` from a checkpoint if asked, ``_run_epoch`` until the last step
(``_record_step`` after each, a checkpoint every ``checkpoint_every`` steps), then ``_finish``: save, and
only then validate. A NaN guard never saves broken weights; Ctrl-C saves a checkpoint that resumes.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..device import (
    average_buffers,
    default_device,
    mixed_precision_dtype,
    setup_distributed,
)
from ..files import write_json_atomic
from ..model import RetinaNet
from . import budget as _budget_module
from .budget import _Budget, _plan_budget, _start_budget
from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    _non_finite_weights,
    _rng_state,
    _set_rng_state,
    _unwrap,
    _write,
    check_output_folder,
    data_fingerprint,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .data import _collate, _EpochSampler, _non_finite_images, _TrainView
from .presets import Preset, lr_factor, make_optimizer

# Settings a resumed run may change: they do not alter the weights a step computes.
RESUMABLE_CHANGES = ("epochs", "num_workers", "checkpoint_every", "eval_every")

if TYPE_CHECKING:
    from ..evaluate import EvalResult


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
    start = _budget_module._clock()
    classes = _check_datasets(train_data, val_data)
    resume_from = _resume_source(resume, resume_from, out_dir)
    if minutes is not None and (
        isinstance(minutes, bool) or not isinstance(minutes, Real) or not math.isfinite(minutes) or minutes <= 0
    ):
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
            raise ValueError(
                f"out_dir={str(out_dir)!r}: this model has no .config, so train() cannot write a "
                f"checkpoint of it; pass out_dir=None (or give the model a RetinaNetConfig)"
            )
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
            state.model, device_ids=[device.index] if device.type == "cuda" else None
        )

    first_step = state.step
    metrics = _train_loop(state, run, train_data, val_data, progress)
    metrics = _finish(state, run, val_data) or metrics
    if budget is not None and run.is_main:
        seconds = _budget_module._clock() - start
        steps = f"{state.step} steps" if first_step == 0 else f"steps {first_step + 1}-{state.step} (resumed)"
        print(
            f"trained {steps} in {seconds // 60:.0f} min {seconds % 60:02.0f} s "
            f"(budget {budget.minutes:g} min, validation included)",
            flush=True,
        )
    result_model = _unwrap(state.model)
    result_model.eval()
    return TrainResult(
        result_model, state.history, run.checkpoint_path, metrics, preset, budget.plan if budget is not None else None
    )


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
            raise ValueError(
                f"val_data has other classes than train_data: {list(val_classes)} vs {classes}; "
                f"AP would compare different things"
            )
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
    return _Run(
        preset,
        device,
        mixed_precision_dtype(device, preset.amp),
        rank,
        world,
        batch_size,
        steps_per_epoch,
        total_steps,
        last_step,
        out_dir,
        tuple(callbacks),
    )


def _new_state(model, preset, classes, train_data, run: _Run, fingerprint: bool) -> _TrainState:
    """Optimiser (lr scaled with the total batch), warmup + decay schedule, a gradient scaler, and what
    the checkpoint records (with the data's fingerprint when it will be written or compared)."""
    optimizer = make_optimizer(model, preset, preset.lr(run.world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, run.total_steps, run.warmup_steps, preset.schedule)
    )
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
        raise ValueError(
            f"{path}: the checkpoint was trained on {len(saved['classes'])} classes "
            f"{saved['classes']}, but the data has {len(classes)}: {classes}"
        )
    data, saved_data = state.record["data"], saved.get("data")
    if (
        data
        and saved_data
        and (data["num_images"] != saved_data["num_images"] or data.get("sha256", "") != saved_data.get("sha256", ""))
    ):
        raise ValueError(
            f"{path} was trained on other data ({saved_data['num_images']} images, fingerprint "
            f"{saved_data.get('sha256', '?')[:12]}) than this ({data['num_images']} images, fingerprint "
            f"{data.get('sha256', '?')[:12]}), with the same class names: choose another output "
            f"folder, or train on the data it was trained on"
        )
    now = state.record["preset"]
    changed = {k: (v, now.get(k)) for k, v in saved["preset"].items() if k not in RESUMABLE_CHANGES and now.get(k) != v}
    if changed:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"{path} was trained with other settings ({diff}): "
            f"choose another output folder, or delete this one to start again"
        )
    _unwrap(state.model).load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    _set_rng_state(saved["rng"])
    state.step, state.history = saved["step"], saved["history"]
    if not _non_finite_weights(_unwrap(state.model)):
        state.last_good = path


def _train_loop(
    state: _TrainState, run: _Run, train_data: Dataset, val_data: Dataset | None, progress: bool
) -> EvalResult | None:
    """Epochs until ``run.last_step`` (evaluating every ``eval_every`` epochs); stops cleanly on Ctrl-C."""
    from tqdm.auto import tqdm

    sampler = _EpochSampler(train_data, run.rank, run.world, run.preset.seed, run.preset.hflip)
    bar = tqdm(
        total=run.last_step,
        initial=state.step,
        desc=f"train ({run.preset.name})",
        disable=not (progress and run.is_main),
        unit="step",
    )
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
    return DataLoader(
        _TrainView(train_data),
        batch_size=run.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=run.preset.num_workers,
        collate_fn=_collate,
        pin_memory=run.device.type == "cuda",
        persistent_workers=False,
    )


def _run_epoch(state: _TrainState, run: _Run, loader: DataLoader, bar, stop: _StopOnInterrupt) -> None:
    """Steps until the end of the epoch, the last step of the run, or a Ctrl-C."""
    tick = time.perf_counter()
    for images, targets, indices in loader:
        images, targets = _to_device(images, targets, run.device, run.preset.channels_last)
        state.in_step = True
        out = train_step(
            state.model, images, targets, state.optimizer, state.scaler, run.amp_dtype, run.preset.grad_clip
        )
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
    where = (
        f"the loss became {loss} at step {state.step + 1} (epoch {epoch + 1}, "
        f"learning rate {state.scheduler.get_last_lr()[0]:.3g})."
    )
    kept = _last_good_sentence(state)
    bad = _non_finite_images(images, indices)
    if bad:
        detail = (
            f"The batch holds training image(s) with NaN or infinite pixels: dataset index "
            f"{', '.join(map(str, bad))}. {kept} Fix or drop those images (a corrupt file, "
            f"or a transform that divides by zero) and train again."
        )
    else:
        detail = f"{kept} {_WHAT_TO_TRY}"
    return TrainingDiverged(f"{where} {detail}")


_WHAT_TO_TRY = (
    "Try: a lower learning rate (base_lr is per 16 images and is scaled with the batch), gradient "
    "clipping (grad_clip), a longer warmup, and check the data for tiny or degenerate boxes."
)


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
            f"{_last_good_sentence(state)} {_WHAT_TO_TRY}"
        )
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
        raise TrainingInterrupted(
            f"{why} Saved {saved}: train again with resume=True (--resume) to continue exactly from there."
        )
    if run.out_dir is None:
        raise TrainingInterrupted(f"{why} Nothing was saved (no out_dir / --out).")
    raise TrainingInterrupted(f"{why} {_last_good_sentence(state)}")


def _eval_due(state: _TrainState, run: _Run, val_data: Dataset | None) -> bool:
    """At the end of every ``eval_every``-th epoch except the last (``_finish`` evaluates that one)."""
    every = run.preset.eval_every
    end_of_epoch = state.step % run.steps_per_epoch == 0
    return (
        run.is_main
        and val_data is not None
        and every > 0
        and end_of_epoch
        and (state.step // run.steps_per_epoch) % every == 0
        and state.step < run.total_steps
    )


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
    from ..evaluate import coco_map

    metrics = coco_map(_unwrap(state.model), val_data, device=run.device, progress=False)
    state.history["eval"].append({"step": state.step, "epoch": state.step / run.steps_per_epoch, **metrics.as_dict()})
    for cb in run.callbacks:
        cb("eval", state.history)
    return metrics
