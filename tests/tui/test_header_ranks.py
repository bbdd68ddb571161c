"""GIVEN a run trained under torchrun WHEN the header is drawn THEN it shows how many ranks there
are and each one's latest step time, with a straggler marked; a single-process run shows none."""

from octa_tui.protocol.messages import Event, ModelSummary, Schema
from octa_tui.protocol.run import RunHistory
from octa_tui.tui.panels import header_facts, render_header
from octa_tui.tui.sources import SourceStatus

RUN = "00000000000000aa"


def _history(world_size: int | None) -> RunHistory:
    config = {"world_size": world_size} if world_size else {}
    return RunHistory(Schema(RUN, "segmentation", ModelSummary("UNet", 1000), ("total",), ("enc",), config=config))


def test_ranks_and_a_straggler_are_shown() -> None:
    history = _history(3)
    status = SourceStatus("live")
    assert "ranks 3" in render_header(header_facts(history, status)).plain  # before the first gather
    history.add(Event(RUN, 50, 1.0, "rank_times", "step time per rank", {"step_s": [0.120, 0.118, 0.250], "stragglers": [2]}))
    text = render_header(header_facts(history, status)).plain
    assert "ranks 3: 120 118 250! ms" in text


def test_a_single_process_run_shows_no_ranks() -> None:
    assert "ranks" not in render_header(header_facts(_history(None), SourceStatus("live"))).plain
