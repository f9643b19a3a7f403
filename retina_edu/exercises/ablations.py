"""Checks for the exercises of notebook 10 (ablations).

Exercises 2 and 3 train runs; their checks never train anything. They read the configuration of the
learner's results (what ``run_ablation`` returned) and compare it with the runs of section 1 that the
notebook passes in: the same budget, trunk and seeds, with only what the exercise changes changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..ablations import Ablation, anchor_losses, hardest_share
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_share_of_hardest", "check_fl_alpha75", "check_ce_trunk"]

FL = (2.0, 0.25)  # (γ, α): the paper's focal loss, section 1's "FL γ=2 α=0.25"
CE = (0.0, 0.75)  # CE at its best α (Table 1a), section 1's "CE α=0.75"
BUDGET_FIELDS = ("steps", "batch_size", "image_size", "val_images", "preset", "freeze_trunk", "keep_weights")


# --- exercise 1 -------------------------------------------------------------------------------------------


def check_share_of_hardest(share_of_hardest: Callable, logits: dict[str, Tensor]) -> None:
    """Exercise 1: ``share_of_hardest(losses, fraction)`` against ``ablations.hardest_share``, on small
    cases and on the negatives' focal loss (γ = 0 and 2) of the model whose ``logits`` are given."""
    exercise = "Exercise 1 (the hardest 1%)"
    small = torch.tensor([3.0, 1.0, 0.5, 4.0, 2.0], dtype=torch.float64)
    spread = torch.linspace(0.01, 2.0, 250, dtype=torch.float64) ** 3  # 1% of 250 is 2.5 samples
    losses = anchor_losses(logits, gammas=(0.0, 2.0))
    cases = [
        (small, 0.2, "the losses [3, 1, 0.5, 4, 2]"),
        (small, 0.01, "the losses [3, 1, 0.5, 4, 2]"),
        (spread[torch.randperm(250, generator=torch.Generator().manual_seed(0))], 0.01, "250 losses"),
        *((v["negative"], 0.01, f"the negatives at γ = {g:g}") for g, v in losses.items()),
    ]

    def check(first: Any) -> str:
        for i, (values, fraction, what) in enumerate(cases):
            mine = first if i == 0 else share_of_hardest(values.clone(), fraction)
            name = f"share_of_hardest({what}, {fraction})"
            share = expect_number(exercise, mine, name)
            expected = hardest_share(values, fraction)
            k = max(1, math.ceil(fraction * len(values) - 1e-9))
            easiest = float(values.sort().values[:k].sum() / values.sum())
            if math.isclose(share, easiest, rel_tol=1e-6) and not math.isclose(share, expected, rel_tol=1e-6):
                raise wrong(exercise, f"{name} is the share of the easiest samples: the hardest have the largest loss")
            hint = f"{fraction} of {len(values)} samples is {fraction * len(values):g}: how many of them do you keep?"
            expect_close(exercise, share, expected, name=name, rtol=1e-4, hint=hint)
        return (
            "matches retina_edu.ablations.hardest_share on small cases and on the FL model's negatives at γ = 0 and 2"
        )

    run_check(exercise, share_of_hardest, check, cases[0][0].clone(), cases[0][1])


# --- exercises 2 and 3: runs, checked by their configuration -----------------------------------------------


def _config(run: Any) -> dict[str, Any]:
    """A run's ablation as plain JSON values, without names (the cache key ignores them too)."""
    config = json.loads(json.dumps(run["ablation"], sort_keys=True, default=str))
    config.pop("name", None)
    if isinstance(config.get("trunk"), dict):
        config["trunk"].pop("name", None)
    return config


def _runs(exercise: str, answer: Any, name: str) -> list[Any]:
    """``answer`` as a list of results of ``run_ablation``, or a readable error."""
    if isinstance(answer, (Ablation, dict)) or not isinstance(answer, Sequence) or isinstance(answer, str):
        raise wrong(exercise, f"{name} should be a list of runs (one result of run(...) per seed)")
    runs = list(answer)
    if not runs:
        raise wrong(exercise, f"{name} is empty")
    for i, r in enumerate(runs):
        if isinstance(r, Ablation):
            raise wrong(exercise, f"{name}[{i}] is an Ablation, a configuration: train it with run(...)")
        try:
            r["ablation"]["seed"]
        except (TypeError, KeyError, IndexError):
            raise wrong(exercise, f"{name}[{i}] is not a result of run(...): got {type(r).__name__}") from None
    return runs


def _section1(results: Sequence[Any], setting: tuple[float, float]) -> dict[int, dict[str, Any]]:
    """The configuration of section 1's runs of ``setting`` (γ, α), by seed."""
    out = {}
    for r in results:
        config = _config(r)
        if (config["gamma"], config["alpha"]) == setting and config["loss"] == "focal" and config.get("trunk"):
            out.setdefault(int(config["seed"]), config)
    if not out:
        raise ValueError(f"the notebook's section-1 results hold no run with (γ, α) = {setting}")
    return out


def _setting(config: dict[str, Any]) -> str:
    return f"γ = {config['gamma']:g}, α = {config['alpha']}" + (", OHEM" if config["loss"] == "ohem" else "")


def _first_difference(mine: dict[str, Any], expected: dict[str, Any], skip: tuple[str, ...] = ()) -> str | None:
    """The first field (in the dataclass's order) where ``mine`` differs from ``expected``."""
    for field in expected:
        if field not in skip and mine.get(field) != expected[field]:
            return field
    return None


