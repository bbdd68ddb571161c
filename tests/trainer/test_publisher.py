"""The probe's publisher thread: every step in order, flushed on close, failures and a full
queue said rather than raised, and the same vectors as publishing on the training thread."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from octa_tui.protocol.messages import ModelSummary, Schema
from octa_tui.trainer.core.layout import VectorLayout
from octa_tui.trainer.core.measure import Layer
from octa_tui.trainer.core.publisher import StepPublisher
from octa_tui.trainer.probe import Probe


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_item_is_handled_once_in_order_and_close_flushes_them():
    # GIVEN a publisher whose handler records what it gets (and on which thread)
    seen: list[int] = []
    threads: set[str] = set()

    def handle(items: list[int]) -> None:
        threads.add(threading.current_thread().name)
        seen.extend(items)

    publisher = StepPublisher(handle, name="test-publisher")
    # WHEN many items are submitted and the publisher is closed at once
    for i in range(5000):
        assert publisher.submit(i)
    publisher.close()
    # THEN every item was handled exactly once, in order, and nothing is pending
    assert seen == list(range(5000))
    assert publisher.handled == 5000 and publisher.pending == 0 and publisher.dropped == 0
    assert publisher.cpu_s > 0
    # AND items submitted after close are dropped and counted, not handled
    assert not publisher.submit(5000)
    assert publisher.dropped == 1 and seen[-1] == 4999


def test_the_background_thread_publishes_without_being_asked():
    # GIVEN a publisher and one item
    done = threading.Event()
    publisher = StepPublisher(lambda items: done.set(), interval_s=0.001)
    # WHEN nothing drains it
    publisher.submit("step")
    # THEN its own thread handles the item (a generous ceiling: the thread wakes every ms)
    assert done.wait(60)
    assert "test" not in threading.current_thread().name
    publisher.close()


def test_a_failing_handler_never_raises_and_is_reported_then_goes_on():
    # GIVEN a handler that fails on one batch
    errors: list[str] = []
    seen: list[int] = []

    def handle(items: list[int]) -> None:
        if 3 in items:
            raise RuntimeError("disk on fire")
        seen.extend(items)

    publisher = StepPublisher(handle, on_error=errors.append, batch=1)
    # WHEN items are submitted and drained
    for i in range(6):
        publisher.submit(i)
    publisher.close()
    # THEN the failure was counted and reported, and every other item went through
    assert seen == [0, 1, 2, 4, 5]
    assert publisher.failures == 1 and publisher.failed_items == 1
    assert errors == ["RuntimeError: disk on fire"]


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    # GIVEN a publisher whose thread is stuck in its handler, with room for 4 items
    release = threading.Event()
    started = threading.Event()
    dropped_told: list[int] = []
    seen: list[int] = []

    def handle(items: list[int]) -> None:
        started.set()
        release.wait(60)
        seen.extend(items)

    publisher = StepPublisher(handle, on_dropped=dropped_told.append, max_pending=4, interval_s=0.001)
    publisher.submit(0)
    assert started.wait(60)  # the thread holds item 0
    # WHEN more items come than the queue holds
    accepted = [publisher.submit(i) for i in range(1, 10)]
    # THEN the submitter was never blocked: 4 were queued, the rest dropped and counted
    assert accepted == [True] * 4 + [False] * 5
    assert publisher.dropped == 5
    # AND once the thread goes on, the queued items are handled and the drop is told
    release.set()
    publisher.close()
    assert seen == [0, 1, 2, 3, 4]
    assert dropped_told == [5]


def test_drain_inside_a_handler_does_not_recurse():
    # GIVEN a handler that drains its own publisher (as publishing a record from it would)
    seen: list[int] = []
    publisher: StepPublisher

    def handle(items: list[int]) -> None:
        publisher.drain()
        seen.extend(items)

    publisher = StepPublisher(handle, batch=1)
    for i in range(3):
        publisher.submit(i)
    publisher.close()
    assert seen == [0, 1, 2]


def _schema(layers: list[Layer]) -> Schema:
    return Schema(run_id="ab" * 16, task="custom", model=ModelSummary("m", 1, "cpu"), loss=("total",),
                  grad=tuple(layer.name for layer in layers),
                  gradstat=("total_norm", "n_over_bound", "max_param_norm", "nonfinite"), out=(), opt=("lr",),
                  time=(), loss_expects_probabilities=True, started_at=0.0, config={})


@pytest.mark.parametrize("grouped", [True, False])
def test_assembling_many_rows_equals_assembling_each(grouped):
    # GIVEN a layout with several parameters per layer (or one each) and steps with a NaN
    if grouped:
        layers = [Layer("a", "L", (0, 1)), Layer("b", "L", (2,)), Layer("c", "L", (3, 4, 5))]
    else:
        layers = [Layer(f"l{i}", "L", (i,)) for i in range(4)]
    params = sum(len(layer.params) for layer in layers)
    layout = VectorLayout(_schema(layers), layers, params, ["gradstat/total_norm", "loss/total"],
                          ["gradstat/nonfinite", "opt/lr"])
    rng = np.random.default_rng(0)
    measured = (rng.random((7, layout.device_count)) * 20).astype(np.float32)
    measured[2, 1] = np.nan
    host = rng.random((7, 2))
    # WHEN the rows are assembled at once
    rows = layout.assemble_rows(measured, host, 10.0)
    # THEN each row is what assembling it alone gives
    for r in range(7):
        np.testing.assert_array_equal(rows[r], layout.assemble(measured[r], list(host[r]), 10.0))


def _run_steps(background: bool, steps: int = 40) -> tuple[np.ndarray, list[int], Schema]:
    """A small real loop; every published vector (via on_values) and its step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = Probe(model, loss_components=("mse",), optimizer=optimizer, update_every=3, background=background)
    rows: list[np.ndarray] = []
    order: list[int] = []
    probe.on_values.append(lambda step, epoch, vector: (rows.append(vector.copy()), order.append(step)))
    x = torch.rand(16, 3)
    y = x.sum(dim=1, keepdim=True)
    for i in range(steps):
        out = model(x)
        mse = nn.functional.mse_loss(out, y)
        optimizer.zero_grad()
        mse.backward()
        probe.after_backward()
        optimizer.step()
        kind = {0: {"activation": "sigmoid"}, 1: {"activated": torch.sigmoid(out)}, 2: {}}[i % 3]
        probe.end_step(loss=mse, components={"mse": mse.item() if i % 5 == 0 else mse}, outputs=out, **kind)
    probe.close()
    return np.stack(rows), order, probe.schema


