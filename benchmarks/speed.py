"""Speed, side by side with torchvision's RetinaNet: train step, inference, post-processing, loss.

    python -m benchmarks.speed [--only train inference postprocess loss] [--steps 10] [--quick]

Every comparison builds torchvision's model first and ours from it with ``from_torchvision``, so
both have the same configuration and the same weights, then feeds both the same inputs, alternating
ours / theirs step by step so that a slow moment of the machine hits both alike. Reports medians
after warm-up and the ratio (ours / theirs for throughput: > 1 means we are faster). On a GPU it
adds a ResNet-50 at 800x800, batch 8, in bfloat16 autocast. Results are appended to
``benchmarks/results/speed.csv`` with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.models.detection.retinanet import RetinaNet as TVRetinaNet

from benchmarks.common import print_table, write_csv
from retina_edu.anchors import anchors_per_level
from retina_edu.losses import retinanet_loss
from retina_edu.postprocess import postprocess_detections
from retina_edu.torchvision_compat import from_torchvision


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], None]], steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def make_pair(backbone: str, size: int, num_classes: int, device: torch.device):
    """torchvision's RetinaNet (ResNet-FPN, P6 from P5) and ours built from it."""
    torch.manual_seed(0)
    if backbone == "resnet50":
        tv = retinanet_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            min_size=size,
            max_size=size,
            detections_per_img=100,
        )
    else:
        from torchvision.models import resnet
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        body = getattr(resnet, backbone)(weights=None)
        fpn = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        tv = TVRetinaNet(fpn, num_classes, min_size=size, max_size=size, detections_per_img=100)
    ours = from_torchvision(tv)
    return tv.to(device), ours.to(device)


def random_targets(batch: int, size: int, objects: int, num_classes: int, device, generator=None):
    targets = []
    for _ in range(batch):
        xy = torch.rand(objects, 2, generator=generator) * size * 0.7
        wh = torch.rand(objects, 2, generator=generator) * size * 0.3 + 8
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).to(device),
                "labels": torch.randint(0, num_classes, (objects,), generator=generator).to(device),
            }
        )
    return targets


def bench_train(backbone, size, batch, device, steps, amp_dtype=None, channels_last=False):
    tv, ours = make_pair(backbone, size, 80, device)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    targets = random_targets(batch, size, 5, 80, device, g)
    if channels_last:
        tv, ours = tv.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    fns = {}
    for name, model in (("retina_edu", ours), ("torchvision", tv)):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step(model=model, opt=opt):
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                losses = model(list(images) if isinstance(model, TVRetinaNet) else images, targets)
            loss = losses["classification"] + losses["bbox_regression"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[name] = step
    t = alternate(fns, steps, 2, device)
    return {name: batch / s for name, s in t.items()}


def bench_inference(backbone, size, batch, device, steps, amp_dtype=None):
    tv, ours = make_pair(backbone, size, 80, device)
    tv.eval(), ours.eval()
    with torch.no_grad():  # raise the class bias so post-processing has real work (~thousands of candidates)
        for m in (tv.head.classification_head.cls_logits, ours.class_subnet.out):
            m.bias.fill_(-2.5)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)

    def run(model, inp):
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None),
        ):
            model(inp)

    t = alternate(
        {"retina_edu": lambda: run(ours, images), "torchvision": lambda: run(tv, list(images))}, steps, 1, device
    )
    return {name: batch / s for name, s in t.items()}


