"""jobkit: a small, fast, honest task queue on beanstalkd.

Public names: :class:`App`, :class:`Job`, :class:`JobState`, :class:`JobStatus`,
:func:`current_job` (inside a running task), :mod:`errors`, ``__version__``.
"""
from jobkit import errors
from jobkit.app import App
from jobkit.context import JobContext, current_job
from jobkit.job import Job, JobState, JobStatus
from jobkit.task import AsyncTask, Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "App", "AsyncTask", "Job", "JobContext", "JobState", "JobStatus", "Task", "TaskOptions",
    "__version__", "current_job", "errors",
]
