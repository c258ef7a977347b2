"""The `--wait` progress display and the CLI's one-line failures (issue 14, items 4 and 13)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from swarm.cli import _explain, _parser
from swarm.errors import SwarmError
from swarm.progress import PLAIN_EVERY, Counts, ProgressDisplay, format_duration
from swarm.servicecli import systemd_unit
from swarm.submitcli import NoCoordinator, first_line


def test_a_status_line_has_every_count_elapsed_time_and_an_eta() -> None:
    display = ProgressDisplay(io.StringIO(), tty=False, started=100.0)
    line = display.line(Counts(total=10, done=3, failed=1, running=2, queued=4), now=160.0)
    for part in ("4/10", "done 3", "running 2", "queued 4", "failed 1", "elapsed 1m00s", "ETA 1m30s"):
        assert part in line, line


def test_no_eta_before_the_first_task_ends_nor_after_the_last() -> None:
    display = ProgressDisplay(io.StringIO(), tty=False, started=0.0)
    assert "ETA" not in display.line(Counts(total=5, queued=5), now=10.0)
    assert "ETA" not in display.line(Counts(total=5, done=5), now=10.0)


def test_plain_output_prints_lines_only_on_change_or_after_a_while() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False, started=0.0)
    display.show(Counts(total=2, queued=2), now=1.0)
    display.show(Counts(total=2, queued=2), now=2.0)
    display.show(Counts(total=2, running=1, queued=1), now=3.0)
    display.show(Counts(total=2, running=1, queued=1), now=3.0 + PLAIN_EVERY)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()


def test_a_terminal_gets_one_rewritten_line_ended_before_other_output() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, started=0.0)
    display.show(Counts(total=1, running=1), now=1.0)
    display.say("waiting: t0: platform=linx")
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[") and text.endswith("\nwaiting: t0: platform=linx\n")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (7260, "2h01m")])
def test_durations_are_short(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_first_line_of_an_error_drops_the_traceback() -> None:
    assert first_line("ZeroDivisionError: division by zero\nTraceback (most recent call last):\n") == (
        "ZeroDivisionError: division by zero"
    )
    assert first_line(None) == "no error given"


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (NoCoordinator("no coordinator answered within 5s"), 3, "no coordinator"),
        (TimeoutError("no coordinator answered; is a cluster running?"), 3, "swarm join"),
        (ConnectionRefusedError(111, "Connection refused"), 3, "cannot reach the broker at mqtts://h:1"),
        (FileExistsError(17, "File exists", "out"), 2, "File exists: out"),
        (SwarmError("bad --payload"), 2, "bad --payload"),
    ],
)
def test_expected_failures_become_one_line(exc: BaseException, status: int, words: str) -> None:
    message, code = _explain(exc, argparse.Namespace(broker="mqtts://h:1"))
    assert code == status and message is not None and words in message


def test_a_bug_keeps_its_traceback() -> None:
    assert _explain(KeyError("x"), argparse.Namespace()) == (None, 0)


def test_the_service_unit_runs_this_python_and_keeps_swarm_home() -> None:
    unit = systemd_unit(
        "/venv/bin/python", ["--cluster", "home"], user="pi", swarm_home="/h/.swarm", working_dir="/h/.swarm"
    )
    assert "ExecStart=/venv/bin/python -m swarm.cli join --cluster home" in unit
    assert "Environment=SWARM_HOME=/h/.swarm" in unit and "User=pi" in unit
    assert "WantedBy=multi-user.target" in unit


def test_log_lines_tell_a_disk_error_and_an_unreached_broker_from_a_lost_one() -> None:
    """Item 9."""
    from swarm.runtime.shell import _link_problem

    disk = OSError(28, "No space left on device", "/data/epoch.json")
    assert "cannot write /data/epoch.json" in _link_problem(disk, "mqtts://b:1", was_up=True)
    refused = ConnectionRefusedError(111, "Connection refused")
    assert "cannot reach the broker at mqtts://b:1" in _link_problem(refused, "mqtts://b:1", was_up=False)
    assert "lost" in _link_problem(refused, "mqtts://b:1", was_up=True)


def test_old_mapreduce_outputs_are_cleared(tmp_path: Path) -> None:
    """Item 6."""
    from swarm.mapreduce.submit import clear_old_outputs

    out = tmp_path
    for name in ("mr-out-0", "mr-out-7", "notes.txt"):
        (out / name).write_text("x")
    assert [p.name for p in clear_old_outputs(out)] == ["mr-out-0", "mr-out-7"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "mapreduce", "--app", "wordcount", "--input", "a", "b", "--reduces", "2", "--output", "o"],
        ["submit", "task", "echo", "--require", "min_cores=2", "--wait"],
        ["status", "--json", "--broker", "mqtt://127.0.0.1:1883"],
        ["token", "create", "--role", "viewer"],
        ["quota", "set", "--user", "ana", "cpu_seconds=60"],
        ["dag", "list"],
        ["sim", "run", "--scenario", "x"],
        ["join", "--slots", "2", "-v"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_command_parses_as_it_does_with_every_command_built(argv: list[str]) -> None:
    alone = _parser(argv)
    assert len(_commands(alone)) < len(_commands(_parser()))
    assert alone.parse_args(argv) == _parser().parse_args(argv)


def test_without_a_known_command_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    names = _commands(_parser(["nosuch"]))
    assert {"join", "submit", "status", "token", "quota", "dag", "cockpit", "demo", "sim"} <= names
    with pytest.raises(SystemExit):
        _parser(["nosuch"]).parse_args(["nosuch"])
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)
