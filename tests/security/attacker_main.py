"""Another local user's attempts on a trainer (run by test_other_user.py as uid 65534).

Usage: attacker_main.py TELEMETRY CONTROL RUN_FILE SECONDS. Prints one JSON line: what
the attempts got (messages, replies, the monitor's message, the run file's readability).
"""

from __future__ import annotations

import json
import sys
import time

import zmq

from octa_tui.protocol import encode
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.messages import Command
from octa_tui.protocol.transport import ControlTimeout


def main(telemetry: str, control: str, run_file: str, seconds: float) -> None:
    out: dict = {}
    context = zmq.Context()
    # 1. read the telemetry with a plain SUB; a fresh one every half second, since a SUB whose
    # handshake is refused tries only once or twice (one refusal could be the trainer's only sight of it)
    def subscriber() -> zmq.Socket:
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(telemetry)
        return sock

    sub = subscriber()
    subscribers = 1
    # 2. steer with a plain DEALER: set_lr 0.9, pause, stop
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(control)
    for op, args in (("set_lr", {"lr": 0.9}), ("pause", {}), ("stop", {})):
        dealer.send_multipart(encode(Command(op, args, request_id=f"attack-{op}")), zmq.NOBLOCK)
    received = replies = 0
    deadline = time.monotonic() + seconds
    renew_at = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if time.monotonic() >= renew_at:
            sub.close(0)
            sub, subscribers, renew_at = subscriber(), subscribers + 1, time.monotonic() + 0.5
        if sub.poll(50):
            sub.recv_multipart()
            received += 1
        if dealer.poll(0):
            dealer.recv_multipart()
            replies += 1
    out["telemetry_messages"] = received
    out["control_replies"] = replies
    out["subscribers"] = subscribers
    sub.close(0)
    dealer.close(0)
    # 3. what a monitor of this user is told
    try:
        with RunFollower(telemetry, control, timeout_s=seconds) as follower:
            follower.connect()
        out["monitor"] = "connected"
    except ControlTimeout as exc:
        out["monitor"] = str(exc)
    # 4. what `octa-tui connect` prints (one line, before any screen)
    import contextlib
    import io

    from octa_tui.tui.cli import main as octa_tui

    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        code = octa_tui(["connect", telemetry, "--control", control, "--timeout", str(seconds)])
    out["cli"] = [code, said.getvalue().strip()[-600:]]
    # 5. the run file, which holds the keys
    try:
        with open(run_file) as handle:
            out["run_file"] = "read " + str(len(handle.read()))
    except OSError as exc:
        out["run_file"] = type(exc).__name__
    context.term()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
