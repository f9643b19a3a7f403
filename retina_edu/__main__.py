"""Command line: ``python -m retina_edu <command> ...`` (also installed as ``retina-edu``).

Commands live in :data:`COMMANDS`, a dict of name -> :class:`Command`. To add one, write an
``add_arguments(parser)`` and a ``run(args) -> int`` function and register them::

    COMMANDS["train"] = Command("train a RetinaNet", add_train_arguments, run_train)

Exit codes: 0 done; 2 a wrong argument (checked when parsed, before anything runs: one line on
stderr saying what is allowed); 1 an error the user can fix (a missing file, bad data, an unsafe
checkpoint, a folder that cannot be written, a full disk: ``error: <message>`` on stderr, one line);
3 the training loss diverged; 130 interrupted (Ctrl-C; ``train`` saves and says how to resume).
No traceback is shown for these; ``--debug`` (or ``RETINA_EDU_DEBUG=1``) shows it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: a one-line help, a function adding its arguments, and a function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
r"""Exceptions that mean "the input or the environment was wrong" (``FileNotFoundError``,
``FileExistsError``, a failed write are ``OSError``\s): reported in one line, exit code 1."""

USER_ERROR_EXIT, USAGE_EXIT, INTERRUPTED_EXIT = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``error: argument --epochs: ...``)."""

    def error(self, message: str):
        self.exit(USAGE_EXIT, f"error: {message} (see: {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------


def add_shapes_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu shapes``."""
    parser.add_argument(
        "--out", default="data/shapes", help="output folder; gets train/ and val/ (default: %(default)s)"
    )
    parser.add_argument("--train", type=positive_int, default=2000, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=non_negative_int, default=500, help="validation images (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=256, help="square image size in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the train split; val uses seed + 1 (default: %(default)s)"
    )
    parser.add_argument("--workers", type=positive_int, default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate splits that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_shapes(args: argparse.Namespace) -> int:
    """Make (or reuse) the shapes train/val splits and print where they are."""
    from retina_edu.data import make_shapes_splits

    start = time.perf_counter()
    paths = make_shapes_splits(
        args.out,
        train=args.train,
        val=args.val,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
    )
    if not args.quiet:
        summary = ", ".join(f"{split}: {path}" for split, path in paths.items())
        print(f"shapes data ready in {time.perf_counter() - start:.1f} s ({summary})")
    return 0


# --------------------------------------------------------------------------------------------------
# Argument types: each checks one argument when it is parsed, so that a wrong value stops the
# command before anything runs or is written (argparse reports it in one line, exit code 2).
# --------------------------------------------------------------------------------------------------


def _number(text: str, kind: type, ok: Callable[[float], bool], allowed: str) -> int | float:
    """``text`` read as ``kind`` (int or float) that passes ``ok``; else one line saying what is allowed."""
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not (isinstance(value, int) or math.isfinite(value)) or not ok(value):  # refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (epochs, batch size, steps)."""
    return _number(text, int, lambda v: v >= 1, "a whole number >= 1")


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (workers)."""
    return _number(text, int, lambda v: v >= 0, "a whole number >= 0")


def seed_int(text: str) -> int:
    """A seed numpy accepts: a whole number in [0, 2**32 - 1]."""
    return _number(text, int, lambda v: 0 <= v < 2**32, f"a whole number in [0, {2**32 - 1}]")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate)."""
    return _number(text, float, lambda v: v > 0, "a number > 0")


def score_threshold(text: str) -> float:
    """A detection score in [0, 1]."""
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "a score in [0, 1]")


