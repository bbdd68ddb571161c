"""A framework watch serving one rank of a multi-process run refuses commands, saying why.

Applied on rank 0 alone a change would split the run (one rank at another lr) and a pause
would hang the other ranks in their next collective; so the monitor gets an error reply with
the reason, and nothing changes. (Real multi-process frameworks are not started here: the
callbacks pass this reason when their framework says it runs more than one process.)
"""

from __future__ import annotations

import threading

import torch


def test_a_watch_serving_one_rank_of_many_refuses_commands_with_the_reason(tmp_path, monkeypatch):
    # GIVEN a framework watch that serves rank 0 of a multi-process run, on a real link, and a monitor
    from octa_tui.trainer.integrations.boundary import FrameworkWatch

    from .monitor import Monitor, find_run

    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = FrameworkWatch(model, optimizer, commands_refused="watched from rank 0 of 2")

    def step():
        loss = torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # the run starts (and is announced) at its first step
    result: dict = {}

    def monitor_side():
        try:
            monitor = Monitor(find_run(tmp_path / "run"))
            try:
                result["reply"] = monitor.request("set_lr", lr=0.5)
            finally:
                monitor.close()
        except BaseException as exc:  # noqa: BLE001 - reported on the test's thread
            result["error"] = exc

    side = threading.Thread(target=monitor_side)
    side.start()
    try:
        for _ in range(100000):  # the link is served, and commands answered, at step boundaries
            if not side.is_alive():
                break
            step()
        side.join()
        if "error" in result:
            raise result["error"]
        reply = result["reply"]
        # THEN the command is refused with the reason and nothing changed
        assert reply.status == "error" and "rank 0 of 2" in reply.reason
        step()
        assert optimizer.param_groups[0]["lr"] == 0.1 and watch.controller.lr_scale.scale == 1.0
    finally:
        watch.close()
