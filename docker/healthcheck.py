#!/usr/bin/env python3
"""Container health check for ``jobkit manager`` / ``jobkit api``: GET /healthz on this container.

Docker's HEALTHCHECK contract: exit 0 when healthy (a 2xx answer), 1 when not. The port is the
one the API binds: ``JOBKIT_API_PORT``, else the seed's ``MANAGER_LISTEN_PORT``,
else 8080 (set it in the container's environment, not in an ``--env-file``,
or this check will not see it). ``/healthz`` answers without a bearer token.

This is a liveness check on purpose: ``/readyz`` (broker and backend reachable)
would turn a MongoDB or beanstalkd outage into Swarm killing every API task,
which cannot help and loses the 503s that tell clients to retry.

The slim Python image has no curl, so this uses the standard library only.
"""
from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT_S = 4.0  # below the HEALTHCHECK --timeout, so a hung API is reported rather than killed


def main() -> int:
    port = os.environ.get("JOBKIT_API_PORT") or os.environ.get("MANAGER_LISTEN_PORT") or "8080"
    url = f"http://127.0.0.1:{port}/healthz"
    # An empty ProxyHandler: never send the check through an HTTP(S)_PROXY set for the app.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except (OSError, ValueError) as exc:  # refused, timed out, HTTP 4xx/5xx (HTTPError), bad port
        print(f"unhealthy: GET {url}: {exc}")
        return 1
    if not 200 <= status < 300:  # urllib raises for 4xx/5xx and follows 3xx; be exact anyway
        print(f"unhealthy: GET {url}: HTTP {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
