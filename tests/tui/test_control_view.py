"""GIVEN a run's history WHEN the monitor derives what to show or what to send THEN the
settings, markers, groups, baseline and commands are the ones a user expects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from seeded import seeded_history

from octa_tui.protocol.messages import Reply
from octa_tui.tui import control, view
from octa_tui.tui.control import CommandInputError, CommandLog


def test_current_settings_are_the_newest_step_and_changes_are_marked():
    history = seeded_history(600, lr_change_at=400)
    settings = view.current_settings(history)
    assert settings.lr == pytest.approx(5e-4) and settings.dice_weight == pytest.approx(0.7)
    assert view.setting_changes(history) == [400]
    cache = view.ChangeMarkerCache()
    assert cache.markers(history, 300) == []
    assert cache.markers(history, 600) == [400]


def test_layer_groups_follow_module_prefixes_and_fit_the_rows():
    names = ["enc1.conv1.weight", "enc1.conv2.weight", "enc2.conv1.weight", "dec1.conv.weight", "head.weight"]
    groups = view.layer_groups(names, 10)
    assert [label for label, _ in groups] == ["enc1", "enc2.conv1.weight", "dec1.conv.weight", "head.weight"]
    merged = view.layer_groups(names, 2)
    assert len(merged) == 2 and sum(len(idx) for _, idx in merged) == len(names)
    assert merged[0][1][0] == 0 and merged[-1][1][-1] == len(names) - 1


def test_group_norm_is_the_norm_of_all_its_layers_and_grows_incrementally():
    history = seeded_history(200)
    groups = view.layer_groups(history.schema.grad, 20)
    cache = view.GroupNormCache()
    first = cache.norms(history, groups, 100).copy()
    full = cache.norms(history, groups, 200)
    np.testing.assert_allclose(full[:100], first)
    label, idx = groups[0]
    cols = [history.schema.index(f"grad/{history.schema.grad[i]}") for i in idx]
    expected = np.sqrt((history.steps.values[:200, cols].astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_allclose(full[:, 0], expected, rtol=1e-6)


def test_speed_eta_and_missing_steps():
    history = seeded_history(600)
    assert view.steps_per_second(history) == pytest.approx(20.0)
    assert view.total_steps(history) == 20 * 50
    assert view.missing_steps(history) == 0


def test_baseline_is_the_best_constant_of_the_weighted_loss():
    history = seeded_history(100)
    baseline = view.constant_baseline(history)
    assert baseline is not None and 0.5 < baseline < 1.0
    history.dataset = None
    assert view.constant_baseline(history) is None


def test_keys_build_validated_commands_from_the_settings_in_force():
    settings = view.Settings(lr=1e-3, bce_weight=0.3, dice_weight=0.7, pos_weight=1.0, clip=0.0)
    assert control.scale_lr(settings, 2.0).args == {"lr": pytest.approx(2e-3)}
    assert control.shift_dice_weight(settings, -0.05).args == {"bce": pytest.approx(0.35), "dice": pytest.approx(0.65)}
    assert control.exact_clip("1.0").args == {"clip": 1.0}
    with pytest.raises(CommandInputError, match="not a number"):
        control.exact_lr("fast")
    with pytest.raises(CommandInputError, match="out of range"):
        control.exact_lr("5")
    with pytest.raises(CommandInputError, match="not reported"):
        control.scale_lr(view.Settings(math.nan, 0.3, 0.7, 1.0, 0.0), 2.0)
    top = view.Settings(1e-3, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(CommandInputError, match="already"):
        control.shift_dice_weight(top, 0.05)


def test_the_log_tracks_replies_and_undo_sends_the_old_value_back():
    log = CommandLog(clock=lambda: 0.0)
    settings = view.Settings(1e-3, 0.3, 0.7, 1.0, 0.0)
    command = control.scale_lr(settings, 2.0)
    entry = log.sent(command, control.restoring_command(command.op, settings))
    assert entry.describe().endswith("-> pending")
    log.replied(entry.request_id, Reply(entry.request_id, "ok", step=17))
    assert entry.describe().endswith("applied at step 17")
    assert log.undoable() is entry and entry.restore.args == {"lr": pytest.approx(1e-3)}
    rejected = log.sent(control.exact_clip("1"), None)
    log.replied(rejected.request_id, Reply(rejected.request_id, "error", reason="clip is locked", step=18))
    assert rejected.describe().endswith("rejected: clip is locked")
    entry.undone = True
    assert log.undoable() is None


def test_a_run_stopped_early_by_max_steps_shows_that_length_and_its_epochs():
    from dataclasses import replace

    from octa_tui.protocol.run import RunHistory

    # GIVEN a run configured for 20 epochs of 50 steps but stopped at 120 steps (octa-train --max-steps)
    seeded = seeded_history(10)
    schema = replace(seeded.schema, config={**seeded.schema.config, "max_steps": 120})
    history = RunHistory(schema)
    # THEN the ETA counts to step 120 and the header says epoch N/3, not N/20
    assert view.total_steps(history) == 120
    assert view.total_epochs(history) == 3
    # AND without max_steps both come from the epochs
    assert view.total_steps(seeded) == 20 * 50 and view.total_epochs(seeded) == 20
