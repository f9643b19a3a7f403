"""The time budget (``train(minutes=...)``): the first steps and one validation batch are timed, then the
run's length is set so that it ends within the minutes and the whole schedule runs over those steps. At the
end of the warmup the length is set once more, from the steps timed since: the first steps of a run are
slower or faster than the rest (memory being allocated, caches warming, the first plots), and the warmup
does not depend on the length, so no step has been taken at a rate the new length would change.

``_clock`` is the budget's clock (the loop and its time report read it here too); tests replace it with a fake one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from .checkpoints import _unwrap
from .state import _save_run

if TYPE_CHECKING:
    from .state import _Run, _TrainState

# A time budget (train(minutes=...)): the steps after the first (which includes start-up) are timed
# up to this many, all within the warmup when it is that long (the warmup does not depend on the
# number of steps, so no step is taken at a learning rate the plan would change).
BUDGET_MEASURED_STEPS = 10
# The length is set again at the end of the warmup when at least this many steps were timed since.
BUDGET_REPLAN_MIN_STEPS = 20
# Plan to end at 97% of the budget: step times drift (other programs, checkpoints, a live plot).
BUDGET_SAFETY = 0.97
# Validation is timed on this many images and extrapolated, plus 10% for COCOeval's own work.
BUDGET_EVAL_SAMPLE, BUDGET_EVAL_OVERHEAD = 8, 1.1
_clock: Callable[[], float] = time.perf_counter  # the budget's clock; tests put a fake one here


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
    replan_at: int | None = None  # the step where the length is set again (the end of the warmup)
    replan_from: tuple[int, float] | None = None  # (step, clock) where the steps it times begin


def _start_budget(
    run: _Run,
    saved: dict[str, Any] | None,
    minutes: float | None,
    start: float,
    max_steps: int | None,
    val_data: Dataset | None,
) -> _Budget | None:
    """The run's time budget, or None for a run of ``preset.epochs``.

    A checkpoint that recorded a plan is finished as planned (``run`` is set to its steps, whatever
    ``minutes`` says now); one interrupted before its plan was made plans again, with its minutes
    when none are given. Otherwise ``minutes`` starts a plan: the run stops at step ``last`` (the
    end of the timing), where ``_plan_budget`` sets its real length.
    """
    if saved is not None and "plan" not in saved:  # a run of epochs (or from before budgets existed)
        if minutes is not None and run.is_main:
            print(
                f"the checkpoint is of a run without a time budget: finishing it as it was ({run.total_steps} "
                f"steps), minutes={minutes:g} ignored; start in another folder to train for minutes",
                flush=True,
            )
        return None
    plan = saved.get("plan") if saved is not None else None
    if plan is not None and plan.get("steps") is not None:
        run.total_steps, run.warmup_steps = plan["steps"], plan.get("warmup_steps", run.warmup_steps)
        run.last_step = plan["steps"] if max_steps is None else min(plan["steps"], max_steps)
        if run.is_main and saved["step"] < plan["steps"]:  # a finished plan says so when it ends
            print(
                f"resuming the plan its checkpoint recorded: {plan['steps']} steps of batch "
                f"{plan['batch_size']} in {plan['minutes']:g} minutes",
                flush=True,
            )
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


def _steps_in_budget(
    budget_s: float, elapsed_s: float, done: int, step_s: float, eval_s: float, steps_per_epoch: int, eval_every: int
) -> int:
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
    from ..evaluate import predict

    n = min(BUDGET_EVAL_SAMPLE, len(val_data))
    with torch.random.fork_rng(devices=[]):
        predict(model, Subset(val_data, range(n)), batch_size=n, device=device, progress=False)  # warm-up
        tick = _clock()
        predict(model, Subset(val_data, range(n)), batch_size=n, device=device, progress=False)
        seconds = _clock() - tick
    return seconds * len(val_data) / n * BUDGET_EVAL_OVERHEAD


def _time_checkpoint(state: _TrainState, run: _Run) -> float:
    """Seconds one checkpoint takes (0 without ``out_dir``): one is saved now and timed. It records
    no plan yet, so a run resumed from it plans again."""
    if run.out_dir is None:
        return 0.0
    tick = _clock()
    _save_run(state, run, history=False)
    return _clock() - tick


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
    checkpoint_s = _time_checkpoint(state, run)
    step_s, eval_s, checkpoint_s, elapsed = _slowest(run, step_s, eval_s, checkpoint_s, _clock() - budget.start)
    steps = _set_length(state, run, bar, step_s, eval_s, checkpoint_s, elapsed)
    # A run too short for the preset's warmup would end before its decay begins: the warmup then
    # takes half the run (and ends no earlier than now, the steps taken keep their rates).
    run.warmup_steps = min(run.preset.warmup_steps, max(state.step, steps // 2))
    budget.plan.update(warmup_steps=run.warmup_steps, eval_s=round(eval_s, 2), checkpoint_s=round(checkpoint_s, 2))
    if steps > run.warmup_steps >= state.step + BUDGET_REPLAN_MIN_STEPS:
        budget.replan_at, budget.replan_from = run.warmup_steps, (state.step, _clock())
    if run.is_main:
        note = "" if steps > state.step else " (the budget is too short: it ends here)"
        _say(
            bar,
            f"plan: about {steps} steps of batch {budget.plan['batch_size']} in {budget.minutes:g} minutes "
            f"on this machine ({step_s:.2f} s per step, timed over steps {timed}; "
            f"validation about {eval_s:.0f} s){note}",
        )


def _replan_budget(state: _TrainState, run: _Run, bar) -> None:
    """At the end of the warmup: the length set again from the steps timed since the plan."""
    budget = run.budget
    now = _clock()
    (since, then), first = budget.replan_from, dict(budget.plan)
    step_s, elapsed = _slowest(run, (now - then) / (state.step - since), now - budget.start)
    budget.replan_at = None
    steps = _set_length(state, run, bar, step_s, first["eval_s"], first["checkpoint_s"], elapsed)
    budget.plan["first_plan"] = {k: first[k] for k in ("steps", "step_s", "planned_at")}
    if run.is_main:
        _say(
            bar,
            f"plan at the end of the warmup: {steps} steps ({step_s:.2f} s per step over steps "
            f"{since + 1}-{state.step}; the first plan said {first['steps']})",
        )


def _slowest(run: _Run, *seconds: float) -> list[float]:
    """Every process must plan the same steps: each measurement as the slowest process took it."""
    if run.world <= 1:
        return list(seconds)
    measured = torch.tensor(seconds, device=run.device, dtype=torch.float64)
    dist.all_reduce(measured, op=dist.ReduceOp.MAX)
    return measured.tolist()


def _set_length(
    state: _TrainState, run: _Run, bar, step_s: float, eval_s: float, checkpoint_s: float, elapsed: float
) -> int:
    """Set the run's length to the steps that fit in what is left of the budget (each step with its
    share of a checkpoint); record it in the plan."""
    budget = run.budget
    per_step = step_s + checkpoint_s / run.preset.checkpoint_every
    steps = _steps_in_budget(
        budget.minutes * 60, elapsed, state.step, per_step, eval_s, run.steps_per_epoch, run.preset.eval_every
    )
    run.total_steps = steps
    run.last_step = steps if budget.max_steps is None else min(steps, budget.max_steps)
    budget.plan.update(steps=steps, planned_at=state.step, step_s=round(step_s, 4))
    state.record["plan"] = budget.plan
    bar.total = run.last_step
    bar.refresh()
    return steps


def _say(bar, message: str) -> None:
    if bar.disable:
        print(message, flush=True)
    else:
        bar.write(message)  # above the progress bar
