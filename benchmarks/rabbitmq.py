"""End to end on Rabbitmq: jobkit against Celery (the baseline) and Dramatiq, same broker, same run.

See :mod:`benchmarks.peers`; ``python -m benchmarks.rabbitmq [-n JOBS] [--rounds R]``.
"""
from __future__ import annotations

import sys

from benchmarks.peers import main

if __name__ == "__main__":
    main("rabbitmq", sys.argv[1:])
