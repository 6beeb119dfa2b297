"""End to end: N ``hash_payload`` jobs, from the first enqueue to the last stored result.

jobkit: ``hash_payload.delay()`` N times in this process while ``jobkit worker
--pool process -c 2`` (a real subprocess, results in SQLite) runs them.
Baseline: the bare loop (record upsert + put here; two consumer processes:
reserve, md5, upsert, delete) with the same N. Both sets of consumers are
started and waiting in reserve before the clock starts. The two alternate
for ``--rounds`` rounds and the best round of each counts (machines here
are shared: a neighbour's burst should not decide the ratio).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common
from jobkit.embedded import Beanstalkd


def run_jobkit(beanstalkd: Beanstalkd, tmp: Path, n: int) -> float:
    tmp.mkdir(exist_ok=True)
    db_path = tmp / "jobkit.db"
    hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(db_path))
    with common.jobkit_worker(beanstalkd, common.sqlite_url(db_path)) as proc:
        common.wait_waiting(beanstalkd, common.JOBKIT_QUEUE, 2, proc=proc)
        start = time.perf_counter()
        for _ in range(n):
            job = hash_payload.delay(common.PAYLOAD)
        end = common.wait_all_stored(db_path, n, job.id)
    hash_payload.app.close()
    return n / (end - start)


def run_bare(beanstalkd: Beanstalkd, tmp: Path, n: int) -> float:
    tmp.mkdir(exist_ok=True)
    db_path = tmp / "bare.db"
    producer = common.BareProducer(beanstalkd, db_path)
    with common.bare_consumers(beanstalkd, db_path, processes=2):
        start = time.perf_counter()
        for _ in range(n):
            last_id = producer.send(common.PAYLOAD)
        end = common.wait_all_stored(db_path, n, last_id)
    producer.close()
    return n / (end - start)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("e2e", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=10_000, help="jobs per run (default 10000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (default 2)")
    args = parser.parse_args(argv)
    jobkit, baseline = [], []
    with common.servers() as (beanstalkd, tmp):
        for round_ in range(args.rounds):
            baseline.append(run_bare(beanstalkd, tmp / f"r{round_}", args.jobs))
            jobkit.append(run_jobkit(beanstalkd, tmp / f"r{round_}", args.jobs))
            common.note(f"round {round_ + 1}: jobkit {jobkit[-1]:.0f} jobs/s, bare {baseline[-1]:.0f} jobs/s")
    return common.report("e2e", max(jobkit), max(baseline), f"jobs={args.jobs} best_of={args.rounds}")


if __name__ == "__main__":
    main()
