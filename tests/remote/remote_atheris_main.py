"""Coverage-guided fuzzing of the trainer's control path with atheris (when it is installed).

Usage: python remote_atheris_main.py -runs=N. A TrainerLink and a DEALER socket live in
this one process; every input becomes 1-3 frames sent to the link's control socket. An
input that is not a valid command must get an error reply and yield no pending command.
Exits 0 after N runs; any failed check crashes with the input saved by libFuzzer.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import zmq  # noqa: F401 - instrumented for the fuzzer

    from octa_tui.protocol import Command, ProtocolError, Reply, decode
    from octa_tui.protocol.commands import validate_command
    from octa_tui.protocol.link import TrainerLink

from remote_helpers import keyed_dealer, make_schema  # noqa: E402

LINK = TrainerLink(make_schema(), heartbeat_s=60)
CLIENT = keyed_dealer(LINK.control_endpoint)  # the owner's socket: with the run's keys


def valid(frames: list[bytes]) -> bool:
    try:
        msg = decode(frames)
        return isinstance(msg, Command) and bool(validate_command(msg))
    except ProtocolError:
        return False


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    frames = [provider.ConsumeBytes(provider.ConsumeIntInRange(0, 96)) for _ in range(provider.ConsumeIntInRange(1, 3))]
    if valid(frames):
        return
    CLIENT.send_multipart(frames)
    for _ in range(500):
        pending = LINK.poll_commands()
        assert not pending, f"{frames!r} became a pending command"
        if CLIENT.poll(10):
            reply = decode(CLIENT.recv_multipart())
            assert isinstance(reply, Reply) and reply.status == "error" and reply.reason, reply
            return
    raise AssertionError(f"no reply to {frames!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
