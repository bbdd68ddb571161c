"""Hysteresis: verdicts appear after holding, clear after stopping, and never flicker."""

from __future__ import annotations

import pytest
from diagnosis_histories import Builder, healthy_run, heatmap_schema

from octa_tui.diagnosis import Engine, Hysteresis, Severity, Thresholds, Verdict
from octa_tui.protocol.run import RunHistory


def verdict(code: str, severity: Severity = Severity.WARN, step: int = 0) -> Verdict:
    return Verdict(code, severity, code, f"evidence at {step}", "cause", step=step)


def test_a_signal_flipping_every_evaluation_never_shows() -> None:
    h = Hysteresis(hold=3, release=3)
    shown = [h.update([verdict("x")] if i % 2 == 0 else []) for i in range(40)]
    assert all(s == [] for s in shown)


def test_a_steady_signal_appears_on_the_hold_th_evaluation_and_clears_after_release() -> None:
    h = Hysteresis(hold=3, release=2)
    assert h.update([verdict("x", step=1)]) == []
    assert h.update([verdict("x", step=2)]) == []
    assert [v.step for v in h.update([verdict("x", step=3)])] == [3]
    # WHEN it stops holding THEN the last verdict stays for release-1 evaluations, then clears
    assert [v.step for v in h.update([])] == [3]
    assert h.update([]) == []


def test_a_short_gap_does_not_clear_a_shown_verdict() -> None:
    h = Hysteresis(hold=2, release=3)
    h.update([verdict("x")])
    h.update([verdict("x")])
    for _ in range(2):
        assert len(h.update([])) == 1
    assert len(h.update([verdict("x")])) == 1


def test_shown_verdicts_are_most_severe_first() -> None:
    h = Hysteresis(hold=1, release=1)
    shown = h.update([verdict("a", Severity.INFO), verdict("b", Severity.CRIT), verdict("c", Severity.WARN)])
    assert [v.code for v in shown] == ["b", "c", "a"]


def test_hold_and_release_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Hysteresis(hold=0)


def out_of_range_step(b: Builder, bad: bool) -> None:
    b.steps(1, out__act_min=-8.5 if bad else 0.01, out__act_max=1.5 if bad else 0.99)


def test_engine_never_shows_a_verdict_whose_rule_flips_every_evaluation() -> None:
    # GIVEN a run whose newest output range alternates between [-8.5, 1.5] and [0.01, 0.99]
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=3, release=3)
    seen = []
    for i in range(30):
        out_of_range_step(b, bad=i % 2 == 0)
        seen += [v.code for v in engine.evaluate(b.history)]
    # THEN "missing sigmoid" never appears
    assert "missing_sigmoid" not in seen


def test_engine_shows_a_held_verdict_then_clears_it() -> None:
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=3, release=3)
    codes = []
    for bad in [True] * 4 + [False] * 4:
        out_of_range_step(b, bad)
        codes.append("missing_sigmoid" in {v.code for v in engine.evaluate(b.history)})
    assert codes == [False, False, True, True, True, True, False, False]


def test_repeated_evaluations_of_an_unchanged_history_do_not_count() -> None:
    # GIVEN a UI refreshing faster than the run streams
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=3)
    out_of_range_step(b, True)
    # WHEN it evaluates the same history many times THEN one evaluation is counted, nothing shows yet
    for _ in range(10):
        assert engine.evaluate(b.history) == []
    out_of_range_step(b, True)
    assert engine.evaluate(b.history) == []
    out_of_range_step(b, True)
    assert [v.code for v in engine.evaluate(b.history)] == ["missing_sigmoid"]


def test_a_new_run_starts_with_a_clean_slate() -> None:
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=1)
    out_of_range_step(b, True)
    assert engine.evaluate(b.history)
    assert engine.evaluate(healthy_run(300, run_id="00000000000000d2").history) == []


def test_a_fresh_copy_of_the_same_history_keeps_its_verdicts() -> None:
    # GIVEN a monitor that hands the engine a new copy of the run's history at every refresh
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=3)
    shown = []
    for _ in range(3):
        out_of_range_step(b, True)
        copy = RunHistory(b.schema)
        copy.add(b.history.steps.chunk(b.schema.run_id, 0, len(b.history.steps)))
        shown = engine.evaluate(copy)
    # THEN hysteresis still counts: the verdict appears on the third refresh
    assert [v.code for v in shown] == ["missing_sigmoid"]


