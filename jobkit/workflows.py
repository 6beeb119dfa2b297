"""How workflows run: every job recorded up front, each step moved on by the outcome before it.

Enqueueing a chain, group or chord writes the records of ALL its jobs in one
backend transaction, each ``queued``; those that wait for others carry a
``workflow`` state: the jobs they wait for (``deps``), how many have not
succeeded yet (``pending``), their results so far (``inputs``, JSON text by
slot), and who made them due (``due_by``). Only the jobs that wait for
nothing are put into the broker then.

When a job succeeds, the write that stores its outcome also feeds its
result to each job it precedes (:meth:`Backend.feed`: in the same SQLite
transaction; in MongoDB one atomic update each, safe to repeat). The write
that fills a waiting job's last slot marks it due, and only the job that did
so puts it into the broker, after the write. A chord's fan-in is thus a
counter decremented with each member's outcome, and its callback is put
once, by whichever member finished last: no polling task.

Crashes: the finished job's message is deleted only after its successors
are put. A worker that dies before then leaves the message to be delivered
again; the next worker finds the job finished, feeds again (a repeat changes
nothing) and puts each successor this job made due that has no broker id
yet. A failed job (retries spent) or a cancelled one fails every job
downstream of it, with an error naming it.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobkit.brokers.base import DELAY, Outgoing
from jobkit.canvas import Canvas, GroupJob, Signature, chain, chord, group
from jobkit.errors import BackendError, BrokerError, ConfigError, PayloadError, TaskNotFound, Unsupported
from jobkit.job import Job
from jobkit.message import Envelope, dumps, loads, new_job_id
from jobkit.task import check_delay

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.backends.base import Backend

#: States a waiting job may be failed from (anything else has run or is running).
_WAITING_ONLY = ("running", "retrying", "succeeded", "failed", "cancelled")


@dataclass
class _Step:
    """One job of a workflow being planned."""

    env: Envelope
    delay_s: int
    immutable: bool
    deps: list[str]
    many: bool  # the job gets the list of its deps' results (after a group), else the one result
    next: list[list[Any]] = field(default_factory=list)  # [[job id, slot], ...] it feeds


class _Plan:
    """The jobs of a workflow, with fixed ids, and how results flow between them."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.steps: dict[str, _Step] = {}

    def add(self, node: Canvas, deps: list[str], many: bool) -> tuple[list[str], bool]:
        """Plan ``node`` after ``deps``; return the jobs whose results are its result, and
        whether that result is their list (a group's) or one job's."""
        if isinstance(node, Signature):
            return [self._job(node, deps, many)], False
        if isinstance(node, chain):
            for part in node.tasks:
                deps, many = self.add(part, deps, many)
            return deps, many
        if isinstance(node, group):  # a member that is a group itself is flattened into this one
            tails: list[str] = []
            for part in node.tasks:
                tails += self.add(part, deps, many)[0]
            return tails, True
        if isinstance(node, chord):
            header, _ = self.add(node.header, deps, many)
            return self.add(node.body, header, True)
        raise ConfigError(f"not a signature or workflow: {node!r}")

    def _job(self, sig: Signature, deps: list[str], many: bool) -> str:
        opts = sig.options
        try:
            env = self.app.envelope(sig.task, sig.args, sig.kwargs, queue=opts.get("queue"),
                                    priority=opts.get("priority"), ttr=opts.get("ttr"))
            env.encode()  # arguments that are not JSON data fail now, before anything is written
            step = _Step(env, delay_of(self.app, sig), sig.immutable, list(deps), many)
        except (TaskNotFound, PayloadError, ConfigError, Unsupported) as exc:
            raise type(exc)(f"job {len(self.steps)} of the workflow ({sig.task}): {exc}") from None
        for slot, dep in enumerate(deps):
            self.steps[dep].next.append([env.id, slot])
        self.steps[env.id] = step
        return env.id

    def records(self) -> list[dict[str, Any]]:
        """The record of every job, all ``queued``; the first job's id is the workflow's root."""
        root = next(iter(self.steps))
        return [step.env.record() | {
            "state": "queued", "root": root, "parent": step.deps[0] if len(step.deps) == 1 else None,
            "children": list(dict.fromkeys(child for child, _ in step.next)),
            "workflow": {"deps": step.deps, "many": step.many, "immutable": step.immutable,
                         "pending": len(step.deps), "inputs": {}, "due_by": None, "next": step.next,
                         "ttr": step.env.ttr, "max_retries": step.env.max_retries, "delay": step.delay_s},
        } for step in self.steps.values()]


