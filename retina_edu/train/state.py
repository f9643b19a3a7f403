"""The state of a training run and what keeps it safe (notebook 08).

- ``_Run``: what stays fixed during a run (settings, size in steps, where things go), planned by ``_plan_run``.
- ``_TrainState``: what a step changes and a checkpoint holds, made by ``_new_state``, loaded by ``_resume``.
- ``_save_run``: a checkpoint, never of NaN weights; ``_divergence_error`` says where a run diverged;
  ``_StopOnInterrupt`` and ``_interrupted``: Ctrl-C stops between two steps and saves a checkpoint that resumes.
- What ``train`` returns and raises: ``TrainResult``, ``TrainingDiverged``, ``TrainingInterrupted``.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from ..device import mixed_precision_dtype
from ..files import write_json_atomic
from ..model import RetinaNet
from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    _non_finite_weights,
    _rng_state,
    _set_rng_state,
    _unwrap,
    _write,
    data_fingerprint,
    save_checkpoint,
)
from .data import _non_finite_images
from .presets import Preset, lr_factor, make_optimizer

if TYPE_CHECKING:
    from ..evaluate import EvalResult
    from .budget import _Budget

# Settings a resumed run may change: they do not alter the weights a step computes.
RESUMABLE_CHANGES = ("epochs", "num_workers", "checkpoint_every", "eval_every")


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
            (one validation, estimated), "checkpoint_s" (one checkpoint, timed)}``, and when the
            length was set again at the end of the warmup, ``"first_plan": {"steps", "step_s",
            "planned_at"}``; else None.
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

    ``total_steps`` and ``last_step`` change in a run with a time budget: when the measured first
    steps have set the plan (``_plan_budget``), and once more at the end of the warmup
    (``_replan_budget``). The schedule reads ``total_steps`` then.
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
        warmup_steps=preset.warmup_steps,
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
