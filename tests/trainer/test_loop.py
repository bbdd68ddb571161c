"""The built-in loop: a real run learns, records itself, and resumes where it stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from octa_tui.protocol.recording import read_recording
from octa_tui.trainer import checkpoint as ckpt
from octa_tui.trainer.config import ConfigError, TrainConfig
from octa_tui.trainer.loop import Trainer
from octa_tui.trainer.run_data import shuffled_batches

SMALL = dict(synthetic=48, image_size=32, base_width=8, batch_size=8, preview_every=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_run_files(tmp_path, monkeypatch):
    """Run files of the runs started here go to a temporary folder, not the user's."""
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))


@pytest.mark.slow
def test_a_two_epoch_cpu_run_learns_and_records_everything_a_monitor_needs(tmp_path: Path):
    # GIVEN a small segmentation run on synthetic vessels, recording to a file
    config = TrainConfig(**SMALL, epochs=2, lr=3e-3, checkpoint_dir=str(tmp_path), record=str(tmp_path / "r.octa"))
    # WHEN it runs to the end
    result = Trainer(config).run()
    # THEN both epochs completed and the training loss fell
    assert result.state == "finished" and result.epochs == 2
    steps_per_epoch = 38 // 8  # 48 images, 20% held out for validation
    assert result.steps == 2 * steps_per_epoch
    assert result.train_loss[1] < result.train_loss[0]
    assert 0.0 <= result.val[-1]["dice"] <= 1.0
    assert Path(result.best_path).is_file() and Path(result.last_path).is_file()
    # AND the recording holds every step, both epochs, the dataset report, previews and the events
    history = read_recording(tmp_path / "r.octa").history
    assert list(history.steps.step) == list(range(result.steps))
    assert [e.epoch for e in history.epochs] == [0, 1]
    assert history.epochs[0].train["loss"] == pytest.approx(result.train_loss[0], rel=1e-5)
    assert all(0.0 <= e.train["dice"] <= 1.0 for e in history.epochs)  # training Dice, beside validation's
    assert history.dataset is not None and history.dataset.pairs == 48 and history.dataset.masks_binary
    assert history.previews and history.previews[0].prediction.shape == (32, 32)
    kinds = [e.kind for e in history.events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and "checkpoint_saved" in kinds
    schema = history.schema
    assert schema.loss == ("total", "bce", "dice") and schema.grad[0] == "enc1.block.0"
    for key in ("train_images", "val_images", "batch_size", "steps_per_epoch", "epochs", "image_size", "loss",
                "output_activation", "base_width", "scenario", "seed"):
        assert key in schema.config
    assert schema.config["steps_per_epoch"] == steps_per_epoch and schema.config["loss"] == "dice_bce"
    values = history.steps.values
    assert np.all(values[:, schema.index("opt/lr")] == np.float32(3e-3))
    assert np.all(values[:, schema.index("out/frac_outside_01")] == 0.0)  # the loss applies a sigmoid


@pytest.mark.slow
def test_resume_continues_the_same_run_with_its_step_count_and_lr_override(tmp_path: Path):
    # GIVEN a run whose lr was overridden x2 on a schedule that halves it every epoch, stopped mid-epoch
    base = dict(**SMALL, epochs=3, lr=1e-3, step_size=1, gamma=0.5, checkpoint_dir=str(tmp_path))
    first = Trainer(TrainConfig(**base, max_steps=3, record=str(tmp_path / "a.octa")))
    first.setup()
    first.controller.lr_scale.scale = 2.0
    try:
        first.train()
    finally:
        first.cleanup(first.result.state)
    assert first.result.steps == 3
    saved = ckpt.load_checkpoint(tmp_path)
    assert (saved["step"], saved["epoch"], saved["batch"]) == (3, 0, 3)
    # WHEN a new process resumes from its folder
    second = Trainer(TrainConfig(**base, max_steps=6, resume=str(tmp_path), record=str(tmp_path / "b.octa")))
    result = second.run()
    # THEN it is the same run, continuing at step 3 of epoch 0 with the override still applied
    history = read_recording(tmp_path / "b.octa").history
    assert history.run_id == read_recording(tmp_path / "a.octa").history.run_id
    assert list(history.steps.step) == [3, 4, 5]
    assert list(history.steps.epoch) == [0, 1, 1]  # 4 steps per epoch: the rest of epoch 0, then epoch 1
    lr = history.steps.values[:, history.schema.index("opt/lr")]
    assert lr == pytest.approx([2e-3, 1e-3, 1e-3])
    assert result.steps == 6
    # AND the optimizer state came back (Adam's step counter continues)
    state = second.optimizer.state_dict()["state"]
    assert int(next(iter(state.values()))["step"]) == 6


@pytest.mark.slow
def test_heatmap_run_without_sigmoid_shows_outputs_outside_the_unit_range(tmp_path: Path):
    # GIVEN the seed-002 configuration: CRAFT-like heatmaps with no final sigmoid
    config = TrainConfig(synthetic=16, image_size=32, base_width=8, batch_size=4, epochs=1, task="heatmap",
                         model="craft", output_activation="none", checkpoint_dir=str(tmp_path),
                         record=str(tmp_path / "h.octa"), preview_every=0)
    result = Trainer(config).run()
    history = read_recording(tmp_path / "h.octa").history
    schema = history.schema
    # THEN the loss is split into region and affinity and the outputs leave [0, 1]
    assert schema.loss == ("total", "region", "affinity")
    assert "bce_weight" not in schema.opt
    assert history.steps.values[:, schema.index("out/frac_outside_01")].max() > 0
    assert result.val[-1]["loss"] > 0 and "dice" not in result.val[-1]


def test_shuffled_batches_are_a_function_of_seed_and_epoch_and_resume_skips_exactly():
    full = shuffled_batches(40, 8, epoch=3, seed=1)
    assert shuffled_batches(40, 8, epoch=3, seed=1, skip=2) == full[2:]
    assert shuffled_batches(40, 8, epoch=4, seed=1) != full
    assert sorted(i for batch in full for i in batch) == list(range(40))
    assert len(shuffled_batches(5, 8, epoch=0, seed=0)) == 1  # one short batch when that is all there is


def test_a_model_that_does_not_fit_the_task_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="--model 'craft' does not fit --task segmentation"):
        TrainConfig(synthetic=8, model="craft").check()
    with pytest.raises(ConfigError, match="exactly one data source"):
        TrainConfig().check()


