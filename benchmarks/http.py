"""HTTP ingest: ``jobkit api --processes 2`` against minimal Falcon + waitress handlers.

Every server takes ``POST /`` with ``{"example":"data"}``. The baseline (the
ratio's denominator) is the minimal put-only handler: parse the JSON, put it
into beanstalkd, answer 202. Beside it, the same-work handler also records
the job in SQLite (one upsert) before answering. jobkit records the job and
puts it, as every enqueue does. All run 2 processes sharing the port
(SO_REUSEPORT) with the same threads each; ``wrk -t2 -c32`` drives each for
the same time, in alternating slices with every server up, so that a noisy
neighbour slows all alike. Latency: the median of the slices' p50 and the
worst of their p99. A line ``http_batch:`` comes first: jobkit's
``POST /v1/jobs/batch`` with ``--batch`` jobs a request, in jobs/s, against
the put-only handler's requests/s. Skipped, with a message, while this tree
has no ``jobkit.api``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import multiprocessing
import re
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import common
from jobkit.embedded import Beanstalkd, die_with_parent, free_port

LUA = """wrk.method = "POST"
wrk.body = '{"example":"data"}'
wrk.headers["Content-Type"] = "application/json"
"""
BATCH_JOB = '{"task":"hash_payload","args":[{"example":"data"}]}'


def batch_lua(jobs: int) -> str:
    """A wrk script posting one ``POST /v1/jobs/batch`` body of ``jobs`` jobs."""
    return LUA.replace("""'{"example":"data"}'""", "'{\"jobs\":[" + ",".join([BATCH_JOB] * jobs) + "]}'")


def api_missing() -> str | None:
    """Why the jobkit side cannot run here, or None when it can."""
    if importlib.util.find_spec("jobkit.api") is None:
        return "jobkit.api is not in this tree yet (jobkit/api/server.py lands with the API work)"
    if shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install wrk)"
    return None


# -- the baseline servers ----------------------------------------------------

class PutOnly:
    """``POST /``: parse JSON, put it; one greenstalk connection per waitress thread."""

    def __init__(self, beanstalkd: Beanstalkd, db_path: Path) -> None:
        self.address = (beanstalkd.host, beanstalkd.port)
        self.local = threading.local()

    def on_post(self, req: Any, resp: Any) -> None:
        import falcon
        import greenstalk

        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = greenstalk.Client(self.address, use=common.BARE_QUEUE)
        job_id = uuid.uuid4().hex
        client.put(json.dumps({"id": job_id, "payload": req.get_media()}, separators=(",", ":")))
        resp.media = {"id": job_id}
        resp.status = falcon.HTTP_202


class BareEnqueue:
    """``POST /``: parse JSON, record it, put it; one bare producer per waitress thread."""

    def __init__(self, beanstalkd: Beanstalkd, db_path: Path) -> None:
        self.beanstalkd, self.db_path = beanstalkd, db_path
        self.local = threading.local()

    def on_post(self, req: Any, resp: Any) -> None:
        import falcon

        producer = getattr(self.local, "producer", None)
        if producer is None:
            producer = self.local.producer = common.BareProducer(self.beanstalkd, self.db_path)
        resp.media = {"id": producer.send(req.get_media())}
        resp.status = falcon.HTTP_202


def _serve_bare(port: int, beanstalkd: Beanstalkd, db_path: Path, threads: int,
                handler: type[Any] = BareEnqueue) -> None:
    import falcon
    import waitress

    die_with_parent()
    logging.getLogger("waitress").setLevel(logging.ERROR)  # no "Task queue depth" lines
    app = falcon.App()
    app.add_route("/", handler(beanstalkd, db_path))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    waitress.serve(app, sockets=[sock], threads=threads, _quiet=True)


@contextmanager
def bare_server(beanstalkd: Beanstalkd, db_path: Path, processes: int, threads: int,
                handler: type[Any] = BareEnqueue) -> Iterator[int]:
    common.bare_db(db_path).close()
    port = free_port()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_serve_bare, args=(port, beanstalkd, db_path, threads, handler), daemon=True)
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        common.wait_port(port)
        yield port
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(5)


@contextmanager
def jobkit_server(beanstalkd: Beanstalkd, db_path: Path, processes: int, threads: int) -> Iterator[int]:
    port = free_port()
    with common.jobkit_command("api", "-A", common.APP, "--broker", beanstalkd.url,
                               "--backend", common.sqlite_url(db_path), "--host", "127.0.0.1",
                               "--port", str(port), "--processes", str(processes),
                               "--threads", str(threads), "-l", "ERROR") as proc:
        common.wait_port(port, proc)
        yield port


# -- driving -----------------------------------------------------------------

def drive(port: int, script: Path, seconds: float, path: str = "/") -> tuple[float, dict[str, float]]:
    """Run wrk against ``port``; return (requests/s, {"p50", "p99" in ms, "non2xx", "errors"})."""
    url = f"http://127.0.0.1:{port}{path}"
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    found = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rps, {"p50": _ms(found.get("50", "0ms")), "p99": _ms(found.get("99", "0ms")),
                 "non2xx": float(bad.group(1)) if bad else 0.0, "errors": 1.0 if errors else 0.0}


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}.get(re.sub(r"^[\d.]+", "", text), 1.0)


def summary(slices: list[tuple[float, dict[str, float]]], prefix: str = "") -> tuple[float, str]:
    """Mean requests/s over equal slices, and their latency and error notes."""
    rate = sum(rps for rps, _ in slices) / len(slices)
    p50 = sorted(notes["p50"] for _, notes in slices)[len(slices) // 2]
    p99 = max(notes["p99"] for _, notes in slices)
    text = f"{prefix}p50={p50:.1f}ms {prefix}p99={p99:.1f}ms"
    non2xx = sum(notes["non2xx"] for _, notes in slices)
    if non2xx:
        text += f" {prefix}non2xx={non2xx:.0f}"
    if any(notes["errors"] for _, notes in slices):
        text += f" {prefix}socket_errors"
    return rate, text


def main(argv: Sequence[str] | None = None) -> str | None:
    parser = common.parser("http", __doc__)
    parser.add_argument("--seconds", type=float, default=8, help="wrk time per side (default 8)")
    parser.add_argument("--slices", type=int, default=4, help="alternating turns per side (default 4)")
    parser.add_argument("--processes", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per process (default 8)")
    parser.add_argument("--batch", type=int, default=100, help="jobs per batch request (default 100)")
    args = parser.parse_args(argv)
    reason = api_missing()
    if reason is not None:
        print(f"http: skipped: {reason}", flush=True)
        return None
    sides = run(args)
    put_only, put_notes = summary(sides["put_only"], "baseline_")
    same, same_notes = summary(sides["same_work"], "same_work_")
    rate, jobkit_notes = summary(sides["jobkit"])
    batch, batch_notes = summary(sides["batch"], "batch_")
    common.note(f"put-only handler: {put_only:.0f} requests/s; same-work handler: {same:.0f}; "
                f"jobkit api: {rate:.0f}; jobkit batch: {batch * args.batch:.0f} jobs/s")
    shape = f"processes={args.processes} threads={args.threads}"
    common.report("http_batch", batch * args.batch, put_only,
                  f"jobs_per_request={args.batch} {batch_notes} {shape}")
    extra = (f"{jobkit_notes} {put_notes} same_work={same:.0f}/s same_work_ratio={rate / same:.2f}"
             f" {same_notes} {shape}")
    return common.report("http", rate, put_only, extra)


def run(args: Any) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Drive every side in alternating slices; return each side's slices."""
    turn = max(1.0, args.seconds / max(1, args.slices))
    sides: dict[str, list[tuple[float, dict[str, float]]]] = {
        "put_only": [], "same_work": [], "jobkit": [], "batch": []}
    with common.servers() as (beanstalkd, tmp), contextlib.ExitStack() as stack:
        script, batch_script = tmp / "post.lua", tmp / "batch.lua"
        script.write_text(LUA)
        batch_script.write_text(batch_lua(args.batch))
        shape = (args.processes, args.threads)
        ports = {
            "put_only": stack.enter_context(bare_server(beanstalkd, tmp / "put.db", *shape, PutOnly)),
            "same_work": stack.enter_context(bare_server(beanstalkd, tmp / "bare.db", *shape)),
            "jobkit": stack.enter_context(jobkit_server(beanstalkd, tmp / "jobkit.db", *shape)),
        }
        for _ in range(max(1, args.slices)):
            for side, port in ports.items():
                sides[side].append(drive(port, script, turn))
            sides["batch"].append(drive(ports["jobkit"], batch_script, turn, "/v1/jobs/batch"))
    return sides


if __name__ == "__main__":
    main()
