"""retina_edu.train: it learns, resumes exactly, stops on NaN without saving broken weights, checks its settings,
and runs under torchrun. The command line around it is tested in test_cli.py."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from retina_edu.data import CocoDetection
from retina_edu.evaluate import coco_map
from retina_edu.model import RetinaNetConfig
from retina_edu.train import (
    Preset,
    TrainingDiverged,
    TrainingInterrupted,
    choose_preset,
    data_fingerprint,
    find_checkpoint,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_preset(**overrides):
    """The CPU preset shrunk for tests: small batch, no workers, frequent checkpoints."""
    base = dict(
        batch_size=4, num_workers=0, epochs=2, warmup_steps=2, checkpoint_every=2, channels_last=False, image_size=96
    )
    base.update(overrides)
    return Preset.cpu(**base)


@pytest.fixture(scope="module")
def tiny(tiny_shapes):
    return CocoDetection.from_folder(tiny_shapes)


@pytest.mark.slow
def test_a_short_run_lowers_the_loss_and_finds_objects(tiny):
    torch.set_num_threads(2)
    preset = tiny_preset(epochs=30, batch_size=8, base_lr=4e-3, warmup_steps=5)
    result = train(preset, tiny, progress=False)
    losses = [r["loss"] for r in result.history["train"]]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    metrics = coco_map(result.model, tiny, progress=False)  # on the training images: it must have learned them
    assert metrics.AP50 > 0.1, metrics


@pytest.mark.slow
def test_resume_gives_the_same_losses_and_weights_as_an_uninterrupted_run(tiny, tmp_path):
    preset = tiny_preset(epochs=2)
    straight = train(preset, tiny, out_dir=tmp_path / "a", progress=False)
    first = train(preset, tiny, out_dir=tmp_path / "b", progress=False, max_steps=5)  # stops mid-epoch
    assert len(first.history["train"]) == 5
    resumed = train(preset, tiny, out_dir=tmp_path / "b", progress=False, resume=True)
    assert [r["loss"] for r in resumed.history["train"]] == [r["loss"] for r in straight.history["train"]]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Poisoned(torch.utils.data.Dataset):
    """The tiny dataset with one image full of NaN."""

    def __init__(self, base, bad):
        self.base, self.bad, self.classes = base, bad, base.classes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, target = self.base[i]
        return (torch.full_like(image, float("nan")), target) if i in self.bad else (image, target)


def test_nan_guard_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    preset = tiny_preset(epochs=1, checkpoint_every=1, hflip=False)
    clean = train(preset, tiny, progress=False, max_steps=3)  # which images come at step 4?
    order = list(torch.utils.data.DistributedSampler(tiny, num_replicas=1, rank=0, shuffle=True, seed=preset.seed))
    bad = set(order[12:16])  # the fourth batch of 4
    with pytest.raises(TrainingDiverged, match=r"at step 4 \(epoch 1, learning rate") as err:
        train(preset, Poisoned(tiny, bad), out_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "last good checkpoint" in message
    assert f"dataset index {', '.join(map(str, sorted(bad)))}" in message  # which images are bad
    state = load_checkpoint(tmp_path)
    assert state["step"] == 3 and len(clean.history["train"]) == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_guard_with_clean_images_suggests_what_to_try(tiny, monkeypatch):
    import retina_edu.train.loop as train_module  # train_step is looked up there

    real_step = train_module.train_step

    def exploding_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        return {**out, "loss": torch.tensor(float("inf"))}

    monkeypatch.setattr(train_module, "train_step", exploding_step)
    with pytest.raises(TrainingDiverged, match=r"at step 1 .*No checkpoint was written yet.*lower learning rate"):
        train(tiny_preset(epochs=1), tiny, progress=False)


def test_checkpoints_are_written_atomically(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": "x", "a": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"format": "x", "a": Unpicklable()})
    assert torch.load(path, weights_only=False)["a"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temporary file is left


def test_loading_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        load_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="not a retina-edu checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_learning_rate_schedule_warms_up_then_decays():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.001)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert [lr_factor(s, 90, 0, "step") for s in (59, 60, 80)] == pytest.approx([1.0, 0.1, 0.01])
    assert Preset(base_lr=0.01, batch_size=4).lr() == pytest.approx(0.0025)  # linear scaling rule
    assert Preset(base_lr=0.01, batch_size=8).lr(num_processes=4) == pytest.approx(0.02)


def test_preset_is_chosen_from_the_hardware():
    preset, reason = choose_preset(device="cpu")
    assert preset.name == "cpu" and "no GPU" in reason
    assert choose_preset("gpu")[0].backbone == "resnet50"
    with pytest.raises(ValueError, match="unknown preset"):
        choose_preset("tpu")


def run_torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_with_two_gloo_processes_trains_and_keeps_ranks_identical(tiny_shapes, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch, torch.distributed as dist
        from retina_edu.data import CocoDetection
        from retina_edu.train import Preset, train
        data = CocoDetection.from_folder({str(tiny_shapes)!r})
        preset = Preset.cpu(batch_size=4, num_workers=0, epochs=3, warmup_steps=2, channels_last=False, image_size=96)
        result = train(preset, data, out_dir={str(tmp_path / "run")!r}, progress=False)
        torch.save(result.model.state_dict(), f"{tmp_path}/rank{{dist.get_rank()}}.pt")
        print("world", dist.get_world_size(), "steps", len(result.history["train"]))
    """)
    )
    proc = run_torchrun(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2 steps 9" in proc.stdout  # 24 images / 2 processes / 4 per batch = 3 steps x 3 epochs
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    history = json.loads((tmp_path / "run" / "history.json").read_text())["train"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_nan_guard_never_saves_non_finite_weights_and_names_the_good_checkpoint(tiny, tmp_path, monkeypatch):
    """A finite loss can still come with an update that breaks the weights (a huge learning rate):
    the checkpoint after it must not be written, and the message must name the one before."""
    import retina_edu.train.loop as train_module  # train_step is looked up there

    real_step, calls = train_module.train_step, []

    def breaking_step(model, *args, **kwargs):
        out = real_step(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(train_module, "train_step", breaking_step)
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite by step 2") as err:
        train(tiny_preset(epochs=1, checkpoint_every=1), tiny, out_dir=tmp_path, progress=False)
    assert f"The last good checkpoint is {tmp_path / 'last.pt'}" in str(err.value)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_guard_says_there_is_no_good_checkpoint_when_the_first_one_would_be_broken(tiny, tmp_path, monkeypatch):
    import retina_edu.train.loop as train_module  # train_step is looked up there

    real_step = train_module.train_step

    def breaking_step(model, *args, **kwargs):
        out = real_step(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(train_module, "train_step", breaking_step)
    with pytest.raises(TrainingDiverged, match="No checkpoint was written yet"):
        train(tiny_preset(epochs=1, checkpoint_every=1), tiny, out_dir=tmp_path, progress=False)
    assert find_checkpoint(tmp_path) is None


def test_checkpoints_open_with_weights_only(tiny, tmp_path):
    """Everything a checkpoint holds (the random generators' states included) is tensors or plain data."""
    train(tiny_preset(epochs=1), tiny, out_dir=tmp_path, progress=False, max_steps=2)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["data"] == data_fingerprint(tiny)


def test_resume_from_names_the_checkpoint_and_resume_true_finds_it(tiny, tmp_path):
    preset = tiny_preset(epochs=1)
    assert find_checkpoint(tmp_path / "a") is None
    first = train(preset, tiny, out_dir=tmp_path / "a", progress=False, max_steps=2)
    assert find_checkpoint(tmp_path / "a") == first.checkpoint == tmp_path / "a" / "last.pt"
    moved = train(preset, tiny, progress=False, resume_from=first.checkpoint, max_steps=4)
    found = train(preset, tiny, out_dir=tmp_path / "a", progress=False, resume=True, max_steps=4)
    assert len(moved.history["train"]) == len(found.history["train"]) == 4
    assert [r["loss"] for r in moved.history["train"]] == [r["loss"] for r in found.history["train"]]
    fresh = train(preset, tiny, out_dir=tmp_path / "b", progress=False, resume=True, max_steps=1)  # nothing to resume
    assert fresh.history["train"][0]["loss"] == first.history["train"][0]["loss"]


def test_out_dir_for_a_model_without_config_is_an_error(tiny, tmp_path):
    model = train(tiny_preset(epochs=1), tiny, progress=False, max_steps=1).model
    model.config = None
    with pytest.raises(ValueError, match="no .config"):
        train(tiny_preset(epochs=1), tiny, out_dir=tmp_path / "run", progress=False, model=model)
    assert not (tmp_path / "run").exists()


def test_an_interrupt_inside_a_step_saves_nothing_half_done(tiny, tmp_path, monkeypatch):
    """A KeyboardInterrupt that cuts a step short (a second Ctrl-C) must not leave a checkpoint of a
    half-updated model: the message names the last good one instead."""
    import retina_edu.train.loop as train_module  # train_step is looked up there

    real_step, calls = train_module.train_step, []

    def cut_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", cut_step)
    with pytest.raises(TrainingInterrupted, match=r"during step 3.*last good checkpoint") as err:
        train(tiny_preset(epochs=1, checkpoint_every=2), tiny, out_dir=tmp_path, progress=False)
    assert isinstance(err.value, KeyboardInterrupt)
    assert load_checkpoint(tmp_path)["step"] == 2


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("optimizer", "adam", "('sgd', 'adamw')"),
        ("schedule", "linear", "('step', 'cosine', 'constant')"),
        ("epochs", 0, ">= 1"),
        ("batch_size", -1, ">= 1"),
        ("batch_size", 2.5, ">= 1"),
        ("base_lr", 0.0, "(0, inf)"),
        ("base_lr", float("nan"), "(0, inf)"),
        ("momentum", 1.0, "[0, 1)"),
        ("grad_clip", -1.0, "or None"),
        ("alpha", 1.5, "[0, 1]"),
        ("checkpoint_every", 0, ">= 1"),
        ("model_overrides", {"gama": 2.0}, "not RetinaNetConfig fields"),
    ],
)
def test_preset_refuses_bad_settings_saying_what_is_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=rf"Preset\.{field}") as err:
        Preset.cpu(**{field: value})
    assert allowed in str(err.value)


def test_preset_model_config_passes_every_model_setting_on():
    """The field-by-field copy it replaced, written out: the derived config must equal it."""
    for preset in (Preset.cpu(), Preset.gpu(gamma=0.0, alpha=None, model_overrides={"box_loss": "l1"}), Preset()):
        expected = RetinaNetConfig(
            num_classes=3,
            backbone=preset.backbone,
            pretrained_backbone=preset.pretrained_backbone,
            fpn_channels=preset.fpn_channels,
            head_convs=preset.head_convs,
            head_norm=preset.head_norm,
            anchor_sizes=tuple(preset.anchor_sizes),
            resize=True,
            min_size=preset.image_size,
            max_size=preset.image_size,
            gamma=preset.gamma,
            alpha=preset.alpha,
            prior_probability=preset.prior_probability,
            **preset.model_overrides,
        )
        assert preset.model_config(3) == expected


# ---------------------------------------------------------------------------------------------
# A time budget: train(minutes=...) (timed against a fake clock: no assertion depends on this machine)
# ---------------------------------------------------------------------------------------------
class FakeClock:
    """A clock that advances ``dt`` seconds each time it is read: every timed step "takes" ``dt``."""

    def __init__(self, dt):
        self.now, self.dt = 0.0, dt

    def __call__(self):
        self.now += self.dt
        return self.now


def test_steps_in_budget_leave_room_for_validation_and_never_undo_steps():
    from retina_edu.train import BUDGET_SAFETY, _steps_in_budget

    # 60 s, 10 s gone, 1 s per step, a 5 s validation at the end: the rest of 60 * 0.97 s in steps
    assert _steps_in_budget(60, 10, 10, 1.0, 5.0, 100, 0) == 10 + int(60 * BUDGET_SAFETY - 10 - 5)
    # one validation every epoch of 10 steps costs 5 s each
    with_evals = _steps_in_budget(60, 10, 10, 1.0, 5.0, 10, 1)
    assert with_evals < _steps_in_budget(60, 10, 10, 1.0, 5.0, 10, 0) - 10
    assert _steps_in_budget(60, 100, 10, 1.0, 5.0, 100, 0) == 10  # over budget already: stop where it is


def test_a_time_budget_fits_the_steps_to_the_clock_and_runs_the_whole_schedule(tiny, tmp_path, monkeypatch, capsys):
    import retina_edu.train.budget as train_module  # the budget's clock lives there

    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))  # 1 s per step
    preset = tiny_preset(warmup_steps=4, epochs=1)  # epochs is 6 steps: the budget decides instead
    result = train(preset, tiny, out_dir=tmp_path, progress=False, minutes=0.25)
    plan = load_checkpoint(tmp_path)["plan"]
    steps = len(result.history["train"])
    assert plan["steps"] == steps and plan["step_s"] == 1.0 and plan["batch_size"] == 4
    assert plan["checkpoint_s"] == 1.0  # one checkpoint saved and timed (as a step, on this clock)
    per_step = plan["step_s"] + plan["checkpoint_s"] / preset.checkpoint_every  # its share of the checkpoints
    assert steps * per_step <= 15 < (steps + 3) * per_step  # it fits in the 15 s, and fills them
    lrs = [r["lr"] for r in result.history["train"]]
    assert max(lrs) == pytest.approx(preset.lr(), rel=0.05)  # the warmup reached the full rate
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # and the cosine decay its end
    out = capsys.readouterr().out
    assert f"about {steps} steps of batch 4 in 0.25 minutes on this machine" in out
    assert f"trained {steps} steps in" in out
    # the cell run again (notebook 08): the finished plan is loaded, and the message says so
    again = train(preset, tiny, out_dir=tmp_path, progress=False, resume=True, minutes=0.25)
    assert len(again.history["train"]) == steps
    out = capsys.readouterr().out
    assert f"already finished its {steps} planned steps: loaded, nothing trained" in out
    assert "resum" not in out  # neither "resuming the plan" nor "(resumed)": nothing was resumed