def device_name(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, available on this machine."""
    import torch

    allowed = "choose cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: {allowed}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS (Apple GPU) is not available here: use --device cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: {allowed}")
    return text


# --------------------------------------------------------------------------------------------------
# train / evaluate / detect
# --------------------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu train`` (also under ``torchrun --nproc_per_node=N``)."""
    parser.add_argument("--data", required=True, help="training folder: COCO (annotations.json) or VOC")
    parser.add_argument("--val", default=None, help="validation folder, evaluated with COCO mAP at the end")
    parser.add_argument("--out", required=True, help="run folder: last.pt (checkpoint) and history.json go there")
    parser.add_argument(
        "--preset",
        choices=("cpu", "gpu"),
        default=None,
        help="default: chosen from the hardware (gpu when CUDA is available)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs")
    length.add_argument(
        "--minutes",
        type=positive_float,
        default=None,
        metavar="M",
        help="train for the time you have: the steps are fitted to this machine so that "
        "training, validation included, ends within M minutes (--resume finishes the plan)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=None, help="images per step per process")
    parser.add_argument(
        "--lr", type=positive_float, default=None, help="base learning rate per 16 images (scaled with the batch)"
    )
    parser.add_argument("--workers", type=non_negative_int, default=None, help="data loading processes")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="write OUT/last.pt every N steps (default: the preset's); Ctrl-C also writes it",
    )
    parser.add_argument(
        "--device", type=device_name, default=None, help="cpu, cuda, cuda:1 (default: cuda when available)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    parser.add_argument("--seed", type=seed_int, default=None)
    parser.add_argument(
        "--anchor-sizes",
        type=positive_float,
        nargs=5,
        default=None,
        metavar="S",
        help="base anchor size of P3..P7 (the paper: 32 64 128 256 512; the cpu preset: 16 .. 256); "
        "`python -m retina_edu anchors --data DIR` recommends them. The checkpoint records them, "
        "so evaluate and detect use the same anchors",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Train, checkpointing into ``--out``; exit 3 when the loss diverged."""
    from dataclasses import replace
    from pathlib import Path

    from retina_edu.data import open_dataset
    from retina_edu.device import is_main_process
    from retina_edu.train import CHECKPOINT_NAME, TrainingDiverged, check_output_folder, choose_preset, train

    out = Path(args.out)
    if (out / CHECKPOINT_NAME).exists() and not args.resume:
        raise FileExistsError(f"{out / CHECKPOINT_NAME} exists: pass --resume to continue it, or choose another --out")
    train_data = open_dataset(args.data)
    val_data = open_dataset(args.val) if args.val else None  # opened (and so checked) before any training
    preset, reason = choose_preset(args.preset, args.device)
    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("base_lr", args.lr),
            ("num_workers", args.workers),
            ("seed", args.seed),
            ("checkpoint_every", args.checkpoint_every),
        )
        if v is not None
    }
    if args.anchor_sizes is not None:
        # Whole numbers stay ints, so that the checkpoint (and a --resume check) reads 16, not 16.0.
        overrides["anchor_sizes"] = tuple(int(s) if float(s).is_integer() else float(s) for s in args.anchor_sizes)
    preset = replace(preset, **overrides)
    main_process = is_main_process()
    if main_process:
        check_output_folder(out)
        if not args.quiet:
            print(f"preset {preset.name!r}: {reason}; {len(train_data)} training images, classes {train_data.classes}")
    try:
        result = train(
            preset,
            train_data,
            val_data,
            out_dir=out,
            resume=args.resume,
            device=args.device,
            progress=not args.quiet,
            minutes=args.minutes,
        )
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if main_process:
        last = result.history["train"][-1] if result.history["train"] else {}
        print(
            f"trained {last.get('step', 0)} steps, final loss {last.get('loss', float('nan')):.4f}; "
            f"checkpoint {result.checkpoint}"
        )
        if result.metrics is not None:
            print(result.metrics)
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu evaluate``."""
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt) or its run folder")
    parser.add_argument("--data", required=True, help="folder to evaluate on: COCO or VOC")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", type=device_name, default=None)
    parser.add_argument("--quiet", action="store_true")


def _checked_model(checkpoint: str, classes: list[str] | None, device: str | None):
    import torch

    from retina_edu.train import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, names = load_model(checkpoint, device)
    if classes is not None and list(classes) != names:
        raise ValueError(
            f"{checkpoint}: the model was trained on {len(names)} classes {names}, "
            f"but the data has {len(classes)}: {list(classes)}"
        )
    return model, names, device


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the COCO metrics of ``--checkpoint`` on ``--data``."""
    from retina_edu.data import open_dataset
    from retina_edu.evaluate import coco_map

    data = open_dataset(args.data)
    model, _, device = _checked_model(args.checkpoint, data.classes, args.device)
    result = coco_map(model, data, batch_size=args.batch_size, device=device, progress=not args.quiet)
    print(result)
    return 0


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu detect``."""
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (last.pt) or its run folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default="runs/detect", help="folder for the drawn images (default: %(default)s)")
    parser.add_argument(
        "--score",
        type=score_threshold,
        default=0.3,
        help="draw detections scoring at least this, in [0, 1] (default: %(default)s)",
    )
    parser.add_argument("--device", type=device_name, default=None)
    parser.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        metavar="N",
        help="detect by N-pixel tiles stitched with NMS (use the training size) instead of resizing "
        "the whole image: for images larger than the training size (aerial photos)",
    )
    parser.add_argument(
        "--overlap",
        type=non_negative_int,
        default=None,
        metavar="PX",
        help="least overlap between tiles, at least the largest object (default: N / 4)",
    )


