"""Per-notebook run times from the last ``make test`` (``build/test-results.xml``).

Usage: python tools/notebook_times.py [build/test-results.xml]

nbval reports one test per cell; this sums them per notebook, which is what the README's course
map quotes ("2-core CPU" column): the time to run the notebook top to bottom from a fresh kernel.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def notebook_times(path: str) -> dict[str, float]:
    times: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).getroot().iter("testcase"):
        # nbval's cells: classname "notebooks.08_training.ipynb" (or a path in "file")
        where = f"{case.get('file') or ''} {case.get('classname') or ''}"
        match = re.search(r"([^/.\s]+)\.ipynb", where)
        if match:
            times[match.group(1)] += float(case.get("time", 0))
    return dict(sorted(times.items()))


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "build/test-results.xml"
    times = notebook_times(path)
    if not times:
        print(f"no notebook tests in {path}")
        return 1
    for name, seconds in {**times, "all notebooks": sum(times.values())}.items():
        print(f"{name:32s} {seconds:6.0f} s" if seconds < 90 else f"{name:32s} {seconds / 60:6.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
