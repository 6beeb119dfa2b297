"""The canvas: signatures, and the workflows built from them (Celery's vocabulary).

A :class:`Signature` is one task call not made yet: a task name, args,
kwargs and options (``queue``, ``priority``, ``delay``, ``ttr``,
``immutable``). Signatures compose:

- ``chain(a, b, c)``: one after another; each result is prepended to the
  next step's args (unless that step is immutable, ``task.si(...)``);
- ``group(a, b, c)``: side by side; its result is the list of results, in order;
- ``chord(header, body)``: a group, then ``body`` with the list of results.

They nest (a chain of groups, a chord inside a chain), and every one has a
JSON form (:meth:`to_dict`, :func:`from_dict`), so a workflow travels in a
message or over HTTP: ``{"task", "args", "kwargs", "options"}``,
``{"chain": [...]}``, ``{"group": [...]}``, ``{"chord": {"header": [...],
"body": {...}}}``. How a workflow runs is :mod:`jobkit.workflows`.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from jobkit.errors import ConfigError, JobTimeout, PayloadError, TaskNotFound
from jobkit.job import Job, JobState

if TYPE_CHECKING:
    from jobkit.app import App

#: Options a signature may carry; ``delay`` is in seconds.
OPTIONS = ("queue", "priority", "delay", "ttr", "immutable")
#: How deeply chains, groups and chords may nest in a JSON workflow.
MAX_NESTING = 16


class Signature:
    """A task call to make later: ``add.s(1, 2)``; ``add.si(1, 2)`` ignores a parent's result.

    Args:
        task: the registered task's name.
        args: positional arguments (JSON data); a parent's result goes first.
        kwargs: keyword arguments (JSON data).
        app: the App to send with (a task's ``.s()`` sets it).
        **options: see :data:`OPTIONS`.

    Raises:
        ConfigError: an unknown option.
        PayloadError: args is not a list or tuple, kwargs not a mapping.
    """

    def __init__(self, task: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 *, app: App | None = None, **options: Any) -> None:
        if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable):
            raise PayloadError(f"args must be a list or tuple of arguments, not {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise PayloadError(f"kwargs must be an object, not {kwargs!r}")
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown signature option(s) {', '.join(unknown)};"
                              f" known: {', '.join(OPTIONS)}")
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.options = {k: v for k, v in options.items() if v is not None}
        self.app = app

    @property
    def immutable(self) -> bool:
        """True when a parent's result is not passed to this step."""
        return bool(self.options.get("immutable"))

    def set(self, **options: Any) -> Signature:
        """A copy with these options changed (``None`` removes one)."""
        merged = {k: v for k, v in (self.options | options).items() if v is not None}
        return Signature(self.task, self.args, self.kwargs, app=self.app, **merged)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"task", "args", "kwargs", "options"}``."""
        return {"task": self.task, "args": list(self.args), "kwargs": dict(self.kwargs),
                "options": dict(self.options)}

    def delay(self, *args: Any, **kwargs: Any) -> Job[Any]:
        """Send this call, with ``args`` before its own and ``kwargs`` over its own."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                    app: App | None = None, eta: dt.datetime | None = None) -> Job[Any]:
        """Send this call as one job (see :meth:`jobkit.Task.apply_async` for ``eta``)."""
        opts = {k: v for k, v in self.options.items() if k != "immutable"}
        if eta is not None:
            opts["delay"] = eta_delay(eta, opts.get("delay", 0))
        return _app_of(self, app).send(self.task, [*args, *self.args], self.kwargs | dict(kwargs or {}),
                                       **opts)

    def __or__(self, other: Canvas) -> chain:
        return chain(self, other)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.task)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}.{'si' if self.immutable else 's'}({', '.join(parts)})"


