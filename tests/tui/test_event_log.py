"""GIVEN a run that saves its checkpoints every epoch WHEN the event log is drawn THEN each file
shows only at its newest write, so commands and warnings stay in view."""

from octa_tui.protocol.messages import Event
from octa_tui.tui.panels import event_lines

RUN = "00000000000000aa"


def test_rewritten_checkpoints_show_once_at_their_newest_write() -> None:
    events = [Event(RUN, 10 * e, float(e), "checkpoint_saved", f"checkpoint last.pt written (end of epoch {e})",
                    {"path": "/run/last.pt"}) for e in range(1, 30)]
    events.insert(3, Event(RUN, 35, 3.5, "command_applied", "set_lr: lr 0.001 -> 0.002"))
    events.append(Event(RUN, 300, 30.0, "checkpoint_saved", "checkpoint best.pt written", {"path": "/run/best.pt"}))
    lines = [text.plain for _, text in event_lines(events, [], [])]
    assert len(lines) == 3
    assert "set_lr" in lines[0]
    assert "end of epoch 29" in lines[1] and "best.pt" in lines[2]