class StepClock:
    """Time that passes only as steps are taken, ``seconds(step)`` for each (its callback advances it)."""

    def __init__(self, seconds):
        self.now, self.seconds = 0.0, seconds

    def __call__(self):
        return self.now

    def callback(self, event, history):
        if event == "step":
            self.now += self.seconds(history["train"][-1]["step"])


def test_the_length_is_set_again_at_the_end_of_the_warmup_from_the_steps_since(tiny, tmp_path, monkeypatch, capsys):
    import retina_edu.train.budget as train_module  # the budget's clock lives there

    # the first 11 steps take 1 s, the rest 0.5 s: the first plan (at step 11) is too short by half
    clock = StepClock(lambda step: 1.0 if step <= 11 else 0.5)
    monkeypatch.setattr(train_module, "_clock", clock)
    monkeypatch.setattr(train_module, "BUDGET_REPLAN_MIN_STEPS", 3)
    preset = tiny_preset(warmup_steps=15, epochs=1, checkpoint_every=1000, image_size=64)
    result = train(preset, tiny, out_dir=tmp_path, progress=False, minutes=0.55, callbacks=[clock.callback])
    plan, lrs = result.plan, [r["lr"] for r in result.history["train"]]
    budget = 0.55 * 60 * train_module.BUDGET_SAFETY  # 32.01 s
    assert plan["first_plan"] == {"steps": 11 + int(budget - 11), "step_s": 1.0, "planned_at": 11}
    assert plan["planned_at"] == 15 and plan["step_s"] == 0.5 and plan["warmup_steps"] == 15
    assert plan["steps"] == 15 + int((budget - 11 - 4 * 0.5) / 0.5) == len(lrs)
    assert clock.now <= budget  # it fits, and fills the budget
    warmup = [preset.lr() * lr_factor(s, plan["first_plan"]["steps"], 15, "cosine") for s in range(1, 16)]
    assert lrs[:15] == pytest.approx(warmup)  # the warmup, as the first plan set it
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the decay reaches its end over the new length
    assert load_checkpoint(tmp_path)["plan"] == plan  # what a resumed run finishes
    out = capsys.readouterr().out
    assert f"plan at the end of the warmup: {plan['steps']} steps (0.50 s per step over steps 12-15; " in out
    assert f"the first plan said {plan['first_plan']['steps']})" in out


