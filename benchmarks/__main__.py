"""Run every benchmark (or those named: ``python -m benchmarks e2e idle``), each in its own process."""
from __future__ import annotations

import subprocess
import sys

from benchmarks.common import ROOT, clean_env

NAMES = ("enqueue", "e2e", "latency", "idle", "http", "load", "dashboard", "counts", "redis", "rabbitmq",
         "rabbitmq_batch", "batch", "map", "limits", "asyncpool", "scaling")


def main() -> int:
    lines, failed = [], []
    names = sys.argv[1:] or NAMES
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT,
                              env=clean_env(), stdout=subprocess.PIPE, text=True)
        out = proc.stdout.strip().splitlines()
        print("\n".join(out), flush=True)
        if proc.returncode != 0 or not out:
            failed.append(name)
        else:
            lines.append(out[-1])
    print("\n== summary")
    print("\n".join(lines))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