def training_size(model) -> int | None:
    """The side the model resizes its inputs to (its training size), or None when it does not resize."""
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "resize", False):
        return None
    return int(config.max_size)


def detection_file_names(images: Sequence[str | Path]) -> list[str]:
    """``<stem>_detections.png`` for each image, made unique: ``a/x.png`` and ``b/x.png`` give
    ``x_detections.png`` and ``x_2_detections.png`` (the second must not overwrite the first)."""
    names: list[str] = []
    taken: set[str] = set()
    for image in images:
        stem = Path(image).stem
        name, k = f"{stem}_detections.png", 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}_detections.png"
        taken.add(name)
        names.append(name)
    return names


def run_detect(args: argparse.Namespace) -> int:
    """Draw the detections of ``--checkpoint`` on each image into ``--out``; print them as a table."""
    import matplotlib

    matplotlib.use("Agg")
    from retina_edu.data import load_image
    from retina_edu.train import check_output_folder

    paths = _checked_detect_arguments(args)  # before anything is loaded or written
    model, names, device = _checked_model(args.checkpoint, None, args.device)
    out = check_output_folder(args.out)
    for path, file_name in zip(paths, detection_file_names(paths), strict=True):
        image = load_image(path)
        det = _detect_image(model, image, path, args, device)
        keep = det["scores"] >= args.score
        det = {k: v[keep] for k, v in det.items()}
        target = out / file_name
        _save_detections_figure(image, det, names, target, f"{path.name}: {int(keep.sum())} detections >= {args.score}")
        rows = zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True)
        for box, score, label in rows:
            print(f"{path.name}\t{names[label]}\t{score:.3f}\t" + " ".join(f"{v:.1f}" for v in box))
        print(f"wrote {target}")
    return 0


def _checked_detect_arguments(args: argparse.Namespace) -> list[Path]:
    """The image paths of ``detect``, after checking that they exist and that ``--tile``/``--overlap`` fit."""
    paths = [Path(name) for name in args.images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        raise FileNotFoundError(f"{missing[0]}: no such image{more}")
    if args.overlap is not None and args.tile is None:
        raise ValueError("--overlap is for tiled detection: pass --tile N too")
    if args.tile is not None and args.overlap is not None and args.overlap >= args.tile:
        raise ValueError(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    return paths


def _detect_image(model, image, path: Path, args: argparse.Namespace, device) -> dict:
    """The detections of one image (by tiles with ``--tile``), on the CPU; a note on stderr when an image
    larger than the training size is shrunk to fit."""
    import torch

    from retina_edu.tiling import detect_tiled

    if args.tile is not None:
        overlap = args.overlap if args.overlap is not None else args.tile // 4
        det = detect_tiled(model, image.to(device), args.tile, overlap)
    else:
        size = training_size(model)
        if size is not None and max(image.shape[1:]) > size:
            print(
                f"note: {path.name} is {image.shape[2]} x {image.shape[1]}, larger than the training size "
                f"{size}: it is shrunk to fit, and small objects shrink with it; pass --tile {size} to "
                f"detect by tiles at the training scale",
                file=sys.stderr,
            )
        with torch.no_grad():
            (det,) = model([image.to(device)])
    return {k: v.cpu() for k, v in det.items()}


def _save_detections_figure(image, det: dict, names: list[str], target: Path, title: str) -> None:
    """``det`` drawn on ``image``, written as a PNG to ``target`` (an ``OSError`` naming it if that fails)."""
    import matplotlib.pyplot as plt

    from retina_edu.viz import show_detections

    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[1] / image.shape[2]))
    show_detections(image, det, names, ax=ax, title=title)
    try:
        fig.savefig(target, dpi=100, bbox_inches="tight")
    except OSError as err:
        raise OSError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        plt.close(fig)