def test_the_publisher_thread_publishes_the_same_vectors_as_the_training_thread(monkeypatch):
    # GIVEN the same loop run with the publisher thread (which also takes the small outputs'
    # statistics), and with everything measured and published on the training thread
    threaded, order, schema = _run_steps(background=True)
    monkeypatch.setattr("octa_tui.trainer.probe.DEFER_OUTPUT_ELEMENTS", 0)
    inline, _, _ = _run_steps(background=False)
    # THEN every step arrived in order with the same numbers (timing channels aside)
    assert order == list(range(40))
    timing = [schema.index(f"time/{name}") for name in ("step_s", "samples_per_s", "memory_mb")]
    keep = [i for i in range(threaded.shape[1]) if i not in timing]
    np.testing.assert_array_equal(threaded[:, keep], inline[:, keep])


def test_a_failing_on_values_callback_becomes_a_warning_not_an_exception(tmp_path, capsys):
    # GIVEN a started probe with a callback that raises
    model = nn.Linear(3, 1)
    probe = Probe.start(model, record=str(tmp_path / "r.octa"), announce=False, link_options={"spill": None})

    def broken(step: int, epoch: int, vector: np.ndarray) -> None:
        raise ValueError("callback bug")

    probe.on_values.append(broken)
    # WHEN the loop runs
    for _ in range(5):
        model(torch.rand(4, 3)).sum().backward()
        probe.end_step(loss=1.0)
    probe.flush()
    # THEN nothing was raised into it, every step was published, and a warning said what failed (once)
    assert probe.published == 5 and len(probe.link.history.steps) == 5
    warnings = [e for e in probe.link.history.events if e.kind == "warning" and e.data.get("source") == "publisher"]
    assert len(warnings) == 1 and "callback bug" in warnings[0].message
    assert "callback bug" in capsys.readouterr().err
    probe.close()


