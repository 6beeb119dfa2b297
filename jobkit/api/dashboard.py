"""``GET /dashboard``: one small HTML page, no external assets, every value HTML-escaped.

A part whose source is down shows as "unavailable" instead of failing the page.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from html import escape
from typing import Any, TypeVar

from jobkit.app import App
from jobkit.errors import JobkitError

RECENT_JOBS = 50
T = TypeVar("T")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jobkit: {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
th {{ background: #f4f4f4; }} td.n {{ text-align: right; }} code {{ font-size: 12px; }}
.failed {{ color: #b00; }} .succeeded {{ color: #070; }} .muted {{ color: #888; }}
</style></head><body>
<h1>jobkit: {name}</h1>
<h2>Queues</h2>{queues}
<h2>Jobs by state</h2>{counts}
<h2>Recent jobs</h2>{jobs}
<p class="muted">JSON: /v1/queues, /v1/jobs, /v1/workers &middot; metrics: /metrics</p>
</body></html>
"""


def render(app: App) -> str:
    """The page for ``app``: its queues, record counts and the most recent jobs."""
    queues = _attempt(app.queues)
    counts = _attempt(app.counts)
    jobs = _attempt(lambda: app.jobs(limit=RECENT_JOBS))
    return _PAGE.format(
        name=escape(app.name),
        queues=_or_unavailable(queues, lambda q: _table(
            ("queue", "ready", "reserved", "delayed", "buried", "waiting"),
            ([name] + [c.get(k, 0) for k in ("ready", "reserved", "delayed", "buried", "waiting")]
             for name, c in sorted(q.items())))),
        counts=_or_unavailable(counts, lambda c: _table(("state", "jobs"), sorted(c.items()))),
        jobs=_or_unavailable(jobs, _jobs_table),
    )


def _jobs_table(records: list[dict[str, Any]]) -> str:
    rows = ([r.get("id"), r.get("task"), r.get("state"), r.get("queue"), r.get("attempts"),
             _time(r.get("created_at")), r.get("worker") or ""] for r in records)
    return _table(("id", "task", "state", "queue", "attempts", "created (UTC)", "worker"), rows)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(header)}" class="muted">none</td></tr>'
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value}</td>'
    text = escape(str(value if value is not None else ""))
    return f'<td class="{text}">{text}</td>' if text in ("failed", "succeeded") else f"<td>{text}</td>"


def _time(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _attempt(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except JobkitError:
        return None


def _or_unavailable(value: T | None, show: Callable[[T], str]) -> str:
    return '<p class="muted">unavailable</p>' if value is None else show(value)
