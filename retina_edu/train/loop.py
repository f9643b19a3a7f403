"""The training loop (notebook 08): ``train`` and ``train_step``.

``train`` reads as its steps: check the data and the limits, ``_set_up`` (the device, the model, the output
folder, a ``_Run`` and a ``_TrainState``, resumed from a checkpoint if asked), ``_train_loop``: ``_run_epoch``
until the last step (``_record_step`` after each, a checkpoint every ``checkpoint_every`` steps), then
``_finish``: save, and only then validate. A NaN guard never saves broken weights; Ctrl-C saves a checkpoint
that resumes.

The package around it: the state and what keeps it safe in :mod:`.state`, validation and the end of a run in
:mod:`.validation`, the progress bar and history records in :mod:`.progress`, the time budget in :mod:`.budget`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..device import default_device, setup_distributed
from ..model import RetinaNet
from . import budget as _budget_module
from .budget import _plan_budget, _replan_budget, _start_budget
from .checkpoints import _unwrap, check_output_folder, find_checkpoint, load_checkpoint
from .data import _collate, _EpochSampler, _TrainView
from .presets import Preset
from .progress import _progress_bar, _record_step, _report_time
from .state import (
    TrainingDiverged,
    TrainResult,
    _divergence_error,
    _interrupted,
    _new_state,
    _plan_run,
    _resume,
    _Run,
    _save_run,
    _StopOnInterrupt,
    _TrainState,
)
from .validation import _eval_due, _evaluate, _finish

if TYPE_CHECKING:
    from ..evaluate import EvalResult


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


# Most of train's length is its docstring (every argument of a run); the body is a dozen lines, one a step.
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
        progress: a tqdm progress bar with the loss and images/s.
        callbacks: called as ``cb(event, history)`` with event ``"step"``, ``"eval"`` or ``"end"``
            (``retina_edu.viz.LiveLossPlot`` draws a live curve).
        max_steps: stop after this many steps in total (the schedule still spans all epochs):
            for tests and for splitting a run in pieces.
        model: train this model (e.g. a subclass with another loss) instead of building one from
            ``preset.model_config``; its ``config`` is what the checkpoint records. Any model with
            torchvision's calling convention works (benchmarks train torchvision's RetinaNet with
            this loop); one without a ``config`` cannot be checkpointed (``out_dir`` must be None).
        resume_from: continue from this checkpoint file (or run folder) instead.
        minutes: a time budget instead of ``preset.epochs``: the number of steps is set from the
            first steps (timed, with one validation batch) so that training, validation included,
            ends within ``minutes``, set again at the end of the warmup, and the whole schedule runs
            over those steps (:mod:`.budget`). The checkpoint records the plan: a resumed run
            finishes it, with or without ``minutes`` (its value is then ignored).

    Raises:
        TrainingDiverged: the loss or the weights became NaN or infinite. The last good checkpoint
            is kept, and the message names it.
        TrainingInterrupted: Ctrl-C; the run was saved after the step it was in (with ``out_dir``).
        OutputError: ``out_dir`` is not a writable folder, or a write failed (disk full).
        ValueError: the data, the model or the checkpoint do not fit together (the message says how).
    """
    start = _budget_module._clock()  # a time budget counts from here
    classes = _check_datasets(train_data, val_data)
    resume_from = _resume_source(resume, resume_from, out_dir)
    _check_limits(minutes, max_steps)
    state, run = _set_up(
        preset, classes, train_data, val_data, out_dir, resume_from, device, callbacks, max_steps, model, minutes, start
    )
    first_step = state.step
    metrics = _train_loop(state, run, train_data, val_data, progress)
    metrics = _finish(state, run, val_data) or metrics
    _report_time(state, run, first_step, start)
    return _result(state, run, metrics)


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


