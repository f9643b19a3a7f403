"""Re-execute notebooks in place so their saved outputs match the code (``make notebooks``).

Usage: python tools/execute_notebooks.py notebooks/03_focal_loss.ipynb [...]

Learners read the notebooks on GitHub with their outputs, so a notebook is re-executed whenever
it or the code it shows changes. Runs from ``notebooks/`` with the ``retina-edu`` kernel, like
JupyterLab would, and drops per-cell timing metadata so that diffs show only real changes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = {"name": "retina-edu", "display_name": "Python (retina-edu)", "language": "python"}


def execute(path: Path, timeout: int = 1800) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNEL
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL["name"], resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        seconds = execute(Path(name))
        print(f"{name}: executed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
