"""The ``jobkit`` command. Every setting has a flag; flags win over the environment and ``.env``."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobkit import __version__
from jobkit.app import App
from jobkit.config import Settings
from jobkit.errors import ConfigError, JobkitError, JobNotFound, PayloadError
from jobkit.message import loads

log = logging.getLogger("jobkit")


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) from the current directory first.

    Raises:
        ConfigError: the module or attribute is missing, or is not an App.
    """
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from None
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} is not a jobkit App (use -A module:attribute)")
    return app


def env_file(args: argparse.Namespace) -> Path:
    """The dotenv file to read: ``--env-file`` (which must exist), else ``./.env`` if present.

    Raises:
        ConfigError: an explicit ``--env-file`` is missing.
    """
    if args.env_file is None:
        return Path(".env")
    path = Path(args.env_file)
    if not path.exists():
        raise ConfigError(f"--env-file {args.env_file}: no such file")
    return path


def context(args: argparse.Namespace) -> tuple[Settings, App]:
    """Settings from env + .env + flags, and the app they name, configured with them."""
    settings = Settings.from_env(env_file=env_file(args)).replace(
        app=args.app, broker_url=args.broker, backend_url=args.backend,
        result_ttl=args.result_ttl, **{k: getattr(args, k, None) for k in
                                       ("api_host", "api_port", "api_token", "max_body", "default_task")})
    app = load_app(settings.app)
    app.configure(settings=settings, broker=args.broker, backend=args.backend)
    app.broker, app.backend  # noqa: B018 - an unknown URL scheme fails here, before any work
    return settings, app


# -- commands ---------------------------------------------------------------

