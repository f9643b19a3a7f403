"""Several ablations at once: the runs that are not cached train side by side in worker processes.

A study is a dozen short runs of a small model on small images. One run does not keep the CPU's
cores busy: the Python between the operations, decoding the PNGs and COCOeval use one core, and the
convolutions of a 128-pixel batch gain little from a second thread. Runs in separate processes, one
thread each, fill the cores instead. Measured on 2 cores (notebook 10's runs: 80 steps at 128 px,
then mAP on 100 images): one run with 2 threads, 9.6 s; two runs side by side with one thread each,
12.8 s for both, 1.5x as many runs a minute.

The results are those ``run_ablation`` gives (each run is cached the same way, by the same key), in
the order of the list; the trunks the runs start from are trained first, in this process.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..device import available_cpus, default_device
from .config import Ablation, ablation_key
from .result import AblationResult
from .runner import _cached, run_ablation

__all__ = ["MAX_PROCESSES", "run_ablations"]

MAX_PROCESSES = 4  # each process holds torch, the data and a model: about half a GB of memory

# What each worker process keeps between its runs (set once by ``_start_worker``).
_WORKER: dict[str, Any] = {}


def run_ablations(
    ablations: Sequence[Ablation],
    train_data: Dataset,
    val_data: Dataset | None,
    cache_dir: str | Path = "data/ablations",
    processes: int | None = None,
    on_result: Callable[[AblationResult], Any] | None = None,
    device: torch.device | str | None = None,
) -> list[AblationResult]:
    """Run every ablation of ``ablations`` (or read it from the cache), several at once on the CPU.

    Args:
        ablations, train_data, val_data, cache_dir: as for :func:`run_ablation`.
        processes: how many runs train at once, each in its own process with an equal share of
            the CPUs' threads. ``None``: the CPUs this process may use, at most
            :data:`MAX_PROCESSES` and at most the runs to train; ``1``: one after another in this
            process, as :func:`run_ablation` does. On a GPU the runs always go one after another.
        on_result: called with each result in the order of ``ablations``, as soon as it and every
            result before it are ready (a notebook prints a line per run with it).
        device: as for :func:`run_ablation`.

    Returns:
        The results, in the order of ``ablations``.

    Raises:
        RuntimeError: a run failed in a worker process (the message names the ablation); the runs
            that finished before are cached, the others are stopped.
    """
    if processes is not None and processes < 1:
        raise ValueError(f"processes must be >= 1 (or None for the CPUs available), got {processes}")
    cache_dir = Path(cache_dir)
    device = torch.device(device) if device is not None else default_device()
    keys = [ablation_key(a, train_data, val_data) for a in ablations]
    todo = _runs_to_train(ablations, keys, train_data, val_data, cache_dir, device)

    def cached(ablation: Ablation, key: str) -> AblationResult:  # the key is known: no second hash
        return _cached(ablation, key, cache_dir) or run_ablation(ablation, train_data, val_data, cache_dir, device)

    results = _InOrder(ablations, keys, todo, cached, on_result)
    workers = _processes(processes, len(todo), device)
    if workers <= 1:
        for key, ablation in todo.items():
            results.finished(key, run_ablation(ablation, train_data, val_data, cache_dir, device))
    else:
        for key, result in _train_in_workers(todo, workers, train_data, val_data, cache_dir):
            results.finished(key, result)
    return results.emitted


def _runs_to_train(
    ablations: Sequence[Ablation],
    keys: list[str],
    train_data: Dataset,
    val_data: Dataset | None,
    cache_dir: Path,
    device: torch.device,
) -> dict[str, Ablation]:
    """The runs not cached, by key (the first ablation of each key); the trunks they start from are
    trained first, here."""
    uncached = [(a, k) for a, k in zip(ablations, keys) if _cached(a, k, cache_dir) is None]
    trunks = {ablation_key(a.trunk, train_data, val_data): a.trunk for a, _ in uncached if a.trunk}
    for trunk in trunks.values():
        run_ablation(trunk, train_data, val_data, cache_dir, device)
    todo: dict[str, Ablation] = {}
    for ablation, key in uncached:
        if key not in trunks:  # a trunk in the list itself is cached now
            todo.setdefault(key, ablation)
    return todo


class _InOrder:
    """The results in the order of the list, each handed to ``on_result`` as soon as it and every
    result before it are ready. ``cached(ablation, key)`` reads a result from the cache."""

    def __init__(self, ablations, keys, todo, cached, on_result):
        self.ablations, self.keys, self.todo, self.cached, self.on_result = ablations, keys, todo, cached, on_result
        self.done, self.fresh, self.emitted = set(keys) - todo.keys(), {}, []
        self.finished()  # the results before the first run to train: from the cache

    def finished(self, key: str | None = None, result: AblationResult | None = None) -> None:
        if key is not None:
            self.done.add(key)
            self.fresh[key] = result
        while len(self.emitted) < len(self.ablations) and self.keys[len(self.emitted)] in self.done:
            i = len(self.emitted)
            ablation, key = self.ablations[i], self.keys[i]
            result = self.fresh.pop(key, None) if self.todo.get(key) is ablation else None
            if result is None:  # cached before, or a second name for a run just trained
                result = self.cached(ablation, key)
            self.emitted.append(result)
            if self.on_result is not None:
                self.on_result(result)


def _train_in_workers(todo: dict[str, Ablation], workers: int, train_data, val_data, cache_dir: Path):
    """Yield ``(key, result)`` for each run of ``todo``, in its order, trained by ``workers`` processes."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
    threads = max(1, available_cpus() // workers)
    start = (threads, train_data, val_data, str(cache_dir))
    # Workers ignore Ctrl-C: this process handles it, and leaving the block terminates them (each
    # result is written atomically, so a stopped run leaves nothing half-written).
    with context.Pool(workers, initializer=_start_worker, initargs=start) as pool:
        for key, outcome in zip(todo, pool.imap(_run_in_worker, todo.values())):
            if isinstance(outcome, BaseException):
                name = todo[key].name
                raise RuntimeError(f"ablation {name!r} failed: {type(outcome).__name__}: {outcome}") from outcome
            yield key, outcome


def _processes(processes: int | None, runs: int, device: torch.device) -> int:
    """How many worker processes to start for ``runs`` runs (1: none, train here)."""
    if device.type != "cpu" or runs <= 1:
        return 1
    return min(processes or min(available_cpus(), MAX_PROCESSES), runs)


def _start_worker(threads: int, train_data: Dataset, val_data: Dataset | None, cache_dir: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _WORKER.update(train_data=train_data, val_data=val_data, cache_dir=cache_dir)


def _run_in_worker(ablation: Ablation) -> AblationResult | BaseException:
    """One run in a worker process; an exception is returned (pickled back) rather than raised."""
    try:
        return run_ablation(ablation, _WORKER["train_data"], _WORKER["val_data"], _WORKER["cache_dir"], "cpu")
    except Exception as e:  # noqa: BLE001 (the parent re-raises it with the ablation's name)
        return e