def _check_limits(minutes: float | None, max_steps: int | None) -> None:
    """``minutes`` a number > 0 and ``max_steps`` a whole number >= 1, or None."""
    if minutes is not None and (
        isinstance(minutes, bool) or not isinstance(minutes, Real) or not math.isfinite(minutes) or minutes <= 0
    ):
        raise ValueError(f"minutes must be a number > 0 or None, got {minutes!r}")
    if max_steps is not None and (not isinstance(max_steps, Integral) or max_steps < 1):
        raise ValueError(f"max_steps must be a whole number >= 1 or None, got {max_steps!r}")


def _set_up(
    preset: Preset,
    classes: list[str],
    train_data: Dataset,
    val_data: Dataset | None,
    out_dir: str | Path | None,
    resume_from: Path | None,
    device: torch.device | str | None,
    callbacks: Sequence[Callable[[str, dict], None]],
    max_steps: int | None,
    model: RetinaNet | None,
    minutes: float | None,
    start: float,
) -> tuple[_TrainState, _Run]:
    """The device (and the other processes under torchrun), the seeds, the model, the checked output folder,
    the run's size (and time budget), the optimiser and schedule, loaded from ``resume_from`` if given."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        # Tiny gradients of the sigma = 0.01 heads underflow into denormal floats, which x86 CPUs
        # process up to 100x slower; flushing them to zero changes nothing measurable but speed.
        torch.set_flush_denormal(True)
    rank, world = setup_distributed(device)
    torch.manual_seed(preset.seed)
    np.random.seed(preset.seed)
    random.seed(preset.seed)
    model = _build_model(preset, classes, model, device)
    out_dir = _check_out_dir(out_dir, model, rank)
    saved = load_checkpoint(resume_from, map_location=device) if resume_from is not None else None
    run = _plan_run(preset, len(train_data), device, rank, world, out_dir, max_steps, callbacks)
    run.budget = _start_budget(run, saved, minutes, start, max_steps, val_data)
    state = _new_state(model, preset, classes, train_data, run, fingerprint=bool(out_dir or resume_from))
    if run.budget is not None:
        state.record["plan"] = run.budget.plan
    if saved is not None:
        _resume(state, resume_from, run, saved)
    if world > 1:
        state.model = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return state, run


def _check_out_dir(out_dir: str | Path | None, model: nn.Module, rank: int) -> Path | None:
    """``out_dir`` as a checked, writable folder (on the main process), or None; a model without a
    ``config`` cannot be checkpointed."""
    if out_dir is None:
        return None
    if getattr(model, "config", None) is None:
        raise ValueError(
            f"out_dir={str(out_dir)!r}: this model has no .config, so train() cannot write a "
            f"checkpoint of it; pass out_dir=None (or give the model a RetinaNetConfig)"
        )
    return check_output_folder(out_dir) if rank == 0 else Path(out_dir)


def _result(state: _TrainState, run: _Run, metrics: EvalResult | None) -> TrainResult:
    """The trained model (unwrapped from DDP, in eval mode), its history, checkpoint, metrics and plan."""
    model = _unwrap(state.model)
    model.eval()
    plan = run.budget.plan if run.budget is not None else None
    return TrainResult(model, state.history, run.checkpoint_path, metrics, run.preset, plan)


def _train_loop(
    state: _TrainState, run: _Run, train_data: Dataset, val_data: Dataset | None, progress: bool
) -> EvalResult | None:
    """Epochs until ``run.last_step`` (evaluating every ``eval_every`` epochs); stops cleanly on Ctrl-C."""
    sampler = _EpochSampler(train_data, run.rank, run.world, run.preset.seed, run.preset.hflip)
    bar = _progress_bar(state, run, progress)
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
        elif run.budget is not None and run.budget.replan_at == state.step:
            _replan_budget(state, run, bar)
        if state.step % run.preset.checkpoint_every == 0:
            _save_run(state, run, history=False)
        if state.step >= run.last_step or state.step % run.steps_per_epoch == 0 or stop.agreed(run.world, run.device):
            break
