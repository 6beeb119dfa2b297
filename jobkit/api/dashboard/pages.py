"""The dashboard's pages, each built from plain data (see :mod:`.data`) into escaped HTML.

A part given as None could not be read: it shows as unavailable and the
rest of the page still renders.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from jobkit.api.dashboard import chart
from jobkit.api.dashboard.auth import CSRF_FIELD, PREFIX
from jobkit.api.dashboard.data import Filters
from jobkit.api.dashboard.layout import (
    Frame,
    button,
    job_link,
    job_url,
    page,
    state_badge,
    unavailable,
    with_query,
)
from jobkit.api.dashboard.markup import Safe, duration, html, join, pretty, table, when
from jobkit.job import JobState

QUEUE_COLUMNS = ("ready", "reserved", "delayed", "buried", "waiting")
CANCELLABLE = {JobState.QUEUED.value, JobState.RUNNING.value, JobState.RETRYING.value}
RETRYABLE = {JobState.FAILED.value, JobState.CANCELLED.value}


def overview(frame: Frame, queues: dict[str, dict[str, int]] | None, counts: dict[str, int] | None,
             per_minute: dict[int, dict[str, int]] | None, recent: list[dict[str, Any]] | None,
             now: float) -> Safe:
    """Queues, jobs by state, the last hour's throughput and the newest jobs."""
    body = html("<h2>Throughput</h2>{}<h2>Queues</h2>{}<h2>Jobs by state</h2>{}<h2>Newest jobs</h2>{}{}",
                unavailable("Throughput") if per_minute is None else chart.throughput(per_minute, now),
                unavailable("Queues") if queues is None else queues_table(frame, queues),
                unavailable("Counts") if counts is None else _counts_table(counts),
                unavailable("Jobs") if recent is None else jobs_table(recent),
                html('<p><a href="{}">all jobs →</a></p>', f"{PREFIX}/jobs"))
    return page(frame, "Overview", body)


def queues_table(frame: Frame, queues: dict[str, dict[str, int]]) -> Safe:
    """One row per queue with its broker counts; a kick button where jobs are buried."""
    rows = [[html('<a href="{}">{}</a>', with_query(f"{PREFIX}/jobs", queue=name), name),
             *(counts.get(k, 0) for k in QUEUE_COLUMNS),
             button(frame, f"{PREFIX}/queues/{quote(name, safe='')}/kick", "kick buried")
             if counts.get("buried") else ""]
            for name, counts in sorted(queues.items())]
    return table(("queue", *QUEUE_COLUMNS, ""), rows, empty="no queues yet", numeric=range(1, 6))


def _counts_table(counts: dict[str, int]) -> Safe:
    states = [s.value for s in JobState] + sorted(set(counts) - {s.value for s in JobState})
    rows = [[html('<a href="{}">{}</a>', with_query(f"{PREFIX}/jobs", state=s), state_badge(s)),
             counts.get(s, 0)] for s in states]
    return table(("state", "jobs"), rows, numeric=(1,))


def jobs_table(records: list[dict[str, Any]], frame: Frame | None = None, *, actions: bool = False) -> Safe:
    """One row per record, newest first; with ``actions``, a retry button on failed ones."""
    header = ["id", "task", "state", "queue", "attempts", "created (UTC)", "finished (UTC)", "worker"]
    rows = []
    for r in records:
        row: list[object] = [job_link(r.get("id")), r.get("task"), state_badge(r.get("state")),
                             r.get("queue"), r.get("attempts"), when(r.get("created_at")),
                             when(r.get("finished_at")), r.get("worker")]
        if actions and frame is not None:
            retry = button(frame, job_url(r.get("id")) + "/retry", "retry")
            row.append(html('{}<br><span class="muted">{}</span>', retry, _error_line(r)))
        rows.append(row)
    return table(header + (["error"] if actions else []), rows, empty="no jobs", numeric=(4,))


def _error_line(record: dict[str, Any]) -> str:
    error = record.get("error")
    if not isinstance(error, dict):
        return ""
    return f"{error.get('type') or ''}: {str(error.get('message') or '')[:200]}"


def jobs_list(frame: Frame, filters: Filters, tasks: Sequence[str], records: list[dict[str, Any]] | None,
              *, before: str | None, limit: int, problem: str | None = None) -> Safe:
    """The filter form, a page of records, and links to older ones and back to the newest."""
    body = html("{}{}{}{}", _filters_form(filters, tasks),
                html('<p class="problem">{}</p>', problem) if problem else "",
                unavailable("Jobs") if records is None else jobs_table(records),
                _pager(frame, records, before, limit))
    return page(frame, "Jobs", body)


