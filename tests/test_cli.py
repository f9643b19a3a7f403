"""retina_edu.__main__: the command line reports user errors in one line and exits non-zero."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from retina_edu.__main__ import detection_file_names, main
from retina_edu.data import make_shapes
from retina_edu.train import load_checkpoint, load_model


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# shapes ------------------------------------------------------------------------------------------


def test_cli_shapes_makes_the_splits_then_reuses_them(tmp_path, capsys) -> None:
    out = tmp_path / "shapes"
    argv = ["shapes", "--out", str(out), "--train", "5", "--val", "3", "--image-size", "48", "--workers", "1"]
    assert main(argv) == 0
    assert len(_load_json(out / "train/annotations.json")["images"]) == 5
    assert len(_load_json(out / "val/annotations.json")["images"]) == 3
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    assert main(argv + ["--seed", "1", "--overwrite", "--quiet"]) == 0
    assert _load_json(out / "train/annotations.json")["info"]["seed"] == 1


def test_cli_reports_user_errors_in_one_line_with_exit_code_1(tmp_path, capsys) -> None:
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "2", "--val", "0", "--image-size", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image_size" in err and "Traceback" not in err
    assert (
        main(["shapes", "--out", str(tmp_path / "s"), "--train", "2", "--val", "0", "--image-size", "32", "--quiet"])
        == 0
    )
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "3", "--val", "0", "--image-size", "32"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_cli_without_a_command_or_with_a_bad_one_exits_2(capsys) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
    assert "shapes" in capsys.readouterr().out


# train / evaluate / detect -----------------------------------------------------------------------
# A user error is one line on stderr ("error: ..."), exit 1; a wrong argument is one line, exit 2,
# before anything is written; no traceback either way.

TRAIN = ["--preset", "cpu", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--quiet"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def trained_run(tiny_shapes, tmp_path_factory) -> Path:
    """One CPU-preset epoch on the tiny shapes (6 steps of 4 images), validated; treat as read-only."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", str(tiny_shapes), "--val", str(tiny_shapes), "--out", str(run), *TRAIN]) == 0
    return run


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_cli_train_evaluate_detect_end_to_end(trained_run, tiny_shapes, tmp_path, capsys):
    assert (trained_run / "last.pt").is_file() and (trained_run / "history.json").is_file()
    history = _load_json(trained_run / "history.json")
    assert len(history["train"]) == 6 and len(history["eval"]) == 1
    assert main(["evaluate", "--checkpoint", str(trained_run), "--data", str(tiny_shapes), "--quiet"]) == 0
    assert "AP75" in capsys.readouterr().out
    image = tiny_shapes / "images" / "000000.png"
    assert (
        main(
            [
                "detect",
                "--checkpoint",
                str(trained_run / "last.pt"),
                str(image),
                "--out",
                str(tmp_path / "det"),
                "--score",
                "0",
            ]
        )
        == 0
    )
    assert (tmp_path / "det" / "000000_detections.png").stat().st_size > 1000
    model, names = load_model(trained_run)
    assert names == ["ellipse", "rectangle", "triangle", "ring"] and not model.training


def test_cli_errors_name_the_problem(trained_run, tiny_shapes, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1
    assert "no such folder" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 1
    assert "unknown dataset format" in _error_line(capsys)
    # a checkpoint trained on 4 classes evaluated on a 1-class dataset
    one_class = tmp_path / "one"
    (one_class / "images").mkdir(parents=True)
    ann = json.loads((tiny_shapes / "annotations.json").read_text())
    ann["categories"] = ann["categories"][:1]
    ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] == 1]
    for img in ann["images"]:
        (one_class / "images" / img["file_name"]).write_bytes((tiny_shapes / "images" / img["file_name"]).read_bytes())
    (one_class / "annotations.json").write_text(json.dumps(ann))
    assert main(["evaluate", "--checkpoint", str(trained_run), "--data", str(one_class)]) == 1
    assert "trained on 4 classes" in _error_line(capsys)
    assert main(["train", "--data", str(tiny_shapes), "--out", str(trained_run), "--quiet"]) == 1
    assert "pass --resume" in _error_line(capsys)


