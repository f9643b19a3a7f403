"""retina-edu: RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), built piece by piece.

Modules, in the order the course meets them (a lower module never imports a higher one):

    data        shapes generator, COCO and VOC readers, transforms, downloads
    boxes       box formats, IoU, BoxCoder
    anchors     anchor grids for P3-P7
    matching    anchors -> ground truth (0.5 / 0.4, ignore band, low-quality matches)
    losses      focal loss, box losses, the RetinaNet loss
    model       backbone + FPN + subnets + prior init; from_torchvision()
    postprocess decode, per-level top-k, NMS
    evaluate    COCO mAP with pycocotools
    train       presets, the loop, checkpoints, DDP
    viz         drawing and widgets
"""

__version__ = "0.1.0"
