"""Export a recording to files other tools read: CSV, JSON Lines, or a TensorBoard event file.

The recording is streamed record by record (:func:`~octa_tui.protocol.recording.iter_recording`),
so a run of millions of steps is never held in memory twice. What goes where:

- ``csv``: ``OUT`` has one row per step: ``seq, step, epoch, time`` and one column per
  channel, named by the channel (``loss/total``, ``grad/<layer>``, ...). Epoch summaries go
  to ``OUT.epochs.csv`` (``epoch, step, time, train/<name>..., val/<name>...``) and events to
  ``OUT.events.csv`` (``step, time, kind, message, data, nonfinite``; ``data`` is JSON). Values
  are the shortest text that reads back as the same float32; NaN and infinities are written
  ``nan``, ``inf``, ``-inf``, which ``float()``, the csv module and pandas read back.
- ``jsonl``: one JSON object per line, every record in recording order, each with a
  ``type``: ``schema`` first, then ``step`` (``values``: channel -> number), ``epoch``,
  ``event``, ``dataset`` and ``preview`` (step, epoch and image shapes only: no pixels).
  Plain JSON has no NaN or Infinity, so such a number is written as ``null`` and its text
  (``"nan"``, ``"inf"``, ``"-inf"``) is kept in the record's ``nonfinite`` object at the
  same path (``{"values": {"loss/total": "nan"}}``); :func:`restore_nonfinite` puts them back.
  A recording that was damaged gets ``warning`` records at the end saying what was lost
  (the same words a replay of it shows).
- ``tensorboard``: ``DIR/events.out.tfevents.<start>.<host>.octa-tui`` with one event per
  step holding every exported channel as a scalar tagged with the channel name (NaN and
  Inf kept), and each epoch's metrics as ``train/<name>`` and ``val/<name>`` at the
  epoch's last step. Events and previews are not exported to TensorBoard.

A damaged recording exports everything the reader could keep: a damaged record is skipped
and the steps after it are exported, duplicate and out-of-order steps are left out, and
``ExportResult.warnings`` / ``ExportResult.report`` say exactly which steps were lost, in
every format (replay reads the file through the same reader and keeps the same steps).

Channel selection (``channels``: fnmatch patterns) and thinning (``every``: every Nth
step, counted from the recording's first step) apply to steps only.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import fnmatch
import io
import json
import math
import os
import socket
import time as _time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import ProtocolError
from .messages import DatasetReport, EpochSummary, Event, Message, Preview, Schema, StepChunk
from .recording import RecordingError, RecordingReport, iter_recording
from .tfevents import FILE_VERSION, ScalarEventEncoder, event, tfrecord

FORMATS = ("csv", "jsonl", "tensorboard")
STEP_COLUMNS = ("seq", "step", "epoch", "time")
EPOCHS_SUFFIX = ".epochs.csv"
EVENTS_SUFFIX = ".events.csv"
EVENT_FILE_PREFIX = "events.out.tfevents."
EVENT_FILE_SUFFIX = ".octa-tui"
_RECORD_NAMES = {EpochSummary: "epoch summary", Event: "event", DatasetReport: "dataset report",
                 Preview: "preview"}


class ExportError(ProtocolError):
    """An export that cannot be done as asked: a bad selection, an output in the way, ..."""


@dataclass
class ExportResult:
    """What an export wrote, what it left out (record kind -> count: records the format
    has no place for), and what it could not read from the recording (``warnings`` in
    words, ``report`` in numbers: damaged records, steps lost, duplicates dropped)."""

    files: list[Path] = field(default_factory=list)
    steps: int = 0
    channels: int = 0
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report: RecordingReport = field(default_factory=RecordingReport)


# --- selection ------------------------------------------------------------------------------


def select_channels(channels: Sequence[str], patterns: Sequence[str] = ()) -> list[int]:
    """Indices of the channels matching any of ``patterns`` (fnmatch, case-sensitive), in
    schema order; every channel when there are no patterns.

    A pattern that matches nothing is an error (a typo would otherwise export less than asked).
    """
    if not patterns:
        return list(range(len(channels)))
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in channels):
            shown = ", ".join(channels[:8]) + (", ..." if len(channels) > 8 else "")
            raise ExportError(
                f"channel pattern {pattern!r} matches none of the run's {len(channels)} channels "
                f"({shown}); patterns are shell globs such as 'grad/*' or 'loss/total'"
            )
    return [i for i, name in enumerate(channels) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def every_nth(first_row: int, rows: int, every: int) -> np.ndarray:
    """Rows of a block (starting at overall row ``first_row``) whose overall index is a
    multiple of ``every``."""
    if every < 1:
        raise ExportError(f"every must be a positive number of steps, got {every}")
    return np.arange((-first_row) % every, rows, every)


# --- text of numbers ------------------------------------------------------------------------


def float32_text(values: np.ndarray) -> np.ndarray:
    """Each float32 as the shortest text that reads back as the same float32.

    NaN and infinities become ``nan``, ``inf`` and ``-inf``.
    """
    return np.asarray(values, dtype=np.float32).astype(str)


def _nonfinite_name(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def to_json(value: Any) -> tuple[Any, Any]:
    """A value as plain JSON data, and a sparse mirror of its NaN/Inf numbers (or None).

    Dataclasses and mappings become objects, tuples and arrays lists, numpy scalars
    numbers. A NaN or infinite number becomes ``None``; the mirror holds its text at the
    same key path (list positions as string keys).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value, None
    if isinstance(value, (int, np.integer)):
        return int(value), None
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return (x, None) if math.isfinite(x) else (None, _nonfinite_name(x))
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in value.items())
        plain: dict[str, Any] | list[Any] = {}
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
        plain = []
    else:
        raise ExportError(f"cannot export a value of type {type(value).__name__} as JSON")
    mirror: dict[str, Any] = {}
    for key, item in items:
        data, odd = to_json(item)
        if isinstance(plain, dict):
            plain[key] = data
        else:
            plain.append(data)
        if odd is not None:
            mirror[key] = odd
    return plain, (mirror or None)


