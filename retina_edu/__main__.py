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


COMMANDS: dict[str, Command] = {
    "shapes": Command("generate the synthetic shapes dataset (COCO format)", add_shapes_arguments, run_shapes),
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
