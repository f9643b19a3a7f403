"""retina_edu.ablations: the Figure-4 curve, the per-anchor losses, OHEM, and the cached runner."""

import json
import math
import os

import pytest
import torch

import retina_edu.train
from retina_edu.ablations import (
    Ablation,
    OHEMRetinaNet,
    ablation_key,
    anchor_losses,
    evaluate_with_anchor_logits,
    hardest_share,
    load_anchor_logits,
    load_trunk,
    loss_cdf,
    make_preset,
    run_ablation,
    write_json_atomic,
)
from retina_edu.data import CocoDetection
from retina_edu.evaluate import coco_map
from retina_edu.losses import sigmoid_focal_loss
from retina_edu.model import RetinaNet


def test_loss_cdf_of_a_hand_computed_example():
    fraction, cumulative = loss_cdf(torch.tensor([3.0, 1.0, 0.0, 4.0, 2.0]))
    # sorted 0, 1, 2, 3, 4; cumulative sums 0, 1, 3, 6, 10; total 10
    assert fraction.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert cumulative.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.6, 1.0])


def test_loss_cdf_rejects_what_cannot_be_normalised():
    for bad in (torch.tensor([]), torch.zeros(3), torch.tensor([1.0, -1.0]), torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError):
            loss_cdf(bad)


def test_hardest_share_is_one_minus_the_cdf():
    losses = torch.tensor([3.0, 1.0, 0.0, 4.0, 2.0, 10.0, 0.5, 0.25, 7.0, 1.25])
    assert hardest_share(losses, 0.1) == pytest.approx(10 / 29)  # the largest of 10
    assert hardest_share(losses, 0.2) == pytest.approx(17 / 29)
    fraction, cumulative = loss_cdf(losses)
    assert hardest_share(losses, 0.3) == pytest.approx(1 - float(cumulative[6]))  # 7 easiest of 10
    assert hardest_share(losses, 1.0) == pytest.approx(1.0)


def test_anchor_losses_are_the_focal_loss_per_anchor_and_sharpen_with_gamma():
    g = torch.Generator().manual_seed(0)
    logits = {"positive": torch.randn(50, generator=g), "negative": torch.randn(400, 4, generator=g) - 4}
    losses = anchor_losses(logits, gammas=(0.0, 2.0))
    neg2 = sigmoid_focal_loss(logits["negative"].double(), torch.zeros(400, 4, dtype=torch.float64), None, 2.0).sum(1)
    pos0 = torch.nn.functional.binary_cross_entropy_with_logits(logits["positive"].double(), torch.ones(50, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(losses[2.0]["negative"], neg2)
    torch.testing.assert_close(losses[0.0]["positive"], pos0)
    # (1 - p_t)^γ weighs the hard ones more: the hardest tenth's share grows with γ
    assert hardest_share(losses[2.0]["negative"]) > hardest_share(losses[0.0]["negative"])


def test_ohem_loss_keeps_positives_and_three_times_as_many_hardest_negatives():
    torch.manual_seed(0)
    model = OHEMRetinaNet(2, backbone="resnet18", fpn_channels=16, head_convs=1, anchor_sizes=(16, 32, 64, 128, 256),
                          anchor_scales=(1.0,), aspect_ratios=(1.0,), resize=False)
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70],
                            [80, 80, 90, 90], [0, 50, 10, 60]], dtype=torch.float32)
    logits = torch.tensor([[[2.0, -1.0], [0.0, 0.0], [3.0, -5.0], [-6.0, -6.0], [1.0, 1.0], [-2.0, 0.5]]])
    deltas = torch.zeros(1, 6, 4)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    out = model.compute_loss(logits, deltas, anchors, targets)
    ce = lambda x, t: float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t), reduction="sum"))
    positive = ce([2.0, -1.0], [0.0, 1.0])
    negatives = sorted((ce(row, [0.0, 0.0]) for row in logits[0, 1:].tolist()), reverse=True)[:3]
    assert out["classification"].item() == pytest.approx(positive + sum(negatives), rel=1e-5)
    assert out["bbox_regression"].item() == 0.0


@pytest.fixture(scope="module")
def tiny(tiny_shapes):
    return CocoDetection.from_folder(tiny_shapes)


def tiny_ablation(**overrides):
    base = dict(name="tiny", steps=2, batch_size=4, image_size=64, val_images=6, preset={"channels_last": False})
    base.update(overrides)
    return Ablation(**base)


