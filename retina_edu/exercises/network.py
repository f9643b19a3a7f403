"""Checks for the exercises of notebook 05 (backbone and FPN)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..anchors import anchors_per_level
from ..boxes import box_area, box_iou
from ..model import FPN, Backbone
from ._check import attempt_cases, correct, expect_number, run_check, wrong

__all__ = ["check_pyramid_shapes", "check_fpn_parameters", "check_level_table"]

# Input sizes (height, width) for Exercise 1: square, odd, tiny, and one that needs the ceil twice.
PYRAMID_INPUTS = ((512, 512), (200, 333), (97, 130), (300, 420), (1000, 601), (1, 1))
# (C3, C4, C5) channels for Exercise 2: ResNet-18, ResNet-50, MobileNetV3-Large.
FPN_INPUTS = ((128, 256, 512), (512, 1024, 2048), (40, 112, 960))
HALVED_ANCHORS = (16, 32, 64, 128, 256)  # the CPU preset's base sizes, P3 to P7
SIZE_RULE_OFFSET = 3 + 1 / 6  # section 7: level = floor(3 + 1/6 + log2(s / b3)), clamped to 3..7


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _as_shapes(exercise: str, call: str, value: Any) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(n) for n in pair) for pair in value]
    except (TypeError, ValueError):
        raise wrong(exercise, f"{call} should be a list of (height, width) pairs, got {value!r}") from None
    if len(shapes) != 5 or any(len(pair) != 2 for pair in shapes):
        raise wrong(exercise, f"{call} should give five (height, width) pairs, P3 to P7; got {shapes}")
    return shapes


def check_pyramid_shapes(pyramid_shapes: Callable) -> None:
    """Exercise 1: ``pyramid_shapes(h, w)`` against the levels a ResNet-18 + ``model.FPN`` really produces.

    The network runs on the ``meta`` device: shapes only, no arithmetic, so it is instant."""
    exercise = "Exercise 1 (pyramid shapes)"
    mine = attempt_cases(exercise, pyramid_shapes, PYRAMID_INPUTS, lambda size: f"pyramid_shapes{size}")
    if mine is None:
        return
    with torch.device("meta"), torch.no_grad():
        backbone = Backbone("resnet18").eval()
        fpn = FPN(backbone.out_channels, 256).eval()
        for (h, w), shapes in mine.items():
            call = f"pyramid_shapes({h}, {w})"
            shapes = _as_shapes(exercise, call, shapes)
            expected = [tuple(p.shape[-2:]) for p in fpn(*backbone(torch.empty(1, 3, h, w)))]
            for level, (got, real) in enumerate(zip(shapes, expected), start=3):
                if got != real:
                    raise wrong(
                        exercise,
                        f"{call} gives P{level} = {got}, which the network does not produce "
                        "(each stride-2 step maps n to ceil(n / 2), P3 is three steps down)",
                    )
    sizes = len(PYRAMID_INPUTS)
    correct(exercise, f"the levels of ResNet-18 + FPN for {sizes} input sizes, odd and tiny ones included")


def check_fpn_parameters(fpn_parameters: Callable) -> None:
    """Exercise 2: ``fpn_parameters(in_channels, channels, p6_from)`` against the parameter count of
    ``model.FPN`` (built on the ``meta`` device), for three backbones, two widths and both P6 inputs."""
    exercise = "Exercise 2 (the FPN's parameters)"
    cases = [(c, channels, p6) for c in FPN_INPUTS for channels in (64, 256) for p6 in ("c5", "p5")]
    mine = attempt_cases(exercise, fpn_parameters, cases, lambda case: "fpn_parameters({}, {}, {!r})".format(*case))
    if mine is None:
        return
    for (in_channels, channels, p6_from), value in mine.items():
        call = f"fpn_parameters({in_channels}, {channels}, {p6_from!r})"
        got = expect_number(exercise, value, call)
        with torch.device("meta"):
            expected = _count(FPN(in_channels, channels, p6_from=p6_from))
        if got == expected:
            continue
        off = got - expected
        hints = {-8 * channels: "are the biases of all eight convs counted?"}
        p6_input_swap = 9 * channels * (in_channels[-1] - channels)
        hints[p6_input_swap if p6_from == "p5" else -p6_input_swap] = (
            f"which map does P6 read with p6_from={p6_from!r}, and how many channels has it?"
        )
        hint = hints.get(off, "count 3 lateral 1×1 convs, 3 output 3×3 convs, P6 and P7, weights and biases")
        side = "too large" if off > 0 else "too small"
        raise wrong(exercise, f"{call} = {got:.0f} is {side} ({hint})")
    correct(exercise, f"your formula counts retina_edu.model.FPN exactly in all {len(cases)} settings")


def _levels_by_size_rule_and_matching(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """For every box: the level (0 is P3) the size rule gives, and the level of its best halved anchor."""
    sizes = box_area(boxes).sqrt()
    rule = torch.floor(SIZE_RULE_OFFSET + torch.log2(sizes / HALVED_ANCHORS[0])).clamp(3, 7).long() - 3
    per_level = anchors_per_level((256, 256), sizes=HALVED_ANCHORS)
    level_of = torch.cat([torch.full((len(a),), i) for i, a in enumerate(per_level)])
    _, best_anchor = box_iou(boxes, torch.cat(per_level)).max(dim=1)
    return rule, level_of[best_anchor]


def check_level_table(level_table: Any, boxes: Tensor) -> None:
    """Exercise 3: the 5 × 5 counts of (size rule's level, best anchor's level) for the halved anchors.

    Args:
        level_table: the learner's table, rows the rule's level P3..P7, columns the matched level.
        boxes: ``Tensor[N, 4]``, every box of the shapes val split (the notebook's ``boxes``).
    """
    exercise = "Exercise 3 (where the size rule misses)"
    rule, matched = _levels_by_size_rule_and_matching(boxes)
    expected = torch.bincount(rule * 5 + matched, minlength=25).view(5, 5)

    def check(value: Any) -> str:
        try:
            table = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            kind = type(value).__name__
            raise wrong(exercise, f"level_table should be a 5 × 5 tensor of counts, got {kind}") from None
        if table.shape != (5, 5):
            raise wrong(exercise, f"level_table has shape {tuple(table.shape)}, not 5 × 5 (levels P3 to P7)")
        if table.is_floating_point() and not torch.equal(table, table.round()):
            raise wrong(exercise, "level_table should hold counts of boxes (whole numbers)")
        table = table.long()
        if int(table.sum()) != len(boxes):
            raise wrong(exercise, f"level_table counts {int(table.sum())} boxes; the val split has {len(boxes)}")
        if torch.equal(table, expected):
            agree = int(expected.diagonal().sum())
            return (
                f"the size rule and matching agree on {agree} of {len(boxes)} boxes "
                f"({agree / len(boxes):.1%}); now look at where the other {len(boxes) - agree} sit"
            )
        if torch.equal(table, expected.T):
            raise wrong(exercise, "rows and columns are swapped: rows are the size rule's level, columns matching's")
        rows_ok = torch.equal(table.sum(1), expected.sum(1))
        cols_ok = torch.equal(table.sum(0), expected.sum(0))
        if not rows_ok:
            raise wrong(exercise, "the row sums (boxes per size-rule level) are off: is the rule's base size 16?")
        if not cols_ok:
            raise wrong(exercise, "the column sums (boxes per matched level) are off: use the halved anchors' levels")
        raise wrong(exercise, "the row and column sums are right but the pairs are not: pair each box's two levels")

    run_check(exercise, level_table, check)
