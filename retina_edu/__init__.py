"""retina-edu: RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), built piece by piece.

Modules, in the order the course meets them (a lower module never imports a higher one):

    data/              shapes generator, COCO and VOC readers (one base), image checks, transforms, downloads
    boxes              box formats, IoU, BoxCoder
    anchors            anchor grids for P3-P7
    matching           anchors -> ground truth (0.5 / 0.4, ignore band, low-quality matches), label_anchors
    losses             focal loss, box losses, the RetinaNet loss, the OHEM loss (Table 1d)
    model              backbone + FPN + subnets + prior init
    torchvision_compat a torchvision RetinaNet -> ours, weights and all
    postprocess        decode, per-level top-k, NMS
    evaluate           COCO mAP with pycocotools
    analysis           the numbers the figures draw (focal-loss curves, loss shares, match counts, Figure 4)

On top, importing downwards:

    device             CPU/GPU, bfloat16, several processes (torchrun), eval_mode
    files              atomic writes: a crash never leaves half a file
    train              presets, the loop as named steps, checkpoints, DDP
    ablations/         the paper's Table 1 and Figure 4 at small scale
    viz/               figures and widgets, one module per notebook topic (draws, never computes)
    __main__           python -m retina_edu {shapes,train,evaluate,detect}
"""

__version__ = "0.1.0"
