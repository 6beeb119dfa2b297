"""The dashboard: every page renders, every value is escaped, forms need their CSRF token,
sign-in with the API token sets a cookie only the dashboard accepts."""
from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.config import Settings
from tests.api.app import post, work

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HOSTILE = "<script>alert(1)</script>"
TOKEN = "s3cret-token"


def csrf_cookie(client: falcon.testing.TestClient, **cookies: str) -> str:
    """The CSRF token a browser gets with its first dashboard page."""
    return client.simulate_get("/dashboard/jobs", cookies=cookies).cookies["jobkit_csrf"].value


def submit(client: falcon.testing.TestClient, path: str, fields: dict[str, str],
           cookies: dict[str, str] | None = None, **headers: str) -> falcon.testing.Result:
    return client.simulate_post(path, body=urlencode(fields), headers=FORM | headers, cookies=cookies or {})


def state(app: App, job_id: str) -> str:
    return app.status(job_id).state.value


@pytest.fixture
def failed(client: falcon.testing.TestClient, jobkit_app: App) -> str:
    """A job that failed for good (its message buried)."""
    job_id = post(client, "/v1/jobs", {"task": "boom"}).json["id"]
    work(jobkit_app)
    assert state(jobkit_app, job_id) == "failed"
    return job_id


# -- pages ------------------------------------------------------------------------

def test_every_page_renders_self_contained(client: falcon.testing.TestClient, jobkit_app: App,
                                           failed: str) -> None:
    done = post(client, "/", {"example": "data"}).json["id"]
    work(jobkit_app)
    queued = post(client, "/v1/jobs", {"task": "add", "args": [1, 2]}).json["id"]
    for path in ("/dashboard", "/dashboard/jobs", "/dashboard/jobs?state=failed&task=boom&queue=default",
                 f"/dashboard/jobs/{failed}", f"/dashboard/jobs/{done}", f"/dashboard/jobs/{queued}",
                 "/dashboard/dead", "/dashboard/workers", "/dashboard/"):
        result = client.simulate_get(path)
        assert result.status_code == 200, path
        assert result.headers["content-type"].startswith("text/html")
        csp = result.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert result.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in result.text and "src=" not in result.text  # nothing loads from elsewhere
    assert client.simulate_head("/dashboard").status_code == 200


def test_overview_shows_queues_counts_and_the_last_hours_throughput(
        client: falcon.testing.TestClient, jobkit_app: App, failed: str) -> None:
    post(client, "/", {"a": 1})
    work(jobkit_app)
    post(client, "/v1/jobs", {"task": "add", "args": [1, 2]})  # waits on queue "math"
    page = client.simulate_get("/dashboard").text
    assert '<meta http-equiv="refresh"' in page
    assert "<svg" in page and "last hour: 1 succeeded, 1 failed" in page
    assert re.search(r'href="/dashboard/jobs\?queue=math">math</a></td><td class="n">1</td>', page)
    assert 'action="/dashboard/queues/default/kick"' in page  # the failed job is buried there
    assert "pause auto-refresh" in page
    paused = client.simulate_get("/dashboard?refresh=off").text
    assert 'http-equiv="refresh"' not in paused and "resume auto-refresh" in paused


def test_job_page_shows_the_error_and_traceback(client: falcon.testing.TestClient, failed: str) -> None:
    page = client.simulate_get(f"/dashboard/jobs/{failed}").text
    assert "ValueError" in page and "boom" in page and "Traceback (most recent call last)" in page
    assert f'action="/dashboard/jobs/{failed}/retry"' in page
    assert "/cancel" not in page  # a failed job cannot be cancelled


