"""retina_edu.torchvision_compat: a converted torchvision RetinaNet gives the same detections and losses."""

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retina_edu.torchvision_compat import from_torchvision


@pytest.mark.parametrize(
    "builder,num_classes", [(retinanet_resnet50_fpn, 91), (retinanet_resnet50_fpn_v2, 91), (retinanet_resnet50_fpn, 5)]
)
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
    tv = retinanet_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128
    ).eval()
    ours = from_torchvision(tv).eval()
    tv.training = ours.training = True  # the loss path, with BatchNorm in eval mode on both
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 80, 100], [50, 50, 60, 58]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    with torch.no_grad():
        expected, got = tv(images, targets), ours(images, targets)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_from_torchvision_rejects_other_models():
    with pytest.raises(ValueError, match="expected a torchvision.models.detection.RetinaNet"):
        from_torchvision(torch.nn.Linear(2, 2))
