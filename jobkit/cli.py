"""The ``jobkit`` command. Every setting has a flag; flags win over the environment and ``.env``."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jobkit import __version__
from jobkit.app import App
from jobkit.config import DEFAULT_APP, Settings
from jobkit.errors import BrokerUnavailable, ConfigError, JobkitError, JobNotFound, PayloadError, TaskNotFound
from jobkit.logs import FORMATS
from jobkit.logs import configure as configure_logging
from jobkit.message import loads
from jobkit.metrics import JobStats
from jobkit.worker import DEFAULT_CANCEL_GRACE_S

log = logging.getLogger("jobkit")


APP_HINT = "name your App with -A module:attribute (or JOBKIT_APP)"


class StdoutClosed(Exception):
    """Raised when whoever reads our output has gone (``jobkit stats | head -1``)."""


def emit(text: str) -> None:
    """Print ``text`` to stdout now.

    Raises:
        StdoutClosed: the reader closed the pipe; ``main`` then exits quietly.
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise StdoutClosed from None


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) from the current directory first.

    Raises:
        ConfigError: the module or attribute is missing, is not an App, or the
            module failed while importing; the message is one line.
    """
    module_name, _, attr = spec.strip().partition(":")
    if not module_name:
        raise ConfigError(f"no app module in {spec!r}: {APP_HINT}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError) as exc:  # not found; relative or malformed names
        raise ConfigError(f"cannot import app module {module_name!r} ({exc}): {APP_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised: say what and where, once
        raise ConfigError(f"app module {module_name!r} raised {_described(exc)}") from None
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} is not a jobkit App: {APP_HINT}")
    return app


def _described(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def env_file(args: argparse.Namespace) -> Path:
    """The dotenv file to read: ``--env-file`` (``/dev/null`` for none), else ``./.env`` if present.

    Raises:
        ConfigError: an explicit ``--env-file`` is missing or a folder.
    """
    if args.env_file is None:
        return Path(".env")
    path = Path(args.env_file)
    if not path.exists():
        raise ConfigError(f"--env-file {args.env_file}: no such file")
    if path.is_dir():
        raise ConfigError(f"--env-file {args.env_file}: is a folder, not a file")
    return path


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from env + .env, overridden by the flags that were given."""
    return Settings.from_env(env_file=env_file(args)).replace(
        app=args.app, broker_url=args.broker, backend_url=args.backend,
        result_ttl=args.result_ttl, **{k: getattr(args, k, None) for k in
                                       ("api_host", "api_port", "api_token", "max_body", "default_task")})


def context(args: argparse.Namespace) -> tuple[Settings, App]:
    """Settings from env + .env + flags, and the app they name, configured with them."""
    settings = settings_of(args)
    return settings, _configured(load_app(settings.app), settings, args)


def taskless_app(args: argparse.Namespace) -> App:
    """The App for commands that run no task (status, stats, kick): only URLs matter.

    A bare App built from the settings, so these work wherever the user's
    module cannot be imported; ``-A`` given on the command line is still
    loaded (an App may name its broker and backend in code).
    """
    settings = settings_of(args)
    app = load_app(args.app) if args.app else App("jobkit", settings=settings)
    return _configured(app, settings, args)


def _configured(app: App, settings: Settings, args: argparse.Namespace) -> App:
    app.configure(settings=settings, broker=args.broker, backend=args.backend)
    app.broker, app.backend  # noqa: B018 - an unknown URL scheme fails here, before any work
    return app


# -- commands ---------------------------------------------------------------

def cmd_worker(args: argparse.Namespace) -> int:
    from jobkit.asyncpool import AsyncWorker
    from jobkit.beat import alongside
    from jobkit.pool import ProcessPool
    from jobkit.worker import Worker

    _, app = context(args)
    queues = [q for q in (args.queues or "").split(",") if q] or None
    with alongside(app, enabled=args.beat, process=args.pool == "process"):
        if args.pool == "process":
            with worker_metrics(args, several=True) as (metrics_dir, _):
                ProcessPool(app, queues=queues, processes=args.concurrency, grace_s=args.grace,
                            prune_every_s=args.prune_every, metrics_dir=metrics_dir,
                            cancel_grace_s=args.cancel_grace).run()
        else:
            kind = AsyncWorker if args.pool == "asyncio" else Worker
            with worker_metrics(args, several=False) as (_, stats):
                kind(app, queues=queues, concurrency=args.concurrency, grace_s=args.grace,
                     prune_every_s=args.prune_every, stats=stats, cancel_grace_s=args.cancel_grace).run()
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from jobkit.beat import run_forever

    return run_forever(context(args)[1])