def restore_nonfinite(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a JSONL record with the numbers its ``nonfinite`` mirror names put back as
    floats (the record itself is left as it is)."""

    def put(target: Any, mirror: Mapping[str, Any]) -> None:
        for key, odd in mirror.items():
            slot = int(key) if isinstance(target, list) else key
            if isinstance(odd, str):
                target[slot] = float(odd)
            else:
                put(target[slot], odd)

    restored = copy.deepcopy(record)
    mirror = restored.pop("nonfinite", None)
    if mirror:
        put(restored, mirror)
    return restored


def _json_record(kind: str, msg: Any, skip: tuple[str, ...] = ("run_id",)) -> dict[str, Any]:
    plain, mirror = to_json(msg)
    record = {"type": kind, **{k: v for k, v in plain.items() if k not in skip}}
    if mirror:
        record["nonfinite"] = {k: v for k, v in mirror.items() if k not in skip}
    return record


# --- sinks: one per format ------------------------------------------------------------------


class _Sink:
    """Receives a recording's schema, its selected steps and its other records, in order."""

    def steps(self, chunk: StepChunk) -> None:
        raise NotImplementedError

    def record(self, msg: Message) -> bool:
        """Write a non-step record; False when this format has no place for it."""
        raise NotImplementedError

    def finish(self, warnings: list[str]) -> None:
        """Write what was held back (epoch tables, a torn-tail note)."""


class CsvSink(_Sink):
    """Steps to one CSV stream; epochs and events to their own (or nowhere when None)."""

    def __init__(self, channels: Sequence[str], out: TextIO, epochs: TextIO | None, events: TextIO | None) -> None:
        self._out = out
        csv.writer(out, lineterminator="\n").writerow([*STEP_COLUMNS, *channels])
        self._epochs_out = epochs
        self._epochs: list[EpochSummary] = []
        self._events = csv.writer(events, lineterminator="\n") if events is not None else None
        if self._events is not None:
            self._events.writerow(["step", "time", "kind", "message", "data", "nonfinite"])

    def steps(self, chunk: StepChunk) -> None:
        cells = float32_text(chunk.values).tolist()
        heads = zip(chunk.seq.tolist(), chunk.step.tolist(), chunk.epoch.tolist(), chunk.time.tolist())
        # Channel names need csv quoting; numbers never do, so rows are joined directly.
        self._out.write("".join(
            ",".join([str(s), str(t), str(e), repr(w), *row]) + "\n" for (s, t, e, w), row in zip(heads, cells)
        ))

    def record(self, msg: Message) -> bool:
        if isinstance(msg, EpochSummary):
            if self._epochs_out is None:
                return False
            self._epochs.append(msg)
            return True
        if isinstance(msg, Event) and self._events is not None:
            data, mirror = to_json(msg.data)
            self._events.writerow([msg.step, repr(msg.time), msg.kind, msg.message, json.dumps(data),
                                   json.dumps(mirror) if mirror else ""])
            return True
        return False

    def finish(self, warnings: list[str]) -> None:
        if self._epochs_out is None:
            return
        train = list(dict.fromkeys(k for e in self._epochs for k in e.train))
        val = list(dict.fromkeys(k for e in self._epochs for k in e.val))
        writer = csv.writer(self._epochs_out, lineterminator="\n")
        writer.writerow(["epoch", "step", "time", *(f"train/{k}" for k in train), *(f"val/{k}" for k in val)])
        for e in self._epochs:
            writer.writerow([e.epoch, e.step, repr(e.time), *(_metric_text(e.train, k) for k in train),
                             *(_metric_text(e.val, k) for k in val)])


def _metric_text(metrics: Mapping[str, float], key: str) -> str:
    if key not in metrics:
        return ""
    value = float(metrics[key])
    return repr(value) if math.isfinite(value) else _nonfinite_name(value)


class JsonlSink(_Sink):
    """Every record as one JSON object per line, in recording order."""

    def __init__(self, schema: Schema, channels: Sequence[str], out: TextIO) -> None:
        self._out = out
        record = _json_record("schema", schema, skip=())
        record["channels"] = list(channels)
        self._write(record)
        self._keys = [json.dumps(name) + ": " for name in channels]

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record, allow_nan=False) + "\n")

    def steps(self, chunk: StepChunk) -> None:
        cells = float32_text(chunk.values)
        finite = np.isfinite(chunk.values)
        rows = cells.tolist()
        odd_rows = np.flatnonzero(~finite.all(axis=1)).tolist() if chunk.values.size else []
        odd: dict[int, str] = {}
        for r in odd_rows:
            cols = np.flatnonzero(~finite[r]).tolist()
            odd[r] = ', "nonfinite": {"values": {' + ", ".join(
                self._keys[c] + '"' + rows[r][c] + '"' for c in cols) + "}}"
            for c in cols:
                rows[r][c] = "null"
        keys = self._keys
        heads = zip(chunk.seq.tolist(), chunk.step.tolist(), chunk.epoch.tolist(), chunk.time.tolist())
        self._out.write("".join(
            f'{{"type": "step", "seq": {s}, "step": {t}, "epoch": {e}, "time": {w!r}, "values": {{'
            + ", ".join([k + v for k, v in zip(keys, row)]) + "}" + odd.get(i, "") + "}\n"
            for i, ((s, t, e, w), row) in enumerate(zip(heads, rows))
        ))

    def record(self, msg: Message) -> bool:
        if isinstance(msg, EpochSummary):
            self._write(_json_record("epoch", msg))
        elif isinstance(msg, Event):
            self._write(_json_record("event", msg))
        elif isinstance(msg, DatasetReport):
            self._write(_json_record("dataset", msg))
        elif isinstance(msg, Preview):
            self._write({"type": "preview", "step": msg.step, "epoch": msg.epoch,
                         "image_shape": list(msg.image.shape), "target_shape": list(msg.target.shape),
                         "prediction_shape": list(msg.prediction.shape)})
        else:
            return False
        return True

    def finish(self, warnings: list[str]) -> None:
        for warning in warnings:
            self._write({"type": "warning", "message": warning})


