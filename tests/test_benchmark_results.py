"""benchmarks/common.write_csv keeps a benchmark's whole history in one file, across column changes."""

import csv
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not an installed package
common = importlib.import_module("benchmarks.common")


def test_write_csv_appends_and_keeps_old_rows_when_columns_change(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "machine", lambda: {"cpu": "test"})
    common.write_csv("bench", [{"model": "a", "AP": 0.1}])
    common.write_csv("bench", [{"model": "b", "AP": 0.2}])
    path = common.write_csv("bench", [{"model": "c", "AP": 0.3, "mark": "final"}])  # a new column
    rows = list(csv.DictReader(open(path)))
    assert [r["model"] for r in rows] == ["a", "b", "c"]
    assert [r["mark"] for r in rows] == ["", "", "final"] and rows[0]["cpu"] == "test"
    assert [p.name for p in tmp_path.iterdir()] == ["bench.csv"]  # no rotated copies, no temporaries
