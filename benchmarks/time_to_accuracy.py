"""mAP against training time, within a time budget: ``retina_edu`` trained with ``--minutes M``, the
fixed ``cpu`` preset, and torchvision's RetinaNet with the same budget; one process, one after another.

    python -m benchmarks.time_to_accuracy [--minutes 5] [--marks 1 2 3 4] [--preset cpu] [--val-images 500]
    python -m benchmarks.time_to_accuracy --minutes 5 --only minutes --float32   # the float32 figure
    python -m benchmarks.time_to_accuracy --minutes 0.5 --marks 0.2 --val-images 20 --no-csv   # a trial

The three runs:

- ``retina_edu --minutes M``: ``train(minutes=M)`` times its first steps and fits the number of steps
  (and so the whole learning-rate schedule) to the budget, the final validation included, then fits
  it again at the end of the warmup from the steps timed since;
- ``retina_edu fixed``: the preset's own length (``epochs``), stopped at the budget if it is longer;
- ``torchvision --minutes M``: torchvision's RetinaNet in the same loop with the same budget (it times
  its own steps, so its plan has its own number of steps).

Both models get the same backbone (ResNet-18, trained from scratch), FPN width, P6 from C5, anchors,
image size, data order, flips, optimiser, learning-rate schedule and mixed precision; they differ
where torchvision's RetinaNet offers no choice (4 convs per subnet, L1 box loss, per-image loss
normaliser, its own matching and post-processing code).

At every mark (``--marks``, default every whole minute before the budget) the model is evaluated on
the val images with the training clock stopped (so a mark's evaluation never eats into the budget:
a planned run's steps are fixed before the first mark); the final row is the AP when training ended,
from the run's own final validation. A mark the run did not reach because it had ended reports that
final model (marked ``ended``). ``wall_s`` is the whole run's time without the marks' evaluations:
for a ``--minutes`` run, what the budget bounds. Prints a table and appends the rows to
``benchmarks/results/time_to_accuracy.csv``. The machine must be otherwise idle for the timings to mean
anything (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from functools import partial

import torch
from torch import nn
from torch.utils.data import Subset

from benchmarks.common import print_table, write_csv
from retina_edu.data import CocoDetection, make_shapes_splits
from retina_edu.evaluate import coco_map
from retina_edu.model import RetinaNet
from retina_edu.train import Preset, choose_preset, train


def torchvision_retinanet(preset: Preset, num_classes: int) -> nn.Module:
    """torchvision's RetinaNet configured like ``preset`` as far as its API allows."""
    from torchvision.models import resnet
    from torchvision.models.detection import RetinaNet as TVRetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = getattr(resnet, preset.backbone)(weights=None)
    c5 = body.layer4[-1].conv1.in_channels
    backbone = BackboneWithFPN(
        body,
        {"layer2": "0", "layer3": "1", "layer4": "2"},
        [c5 // 4, c5 // 2, c5],
        preset.fpn_channels,
        extra_blocks=LastLevelP6P7(c5, preset.fpn_channels),  # from C5, as ours
    )
    sizes = tuple(tuple(s * 2 ** (k / 3) for k in range(3)) for s in preset.anchor_sizes)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    norm = partial(nn.GroupNorm, min(32, preset.fpn_channels)) if preset.head_norm == "group" else None
    head = RetinaNetHead(preset.fpn_channels, 9, num_classes, norm_layer=norm)
    return TVRetinaNet(
        backbone,
        num_classes,
        min_size=preset.image_size,
        max_size=preset.image_size,
        anchor_generator=anchors,
        head=head,
        detections_per_img=100,
    )


class _Done(Exception):
    """Raised by ``TimeMarks`` to stop a run that reached the budget (the fixed preset only)."""


def _ap_row(label: str, mark: float | str, train_s: float, step: int, metrics: dict[str, float]) -> dict:
    return {
        "model": label,
        "mark": mark,
        "train_s": round(train_s, 1),
        "step": step,
        "AP": round(metrics["AP"], 4),
        "AP50": round(metrics["AP50"], 4),
    }


class TimeMarks:
    """A training callback: evaluate at each mark of training time (clock stopped), and record the
    final AP when training ends (or, with ``stop_at_s``, when the budget is reached)."""

    def __init__(self, model: nn.Module, val_data, marks_s: list[float], label: str, stop_at_s: float | None):
        self.model, self.val, self.marks, self.label, self.stop_at = model, val_data, list(marks_s), label, stop_at_s
        self.rows: list[dict] = []
        self.train_s, self.paused_s, self.tick, self.start = 0.0, 0.0, None, time.perf_counter()

    def _evaluate(self) -> dict[str, float]:
        paused = time.perf_counter()
        result = coco_map(self.model, self.val, batch_size=16, progress=False).as_dict()
        self.model.train()
        self.paused_s += time.perf_counter() - paused
        return result

    def _print(self, row: dict) -> None:
        mark = "final" if row["mark"] == "final" else f"{row['mark']:g} min"
        print(
            f"{self.label:26s} {mark:>8}  {row['train_s']:6.1f} s  step {row['step']:5d}  "
            f"AP {row['AP']:.3f}  AP50 {row['AP50']:.3f}",
            flush=True,
        )

    def final(self, metrics: dict[str, float], step: int) -> None:
        """The final row, and the marks the run did not reach (it had ended: the same model)."""
        for mark in self.marks:
            self.rows.append({**_ap_row(self.label, round(mark / 60, 2), self.train_s, step, metrics), "ended": True})
        self.marks = []
        row = _ap_row(self.label, "final", self.train_s, step, metrics)
        row["wall_s"] = round(time.perf_counter() - self.start - self.paused_s, 1)
        self.rows.append(row)
        self._print(row)

    def __call__(self, event: str, history: dict) -> None:
        if event == "end":
            if history["eval"]:
                self.final(history["eval"][-1], history["train"][-1]["step"] if history["train"] else 0)
            return
        if event != "step":
            return
        now = time.perf_counter()
        self.train_s += now - (self.start if self.tick is None else self.tick)  # the first step: start-up too
        step = history["train"][-1]["step"]
        while self.marks and self.train_s >= self.marks[0]:
            row = _ap_row(self.label, round(self.marks.pop(0) / 60, 2), self.train_s, step, self._evaluate())
            self.rows.append(row)
            self._print(row)
        if self.stop_at is not None and self.train_s >= self.stop_at:
            self.final(self._evaluate(), step)
            raise _Done
        self.tick = time.perf_counter()


def run(
    label: str,
    model: nn.Module,
    preset: Preset,
    train_data,
    val_data,
    marks_s: list[float],
    minutes: float | None,
    budget_s: float,
) -> list[dict]:
    """Train ``model`` (with ``minutes``, or the preset's length stopped at ``budget_s``); the rows."""
    timer = TimeMarks(model, val_data, marks_s, label, stop_at_s=None if minutes else budget_s)
    try:
        train(preset, train_data, val_data, model=model, callbacks=[timer], progress=False, minutes=minutes)
    except _Done:
        pass
    return timer.rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="the budget (default: %(default)s)")
    parser.add_argument(
        "--marks",
        type=float,
        nargs="+",
        default=None,
        help="minutes of training at which to evaluate (default: every whole minute before the budget)",
    )
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None)
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--no-csv", action="store_true", help="do not append to the results file (a trial run)")
    parser.add_argument(
        "--float32", action="store_true", help="train in float32 even where the CPU has native bfloat16"
    )
    parser.add_argument(
        "--only", choices=("minutes", "fixed", "torchvision"), nargs="+", default=["minutes", "fixed", "torchvision"]
    )
    args = parser.parse_args(argv)
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        parser.error(f"--minutes must be a number > 0, got {args.minutes}")
    marks = sorted(args.marks) if args.marks else [float(m) for m in range(1, math.ceil(args.minutes))]
    if any(m <= 0 or m > args.minutes for m in marks):
        parser.error(f"--marks must lie in (0, {args.minutes:g}], got {marks}")

    splits = make_shapes_splits(args.data, progress=False)
    train_data = CocoDetection.from_folder(splits["train"])
    val_data = CocoDetection.from_folder(splits["val"])
    val_data = Subset(val_data, range(min(args.val_images, len(val_data))))
    preset, reason = choose_preset(args.preset)
    if args.float32:
        preset, reason = dataclasses.replace(preset, amp=False), reason + "; float32 (--float32)"
    print(f"preset {preset.name!r} ({reason}); budget {args.minutes:g} min, marks at {marks} minutes of training")
    marks_s, budget_s, num_classes = [m * 60 for m in marks], args.minutes * 60, len(train_data.classes)

    def ours():
        return RetinaNet(config=preset.model_config(num_classes))

    runs = {  # key: (label, model, minutes)
        "minutes": (f"retina_edu --minutes {args.minutes:g}", ours, args.minutes),
        "fixed": (f"retina_edu fixed {preset.name}", ours, None),
        "torchvision": (
            f"torchvision --minutes {args.minutes:g}",
            lambda: torchvision_retinanet(preset, num_classes),
            args.minutes,
        ),
    }
    rows = []
    for key in args.only:
        label, make_model, minutes = runs[key]
        torch.manual_seed(preset.seed)
        rows += run(label, make_model(), preset, train_data, val_data, marks_s, minutes, budget_s)

    labels = [runs[key][0] for key in args.only]
    by_mark: dict = {}
    for r in rows:
        by_mark.setdefault(r["mark"], {})[r["model"]] = r
    table = []
    for mark in [round(m, 2) for m in marks] + ["final"]:
        cells = by_mark.get(mark, {})
        line = {"minutes": mark}
        for label in labels:
            r = cells.get(label)
            line[f"{label} AP"] = "" if r is None else f"{r['AP']:.3f}" + (" (ended)" if r.get("ended") else "")
        for label in labels:
            line[f"{label} steps"] = "" if label not in cells else cells[label]["step"]
        table.append(line)
    print_table(
        table,
        list(table[0]),
        title=f"val AP@[.5:.95] against training time ({preset.name} preset, budget {args.minutes:g} min)",
    )
    for r in rows:
        if r["mark"] == "final":
            print(
                f"{r['model']}: {r['step']} steps, {r['train_s']:.0f} s of steps, {r['wall_s']:.0f} s in all "
                f"(validation included, marks' evaluations not)"
            )
    if not args.no_csv:
        columns = ("model", "mark", "train_s", "wall_s", "step", "AP", "AP50", "ended")
        path = write_csv(
            "time_to_accuracy",
            [
                {
                    **{c: r.get(c, "") for c in columns},
                    "preset": preset.name + ("" if preset.amp else "-float32"),
                    "budget_min": args.minutes,
                }
                for r in rows
            ],
        )
        print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
