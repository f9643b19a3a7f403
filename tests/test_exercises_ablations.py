"""The checks of notebook 10's exercises (retina_edu.exercises.ablations): a right answer passes, an
untouched stub is "not attempted", and a typical wrong answer gets a message without the answer.

Exercises 2 and 3 hand in runs; their checks read only the runs' configurations, so these tests build
results as the JSON form of ``run_ablation``'s output (``{"name", "ablation", ...}``) without training."""

from __future__ import annotations

import math

import pytest
import torch

from retina_edu import ablations as ab
from retina_edu.ablations import Ablation
from retina_edu.exercises.ablations import check_ce_trunk, check_fl_alpha75, check_share_of_hardest

SEEDS = (0, 1, 2)
COMMON = dict(batch_size=8, image_size=128)  # notebook 10's budget
TRUNK = ab.pretrained_trunk(steps=400, preset={"base_lr": 4e-3}, val_images=100, **COMMON)
BUDGET = dict(steps=80, val_images=100, preset={"base_lr": 4e-3}, trunk=TRUNK, **COMMON)


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


def as_result(ablation: Ablation, metrics: dict | None = None) -> dict:
    """What the checks read of a run: the JSON form of an AblationResult (no training)."""
    return {"name": ablation.name, "ablation": ablation.to_dict(), "metrics": metrics or {"AP": 0.1}}


@pytest.fixture(scope="module")
def results():
    """Section 1's runs: Table 1a/1b for every seed, on the FL trunk."""
    return [as_result(a) for a in ab.gamma_alpha_runs(SEEDS, **BUDGET)]


def stub(*args):
    """The student's stub: a docstring and the stub comment, so it returns None."""
    # YOUR CODE HERE


# --- exercise 1 --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logits():
    """A detector's anchor logits, as ``load_anchor_logits`` gives them: most negatives easy."""
    g = torch.Generator().manual_seed(0)
    negative = torch.where(torch.rand(5000, 4, generator=g) < 0.03, -1.0, -5.0) + torch.randn(5000, 4, generator=g)
    return {"positive": 1.0 + 2 * torch.randn(300, generator=g), "negative": negative}


def share_of_hardest(losses, fraction=0.01):
    k = max(1, math.ceil(fraction * len(losses)))
    return float(losses.double().sort(descending=True).values[:k].sum() / losses.double().sum())


def test_share_of_hardest_solution_passes(capsys, logits):
    check_share_of_hardest(share_of_hardest, logits)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 1 (the hardest 1%): correct, matches retina_edu.ablations.hardest_share"), out


def test_share_of_hardest_stub_is_not_attempted(capsys, logits):
    check_share_of_hardest(stub, logits)
    assert capsys.readouterr().out == "Exercise 1 (the hardest 1%): not attempted yet\n"

    def raises(losses, fraction=0.01):
        raise NotImplementedError

    check_share_of_hardest(raises, logits)
    assert "not attempted yet" in capsys.readouterr().out


def test_share_of_hardest_rounding_down_is_caught(logits):
    def floor(losses, fraction=0.01):
        k = max(1, math.floor(fraction * len(losses)))
        return float(losses.sort(descending=True).values[:k].sum() / losses.sum())

    with pytest.raises(AssertionError, match=r"share_of_hardest\(250 losses, 0.01\) = .* is too small .*2\.5"):
        check_share_of_hardest(floor, logits)


def test_share_of_hardest_of_the_easiest_is_caught(logits):
    def easiest(losses, fraction=0.01):
        k = max(1, math.ceil(fraction * len(losses)))
        return float(losses.sort().values[:k].sum() / losses.sum())

    with pytest.raises(AssertionError, match="the share of the easiest samples"):
        check_share_of_hardest(easiest, logits)


def test_share_of_hardest_keeping_nothing_for_a_small_fraction_is_caught(logits):
    def none_kept(losses, fraction=0.01):
        k = math.ceil(fraction * len(losses)) if fraction * len(losses) >= 1 else 0
        return float(losses.sort(descending=True).values[:k].sum() / losses.sum())

    with pytest.raises(AssertionError, match=r"\[3, 1, 0.5, 4, 2\], 0.01\) = 0 is too small") as err:
        check_share_of_hardest(none_kept, logits)
    assert "0.38" not in str(err.value)  # the answer: 4 / 10.5


# --- exercise 2 --------------------------------------------------------------------------------------------


def alpha75(**changes) -> list[dict]:
    budget = {**BUDGET, **changes.pop("budget", {})}
    settings = {"gamma": 2.0, "alpha": 0.75, **changes}
    return [as_result(Ablation("FL γ=2 α=0.75", seed=s, **settings, **budget)) for s in SEEDS]


