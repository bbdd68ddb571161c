"""CurveZMQ keys: only listed monitors get in, a wrong key is a clear error, never a hang."""

from __future__ import annotations

import logging
import stat
import time

import pytest
from remote_helpers import make_schema, served_link

from octa_tui.protocol import ProtocolError
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.keys import (
    AUTHORIZED,
    ClientCurve,
    KeyFileError,
    ServerCurve,
    generate_keys,
)
from octa_tui.protocol.link import TrainerLink
from octa_tui.protocol.transport import KeyRefused, TelemetrySubscriber

LOOPBACK = "tcp://127.0.0.1:0"


@pytest.fixture
def keys(tmp_path):
    """A trainer key folder authorising one monitor, that monitor's folder, and an outsider's."""
    trainer, monitor, outsider = tmp_path / "trainer", tmp_path / "monitor", tmp_path / "outsider"
    generate_keys(trainer, "trainer")
    for folder in (monitor, outsider):
        generate_keys(folder, "monitor")
        (folder / "trainer.key").write_bytes((trainer / "trainer.key").read_bytes())
    (trainer / AUTHORIZED / "laptop.key").write_bytes((monitor / "monitor.key").read_bytes())
    return trainer, monitor, outsider


def test_generated_secret_key_is_private_and_never_overwritten(tmp_path):
    # GIVEN a fresh key pair
    public, secret = generate_keys(tmp_path / "k")
    # THEN only the owner can read the secret; the public key is readable
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    # WHEN generating again into the same folder THEN it refuses rather than replace the pair
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keys(tmp_path / "k")


def test_missing_keys_say_how_to_make_them(tmp_path):
    with pytest.raises(KeyFileError, match="octa-tui keys generate"):
        ServerCurve.from_dir(tmp_path)
    generate_keys(tmp_path, "trainer")
    with pytest.raises(KeyFileError, match="holds no public keys"):
        ServerCurve.from_dir(tmp_path)
    generate_keys(tmp_path / "laptop", "monitor")
    with pytest.raises(KeyFileError, match="trainer.key"):
        ClientCurve.from_dir(tmp_path / "laptop")


def test_non_loopback_bind_without_keys_is_refused_with_the_ways_out():
    # GIVEN no keys and no --insecure WHEN binding every interface THEN it refuses, naming tunnel and keys
    with pytest.raises(ProtocolError) as err:
        TrainerLink(make_schema(), telemetry="tcp://0.0.0.0:0")
    assert "ssh -L" in str(err.value) and "--keys" in str(err.value) and "--insecure" in str(err.value)


def test_listed_monitor_follows_the_encrypted_run(keys):
    trainer, monitor, _ = keys
    with served_link(telemetry=LOOPBACK, control=LOOPBACK, curve=ServerCurve.from_dir(trainer)) as served:
        follower = RunFollower(served.link.telemetry_endpoint, served.link.control_endpoint, timeout_s=120,
                               curve=ClientCurve.from_dir(monitor))
        with follower:
            history = follower.connect()
            before = len(history.steps)
            deadline = time.monotonic() + 120
            while len(follower.history.steps) < before + 20 and time.monotonic() < deadline:
                follower.poll(0.1)
            # THEN history came over the encrypted control socket and live steps over encrypted PUB
            assert before > 0
            assert len(follower.history.steps) >= before + 20
            assert served.link.security == "curve"


def test_unlisted_monitor_gets_a_clear_refusal_and_the_trainer_logs_it(keys, caplog):
    trainer, _, outsider = keys
    caplog.set_level(logging.WARNING, logger="octa_tui.keys")
    with served_link(telemetry=LOOPBACK, control=LOOPBACK, curve=ServerCurve.from_dir(trainer)) as served:
        follower = RunFollower(served.link.telemetry_endpoint, served.link.control_endpoint, timeout_s=120,
                               curve=ClientCurve.from_dir(outsider))
        # THEN the trainer answers with a refusal (KeyRefused), not the silence of a timeout
        with pytest.raises(KeyRefused, match="refused this monitor's key"):
            follower.connect()
        outsider_key = (outsider / "monitor.key").read_text()
        assert served.link.refused and served.link.refused[0] in outsider_key
    assert any("refused a monitor" in r.getMessage() for r in caplog.records)


def test_unlisted_subscriber_receives_no_telemetry(keys):
    trainer, _, outsider = keys
    with served_link(telemetry=LOOPBACK, control=LOOPBACK, curve=ServerCurve.from_dir(trainer)) as served:
        sub = TelemetrySubscriber(served.link.telemetry_endpoint, curve=ClientCurve.from_dir(outsider))
        try:
            assert sub.drain(timeout_s=1.0) == []
        finally:
            sub.close()
        assert served.steps > 20  # the trainer published all along


def test_wrong_trainer_public_key_fails_in_bounded_time(keys, tmp_path):
    trainer, monitor, _ = keys
    # GIVEN the monitor holds some other trainer's public key
    other = tmp_path / "other"
    generate_keys(other, "trainer")
    (monitor / "trainer.key").write_bytes((other / "trainer.key").read_bytes())
    with served_link(telemetry=LOOPBACK, control=LOOPBACK, curve=ServerCurve.from_dir(trainer)) as served:
        follower = RunFollower(served.link.telemetry_endpoint, served.link.control_endpoint, timeout_s=2,
                               curve=ClientCurve.from_dir(monitor))
        started = time.monotonic()
        with pytest.raises(ProtocolError, match="trainer.key"):
            follower.connect()
        # THEN it gives up after its own timeout (a generous ceiling: only a hang fails this)
        assert time.monotonic() - started < 120


def test_plain_monitor_cannot_talk_to_an_encrypted_trainer(keys):
    trainer, _, _ = keys
    with served_link(telemetry=LOOPBACK, control=LOOPBACK, curve=ServerCurve.from_dir(trainer)) as served:
        follower = RunFollower(served.link.telemetry_endpoint, served.link.control_endpoint, timeout_s=1)
        with pytest.raises(ProtocolError):
            follower.connect()
