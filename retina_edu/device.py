"""Where the computation runs: the device, several processes (torchrun), mixed precision.

Nothing here knows about detection: the module imports only torch, so that any module of the
package (``model``, ``evaluate``, ``train``) may use it without importing upwards.

    available_cpus()            the CPUs this process may run on (a container's limit, not the machine's)
    default_device()            cuda (the local rank's GPU under torchrun) when available, else cpu
    setup_distributed(device)   join torchrun's process group -> (rank, world size)
    average_buffers(model, n)   BatchNorm statistics averaged over the processes
    mixed_precision_dtype(dev)  bfloat16 / float16 / None (float32) for torch.autocast
    eval_mode(model)            ``with eval_mode(model):`` eval inside, the old mode restored after
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "available_cpus",
    "average_buffers",
    "cpu_bf16_speedup",
    "cpu_has_native_bf16",
    "default_device",
    "dist_is_on",
    "eval_mode",
    "is_main_process",
    "mixed_precision_dtype",
    "setup_distributed",
]


# ---------------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------------
def available_cpus() -> int:
    """CPUs this process may run on (``os.cpu_count()`` counts the machine's, even in a limited container)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_device() -> torch.device:
    """CUDA when available (under torchrun: the GPU of this process's ``LOCAL_RANK``), else the CPU."""
    if dist_is_on() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the ``with`` block, then back in the mode it was in.

    Replaces the ``was_training = model.training; try: ... finally: model.train(was_training)``
    pattern; the mode is restored even when the block raises.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun)
# ---------------------------------------------------------------------------------------------
def dist_is_on() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process should print and write files: rank 0, or the only process.

    Reads torchrun's ``RANK`` from the environment, so it works before the process group exists.
    """
    return int(os.environ.get("RANK", "0")) == 0


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; return ``(rank, world)``.

    NCCL between GPUs, gloo between CPU processes. Without torchrun: ``(0, 1)`` and nothing joined.
    """
    if not dist_is_on():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def average_buffers(model: nn.Module, world: int) -> None:
    """Average BatchNorm's running statistics over the processes, so that every rank ends with the
    same model (DDP keeps parameters in sync, but each process updates its own running stats)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= world


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------
def mixed_precision_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 on GPUs that support it (else float16), bfloat16
    on CPUs that compute it natively, otherwise None (float32)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, read from /proc/cpuinfo).

    A flag rather than a timing, so that the same machine always makes the same choice (and the
    same training run). ``cpu_bf16_speedup()`` measures what it buys."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_CPU_BF16_SPEEDUP: float | None = None


def cpu_bf16_speedup() -> float:
    """How much faster a conv forward+backward runs under bfloat16 autocast than in float32 on
    this CPU (measured once, ~1 s). CPUs with native bfloat16 (AVX512-BF16, AMX) gain 2x or more;
    older ones lose, so mixed precision on the CPU is only used where it is measured to help."""
    global _CPU_BF16_SPEEDUP
    if _CPU_BF16_SPEEDUP is None:
        conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
        x = torch.randn(8, 64, 32, 32)

        def best_of(bf16: bool) -> float:
            times = []
            for _ in range(4):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = conv(x)
                y.float().sum().backward()
                times.append(time.perf_counter() - start)
            return min(times[1:])

        try:
            _CPU_BF16_SPEEDUP = best_of(False) / best_of(True)
        except RuntimeError:  # no bfloat16 kernels at all
            _CPU_BF16_SPEEDUP = 0.0
    return _CPU_BF16_SPEEDUP
