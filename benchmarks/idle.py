"""Idle CPU: what a worker with nothing to do costs, read from /proc/<pid>/stat.

Starts ``jobkit worker --pool thread -c 2`` and ``jobkit worker --pool
process -c 2`` (supervisor + children counted) and, as the baseline, two bare
consumer processes blocked in reserve; waits until all are waiting on
beanstalkd, then counts user + system CPU seconds over the same window.
Figures are CPU seconds per second (``/s``); the baseline is about 0, so the
ratio is usually ``n/a``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from benchmarks import common


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("idle", __doc__)
    parser.add_argument("--seconds", type=float, default=10, help="measuring window (default 10)")
    args = parser.parse_args(argv)
    with common.servers() as (beanstalkd, tmp), contextlib.ExitStack() as stack:
        backend = common.sqlite_url(tmp / "jobkit.db")
        threads = stack.enter_context(common.jobkit_worker(beanstalkd, backend, pool="thread"))
        common.wait_waiting(beanstalkd, common.JOBKIT_QUEUE, 2, proc=threads)
        procs = stack.enter_context(common.jobkit_worker(beanstalkd, backend, pool="process"))
        common.wait_waiting(beanstalkd, common.JOBKIT_QUEUE, 4, proc=procs)
        bare = stack.enter_context(common.bare_consumers(beanstalkd, tmp / "bare.db"))
        time.sleep(0.5)  # let start-up work (a first prune) finish
        groups = {"thread": [threads.pid], "process": [procs.pid], "bare": bare}
        before = {name: common.cpu_seconds(pids) for name, pids in groups.items()}
        time.sleep(args.seconds)
        used = {name: common.cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    detail = " ".join(f"{name}_cpu={used[name]:.3f}s" for name in groups)
    worst = max(used["thread"], used["process"])
    return common.report("idle", worst / args.seconds, used["bare"] / args.seconds,
                         f"{detail} window={args.seconds:g}s (cpu-seconds per second; jobkit = worse pool)")


if __name__ == "__main__":
    main()