def enqueue(app: App, canvas: Canvas) -> Job[Any] | GroupJob:
    """Record every job of a workflow in one transaction, then put those that wait for nothing.

    Returns:
        The job whose result is the workflow's (a chain's last step, a
        chord's callback), or a :class:`GroupJob` when that result is a group's.

    Raises:
        TaskNotFound, PayloadError, ConfigError: a step is invalid; nothing was written.
        BrokerUnavailable: the first jobs could not be put; the records were removed.
        BackendUnavailable: the records could not be written; nothing was put.
    """
    plan = _Plan(app)
    tails, many = plan.add(canvas, [], False)
    app.backend.add_many(plan.records())
    first = [step for step in plan.steps.values() if not step.deps]
    try:
        ids = app.broker.put_many([_outgoing(step.env, step.delay_s) for step in first])
    except Exception:
        _forget(app.backend, list(plan.steps))
        raise
    app.backend.add_many([s.env.record() | {"broker_id": b} for s, b in zip(first, ids, strict=True)])
    jobs: list[Job[Any]] = [Job(app, job_id) for job_id in tails]
    return GroupJob(app, jobs) if many else jobs[0]


def send_many(app: App, signatures: Iterable[Signature]) -> list[Job[Any]]:
    """Enqueue independent jobs: every one checked first, puts pipelined, records in one transaction.

    Raises:
        TaskNotFound, PayloadError, ConfigError: item ``i`` is invalid (the
            message starts ``jobs[i]:``); nothing was sent.
        BrokerUnavailable: the broker refused; nothing was sent.
        BackendUnavailable: the records could not be written; the messages were taken back.
    """
    prepared: list[tuple[Envelope, Outgoing]] = []
    checked: dict[tuple[Any, ...], Envelope] = {}  # perf: a task's options are checked once a batch
    now = time.time()
    for i, sig in enumerate(signatures):
        try:
            opts = sig.options
            key = (sig.task, opts.get("queue"), opts.get("priority"), opts.get("ttr"))
            model = checked.get(key)
            if model is None:
                model = checked[key] = app.envelope(sig.task, queue=key[1], priority=key[2], ttr=key[3])
            env = Envelope(new_job_id(), model.task, sig.args, sig.kwargs, model.queue, model.priority,
                           model.ttr, model.max_retries, now)
            prepared.append((env, _outgoing(env, delay_of(app, sig))))
        except (TaskNotFound, PayloadError, ConfigError, Unsupported) as exc:
            raise type(exc)(f"jobs[{i}]: {exc}") from None
    ids = app.broker.put_many([out for _, out in prepared])
    try:
        app.backend.add_many([env.record() | {"broker_id": broker_id}
                              for (env, _), broker_id in zip(prepared, ids, strict=True)])
    except BackendError:
        for broker_id in ids:  # best effort, as when a single send cannot be recorded
            try:
                app.broker.delete(broker_id)
            except BrokerError:
                break
        raise
    return [Job(app, env.id) for env, _ in prepared]


# -- the worker's side -----------------------------------------------------------