def add_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retina_edu anchors``."""
    parser.add_argument("--data", required=True, help="a COCO or VOC folder (its annotations are read, not its images)")
    parser.add_argument(
        "--sizes",
        type=positive_float,
        nargs=5,
        default=None,
        metavar="S",
        help="the anchors to check (default: the paper's 32 64 128 256 512)",
    )
    parser.add_argument(
        "--input-scales",
        type=positive_float,
        nargs="+",
        default=[1.0, 2.0],
        metavar="X",
        help="image resizes to try with the fitted sizes (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=score_threshold,
        default=0.5,
        help="the IoU a positive anchor needs (the paper's %(default)s)",
    )


def run_anchors(args: argparse.Namespace) -> int:
    """Print the dataset's object sizes, the anchors' coverage and the fitted sizes (notebook 11)."""
    import torch

    from retina_edu.anchors import PAPER_ANCHOR_SIZES, dataset_boxes, fit_anchor_sizes
    from retina_edu.data import open_dataset

    data = open_dataset(args.data)
    boxes, sizes = dataset_boxes(data)
    every = torch.cat(boxes) if boxes else torch.zeros(0, 4, dtype=torch.float64)
    if len(every) == 0:
        raise ValueError(f"{args.data}: no boxes to fit anchors to")
    side = ((every[:, 2] - every[:, 0]) * (every[:, 3] - every[:, 1])).sqrt()
    q = side.quantile(torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    shapes = sorted(set(sizes))
    shown = ", ".join(f"{w} x {h}" for h, w in shapes[:3]) + (" ..." if len(shapes) > 3 else "")
    print(f"{args.data}: {len(data)} images ({shown}), {len(every)} boxes")
    print("object size sqrt(w*h), px: min {:.0f}, 10% {:.0f}, median {:.0f}, 90% {:.0f}, max {:.0f}".format(*q))
    current = tuple(args.sizes) if args.sizes else PAPER_ANCHOR_SIZES
    fit = fit_anchor_sizes(
        boxes, sizes, input_scales=tuple(args.input_scales), threshold=args.threshold, current_sizes=current
    )
    print(f"current: {fit.current.summary()}")
    for (scale, base), cov in fit.tried.items():
        print(f"  input x{scale:g}, P3 base {base:g}: {cov.coverage:.1%} covered, {cov.num_unmatched} unmatched")
    at_one = {base: cov for (scale, base), cov in fit.tried.items() if scale == 1.0}
    if at_one:
        base = max(at_one, key=lambda b: (at_one[b].num_objects - at_one[b].num_unmatched, b))
        best = at_one[base]
        flags = " ".join(f"{s:g}" for s in best.sizes)
        print(
            f"recommended at the images' size: --anchor-sizes {flags}  ({best.coverage:.1%} covered, "
            f"{best.num_unmatched} unmatched)"
        )
    if fit.input_scale != 1.0:
        flags = " ".join(f"{s:g}" for s in fit.sizes)
        print(
            f"best overall: images resized x{fit.input_scale:g} with --anchor-sizes {flags} "
            f"({fit.coverage.coverage:.1%} covered; {fit.input_scale**2:g}x the compute per image)"
        )
    return 0


COMMANDS: dict[str, Command] = {
    "shapes": Command("generate the synthetic shapes dataset (COCO format)", add_shapes_arguments, run_shapes),
    "train": Command("train a RetinaNet on a COCO or VOC folder", add_train_arguments, run_train),
    "evaluate": Command("COCO mAP of a checkpoint on a folder", add_evaluate_arguments, run_evaluate),
    "detect": Command("draw a checkpoint's detections on images", add_detect_arguments, run_detect),
    "anchors": Command(
        "check a dataset's boxes against the anchors and fit better sizes", add_anchors_arguments, run_anchors
    ),
}


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="python -m retina_edu", description="RetinaNet, built piece by piece: data, training, evaluation."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of errors (also: RETINA_EDU_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (some libraries' messages span several)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m retina_edu`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else USAGE_EXIT
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_EXIT
    debug = args.debug or os.environ.get("RETINA_EDU_DEBUG", "") not in ("", "0")
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(_one_line(e) if str(e) else "interrupted", file=sys.stderr)  # train's message says what was saved
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