def test_make_preset_sizes_the_subset_to_the_budget():
    a = tiny_ablation(steps=5, batch_size=4)
    preset, n = make_preset(a, num_train=24)  # 20 images: one epoch of 5 steps
    assert (preset.epochs, n, preset.batch_size) == (1, 20, 4)
    preset, n = make_preset(tiny_ablation(steps=14, batch_size=4), num_train=24)  # 56 > 24 images: 3 epochs
    assert preset.epochs * (n // 4) == 15 and n <= 24
    assert preset.anchor_sizes == (4.0, 8.0, 16.0, 32.0, 64.0)  # Preset.cpu()'s 16..256 at 64 / 256 px
    assert preset.model_config(4).anchor_scales == a.anchor_scales


def test_the_key_changes_with_the_config_and_the_data_but_not_the_name(tiny):
    a = tiny_ablation()
    key = ablation_key(a, tiny, tiny)
    assert ablation_key(tiny_ablation(name="other"), tiny, tiny) == key
    assert ablation_key(tiny_ablation(gamma=0.0), tiny, tiny) != key
    assert ablation_key(tiny_ablation(seed=1), tiny, tiny) != key
    assert ablation_key(tiny_ablation(preset={"channels_last": False, "base_lr": 1e-3}), tiny, tiny) != key
    assert ablation_key(a, tiny, torch.utils.data.Subset(tiny, range(5))) != key


def test_unknown_preset_fields_are_refused():
    with pytest.raises(ValueError, match="unknown Preset fields"):
        tiny_ablation(preset={"learning_rate": 0.1})


def test_evaluation_pass_gives_coco_map_and_the_matched_logits(tiny):
    torch.manual_seed(0)
    model = RetinaNet(4, backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64,
                      anchor_sizes=(4, 8, 16, 32, 64)).eval()
    metrics, logits = evaluate_with_anchor_logits(model, tiny, batch_size=5, max_negatives=None)
    reference = coco_map(model, tiny, progress=False)
    assert metrics.as_dict() == pytest.approx(reference.as_dict())
    assert logits["positive"].dim() == 1 and len(logits["positive"]) > 0
    assert logits["negative"].shape[1] == 4 and len(logits["negative"]) > 100 * len(logits["positive"])
    _, sampled = evaluate_with_anchor_logits(model, tiny, batch_size=5, max_negatives=100)
    assert sampled["negative"].shape == (100, 4)
    torch.testing.assert_close(sampled["positive"], logits["positive"])


def test_second_run_with_the_same_config_trains_nothing(tiny, tmp_path, monkeypatch):
    calls = []
    real_train = retina_edu.train.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(retina_edu.train, "train", counting_train)
    first = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 1 and not first["cached"]
    assert first["steps"] == 2 and len(first["history"]["loss"]) == 2
    assert set(first["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{first['key']}.json", f"{first['key']}.pt"]  # no temporary files left

    second = run_ablation(tiny_ablation(name="same config, other name"), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 1 and second["cached"]
    assert second["name"] == "same config, other name"
    assert second["metrics"] == first["metrics"] and second["history"] == first["history"]
    torch.testing.assert_close(load_anchor_logits(second), load_anchor_logits(first))

    third = run_ablation(tiny_ablation(seed=1), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 2 and not third["cached"]


def test_a_diverged_run_is_recorded_with_its_history(tiny, tmp_path, monkeypatch):
    def diverging_train(preset, data, *args, callbacks=(), **kwargs):
        history = {"train": [{"loss": 5.0, "classification": 4.0, "bbox_regression": 1.0, "lr": 0.1}], "eval": []}
        for cb in callbacks:
            cb("step", history)
        raise retina_edu.train.TrainingDiverged("the loss became nan at step 2")

    monkeypatch.setattr(retina_edu.train, "train", diverging_train)
    result = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    assert result["diverged_at"] == 2 and result["history"]["loss"] == [5.0]
    assert result["metrics"] is None and result["anchor_logits_path"] is None
    assert json.loads((tmp_path / f"{result['key']}.json").read_text())["diverged_at"] == 2


def test_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"AP": 0.5})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(path, {"AP": 0.9})
    assert json.loads(path.read_text()) == {"AP": 0.5}  # the old result stays whole
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # and no temporary file is left
    monkeypatch.undo()
    write_json_atomic(path, {"AP": math.nan})  # NaN losses of a diverged run survive the round trip
    assert math.isnan(json.loads(path.read_text())["AP"])


def test_a_run_on_a_pretrained_trunk_trains_only_the_subnets(tiny, tmp_path):
    trunk = tiny_ablation(name="trunk", keep_weights=True)
    run = tiny_ablation(name="heads", gamma=0.0, alpha=0.75, trunk=trunk)
    result = run_ablation(run, tiny, tiny, cache_dir=tmp_path)
    trunk_result = run_ablation(trunk, tiny, tiny, cache_dir=tmp_path)
    assert trunk_result["cached"] and result["trunk_key"] == trunk_result["key"]
    assert result["trunk_metrics"] == trunk_result["metrics"]
    assert result["weights_path"] is None and trunk_result["weights_path"] is not None
    assert ablation_key(run, tiny, tiny) != ablation_key(tiny_ablation(name="heads", gamma=0.0, alpha=0.75), tiny, tiny)
    # the trunk is the trunk run's, frozen; the subnets are new
    preset, _ = make_preset(run, len(tiny))
    model = RetinaNet(config=preset.model_config(4))
    state = torch.load(trunk_result["weights_path"], weights_only=True)
    load_trunk(model, state, freeze=True)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(("backbone.", "fpn.")))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("class_subnet.", "box_subnet.")))
    torch.testing.assert_close(model.backbone.body.conv1.weight, state["backbone.body.conv1.weight"])


def test_a_trunk_must_keep_its_weights():
    with pytest.raises(ValueError, match="keep_weights"):
        tiny_ablation(trunk=tiny_ablation(name="trunk"))
