"""tools/notebook_times.py: nbval's per-cell times summed per notebook (the README's course map)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "tools" / "notebook_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cells_are_summed_per_notebook_and_unit_tests_ignored(tmp_path):
    xml = tmp_path / "results.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="notebooks.08_training.ipynb" name="Cell 0" time="1.5"/>'
        '<testcase classname="notebooks.08_training.ipynb" name="Cell 1" time="400"/>'
        '<testcase classname="notebooks.00_setup_and_data.ipynb" name="Cell 0" time="2"/>'
        '<testcase classname="tests.test_boxes" name="test_box_iou" time="9"/>'
        "</testsuite></testsuites>"
    )
    times = _load_tool().notebook_times(str(xml))
    assert times == {"00_setup_and_data": 2.0, "08_training": 401.5}
