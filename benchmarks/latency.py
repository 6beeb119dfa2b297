"""Latency: enqueue call start -> the record shows ``succeeded``, at a fixed rate.

``jobkit worker --pool process -c 2`` runs; this process sends ``rate`` jobs
a second for ``seconds`` and a poller thread looks for its outstanding ids in
the backend every millisecond, as a waiting client would. The baseline is
the bare loop (two consumer processes) at the same rate. The rates printed
are the rates achieved; the percentiles and the maximum (``max=``: the
slowest job, where a stall shows) are the point.
"""
from __future__ import annotations

from collections.abc import Sequence

from benchmarks import common


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("latency", __doc__)
    parser.add_argument("--rate", type=float, default=100, help="jobs per second (default 100)")
    parser.add_argument("--seconds", type=float, default=10, help="how long each side sends (default 10)")
    args = parser.parse_args(argv)
    n = int(args.rate * args.seconds)
    with common.servers() as (beanstalkd, tmp):
        db_path = tmp / "bare.db"
        producer = common.BareProducer(beanstalkd, db_path)
        with common.bare_consumers(beanstalkd, db_path, processes=2):
            bare = common.paced_latencies(lambda: producer.send(common.PAYLOAD), db_path,
                                          args.rate, args.seconds)
        producer.close()
        common.note(f"bare loop: {common.latency_text('', bare)}")

        db_path = tmp / "jobkit.db"
        hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(db_path))
        with common.jobkit_worker(beanstalkd, common.sqlite_url(db_path)) as proc:
            common.wait_waiting(beanstalkd, common.JOBKIT_QUEUE, 2, proc=proc)
            jobkit = common.paced_latencies(lambda: hash_payload.delay(common.PAYLOAD).id, db_path,
                                            args.rate, args.seconds)
        hash_payload.app.close()
    extra = (f"{common.latency_text('', jobkit)} max={max_ms(jobkit)} "
             f"{common.latency_text('baseline_', bare)} baseline_max={max_ms(bare)} jobs={n}")
    return common.report("latency", len(jobkit) / args.seconds, len(bare) / args.seconds, extra)


def max_ms(seconds: Sequence[float]) -> str:
    """The slowest job's latency (the stalls a percentile hides), as ``12.3ms``."""
    return f"{max(seconds, default=0) * 1000:.1f}ms"


if __name__ == "__main__":
    main()
