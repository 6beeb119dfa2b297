"""Enqueue rate: ``Task.delay()`` (record + put) against a bare sqlite upsert + put loop.

No worker runs. The two alternate in chunks and each side's rate is its jobs
over its summed time, so a noisy neighbour (machines here are shared) slows
both sides alike instead of deciding the ratio.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common


def timed(send: Callable[[], Any], n: int) -> float:
    """Seconds ``n`` calls of ``send`` take."""
    start = time.perf_counter()
    for _ in range(n):
        send()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("enqueue", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=10_000, help="jobs per side (default 10000)")
    parser.add_argument("--chunk", type=int, default=500, help="jobs per turn (default 500)")
    args = parser.parse_args(argv)
    payload = common.PAYLOAD
    with common.servers() as (beanstalkd, tmp):
        hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(tmp / "jobkit.db"))
        producer = common.BareProducer(beanstalkd, tmp / "bare.db")
        jobkit_s = baseline_s = 0.0
        chunk = max(1, min(args.chunk, args.jobs))
        for _ in range(max(1, args.jobs // chunk)):
            baseline_s += timed(lambda: producer.send(payload), chunk)
            jobkit_s += timed(lambda: hash_payload.delay(payload), chunk)
        producer.close()
        hash_payload.app.close()
    n = max(1, args.jobs // chunk) * chunk
    return common.report("enqueue", n / jobkit_s, n / baseline_s, f"jobs={n}")


if __name__ == "__main__":
    main()
