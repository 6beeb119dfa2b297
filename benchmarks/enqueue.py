"""Enqueue rate: ``Task.delay()`` (record + put) against a bare sqlite upsert + put loop.

No worker runs. Rounds alternate between the two and the best round of each
counts, which keeps a noisy neighbour from deciding the ratio.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common


def rate(send: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        send()
    return n / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("enqueue", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=5_000, help="jobs per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    args = parser.parse_args(argv)
    payload = common.PAYLOAD
    with common.servers() as (beanstalkd, tmp):
        hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(tmp / "jobkit.db"))
        producer = common.BareProducer(beanstalkd, tmp / "bare.db")
        jobkit, baseline = [], []
        for round_ in range(1, args.rounds + 1):
            baseline.append(rate(lambda: producer.send(payload), args.jobs))
            jobkit.append(rate(lambda: hash_payload.delay(payload), args.jobs))
            common.note(f"round {round_}: jobkit {jobkit[-1]:.0f}/s, bare {baseline[-1]:.0f}/s")
        producer.close()
        hash_payload.app.close()
    return common.report("enqueue", max(jobkit), max(baseline), f"jobs={args.jobs}x{args.rounds}")


if __name__ == "__main__":
    main()
