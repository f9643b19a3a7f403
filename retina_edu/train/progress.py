"""What a run shows while it trains: the progress bar, one history record per step (and the callbacks,
e.g. a live loss curve), and the time a budgeted run took."""

from __future__ import annotations

import time

from torch import Tensor

from . import budget as _budget_module
from .state import _Run, _TrainState


def _progress_bar(state: _TrainState, run: _Run, progress: bool):
    """A tqdm bar over the run's steps (from the step it resumes at), on the main process only."""
    from tqdm.auto import tqdm

    return tqdm(
        total=run.last_step,
        initial=state.step,
        desc=f"train ({run.preset.name})",
        disable=not (progress and run.is_main),
        unit="step",
    )


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


def _report_time(state: _TrainState, run: _Run, first_step: int, start: float) -> None:
    """With a time budget, print how long training took (``start``: a ``_clock()`` reading at the call);
    with or without one, say so when a finished run was only loaded again."""
    if not run.is_main:
        return
    if first_step >= state.step > 0:  # a finished run loaded again: nothing was trained now
        planned = "planned " if run.budget is not None else ""
        print(f"the run had already finished its {state.step} {planned}steps: loaded, nothing trained", flush=True)
        return
    if run.budget is None:
        return
    seconds = _budget_module._clock() - start
    steps = f"{state.step} steps" if first_step == 0 else f"steps {first_step + 1}-{state.step} (resumed)"
    print(
        f"trained {steps} in {seconds // 60:.0f} min {seconds % 60:02.0f} s "
        f"(budget {run.budget.minutes:g} min, validation included)",
        flush=True,
    )