def _compare_runs(
    exercise: str, name: str, runs: list[Any], expected: dict[tuple[str, int], dict[str, Any]], classify: Callable
) -> None:
    """Each expected (setting, seed) has exactly one run, and every run is configured as expected.

    ``classify(config)`` returns the setting a run belongs to, or raises a readable error."""
    found: dict[tuple[str, int], int] = {}
    for i, r in enumerate(runs):
        config = _config(r)
        key = (classify(i, config), int(config["seed"]))
        if key not in expected:
            seeds = sorted({seed for _, seed in expected})
            raise wrong(exercise, f"{name}[{i}] has seed {key[1]}: section 1 ran the seeds {seeds}")
        if key in found:
            raise wrong(exercise, f"{name}[{found[key]}] and {name}[{i}] are the same setting and seed")
        found[key] = i
        want = expected[key]
        field = _first_difference(config, want, skip=("trunk",))
        if field in BUDGET_FIELDS:
            raise wrong(
                exercise, f"{name}[{i}] has {field} = {config.get(field)!r}, not section 1's: keep its budget (BUDGET)"
            )
        if field is not None:
            raise wrong(exercise, f"{name}[{i}]: its {field} = {config.get(field)!r} is not the one to use here")
    missing = sorted(set(expected) - set(found), key=lambda k: (k[1], k[0]))
    if missing:
        setting, seed = missing[0]
        raise wrong(exercise, f"{name} has no run of {setting} for seed {seed}: one run per setting and seed in SEEDS")


def check_fl_alpha75(fl_alpha75: Any, results: Sequence[Any]) -> None:
    """Exercise 2: the focal loss at γ = 2 with α = 0.75, one run per seed, on section 1's trunk and budget.

    Args:
        fl_alpha75: the learner's runs (results of ``run_ablation``), or None.
        results: section 1's runs; the reference is its FL γ = 2, α = 0.25 runs with α = 0.75."""
    exercise = "Exercise 2 (the wrong α for the focal loss)"

    def check(answer: Any) -> str:
        runs = _runs(exercise, answer, "fl_alpha75")
        expected = {("FL α=0.75", seed): {**c, "alpha": 0.75} for seed, c in _section1(results, FL).items()}

        def classify(i: int, config: dict[str, Any]) -> str:
            if config["loss"] != "focal" or config["gamma"] != FL[0]:
                raise wrong(exercise, f"fl_alpha75[{i}] has {_setting(config)}: the exercise keeps FL at γ = 2")
            if config["alpha"] != 0.75:
                raise wrong(exercise, f"fl_alpha75[{i}] has α = {config['alpha']}: use CE's best α")
            return "FL α=0.75"

        _compare_runs(exercise, "fl_alpha75", runs, expected, classify)
        for i, r in enumerate(runs):
            if _config(r)["trunk"] != expected[("FL α=0.75", int(r["ablation"]["seed"]))]["trunk"]:
                raise wrong(exercise, f"fl_alpha75[{i}] starts from another trunk than section 1's runs")
        return f"{len(runs)} runs of FL γ = 2, α = 0.75 (one per seed) on section 1's trunk and budget"

    run_check(exercise, fl_alpha75, check)


def check_ce_trunk(ce_trunk_results: Any, results: Sequence[Any]) -> None:
    """Exercise 3: CE α = 0.75 and FL γ = 2, α = 0.25, every seed, on a trunk trained with CE α = 0.75.

    Args:
        ce_trunk_results: the learner's runs (results of ``run_ablation``), or None.
        results: section 1's runs; the reference is its runs of those two settings, their trunk
            trained with CE α = 0.75 instead of the focal loss and otherwise the same."""
    exercise = "Exercise 3 (FL without its head start)"
    settings = {"CE α=0.75": CE, "FL γ=2 α=0.25": FL}

    def check(answer: Any) -> str:
        runs = _runs(exercise, answer, "ce_trunk_results")
        reference = {label: _section1(results, setting) for label, setting in settings.items()}
        old_trunk = next(iter(reference["CE α=0.75"].values()))["trunk"]
        ce_trunk = {**old_trunk, "gamma": CE[0], "alpha": CE[1]}
        expected = {(label, seed): c for label, by_seed in reference.items() for seed, c in by_seed.items()}

        def classify(i: int, config: dict[str, Any]) -> str:
            for label, (gamma, alpha) in settings.items():
                if config["loss"] == "focal" and (config["gamma"], config["alpha"]) == (gamma, alpha):
                    return label
            raise wrong(
                exercise, f"ce_trunk_results[{i}] has {_setting(config)}: neither CE α = 0.75 nor FL γ = 2, α = 0.25"
            )

        _compare_runs(exercise, "ce_trunk_results", runs, expected, classify)
        for i, r in enumerate(runs):
            trunk = _config(r)["trunk"]
            where = f"ce_trunk_results[{i}]"
            if trunk is None:
                raise wrong(exercise, f"{where} has no trunk: start it from the new one (trunk=...)")
            if trunk == old_trunk:
                raise wrong(exercise, f"{where} starts from section 1's trunk, trained with FL: train one with CE")
            if (trunk["gamma"], trunk["alpha"]) != CE:
                raise wrong(exercise, f"{where}'s trunk has {_setting(trunk)}: train it with CE α = 0.75 (γ = 0)")
            field = _first_difference(trunk, ce_trunk)
            if field is not None:
                raise wrong(
                    exercise,
                    f"{where}'s trunk has {field} = {trunk.get(field)!r}, not section 1's: change only its loss",
                )
        return (
            f"CE α = 0.75 and FL γ = 2, α = 0.25 on a trunk trained with CE α = 0.75, "
            f"{len(runs) // 2} seeds each, with section 1's budget"
        )

    run_check(exercise, ce_trunk_results, check)
