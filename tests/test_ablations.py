"""retina_edu.ablations: the anchor logits of Figure 4, OHEM, the cached runner and its results."""

import importlib
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import Matcher

import retina_edu.ablations
import retina_edu.train
from retina_edu import analysis
from retina_edu.ablations import (
    Ablation,
    AblationResult,
    OHEMRetinaNet,
    _split_anchor_logits,
    ablation_key,
    anchor_losses,
    evaluate_with_anchor_logits,
    hardest_share,
    load_anchor_logits,
    load_trunk,
    loss_cdf,
    make_preset,
    paired_comparison,
    run_ablation,
    run_ablations,
    summarise,
)
from retina_edu.anchors import generate_anchors
from retina_edu.data import CocoDetection
from retina_edu.evaluate import coco_map
from retina_edu.model import RetinaNet, RetinaNetConfig


def test_figure4_maths_is_the_analysis_module_reexported():
    # notebook 10 reads ab.anchor_losses / ab.loss_cdf / ab.hardest_share; tests/test_analysis.py checks them
    assert anchor_losses is analysis.anchor_losses and loss_cdf is analysis.loss_cdf
    assert hardest_share is analysis.hardest_share
    assert retina_edu.ablations.FIGURE4_GAMMAS == analysis.FIGURE4_GAMMAS


def test_the_package_reexports_every_public_name_of_its_modules():
    # notebook 10 and benchmarks/ablations.py read everything as ab.X from the package
    package = retina_edu.ablations
    for name in ("config", "figure4", "ohem", "parallel", "result", "runner", "studies"):
        module = importlib.import_module(f"retina_edu.ablations.{name}")
        assert set(module.__all__) <= set(package.__all__), module.__name__
        assert all(getattr(package, name) is getattr(module, name) for name in module.__all__)
    assert all(hasattr(package, name) for name in package.__all__)


def test_ohem_loss_keeps_positives_and_three_times_as_many_hardest_negatives():
    torch.manual_seed(0)
    model = OHEMRetinaNet(
        2,
        backbone="resnet18",
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(16, 32, 64, 128, 256),
        anchor_scales=(1.0,),
        aspect_ratios=(1.0,),
        resize=False,
    )
    anchors = torch.tensor(
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [80, 80, 90, 90], [0, 50, 10, 60]],
        dtype=torch.float32,
    )
    logits = torch.tensor([[[2.0, -1.0], [0.0, 0.0], [3.0, -5.0], [-6.0, -6.0], [1.0, 1.0], [-2.0, 0.5]]])
    deltas = torch.zeros(1, 6, 4)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    out = model.compute_loss(logits, deltas, anchors, targets)

    def ce(x, t):
        return float(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t), reduction="sum"))

    positive = ce([2.0, -1.0], [0.0, 1.0])
    negatives = sorted((ce(row, [0.0, 0.0]) for row in logits[0, 1:].tolist()), reverse=True)[:3]
    assert out["classification"].item() == pytest.approx(positive + sum(negatives), rel=1e-5)
    assert out["bbox_regression"].item() == 0.0


