"""Profile jobkit's hot paths with pyinstrument: ``python -m benchmarks.profile enqueue|worker``.

``enqueue`` profiles N ``hash_payload.delay()`` calls; ``worker`` first queues
N jobs, then profiles one worker slot handling them in this thread (reserve,
claim, run, store, delete: what ``jobkit worker`` does per job). Prints
pyinstrument's text report; not a benchmark (no baseline, no result line).
"""
from __future__ import annotations

from collections.abc import Sequence

from benchmarks import common


def main(argv: Sequence[str] | None = None) -> None:
    from pyinstrument import Profiler

    from jobkit.worker import Slot, Worker

    parser = common.parser("profile", __doc__)
    parser.add_argument("path", choices=("enqueue", "worker"))
    parser.add_argument("-n", "--jobs", type=int, default=5_000)
    parser.add_argument("--interval", type=float, default=0.0002, help="sampling interval (s)")
    args = parser.parse_args(argv)
    profiler = Profiler(interval=args.interval)
    with common.servers() as (beanstalkd, tmp):
        hash_payload = common.jobkit_app(beanstalkd, common.sqlite_url(tmp / "jobkit.db"))
        if args.path == "enqueue":
            profiler.start()
        for _ in range(args.jobs):
            hash_payload.delay(common.PAYLOAD)
        if args.path == "worker":
            slot = Slot(Worker(hash_payload.app, concurrency=1), 0)  # its thread is not started
            profiler.start()
            while (delivery := slot.consumer.reserve(0)) is not None:
                slot._handle(delivery)  # runs the jobs it reserves ahead, too
            slot.consumer.close()
        profiler.stop()
        hash_payload.app.close()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