class TensorBoardSink(_Sink):
    """Steps and epoch metrics as scalars in one TensorBoard event file."""

    def __init__(self, schema: Schema, channels: Sequence[str], out: io.BufferedIOBase, wall_time: float) -> None:
        self._out = out
        self._encoder = ScalarEventEncoder(channels)
        out.write(tfrecord(event(wall_time, 0, file_version=FILE_VERSION)))

    def steps(self, chunk: StepChunk) -> None:
        self._out.write(self._encoder.encode(chunk.time, chunk.step, chunk.values))

    def record(self, msg: Message) -> bool:
        if not isinstance(msg, EpochSummary):
            return False
        scalars = [(f"train/{k}", float(v)) for k, v in msg.train.items()]
        scalars += [(f"val/{k}", float(v)) for k, v in msg.val.items()]
        if scalars:
            self._out.write(tfrecord(event(msg.time, msg.step, scalars=scalars)))
        return True


# --- driving an export ----------------------------------------------------------------------


def default_output(recording: str | os.PathLike[str], fmt: str) -> Path:
    """Where an export goes when no output is named: next to the recording."""
    path = Path(recording)
    return path.with_suffix(".tensorboard" if fmt == "tensorboard" else f".{fmt}")


def event_file_name(schema: Schema) -> str:
    """``events.out.tfevents.<run start>.<host>.octa-tui`` (the name TensorBoard looks for)."""
    started = int(schema.started_at) if schema.started_at > 0 else int(_time.time())
    return f"{EVENT_FILE_PREFIX}{started}.{socket.gethostname()}{EVENT_FILE_SUFFIX}"


