"""GIVEN a change applied mid-run WHEN the event log is drawn THEN its fix trial's outcome reads
right after the change, coloured by outcome, with the undo key named when it hurt."""

from octa_tui.diagnosis.trial import TrialOutcome
from octa_tui.protocol.messages import Event
from octa_tui.tui.panels import event_lines

RUN = "00000000000000aa"


def _trial(outcome: str) -> TrialOutcome:
    return TrialOutcome(step=150, ops=("set_lr",), messages=("lr 1e-06 -> 0.001",), metric="loss/total",
                        outcome=outcome, predicted=0.7, observed=0.5, level=0.7, effect=0.29, noise=0.02,
                        steps_judged=55)


def test_trial_outcome_follows_the_change_it_judges() -> None:
    events = [
        Event(RUN, 150, 100.0, "command_applied", "set_lr: lr 1e-06 -> 0.001"),
        Event(RUN, 200, 105.0, "checkpoint_saved", "checkpoint last.pt written"),
    ]
    lines = [text.plain for _, text in event_lines(events, [], [], [_trial("helped")])]
    assert "set_lr: lr 1e-06 -> 0.001" in lines[0]
    assert "trial set_lr @150: helped" in lines[1]
    assert "checkpoint" in lines[2]


def test_a_trial_that_hurt_names_the_undo_key() -> None:
    events = [Event(RUN, 150, 100.0, "command_applied", "set_lr: lr 1e-3 -> 1e-1")]
    (_, change), (_, trial) = event_lines(events, [], [], [_trial("hurt")])
    assert "hurt" in trial.plain and "(u undoes)" in trial.plain
    assert any("red" in str(span.style) for span in trial.spans)


def test_a_pending_trial_of_one_step_says_step() -> None:
    pending = TrialOutcome(step=150, ops=("set_lr",), messages=(), metric="loss/total", outcome="pending",
                           predicted=float("nan"), observed=float("nan"), level=float("nan"), effect=float("nan"),
                           noise=float("nan"), steps_judged=1)
    events = [Event(RUN, 150, 100.0, "command_applied", "set_lr: lr 1e-06 -> 0.001")]
    (_, _), (_, trial) = event_lines(events, [], [], [pending])
    assert "(1 step after the change so far)" in trial.plain
    assert "11 steps" in event_lines(events, [], [], [TrialOutcome(**{**pending.__dict__, "steps_judged": 11})])[1][1].plain


def test_a_pos_weight_set_from_none_reads_as_the_panel_showed_it() -> None:
    # GIVEN the trainer's event for a pos_weight change from none (the optimizer panel shows 1.00 for none)
    events = [Event(RUN, 150, 100.0, "command_applied", "set_pos_weight: pos_weight none -> 97.9",
                    {"op": "set_pos_weight", "old": None, "new": 97.9})]
    (_, line), = event_lines(events, [], [])
    # THEN the log says the same value, not "none"
    assert "set_pos_weight: pos_weight 1.00 (none set) -> 97.9" in line.plain and " none " not in line.plain
