"""jobkit: a small, fast, honest task queue on beanstalkd.

Public names: :class:`App`, :class:`Job`, :class:`JobState`, :class:`JobStatus`,
:mod:`errors`, ``__version__``; the canvas: :class:`Signature`, ``chain``,
``group``, ``chord``, :class:`GroupJob`.
"""
from jobkit import errors
from jobkit.app import App
from jobkit.canvas import GroupJob, Signature, chain, chord, group
from jobkit.job import Job, JobState, JobStatus
from jobkit.task import Task, TaskOptions

__version__ = "0.1.0"

__all__ = ["App", "GroupJob", "Job", "JobState", "JobStatus", "Signature", "Task", "TaskOptions",
           "__version__", "chain", "chord", "errors", "group"]