def _filters_form(filters: Filters, tasks: Sequence[str]) -> Safe:
    states = join(html('<option value="{}"{}>{}</option>', s.value,
                       Safe(" selected") if filters.state == s.value else "", s.value) for s in JobState)
    options = join(html('<option value="{}">', t) for t in tasks)
    return html(
        '<form class="filters" method="get" action="{action}">'
        '<label>state<select name="state"><option value="">any</option>{states}</select></label>'
        '<label>task<input name="task" list="tasks" value="{task}" maxlength="200"></label>'
        '<datalist id="tasks">{options}</datalist>'
        '<label>queue<input name="queue" value="{queue}" maxlength="200"></label>'
        '<button>filter</button>'
        '<label>job id<input name="id" placeholder="search by id" maxlength="64"></label>'
        '<button>find</button></form>',
        action=f"{PREFIX}/jobs", states=states, task=filters.task or "", options=options,
        queue=filters.queue or "")


def _pager(frame: Frame, records: list[dict[str, Any]] | None, before: str | None, limit: int) -> Safe:
    links = []
    if before is not None:
        links.append(html('<a href="{}">← newest</a>', with_query(frame.url, before=None)))
    if records is not None and len(records) == limit:
        links.append(html('<a href="{}">older →</a>', with_query(frame.url, before=str(records[-1]["id"]))))
    return html('<p class="pager">{}</p>', join(links))


def job_page(frame: Frame, record: dict[str, Any], in_broker: dict[str, Any] | None) -> Safe:
    """Everything stored about one job, and the actions its state allows."""
    state = record.get("state")
    actions = [button(frame, job_url(record["id"]) + "/retry", "retry")] if state in RETRYABLE else []
    if state in CANCELLABLE:
        actions.append(button(frame, job_url(record["id"]) + "/cancel", "cancel", danger=True))
    values = [_value("Arguments", record.get("args")), _value("Keyword arguments", record.get("kwargs"))]
    if state == JobState.SUCCEEDED.value:
        values.append(_value("Result", record.get("result")))
    body = html('<div class="actions">{} {}</div>{}{}{}{}{}', state_badge(state), join(actions, " "),
                _facts(record, in_broker), _progress(record.get("progress")), _workflow(record),
                _error(record.get("error")), join(values))
    return page(frame, f"Job {record['id']}", body)


def _facts(record: dict[str, Any], in_broker: dict[str, Any] | None) -> Safe:
    created, started, finished = (record.get(k) for k in ("created_at", "started_at", "finished_at"))
    waited, ran = _span(created, started), _span(started, finished)
    facts: list[tuple[str, object]] = [
        ("task", record.get("task")), ("queue", record.get("queue")), ("priority", record.get("priority")),
        ("attempts", record.get("attempts")), ("worker", record.get("worker")),
        ("created (UTC)", when(created)), ("started (UTC)", when(started)),
        ("finished (UTC)", when(finished)), ("waited", duration(waited)),
        ("ran", duration(ran)), ("expires (UTC)", when(record.get("expires_at"))),
        ("idempotency key", record.get("idempotency_key")), ("waiting on", _waiting(record)),
    ]
    if in_broker is not None:
        facts.append(("in the broker", ", ".join(f"{k} {in_broker.get(k)}" for k in (
            "state", "delay", "time-left", "reserves", "releases", "buries", "kicks") if k in in_broker)))
    items = join(html("<dt>{}</dt><dd>{}</dd>", name, value) for name, value in facts
                 if value not in (None, ""))
    return html("<dl>{}</dl>", items)


def _waiting(record: dict[str, Any]) -> str | None:
    """A queued job's wait on a rate or concurrency limit (see jobkit.limits), or on an
    unconfirmed put (see ``App._repeat``), else None."""
    waiting = record.get("waiting")
    if record.get("state") != JobState.QUEUED.value or not isinstance(waiting, dict):
        return None
    if waiting.get("on") == "put":
        return (f"the broker never confirmed its put (since {when(waiting.get('since'))} UTC):"
                " a repeat with its idempotency key puts it again")
    until = when(waiting.get("until"))
    return f"its {waiting.get('limit')}, until {until} UTC ({waiting.get('times')} times)"


def _span(start: Any, end: Any) -> float | None:
    numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (start, end))
    return float(end - start) if numbers else None