def test_job_page_shows_progress_and_workflow_links_when_recorded(
        client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/", {"a": 1}).json["id"]
    jobkit_app.backend.update(job_id, {"progress": {"fraction": 0.25, "meta": {"step": "two"}},
                                       "parent": "p" * 32, "children": ["c" * 32]})
    page = client.simulate_get(f"/dashboard/jobs/{job_id}").text
    assert '<progress max="1" value="0.250">' in page and "&quot;step&quot;: &quot;two&quot;" in page
    assert f'href="/dashboard/jobs/{"p" * 32}"' in page and f'href="/dashboard/jobs/{"c" * 32}"' in page


def test_every_hostile_value_is_escaped(settings: Settings) -> None:
    app = App(HOSTILE, broker="memory://", backend="memory://")
    app.task(name="echo")(lambda value: value)
    client = falcon.testing.TestClient(create_app(settings, app))
    body = {"task": "echo", "args": [HOSTILE], "kwargs": {HOSTILE: HOSTILE}}
    job_id = post(client, "/v1/jobs", body).json["id"]
    app.backend.claim({"id": job_id, "worker": HOSTILE, "started_at": time.time()})
    app.backend.update(job_id, {"task": HOSTILE, "queue": HOSTILE, "idempotency_key": HOSTILE,  # as stored
                                "progress": {"fraction": HOSTILE, "meta": {HOSTILE: 1}},
                                "children": [HOSTILE], "root": HOSTILE})
    pages = [client.simulate_get(path).text for path in (
        "/dashboard", "/dashboard/jobs", f"/dashboard/jobs/{job_id}", "/dashboard/workers",
        f"/dashboard/jobs?task={HOSTILE}", f"/dashboard/jobs?queue=%22%3E{HOSTILE}")]
    app.backend.finish(job_id, "failed", error={"type": HOSTILE, "message": HOSTILE, "traceback": HOSTILE})
    pages += [client.simulate_get(path).text for path in (f"/dashboard/jobs/{job_id}", "/dashboard/dead")]
    for page in pages:
        assert "<script>" not in page and '"><' + "script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_jobs_list_pages_by_keyset_and_finds_by_id(client: falcon.testing.TestClient) -> None:
    ids = [post(client, "/", {"n": n}).json["id"] for n in range(60)]
    first = client.simulate_get("/dashboard/jobs").text
    assert ids[-1] in first and ids[10] in first and ids[9] not in first  # 50 newest
    older = re.search(r'href="(/dashboard/jobs\?before=[^"]+)">older', first)
    assert older is not None and "offset" not in first
    second = client.simulate_get(older[1].replace("&amp;", "&")).text
    assert ids[9] in second and ids[0] in second and ids[10] not in second and "older →" not in second
    found = client.simulate_get("/dashboard/jobs", params={"id": ids[3]})
    assert found.status_code == 303 and found.headers["location"] == f"/dashboard/jobs/{ids[3]}"
    missing = client.simulate_get("/dashboard/jobs", params={"id": "f" * 32})
    assert missing.status_code == 200 and "No job has the id" in missing.text


@pytest.mark.parametrize("path,status", [("/dashboard/jobs/" + "0" * 32, 404), ("/dashboard/jobs/a.b", 404),
                                         ("/dashboard/jobs?state=nope", 400),
                                         ("/dashboard/jobs?before=%3Cx%3E", 400)])
def test_bad_requests_answer_a_page(client: falcon.testing.TestClient, path: str, status: int) -> None:
    result = client.simulate_get(path)
    assert result.status_code == status and result.headers["content-type"].startswith("text/html")
    assert "back to the dashboard" in result.text


# -- actions and CSRF -------------------------------------------------------------

def test_retry_with_the_csrf_token_requeues_and_redirects_back(
        client: falcon.testing.TestClient, jobkit_app: App, failed: str) -> None:
    token = csrf_cookie(client)
    back = f"/dashboard/jobs/{failed}"
    result = submit(client, f"{back}/retry", {"csrf": token, "next": back}, {"jobkit_csrf": token})
    assert result.status_code == 303 and result.headers["location"] == f"{back}?notice=retried"
    assert state(jobkit_app, failed) == "queued"
    assert "The job was queued again." in client.simulate_get(result.headers["location"]).text


@pytest.mark.parametrize("fields,cookie,headers", [
    ({}, None, {}),  # no token at all
    ({"csrf": "x" * 43}, "y" * 43, {}),  # a wrong one
    ({"csrf": "x" * 43}, None, {}),  # the form's without the cookie
    ({}, "x" * 43, {}),  # the cookie's without the form's
    ({"csrf": "x" * 43}, "x" * 43, {"Sec-Fetch-Site": "cross-site"}),  # from another site
], ids=["none", "wrong", "no-cookie", "no-field", "cross-site"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
        client: falcon.testing.TestClient, jobkit_app: App, failed: str, fields: dict[str, str],
        cookie: str | None, headers: dict[str, str]) -> None:
    queued = post(client, "/", {"a": 1}).json["id"]
    cookies = {"jobkit_csrf": cookie} if cookie else {}
    for path in (f"/dashboard/jobs/{failed}/retry", f"/dashboard/jobs/{queued}/cancel",
                 "/dashboard/queues/default/kick", "/dashboard/kick"):
        result = submit(client, path, fields, cookies, **headers)
        assert result.status_code == 403, path
        assert result.headers["content-type"].startswith("text/html")
    assert (state(jobkit_app, failed), state(jobkit_app, queued)) == ("failed", "queued")
    assert jobkit_app.broker.stats()["default"]["buried"] == 1


def test_cancel_and_kick_forms(client: falcon.testing.TestClient, jobkit_app: App, failed: str) -> None:
    token = csrf_cookie(client)
    cookies = {"jobkit_csrf": token}
    queued = post(client, "/", {"a": 1}).json["id"]
    result = submit(client, f"/dashboard/jobs/{queued}/cancel", {"csrf": token, "next": "/dashboard"},
                    cookies)
    assert result.status_code == 303 and state(jobkit_app, queued) == "cancelled"
    again = submit(client, f"/dashboard/jobs/{queued}/cancel", {"csrf": token}, cookies)
    assert again.status_code == 409 and "nothing to cancel" in again.text
    kicked = submit(client, "/dashboard/queues/default/kick", {"csrf": token, "next": "/dashboard/dead"},
                    cookies)
    assert kicked.headers["location"] == "/dashboard/dead?notice=kicked&n=1"
    assert state(jobkit_app, failed) == "queued"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/dashboard", "/v1/jobs",
                                    "/dashboardx", "/dashboard\\..\\x"])
