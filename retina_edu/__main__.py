"""Command line: ``python -m retina_edu <command> ...`` (also installed as ``retina-edu``).

Commands live in :data:`COMMANDS`, a dict of name -> :class:`Command`. To add one, write an
``add_arguments(parser)`` and a ``run(args) -> int`` function and register them::

    COMMANDS["train"] = Command("train a RetinaNet", add_train_arguments, run_train)

Errors a user can fix (``ValueError``, ``FileNotFoundError``, ``FileExistsError``) are printed as
``error: <message>`` on stderr with exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: a one-line help, a function adding its arguments, and a function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)
"""Exceptions that mean "the input was wrong": reported in one line, exit code 2."""


# --------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------


def add_shapes_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu shapes``."""
    parser.add_argument("--out", default="data/shapes",
                        help="output folder; gets train/ and val/ (default: %(default)s)")
    parser.add_argument("--train", type=int, default=2000, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=500, help="validation images (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=256,
                        help="square image size in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train split; val uses seed + 1 (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate splits that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_shapes(args: argparse.Namespace) -> int:
    """Make (or reuse) the shapes train/val splits and print where they are."""
    from retina_edu.data import make_shapes_splits

    start = time.perf_counter()
    paths = make_shapes_splits(args.out, train=args.train, val=args.val, image_size=args.image_size,
                               seed=args.seed, overwrite=args.overwrite, progress=not args.quiet,
                               workers=args.workers)
    if not args.quiet:
        summary = ", ".join(f"{split}: {path}" for split, path in paths.items())
        print(f"shapes data ready in {time.perf_counter() - start:.1f} s ({summary})")
    return 0


# --------------------------------------------------------------------------------------------------
# train / evaluate / detect
# --------------------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu train`` (also under ``torchrun --nproc_per_node=N``)."""
    parser.add_argument("--data", required=True, help="training folder: COCO (annotations.json) or VOC")
    parser.add_argument("--val", default=None, help="validation folder, evaluated with COCO mAP at the end")
    parser.add_argument("--out", required=True, help="run folder: last.pt (checkpoint) and history.json go there")
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None,
                        help="default: chosen from the hardware (gpu when CUDA is available)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step per process")
    parser.add_argument("--lr", type=float, default=None, help="base learning rate per 16 images (scaled with the batch)")
    parser.add_argument("--workers", type=int, default=None, help="data loading processes")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from retina_edu.data import open_dataset
    from retina_edu.train import CHECKPOINT_NAME, choose_preset, train

    train_data = open_dataset(args.data)
    val_data = open_dataset(args.val) if args.val else None
    preset, reason = choose_preset(args.preset, args.device)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("base_lr", args.lr),
                                   ("num_workers", args.workers), ("seed", args.seed)) if v is not None}
    preset = replace(preset, **overrides)
    out = Path(args.out)
    if (out / CHECKPOINT_NAME).exists() and not args.resume:
        raise FileExistsError(f"{out / CHECKPOINT_NAME} exists: pass --resume to continue it, or choose another --out")
    rank0 = int(__import__("os").environ.get("RANK", "0")) == 0
    if rank0 and not args.quiet:
        print(f"preset {preset.name!r}: {reason}; {len(train_data)} training images, classes {train_data.classes}")
    from retina_edu.train import TrainingDiverged

    try:
        result = train(preset, train_data, val_data, out_dir=out, resume=args.resume, device=args.device,
                       progress=not args.quiet)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if rank0:
        last = result.history["train"][-1] if result.history["train"] else {}
        print(f"trained {last.get('step', 0)} steps, final loss {last.get('loss', float('nan')):.4f}; checkpoint {result.checkpoint}")
        if result.metrics is not None:
            print(result.metrics)
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt) or its run folder")
    parser.add_argument("--data", required=True, help="folder to evaluate on: COCO or VOC")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--quiet", action="store_true")


def _checked_model(checkpoint: str, classes: list[str] | None, device: str | None):
    import torch

    from retina_edu.train import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, names = load_model(checkpoint, device)
    if classes is not None and list(classes) != names:
        raise ValueError(f"{checkpoint}: the model was trained on {len(names)} classes {names}, "
                         f"but the data has {len(classes)}: {list(classes)}")
    return model, names, device


def run_evaluate(args: argparse.Namespace) -> int:
    from retina_edu.data import open_dataset
    from retina_edu.evaluate import coco_map

    data = open_dataset(args.data)
    model, _, device = _checked_model(args.checkpoint, data.classes, args.device)
    result = coco_map(model, data, batch_size=args.batch_size, device=device, progress=not args.quiet)
    print(result)
    return 0


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt) or its run folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default="runs/detect", help="folder for the drawn images (default: %(default)s)")
    parser.add_argument("--score", type=float, default=0.3, help="draw detections above this score (default: %(default)s)")
    parser.add_argument("--device", default=None)


def run_detect(args: argparse.Namespace) -> int:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from retina_edu.data import load_image
    from retina_edu.viz import show_detections

    model, names, device = _checked_model(args.checkpoint, None, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image")
        image = load_image(path)
        with torch.no_grad():
            (det,) = model([image.to(device)])
        det = {k: v.cpu() for k, v in det.items()}
        keep = det["scores"] >= args.score
        fig, ax = plt.subplots(figsize=(6, 6 * image.shape[1] / image.shape[2]))
        show_detections(image, {k: v[keep] for k, v in det.items()}, names, ax=ax,
                        title=f"{path.name}: {int(keep.sum())} detections >= {args.score}")
        target = out / f"{path.stem}_detections.png"
        fig.savefig(target, dpi=100, bbox_inches="tight")
        plt.close(fig)
        for box, score, label in zip(det["boxes"][keep].tolist(), det["scores"][keep].tolist(), det["labels"][keep].tolist()):
            print(f"{path.name}\t{names[label]}\t{score:.3f}\t" + " ".join(f"{v:.1f}" for v in box))
        print(f"wrote {target}")
    return 0


COMMANDS: dict[str, Command] = {
    "shapes": Command("generate the synthetic shapes dataset (COCO format)", add_shapes_arguments, run_shapes),
    "train": Command("train a RetinaNet on a COCO or VOC folder", add_train_arguments, run_train),
    "evaluate": Command("COCO mAP of a checkpoint on a folder", add_evaluate_arguments, run_evaluate),
    "detect": Command("draw a checkpoint's detections on images", add_detect_arguments, run_detect),
}


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m retina_edu",
                                     description="RetinaNet, built piece by piece: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m retina_edu`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
