"""retina_edu.model: shapes, the prior init, torchvision equivalence, the calling convention."""

import math
import urllib.error

import pytest
import torch
import torchvision
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina_edu.model import (
    FPN,
    PRIOR_PROBABILITY,
    Backbone,
    RetinaNet,
    RetinaNetConfig,
    from_torchvision,
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
    targets = [{"boxes": torch.tensor([[10.0, 12, 60, 70]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
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


# ---------------------------------------------------------------------------------------------
# torchvision equivalence
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("builder,num_classes", [(retinanet_resnet50_fpn, 91), (retinanet_resnet50_fpn_v2, 91), (retinanet_resnet50_fpn, 5)])
def test_from_torchvision_gives_the_same_detections(builder, num_classes):
    torch.manual_seed(0)
    tv = builder(weights=None, weights_backbone=None, num_classes=num_classes, min_size=320, max_size=512).eval()
    with torch.no_grad():  # random heads score ~0.01 everywhere: raise them so there is something to detect
        tv.head.classification_head.cls_logits.bias.fill_(-2.0)
    ours = from_torchvision(tv).eval()
    assert ours.config.p6_from == ("p5" if builder is retinanet_resnet50_fpn else "c5")
    images = [torch.rand(3, 300, 400), torch.rand(3, 240, 320)]
    with torch.no_grad():
        expected, got = tv(images), ours(images)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert len(e["boxes"]) > 0, "the test needs detections to compare"
        assert torch.equal(e["labels"], g["labels"]), f"image {i}"
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-5)


def test_from_torchvision_gives_the_same_training_losses():
    torch.manual_seed(1)
    tv = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128).eval()
    ours = from_torchvision(tv).eval()
    tv.training = ours.training = True  # the loss path, with BatchNorm in eval mode on both
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20, 80, 100], [50, 50, 60, 58]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    with torch.no_grad():
        expected, got = tv(images, targets), ours(images, targets)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_from_torchvision_rejects_other_models():
    with pytest.raises(ValueError, match="expected a torchvision.models.detection.RetinaNet"):
        from_torchvision(torch.nn.Linear(2, 2))