def test_a_step_whose_loss_cannot_be_read_is_skipped_and_said(tmp_path):
    # GIVEN a probe and one step whose loss tensor has two elements
    model = nn.Linear(3, 1)
    probe = Probe.start(model, record=str(tmp_path / "r.octa"), announce=False, link_options={"spill": None})
    for i in range(4):
        model(torch.rand(4, 3)).sum().backward()
        probe.end_step(loss=torch.ones(2) if i == 1 else torch.tensor(0.5))
    probe.flush()
    # THEN the other steps are published, the bad one is counted and said
    assert list(probe.link.history.steps.step) == [0, 2, 3]
    assert probe.publisher.failed_items == 1
    assert any("step 1" in e.message for e in probe.link.history.events if e.kind == "warning")
    probe.close()


def test_records_follow_the_steps_published_before_them(tmp_path):
    # GIVEN steps pending on the publisher thread
    from octa_tui.protocol.recording import read_recording

    model = nn.Linear(3, 1)
    probe = Probe.start(model, record=str(tmp_path / "r.octa"), announce=False)
    for _ in range(3):
        model(torch.rand(4, 3)).sum().backward()
        probe.end_step(loss=1.0)
    # WHEN an event is published at once
    probe.event("warning", "after three steps")
    # THEN the link had every earlier step when it took the event (and the recording keeps all)
    assert len(probe.link.history.steps) == 3
    probe.close()
    history = read_recording(tmp_path / "r.octa").history
    assert list(history.steps.step) == [0, 1, 2]
    assert [e.message for e in history.events if e.kind == "warning"] == ["after three steps"]
    assert not math.isnan(history.steps.values[-1, history.schema.index("loss/total")])


def test_steps_pending_at_interpreter_exit_are_recorded(tmp_path):
    # GIVEN a script that records 50 steps and exits without closing its probe
    import subprocess
    import sys

    from octa_tui.protocol.recording import read_recording

    script = tmp_path / "loop.py"
    script.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from octa_tui.trainer.probe import Probe\n"
        "torch.set_num_threads(1)\n"
        "model = nn.Linear(3, 1)\n"
        f"probe = Probe.start(model, record={str(tmp_path / 'exit.octa')!r}, announce=False,\n"
        "                    link_options={'spill': None})\n"
        "for _ in range(50):\n"
        "    model(torch.rand(4, 3)).sum().backward()\n"
        "    probe.end_step(loss=1.0)\n"
    )
    # WHEN it runs to its end
    subprocess.run([sys.executable, str(script)], check=True, timeout=600)
    # THEN every step is in the recording
    history = read_recording(tmp_path / "exit.octa").history
    assert list(history.steps.step) == list(range(50))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_handles_its_items_itself():
    # GIVEN a publisher whose thread runs in this process
    import os

    seen: list[str] = []
    publisher = StepPublisher(seen.extend)
    publisher.submit("parent")
    publisher.drain()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # WHEN a forked child (a DataLoader worker) submits an item
        try:
            ok = publisher.submit("child") and seen == ["parent", "child"] and publisher.pending == 0
            os.write(write_end, b"ok" if ok else repr(seen).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 200)
    os.close(read_end)
    os.waitpid(pid, 0)
    # THEN the child handled it at once, on its own thread (it has no publisher thread of its own)
    assert answer == b"ok"
    publisher.close()
    assert seen == ["parent"]