def test_a_checkpoint_is_written_atomically_and_a_foreign_file_is_refused(tmp_path: Path):
    path = ckpt.save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}, "optimizer": {}, "step": 1,
                                                       "epoch": 0, "run_id": "0" * 16, "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert ckpt.load_checkpoint(tmp_path)["step"] == 1
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize(("name", "kind"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD),
                                            ("adamw", torch.optim.AdamW)])
def test_the_optimizer_and_its_weight_decay_come_from_the_config(name, kind):
    from octa_tui.trainer.loop import make_optimizer

    model = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(TrainConfig.demo(optimizer=name, weight_decay=0.05).check(), model)
    assert type(optimizer) is kind
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    plain = make_optimizer(TrainConfig.demo(optimizer=name).check(), model)
    assert plain.param_groups[0]["weight_decay"] == 0.0  # no decay unless asked for
    with pytest.raises(ConfigError, match="--weight-decay"):
        TrainConfig.demo(weight_decay=-1.0).check()


def test_the_training_dice_pools_the_epochs_pixels_like_validation():
    from octa_tui.trainer.loop import TrainDice

    dice = TrainDice()
    assert dice.value() == {}  # no step, no score
    targets = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    dice.add(torch.tensor([[[[2.0, -1.0, 3.0, -2.0]]]]), targets)  # logits: 1 hit, 1 miss, 1 false positive
    dice.add(torch.tensor([[[[5.0, 5.0, -5.0, -5.0]]]]), targets)  # perfect
    # pooled: intersection 1 + 2, predicted 2 + 2, truth 2 + 2 -> 2 * 3 / 8
    assert dice.value()["dice"] == pytest.approx(0.75)
    dice.reset()
    assert dice.value() == {}