def cmd_worker(args: argparse.Namespace) -> int:
    from jobkit.pool import ProcessPool
    from jobkit.worker import Worker

    _, app = context(args)
    queues = [q for q in (args.queues or "").split(",") if q] or None
    if args.pool == "process":
        ProcessPool(app, queues=queues, processes=args.concurrency, grace_s=args.grace,
                    prune_every_s=args.prune_every).run()
    else:
        Worker(app, queues=queues, concurrency=args.concurrency, grace_s=args.grace,
               prune_every_s=args.prune_every).run()
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    _, app = context(args)
    values = [_json_arg(text, f"argument {i}") for i, text in enumerate(args.args, 1)]
    kwargs = _json_arg(args.kwargs, "--kwargs") if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise PayloadError("--kwargs must be a JSON object")
    job = app.send(args.task, values, kwargs, queue=args.queue, priority=args.priority,
                   delay=args.delay, ttr=args.ttr, idempotency_key=args.key)
    print(job.id)
    if args.wait is not None:
        print(json.dumps(job.get(timeout=args.wait), ensure_ascii=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _, app = context(args)
    try:
        record = app.status(args.job_id).record
    except JobNotFound:
        print(f"jobkit: no job {args.job_id!r} (never enqueued, or expired)", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2, ensure_ascii=False))
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    _, app = context(args)
    kicked = app.kick(queue=args.queue, job_id=args.job)
    print(f"kicked {kicked} job(s)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    _, app = context(args)
    print(json.dumps(app.stats(), indent=2, sort_keys=True))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from jobkit.api.server import serve

    settings, app = context(args)
    serve(settings, app, processes=args.processes, threads=args.threads)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from jobkit.embedded import up

    settings, app = context(args)
    return up(settings, app, args)


def _json_arg(text: str, what: str) -> Any:
    try:
        return loads(text)
    except PayloadError as exc:
        raise PayloadError(f"{what} is not JSON ({exc}); quote strings: '\"text\"'") from None


# -- parser -----------------------------------------------------------------

def _common(parser: argparse.ArgumentParser, loglevel: str = "WARNING") -> None:
    group = parser.add_argument_group("settings (default: environment, then .env)")
    group.add_argument("-A", "--app", help="the App to load, module:attribute (JOBKIT_APP)")
    group.add_argument("--broker", help="broker URL (JOBKIT_BROKER_URL)")
    group.add_argument("--backend", help="result backend URL (JOBKIT_BACKEND_URL)")
    group.add_argument("--result-ttl", type=_seconds, metavar="S",
                       help="seconds finished records are kept (JOBKIT_RESULT_TTL)")
    group.add_argument("--env-file", metavar="PATH",
                       help="dotenv file to read; it must exist (default: ./.env when present)")
    group.add_argument("-l", "--loglevel", default=loglevel, type=str.upper, choices=_LEVELS,
                       metavar="LEVEL", help=f"{', '.join(_LEVELS)} (default {loglevel})")


def _api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", dest="api_host", help="bind address (JOBKIT_API_HOST, default 0.0.0.0)")
    parser.add_argument("--port", dest="api_port", type=_port,
                        help="port (JOBKIT_API_PORT or MANAGER_LISTEN_PORT, default 8080)")
    parser.add_argument("--token", dest="api_token", help="bearer token to require (JOBKIT_API_TOKEN)")
    parser.add_argument("--max-body", type=_non_negative, metavar="BYTES",
                        help="request body limit (JOBKIT_MAX_BODY)")
    parser.add_argument("--default-task", help="task POST / enqueues (JOBKIT_DEFAULT_TASK)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobkit", description="jobkit: tasks through beanstalkd, "
                                     "outcomes in MongoDB or SQLite, a REST API for any language.")
    parser.add_argument("--version", action="version", version=f"jobkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run jobs", description="Reserve jobs and run them.")
    p.add_argument("-c", "--concurrency", type=_positive, default=os.cpu_count() or 1,
                   help="jobs run at once (default: number of CPUs)")
    p.add_argument("--pool", choices=("thread", "process"), default="thread",
                   help="threads in this process, or one process per job slot (default thread)")
    p.add_argument("-q", "--queues", help="comma-separated queues (default: those of the app's tasks)")
    p.add_argument("--grace", type=_seconds, default=30.0, metavar="S",
                   help="seconds running jobs get to finish after SIGTERM/SIGINT (default 30)")
    p.add_argument("--prune-every", type=_positive_seconds, default=3600.0, metavar="S",
                   help="seconds between deletions of expired records, first at start (default 3600)")
    _common(p, "INFO")
    p.set_defaults(func=cmd_worker)

    for name in ("api", "manager"):
        p = sub.add_parser(name, help="serve the HTTP API" + (" (alias of api)" if name == "manager" else ""),
                           description="Serve the HTTP API on waitress.")
        _api_flags(p)
        p.add_argument("--processes", type=_positive, default=1,
                       help="processes sharing the port (default 1)")
        p.add_argument("--threads", type=_positive, default=8, help="threads per process (default 8)")
        _common(p, "INFO")
        p.set_defaults(func=cmd_api)

    p = sub.add_parser("up", help="run everything on this machine",
                       description="API + workers (+ beanstalkd when installed) in one command.")
    p.add_argument("--workers", type=_positive, default=2, help="worker slots (default 2)")
    _api_flags(p)
    _common(p, "INFO")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("enqueue", help="send a job; prints its id",
                       description="Send a job. Each ARG is one JSON value.")
    p.add_argument("task", help="registered task name")
    p.add_argument("args", nargs="*", metavar="JSON-ARG", help="positional argument, as JSON")
    p.add_argument("--kwargs", metavar="JSON", help="keyword arguments, a JSON object")
    p.add_argument("--queue", help="queue (default: the task's)")
    p.add_argument("--priority", type=int, help="0 is most urgent (default: the task's)")
    p.add_argument("--delay", type=_seconds, default=0, metavar="S", help="seconds before it may run")
    p.add_argument("--ttr", type=int, metavar="S", help="time-to-run in seconds (default: the task's)")
    p.add_argument("--key", help="idempotency key: a repeat returns the first job")
    p.add_argument("--wait", type=_seconds, metavar="S", help="wait up to S seconds and print the result")
    _common(p)
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("status", help="print a job's record as JSON",
                       description="Print a job's record as JSON; exit 1 when there is none.")
    p.add_argument("job_id")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("kick", help="bring buried (dead-letter) jobs back",
                       description="Make buried jobs ready again.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--queue", help="every buried job of this queue")
    which.add_argument("--job", metavar="ID", help="one job, by jobkit id")
    which.add_argument("--all", action="store_true", help="every buried job of every queue")
    _common(p)
    p.set_defaults(func=cmd_kick)

    p = sub.add_parser("stats", help="queue counts and job counts by state",
                       description="Print per-queue broker counts and record counts by state.")
    _common(p)
    p.set_defaults(func=cmd_stats)
    return parser


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be a number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _whole(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError("must not be negative" if low == 0 else f"must be at least {low}")
    return value


def _non_negative(text: str) -> int:
    return _whole(text, 0)


def _port(text: str) -> int:
    value = _whole(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535)")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jobkit`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except JobkitError as exc:
        print(f"jobkit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