def test_a_finished_run_of_epochs_loaded_again_says_nothing_was_trained(tiny, tmp_path, capsys):
    preset = tiny_preset(epochs=1)
    train(preset, tiny, out_dir=tmp_path, progress=False)
    capsys.readouterr()
    again = train(preset, tiny, out_dir=tmp_path, progress=False, resume=True)
    assert len(again.history["train"]) == 6
    assert "already finished its 6 steps: loaded, nothing trained" in capsys.readouterr().out


def test_a_resumed_budget_run_finishes_the_same_plan_without_minutes(tiny, tmp_path, monkeypatch):
    import retina_edu.train.budget as train_module  # the budget's clock lives there

    preset = tiny_preset(warmup_steps=4, epochs=1)
    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))
    straight = train(preset, tiny, out_dir=tmp_path / "a", progress=False, minutes=0.25)
    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))
    first = train(preset, tiny, out_dir=tmp_path / "b", progress=False, minutes=0.25, max_steps=7)
    assert len(first.history["train"]) == 7
    assert load_checkpoint(tmp_path / "b")["plan"] == load_checkpoint(tmp_path / "a")["plan"]
    # how notebook 09 finishes notebook 08's run: the preset from the checkpoint, no minutes, a slower clock
    monkeypatch.setattr(train_module, "_clock", FakeClock(100.0))
    saved = Preset.from_dict(load_checkpoint(tmp_path / "b")["preset"])
    resumed = train(saved, tiny, out_dir=tmp_path / "b", progress=False, resume=True)
    assert [r["loss"] for r in resumed.history["train"]] == [r["loss"] for r in straight.history["train"]]
    assert resumed.history["train"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_time_budget_reserves_the_validation_time(tiny, monkeypatch):
    import retina_edu.train.budget as train_module  # the budget's clock lives there

    preset = tiny_preset(warmup_steps=4, epochs=1)
    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))
    without = train(preset, tiny, progress=False, minutes=0.25, max_steps=4)
    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))
    with_val = train(preset, tiny, tiny, progress=False, minutes=0.25, max_steps=4)
    assert with_val.plan["eval_s"] > 0 and without.plan["eval_s"] == 0
    assert with_val.plan["steps"] < without.plan["steps"]