def test_anchor_logits_are_split_by_the_training_matcher():
    # positives: the logit of the matched box's class; negatives: every class of the background anchors
    g = torch.Generator().manual_seed(4)
    anchors = generate_anchors((64, 64))
    xy = torch.rand(2, 3, 2, generator=g) * 40
    targets = [
        {
            "boxes": torch.cat([xy[i], xy[i] + 8 + torch.rand(3, 2, generator=g) * 16], 1),
            "labels": torch.randint(0, 3, (3,), generator=g),
        }
        for i in range(2)
    ] + [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    cls_logits = torch.randn(3, len(anchors), 3, generator=g)
    pos, neg = _split_anchor_logits(cls_logits, anchors, targets, RetinaNetConfig(num_classes=3))
    expected_pos, expected_neg = [], []
    for logits, t in zip(cls_logits, targets):
        matched = (
            Matcher(0.5, 0.4, True)(torchvision.ops.box_iou(t["boxes"], anchors))
            if len(t["boxes"])
            else torch.full((len(anchors),), -1)
        )
        fg = matched >= 0
        expected_pos.append(logits[fg].gather(1, t["labels"][matched[fg]][:, None])[:, 0])
        expected_neg.append(logits[matched == -1])
    assert torch.equal(pos, torch.cat(expected_pos)) and torch.equal(neg, torch.cat(expected_neg))


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
    model = RetinaNet(
        4, backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64, anchor_sizes=(4, 8, 16, 32, 64)
    ).eval()
    metrics, logits = evaluate_with_anchor_logits(model, tiny, batch_size=5, max_negatives=None)
    reference = coco_map(model, tiny, progress=False)
    assert metrics.as_dict() == pytest.approx(reference.as_dict())
    assert logits["positive"].dim() == 1 and len(logits["positive"]) > 0
    assert logits["negative"].shape[1] == 4 and len(logits["negative"]) > 100 * len(logits["positive"])
    _, sampled = evaluate_with_anchor_logits(model, tiny, batch_size=5, max_negatives=100)
    assert sampled["negative"].shape == (100, 4)
    torch.testing.assert_close(sampled["positive"], logits["positive"])


@pytest.mark.slow
def test_second_run_with_the_same_config_trains_nothing(tiny, tmp_path, monkeypatch):
    calls = []
    real_train = retina_edu.train.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(retina_edu.train, "train", counting_train)
    first = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 1 and not first.cached
    assert first.steps == 2 and len(first.history["loss"]) == 2
    assert set(first.metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{first.key}.json", f"{first.key}.pt"]  # no temporary files left

    second = run_ablation(tiny_ablation(name="same config, other name"), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 1 and second.cached
    assert second.name == "same config, other name"
    assert second.metrics == first.metrics and second.history == first.history
    torch.testing.assert_close(load_anchor_logits(second), load_anchor_logits(first))

    third = run_ablation(tiny_ablation(seed=1), tiny, tiny, cache_dir=tmp_path)
    assert len(calls) == 2 and not third.cached


# The keys of the dict run_ablation returned and cached before AblationResult (cache version 1).
OLD_RESULT_KEYS = {
    "cache_version",
    "key",
    "name",
    "ablation",
    "preset",
    "num_train_images",
    "num_val_images",
    "metrics",
    "per_class",
    "history",
    "steps",
    "diverged_at",
    "train_seconds",
    "eval_seconds",
    "seconds",
    "device",
    "threads",
    "date",
    "versions",
    "anchor_logits",
    "weights",
    "trunk_key",
    "trunk_metrics",
}
OLD_COUNT_KEYS = {"num_positive", "num_negative", "num_negative_sampled"}  # only when the run was evaluated


def test_the_cached_json_keeps_the_old_form_and_reads_back(tiny, tmp_path):
    result = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    saved = json.loads((tmp_path / f"{result.key}.json").read_text())
    assert set(saved) == OLD_RESULT_KEYS | OLD_COUNT_KEYS
    assert saved["seconds"] == pytest.approx(saved["train_seconds"] + saved["eval_seconds"])
    back = AblationResult.from_json(saved)
    assert json.loads(json.dumps(back.to_json())) == saved and back.ablation == result.ablation
    assert (back.metrics, back.history, back.num_positive) == (result.metrics, result.history, result.num_positive)


def test_a_cache_file_in_the_old_form_is_used_without_training(tiny, tmp_path, monkeypatch):
    first = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    path = tmp_path / f"{first.key}.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k in OLD_RESULT_KEYS}  # as if never evaluated
    old["ablation"]["name"] = old["name"] = "written by an earlier version"
    path.write_text(json.dumps(old))
    monkeypatch.setattr(retina_edu.train, "train", lambda *a, **k: pytest.fail("a cached run must not train"))
    again = run_ablation(tiny_ablation(name="now"), tiny, tiny, cache_dir=tmp_path)
    assert again.cached and again.name == "now" and again.ablation == tiny_ablation(name="now")
    assert again.metrics == first.metrics and again.num_positive is None
    with pytest.raises(ValueError, match="needs the keys"):
        AblationResult.from_json({k: v for k, v in old.items() if k != "history"})


def test_a_result_reads_like_the_dict_it_replaces(tiny, tmp_path):
    result = run_ablation(tiny_ablation(keep_weights=True), tiny, tiny, cache_dir=tmp_path)
    assert result["metrics"] is result.metrics and result["history"]["loss"] == result.history["loss"]
    assert result["ablation"] == result.ablation.to_dict() and result["ablation"]["seed"] == 0
    assert result["seconds"] == result.seconds and result["cached"] is False
    assert result["weights_path"] == str(tmp_path / f"{result.key}.weights.pt")
    assert result.get("no such key", "default") == "default"
    with pytest.raises(KeyError):
        result["no such key"]
    # summarise (notebook 10, benchmarks) takes results and plain dicts alike
    plain = {"name": result.name, "metrics": {"AP": 0.5}}
    stats = summarise([result, plain])[result.name]
    assert stats["values"] == [result.metrics["AP"], 0.5] and stats["n"] == 2


def test_a_diverged_run_is_recorded_with_its_history(tiny, tmp_path, monkeypatch):
    def diverging_train(preset, data, *args, callbacks=(), **kwargs):
        history = {"train": [{"loss": 5.0, "classification": 4.0, "bbox_regression": 1.0, "lr": 0.1}], "eval": []}
        for cb in callbacks:
            cb("step", history)
        raise retina_edu.train.TrainingDiverged("the loss became nan at step 2")

    monkeypatch.setattr(retina_edu.train, "train", diverging_train)
    result = run_ablation(tiny_ablation(), tiny, tiny, cache_dir=tmp_path)
    assert result.diverged_at == 2 and result.history["loss"] == [5.0]
    assert result.metrics is None and result.anchor_logits_path is None
    assert result.num_val_images == 6  # the val data it would have been scored on
    assert json.loads((tmp_path / f"{result.key}.json").read_text())["diverged_at"] == 2


def test_a_run_on_a_pretrained_trunk_trains_only_the_subnets(tiny, tmp_path):
    trunk = tiny_ablation(name="trunk", keep_weights=True)
    run = tiny_ablation(name="heads", gamma=0.0, alpha=0.75, trunk=trunk)
    result = run_ablation(run, tiny, tiny, cache_dir=tmp_path)
    trunk_result = run_ablation(trunk, tiny, tiny, cache_dir=tmp_path)
    assert trunk_result.cached and result.trunk_key == trunk_result.key
    assert result.trunk_metrics == trunk_result.metrics
    assert result.weights_path is None and trunk_result.weights_path is not None
    assert ablation_key(run, tiny, tiny) != ablation_key(tiny_ablation(name="heads", gamma=0.0, alpha=0.75), tiny, tiny)
    # the trunk is the trunk run's, frozen; the subnets are new
    preset, _ = make_preset(run, len(tiny))
    model = RetinaNet(config=preset.model_config(4))
    state = torch.load(trunk_result.weights_path, weights_only=True)
    load_trunk(model, state, freeze=True)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(("backbone.", "fpn.")))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("class_subnet.", "box_subnet.")))
    torch.testing.assert_close(model.backbone.body.conv1.weight, state["backbone.body.conv1.weight"])


