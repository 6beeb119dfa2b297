"""End to end: N ``hash_payload`` jobs, from the first enqueue to the last stored result.

jobkit: ``hash_payload.delay()`` N times in this process while ``jobkit worker
--pool process -c 2`` (a real subprocess, results in SQLite) runs them.
Baseline: the bare loop (record upsert + put here; two consumer processes:
reserve, md5, upsert, delete) with the same N. Both sets of consumers are
started and waiting in reserve before the clock starts.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common
from jobkit.embedded import Beanstalkd


def run_jobkit(beanstalkd: Beanstalkd, tmp: Path, n: int) -> float:
    db_path = tmp / "jobkit.db"
    hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(db_path))
    with common.jobkit_worker(beanstalkd, common.sqlite_url(db_path)) as proc:
        common.wait_waiting(beanstalkd, common.JOBKIT_QUEUE, 2, proc=proc)
        start = time.perf_counter()
        for _ in range(n):
            hash_payload.delay(common.PAYLOAD)
        end = common.wait_all_stored(db_path, n)
    hash_payload.app.close()
    return n / (end - start)


def run_bare(beanstalkd: Beanstalkd, tmp: Path, n: int) -> float:
    db_path = tmp / "bare.db"
    producer = common.BareProducer(beanstalkd, db_path)
    with common.bare_consumers(beanstalkd, db_path, processes=2):
        start = time.perf_counter()
        for _ in range(n):
            producer.send(common.PAYLOAD)
        end = common.wait_all_stored(db_path, n)
    producer.close()
    return n / (end - start)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("e2e", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=10_000, help="jobs per run (default 10000)")
    args = parser.parse_args(argv)
    with common.servers() as (beanstalkd, tmp):
        baseline = run_bare(beanstalkd, tmp, args.jobs)
        common.note(f"bare loop: {baseline:.0f} jobs/s")
        jobkit = run_jobkit(beanstalkd, tmp, args.jobs)
        common.note(f"jobkit:    {jobkit:.0f} jobs/s")
    return common.report("e2e", jobkit, baseline, f"jobs={args.jobs}")


if __name__ == "__main__":
    main()