def csv_side_files(out: Path) -> tuple[Path, Path]:
    """The epochs and events files that accompany a steps CSV ``out``."""
    stem = out.with_suffix("") if out.suffix == ".csv" else out
    return stem.with_name(stem.name + EPOCHS_SUFFIX), stem.with_name(stem.name + EVENTS_SUFFIX)


def _schema_first(messages: Iterable[Message], path: Path) -> tuple[Schema, Iterable[Message]]:
    iterator = iter(messages)
    first = next(iterator, None)
    if first is None:
        raise RecordingError(f"{path} holds no readable schema record, so there is no run to export")
    if not isinstance(first, Schema):
        raise RecordingError(f"{path} starts with a {type(first).__name__} record instead of the run's schema: "
                             "it is not a complete recording")
    return first, iterator


def export_records(messages: Iterable[Message], sink_for, *, patterns: Sequence[str] = (), every: int = 1,
                   path: Path = Path("recording")) -> tuple[ExportResult, _Sink]:
    """Feed a recording's records to the sink ``sink_for(schema, channel_names)`` builds.

    Steps are thinned to every ``every``-th and cut to the channels ``patterns`` select.
    Returns what was exported and the sink (whose :meth:`_Sink.finish` is still to call).
    """
    if every < 1:
        raise ExportError(f"every must be a positive number of steps, got {every}")
    schema, rest = _schema_first(messages, path)
    names = schema.channels
    columns = select_channels(names, patterns)
    chosen = [names[i] for i in columns]
    if not chosen:
        raise ExportError(f"{path}: the run's schema has no channels, so there are no steps to export")
    all_columns = len(columns) == len(names)
    sink = sink_for(schema, chosen)
    result = ExportResult(channels=len(chosen))
    seen = 0
    for msg in rest:
        if isinstance(msg, StepChunk):
            n = len(msg)
            if msg.values.shape != (n, len(names)):
                raise ExportError(f"{path}: a step chunk is {msg.values.shape[1]} channels wide but the run's "
                                  f"schema has {len(names)}; the recording is damaged")
            rows = every_nth(seen, n, every)
            seen += n
            if rows.size == 0:
                continue
            sub = msg if (every == 1 and all_columns) else StepChunk(
                msg.run_id, msg.seq[rows], msg.step[rows], msg.epoch[rows], msg.time[rows],
                msg.values[np.ix_(rows, columns)],
            )
            sink.steps(sub)
            result.steps += len(sub)
        elif isinstance(msg, Schema):
            continue
        elif sink.record(msg):
            result.records += 1
        else:
            kind = _RECORD_NAMES.get(type(msg), type(msg).__name__)
            result.skipped[kind] = result.skipped.get(kind, 0) + 1
    return result, sink