@pytest.mark.slow
def test_runs_in_worker_processes_come_back_in_order_cached_and_as_run_ablation_gives_them(tiny, tmp_path):
    trunk = tiny_ablation(name="trunk", keep_weights=True)
    runs = [
        tiny_ablation(name="cached before"),
        tiny_ablation(name="FL", seed=1, trunk=trunk),
        tiny_ablation(name="CE", gamma=0.0, alpha=0.75, seed=1, trunk=trunk),
        tiny_ablation(name="FL again", seed=1, trunk=trunk),  # the same run as "FL": trained once
        tiny_ablation(name="diverges", preset={"channels_last": False, "base_lr": 1e9}),
    ]
    before = run_ablation(runs[0], tiny, tiny, cache_dir=tmp_path)
    seen = []
    results = run_ablations(runs, tiny, tiny, cache_dir=tmp_path, processes=2, on_result=seen.append)
    assert [r.name for r in results] == [r.name for r in runs] and seen == results
    assert [r.cached for r in results] == [True, False, False, True, False]
    assert results[0].metrics == before.metrics and results[3].key == results[1].key
    assert results[1].trunk_key == run_ablation(trunk, tiny, tiny, cache_dir=tmp_path).key
    assert results[4].diverged_at is not None and results[4].metrics is None
    assert all(r.threads == 1 for r in results[1:3])  # two processes on two CPUs: one thread each
    # what the workers cached is what one run after another gives, read back
    again = run_ablations(runs, tiny, tiny, cache_dir=tmp_path, processes=1)
    assert all(r.cached for r in again) and [r.metrics for r in again] == [r.metrics for r in results]
    assert not list(tmp_path.glob("*tmp*"))