def _progress(progress: Any) -> Safe:
    if not isinstance(progress, dict):
        return Safe("")
    fraction = progress.get("fraction")
    bar = Safe("")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        share = min(max(float(fraction), 0.0), 1.0)
        bar = html('<progress max="1" value="{}">{}%</progress> {}%', f"{share:.3f}", f"{share * 100:.0f}",
                   f"{share * 100:.0f}")
    meta = progress.get("meta")
    return html("<h2>Progress</h2><p>{}</p>{}", bar, html("<pre>{}</pre>", pretty(meta)) if meta else "")


def _workflow(record: dict[str, Any]) -> Safe:
    links: list[tuple[str, object]] = []
    for field in ("root", "parent"):
        if isinstance(record.get(field), str):
            links.append((field, job_link(record[field])))
    children = record.get("children")
    if isinstance(children, list) and children:
        links.append(("children", join((job_link(c) for c in children if isinstance(c, str)), ", ")))
    if not links:
        return Safe("")
    return html("<h2>Workflow</h2><dl>{}</dl>", join(html("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in links))


def _error(error: Any) -> Safe:
    if not isinstance(error, dict):
        return Safe("")
    return html('<h2>Error</h2><p class="problem"><strong>{}</strong>: {}</p>{}', error.get("type"),
                error.get("message"), html("<h2>Traceback</h2><pre>{}</pre>", pretty(error["traceback"]))
                if error.get("traceback") else "")


def _value(title: str, value: Any) -> Safe:
    return html("<h2>{}</h2><pre>{}</pre>", title, pretty(value))


def dead_letters(frame: Frame, queues: dict[str, dict[str, int]] | None, failed: list[dict[str, Any]] | None,
                 *, before: str | None, limit: int) -> Safe:
    """Buried messages per queue (kick) and failed jobs (retry), newest first."""
    buried = None if queues is None else {q: c for q, c in queues.items() if c.get("buried")}
    kick_all = button(frame, f"{PREFIX}/kick", "kick every buried job") if buried else Safe("")
    body = html("<h2>Buried in the broker</h2>{}{}<h2>Failed jobs</h2>{}{}",
                unavailable("Queues") if buried is None else queues_table(frame, buried), kick_all,
                unavailable("Jobs") if failed is None else jobs_table(failed, frame, actions=True),
                _pager(frame, failed, before, limit))
    return page(frame, "Dead letters", body)


def workers_page(frame: Frame, found: dict[str, Any] | None) -> Safe:
    """Every worker ``GET /v1/workers`` lists, with whatever it says of each, and idle connections."""
    if found is None:
        return page(frame, "Workers", unavailable("Workers"))
    workers = [w for w in found.get("workers", []) if isinstance(w, dict)]
    columns = _worker_columns(workers)
    rows = [[_worker_cell(c, w.get(c)) for c in columns] for w in workers]
    waiting = found.get("waiting") or {}
    body = html("{}<h2>Connections waiting for a job, per queue</h2>{}",
                table(columns, rows, empty="no worker is running a job"),
                table(("queue", "waiting"), sorted(waiting.items()), empty="none", numeric=(1,)))
    return page(frame, "Workers", body)


_WORKER_ORDER = ("name", "host", "pid", "queues", "concurrency", "busy", "running", "done", "failed",
                 "started_at", "last_seen", "jobs")


def _worker_columns(workers: list[dict[str, Any]]) -> list[str]:
    present = {k for w in workers for k in w}
    return [c for c in _WORKER_ORDER if c in present] + sorted(present - set(_WORKER_ORDER)) or ["name"]


def _worker_cell(column: str, value: Any) -> object:
    if column == "jobs" and isinstance(value, list):
        return join((job_link(j) for j in value[:20]), ", ")
    if column.endswith("_at") or column in ("last_seen", "started"):
        return when(value) or value
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def login(frame: Frame, *, wrong: bool) -> Safe:
    """The sign-in form (the token is posted, never put in a URL)."""
    body = html(
        '{problem}<form method="post" action="{action}"><input type="hidden" name="{field}" value="{csrf}">'
        '<p><label>API token (JOBKIT_API_TOKEN)<br><input type="password" name="token" autocomplete='
        '"current-password" autofocus required></label></p><p><button>sign in</button></p></form>',
        problem=html('<p class="problem" role="alert">{}</p>', "Wrong token.") if wrong else "",
        action=f"{PREFIX}/login", field=CSRF_FIELD, csrf=frame.csrf)
    return page(frame, "Sign in", body)


def message(frame: Frame, title: str, text: str) -> Safe:
    """A page that says one thing (an error), with the way back."""
    return page(frame, title, html('<p class="problem">{}</p><p><a href="{}">back to the dashboard</a></p>',
                                   text, PREFIX))