class _Payload:
    """Unpickling this creates ``marker``: what an attacker's checkpoint would do (with worse code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "retina-edu-checkpoint-v1", "model": _Payload(marker)}, path)
    return path


def test_the_malicious_checkpoint_would_run_its_payload_if_unpickled(tmp_path):
    """The check of the next test: the payload is live (so "not run" there means refused)."""
    marker = tmp_path / "ran"
    torch.load(_malicious_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "detect", "train --resume"])
def test_a_checkpoint_holding_code_is_refused_and_nothing_runs(command, tiny_shapes, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    evil = _malicious_checkpoint(run / "last.pt", marker)
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(evil), "--data", str(tiny_shapes), "--quiet"],
        "detect": [
            "detect",
            "--checkpoint",
            str(evil),
            str(tiny_shapes / "images" / "000000.png"),
            "--out",
            str(tmp_path / "det"),
        ],
        "train --resume": ["train", "--data", str(tiny_shapes), "--out", str(run), "--resume", *TRAIN],
    }[command]
    assert main(argv) == 1
    err = _error_line(capsys)
    assert str(evil) in err and "refused" in err
    assert not marker.exists()
    assert not (tmp_path / "det").exists()


@pytest.mark.slow
def test_a_failing_final_validation_keeps_the_checkpoint_and_history(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.evaluate

    def broken_validation(*args, **kwargs):
        raise ValueError("image 3 ('000003.png') of val: cannot be read")

    monkeypatch.setattr(retina_edu.evaluate, "coco_map", broken_validation)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_shapes), "--val", str(tiny_shapes), "--out", str(run), *TRAIN]) == 1
    assert "000003.png" in _error_line(capsys)
    assert load_checkpoint(run)["step"] == 6
    assert len(_load_json(run / "history.json")["train"]) == 6


def test_val_data_with_other_classes_is_refused_before_training(trained_run, tiny_shapes, tmp_path, capsys):
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    ann = json.loads((tiny_shapes / "annotations.json").read_text())
    ann["categories"][0]["name"] = "circle"
    for img in ann["images"]:
        shutil.copy(tiny_shapes / "images" / img["file_name"], other / "images" / img["file_name"])
    (other / "annotations.json").write_text(json.dumps(ann))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_shapes), "--val", str(other), "--out", str(run), *TRAIN]) == 1
    assert "other classes" in _error_line(capsys)
    assert not (run / "last.pt").exists()


def test_an_out_that_is_a_file_fails_before_training(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.train.checkpoints
    import retina_edu.train.loop

    monkeypatch.setattr(retina_edu.train.loop, "train_step", _never_called)
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        assert main(["train", "--data", str(tiny_shapes), "--out", str(out), *TRAIN]) == 1
        assert str(tmp_path / "file") in _error_line(capsys)
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_fails_before_training(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.train.checkpoints
    import retina_edu.train.loop

    monkeypatch.setattr(retina_edu.train.loop, "train_step", _never_called)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["train", "--data", str(tiny_shapes), "--out", str(out), *TRAIN]) == 1
        assert "cannot write" in _error_line(capsys)
    finally:
        out.chmod(0o700)


def _never_called(*args, **kwargs):
    raise AssertionError("training started although the output folder is unusable")


def test_a_full_disk_is_one_line_naming_the_file(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.train.checkpoints
    import retina_edu.train.loop

    def disk_full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(retina_edu.train.checkpoints, "write_atomic", disk_full)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_shapes), "--out", str(run), *TRAIN]) == 1
    err = _error_line(capsys)
    assert str(run / "last.pt") in err and "No space left on device" in err


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.train.checkpoints
    import retina_edu.train.loop

    straight = tmp_path / "straight"
    assert main(["train", "--data", str(tiny_shapes), "--out", str(straight), *TRAIN]) == 0
    real_step, calls = retina_edu.train.loop.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C in the middle of step 3, before its optimiser step
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(retina_edu.train.loop, "train_step", interrupted_step)
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_shapes), "--out", str(run), "--checkpoint-every", "100", *TRAIN]
    assert main(argv) == 130
    err = _error_line(capsys)
    assert "after step 3 of 6" in err and str(run / "last.pt") in err and "--resume" in err
    saved = load_checkpoint(run)
    assert saved["step"] == 3 and saved["preset"]["checkpoint_every"] == 100
    monkeypatch.setattr(retina_edu.train.loop, "train_step", real_step)
    assert main([*argv, "--resume"]) == 0
    a, b = load_checkpoint(straight), load_checkpoint(run)
    assert [r["loss"] for r in a["history"]["train"]] == [r["loss"] for r in b["history"]["train"]]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


BAD_ARGUMENTS = [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--batch-size", "-1"], "--batch-size"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--workers", "-1"], "--workers"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--device", "bogus"], "--device"),
    (["train", "--device", "cuda"], "CUDA is not available"),
    (["evaluate", "--batch-size", "0"], "--batch-size"),
    (["detect", "--score", "nan"], "--score"),
    (["detect", "--score", "2"], "--score"),
    (["detect", "--device", "cuda:0"], "CUDA is not available"),
]


@pytest.mark.parametrize("extra, named", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_wrong_argument_is_one_line_exit_2_and_nothing_written(
    extra, named, tiny_shapes, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    command, rest = extra[0], extra[1:]
    argv = {
        "train": ["train", "--data", str(tiny_shapes), "--out", str(out)],
        "evaluate": ["evaluate", "--checkpoint", str(out), "--data", str(tiny_shapes)],
        "detect": ["detect", "--checkpoint", str(out), str(tiny_shapes / "images" / "000000.png"), "--out", str(out)],
    }[command]
    assert main([*argv, *rest]) == 2
    err = _error_line(capsys)
    assert err.startswith("error: ") and named in err
    assert not out.exists()


def test_detect_gives_images_with_the_same_name_their_own_outputs(trained_run, tiny_shapes, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(tiny_shapes / "images" / f"00000{'ab'.index(folder)}.png", tmp_path / folder / "x.png")
    out = tmp_path / "det"
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    assert main(["detect", "--checkpoint", str(trained_run), *images, "--out", str(out), "--score", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x_2_detections.png", "x_detections.png"]
    assert detection_file_names(["a/x.png", "b/x.png", "x_2.png", "c/x.png"]) == [
        "x_detections.png",
        "x_2_detections.png",
        "x_2_2_detections.png",
        "x_3_detections.png",
    ]


def test_resuming_on_other_data_with_the_same_classes_is_refused(trained_run, tmp_path, capsys):
    other = make_shapes(tmp_path / "other", num_images=24, image_size=96, seed=1, workers=1, progress=False)
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["train", "--data", str(other), "--out", str(run), "--resume", *TRAIN]) == 1
    assert "other data" in _error_line(capsys)
    assert load_checkpoint(run)["step"] == 6  # untouched


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
