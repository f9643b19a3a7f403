"""Validation during and after training: when it is due, the COCO mAP appended to the history, and the
end of a run (save first, then validate: a failing validation must not lose the run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from ..device import average_buffers
from ..files import write_json_atomic
from .checkpoints import HISTORY_NAME, _unwrap, _write
from .state import _Run, _save_run, _TrainState

if TYPE_CHECKING:
    from ..evaluate import EvalResult


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
