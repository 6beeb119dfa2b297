"""End to end on RabbitMQ through each system's batch API: jobkit's ``Task.map`` against Celery's
``group`` (the baseline) and Dramatiq's ``group``, same broker, same run.

100 jobs a call; jobkit's worker is one process of four threads (its default
thread pool; Dramatiq runs two processes of four, Celery two prefork
processes). See :mod:`benchmarks.peers`; ``python -m benchmarks.rabbitmq_batch
[-n JOBS] [--rounds R] [--batch B] [--jobkit-pool POOL:CONCURRENCY]``.
"""
from __future__ import annotations

import sys

from benchmarks.peers import main

if __name__ == "__main__":
    main("rabbitmq", ["--batch", "100", "--jobkit-pool", "thread:4", *sys.argv[1:]])