def test_engine_speaks_chinese_when_asked() -> None:
    b = Builder(heatmap_schema()).steps(50, out__act_min=-8.489, out__act_max=1.476)
    engine = Engine(lang="zh", hold=1)
    [v] = [v for v in engine.evaluate(b.history) if v.code == "missing_sigmoid"]
    assert "缺少 Sigmoid" in v.cause


def test_unknown_language_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="en, zh"):
        Engine(lang="fr")


def test_a_healthy_run_followed_step_by_step_shows_nothing() -> None:
    full = healthy_run(600)
    engine = Engine()
    live = RunHistory(full.schema)
    live.dataset = full.history.dataset
    for start in range(0, 600, 25):
        live.add(full.history.steps.chunk(full.schema.run_id, start, start + 25))
        assert [v for v in engine.evaluate(live) if v.severity >= Severity.WARN] == []


def test_a_history_that_goes_back_in_time_starts_over() -> None:
    # GIVEN a replay shown up to a held verdict WHEN the user seeks back to before the fault
    b = Builder(heatmap_schema()).steps(50)
    for _ in range(3):
        out_of_range_step(b, True)
    engine = Engine(Thresholds(recent_steps=1), hold=3)
    replay = RunHistory(b.schema)
    for n in (51, 52, 53):
        replay.add(b.history.steps.chunk(b.schema.run_id, len(replay.steps), n))
        shown = engine.evaluate(replay)
    assert [v.code for v in shown] == ["missing_sigmoid"]
    rewound = RunHistory(b.schema)
    rewound.add(b.history.steps.chunk(b.schema.run_id, 0, 50))
    # THEN the verdict from the future is gone
    assert engine.evaluate(rewound) == []


def test_an_explosion_streamed_between_two_evaluations_is_shown_at_once_then_clears() -> None:
    # GIVEN a fast run: 200 steps arrive between two refreshes of the monitor, a burst of
    # gradients over the bound in 5 of them, then healthy steps
    b = healthy_run(300)
    engine = Engine(hold=3, release=3)
    assert "gradient_explosion" not in {v.code for v in engine.evaluate(b.history)}
    b.steps(40).steps(5, gradstat__n_over_bound=16, gradstat__max_param_norm=1870.0).steps(155)
    # WHEN the engine evaluates once THEN it names the explosion at once (a measured fact that
    # a hold of three evaluations would let pass), with the burst's worst step
    shown = {v.code: v for v in engine.evaluate(b.history)}
    assert "gradient_explosion" in shown
    evidence = shown["gradient_explosion"].evidence
    assert "(max 1.87e+03) at step 344" in evidence and "5 of the last 200 steps" in evidence
    # AND it stays up for the release evaluations, then clears
    codes = []
    for _ in range(4):
        b.steps(200)
        codes.append("gradient_explosion" in {v.code for v in engine.evaluate(b.history)})
    assert codes == [True, True, False, False]


def test_a_nan_step_streamed_between_two_evaluations_is_critical_at_once() -> None:
    b = healthy_run(300)
    engine = Engine(hold=3, release=3)
    engine.evaluate(b.history)
    b.steps(50).steps(1, loss__total=float("nan")).steps(149)
    shown = engine.evaluate(b.history)
    assert shown and shown[0].code == "nonfinite" and shown[0].severity == Severity.CRIT


def test_a_sustained_verdict_still_waits_for_its_hold() -> None:
    # the output-range rule is not an event: its verdict needs hold evaluations in a row
    b = Builder(heatmap_schema()).steps(50)
    engine = Engine(Thresholds(recent_steps=1), hold=3)
    out_of_range_step(b, True)
    assert engine.evaluate(b.history) == []


def test_an_immediate_consequence_brings_its_measured_cause_first() -> None:
    # GIVEN seed 002's CRAFT: outputs outside [0, 1] and an explosion in the same steps
    from diagnosis_histories import Builder as _Builder
    from diagnosis_histories import heatmap_schema as _heatmap

    b = _Builder(_heatmap()).steps(
        30, out__act_min=-8.489, out__act_max=1.476, out__raw_min=-8.489, out__raw_max=1.476,
        gradstat__max_param_norm=32.3, gradstat__n_over_bound=16,
    )
    engine = Engine()
    shown = engine.evaluate(b.history)
    # THEN on the first evaluation the explosion (shown at once) comes with its cause, listed first
    assert [v.code for v in shown][:2] == ["missing_sigmoid", "gradient_explosion"]
    assert shown[1].caused_by == "missing_sigmoid" and engine.root_cause().code == "missing_sigmoid"
