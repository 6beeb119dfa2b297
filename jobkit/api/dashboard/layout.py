"""The frame every dashboard page shares: head, style, navigation, refresh toggle, forms."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from jobkit.api.dashboard.auth import CSRF_FIELD, PREFIX
from jobkit.api.dashboard.markup import Safe, html, join
from jobkit.job import JobState

#: Seconds between automatic reloads of a page that refreshes itself.
REFRESH_S = 5
NAV = (("Overview", PREFIX), ("Jobs", f"{PREFIX}/jobs"), ("Dead letters", f"{PREFIX}/dead"),
       ("Workers", f"{PREFIX}/workers"))
NOTICES = {"retried": "The job was queued again.", "cancelled": "The job was cancelled.",
           "kicked": "Buried jobs kicked: {n}.", "signed-out": "Signed out."}

STYLE = Safe("""<style>
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{display:flex;gap:1.2em;align-items:center;padding:.6em 1.5em;flex-wrap:wrap}
header{background:#1d232a;color:#fff}header nav{display:flex;gap:1em}
.actions{display:flex;gap:.6em;align-items:center;margin-bottom:1em}
header a{color:#cfd8e3;text-decoration:none}
header a.on,header a:hover{color:#fff;text-decoration:underline}header .app{color:#9fb0c3}
header .right{margin-left:auto;display:flex;gap:1em;align-items:center}
main{padding:1em 1.5em;max-width:1200px}h1{font-size:1.4em;margin:.2em 0 .6em}
h2{font-size:1.1em;margin:1.4em 0 .5em}
table{border-collapse:collapse;background:#fff;margin-bottom:1em;min-width:30em}
th,td{border-bottom:1px solid #e3e6ea;padding:.35em .8em;text-align:left;vertical-align:top}
td{white-space:nowrap}th{background:#eef0f3;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
a{color:#0b5cad}.muted{color:#77808a}
.notice{background:#e7f3e8;border:1px solid #b7dcb9;padding:.5em .8em}
.problem{background:#fbeaea;border:1px solid #e7b4b4;padding:.5em .8em}
pre{background:#fff;border:1px solid #e3e6ea;padding:.6em;overflow:auto;max-height:30em}
pre{white-space:pre-wrap;word-break:break-word;font-size:12px}
code{font-size:12px}.st{padding:.05em .45em;border-radius:3px;font-size:12px;background:#e3e6ea}
.st-succeeded{background:#d8efd9;color:#1b5e20}.st-failed{background:#f8d7d7;color:#8e1b1b}
.st-running{background:#dce9f9;color:#0b4a8b}.st-retrying{background:#fdebd0;color:#8a4b00}
.st-cancelled{background:#ececec;color:#555}form.inline{display:inline;margin:0}
button{font:inherit;padding:.2em .7em;border:1px solid #9aa5b1;border-radius:3px}
button{background:#fff;cursor:pointer}
button.danger{border-color:#c62828;color:#c62828}
header button{background:none;color:#cfd8e3;border-color:#56606b}
.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin-bottom:1em}
.filters label{display:flex;flex-direction:column;font-size:12px;color:#555}
input,select{font:inherit;padding:.2em .4em}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#555}dd{margin:0}
.chart{background:#fff;border:1px solid #e3e6ea;max-width:100%;height:auto}
.legend .sw{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}
.sw.ok{background:#2e7d32}.sw.bad{background:#c62828}.pager{display:flex;gap:1em}
</style>""")


@dataclass(frozen=True)
class Frame:
    """What every page needs besides its content.

    Attributes:
        app_name: the App's name, shown in the header.
        url: the page's own path and query (forms send it as ``next``, to come back).
        csrf: the token forms carry.
        signed_in: whether to offer "sign out" (a token is configured and a session exists).
        refresh: auto-refresh is on for this page (it refreshes itself and offers a toggle).
        notice: a message key from a redirect (see :data:`NOTICES`) and its count.
    """

    app_name: str
    url: str
    csrf: str
    signed_in: bool = False
    refresh: bool = False
    notice: tuple[str, int] | None = None


def page(frame: Frame, title: str, body: Safe, *, status_line: Safe | None = None) -> Safe:
    """A whole HTML document around ``body``."""
    meta = Safe("")
    if frame.refresh:  # the notice of an action is said once
        meta = html('<meta http-equiv="refresh" content="{}; url={}">', REFRESH_S,
                    with_query(frame.url, notice=None, n=None))
    on = Safe(' class="on"')
    nav = join(html('<a href="{}"{}>{}</a>', href, on if _here(frame.url, href) else "", name)
               for name, href in NAV)
    return html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · jobkit {app}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">{meta}{style}</head><body>'
        '<header><strong>jobkit</strong><span class="app">{app}</span><nav>{nav}</nav>'
        '<span class="right">{toggle}{signout}</span></header><main>{notice}<h1>{title}</h1>{body}</main>'
        '</body></html>',
        title=title, app=frame.app_name, meta=meta, style=STYLE, nav=nav, toggle=_toggle(frame),
        signout=_sign_out(frame), notice=status_line or _notice(frame), body=body)


def _here(url: str, href: str) -> bool:
    path = urlsplit(url).path.rstrip("/") or "/"
    return path == href or (href != PREFIX and path.startswith(href + "/"))


def _toggle(frame: Frame) -> Safe:
    if not frame.refresh and "refresh=off" not in frame.url:
        return Safe("")
    label = "pause auto-refresh" if frame.refresh else "resume auto-refresh"
    return html('<a href="{}" title="reloads every {} s">{}</a>', with_query(
        frame.url, refresh=None if not frame.refresh else "off"), REFRESH_S, label)


def _sign_out(frame: Frame) -> Safe:
    if not frame.signed_in:
        return Safe("")
    return button(frame, f"{PREFIX}/logout", "sign out")


def _notice(frame: Frame) -> Safe:
    if frame.notice is None or frame.notice[0] not in NOTICES:
        return Safe("")
    key, n = frame.notice
    return html('<p class="notice" role="status">{}</p>', NOTICES[key].format(n=n))


def button(frame: Frame, action: str, label: str, *, danger: bool = False) -> Safe:
    """A one-button POST form carrying the CSRF token and the way back (``next``)."""
    return html(
        '<form class="inline" method="post" action="{action}"><input type="hidden" name="{field}" '
        'value="{csrf}"><input type="hidden" name="next" value="{back}"><button{cls}>{label}</button></form>',
        action=action, field=CSRF_FIELD, csrf=frame.csrf, back=frame.url, label=label,
        cls=Safe(' class="danger"') if danger else "")


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters set (a None value removes the parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in changes]
    query += [(k, v) for k, v in changes.items() if v is not None]
    return parts.path + ("?" + urlencode(query) if query else "")


def job_url(job_id: object) -> str:
    """The job page of ``job_id``."""
    return f"{PREFIX}/jobs/{quote(str(job_id), safe='')}"


def job_link(job_id: object) -> Safe:
    """A link to a job's page, showing its id."""
    return html('<a href="{}"><code>{}</code></a>', job_url(job_id), job_id)


def state_badge(state: object) -> Safe:
    """A job state, coloured by kind."""
    known = state if state in {s.value for s in JobState} else "other"
    return html('<span class="st st-{}">{}</span>', known, state)


def unavailable(what: str) -> Safe:
    """What a page shows where a part could not be read (the broker or backend is down)."""
    return html('<p class="problem">{} unavailable: the broker or the result backend did not answer.</p>',
                what)