def test_a_run_that_fails_in_a_worker_is_named(tiny, tmp_path):
    # the trunk diverges (in this process): the runs that start from it fail in the workers
    trunk = tiny_ablation(name="trunk", keep_weights=True, preset={"channels_last": False, "base_lr": 1e9})
    runs = [tiny_ablation(name="fine"), tiny_ablation(name="on a diverged trunk", trunk=trunk)]
    with pytest.raises(RuntimeError, match="'on a diverged trunk' failed: ValueError: .*no weights to start"):
        run_ablations(runs, tiny, tiny, cache_dir=tmp_path, processes=2)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_ablations(runs, tiny, tiny, cache_dir=tmp_path, processes=0)


def test_a_trunk_must_keep_its_weights():
    with pytest.raises(ValueError, match="keep_weights"):
        tiny_ablation(trunk=tiny_ablation(name="trunk"))


def _runs(name, aps):
    return [{"name": name, "ablation": {"seed": seed}, "metrics": {"AP": ap}} for seed, ap in enumerate(aps)]


def test_paired_comparison_counts_seeds_with_the_papers_sign_and_flags_gaps_within_the_spread():
    clear = paired_comparison(_runs("FL", [0.30, 0.32, 0.31]) + _runs("CE", [0.20, 0.21, 0.22]), "FL", "CE")
    assert clear["same_sign"] == 3 and clear["n"] == 3 and not clear["within_spread"]
    assert clear["verdict"] == "same sign as the paper in 3/3 seeds"
    assert clear["diffs"] == pytest.approx({0: 0.10, 1: 0.11, 2: 0.09})
    assert clear["mean"] == pytest.approx(0.10) and clear["spread"] == pytest.approx(0.01)
    # every seed agrees, but the mean gap is smaller than either setting's seed-to-seed spread
    noisy = paired_comparison(_runs("a", [0.20, 0.30, 0.25]) + _runs("b", [0.19, 0.29, 0.24]), "a", "b")
    assert noisy["same_sign"] == 3 and noisy["within_spread"]
    assert noisy["verdict"] == "same sign as the paper in 3/3 seeds; within the seed spread"
    mixed = paired_comparison(_runs("a", [0.2, 0.1]) + _runs("b", [0.1, 0.2]), "a", "b")
    assert mixed["same_sign"] == 1 and mixed["verdict"].startswith("same sign as the paper in 1/2 seeds")


def test_paired_comparison_skips_diverged_runs_and_refuses_settings_without_a_shared_seed():
    diverged = {"name": "b", "ablation": {"seed": 0}, "metrics": None}
    runs = _runs("a", [0.3, 0.3]) + [diverged] + _runs("b", [0.1, 0.1])[1:]
    assert paired_comparison(runs, "a", "b")["diffs"] == pytest.approx({1: 0.2})
    with pytest.raises(ValueError, match="no seed has both"):
        paired_comparison(_runs("a", [0.3]), "a", "missing")
