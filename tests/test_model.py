"""retina_edu.model: shapes, the prior init, torchvision equivalence, the calling convention."""

import math
import urllib.error

import pytest
import torch
import torchvision

from retina_edu.model import (
    FPN,
    PRIOR_PROBABILITY,
    Backbone,
    RetinaNet,
    RetinaNetConfig,
    prior_bias,
)


def small_model(**kwargs):
    torch.manual_seed(0)
    defaults = dict(backbone="resnet18", fpn_channels=32, resize=False, size_divisible=32)
    defaults.update(kwargs)
    return RetinaNet(3, **defaults)


@pytest.mark.parametrize("size", [(256, 256), (200, 300), (512, 384)])
@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_pyramid_levels_have_strides_8_to_128(size, p6_from):
    backbone = Backbone("resnet18")
    fpn = FPN(backbone.out_channels, 16, p6_from)
    with torch.no_grad():
        feats = fpn(*backbone(torch.zeros(1, 3, *size)))
    expected = [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in (8, 16, 32, 64, 128)]
    assert [tuple(f.shape[-2:]) for f in feats] == expected
    assert all(f.shape[1] == 16 for f in feats)


def test_p6_comes_from_c5_in_the_paper_and_p5_in_torchvision():
    backbone = Backbone("resnet18")
    assert FPN(backbone.out_channels, 64, "c5").p6.in_channels == 512
    assert FPN(backbone.out_channels, 64, "p5").p6.in_channels == 64


def test_mobilenet_backbone_gives_strides_8_16_32():
    backbone = Backbone("mobilenet_v3_large")
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    assert [f.shape[1] for f in feats] == list(backbone.out_channels)


def test_prior_init_sets_class_bias_and_small_weights():
    model = small_model()
    assert abs(prior_bias(0.01) - (-math.log(99))) < 1e-12
    torch.testing.assert_close(model.class_subnet.out.bias, torch.full_like(model.class_subnet.out.bias, prior_bias()))
    assert model.box_subnet.out.bias.abs().max() == 0
    for subnet in (model.class_subnet, model.box_subnet):
        w = torch.cat([m.weight.flatten() for m in subnet.modules() if isinstance(m, torch.nn.Conv2d)])
        assert abs(w.std().item() - 0.01) < 0.001


def test_initial_scores_are_the_prior_probability():
    model = small_model().eval()
    batch, *_ = model.preprocess(torch.rand(1, 3, 64, 64))
    with torch.no_grad():
        cls_logits, *_ = model.head_outputs(batch)
    probs = cls_logits.sigmoid()
    assert abs(probs.mean().item() - PRIOR_PROBABILITY) < 0.002


def test_head_outputs_have_one_row_per_anchor():
    model = small_model().eval()
    batch, *_ = model.preprocess(torch.rand(2, 3, 96, 128))
    with torch.no_grad():
        cls_logits, box_deltas, anchors, per_level = model.head_outputs(batch)
    assert cls_logits.shape == (2, anchors.shape[0], 3) and box_deltas.shape == (2, anchors.shape[0], 4)
    assert sum(per_level) == anchors.shape[0]


def test_train_mode_returns_the_two_losses_and_they_backpropagate():
    model = small_model().train()
    targets = [
        {"boxes": torch.tensor([[10.0, 12, 60, 70]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    losses = model(torch.rand(2, 3, 96, 96), targets)
    assert set(losses) == {"classification", "bbox_regression"}
    sum(losses.values()).backward()
    assert model.class_subnet.out.weight.grad is not None


def test_batched_tensor_and_list_give_the_same_detections():
    model = small_model(score_thresh=0.0).eval()
    with torch.no_grad():
        model.class_subnet.out.bias.fill_(-1.0)
        images = torch.rand(2, 3, 96, 96)
        a, b = model(images), model(list(images))
    for x, y in zip(a, b):
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["scores"], y["scores"])


def test_boxes_come_back_in_the_input_image_pixels():
    model = small_model(resize=True, min_size=128, max_size=256).eval()
    with torch.no_grad():
        model.class_subnet.out.bias.fill_(0.0)
        (det,) = model([torch.rand(3, 64, 80)])
    assert det["boxes"][:, 0::2].max() <= 80 and det["boxes"][:, 1::2].max() <= 64


def test_image_with_nothing_returns_empty_tensors():
    model = small_model().eval()
    with torch.no_grad():
        model.class_subnet.out.bias.fill_(-30.0)
        (det,) = model(torch.rand(1, 3, 64, 64))
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].dtype == torch.int64


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: m([torch.rand(1, 64, 64)]), r"image 0 must be a Tensor\[3, H, W\]"),
        (lambda m: m(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)), "expects floats in"),
        (lambda m: m.train()(torch.rand(1, 3, 64, 64)), "needs targets"),
        (lambda m: m([]), "images is empty"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    model = small_model().eval()
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="unknown backbone"):
        RetinaNet(3, backbone="vgg16")
    with pytest.raises(ValueError, match="no background slot"):
        RetinaNet(0)


def test_config_round_trips_through_a_dict():
    config = RetinaNetConfig(num_classes=4, backbone="resnet18", fpn_channels=64, anchor_sizes=(16, 32, 64, 128, 256))
    assert RetinaNetConfig.from_dict(config.to_dict()) == config


def test_offline_weights_give_a_message_that_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.resnet, "_resnet", offline)
    with pytest.raises(RuntimeError, match="pretrained_backbone=False"):
        RetinaNet(3, backbone="resnet18", pretrained_backbone=True)


def test_preprocess_gives_named_fields_that_unpack_as_a_tuple():
    model = small_model().eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 50, 40)]
    pre = model.preprocess(images)
    batch, sizes, original_sizes, targets = pre
    assert batch is pre.batch and targets is None
    assert sizes == original_sizes == [(64, 80), (50, 40)]
    assert batch.shape == (2, 3, 64, 96)  # padded to a multiple of 32
    heads = model.head_outputs(batch)
    assert heads.cls_logits.shape[:2] == heads.box_deltas.shape[:2] == (2, heads.anchors.shape[0])
    assert sum(heads.num_per_level) == heads.anchors.shape[0]


def test_postprocess_thresholds_are_keyword_only():
    from retina_edu.postprocess import postprocess_detections

    with pytest.raises(TypeError):
        postprocess_detections(torch.zeros(1, 4, 2), torch.zeros(1, 4, 4), torch.zeros(4, 4), [4], [(8, 8)], 0.5)
