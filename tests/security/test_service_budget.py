"""The service budget (pure logic, fake clocks) and the history answer's bounds, on a real link."""

from __future__ import annotations

import time

import pytest

from octa_tui.protocol.link import MAX_HISTORY_STREAMS, ServiceBudget, TrainerLink
from octa_tui.protocol.messages import Command, Reply


class Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0


def budget(clocks: Clocks, share: float = 0.03, burst_s: float = 0.02) -> ServiceBudget:
    return ServiceBudget(share, burst_s, clock=lambda: clocks.wall, cost_clock=lambda: clocks.cpu)


def test_work_is_held_to_its_share_of_the_time_that_passed():
    clocks = Clocks()
    b = budget(clocks)
    served = 0.0
    for _ in range(1000):  # a loop of 1 ms steps, each boundary wanting 1 ms of service
        clocks.wall += 0.001
        if b.begin():
            while b.left() and clocks.cpu - b._start < 0.001:
                clocks.cpu += 0.0001
                served += 0.0001
        b.end()
    # THEN over 1 s the service took about 3% (plus the first burst), not the 50% asked for
    assert served <= 0.03 * 1.0 + 0.02 + 0.0002
    assert served >= 0.03 * 1.0 - 0.002


def test_an_expensive_unit_is_paid_back_by_skipping_later_boundaries():
    clocks = Clocks()
    b = budget(clocks, burst_s=0.001)
    assert b.begin()
    clocks.cpu += 0.01  # one unit took 10 ms
    b.end()
    skipped = 0
    while True:
        clocks.wall += 0.001
        if b.begin():
            b.end()
            break
        b.end()
        skipped += 1
    assert skipped >= 300  # 10 ms at 3% of each 1 ms step: ~333 steps


def test_an_idle_or_paused_loop_still_earns_credit():
    clocks = Clocks()
    b = budget(clocks)
    b.begin()
    clocks.cpu += 0.05
    b.end()  # deep in debt
    clocks.wall += 2.0  # two seconds paused, no CPU used
    assert b.begin()


def _non_reader(endpoint: str):
    """A DEALER of the owner (the run's keys) that takes at most 2 messages and never reads."""
    import zmq

    from octa_tui.protocol.keys import client_keys_for, secure_client_socket

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 2)
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    secure_client_socket(sock, client_keys_for(endpoint))
    sock.connect(endpoint)
    return sock


def test_one_history_answer_per_monitor_and_a_bounded_number_at_once():
    import numpy as np

    from octa_tui.protocol import ModelSummary, Schema, decode, encode, new_run_id

    schema = Schema(run_id=new_run_id(), task="segmentation", model=ModelSummary("UNet", 10), loss=("total",),
                    grad=tuple(f"l{i}" for i in range(64)), opt=("lr",))
    link = TrainerLink(schema, spill=None)
    sockets = [_non_reader(link.control_endpoint) for _ in range(MAX_HISTORY_STREAMS + 2)]
    try:
        for seq in range(200_000):  # ~60 MB of history
            link.history.steps.append(seq, seq, 0, 1.0, np.ones(schema.width, np.float32))
        link._seq = 200_000
        # WHEN each client asks for the history (the first one twice) and none reads
        for i, sock in enumerate(sockets):
            sock.send_multipart(encode(Command("history", {"from_seq": 0}, request_id=f"h{i}")))
        deadline = time.monotonic() + 60
        while link.history_streams < MAX_HISTORY_STREAMS and time.monotonic() < deadline:
            link.poll_commands()
            time.sleep(0.005)
        sockets[0].send_multipart(encode(Command("history", {"from_seq": 0}, request_id="again")))
        for _ in range(300):
            link.poll_commands()
            time.sleep(0.002)
        # THEN at most MAX_HISTORY_STREAMS answers are being sent, each held back by its full queue
        assert link.history_streams == MAX_HISTORY_STREAMS
        # AND the clients over the limit got an error reply saying why (the first replies they can read);
        # which clients those are depends on the order their requests arrived in, not the order sent
        firsts = []
        for sock in sockets:
            assert sock.poll(60_000)
            firsts.append(decode(sock.recv_multipart()))
        refused = [m for m in firsts if isinstance(m, Reply)]
        answered = [m for m in firsts if isinstance(m, Schema)]  # a history answer begins with the schema
        assert len(refused) == len(sockets) - MAX_HISTORY_STREAMS and len(answered) == MAX_HISTORY_STREAMS, firsts
        reasons = [m.reason for m in refused if not m.ok]
        assert len(reasons) == len(refused) and all("at most" in reason for reason in reasons), refused
    finally:
        for sock in sockets:
            sock.close(0)
        link.close()


def test_a_second_history_request_while_one_is_sent_is_refused():
    import numpy as np

    from octa_tui.protocol import ModelSummary, Schema, decode, encode, new_run_id

    schema = Schema(run_id=new_run_id(), task="segmentation", model=ModelSummary("UNet", 10), loss=("total",),
                    grad=tuple(f"l{i}" for i in range(64)), opt=("lr",))
    link = TrainerLink(schema, spill=None)
    sock = _non_reader(link.control_endpoint)
    try:
        for seq in range(200_000):
            link.history.steps.append(seq, seq, 0, 1.0, np.ones(schema.width, np.float32))
        sock.send_multipart(encode(Command("history", {"from_seq": 0}, request_id="first")))
        deadline = time.monotonic() + 60
        while link.history_streams < 1 and time.monotonic() < deadline:
            link.poll_commands()
            time.sleep(0.001)
        sock.send_multipart(encode(Command("history", {"from_seq": 0}, request_id="second")))
        for _ in range(300):
            link.poll_commands()
            time.sleep(0.002)
        # THEN only one answer is under way for it, and the trainer holds a bounded part of it
        assert link.history_streams == 1
        # AND reading everything shows the second request was refused, the first answered whole
        replies = {}
        deadline = time.monotonic() + 60
        while len(replies) < 2 and time.monotonic() < deadline:
            link.poll_commands()
            time.sleep(0.001)  # a step's work: the service earns its share of it
            while sock.poll(0):
                msg = decode(sock.recv_multipart())
                if isinstance(msg, Reply):
                    replies[msg.request_id] = msg
        assert replies["first"].ok and replies["first"].data["chunks"] > 1
        assert not replies["second"].ok and "still being sent to this monitor" in replies["second"].reason
    finally:
        sock.close(0)
        link.close()


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_a_share_outside_0_1_is_refused(share):
    with pytest.raises(ValueError, match="share"):
        ServiceBudget(share)