def test_actions_only_redirect_to_dashboard_pages(client: falcon.testing.TestClient, failed: str,
                                                  target: str) -> None:
    token = csrf_cookie(client)
    result = submit(client, f"/dashboard/jobs/{failed}/retry", {"csrf": token, "next": target},
                    {"jobkit_csrf": token})
    assert result.headers["location"] == "/dashboard?notice=retried"


def test_a_form_is_not_json_and_has_its_own_size_limit(client: falcon.testing.TestClient,
                                                       failed: str) -> None:
    token = csrf_cookie(client)
    big = submit(client, f"/dashboard/jobs/{failed}/retry", {"csrf": token, "pad": "x" * 5000},
                 {"jobkit_csrf": token})
    assert big.status_code == 413
    as_json = client.simulate_post(f"/dashboard/jobs/{failed}/retry", json={"csrf": token},
                                   cookies={"jobkit_csrf": token})
    assert as_json.status_code == 415


# -- sign-in ----------------------------------------------------------------------

@pytest.fixture
def guarded(jobkit_app: App) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Settings(api_token=TOKEN), jobkit_app))


def sign_in(client: falcon.testing.TestClient, token: str) -> falcon.testing.Result:
    csrf = csrf_cookie(client)
    return submit(client, "/dashboard/login", {"csrf": csrf, "token": token}, {"jobkit_csrf": csrf})


