"""The checks of notebook 00's exercises (retina_edu.exercises.data): right, untouched, wrong."""

from __future__ import annotations

import pytest
import torch

from retina_edu.data import CocoDetection
from retina_edu.exercises.data import check_fraction_below, check_most_rings


@pytest.fixture(scope="module")
def dataset(tiny_shapes):
    return CocoDetection.from_folder(tiny_shapes)


def sizes(dataset):
    boxes = torch.cat([dataset.get_target(i)["boxes"] for i in range(len(dataset))]).double()
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()


def ring_counts(dataset):
    ring = dataset.classes.index("ring")
    return [int((dataset.get_target(i)["labels"] == ring).sum()) for i in range(len(dataset))]


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


def test_fraction_below_right_answer_passes(dataset, capsys):
    check_fraction_below(lambda ds, size: (sizes(ds) < size).float().mean().item(), dataset)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 1 (objects below the smallest anchor): correct, ")
    assert f"{(sizes(dataset) < 32).double().mean().item():.1%}" in out


def test_fraction_below_untouched_stub_is_not_attempted(dataset, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_fraction_below(stub, dataset)
    assert capsys.readouterr().out == "Exercise 1 (objects below the smallest anchor): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda ds, size: ((sizes(ds) ** 2) < size).double().mean().item(),  # the area, not its root
        lambda ds, size: (sizes(ds) < 32).double().mean().item(),  # ignores `size`
        lambda ds, size: 100 * (sizes(ds) < size).double().mean().item(),  # a percentage
    ],
    ids=["area", "fixed-size", "percent"],
)
def test_fraction_below_wrong_answer_says_what_without_the_answer(dataset, wrong):
    expected = (sizes(dataset) < 32).double().mean().item()
    with pytest.raises(AssertionError, match=r"^Exercise 1 \(objects below the smallest anchor\): ") as err:
        check_fraction_below(wrong, dataset)
    message = str(err.value)
    assert f"{expected:.3f}" not in message and f"{expected:.1%}" not in message
    assert f"{expected:.4g}" not in message


def test_most_rings_right_answer_passes(dataset, capsys):
    counts = ring_counts(dataset)
    check_most_rings(lambda ds: counts.index(max(counts)), dataset)
    assert capsys.readouterr().out.startswith("Exercise 2 (the image with the most rings): correct, ")


def test_most_rings_untouched_stub_is_not_attempted(dataset, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_most_rings(stub, dataset)
    assert capsys.readouterr().out == "Exercise 2 (the image with the most rings): not attempted yet\n"


class Labels:
    """The little of a dataset that check_most_rings reads: classes, len and get_target's labels."""

    classes = ["ellipse", "rectangle", "triangle", "ring"]

    def __init__(self, *labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def get_target(self, index):
        return {"labels": torch.tensor(self.labels[index], dtype=torch.int64)}


def test_most_rings_wrong_answers_say_what_without_the_answer():
    dataset = Labels([3, 0], [0, 0, 0, 3], [3, 3, 1], [1], [3, 2, 3])  # image 2 first with 2 rings
    check_most_rings(lambda ds: 2, dataset)
    with pytest.raises(AssertionError, match="image 3 holds 0 rings; another image holds more$") as err:
        check_most_rings(lambda ds: 3, dataset)  # e.g. the image with the most boxes of any class
    assert "2" not in str(err.value).split(":", 1)[1]
    with pytest.raises(AssertionError, match="ties for the most rings, but an image with a smaller index"):
        check_most_rings(lambda ds: 4, dataset)
    with pytest.raises(AssertionError, match="not an image of the dataset"):
        check_most_rings(lambda ds: 5, dataset)
    with pytest.raises(AssertionError, match="should be a whole number"):
        check_most_rings(lambda ds: 1.5, dataset)
