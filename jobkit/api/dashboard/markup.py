"""HTML from literal templates whose every value is escaped: the one place the dashboard escapes.

A :class:`Safe` string is markup already built here; anything else that goes
into a template (a task name, an error message, a job's arguments) is
escaped on the way in, quotes included, so it is text in an element and in
a double-quoted attribute alike.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

#: Characters of one value (arguments, a result, a traceback) shown on a page; the rest is cut.
MAX_SHOWN = 20_000


class Safe(str):
    """Markup built from escaped values; never escaped again."""

    __slots__ = ()


def esc(value: object) -> Safe:
    """``value`` as text safe anywhere in an element or a double-quoted attribute."""
    if isinstance(value, Safe):
        return value
    return Safe(escape("" if value is None else str(value), quote=True))


def html(template: str, *args: object, **kwargs: object) -> Safe:
    """Fill a literal ``str.format`` template with escaped values."""
    return Safe(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[Safe], sep: str = "") -> Safe:
    """Markup parts one after another (``sep`` is a literal)."""
    return Safe(sep.join(esc(part) for part in parts))


def table(header: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "none",
          numeric: Sequence[int] = ()) -> Safe:
    """A table; cells are escaped unless :class:`Safe`; columns in ``numeric`` align right."""
    head = join(html("<th>{}</th>", h) for h in header)
    body = join(_row(row, numeric) for row in rows)
    if not body:
        body = html('<tr><td colspan="{}" class="muted">{}</td></tr>', len(header), empty)
    return html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _row(row: Sequence[object], numeric: Sequence[int]) -> Safe:
    cells = (html('<td class="n">{}</td>' if i in numeric else "<td>{}</td>", cell)
             for i, cell in enumerate(row))
    return html("<tr>{}</tr>", join(cells))


def when(seconds: Any) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` UTC; empty when not a time."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return ""
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return ""


def duration(seconds: Any) -> str:
    """A span of seconds as ``1.25 s``, ``3 min 5 s`` or ``2 h 10 min``; empty when not a number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def pretty(value: Any) -> str:
    """A JSON value as indented text, cut at :data:`MAX_SHOWN` characters."""
    text = value if isinstance(value, str) and "\n" in value else json.dumps(
        value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= MAX_SHOWN:
        return text
    return text[:MAX_SHOWN] + f"\n… ({len(text) - MAX_SHOWN} more characters)"
