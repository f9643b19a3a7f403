"""Checks for the exercises of notebook 08 (training)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..analysis import missed_objects
from ..train.presets import PAPER_LR_PER_16_IMAGES, Preset
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_answer_lr", "check_misses"]

GPUS, IMAGES_PER_GPU = 4, 2  # exercise 1's machine
SCORE_THRESH = 0.4  # exercise 2: the detections that count
MISSES_IMAGES = 10  # exercise 2 compares misses(i) on the first validation images


def check_answer_lr(answer_lr: Any) -> None:
    """Exercise 1: the SGD learning rate for 4 GPUs with 2 images each, by the linear scaling rule."""
    exercise = "Exercise 1 (the learning rate)"

    def check(value: Any) -> str:
        lr = expect_number(exercise, value, "answer_lr")
        sgd = Preset(optimizer="sgd", base_lr=PAPER_LR_PER_16_IMAGES, batch_size=IMAGES_PER_GPU)
        expected = sgd.lr(num_processes=GPUS)
        if math.isclose(lr, sgd.lr(num_processes=1)):
            raise wrong(
                exercise,
                f"answer_lr = {lr:g} is the rate for the {IMAGES_PER_GPU} images of one GPU: the rule scales "
                "with the images of all GPUs together",
            )
        hint = "the paper's 0.01 is for 16 images per step; the rule scales it with the images one step sees"
        expect_close(exercise, lr, expected, name="answer_lr", rtol=1e-6, hint=hint)
        return f"{GPUS} GPUs x {IMAGES_PER_GPU} images = {GPUS * IMAGES_PER_GPU} per step: lr {expected:g}"

    run_check(exercise, answer_lr, check)


def _reference_misses(model: Any, dataset: Sequence, i: int) -> int:
    """The package's count for ``dataset[i]``: objects no detection (score >= 0.4, any class) finds."""
    image, target = dataset[i]
    with torch.no_grad():
        (det,) = model([image])
    return missed_objects(target["boxes"], det["boxes"][det["scores"] >= SCORE_THRESH])


def check_misses(misses: Callable, model: Any, dataset: Sequence) -> None:
    """Exercise 2: ``misses(i)`` for the first 10 images of ``dataset``, against
    ``retina_edu.analysis.missed_objects`` on the model's detections scoring at least 0.4.

    ``model([image])`` must return one detection dict (``boxes``, ``scores``, ``labels``): the trained
    detector in eval mode, as the learner's ``misses`` uses it."""
    exercise = "Exercise 2 (missed objects)"
    count = min(MISSES_IMAGES, len(dataset))

    def check(first: Any) -> str:
        for i in range(count):
            mine = expect_number(exercise, first if i == 0 else misses(i), f"misses({i})")
            expected = _reference_misses(model, dataset, i)
            if mine > expected:
                raise wrong(
                    exercise,
                    f"misses({i}) = {mine:g} is too large: an object is found by any detection scoring "
                    f"at least {SCORE_THRESH}, whatever its class, that overlaps it with IoU >= 0.5",
                )
            if mine < expected:
                raise wrong(
                    exercise,
                    f"misses({i}) = {mine:g} is too small: only detections scoring at least "
                    f"{SCORE_THRESH} count, and an object needs IoU >= 0.5 with one of them",
                )
        return f"your counts match retina_edu.analysis.missed_objects on the first {count} validation images"

    run_check(exercise, misses, check, 0)