def after_outcome(backend: Backend, env: Envelope, flow: dict[str, Any] | None, state: str,
                  result: Any = None, error: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Move a workflow on from a job's stored outcome; call in the transaction that stored it.

    Returns:
        The records of the jobs this outcome made due, for :func:`dispatch`.
    """
    if not flow or not flow.get("next"):
        return []
    if state == "succeeded":
        value = dumps(result)
        due = (backend.feed(child, slot, value, by=env.id) for child, slot in flow["next"])
        return [record for record in due if record is not None]
    if state in ("failed", "cancelled"):
        _fail_downstream(backend, flow, _upstream_error(env.id, env.task, state, error))
    return []


def replay(backend: Backend, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Do again what a finished job's outcome does to its workflow (its message came back).

    Every step is safe to repeat; the jobs returned are those this job made
    due that are not in the broker yet (its worker died before putting them).
    """
    env = Envelope(id=record["id"], task=record.get("task") or "")
    return after_outcome(backend, env, record.get("workflow"), record["state"],
                         record.get("result"), record.get("error"))


def cancelled(backend: Backend, record: dict[str, Any]) -> None:
    """Fail the jobs downstream of a job that was just cancelled."""
    replay(backend, record | {"state": "cancelled"})


def dispatch(app: App, due: list[dict[str, Any]]) -> None:
    """Put jobs made due into the broker, then record their broker ids and full args.

    A job whose message cannot be built or is too large for the broker fails
    (and its downstream with it) instead.

    Raises:
        BrokerUnavailable: nothing was put; the caller keeps its message, to try again.
    """
    ready = []
    for record in due:
        try:
            env = envelope_of(record)
            ready.append((record, env, _outgoing(env, record["workflow"].get("delay", 0))))
        except PayloadError as exc:
            _fail(app.backend, record, exc)
    try:
        ids = app.broker.put_many([out for _, _, out in ready]) if ready else []
    except PayloadError as exc:  # too large for the broker: find which, send the others
        if len(ready) == 1:
            _fail(app.backend, ready[0][0], exc)
        else:
            for record, _, _ in ready:
                dispatch(app, [record])
        return
    try:
        with app.backend.batch():
            for (_, env, _), broker_id in zip(ready, ids, strict=True):
                app.backend.update(env.id, {"broker_id": broker_id, "args": env.args})
    except BackendError:
        pass  # they are in the broker: only their records' broker ids are missing


def envelope_of(record: dict[str, Any]) -> Envelope:
    """The message of a due job: its parents' results (unless immutable) before its own args."""
    flow = record["workflow"]
    inputs = [loads(flow["inputs"][str(slot)]) for slot in range(len(flow["deps"]))]
    given = [] if flow.get("immutable") else [inputs] if flow.get("many") else inputs[:1]
    return Envelope(id=record["id"], task=record["task"], args=given + list(record.get("args") or []),
                    kwargs=record.get("kwargs") or {}, queue=record["queue"], priority=record["priority"],
                    ttr=flow["ttr"], max_retries=flow["max_retries"], enqueued_at=time.time())


def delay_of(app: App, sig: Signature) -> int:
    """A signature's delay in whole seconds, checked, and possible with the app's broker.

    Raises:
        ConfigError: not a delay.
        Unsupported: a delay, and the broker cannot hold jobs back.
    """
    delay_s = check_delay(sig.options.get("delay", 0))
    if delay_s > 0 and not app.broker.can(DELAY):
        raise Unsupported(f"the broker at {app.broker.url.split('://')[0]}:// cannot delay a job")
    return delay_s


def _outgoing(env: Envelope, delay_s: int) -> Outgoing:
    return Outgoing(env.encode(), env.queue, env.priority, delay_s, env.ttr)


def _upstream_error(job_id: str, task: str, state: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """The error of every job downstream of a failed or cancelled one: it names that job."""
    if state == "cancelled":
        return {"type": "JobCancelled", "message": f"job {job_id} ({task}) was cancelled",
                "traceback": "", "job": job_id}
    error = error or {}
    return {"type": error.get("type", "Error"), "traceback": error.get("traceback", ""), "job": job_id,
            "message": f"job {job_id} ({task}) failed: {error.get('message', '')}"}


def _fail(backend: Backend, record: dict[str, Any], exc: Exception) -> None:
    """Fail a due job whose message cannot be sent, and everything downstream of it."""
    error = {"type": type(exc).__name__, "message": f"cannot be sent: {exc}", "traceback": ""}
    now = time.time()
    backend.update(record["id"], {"state": "failed", "error": error, "finished_at": now,
                                  "expires_at": now + backend.result_ttl}, unless=_WAITING_ONLY)
    _fail_downstream(backend, record.get("workflow") or {}, _upstream_error(
        record["id"], record.get("task") or "", "failed", error))


def _fail_downstream(backend: Backend, flow: dict[str, Any], error: dict[str, Any]) -> None:
    """Fail every waiting job downstream (a repeat changes nothing: only queued ones change)."""
    todo, seen = [child for child, _ in flow.get("next", [])], set()
    now = time.time()
    while todo:
        job_id = todo.pop()
        if job_id in seen:
            continue
        seen.add(job_id)
        backend.update(job_id, {"state": "failed", "error": error, "finished_at": now,
                                "expires_at": now + backend.result_ttl}, unless=_WAITING_ONLY)
        record = backend.get(job_id)
        todo += [child for child, _ in ((record or {}).get("workflow") or {}).get("next", [])]


def _forget(backend: Backend, job_ids: list[str]) -> None:
    """Remove the records of a workflow the broker refused."""
    with backend.batch():
        for job_id in job_ids:
            backend.delete(job_id)