def test_minutes_must_be_a_positive_number(tiny):
    for bad in (0, -1, float("nan"), "5", True):
        with pytest.raises(ValueError, match="minutes must be a number > 0"):
            train(tiny_preset(), tiny, progress=False, minutes=bad)


def test_minutes_do_not_stretch_a_checkpoint_of_a_run_of_epochs(tiny, tmp_path, capsys):
    preset = tiny_preset(epochs=1)
    train(preset, tiny, out_dir=tmp_path, progress=False, max_steps=2)
    resumed = train(preset, tiny, out_dir=tmp_path, progress=False, resume=True, minutes=5)
    assert len(resumed.history["train"]) == 6 and resumed.plan is None  # the epoch it was planned for
    assert "without a time budget" in capsys.readouterr().out


def test_the_command_line_passes_minutes_on_and_refuses_them_with_epochs(tiny_shapes, tmp_path, monkeypatch, capsys):
    import retina_edu.train as train_module
    from retina_edu.__main__ import main

    seen = {}

    def fake_train(*args, **kwargs):
        seen.update(kwargs)
        return train_module.TrainResult(None, {"train": [], "eval": []}, None)

    monkeypatch.setattr(train_module, "train", fake_train)
    assert main(["train", "--data", str(tiny_shapes), "--out", str(tmp_path / "run"), "--minutes", "2.5"]) == 0
    assert seen["minutes"] == 2.5
    assert main(["train", "--data", str(tiny_shapes), "--out", str(tmp_path / "run"), "--minutes", "0"]) == 2
    assert "argument --minutes: must be a number > 0" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_shapes), "--out", str(tmp_path), "--minutes", "5", "--epochs", "2"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_budget_shorter_than_the_warmup_shortens_it_and_still_ends_the_decay(tiny, monkeypatch):
    import retina_edu.train.budget as train_module  # the budget's clock lives there

    monkeypatch.setattr(train_module, "_clock", FakeClock(1.0))
    preset = tiny_preset(warmup_steps=50, epochs=1)  # 50 steps of warmup, but about 14 s for steps
    result = train(preset, tiny, progress=False, minutes=0.25)
    plan, lrs = result.plan, [r["lr"] for r in result.history["train"]]
    assert plan["planned_at"] < plan["steps"] == len(lrs) < 50
    assert plan["planned_at"] <= plan["warmup_steps"] < plan["steps"]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
