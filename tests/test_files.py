"""retina_edu.files: a file is replaced whole or not at all."""

import hashlib
import math
import os

import pytest
import torch

from retina_edu.files import file_sha256, replace_folder_atomic, save_torch_atomic, write_atomic, write_json_atomic


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


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.tmp-999999999"  # no process has this id: a write killed with kill -9
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.tmp-999999999"  # another destination's temporary is not ours to remove
    other.write_bytes(b"x")
    write_json_atomic(path, {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.tmp-999999999", "last.pt"]


def test_a_running_writers_temporary_is_left_alone(tmp_path):
    path = tmp_path / "h.json"
    busy = tmp_path / f".h.json.tmp-{os.getppid()}"  # the parent process is alive: maybe writing now
    busy.write_bytes(b"x")
    write_json_atomic(path, {})
    assert busy.exists()


def test_the_file_is_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_json_atomic(tmp_path / "h.json", {"AP": 1})
    assert events[:2] == ["fsync", "replace"]


def test_replace_folder_atomic_swaps_a_folder_whole_or_not_at_all(tmp_path):
    root = tmp_path / "data"
    replace_folder_atomic(root, lambda tmp: (tmp / "a.txt").write_text("1"))
    assert (root / "a.txt").read_text() == "1"

    def half_then_crash(tmp):
        (tmp / "b.txt").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_folder_atomic(root, half_then_crash)
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]
    replace_folder_atomic(root, lambda tmp: (tmp / "c.txt").write_text("3"))
    assert sorted(p.name for p in root.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_file_sha256_matches_hashlib_and_is_reexported_by_data(tmp_path):
    from retina_edu.data import file_sha256 as data_file_sha256

    payload = os.urandom(3 << 20)  # more than one 1 MiB chunk
    (tmp_path / "x.bin").write_bytes(payload)
    assert file_sha256(tmp_path / "x.bin") == hashlib.sha256(payload).hexdigest()
    assert data_file_sha256 is file_sha256