def test_fl_alpha75_right_runs_pass(capsys, results):
    check_fl_alpha75(alpha75(), results)
    out = capsys.readouterr().out
    assert out == (
        "Exercise 2 (the wrong α for the focal loss): correct, 3 runs of FL γ = 2, α = 0.75 (one per seed) "
        "on section 1's trunk and budget\n"
    )
    check_fl_alpha75(list(reversed(alpha75())), results)  # any order, any name
    assert "correct" in capsys.readouterr().out


def test_fl_alpha75_untouched_is_not_attempted(capsys, results):
    check_fl_alpha75(None, results)
    assert capsys.readouterr().out == "Exercise 2 (the wrong α for the focal loss): not attempted yet\n"


@pytest.mark.parametrize(
    "answer, says",
    [
        (lambda: alpha75(alpha=0.5), "α = 0.5: use CE's best α"),
        (lambda: alpha75(gamma=0.0), "γ = 0, α = 0.75: the exercise keeps FL at γ = 2"),
        (lambda: alpha75()[:2], "no run of FL α=0.75 for seed 2"),
        (lambda: alpha75() + alpha75()[:1], r"\[0\] and fl_alpha75\[3\] are the same setting and seed"),
        (lambda: alpha75(budget={"steps": 40}), "steps = 40, not section 1's"),
        (lambda: alpha75(budget={"trunk": None}), "another trunk"),
        (lambda: alpha75(prior_probability=0.5), "prior_probability = 0.5 is not the one"),
        (lambda: [Ablation("FL γ=2 α=0.75", gamma=2.0, alpha=0.75, seed=s, **BUDGET) for s in SEEDS], "train it"),
        (lambda: alpha75()[0], "should be a list of runs"),
        (lambda: [], "is empty"),
    ],
)
def test_fl_alpha75_wrong_runs_say_what_is_off(answer, says, results):
    with pytest.raises(AssertionError, match=says) as err:
        check_fl_alpha75(answer(), results)
    assert str(err.value).startswith("Exercise 2 (the wrong α for the focal loss): ")
    if "0.75" not in says:  # the learner's own value may be quoted back, never the expected one
        assert "0.75" not in str(err.value)


# --- exercise 3 --------------------------------------------------------------------------------------------

TRUNK_CE = ab.pretrained_trunk(steps=400, gamma=0.0, alpha=0.75, preset={"base_lr": 4e-3}, val_images=100, **COMMON)
SETTINGS = (("CE α=0.75", 0.0, 0.75), ("FL γ=2 α=0.25", 2.0, 0.25))


def on_trunk(trunk, settings=SETTINGS, seeds=SEEDS) -> list[dict]:
    budget = dict(BUDGET, trunk=trunk)
    return [as_result(Ablation(n, gamma=g, alpha=a, seed=s, **budget)) for s in seeds for n, g, a in settings]


def test_ce_trunk_right_runs_pass(capsys, results):
    check_ce_trunk(on_trunk(TRUNK_CE), results)
    assert capsys.readouterr().out == (
        "Exercise 3 (FL without its head start): correct, CE α = 0.75 and FL γ = 2, α = 0.25 on a trunk "
        "trained with CE α = 0.75, 3 seeds each, with section 1's budget\n"
    )


def test_ce_trunk_untouched_is_not_attempted(capsys, results):
    check_ce_trunk(None, results)
    assert capsys.readouterr().out == "Exercise 3 (FL without its head start): not attempted yet\n"


def other_trunk(**changes):
    settings = dict(steps=400, gamma=0.0, alpha=0.75, preset={"base_lr": 4e-3}, val_images=100, **COMMON)
    return ab.pretrained_trunk(**{**settings, **changes})


@pytest.mark.parametrize(
    "answer, says",
    [
        (lambda: on_trunk(TRUNK), "starts from section 1's trunk, trained with FL"),
        (lambda: on_trunk(other_trunk(alpha=0.25)), "trunk has γ = 0, α = 0.25: train it with CE α = 0.75"),
        (lambda: on_trunk(other_trunk(steps=100)), "trunk has steps = 100, not section 1's"),
        (lambda: on_trunk(TRUNK_CE, settings=SETTINGS[:1]), "no run of FL γ=2 α=0.25 for seed 0"),
        (lambda: on_trunk(TRUNK_CE, seeds=(0, 1)), "no run of CE α=0.75 for seed 2"),
        (lambda: on_trunk(TRUNK_CE, settings=(("CE α=0.5", 0.0, 0.5),)), "neither CE α = 0.75 nor FL"),
        (lambda: on_trunk(TRUNK_CE, seeds=(0, 1, 3)), "seed 3: section 1 ran the seeds"),
        (lambda: on_trunk(None), "no trunk"),
    ],
)
def test_ce_trunk_wrong_runs_say_what_is_off(answer, says, results):
    with pytest.raises(AssertionError, match=says) as err:
        check_ce_trunk(answer(), results)
    assert str(err.value).startswith("Exercise 3 (FL without its head start): ")
