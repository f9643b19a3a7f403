"""retina_edu.device: the device, torchrun's environment, mixed precision, eval_mode."""

import pytest
import torch
from torch import nn

import retina_edu.train
from retina_edu import device
from retina_edu.device import (
    default_device,
    dist_is_on,
    eval_mode,
    is_main_process,
    mixed_precision_dtype,
    setup_distributed,
)


def test_eval_mode_puts_the_model_in_eval_and_restores_its_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    with eval_mode(model) as inside:
        assert inside is model and not model.training and not model[1].training
    assert model.training and model[1].training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training  # an eval model stays in eval


def test_eval_mode_restores_the_mode_when_the_block_raises():
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training


def test_torchrun_environment_decides_rank_and_world(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not dist_is_on() and is_main_process()
    assert setup_distributed(torch.device("cpu")) == (0, 1)  # nothing joined without torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert dist_is_on() and not is_main_process()


def test_default_device_is_cuda_only_when_available(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")


def test_mixed_precision_is_off_when_disabled_and_bf16_only_where_native(monkeypatch):
    assert mixed_precision_dtype(torch.device("cpu"), enabled=False) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert mixed_precision_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert mixed_precision_dtype(torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(
    "name",
    [
        "default_device",
        "dist_is_on",
        "is_main_process",
        "setup_distributed",
        "average_buffers",
        "mixed_precision_dtype",
        "cpu_has_native_bf16",
        "cpu_bf16_speedup",
    ],
)
def test_train_re_exports_what_moved_to_device(name):
    """Notebooks and ablations import these from retina_edu.train: they must be the same objects."""
    assert getattr(retina_edu.train, name) is getattr(device, name)
