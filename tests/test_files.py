"""retina_edu.files: a file is replaced whole or not at all."""

import math

import pytest
import torch

from retina_edu.files import save_torch_atomic, write_atomic, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"AP": 0.5})

    def half_then_crash(tmp):
        tmp.write_text('{"AP": 0.')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_crash)
    assert path.read_text() == '{\n "AP": 0.5\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_folders_are_made_and_values_round_trip(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "b" / "h.json", {"loss": [1.0, math.nan]})
    assert path.exists() and "NaN" in path.read_text()
    saved = save_torch_atomic(tmp_path / "c" / "w.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(saved)["w"], torch.arange(3))
