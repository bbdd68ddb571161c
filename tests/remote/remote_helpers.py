"""Helpers for the remote-monitoring tests: a trainer link served on its own thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from octa_tui.protocol import ModelSummary, Schema, new_run_id
from octa_tui.protocol.link import TrainerLink


def make_schema(config: dict[str, Any] | None = None) -> Schema:
    """A small run schema (3 losses, 4 layers, lr)."""
    return Schema(
        run_id=new_run_id(),
        task="segmentation",
        model=ModelSummary("UNet", 1000),
        loss=("total", "bce", "dice"),
        grad=tuple(f"enc{i}" for i in range(4)),
        opt=("lr",),
        config=dict(config or {}),
    )


class ServedLink:
    """A TrainerLink owned by a thread that publishes a step every ``period_s`` like a loop."""

    def __init__(self, period_s: float = 0.01, **link_args: Any) -> None:
        self.schema = make_schema()
        self.period_s = period_s
        self.link_args = link_args
        self.link: TrainerLink | None = None
        self.steps = 0
        self.errors: list[BaseException] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            self.link = TrainerLink(self.schema, heartbeat_s=0.1, **self.link_args)
        except BaseException as exc:  # handed to the test
            self.errors.append(exc)
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                self.link.publish_step(self.steps, 0, np.full(self.schema.width, float(self.steps), np.float32))
                self.steps += 1
                for pending in self.link.poll_commands():
                    pending.error("not handled in this test", self.steps)
                self.link.tick()
                time.sleep(self.period_s)
        finally:
            self.link.close()

    def start(self) -> ServedLink:
        self._thread.start()
        self._ready.wait(10)
        if self.errors:
            raise self.errors[0]
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextmanager
def served_link(**link_args: Any) -> Iterator[ServedLink]:
    """A running ServedLink, stopped on exit."""
    served = ServedLink(**link_args).start()
    try:
        yield served
    finally:
        served.stop()


def keyed_dealer(endpoint: str):
    """A raw DEALER with the keys this process knows for ``endpoint`` (a fuzzer's socket of the owner)."""
    import zmq

    from octa_tui.protocol.keys import client_keys_for, secure_client_socket
    from octa_tui.protocol.runfiles import keys_for_endpoint

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    curve = client_keys_for(endpoint, keys_for_endpoint)
    if curve is not None:
        secure_client_socket(socket, curve)
    socket.connect(endpoint)
    return socket


# --- real processes -------------------------------------------------------------------------


SMALL_RUN = ["--synthetic", "32", "--image-size", "32", "--base-width", "8", "--batch-size", "4",
             "--preview-every", "0", "--device", "cpu", "--epochs", "100000", "--quiet"]
FOLLOWER_MAIN = Path(__file__).with_name("remote_follower_main.py")


def process_env(tmp_path: Path) -> dict[str, str]:
    """Run files in ``tmp_path``, one thread per process (the machine is shared), unbuffered output."""
    return dict(os.environ, OCTA_TUI_RUN_DIR=str(tmp_path / "run-files"), OMP_NUM_THREADS="1",
                PYTHONUNBUFFERED="1")


class TrainerProcess:
    """``octa-train`` in a subprocess; :meth:`wait_ready` reads its run file for the endpoints."""

    def __init__(self, tmp_path: Path, *args: str, name: str = "trainer") -> None:
        self.tmp_path = tmp_path
        self.record = tmp_path / f"{name}.octa"
        self.log = open(tmp_path / f"{name}.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "octa_tui.trainer", *SMALL_RUN, "--record", str(self.record),
             "--checkpoint-dir", str(tmp_path / f"{name}-ckpt"), *args],
            cwd=tmp_path, env=process_env(tmp_path), stdout=self.log, stderr=subprocess.STDOUT, text=True,
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float = 120) -> dict[str, Any]:
        run_file = self.tmp_path / "run-files" / f"{self.proc.pid}.json"
        deadline = time.monotonic() + timeout_s
        while not run_file.exists():
            assert self.proc.poll() is None, f"octa-train exited: {self.output()}"
            assert time.monotonic() < deadline, "octa-train wrote no run file"
            time.sleep(0.05)
        time.sleep(0.05)  # written atomically, but let it be complete
        self.info = json.loads(run_file.read_text())
        # Reading the run files teaches this process the run's keys (as `octa-tui list` does).
        from octa_tui.protocol.runfiles import list_run_files

        list_run_files(run_file.parent)
        return self.info

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (a clean stop at the next step) and wait; SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class FollowerProcess:
    """A RunFollower in a subprocess that prints one JSON line of what it holds per poll."""

    def __init__(self, telemetry: str, control: str, run_dir: Path | None = None) -> None:
        # The trainer's run-files folder: where the follower finds the run's keys.
        env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OCTA_TUI_RUN_DIR": str(run_dir)} if run_dir else {}))
        self.proc = subprocess.Popen(
            [sys.executable, str(FOLLOWER_MAIN), telemetry, control],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

    def read(self, until: Any, timeout_s: float = 30) -> dict[str, Any]:
        """Lines until one satisfies ``until(line)``; that line."""
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the follower exited: {self.proc.stderr.read()}")
                report = json.loads(line)
                if until(report):
                    return report
        finally:
            selector.close()
        raise AssertionError("the follower did not report what was expected in time")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
