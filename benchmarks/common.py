"""Shared helpers for the benchmarks: machine description, tables, CSV files."""

from __future__ import annotations

import csv
import datetime
import os
import platform
from pathlib import Path

import torch
import torchvision

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Where and with what a benchmark ran: written into every CSV row."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_name(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "threads": str(torch.get_num_threads()),
        "device": device,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def print_table(rows: list[dict], columns: list[str], title: str = "") -> None:
    """Rows as an aligned text table (floats with 3 decimals)."""

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_csv(name: str, rows: list[dict]) -> Path:
    """Append rows (plus the machine description) to ``benchmarks/results/<name>.csv``.

    When the columns change (a benchmark gained one), the file is rewritten with every column of old and
    new rows, so one file keeps a benchmark's whole history (old rows leave the new columns empty)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    info = machine()
    rows = [{**r, **info} for r in rows]
    fields = list(rows[0].keys())
    old_rows: list[dict] = []
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old_fields = list(reader.fieldnames or [])
            old_rows = list(reader)
        fields = old_fields + [c for c in fields if c not in old_fields]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old_rows + rows)
    tmp.replace(path)
    return path
