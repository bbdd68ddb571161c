"""GIVEN the octa-tui command line WHEN it is misused or has nothing to do THEN it says so in
one line with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)  # a ceiling for a loaded machine, not an expected time


def octa_tui(*args: str, env_dir=None) -> subprocess.CompletedProcess:
    env = None
    if env_dir is not None:
        import os

        env = {**os.environ, "OCTA_TUI_RUN_DIR": str(env_dir)}
    return subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", *args], capture_output=True, text=True,
                          timeout=240, env=env)


def test_replay_of_a_missing_file_is_one_line(tmp_path):
    result = octa_tui("replay", str(tmp_path / "nope.octa"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no such recording" in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_of_a_file_that_is_not_a_recording_is_one_line(tmp_path):
    bogus = tmp_path / "bogus.octa"
    bogus.write_bytes(b"hello, not a recording")
    result = octa_tui("replay", str(bogus))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("octa-tui: error:") and result.stderr.strip().count("\n") == 0


def test_connect_to_a_remote_address_says_to_tunnel():
    result = octa_tui("connect", "tcp://10.0.0.1:5555", "--control", "tcp://10.0.0.1:5556")
    assert result.returncode == 1 and "ssh" in result.stderr.lower() and "Traceback" not in result.stderr


def test_list_with_no_trainers(tmp_path):
    listed = octa_tui("list", "--json", env_dir=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    alone = octa_tui(env_dir=tmp_path)
    assert alone.returncode == 1 and "no trainer is running" in alone.stderr


def _fake_run_file(folder, **overrides) -> dict:
    """A run file naming this (live) test process, so `list` keeps it."""
    import os

    info = {"pid": os.getpid(), "run_id": "0123456789abcdef", "telemetry": "tcp://127.0.0.1:1",
            "control": "tcp://127.0.0.1:2", "task": "segmentation", "model": "unet", "started_at": 0.0,
            **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{info['pid']}.json").write_text(json.dumps(info))
    return info


def test_list_into_a_pipe_prints_the_runs_and_exits_without_a_screen(tmp_path):
    # GIVEN one trainer's run file and an output that is not a terminal
    info = _fake_run_file(tmp_path / "runs")
    # WHEN `octa-tui list` (and plain `octa-tui`) write into a pipe
    for argv in (("list",), ()):
        result = octa_tui(*argv, env_dir=tmp_path / "runs")
        # THEN they print the run and exit 0: no screen (no escape codes), no attaching
        assert result.returncode == 0, result.stderr
        assert info["run_id"] in result.stdout and "octa-tui connect" in result.stdout
        assert "\x1b" not in result.stdout and "Traceback" not in result.stderr


def test_list_json_into_a_closed_pipe_ends_quietly(tmp_path):
    import os

    # GIVEN a run file and a reader that has already gone (as `| head` does once it has its lines)
    _fake_run_file(tmp_path / "runs")
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path / "runs")}
    process = subprocess.Popen([sys.executable, "-m", "octa_tui.tui.cli", "list", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()
    # WHEN it writes the list
    _, err = process.communicate(timeout=240)
    # THEN no BrokenPipeError, no traceback: it ends quietly with the shell's SIGPIPE status
    assert err.decode() == "", err.decode()
    assert process.returncode == 141


def test_a_choice_is_needed_to_attach():
    from octa_tui.tui.cli import CliError, choose_run

    one, two = ["a"], ["a", "b"]
    assert choose_run(one, lambda _: "") == "a" and choose_run(one, lambda _: "y") == "a"
    assert choose_run(one, lambda _: "n") is None
    assert choose_run(two, lambda _: "2") == "b"
    assert choose_run(two, lambda _: "") is None and choose_run(two, lambda _: "q") is None
    with pytest.raises(CliError, match="1-2"):
        choose_run(two, lambda _: "7")


def test_run_and_compare_get_their_arguments_verbatim(monkeypatch):
    import types

    from octa_tui.tui import cli

    seen = {}
    for name, module in (("run", "octa_tui.tui.run_command"), ("compare", "octa_tui.tui.compare.cli")):
        fake = types.ModuleType(module)
        fake.main = lambda argv, name=name: seen.setdefault(name, argv) and 3
        monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main(["run", "--", "python", "train.py", "--lr", "1e-3", "--help"]) == 3
    assert seen["run"] == ["--", "python", "train.py", "--lr", "1e-3", "--help"]
    assert cli.main(["compare", "a.octa", "b.octa", "--json"]) == 3
    assert seen["compare"] == ["a.octa", "b.octa", "--json"]


def test_a_missing_subcommand_module_is_one_clear_line(monkeypatch, capsys):
    from octa_tui.tui import cli

    monkeypatch.setitem(sys.modules, "octa_tui.tui.run_command", None)  # import raises ModuleNotFoundError
    assert cli.main(["run", "--", "python", "train.py"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("octa-tui: error: `octa-tui run` is not available") and err.count("\n") == 1


def test_lang_reaches_the_verdict_texts_and_child_processes(monkeypatch):
    import os

    from octa_tui.diagnosis import texts
    from octa_tui.tui import cli

    chosen = []
    monkeypatch.setattr(texts, "set_language", chosen.append, raising=False)
    monkeypatch.delenv(cli.ENV_LANG, raising=False)
    monkeypatch.setattr(cli, "cmd_diagnose_dataset", lambda args: 0 if args.rest == ["DIR"] else 9)
    monkeypatch.setitem(cli.COMMANDS, "diagnose-dataset", cli.cmd_diagnose_dataset)
    assert cli.main(["diagnose-dataset", "--lang", "zh", "DIR"]) == 0
    assert chosen == ["zh"] and os.environ[cli.ENV_LANG] == "zh"
    monkeypatch.setitem(cli.COMMANDS, "replay", lambda args: 0)
    assert cli.main(["replay", "x.octa", "--lang", "en"]) == 0
    assert chosen == ["zh", "en"] and os.environ[cli.ENV_LANG] == "en"
    assert cli.main(["diagnose-dataset", "--lang=fr", "DIR"]) == 1


@pytest.mark.parametrize(("target", "says"), [
    ("tcp://127.0.0.1:1", "nothing is listening at tcp://127.0.0.1:1"),
    ("deadbeef", "no running trainer has run id deadbeef"),
    ("localhost:5555", "'localhost:5555' has no scheme; write it as an endpoint: octa-tui connect tcp://127.0.0.1:5555"),
])
def test_connect_says_which_mistake_a_target_is(tmp_path, target, says):
    # (each of the three got "no run file names ...; give the control endpoint too")
    result = octa_tui("connect", target, env_dir=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_attach_passes_the_jump_host_and_ssh_config_to_ssh(monkeypatch, capsys):
    from octa_tui.tui import attach, cli

    seen = []

    def remote_trainers(target):
        seen.append(target.command())
        raise attach.AttachError("stop here")

    monkeypatch.setattr(attach, "remote_trainers", remote_trainers)
    assert cli.main(["attach", "-J", "me@login:2200", "-F", "/tmp/cfg", "--port", "2222", "me@gpu7"]) == 1
    [command] = seen
    assert command[:3] == ["ssh", "-F", "/tmp/cfg"]
    assert command[command.index("-J") + 1] == "me@login:2200" and command[command.index("-p") + 1] == "2222"
    assert cli.main(["attach", "--jump=-oProxyCommand=x", "gpu7"]) == 1  # never an ssh option
    assert "give the jump host as [user@]host[:port]" in capsys.readouterr().err
