"""The Makefile: an interrupted install recovers by itself, and `make clean` keeps the data.

make runs for real in a copy of the Makefile, with PYTHON pointing at a stub
whose ``-m venv`` makes a venv whose ``pip`` fails while a flag file exists:
an install that stops halfway, as Ctrl-C or a lost network leaves it.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.processes import ROOT

STAMP = Path(".venv/.jobkit-installed")
DATA = ("jobkit.db", "jobkit.db-wal", ".jobkit/beanstalkd/binlog.1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path)
    for name in ("setup.cfg", "pyproject.toml"):
        (tmp_path / name).write_text("")
    stub = tmp_path / "stub-python"
    stub.write_text(f"""#!/bin/sh
# stand-in for `python3 -m venv DIR`
[ "$1" = -m ] && [ "$2" = venv ] || exit 2
mkdir -p "$3/bin"
printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
printf '#!/bin/sh\\n[ ! -e {tmp_path}/fail ]\\n' > "$3/bin/pip"
chmod +x "$3/bin/python" "$3/bin/pip"
""")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def make(project: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    """Run make there as a user would: not as a sub-make of the ``make test`` running this suite."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", *targets, f"PYTHON={project / 'stub-python'}"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)


def test_a_half_made_venv_is_rebuilt_from_scratch(project: Path) -> None:
    (project / "fail").touch()
    assert make(project, "install").returncode != 0
    assert (project / ".venv/bin/pip").exists() and not (project / STAMP).exists()  # half-made
    (project / ".venv/leftover").touch()
    (project / "fail").unlink()
    done = make(project, "install")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / STAMP).exists() and not (project / ".venv/leftover").exists()
    assert "venv" not in make(project, "install").stdout  # installed: nothing to do


def test_an_interrupted_reinstall_is_rebuilt_from_scratch(project: Path) -> None:
    assert make(project, "install").returncode == 0
    (project / ".venv/leftover").touch()
    (project / "setup.cfg").write_text("# changed\n")  # newer than the stamp: reinstall
    (project / "fail").touch()
    assert make(project, "install").returncode != 0
    assert not (project / STAMP).exists()
    (project / "fail").unlink()
    assert make(project, "install").returncode == 0
    assert (project / STAMP).exists() and not (project / ".venv/leftover").exists()


def test_clean_keeps_the_data_and_clean_data_says_what_it_deletes(project: Path) -> None:
    assert make(project, "install").returncode == 0
    for name in DATA:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("records")
    assert make(project, "clean").returncode == 0
    assert not (project / ".venv").exists()
    assert all((project / name).read_text() == "records" for name in DATA)
    done = make(project, "clean-data")
    assert done.returncode == 0 and "jobkit.db" in done.stdout and ".jobkit/" in done.stdout
    assert not any((project / name).exists() for name in DATA)


def test_the_readmes_two_commands_install_first(project: Path) -> None:
    for target, runs in (("test", ".venv/bin/python -m pytest -n 2 --dist loadfile"),
                         ("up", ".venv/bin/jobkit up")):
        plan = make(project, "-n", target).stdout
        assert "-m venv .venv" in plan and plan.rstrip().endswith(runs), plan
