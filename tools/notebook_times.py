"""Per-notebook run times from the last ``make test`` (``build/test-results.xml``).

Usage: python tools/notebook_times.py [build/test-results.xml]

nbval reports one test per cell; this sums them per notebook, which is what the README's course
map quotes ("2-core CPU" column): the time to run the notebook top to bottom from a fresh kernel.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def notebook_times(path: str) -> dict[str, float]:
    times: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("classname", "") or ""
        file = case.get("file") or name
        if ".ipynb" in file or ".ipynb" in name:
            notebook = (file if ".ipynb" in file else name).split("::")[0]
            times[notebook.rsplit("/", 1)[-1].split(".ipynb")[0]] += float(case.get("time", 0))
    return dict(sorted(times.items()))


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "build/test-results.xml"
    times = notebook_times(path)
    if not times:
        print(f"no notebook tests in {path}")
        return 1
    for name, seconds in times.items():
        print(f"{name:32s} {seconds / 60:5.1f} min")
    print(f"{'all notebooks':32s} {sum(times.values()) / 60:5.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
