"""The CLI's failures: one clear line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit.cli import main
from tests.processes import ROOT, clean_env

MEMORY = ["--broker", "memory://", "--backend", "memory://"]


def fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``jobkit argv`` here; assert exit 1 and one ``jobkit:`` line on stderr; return it."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobkit: "), err
    return lines[0]


@pytest.mark.parametrize("spec", ["", " ", ":app", ":"])
def test_an_empty_app_module_says_how_to_name_one(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_in_one_line(["worker", "-A", spec, *MEMORY], capsys)
    assert "-A module:attribute" in line and "JOBKIT_APP" in line


@pytest.mark.parametrize("spec", ["no_such_module_here:app", ".relative", "a..b", "os:path"])
def test_an_app_that_cannot_be_loaded_says_how_to_name_one(
        spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_in_one_line(["enqueue", "-A", spec, "hash_payload", "1", *MEMORY], capsys)
    assert "-A module:attribute" in line


def test_an_app_module_that_raises_is_named_with_the_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken_app_mod.py").write_text("x = 1\nraise RuntimeError('no config')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = fails_in_one_line(["enqueue", "-A", "broken_app_mod:app", "t", *MEMORY], capsys)
    assert "RuntimeError: no config" in line and "broken_app_mod.py:2" in line


def test_status_stats_and_kick_import_no_app(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBKIT_APP", "a_module_only_the_project_has:app")
    assert main(["stats", *MEMORY]) == 0
    assert main(["kick", "--all", *MEMORY]) == 0
    assert main(["status", "0123456789abcdef", *MEMORY]) == 1  # no such job: a normal answer
    err = capsys.readouterr().err
    assert "no job" in err and "a_module_only_the_project_has" not in err


def test_the_default_app_ships_inside_the_package() -> None:
    from jobkit.cli import load_app
    from jobkit.config import DEFAULT_APP, Settings

    assert Settings().app == DEFAULT_APP and DEFAULT_APP.startswith("jobkit.")
    assert "hash_payload" in load_app(DEFAULT_APP).tasks
    from examples.hashing import app as example

    assert example is load_app(DEFAULT_APP)  # the example names the same app, no copy


@pytest.mark.parametrize("backend", ["sqlite:////etc/passwd/x.db", "sqlite:////proc/no/x.db",
                                     "sqlite:////"])
def test_an_unopenable_sqlite_path_is_one_line(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_in_one_line(["status", "x", "--broker", "memory://", "--backend", backend], capsys)
    assert "sqlite" in line


@pytest.mark.parametrize("flags", [["--broker", "beanstalk://[::1"], ["--backend", "mongodb://[x"],
                                   ["--broker", "nosuch://x"], ["--backend", "nosuch://x"],
                                   ["--broker", "beanstalk://127.0.0.1:notaport"]])
def test_bad_urls_are_one_line(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_in_one_line(["stats", *MEMORY, *flags], capsys)
    assert flags[1] in line


@pytest.mark.parametrize("args", [["{bad"], ["1", "--kwargs", "5"], ["1", "--kwargs", "{"], ["'x'"]])
def test_bad_json_arguments_to_enqueue_are_one_line(args: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fails_in_one_line(["enqueue", "hash_payload", *args, *MEMORY], capsys)


def test_an_env_file_that_is_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_in_one_line(["stats", *MEMORY, "--env-file", str(tmp_path)], capsys)
    assert "--env-file" in line


def test_dev_null_as_env_file_reads_no_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Benchmarks and scripts pass ``--env-file /dev/null`` so that no ``./.env`` applies."""
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert main(["status", "no-such-job", "--backend", db, "--env-file", os.devnull]) == 1
    err = capsys.readouterr().err
    assert "--env-file" not in err and "no-such-job" in err


def test_an_unreachable_broker_says_what_to_do(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no jobkit up runs here
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        url = f"beanstalk://127.0.0.1:{sock.getsockname()[1]}"
        line = fails_in_one_line(["stats", "--broker", url, "--backend", "memory://"], capsys)
    assert "BrokerUnavailable" in line and "JOBKIT_BROKER_URL" in line


@pytest.mark.parametrize("command", [["api"], ["up", "--workers", "1"]])
def test_a_port_in_use_is_one_line(command: list[str], capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = fails_in_one_line([*command, "--host", "127.0.0.1", "--port", port, *MEMORY], capsys)
    assert port in line and "use" in line


def test_a_closed_stdout_ends_the_command_quietly_with_141(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `jobkit stats | head -1` once head has gone
    try:
        done = subprocess.run([sys.executable, "-m", "jobkit", "stats", *MEMORY], cwd=ROOT,
                              env=clean_env(), stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