class _Composite:
    """What chain, group and chord share: sending, the app, ``|``."""

    def delay(self, *, app: App | None = None) -> Job[Any] | GroupJob:
        """Enqueue the whole workflow: see :func:`jobkit.workflows.enqueue`."""
        from jobkit import workflows  # workflows builds on this module
        return workflows.enqueue(_app_of(self, app), self)  # type: ignore[arg-type]

    apply_async = delay

    def signatures(self) -> Iterable[Signature]:
        """Every signature inside, depth first, in order."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __or__(self, other: Canvas) -> chain:
        return chain(self, other)  # type: ignore[arg-type]


class chain(_Composite):  # noqa: N801 - Celery's name
    """Steps run one after another: ``chain(add.s(1, 2), mul.s(10))``; its job is the last step's."""

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        self.tasks: list[Canvas] = _members(tasks, "chain")

    def signatures(self) -> Iterable[Signature]:
        for task in self.tasks:
            yield from _signatures(task)

    def to_dict(self) -> dict[str, Any]:
        return {"chain": [t.to_dict() for t in self.tasks]}

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))


class group(_Composite):  # noqa: N801 - Celery's name
    """Steps run side by side: ``group(add.s(i, i) for i in range(10))``; a :class:`GroupJob`."""

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        self.tasks: list[Canvas] = _members(tasks, "group")

    def signatures(self) -> Iterable[Signature]:
        for task in self.tasks:
            yield from _signatures(task)

    def to_dict(self) -> dict[str, Any]:
        return {"group": [t.to_dict() for t in self.tasks]}

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class chord(_Composite):  # noqa: N801 - Celery's name
    """A group, then ``body`` called once with the list of the group's results, in order."""

    def __init__(self, header: Canvas | Iterable[Canvas], body: Canvas) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = body
        _members((body,), "chord body")

    def signatures(self) -> Iterable[Signature]:
        yield from self.header.signatures()
        yield from _signatures(self.body)

    def to_dict(self) -> dict[str, Any]:
        return {"chord": {"header": [t.to_dict() for t in self.header.tasks], "body": self.body.to_dict()}}

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


Canvas = Signature | chain | group | chord


class GroupJob:
    """The jobs of a group, in order.

    Attributes:
        jobs: one :class:`~jobkit.Job` per result of the group.
    """

    def __init__(self, app: App, jobs: list[Job[Any]]) -> None:
        self.app = app
        self.jobs = jobs

    @property
    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]

    def __repr__(self) -> str:
        return f"<GroupJob of {len(self.jobs)}>"

    def __len__(self) -> int:
        return len(self.jobs)

    def get(self, timeout: float | None = 10.0) -> list[Any]:
        """Wait for every job; return their results in order.

        Args:
            timeout: seconds to wait for all of them together; ``None`` waits for ever.

        Raises:
            JobFailed: a job failed (the first one found, in order).
            JobCancelled: a job was cancelled.
            JobTimeout: not all finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for job in self.jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results.append(job.get(timeout=left))
            except JobTimeout:
                raise JobTimeout(f"group not finished after {timeout} s (job {job.id})") from None
        return results

    def status(self) -> dict[str, int]:
        """How many of the jobs are in each state: ``{"queued": 3, "succeeded": 7, ...}``."""
        counts = dict.fromkeys((s.value for s in JobState), 0)
        for job in self.jobs:
            counts[job.status().state.value] += 1
        return counts

    def ready(self) -> bool:
        """True when every job is finished."""
        return all(job.status().state.finished for job in self.jobs)


def eta_delay(eta: dt.datetime, delay: float = 0) -> float:
    """Seconds from now until ``eta`` (naive means UTC; in the past means now).

    Raises:
        ConfigError: ``eta`` is not a datetime, or a delay is given too.
    """
    if not isinstance(eta, dt.datetime):
        raise ConfigError(f"eta must be a datetime, not {type(eta).__name__}")
    if delay:
        raise ConfigError("give eta or delay, not both")
    aware = eta if eta.tzinfo is not None else eta.replace(tzinfo=dt.UTC)
    return max(0.0, (aware - dt.datetime.now(dt.UTC)).total_seconds())


def from_dict(data: Any, app: App | None = None, *, path: str = "workflow", depth: int = 0) -> Canvas:
    """Build a signature or workflow from its JSON form.

    A signature is ``{"task", "args"?, "kwargs"?, "options"?}``, its options
    also accepted beside ``task`` (the ``POST /v1/jobs`` body plus ``immutable``).

    Args:
        data: the decoded JSON.
        app: when given, every task must be registered there, and signatures are bound to it.
        path: where ``data`` is, for messages (``workflow.chain[2]``).

    Raises:
        ConfigError: the shape is wrong, or nests deeper than :data:`MAX_NESTING`.
        TaskNotFound: ``app`` has no such task.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object (a job or a chain, group or chord)")
    if depth > MAX_NESTING:
        raise ConfigError(f"{path}: workflows nest at most {MAX_NESTING} levels")
    if "task" in data:
        return _signature(data, app, path)
    if len(data) != 1 or next(iter(data)) not in ("chain", "group", "chord"):
        raise ConfigError(f'{path}: expected {{"task": ...}}, {{"chain": [...]}}, {{"group": [...]}}'
                          f' or {{"chord": {{"header": [...], "body": {{...}}}}}}')
    kind, value = next(iter(data.items()))
    if kind == "chord":
        if not isinstance(value, dict) or set(value) != {"header", "body"}:
            raise ConfigError(f'{path}.chord: expected {{"header": [...], "body": {{...}}}}')
        header = _list(value["header"], app, f"{path}.chord.header", depth)
        return chord(header, from_dict(value["body"], app, path=f"{path}.chord.body", depth=depth + 1))
    steps = _list(value, app, f"{path}.{kind}", depth)
    return chain(steps) if kind == "chain" else group(steps)


