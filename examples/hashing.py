"""The seed demo as a jobkit app: ``hash_payload`` hashes a job's JSON payload.

The app itself ships inside the package as :mod:`jobkit.demo` (the default
``JOBKIT_APP``, so an installed jobkit runs the seed's walkthrough from any
directory); this module names it for readers and for ``-A examples.hashing:app``.
An app of your own looks the same::

    from jobkit import App

    app = App("hashing")

    @app.task
    def hash_payload(payload):
        ...

and runs with ``jobkit worker -A mymodule:app``.
"""
from jobkit.demo import app, hash_payload

__all__ = ["app", "hash_payload"]
