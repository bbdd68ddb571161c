"""Control floods against a training loop, measured (run by test_flood.py; also a script).

``flood_main.py trainer HISTORY_STEPS`` runs a trainer link with a history of
HISTORY_STEPS steps and a loop of fixed CPU work per step; each line it reads on stdin
names a phase it then measures for the seconds given (``quiet 5``), answering one JSON
line: steps/s, the share of the loop's time spent serving monitors, the process's other
CPU (ZeroMQ's I/O thread), resident memory. ``flood_main.py attack KIND CONTROL SECONDS``
is one attacker: ``ping`` (a flood of pings, replies read), ``history`` (history asked
again and again, never read), ``garbage`` (undecodable frames), ``connect`` (new
connections without keys, over and over), ``spin`` (a busy process and no socket: what
any busy neighbour costs the loop on this machine, the yardstick for the others).

    python tests/security/flood_main.py measure     # the figures of the README table
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from octa_tui.protocol import ModelSummary, Schema, encode, new_run_id
from octa_tui.protocol.messages import Command

WIDTH_LAYERS = 40
KINDS = ("ping", "history", "garbage", "connect")
# Each attacker is a busy process: "spin" (busy, no socket) tells its CPU share from the flood's cost.


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trainer(history_steps: int) -> None:
    from octa_tui.protocol.link import TrainerLink

    schema = Schema(run_id=new_run_id(), task="segmentation", model=ModelSummary("UNet", 1000),
                    loss=("total", "bce", "dice"), grad=tuple(f"layer{i}" for i in range(WIDTH_LAYERS)), opt=("lr",))
    link = TrainerLink(schema, heartbeat_s=0.5, spill=None)
    values = np.ones(schema.width, np.float32)
    steps = link.history.steps
    for seq in range(history_steps):
        steps.append(seq, seq, 0, 1.0, values)
    link._seq = history_steps  # the link goes on from the history it holds
    work = np.random.default_rng(0).random((96, 96))
    print(json.dumps({"control": link.control_endpoint, "rss_mb": rss_mb()}), flush=True)
    for line in sys.stdin:
        name, seconds = line.split()
        served_before, count = link.service_seconds, 0
        cpu_before, thread_before = os.times(), time.thread_time()
        start = time.perf_counter()
        peak = rss_mb()
        while time.perf_counter() - start < float(seconds):
            for _ in range(3):
                work = np.tanh(work @ work.T * 1e-3)  # the step's fixed work
            link.publish_step(history_steps + count, 0, values)
            link.poll_commands()
            link.tick()
            count += 1
            if count % 256 == 0:
                peak = max(peak, rss_mb())
        elapsed = time.perf_counter() - start
        cpu_after, thread = os.times(), time.thread_time() - thread_before
        process_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        print(json.dumps({
            # service_share: CPU seconds the training thread spent serving monitors, per second
            # (what the budget holds to 3%); service_of_thread: the same over the thread's own
            # CPU time (higher when the machine gives the thread less than a core);
            # other_cpu_share: CPU of the process's other threads (ZeroMQ's I/O), per second.
            "phase": name, "steps_per_s": count / elapsed,
            "service_share": (link.service_seconds - served_before) / elapsed,
            "service_of_thread": (link.service_seconds - served_before) / max(thread, 1e-9),
            "thread_cpu_share": thread / elapsed,
            "other_cpu_share": max(0.0, process_cpu - thread) / elapsed, "rss_mb": rss_mb(), "peak_rss_mb": peak,
            "history_streams": link.history_streams, "refused": link.refusals.count,
        }), flush=True)
    link.close()


def attack(kind: str, control: str, seconds: float) -> None:
    import zmq

    from octa_tui.protocol.keys import client_keys_for, secure_client_socket
    from octa_tui.protocol.runfiles import keys_for_endpoint

    context = zmq.Context()
    curve = client_keys_for(control, keys_for_endpoint)
    deadline = time.monotonic() + seconds

    def dealer(keys: bool = True):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        if keys and curve is not None:
            secure_client_socket(sock, curve)
        sock.connect(control)
        return sock

    sent = 0
    if kind == "connect":
        while time.monotonic() < deadline:
            sock = dealer(keys=False)
            try:
                sock.send_multipart(encode(Command("pause")), zmq.NOBLOCK)
            except zmq.Again:
                pass
            time.sleep(0.002)
            sock.close(0)
            sent += 1
    elif kind == "spin":  # no socket at all: what one busy process costs the loop on this machine
        while time.monotonic() < deadline:
            sum(range(10_000))
    else:
        sock = dealer()
        frames = {"ping": encode(Command("ping")), "history": encode(Command("history", {"from_seq": 0})),
                  "garbage": [b"OC\x01\x00\x09\x00\x00\x00", b"\xc1" * 64]}[kind]
        while time.monotonic() < deadline:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
            if kind != "history":  # the history attacker never reads
                while sock.poll(0):
                    sock.recv_multipart()
        sock.close(0)
    context.term()
    print(json.dumps({"kind": kind, "sent": sent}), flush=True)


def measure(history_steps: int = 200_000, seconds: float = 6.0, kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """Quiet, each attack alone, all at once, and after they left: the trainer's figures per phase."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, "trainer", str(history_steps)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        start = json.loads(proc.stdout.readline())
        control = start["control"]
        results = [{"phase": "start", "rss_mb": start["rss_mb"]}]

        def phase(name: str, attackers: tuple[str, ...]) -> None:
            procs = [subprocess.Popen([sys.executable, __file__, "attack", kind, control, str(seconds + 2)],
                                      stdout=subprocess.PIPE, text=True, env=env) for kind in attackers]
            if procs:
                time.sleep(1.5)  # let them connect and fill their queues
            proc.stdin.write(f"{name} {seconds}\n")
            proc.stdin.flush()
            results.append(json.loads(proc.stdout.readline()))
            for attacker in procs:
                attacker.communicate(timeout=60)

        phase("quiet", ())
        phase("spin", ("spin",))
        for kind in kinds:
            phase(kind, (kind,))
        phase("all", kinds)
        phase("after", ())
        return results
    finally:
        proc.stdin.close()
        proc.wait(60)


if __name__ == "__main__":
    if sys.argv[1] == "trainer":
        trainer(int(sys.argv[2]))
    elif sys.argv[1] == "attack":
        attack(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        for row in measure():
            print(json.dumps(row))
