"""The pure parts of the command line for scripts: naming a run, reading a command, the JSON records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from octa_tui.diagnosis.verdict import Severity, Verdict
from octa_tui.protocol.messages import Command, Event, ModelSummary, Reply, Schema
from octa_tui.protocol.runfiles import RunFileInfo
from octa_tui.tui.agent_commands import CommandWordsError, parse_command
from octa_tui.tui.agent_records import (
    VerdictChanges,
    event_record,
    record,
    reply_record,
    select_channels,
    summary_record,
)
from octa_tui.tui.agent_text import text_line
from octa_tui.tui.run_target import TargetError, TargetUsageError, resolve_target

A = RunFileInfo(pid=101, run_id="a06c740b1733e6ec", telemetry="tcp://127.0.0.1:5555",
                control="tcp://127.0.0.1:5556", task="segmentation", model="UNet",
                recording="/home/me/runs/octa/20261206.octa")
B = RunFileInfo(pid=202, run_id="a0ffee0000000001", telemetry="ipc:///tmp/b.sock", control="ipc:///tmp/b.ctl",
                task="heatmap", model="CRAFT", recording="/home/me/runs/text/20261206.octa")


# --- naming a run -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a06c740b1733e6ec", "101", "a06c", "tcp://127.0.0.1:5555",
                                  "tcp://localhost:5555", "tcp://127.0.0.1:5556", "UNet", "runs/octa"])
def test_a_run_is_named_by_id_pid_prefix_endpoint_or_text(text):
    target = resolve_target(text, [A, B])
    assert target.info == A and (target.telemetry, target.control) == (A.telemetry, A.control)


def test_an_explicit_control_endpoint_wins_and_an_unknown_endpoint_needs_one():
    assert resolve_target("a06c", [A], control="tcp://127.0.0.1:7").control == "tcp://127.0.0.1:7"
    plain = resolve_target("tcp://127.0.0.1:9", [A], control="tcp://127.0.0.1:10")
    assert (plain.telemetry, plain.control, plain.info) == ("tcp://127.0.0.1:9", "tcp://127.0.0.1:10", None)


def test_each_way_of_missing_says_what_to_do():
    with pytest.raises(TargetError, match="no running trainer has run id deadbeefdeadbeef.*a06c740b1733e6ec"):
        resolve_target("deadbeefdeadbeef", [A])
    with pytest.raises(TargetUsageError, match="'localhost:5555' has no scheme.*tcp://127.0.0.1:5555"):
        resolve_target("localhost:5555", [A])
    with pytest.raises(TargetError, match="nothing is listening at tcp://127.0.0.1:1"):
        resolve_target("tcp://127.0.0.1:1", [A])
    with pytest.raises(TargetError, match="no running trainer has run id a0"):
        resolve_target("a0", [A, B])  # too short to be taken as a run-id prefix
    with pytest.raises(TargetError, match="2 runs match 'home/me'.*give more of the run id"):
        resolve_target("home/me", [A, B])
    with pytest.raises(TargetUsageError, match="is not a run id"):
        resolve_target("Transformer", [A, B])  # matches no run's task, model or recording
    with pytest.raises(TargetError, match="no trainer of yours is running"):
        resolve_target("a06c", [])


# --- reading a command ------------------------------------------------------------------------


@pytest.mark.parametrize(("words", "op", "args"), [
    (["set_lr", "1e-4"], "set_lr", {"lr": 1e-4}),
    (["lr", "lr=1e-4"], "set_lr", {"lr": 1e-4}),
    (["set_loss_weights", "0.5", "0.5"], "set_loss_weights", {"bce": 0.5, "dice": 0.5}),
    (["weights", "dice=0.2", "bce=0.8"], "set_loss_weights", {"bce": 0.8, "dice": 0.2}),
    (["set_clip", "0"], "set_clip", {"clip": 0.0}),
    (["pause"], "pause", {}),
    (['{"op": "set_clip", "args": {"clip": 1.0}}'], "set_clip", {"clip": 1.0}),
])
def test_commands_are_read_from_words_or_json(words, op, args):
    assert parse_command(words) == Command(op=op, args=args)


@pytest.mark.parametrize(("words", "message"), [
    ([], "no command given"),
    (["set_lrr", "1"], "unknown command 'set_lrr'"),
    (["set_lr", "fast"], "lr must be a number, got 'fast'"),
    (["set_lr", "7"], r"out of range.*usage: set_lr LR"),
    (["set_lr", "1e-3", "2"], "too many values"),
    (["set_loss_weights", "0.5"], r"missing argument 'dice'.*usage: set_loss_weights BCE DICE"),
    (["pause", "now=1"], "pause takes no arguments"),
    (["history"], "unknown command 'history'"),
    (['{"op": "set_lr"'], "not valid JSON"),
])
def test_a_bad_command_is_refused_before_anything_is_sent(words, message):
    with pytest.raises(CommandWordsError, match=message):
        parse_command(words)


# --- the records --------------------------------------------------------------------------------


def _schema() -> Schema:
    return Schema(run_id="r" * 16, task="segmentation", model=ModelSummary("UNet", 10), loss=("total",),
                  grad=("enc", "dec"), opt=("lr",))


def test_records_are_json_with_nonfinite_numbers_kept_as_text():
    rec = record("summary", last={"loss/total": math.nan, "opt/lr": 1e-3}, mean={"x": -math.inf})
    text = json.dumps(rec, allow_nan=False)  # strict JSON: no NaN tokens
    back = json.loads(text)
    assert back["type"] == "summary" and back["v"] == 1
    assert back["last"] == {"loss/total": None, "opt/lr": 1e-3}
    assert back["nonfinite"] == {"last/loss/total": "nan", "mean/x": "-inf"}


def test_a_summary_gives_last_and_mean_of_the_chosen_channels():
    schema = _schema()
    columns = select_channels(schema.channels)
    assert [schema.channels[i] for i in columns] == ["loss/total", "opt/lr"]  # per-layer grads left out
    values = np.array([[0.5, 1, 1, 1e-3], [np.nan, 1, 1, 1e-3], [0.3, 1, 1, 2e-3]], np.float32)
    rec = summary_record(schema, np.array([7, 8, 9]), np.array([0, 0, 1]), values, columns, state="live",
                         steps_per_s=12.3456)
    assert rec["step"] == 9 and rec["epoch"] == 1 and rec["steps"] == 3
    assert rec["last"] == {"loss/total": pytest.approx(0.3), "opt/lr": 0.002}
    assert rec["mean"]["loss/total"] == pytest.approx(0.4)  # the NaN row left out of the mean...
    assert rec["nonfinite_steps"] == {"loss/total": 1}  # ...and counted
    assert rec["steps_per_s"] == 12.346
    assert select_channels(schema.channels, ["grad/*"]) == [1, 2]


def _verdict(code: str, severity: Severity, title: str = "t") -> Verdict:
    return Verdict(code, severity, title, "evidence", "cause", (Command("set_clip", {"clip": 1.0}),), step=5)


def test_verdict_changes_are_appeared_changed_and_cleared():
    changes = VerdictChanges()
    first = changes.update([_verdict("nonfinite", Severity.CRIT)], 10)
    assert [(r["change"], r["code"], r["severity"]) for r in first] == [("appeared", "nonfinite", "critical")]
    assert first[0]["fixes"] == [{"op": "set_clip", "args": {"clip": 1.0}}] and first[0]["at_step"] == 10
    assert changes.update([_verdict("nonfinite", Severity.CRIT)], 11) == []
    moved = changes.update([_verdict("nonfinite", Severity.WARN), _verdict("plateau", Severity.INFO)], 12)
    assert sorted((r["change"], r["code"]) for r in moved) == [("appeared", "plateau"), ("changed", "nonfinite")]
    gone = changes.update([], 13)
    assert sorted((r["change"], r["code"]) for r in gone) == [("cleared", "nonfinite"), ("cleared", "plateau")]


def test_every_record_has_a_readable_line():
    reply = reply_record("a06c", Command("set_lr", {"lr": 1e-4}), Reply("1", "ok", step=12))
    assert text_line(reply) == "set_lr lr=0.0001: applied at step 12"
    refused = reply_record("a06c", Command("pause"), Reply("1", "error", reason="already paused", step=3))
    assert text_line(refused) == "pause: refused: already paused"
    event = event_record(Event("r", 40, 1.0, "checkpoint_saved", "checkpoint at step 40"))
    assert text_line(event) == "step 40  checkpoint_saved: checkpoint at step 40"
    verdict = VerdictChanges().update([_verdict("gradient_explosion", Severity.CRIT, "Gradient explosion")], 14)[0]
    assert text_line(verdict).startswith("step 14  appeared: critical gradient_explosion: Gradient explosion")
    assert text_line(verdict).endswith("fix: set_clip clip=1")
