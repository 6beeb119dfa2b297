"""The asyncio pool: concurrent sleepers on one loop, and async throughput end to end.

wall_200x1s: ``jobkit worker --pool asyncio -c 200`` (a real subprocess,
results in SQLite) waits in reserve; 200 jobs of ``await asyncio.sleep(1)``
are sent; the wall time from the first send to the last stored result
(ideal: 1 s plus the sending and storing).

Throughput: N jobs of a small ``async def`` task (one ``await``), sent from
this process, run by ``--pool asyncio -c 64`` (jobkit) and by ``--pool
thread -c 4`` (the baseline: the thread pool runs each async job on a loop
of its own), each worker waiting in reserve before the clock starts; the
best of ``--rounds`` rounds of each counts.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from jobkit import App
from jobkit.embedded import Beanstalkd

app = App("asyncbench")
QUEUE = "asyncbench"
THREADS = 4


@app.task(queue=QUEUE)
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(queue=QUEUE)
async def echo(payload: Any) -> Any:
    await asyncio.sleep(0)
    return payload


def run(beanstalkd: Beanstalkd, db_path: Path, pool: str, concurrency: int, task: str,
        args: tuple[Any, ...], n: int) -> float:
    """Seconds from the first of ``n`` sends to the last stored result."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    url = common.sqlite_url(db_path)
    app.configure(broker=beanstalkd.url, backend=url)
    with common.jobkit_command("worker", "-A", "benchmarks.asyncpool:app", "--broker", beanstalkd.url,
                               "--backend", url, "--pool", pool, "-c", str(concurrency),
                               "-l", "ERROR") as proc:
        common.wait_waiting(beanstalkd, QUEUE, 1 if pool == "asyncio" else concurrency, proc=proc)
        start = time.perf_counter()
        for _ in range(n):
            job = app.tasks[task].delay(*args)
        end = common.wait_all_stored(db_path, n, job.id)
    app.close()
    return end - start


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("asyncpool", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=3000, help="jobs per throughput run (default 3000)")
    parser.add_argument("--sleepers", type=int, default=200, help="concurrent sleeping jobs (default 200)")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each sleeps (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs of each side (default 2)")
    args = parser.parse_args(argv)
    jobkit, baseline = [], []
    with common.servers() as (beanstalkd, tmp):
        wall = run(beanstalkd, tmp / "wall" / "jobs.db", "asyncio", args.sleepers, "nap", (args.sleep,),
                   args.sleepers)
        common.note(f"{args.sleepers} x sleep({args.sleep}): {wall:.2f} s")
        for round_ in range(args.rounds):
            seconds = run(beanstalkd, tmp / f"t{round_}" / "thread.db", "thread", THREADS, "echo",
                          (common.PAYLOAD,), args.jobs)
            baseline.append(args.jobs / seconds)
            seconds = run(beanstalkd, tmp / f"t{round_}" / "asyncio.db", "asyncio", 64, "echo",
                          (common.PAYLOAD,), args.jobs)
            jobkit.append(args.jobs / seconds)
            common.note(f"round {round_ + 1}: asyncio pool {jobkit[-1]:.0f} jobs/s, "
                        f"thread pool {baseline[-1]:.0f} jobs/s")
    return common.report("asyncpool", max(jobkit), max(baseline),
                         f"wall_{args.sleepers}x{args.sleep:g}s={wall:.2f}")


if __name__ == "__main__":
    main()
