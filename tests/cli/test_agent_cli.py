"""GIVEN a trainer's link on loopback (no torch: a TrainerLink on a thread) WHEN a script uses
`octa-tui send`, `watch --json` or `verdicts --json` THEN it gets JSON it can act on and an exit
status it can branch on."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from octa_tui.protocol.messages import Event, ModelSummary, Schema, new_run_id
from octa_tui.protocol.recording import RecordingWriter
from octa_tui.protocol.runfiles import RunFileInfo, write_run_file

pytestmark = pytest.mark.timeout(300)
CEILING_S = 120.0  # waits are for conditions; this only ends a test that would hang


def make_schema() -> Schema:
    return Schema(run_id=new_run_id(), task="segmentation", model=ModelSummary("UNet", 1000),
                  loss=("total", "bce", "dice"), grad=("enc1", "enc2", "dec1"),
                  gradstat=("total_norm", "nonfinite"), opt=("lr",))


def row(schema: Schema, i: int, loss: float | None = None) -> np.ndarray:
    values = np.full(schema.width, 0.5, np.float32)
    channels = schema.channels
    values[channels.index("loss/total")] = 0.7 - 0.001 * i if loss is None else loss
    values[channels.index("gradstat/nonfinite")] = 0.0
    values[channels.index("opt/lr")] = 1e-3
    return values


class FakeTrainer:
    """A trainer's link served on its own thread: answers commands as ``answer`` says, and runs
    ``script(link)`` once a monitor has joined (when ``wait_for_monitor``)."""

    def __init__(self, run_dir: Path, answer=None, script=None, wait_for_monitor: bool = False) -> None:
        self.schema = make_schema()
        self.received: list = []
        self._answer = answer or (lambda command: ("ok", {}))
        self._script = script
        self._wait = wait_for_monitor
        self._stop = threading.Event()
        self.done = threading.Event()
        ready: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, args=(run_dir, ready), daemon=True)
        self._thread.start()
        result = ready.get(timeout=CEILING_S)
        if isinstance(result, BaseException):
            raise result

    def _main(self, run_dir: Path, ready: queue.Queue) -> None:
        from octa_tui.protocol.link import TrainerLink

        try:
            link = TrainerLink(self.schema, telemetry="tcp://127.0.0.1:0", control="tcp://127.0.0.1:0",
                               heartbeat_s=0.05)
            write_run_file(RunFileInfo(pid=os.getpid(), run_id=self.schema.run_id, telemetry=link.telemetry_endpoint,
                                       control=link.control_endpoint, task="segmentation", model="UNet"),
                           run_dir)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            ready.put(exc)
            return
        ready.put(None)
        state = "finished"
        try:
            while not self._stop.is_set():
                self.serve(link)
                if self._script is not None and (not self._wait or link.monitors > 0):
                    script, self._script = self._script, None
                    state = script(self, link)
                    break
                time.sleep(0.005)
        finally:
            link.close(state)
            self.done.set()

    def serve(self, link) -> None:
        for pending in link.poll_commands():
            self.received.append(pending.command)
            status, data = self._answer(pending.command)
            if status == "ok":
                pending.ok(7, data)
            else:
                pending.error(data, 7)
        link.tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CEILING_S)


def octa_tui(run_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(run_dir)}
    return subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", *args], capture_output=True, text=True,
                          timeout=CEILING_S * 2, env=env, input=stdin)


def records(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- send -------------------------------------------------------------------------------------


def test_send_prints_the_reply_and_exits_0_when_applied(tmp_path):
    trainer = FakeTrainer(tmp_path, answer=lambda c: ("ok", {"old": 1e-3, "new": c.args["lr"]}))
    try:
        result = octa_tui(tmp_path, "send", trainer.schema.run_id[:6], "set_lr", "1e-4")
    finally:
        trainer.stop()
    assert result.returncode == 0, result.stderr
    [reply] = records(result)
    assert reply == {"type": "reply", "v": 1, "run": trainer.schema.run_id, "op": "set_lr", "args": {"lr": 1e-4},
                     "status": "ok", "reason": "", "step": 7, "data": {"old": 1e-3, "new": 1e-4}}
    assert [(c.op, dict(c.args)) for c in trainer.received] == [("set_lr", {"lr": 1e-4})]


def test_send_exits_1_when_the_trainer_refuses(tmp_path):
    trainer = FakeTrainer(tmp_path, answer=lambda c: ("error", "the run is already paused"))
    try:
        result = octa_tui(tmp_path, "send", "UNet", "pause")
    finally:
        trainer.stop()
    assert result.returncode == 1
    [reply] = records(result)
    assert reply["status"] == "error" and reply["reason"] == "the run is already paused"
    assert "refused pause: the run is already paused" in result.stderr


def test_a_bad_command_exits_2_and_sends_nothing(tmp_path):
    trainer = FakeTrainer(tmp_path)
    try:
        result = octa_tui(tmp_path, "send", trainer.schema.run_id, "set_lr", "7")
    finally:
        trainer.stop()
    assert result.returncode == 2 and trainer.received == []
    [error] = records(result)
    assert error["type"] == "error" and error["error"] == "usage" and "out of range" in error["reason"]


@pytest.mark.parametrize(("argv", "status", "kind", "says"), [
    (["deadbeefdeadbeef", "pause"], 3, "not_found", "no running trainer has run id deadbeefdeadbeef"),
    (["localhost:5555", "pause"], 2, "usage", "has no scheme; write it as an endpoint"),
    (["tcp://127.0.0.1:1", "pause"], 3, "not_found", "nothing is listening at tcp://127.0.0.1:1"),
    (["tcp://127.0.0.1:1", "pause", "--control", "tcp://127.0.0.1:1", "--timeout", "0.5"], 3, "unreachable",
     "no answer from the trainer at tcp://127.0.0.1:1 within 0.5 s"),
])
def test_a_run_that_is_not_there_is_one_record_and_a_status(tmp_path, argv, status, kind, says):
    result = octa_tui(tmp_path, "send", *argv)
    assert result.returncode == status, result.stderr
    [error] = records(result)
    assert error["error"] == kind and says in error["reason"]
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


# --- watch ------------------------------------------------------------------------------------


def _stream_then_wait_for_stop(trainer: FakeTrainer, link) -> str:
    """120 steps with a NaN loss at step 60 and a checkpoint event at 100; then the run goes on
    serving until a monitor stops it."""
    for i in range(120):
        link.publish_step(i, i // 50, row(trainer.schema, i, loss=float("nan") if i == 60 else None))
        if i == 100:
            link.publish(Event(trainer.schema.run_id, 100, time.time(), "checkpoint_saved", "checkpoint at step 100"))
        trainer.serve(link)
        time.sleep(0.005)
    deadline = time.monotonic() + CEILING_S
    while not any(c.op == "stop" for c in trainer.received) and time.monotonic() < deadline:
        trainer.serve(link)
        time.sleep(0.01)
    return "stopped"


def test_watch_prints_summaries_verdicts_events_and_the_end_as_json_lines(tmp_path):
    trainer = FakeTrainer(tmp_path, script=_stream_then_wait_for_stop, wait_for_monitor=True)
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path)}
    watch = subprocess.Popen([sys.executable, "-m", "octa_tui.tui.cli", "watch", trainer.schema.run_id, "--json",
                              "--every", "50", "--timeout", str(CEILING_S)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        got = []
        while not (got and got[-1]["type"] == "summary" and got[-1]["step"] >= 99):
            line = watch.stdout.readline()
            assert line, watch.stderr.read()
            got.append(json.loads(line))
        # WHEN the run is stopped (by another command line) once the watch is following it
        assert octa_tui(tmp_path, "send", trainer.schema.run_id, "stop").returncode == 0
        rest, err = watch.communicate(timeout=CEILING_S)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
        trainer.stop()
    assert watch.returncode == 0, err
    got += [json.loads(line) for line in rest.splitlines()]
    assert got[0]["type"] == "run" and got[0]["run_id"] == trainer.schema.run_id
    assert "loss/total" in got[0]["channels"]
    summaries = [r for r in got if r["type"] == "summary"]
    # one at join, then every 50 steps (windows end on whole multiples of 50)
    assert summaries[-1]["step"] == 119 and all(s["step"] % 50 == 49 for s in summaries[1:-1])
    assert all(set(s["last"]) == {"loss/total", "loss/bce", "loss/dice", "gradstat/total_norm",
                                  "gradstat/nonfinite", "opt/lr"} for s in summaries)
    nan = [r for r in got if r["type"] == "verdict" and r["code"] == "nonfinite"]
    assert nan and nan[0]["change"] == "appeared" and nan[0]["severity"] == "critical" and nan[0]["at_step"] >= 60
    # the NaN step counted in the summary window that holds it
    holding = [s for s in summaries if s["step"] - s["steps"] < 60 <= s["step"]]
    assert [s["nonfinite_steps"] for s in summaries if s["nonfinite_steps"]] == [{"loss/total": 1}] * len(holding)
    events = [r["message"] for r in got if r["type"] == "event"]
    assert got[0]["steps"] > 100 or events[:1] == ["checkpoint at step 100"]  # (in the history when joined later)
    assert got[-2]["type"] == "state" and got[-2]["state"] == "stopped"
    assert got[-1] == {"type": "end", "v": 1, "run_id": trainer.schema.run_id, "reason": "stopped", "step": 119}


def _until_stopped(trainer: FakeTrainer, link) -> str:
    """Publish steps until a monitor sends stop; answer every command."""
    i = 0
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        link.publish_step(i, 0, row(trainer.schema, i))
        i += 1
        trainer.serve(link)
        if any(c.op == "stop" for c in trainer.received):
            return "stopped"
        time.sleep(0.01)
    return "finished"


def test_watch_sends_the_commands_it_reads_and_prints_their_replies(tmp_path):
    trainer = FakeTrainer(tmp_path, script=_until_stopped, wait_for_monitor=True,
                          answer=lambda c: ("ok", {"new": dict(c.args)}) if c.op != "set_clip" else ("error", "no"))
    try:
        result = octa_tui(tmp_path, "watch", trainer.schema.run_id, "--commands", "--timeout", str(CEILING_S),
                          stdin="set_lr 2e-3\nset_lr 9   # out of range\nset_clip 1\nstop\n")
    finally:
        trainer.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "set_lr lr=0.002: applied at step 7" in lines
    assert any(line.startswith("error (usage): set_lr: lr = 9.0 is out of range") for line in lines)
    assert "set_clip clip=1: refused: no" in lines
    assert lines[-1].startswith("watch ended: stopped at step")
    assert [c.op for c in trainer.received if c.op != "ping"] == ["set_lr", "set_clip", "stop"]


# --- verdicts ---------------------------------------------------------------------------------


def test_verdicts_of_a_recording_show_when_each_verdict_appeared_and_what_is_left(tmp_path):
    schema = make_schema()
    path = tmp_path / "run.octa"
    writer = RecordingWriter(path, schema)
    for i in range(200):
        writer.write_step(i, i, 0, 1000.0 + i, row(schema, i, loss=float("inf") if i == 120 else None))
    writer.close()
    result = octa_tui(tmp_path, "verdicts", str(path), "--json", "--fail-on", "critical")
    got = records(result)
    assert got[0]["type"] == "run" and got[0]["steps"] == 200 and got[0]["last_step"] == 199
    nan = [r for r in got if r["type"] == "verdict" and r["code"] == "nonfinite"]
    assert nan[0]["change"] == "appeared" and 120 <= nan[0]["at_step"] <= 125
    final = got[-1]
    assert final["type"] == "final" and final["steps"] == 200 and final["every"] == 5 and final["evaluations"] == 40
    shown_at_end = any(v["code"] == "nonfinite" for v in final["verdicts"])
    assert result.returncode == (1 if shown_at_end else 0)
    assert octa_tui(tmp_path, "verdicts", str(tmp_path / "missing.octa"), "--json").returncode == 2
