"""Typing: a job is typed by its task's result (``mypy --strict`` on tests/typing/)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "typing" / "check_job_types.py"


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(cache),
         str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_jobs_are_typed_by_their_tasks_result(tmp_path: Path) -> None:
    done = mypy(CHECK, tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_check_fails_when_a_result_type_is_wrong(tmp_path: Path) -> None:
    text = CHECK.read_text()
    wrong = text.replace("assert_type(add.delay(1, 2).get(), int)", "assert_type(add.delay(1, 2).get(), str)")
    assert wrong != text
    copy = tmp_path / "check_wrong.py"
    copy.write_text(wrong)
    done = mypy(copy, tmp_path / "cache")
    assert done.returncode == 1
    assert 'Expression is of type "int", not "str"' in done.stdout
