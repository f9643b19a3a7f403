"""mAP against training time: the ``cpu`` preset and torchvision's RetinaNet, same budget, one run.

    python -m benchmarks.time_to_accuracy [--minutes 1 2 3 4 5] [--preset cpu] [--val-images 500]

Both models get the same backbone (ResNet-18, trained from scratch), FPN width, P6 from C5, anchors,
image size, data order, flips, optimiser, learning-rate schedule and mixed precision; they differ
where torchvision's RetinaNet offers no choice (4 convs per subnet, L1 box loss, per-image loss
normaliser, its own matching and post-processing code). The clock stops while evaluating. Prints a
table of val AP at each time mark and appends it to benchmarks/results/time_to_accuracy.csv.
"""

from __future__ import annotations

import argparse
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
        body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [c5 // 4, c5 // 2, c5], preset.fpn_channels,
        extra_blocks=LastLevelP6P7(c5, preset.fpn_channels),  # from C5, as ours
    )
    sizes = tuple(tuple(s * 2 ** (k / 3) for k in range(3)) for s in preset.anchor_sizes)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    norm = partial(nn.GroupNorm, min(32, preset.fpn_channels)) if preset.head_norm == "group" else None
    head = RetinaNetHead(preset.fpn_channels, 9, num_classes, norm_layer=norm)
    return TVRetinaNet(backbone, num_classes, min_size=preset.image_size, max_size=preset.image_size,
                       anchor_generator=anchors, head=head, detections_per_img=100)


class _Done(Exception):
    pass


class TimeMarks:
    """A training callback: at each mark of training time, evaluate (clock stopped); stop after the last."""

    def __init__(self, model, val_data, marks_s, label):
        self.model, self.val, self.marks, self.label = model, val_data, list(marks_s), label
        self.rows, self.train_s, self.tick = [], 0.0, None

    def __call__(self, event, history):
        if event != "step":
            return
        now = time.perf_counter()
        if self.tick is None:  # the first step includes start-up: count it
            self.tick = self.start
        self.train_s += now - self.tick
        if self.marks and self.train_s >= self.marks[0]:
            mark = self.marks.pop(0)
            result = coco_map(self.model, self.val, batch_size=16, progress=False)
            self.model.train()
            step = history["train"][-1]["step"]
            row = {"model": self.label, "minutes": mark / 60, "train_s": round(self.train_s, 1), "step": step,
                   **{k: round(v, 4) for k, v in result.as_dict().items()}}
            self.rows.append(row)
            print(f"{self.label:12s} {mark / 60:4.1f} min  step {step:5d}  AP {result.AP:.3f}  AP50 {result.AP50:.3f}", flush=True)
            if not self.marks:
                raise _Done
        self.tick = time.perf_counter()


def run(label, model, preset, train_data, val_data, marks_s):
    timer = TimeMarks(model, val_data, marks_s, label)
    timer.start = time.perf_counter()
    try:
        train(preset, train_data, model=model, callbacks=[timer], progress=False)
    except _Done:
        pass
    return timer.rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None)
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--only", choices=("retina_edu", "torchvision"), default=None)
    args = parser.parse_args(argv)

    splits = make_shapes_splits(args.data, progress=False)
    train_data = CocoDetection.from_folder(splits["train"])
    val_data = CocoDetection.from_folder(splits["val"])
    val_data = Subset(val_data, range(min(args.val_images, len(val_data))))
    preset, reason = choose_preset(args.preset)
    print(f"preset {preset.name!r} ({reason}); marks at {args.minutes} minutes of training")
    marks = [m * 60 for m in args.minutes]
    rows = []
    num_classes = len(train_data.classes)
    if args.only in (None, "retina_edu"):
        torch.manual_seed(preset.seed)
        rows += run("retina_edu", RetinaNet(config=preset.model_config(num_classes)), preset, train_data, val_data, marks)
    if args.only in (None, "torchvision"):
        torch.manual_seed(preset.seed)
        rows += run("torchvision", torchvision_retinanet(preset, num_classes), preset, train_data, val_data, marks)
    by_mark = {}
    for r in rows:
        by_mark.setdefault(r["minutes"], {})[r["model"]] = r
    table = [{"minutes": m, "ours AP": v.get("retina_edu", {}).get("AP", float("nan")),
              "torchvision AP": v.get("torchvision", {}).get("AP", float("nan")),
              "ours AP50": v.get("retina_edu", {}).get("AP50", float("nan")),
              "torchvision AP50": v.get("torchvision", {}).get("AP50", float("nan")),
              "ours steps": v.get("retina_edu", {}).get("step", ""), "torchvision steps": v.get("torchvision", {}).get("step", "")}
             for m, v in sorted(by_mark.items())]
    print_table(table, list(table[0]), title=f"val AP@[.5:.95] against training time ({preset.name} preset)")
    path = write_csv("time_to_accuracy", [{**r, "preset": preset.name} for r in rows])
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
