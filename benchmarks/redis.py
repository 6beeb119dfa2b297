"""End to end on Redis: jobkit against Celery (the baseline) and Dramatiq, same broker, same run.

See :mod:`benchmarks.peers`; ``python -m benchmarks.redis [-n JOBS] [--rounds R]``.
"""
from __future__ import annotations

import sys

from benchmarks.peers import main

if __name__ == "__main__":
    main("redis", sys.argv[1:])
