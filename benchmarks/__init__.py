"""Benchmarks: retina_edu side by side with torchvision's RetinaNet (``make bench``)."""
