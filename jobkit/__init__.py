"""jobkit: a small, fast, honest task queue on beanstalkd.

Public names: :class:`App`, :class:`Job`, :class:`JobState`, :class:`JobStatus`,
:mod:`errors`, ``__version__``.
"""
from jobkit import errors
from jobkit.app import App
from jobkit.job import Job, JobState, JobStatus
from jobkit.task import Task, TaskOptions

__version__ = "0.1.0"

__all__ = ["App", "Job", "JobState", "JobStatus", "Task", "TaskOptions", "__version__", "errors"]
