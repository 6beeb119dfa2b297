"""Batch enqueue from Python: ``Task.map`` (one transaction, pipelined puts) against a loop of ``delay()``.

No worker runs; records in SQLite, messages in beanstalkd. The two alternate
in chunks, each side's rate being its jobs over its summed time, so that a
noisy neighbour slows both alike.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks import common


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("map", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=10_000, help="jobs per side (default 10000)")
    parser.add_argument("--chunk", type=int, default=500, help="jobs per map() call and turn (default 500)")
    args = parser.parse_args(argv)
    calls = [(common.PAYLOAD,)] * max(1, min(args.chunk, args.jobs))
    turns = max(1, args.jobs // len(calls))
    with common.servers() as (beanstalkd, tmp):
        hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(tmp / "jobkit.db"))
        map_s = loop_s = 0.0
        for _ in range(turns):
            start = time.perf_counter()
            for payload, in calls:
                hash_payload.delay(payload)
            loop_s += time.perf_counter() - start
            start = time.perf_counter()
            hash_payload.map(calls)
            map_s += time.perf_counter() - start
        hash_payload.app.close()
    n = turns * len(calls)
    return common.report("map", n / map_s, n / loop_s, f"jobs={n} chunk={len(calls)} baseline=delay-loop")


if __name__ == "__main__":
    main()