def _list(value: Any, app: App | None, path: str, depth: int) -> list[Canvas]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: expected a non-empty array")
    return [from_dict(item, app, path=f"{path}[{i}]", depth=depth + 1) for i, item in enumerate(value)]


def _signature(data: dict[str, Any], app: App | None, path: str) -> Signature:
    allowed = {"task", "args", "kwargs", "options", *OPTIONS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)};"
                          f" known: {', '.join(sorted(allowed))}")
    task, args, kwargs = data["task"], data.get("args") or [], data.get("kwargs") or {}
    options = data.get("options") or {}
    if not isinstance(task, str) or not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not isinstance(options, dict):
        raise ConfigError(f'{path}: "task" is a string, "args" an array, "kwargs" and "options" objects')
    options = options | {k: data[k] for k in OPTIONS if data.get(k) is not None}
    _check_options(options, path)
    if app is not None and task not in app.tasks:
        raise TaskNotFound(f"{path}: no task named {task!r}")
    try:
        return Signature(task, args, kwargs, app=app, **options)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _check_options(options: dict[str, Any], path: str) -> None:
    kinds: dict[str, tuple[type, ...]] = {"queue": (str,), "priority": (int,), "delay": (int, float),
                                          "ttr": (int,), "immutable": (bool,)}
    for name, value in options.items():
        kind = kinds.get(name)
        if kind is not None and value is not None and (
                not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind)):
            raise ConfigError(f'{path}: option "{name}" has the wrong type ({type(value).__name__})')


def _members(tasks: tuple[Any, ...], what: str) -> list[Canvas]:
    """The steps given as arguments, or as one iterable (a list, a generator)."""
    items: list[Any]
    if len(tasks) == 1 and not isinstance(tasks[0], (Signature, _Composite)):
        items = list(tasks[0])
    else:
        items = list(tasks)
    if not items:
        raise ConfigError(f"a {what} needs at least one step")
    for item in items:
        if not isinstance(item, (Signature, _Composite)):
            raise ConfigError(f"a {what} holds signatures (task.s(...)) and workflows, not {item!r}")
    return items


def _signatures(task: Canvas) -> Iterable[Signature]:
    if isinstance(task, Signature):
        yield task
    else:
        yield from task.signatures()


def _app_of(canvas: Canvas | _Composite, app: App | None) -> App:
    if app is not None:
        return app
    for sig in _signatures(canvas):  # type: ignore[arg-type]
        if sig.app is not None:
            return sig.app
    raise ConfigError("no App to send with: make signatures with task.s(...) or pass app=")
