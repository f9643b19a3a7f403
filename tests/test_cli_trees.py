"""The command line on the tree crowns (notebook 11): ``anchors``, ``train --anchor-sizes`` recorded in
the checkpoint and used by ``evaluate``/``detect``, and ``detect --tile`` for images larger than the
training size."""

from __future__ import annotations

from pathlib import Path

import pytest

from retina_edu.__main__ import main
from retina_edu.anchors import anchor_coverage, dataset_boxes
from retina_edu.data import open_dataset
from retina_edu.train import load_checkpoint, load_model

TREES = Path(__file__).resolve().parents[1] / "data" / "trees"
FITTED = (16, 32, 64, 128, 256)


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory) -> Path:
    """Two training steps on the validation image (cheap): enough to check what the run records."""
    out = tmp_path_factory.mktemp("trees") / "run"
    argv = [
        "train",
        "--data",
        str(TREES / "val"),
        "--out",
        str(out),
        "--preset",
        "cpu",
        "--epochs",
        "2",
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--quiet",
        "--anchor-sizes",
        *map(str, FITTED),
    ]
    assert main(argv) == 0
    return out


def test_anchors_prints_the_coverage_and_recommends_sizes(capsys):
    assert main(["anchors", "--data", str(TREES / "val"), "--input-scales", "1"]) == 0
    out = capsys.readouterr().out
    boxes, sizes = dataset_boxes(open_dataset(TREES / "val"))
    paper = anchor_coverage(boxes, sizes)
    assert "37 boxes" in out
    assert f"{paper.num_unmatched} have none" in out  # the paper's anchors, as anchor_coverage counts them
    assert "recommended at the images' size: --anchor-sizes" in out


def test_anchors_refuses_a_missing_folder(tmp_path, capsys):
    assert main(["anchors", "--data", str(tmp_path / "nothing")]) == 1
    assert "error:" in capsys.readouterr().err


def test_train_records_the_anchor_sizes_and_the_model_is_rebuilt_with_them(tree_run):
    state = load_checkpoint(tree_run / "last.pt")
    assert tuple(state["config"]["anchor_sizes"]) == FITTED
    assert tuple(state["preset"]["anchor_sizes"]) == FITTED
    model, names = load_model(tree_run / "last.pt")
    assert names == ["Tree"]
    assert model.anchor_generator.level_sizes[0][0] == 16.0


def test_evaluate_uses_the_checkpoints_anchors(tree_run, capsys):
    assert main(["evaluate", "--checkpoint", str(tree_run), "--data", str(TREES / "val"), "--quiet"]) == 0
    assert "AP" in capsys.readouterr().out


def test_detect_says_how_to_tile_an_image_larger_than_the_training_size(tree_run, tmp_path, capsys):
    image = str(TREES / "val" / "images" / "SOAP_061.jpg")
    assert main(["detect", "--checkpoint", str(tree_run), image, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "larger than the training size 256" in err and "--tile 256" in err
    assert (
        main(
            [
                "detect",
                "--checkpoint",
                str(tree_run),
                image,
                "--out",
                str(tmp_path / "b"),
                "--tile",
                "256",
                "--overlap",
                "64",
                "--score",
                "0",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "larger than the training size" not in captured.err
    assert (tmp_path / "b" / "SOAP_061_detections.png").is_file()


def test_detect_refuses_an_overlap_without_tiles_or_as_large_as_the_tile(tree_run, tmp_path, capsys):
    image = str(TREES / "val" / "images" / "SOAP_061.jpg")
    assert main(["detect", "--checkpoint", str(tree_run), image, "--overlap", "32"]) == 1
    assert "--tile" in capsys.readouterr().err
    assert main(["detect", "--checkpoint", str(tree_run), image, "--tile", "128", "--overlap", "128"]) == 1
    assert "smaller than --tile" in capsys.readouterr().err