def test_pages_need_a_sign_in_and_show_the_form(guarded: falcon.testing.TestClient) -> None:
    for path in ("/dashboard", "/dashboard/jobs", "/dashboard/workers", "/dashboard/jobs/" + "0" * 32):
        result = guarded.simulate_get(path)
        assert result.status_code == 401 and result.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="/dashboard/login">' in result.text
        assert 'type="password" name="token"' in result.text
    assert guarded.simulate_get("/dashboard/login").status_code == 200


def test_a_wrong_token_is_refused(guarded: falcon.testing.TestClient) -> None:
    result = sign_in(guarded, "wrong")
    assert result.status_code == 401 and "Wrong token." in result.text
    assert "jobkit_session" not in result.cookies


def test_the_right_token_sets_a_strict_http_only_cookie_for_the_dashboard_only(
        guarded: falcon.testing.TestClient, jobkit_app: App) -> None:
    result = sign_in(guarded, TOKEN)
    assert result.status_code == 303 and result.headers["location"] == "/dashboard"
    cookie = result.cookies["jobkit_session"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/dashboard"
    assert TOKEN not in cookie.value and TOKEN not in result.headers["location"]
    session = {"jobkit_session": cookie.value}
    page = guarded.simulate_get("/dashboard", cookies=session)
    assert page.status_code == 200 and "sign out" in page.text
    for path in ("/v1/jobs", "/v1/queues", "/metrics", "/openapi.json"):
        assert guarded.simulate_get(path, cookies=session).status_code == 401, path
    refused = guarded.simulate_post("/v1/jobs", json={"task": "echo", "args": [1]}, cookies=session)
    assert refused.status_code == 401 and sum(jobkit_app.backend.counts().values()) == 0


def test_a_forged_or_expired_session_is_refused(guarded: falcon.testing.TestClient) -> None:
    value = sign_in(guarded, TOKEN).cookies["jobkit_session"].value
    expiry, _, signature = value.partition(".")
    for forged in (f"{int(expiry) + 1}.{signature}", f"{expiry}.{'0' * 64}", "", "x.y",
                   f"{int(time.time()) - 1}.{signature}"):
        assert guarded.simulate_get("/dashboard", cookies={"jobkit_session": forged}).status_code == 401


def test_the_bearer_token_also_opens_the_dashboard(guarded: falcon.testing.TestClient) -> None:
    ok = guarded.simulate_get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


def test_sign_out_ends_the_session_cookie(guarded: falcon.testing.TestClient) -> None:
    session = sign_in(guarded, TOKEN).cookies["jobkit_session"].value
    csrf = csrf_cookie(guarded, jobkit_session=session)
    result = submit(guarded, "/dashboard/logout", {"csrf": csrf},
                    {"jobkit_csrf": csrf, "jobkit_session": session})
    assert result.status_code == 303 and result.headers["location"].startswith("/dashboard/login")
    ended = result.cookies["jobkit_session"]
    assert ended.value == "" and ended.expires is not None and ended.expires.timestamp() < time.time()


def test_sessions_hold_in_every_process_of_one_token(jobkit_app: App) -> None:
    """``--processes N`` forks children that each build the app: a session from one works in all."""
    one = falcon.testing.TestClient(create_app(Settings(api_token=TOKEN), jobkit_app))
    two = falcon.testing.TestClient(create_app(Settings(api_token=TOKEN), jobkit_app))
    other = falcon.testing.TestClient(create_app(Settings(api_token="another"), jobkit_app))
    session = {"jobkit_session": sign_in(one, TOKEN).cookies["jobkit_session"].value}
    assert two.simulate_get("/dashboard", cookies=session).status_code == 200
    assert other.simulate_get("/dashboard", cookies=session).status_code == 401


def test_without_a_token_there_is_no_sign_in(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/dashboard/login").status_code == 303
    assert "sign out" not in client.simulate_get("/dashboard").text