def export_recording(recording: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | TextIO | None = None,
                     *, patterns: Sequence[str] = (), every: int = 1, overwrite: bool = False) -> ExportResult:
    """Export ``recording`` as ``fmt`` (csv, jsonl or tensorboard) to ``out``.

    ``out`` is a file path (csv, jsonl), a directory (tensorboard), or an open text stream
    (csv, jsonl: steps only for csv). Existing files are refused unless ``overwrite``;
    files are written under a temporary name and renamed when complete, so a failed
    export leaves no half-written file behind. What the recording lost at a torn or
    corrupt tail is in ``warnings`` (what could be read is exported).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = Path(recording)
    if not source.is_file():
        raise ExportError(f"{source}: no such recording (recordings are *.octa files in the trainer's run folder)")
    warnings: list[str] = []
    report = RecordingReport()
    messages = iter_recording(source, warnings, report)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        if fmt == "tensorboard":
            raise ExportError("a TensorBoard export is a folder of event files; name an output folder, not a stream")
        result = _export_to_stream(messages, fmt, out, patterns, every, source, warnings)
        result.report = report
        return result
    target = Path(out) if out is not None else default_output(source, fmt)
    with _Outputs(overwrite, source) as outputs:
        if fmt == "csv":
            epochs_path, events_path = csv_side_files(target)

            def sink_for(schema, chosen):
                return CsvSink(chosen, outputs.text(target), outputs.text(epochs_path), outputs.text(events_path))
        elif fmt == "jsonl":

            def sink_for(schema, chosen):
                return JsonlSink(schema, chosen, outputs.text(target))
        else:
            if target.exists() and not target.is_dir():
                raise ExportError(f"{target} exists and is not a folder; a TensorBoard export is a folder")

            def sink_for(schema, chosen):
                if not target.exists():
                    target.mkdir(parents=True)
                    outputs.made.append(target)
                return TensorBoardSink(schema, chosen, outputs.binary(target / event_file_name(schema)),
                                       schema.started_at or _time.time())
        result, sink = export_records(messages, sink_for, patterns=patterns, every=every, path=source)
        sink.finish(warnings)
    result.files = list(outputs.paths)
    result.warnings = warnings
    result.report = report
    return result


def _export_to_stream(messages, fmt, out, patterns, every, source, warnings) -> ExportResult:
    if fmt == "csv":
        def sink_for(schema, chosen):
            return CsvSink(chosen, out, None, None)
    else:
        def sink_for(schema, chosen):
            return JsonlSink(schema, chosen, out)
    result, sink = export_records(messages, sink_for, patterns=patterns, every=every, path=source)
    sink.finish(warnings)
    out.flush()
    result.warnings = warnings
    return result


class _Outputs:
    """Output files opened under temporary names, renamed into place only on success."""

    def __init__(self, overwrite: bool, source: Path) -> None:
        self.overwrite = overwrite
        self.source = source.resolve()
        self.paths: list[Path] = []
        self.made: list[Path] = []  # folders this export created (removed again if it fails)
        self._open: list[tuple[Any, Path, Path]] = []

    def _claim(self, path: Path) -> Path:
        if path.resolve() == self.source:
            raise ExportError(f"{path} is the recording being exported; name another output")
        if path.exists() and not self.overwrite:
            raise ExportError(f"{path} already exists; refusing to overwrite it (--force overwrites)")
        if not path.parent.is_dir():
            raise ExportError(f"cannot write {path}: folder {path.parent} does not exist")
        return path.with_name(f".{path.name}.partial")

    def text(self, path: Path) -> TextIO:
        partial = self._claim(path)
        handle = open(partial, "w", encoding="utf-8", newline="")
        self._open.append((handle, partial, path))
        return handle

    def binary(self, path: Path) -> io.BufferedIOBase:
        partial = self._claim(path)
        handle = open(partial, "wb")
        self._open.append((handle, partial, path))
        return handle

    def __enter__(self) -> _Outputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Closing flushes what is still buffered (all of a small export), so it can fail too
        # (disk full): every handle is closed and, if anything failed, no partial file stays.
        failure: BaseException | None = None
        for handle, _, _ in self._open:
            try:
                handle.close()
            except OSError as err:
                failure = failure or err
        for _, partial, path in self._open:
            if exc_type is None and failure is None:
                os.replace(partial, path)
                self.paths.append(path)
            else:
                partial.unlink(missing_ok=True)
        for folder in self.made:
            if exc_type is not None or failure is not None:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: a folder we made for a failed export
        if failure is not None and exc_type is None:
            raise failure
