"""Limits: the cost of a rate and concurrency limit that never holds a job back.

jobkit: N ``limited`` jobs (``rate_limit="10000/s"`` and
``concurrency_limit=64``, generous enough that no job waits) through
``jobkit worker --pool process -c 2`` (results in SQLite):
each start takes a rate lease and a concurrency lease and records its start,
each outcome gives the concurrency lease back. Baseline: the same task
without limits (``plain``), same worker, same N, same run. The two alternate
for ``--rounds`` rounds; the best round of each counts.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common
from jobkit import App
from jobkit.embedded import Beanstalkd

app = App("bench-limits")  # the worker processes load it: -A benchmarks.limits:app


@app.task(queue="plain")
def plain(x: int) -> int:
    return x


@app.task(queue="limited", rate_limit="10000/s", concurrency_limit=64)
def limited(x: int) -> int:
    return x


def run(beanstalkd: Beanstalkd, tmp: Path, task: str, n: int) -> float:
    tmp.mkdir(parents=True, exist_ok=True)
    db_path = tmp / f"{task}.db"
    url = common.sqlite_url(db_path)
    app.configure(broker=beanstalkd.url, backend=url)
    app.backend.ping()
    with common.jobkit_command("worker", "-A", "benchmarks.limits:app", "--broker", beanstalkd.url,
                               "--backend", url, "--pool", "process", "-c", "2", "-q", task,
                               "-l", "ERROR") as proc:
        common.wait_waiting(beanstalkd, task, 2, proc=proc)
        start = time.perf_counter()
        for i in range(n):
            job = app.send(task, (i,))
        end = common.wait_all_stored(db_path, n, job.id)
    app.close()
    return n / (end - start)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("limits", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=5_000, help="jobs per run (default 5000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (default 2)")
    args = parser.parse_args(argv)
    limited_rates, plain_rates = [], []
    with common.servers() as (beanstalkd, tmp):
        for round_ in range(args.rounds):
            plain_rates.append(run(beanstalkd, tmp / f"r{round_}", "plain", args.jobs))
            limited_rates.append(run(beanstalkd, tmp / f"r{round_}", "limited", args.jobs))
            common.note(f"round {round_ + 1}: limited {limited_rates[-1]:.0f} jobs/s, "
                        f"plain {plain_rates[-1]:.0f} jobs/s")
    return common.report("limits", max(limited_rates), max(plain_rates),
                         f"jobs={args.jobs} best_of={args.rounds}")


if __name__ == "__main__":
    main()
