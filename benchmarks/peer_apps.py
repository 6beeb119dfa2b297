"""The seed's md5 task as a Celery app and as a Dramatiq actor, for :mod:`benchmarks.peers`.

Both are configured from the environment when a worker imports this module
(``PEER_BROKER_URL``: a ``redis://`` or ``amqp://`` URL; ``PEER_DB``: the
SQLite file results go to). Each task does what jobkit's worker does for a
job and no more: the seed's md5 of the payload, then one autocommitted upsert
of the result into SQLite with jobkit's pragmas (the bare loop's statement).
Neither peer uses a result backend of its own: that would only cost them
more, so the comparison leans their way. On RabbitMQ both are given
jobkit's guarantee that a returned send is held by the broker: publisher
confirms for both, and Celery's queue is a quorum queue as jobkit's are
(Dramatiq declares classic queues only).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

_local = threading.local()
BARE_DONE = ("INSERT INTO jobs (id, state, result, finished_at) VALUES (?, 'succeeded', ?, ?)"
             " ON CONFLICT (id) DO UPDATE SET state = 'succeeded', result = excluded.result,"
             " finished_at = excluded.finished_at")


def store(job_id: str, payload: Any) -> None:
    """Hash ``payload`` as the seed did and upsert the result under ``job_id``."""
    from examples.hashing import hash_payload

    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(os.environ["PEER_DB"], timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    result = hash_payload(payload)  # calling a jobkit task runs it here
    db.execute(BARE_DONE, (job_id, json.dumps(result, separators=(",", ":")), time.time()))


def celery_app(url: str) -> Any:
    """A Celery app on the broker at ``url`` with the ``hash_payload`` task."""
    from celery import Celery

    app = Celery("peers", broker=url)
    app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=4, broker_pool_limit=8,
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    if url.startswith("amqp"):  # jobkit's guarantee: a returned send is in a durable queue
        app.conf.update(task_default_queue_type="quorum", worker_detect_quorum_queues=True,
                        broker_transport_options={"confirm_publish": True})
    app.task(name="hash_payload")(store)
    return app


def dramatiq_actor(url: str) -> Any:
    """A Dramatiq actor ``hash_payload`` on the broker at ``url`` (set as dramatiq's broker)."""
    import dramatiq

    if url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        if url.endswith("//"):  # kombu's spelling of vhost "/"; pika wants it encoded
            url = url[:-1] + "%2F"
        broker: Any = RabbitmqBroker(url=url, confirm_delivery=True)  # as jobkit: confirmed puts
    elif url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker
        broker = RedisBroker(url=url)
    else:
        from dramatiq.brokers.stub import StubBroker
        broker = StubBroker()
    dramatiq.set_broker(broker)
    return dramatiq.actor(store, actor_name="hash_payload", queue_name="dramatiq_peer", max_retries=0)


# A worker started by benchmarks.peers imports this module with PEER_KIND set.
if os.environ.get("PEER_KIND") == "celery":
    celery = celery_app(os.environ["PEER_BROKER_URL"])
elif os.environ.get("PEER_KIND") == "dramatiq":
    actor = dramatiq_actor(os.environ["PEER_BROKER_URL"])
