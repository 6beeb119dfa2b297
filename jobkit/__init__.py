"""jobkit: a small, fast, honest task queue on beanstalkd.

Public names: :class:`App`, :class:`Job`, :class:`JobState`, :class:`JobStatus`,
:func:`current_job` (inside a running task), :mod:`errors`, ``__version__``;
the canvas: :class:`Signature`, ``chain``, ``group``, ``chord``, :class:`GroupJob`.
"""
from jobkit import errors
from jobkit.app import App
from jobkit.canvas import GroupJob, Signature, chain, chord, group
from jobkit.context import JobContext, current_job
from jobkit.job import Job, JobState, JobStatus
from jobkit.task import AsyncTask, Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "App", "AsyncTask", "GroupJob", "Job", "JobContext", "JobState", "JobStatus", "Signature", "Task",
    "TaskOptions", "__version__", "chain", "chord", "current_job", "errors", "group",
]