def bench_postprocess(size, batch, device, steps, num_classes=80):
    """Decode + top-k + NMS alone on identical head outputs."""
    tv, _ = make_pair("resnet18", size, num_classes, device)
    levels = anchors_per_level((size, size), device=device)
    counts = [a.shape[0] for a in levels]
    anchors = torch.cat(levels)
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(batch, anchors.shape[0], num_classes, generator=g) - 4.0).to(device)
    deltas = (torch.randn(batch, anchors.shape[0], 4, generator=g) * 0.1).to(device)
    sizes = [(size, size)] * batch
    split_outputs = {"cls_logits": list(logits.split(counts, 1)), "bbox_regression": list(deltas.split(counts, 1))}
    split_anchors = [list(anchors.split(counts))] * batch

    def ours():
        postprocess_detections(logits, deltas, anchors, counts, sizes, detections_per_img=100)

    def theirs():
        tv.postprocess_detections(split_outputs, split_anchors, sizes)

    tv.detections_per_img = 100
    with torch.no_grad():
        t = alternate({"retina_edu": ours, "torchvision": theirs}, steps, 1, device)
    return {name: batch / s for name, s in t.items()}


def bench_loss(objects, device, steps, batch=8, size=512, num_classes=80):
    """retinanet_loss against torchvision's compute_loss on identical head outputs and targets."""
    tv, _ = make_pair("resnet18", size, num_classes, device)
    levels = anchors_per_level((size, size), device=device)
    anchors = torch.cat(levels)
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(batch, anchors.shape[0], num_classes, generator=g) - 4.0).to(device)
    deltas = (torch.randn(batch, anchors.shape[0], 4, generator=g) * 0.1).to(device)
    targets = random_targets(batch, size, objects, num_classes, device, g)
    head_outputs = {"cls_logits": logits, "bbox_regression": deltas}
    anchor_list = [anchors] * batch

    def ours():
        retinanet_loss(logits, deltas, anchors, targets, box_loss="l1", normalize="image")

    def theirs():
        tv.compute_loss(targets, head_outputs, anchor_list)

    with torch.no_grad():
        t = alternate({"retina_edu": ours, "torchvision": theirs}, steps, 1, device)
    return {name: 1.0 / s for name, s in t.items()}  # batches per second


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("train", "inference", "postprocess", "loss"),
        default=["train", "inference", "postprocess", "loss"],
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    rows = []

    def add(kind, config, unit, result):
        ours, theirs = result["retina_edu"], result["torchvision"]
        row = {
            "benchmark": kind,
            "config": config,
            "unit": unit,
            "retina_edu": ours,
            "torchvision": theirs,
            "ratio": ours / theirs,
        }
        rows.append(row)
        print(
            f"{kind:12s} {config:34s} ours {ours:9.2f}  torchvision {theirs:9.2f} {unit}  ratio {ours / theirs:5.2f}",
            flush=True,
        )

    if device.type == "cuda":
        train_cfgs = [("resnet50", 800, 8, torch.bfloat16)]
    elif args.quick:
        train_cfgs = [("resnet18", 128, 2, None)]
    else:
        train_cfgs = [("resnet18", 256, 8, None), ("resnet50", 512, 4, None)]
    for backbone, size, batch, amp in train_cfgs:
        config = f"{backbone} {size}x{size} batch {batch}" + (" bf16" if amp else "")
        if "train" in args.only:
            add(
                "train step",
                config,
                "images/s",
                bench_train(backbone, size, batch, device, args.steps, amp, channels_last=device.type == "cuda"),
            )
        if "inference" in args.only:
            add(
                "inference",
                config.replace(f"batch {batch}", "batch 8"),
                "images/s",
                bench_inference(backbone, size, 8 if not args.quick else 2, device, args.steps, amp),
            )
    size = 256 if args.quick else 512
    if "postprocess" in args.only:
        add(
            "postprocess",
            f"{size}x{size} batch 8, 80 classes",
            "images/s",
            bench_postprocess(size, 8, device, args.steps),
        )
    if "loss" in args.only:
        for objects in (0, 1, 20):
            add(
                "loss",
                f"{size}x{size} batch 8, {objects} objects/image",
                "batches/s",
                bench_loss(objects, device, args.steps, size=size),
            )
    print_table(
        rows,
        ["benchmark", "config", "unit", "retina_edu", "torchvision", "ratio"],
        title=f"retina_edu vs torchvision on {device}",
    )
    path = write_csv("speed", rows)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
