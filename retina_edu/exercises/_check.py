"""What every exercise check shares: "not attempted" vs wrong vs correct, and how each is reported.

A check is called from a locked cell of a notebook with the learner's answer (a function they wrote or a
value they filled in). It computes the reference answer itself, from the package, so the notebook never
shows the expected value; its messages say *what* is wrong without giving the answer away.

Three outcomes:

- not attempted (the stub is untouched: the value is still ``None``, or the function returns ``None`` or
  raises ``NotImplementedError``): prints ``"<exercise>: not attempted yet"`` so that the student edition
  runs top to bottom. Under nbgrader (``NBGRADER_EXECUTION`` is set while it autogrades or validates) it
  raises :class:`NotAttempted` instead, which scores the exercise zero;
- wrong: raises ``AssertionError`` with a message that names the exercise and what differs;
- correct: prints ``"<exercise>: correct, <what it shows>"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = [
    "NotAttempted",
    "grading",
    "attempt",
    "not_attempted",
    "correct",
    "wrong",
    "expect_number",
    "expect_close",
    "expect_equal",
    "run_check",
    "attempt_cases",
]


class NotAttempted(AssertionError):
    """Raised instead of printing "not attempted yet" while nbgrader grades (so the exercise scores 0)."""


def grading() -> bool:
    """Whether nbgrader is executing the notebook (``nbgrader autograde`` or ``validate``)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def attempt(answer: Any, *args: Any, **kwargs: Any) -> Any:
    """The learner's result: ``answer(*args, **kwargs)`` for a function, ``answer`` itself for a value.

    Returns ``None`` where the answer is not written yet: a value still ``None``, a stub function (its
    body is only a comment, so it returns ``None``) or one that raises ``NotImplementedError``."""
    if answer is None or not callable(answer):
        return answer
    try:
        return answer(*args, **kwargs)
    except NotImplementedError:
        return None


def not_attempted(exercise: str) -> None:
    """Report an exercise the learner has not answered yet (raises under nbgrader, prints otherwise)."""
    message = f"{exercise}: not attempted yet"
    if grading():
        raise NotAttempted(message)
    print(message)


def correct(exercise: str, what: str = "") -> None:
    print(f"{exercise}: correct" + (f", {what}" if what else ""))


def wrong(exercise: str, problem: str) -> AssertionError:
    """The error to raise for a wrong answer: ``raise wrong("Exercise 2", "...")``."""
    return AssertionError(f"{exercise}: {problem}")


def expect_number(exercise: str, value: Any, name: str = "your answer") -> float:
    """``value`` as a float, or a readable error when it is not a finite number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise wrong(exercise, f"{name} should be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise wrong(exercise, f"{name} should be a number, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(number):
        raise wrong(exercise, f"{name} is {number}, not a finite number")
    return number


def expect_close(
    exercise: str,
    mine: Any,
    expected: Any,
    *,
    name: str = "your answer",
    rtol: float = 1e-5,
    atol: float = 1e-8,
    hint: str = "",
) -> None:
    """Raise a readable error unless ``mine`` equals ``expected`` within tolerance.

    Numbers: says whether the answer is too large or too small, not by how much. Tensors: checks the
    type and shape first, then says how many elements differ and where the first one is."""
    suffix = f" ({hint})" if hint else ""
    if not isinstance(expected, torch.Tensor):
        number = expect_number(exercise, mine, name)
        if not math.isclose(number, float(expected), rel_tol=rtol, abs_tol=atol):
            side = "too large" if number > float(expected) else "too small"
            raise wrong(exercise, f"{name} = {number:.6g} is {side}{suffix}")
        return
    if not isinstance(mine, torch.Tensor):
        raise wrong(exercise, f"{name} should be a tensor, got {type(mine).__name__}")
    if mine.shape != expected.shape:
        raise wrong(exercise, f"{name} has shape {tuple(mine.shape)}, expected {tuple(expected.shape)}{suffix}")
    mine_d, expected_d = mine.detach().double(), expected.detach().double()
    bad = ~torch.isclose(mine_d, expected_d, rtol=rtol, atol=atol, equal_nan=False)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise wrong(
            exercise,
            f"{int(bad.sum())} of {bad.numel()} values of {name} are off; the first at index {first} "
            f"(yours {mine_d[first].item():.6g}){suffix}",
        )


def expect_equal(exercise: str, mine: Any, expected: Any, *, name: str = "your answer", hint: str = "") -> None:
    """Raise a readable error unless ``mine == expected`` (integers, strings, tuples)."""
    if mine != expected:
        raise wrong(exercise, f"{name} = {mine!r} is not right" + (f" ({hint})" if hint else ""))


def run_check(exercise: str, answer: Any, check: Callable[[Any], str], *args: Any, **kwargs: Any) -> None:
    """The usual shape of a check: get the learner's result, report "not attempted", else let ``check``
    raise on a wrong answer or return what a correct one shows."""
    result = attempt(answer, *args, **kwargs)
    if result is None:
        not_attempted(exercise)
        return
    correct(exercise, check(result))


def attempt_cases(
    exercise: str,
    answer: Any,
    cases: Iterable[Any],
    call: Callable[[Any], str],
    args: Callable[[Any], tuple] = tuple,
) -> dict[Any, Any] | None:
    """The learner's function on several cases: ``{case: answer(*args(case))}``, or ``None`` (after
    reporting "not attempted") when it returns nothing for every case. A function that answers some
    cases and returns None for others is wrong: the message names the first such call (``call(case)``)."""
    mine = {case: attempt(answer, *args(case)) for case in cases}
    if all(value is None for value in mine.values()):
        not_attempted(exercise)
        return None
    for case, value in mine.items():
        if value is None:
            raise wrong(exercise, f"{call(case)} returned None")
    return mine
