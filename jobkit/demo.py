"""The seed demo as a jobkit app, and jobkit's default ``JOBKIT_APP``: ``hash_payload``.

It ships inside the package so that an installed jobkit works in any
directory (``examples/hashing.py`` in the repository names the same app).

As the seed's worker did, the hash is the md5 of the JSON string of the
payload's compact JSON text (the seed hashed ``JSON.stringify(text)``), and
the text is stored beside it: for ``{"example":"data"}`` the result is
``{"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef", "payload": "{\\"example\\":\\"data\\"}"}``.
The seed slept 1-5 s to mimic work; this does so only when
``HASH_PAYLOAD_SLEEP`` is set: to seconds (``2.5``), a range (``1-5``), or
any other non-empty value for the seed's 1-5 s.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from typing import Any

from jobkit import App

app = App("hashing")


@app.task
def hash_payload(payload: Any) -> dict[str, str]:
    """Return the seed's hash of ``payload`` and its compact JSON text."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    _maybe_sleep(os.environ.get("HASH_PAYLOAD_SLEEP", ""))
    digest = hashlib.md5(json.dumps(text, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"hash": digest, "payload": text}


def _maybe_sleep(setting: str) -> None:
    if not setting:
        return
    low, _, high = setting.partition("-")
    try:
        seconds = random.uniform(float(low), float(high or low))
    except ValueError:
        seconds = random.uniform(1, 5)
    time.sleep(max(0.0, seconds))
