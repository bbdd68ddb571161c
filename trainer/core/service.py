"""The probe's side of a monitor link: binding it, announcing the run, serving it.

:func:`open_link` binds a :class:`~octa_tui.protocol.link.TrainerLink` for a schema (with
its recording); :class:`LinkService` heartbeats it and takes commands at most every
``SERVICE_INTERVAL_S`` (unless forced), refuses commands when no controller can apply them,
and writes/removes the run file that lets ``octa-tui`` on this machine find the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from octa_tui.protocol.messages import Schema

SERVICE_INTERVAL_S = 0.02


def open_link(schema: Schema, telemetry: str, control: str, record: str | None,
              link_options: Mapping[str, Any] | None = None) -> Any:
    """A TrainerLink bound for ``schema``, recording to ``record`` when given.

    By default the history kept for monitors that join late is paged to an unnamed file in
    the user's cache folder (``$OCTA_TUI_SPILL_DIR``); ``link_options`` go to the link
    (``curve=`` keys, ``insecure=True``, ``spill=None`` for RAM).
    """
    from octa_tui.protocol.link import TrainerLink
    from octa_tui.protocol.spill import spill_dir

    recording = None
    if record is not None:
        from octa_tui.protocol.recording import RecordingWriter

        recording = RecordingWriter(record, schema)
    try:
        options = dict(link_options or {})
        if "spill" not in options:
            options["spill"] = spill_dir()[0]  # None (RAM) where the folder cannot take it
        return TrainerLink(schema, telemetry=telemetry, control=control, recording=recording, **options)
    except BaseException:
        if recording is not None:
            recording.close()
        raise


class LinkService:
    """Heartbeats, commands and the run file of one run's link (``link`` may be None)."""

    def __init__(self, link: Any = None) -> None:
        self.link = link
        self._last = 0.0
        self._run_file: Any = None

    def announce(self, schema: Schema, recording: str) -> None:
        """Write the run file that ``octa-tui`` lists (removed by :meth:`close`)."""
        import socket

        from octa_tui.protocol.runfiles import RunFileInfo, write_run_file

        link = self.link
        info = RunFileInfo(
            pid=os.getpid(), run_id=schema.run_id, telemetry=link.telemetry_endpoint,
            control=link.control_endpoint, task=schema.task, model=schema.model.name,
            started_at=schema.started_at, recording=os.path.abspath(recording) if recording else "",
            host=socket.gethostname(),
        )
        self._run_file = write_run_file(info)

    def serve(self, state: str, force: bool, step: int, can_apply: bool) -> list[Any]:
        """Heartbeat and take pending commands (at most every SERVICE_INTERVAL_S unless ``force``).

        Without a controller (``can_apply`` false) setting commands are answered with an
        error, since nothing here could apply them; with one, they are returned to it.
        """
        if self.link is None:
            return []
        now = time.monotonic()
        if not force and now - self._last < SERVICE_INTERVAL_S:
            return []
        self._last = now
        self.link.tick(state)
        pending = self.link.poll_commands()
        if not can_apply:
            for request in pending:
                request.error(
                    f"{request.command.op}: this training loop does not take commands "
                    "(attach a Controller to the probe to enable them)",
                    step,
                )
            return []
        return pending

    def close(self, state: str) -> None:
        """Remove the run file and close the link (and its recording)."""
        if self._run_file is not None:
            self._run_file.unlink(missing_ok=True)
            self._run_file = None
        if self.link is not None:
            self.link.close(state)
