"""``make bench``: every benchmark against torchvision, one after the other.

    python -m benchmarks.run_all [--quick]

1. speed.py: train step, inference, post-processing and loss, side by side (a few minutes);
2. time_to_accuracy.py: val mAP against training time for the preset of this machine (about
   twice the preset's training time: both models train in turn).

The ablation sweep (benchmarks/ablations.py) is longer and runs on its own.
"""

from __future__ import annotations

import argparse

from benchmarks import speed, time_to_accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one time mark: a smoke run")
    args = parser.parse_args(argv)
    speed.main(["--quick", "--steps", "3"] if args.quick else [])
    time_to_accuracy.main(["--minutes", "0.5", "--val-images", "50"] if args.quick else [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
