"""`jobkit api` and `jobkit up` use the machine by default: one API process per core."""
from __future__ import annotations

import os
from pathlib import Path

from jobkit import App
from jobkit.api.server import cores, processes_for
from jobkit.cli import build_parser


def test_cores_are_those_this_process_may_run_on() -> None:
    assert cores() == len(os.sched_getaffinity(0))


def test_one_api_process_per_core_unless_told(tmp_path: Path) -> None:
    app = App(broker="beanstalk://127.0.0.1:1", backend=f"sqlite:///{tmp_path / 'jobs.db'}")
    assert processes_for(app) == cores()
    assert processes_for(app, 3) == 3


def test_an_in_process_broker_or_backend_gets_one_process(tmp_path: Path) -> None:
    assert processes_for(App(broker="memory://", backend=f"sqlite:///{tmp_path / 'jobs.db'}")) == 1
    assert processes_for(App(broker="beanstalk://127.0.0.1:1", backend="memory://")) == 1


def test_the_cli_leaves_processes_and_workers_to_be_chosen() -> None:
    parser = build_parser()
    assert parser.parse_args(["api"]).processes is None
    up = parser.parse_args(["up"])
    assert up.processes is None and up.workers is None
