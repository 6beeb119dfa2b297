"""Batch enqueue over HTTP: ``POST /v1/jobs/batch`` (100 jobs a request) against ``POST /v1/jobs``.

One ``jobkit api`` process (records in SQLite, messages in beanstalkd), one
client on a keep-alive connection, no worker. The two alternate in turns of
the same number of jobs; each side's rate is its jobs over its summed time.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks import common
from jobkit.embedded import free_port

JOB = {"task": "hash_payload", "args": [common.PAYLOAD]}
HEADERS = {"Content-Type": "application/json"}


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> None:
    conn.request("POST", path, body=body, headers=HEADERS)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 202:
        raise RuntimeError(f"POST {path}: {answer.status}")


@contextlib.contextmanager
def api_server(broker: str, backend: str, port: int, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``jobkit api`` with one process, its settings all from flags (an empty env file)."""
    env_file = tmp / "empty.env"
    env_file.touch()
    proc = subprocess.Popen([sys.executable, "-m", "jobkit", "api", "-A", common.APP, "--broker", broker,
                             "--backend", backend, "--host", "127.0.0.1", "--port", str(port),
                             "--processes", "1", "--env-file", str(env_file), "-l", "ERROR"],
                            cwd=common.ROOT, env=common.clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        common.stop_group(proc)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("batch", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=5_000, help="jobs per side (default 5000)")
    parser.add_argument("--per-request", type=int, default=100, help="jobs per batch request (default 100)")
    parser.add_argument("--turn", type=int, default=500, help="jobs per side and turn (default 500)")
    args = parser.parse_args(argv)
    per = max(1, min(args.per_request, args.turn))
    turn = max(per, args.turn // per * per)
    single, batch = json.dumps(JOB).encode(), json.dumps({"jobs": [JOB] * per}).encode()
    turns = max(1, args.jobs // turn)
    with common.servers() as (beanstalkd, tmp):
        port = free_port()
        with api_server(beanstalkd.url, common.sqlite_url(tmp / "jobkit.db"), port, tmp) as proc:
            common.wait_port(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            batch_s = single_s = 0.0
            for _ in range(turns):
                start = time.perf_counter()
                for _ in range(turn):
                    post(conn, "/v1/jobs", single)
                single_s += time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(turn // per):
                    post(conn, "/v1/jobs/batch", batch)
                batch_s += time.perf_counter() - start
            conn.close()
    n = turns * turn
    return common.report("batch", n / batch_s, n / single_s,
                         f"jobs={n} per_request={per} baseline=single-POST")


if __name__ == "__main__":
    main()