def cmd_schedules(args: argparse.Namespace) -> int:
    _, app = context(args)
    print(json.dumps({"schedules": app.list_schedules()}, indent=2, ensure_ascii=False))
    return 0


@contextlib.contextmanager
def worker_metrics(args: argparse.Namespace, several: bool) -> Iterator[tuple[str | None, JobStats | None]]:
    """Serve ``--metrics-port`` while the block runs: (multiprocess directory, this process's stats).

    ``several``: the jobs run in forked processes, which write their metrics
    to a private directory that the endpoint here adds up.
    """
    if args.metrics_port is None:
        yield None, None
        return
    from prometheus_client import CollectorRegistry

    from jobkit import metrics

    with contextlib.ExitStack() as stack:
        path = stack.enter_context(metrics.multiprocess_dir()) if several else None
        registry = metrics.registry_for(path) if several else CollectorRegistry(auto_describe=False)
        stats = None if several else metrics.JobStats(metrics.PrometheusJobs(registry))
        server = metrics.serve(registry, args.metrics_host, args.metrics_port)
        stack.callback(server.shutdown)
        host, port = server.server_address[:2]
        log.info("metrics: http://%s:%s/metrics", host, port)
        yield path, stats


def cmd_enqueue(args: argparse.Namespace) -> int:
    _, app = context(args)
    values = [_json_arg(text, f"argument {i}") for i, text in enumerate(args.args, 1)]
    kwargs = _json_arg(args.kwargs, "--kwargs") if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise PayloadError("--kwargs must be a JSON object")
    job = app.send(args.task, values, kwargs, queue=args.queue, priority=args.priority,
                   delay=args.delay, ttr=args.ttr, idempotency_key=args.key)
    emit(job.id)
    if args.wait is not None:
        emit(json.dumps(job.get(timeout=args.wait), ensure_ascii=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    app = taskless_app(args)
    try:
        record = app.status(args.job_id).record
    except JobNotFound:
        print(f"jobkit: no job {args.job_id!r} (never enqueued, or expired)", file=sys.stderr)
        return 1
    emit(json.dumps(record, indent=2, ensure_ascii=False))
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    app = taskless_app(args)
    try:
        kicked = app.kick(queue=args.queue, job_id=args.job)
    except TaskNotFound as exc:  # no longer buried: enqueued anew, which takes its task's options
        raise TaskNotFound(f"{exc}: to enqueue the job anew, {APP_HINT}") from None
    emit(f"kicked {kicked} job(s)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    app = taskless_app(args)
    emit(json.dumps(app.stats(), indent=2, sort_keys=True))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from jobkit.api.server import processes_for, serve

    settings, app = context(args)
    serve(settings, app, processes=processes_for(app, args.processes), threads=args.threads)
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
    group.add_argument("-A", "--app", help=f"the App to load, module:attribute (JOBKIT_APP, default "
                       f"{DEFAULT_APP}); status, stats and kick load one only when this flag names it")
    group.add_argument("--broker", help="broker URL (JOBKIT_BROKER_URL)")
    group.add_argument("--backend", help="result backend URL (JOBKIT_BACKEND_URL)")
    group.add_argument("--result-ttl", type=_seconds, metavar="S",
                       help="seconds finished records are kept (JOBKIT_RESULT_TTL)")
    group.add_argument("--env-file", metavar="PATH",
                       help="dotenv file to read; it must exist (default: ./.env when present)")
    group.add_argument("-l", "--loglevel", default=loglevel, type=str.upper, choices=_LEVELS,
                       metavar="LEVEL", help=f"{', '.join(_LEVELS)} (default {loglevel})")
    group.add_argument("--log-format", choices=FORMATS, default="text",
                       help="text, or json: one JSON object per line (default text)")


def _api_flags(parser: argparse.ArgumentParser, host: str = "0.0.0.0") -> None:
    parser.add_argument("--host", dest="api_host", help=f"bind address (JOBKIT_API_HOST, default {host})")
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
    p.add_argument("--pool", choices=("thread", "process", "asyncio"), default="thread",
                   help="threads in this process, one process per job slot, or N jobs on one "
                   "asyncio event loop, for async def tasks (default thread)")
    p.add_argument("-q", "--queues", help="comma-separated queues (default: those of the app's tasks)")
    p.add_argument("--grace", type=_seconds, default=30.0, metavar="S",
                   help="seconds running jobs get to finish after SIGTERM/SIGINT (default 30)")
    p.add_argument("--cancel-grace", type=_seconds, default=DEFAULT_CANCEL_GRACE_S, metavar="S",
                   help="seconds a cancelled running job gets to stop by itself before it is "
                   f"stopped by force (default {DEFAULT_CANCEL_GRACE_S:g})")
    p.add_argument("--prune-every", type=_positive_seconds, default=3600.0, metavar="S",
                   help="seconds between deletions of expired records, first at start (default 3600)")
    p.add_argument("--beat", action="store_true", help="also send the app's periodic tasks (as jobkit beat)")
    p.add_argument("--metrics-port", type=_port, metavar="P",
                   help="serve Prometheus metrics on this port (one endpoint for every process "
                        "of the pool; default: none)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="H",
                   help="bind address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 in a container)")
    _common(p, "INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("beat", help="send periodic tasks as they come due",
                       description="Enqueue each tick of the app's schedules; any number may run at once "
                                   "(one job per tick).")
    _common(p, "INFO")
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("schedules", help="list schedules with their last and next run (JSON)",
                       description="Print the app's schedules with last_run and next_run (UTC) as JSON.")
    _common(p)
    p.set_defaults(func=cmd_schedules)

    for name in ("api", "manager"):
        p = sub.add_parser(name, help="serve the HTTP API" + (" (alias of api)" if name == "manager" else ""),
                           description="Serve the HTTP API on waitress.")
        _api_flags(p)
        p.add_argument("--processes", type=_positive,
                       help="processes sharing the port (default: one per CPU core; 1 with a memory:// "
                       "broker or backend)")
        p.add_argument("--threads", type=_positive, default=8, help="threads per process (default 8)")
        _common(p, "INFO")
        p.set_defaults(func=cmd_api)

    p = sub.add_parser("up", help="run everything on this machine",
                       description="API + workers (+ beanstalkd when installed) in one command. "
                       "Reuses a beanstalkd already at the broker address (default 127.0.0.1:11300), "
                       "else starts one there when installed, else uses an in-process broker; "
                       "one `up` per directory.")
    p.add_argument("--workers", type=_positive, help="worker slots (default: one per CPU core; "
                   "worker processes, or threads with the in-process broker)")
    p.add_argument("--processes", type=_positive, help="API processes sharing the port (default: one "
                   "per CPU core, so API and workers each can use every core; 1 with the in-process broker)")
    _api_flags(p, host="127.0.0.1")
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
    """Run the ``jobkit`` command; returns the exit status.

    Every failure is one line on stderr and a non-zero status, never a
    traceback (``-l DEBUG`` logs one for an unexpected error). A closed
    stdout ends the command quietly with 141, as SIGPIPE ends other tools.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.loglevel, args.log_format)
    try:
        return int(args.func(args) or 0)
    except StdoutClosed:
        _drop_stdout()
        return 141
    except BrokerUnavailable as exc:
        return _fail(f"{type(exc).__name__}: {exc}{broker_hint()}")
    except JobkitError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, and its traceback at DEBUG
        log.debug("unexpected error", exc_info=True)
        return _fail(f"unexpected {_described(exc)} (-l DEBUG shows the traceback)")


def broker_hint() -> str:
    """Why the broker may be out of reach, from what a ``jobkit up`` here says it runs."""
    from jobkit.embedded import running_up

    found = running_up()
    if found is None:
        return ("; is it running? (`jobkit up` starts a beanstalkd; --broker or JOBKIT_BROKER_URL "
                "names another broker)")
    if str(found.get("broker", "")).startswith("memory:"):
        api = found.get("api", "127.0.0.1:8080")
        return (f"; the jobkit up running here (pid {found.get('pid')}) uses its in-process broker, which "
                f"no other process reaches: enqueue through its HTTP API: curl -X POST {api}/v1/jobs "
                f"-H 'Content-Type: application/json' --data '{{\"task\":\"hash_payload\",\"args\":[{{}}]}}'")
    return (f"; the jobkit up running here (pid {found.get('pid')}) uses {found.get('broker')}: "
            "pass it with --broker or JOBKIT_BROKER_URL")


def _fail(message: str) -> int:
    print(f"jobkit: {message}", file=sys.stderr)
    return 1


def _drop_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
