"""Where the independent units of a stage run: in this process, or on a Ray cluster.

A stage with independent units (one probe per seed or per fold, one checkpoint, one chunk of
inputs to embed) hands them to an executor as ``executor.map(fn, tasks, shared=...)``:
``fn(**shared, **task)`` for each task, results in task order. ``fn`` must be a module-level
function (Ray pickles it by reference) that depends on nothing but its arguments, so a unit
gives the same result wherever it runs.

:class:`LocalExecutor` runs the units one after another in this process (the default; each
unit uses every core). The Ray executor (``cartographer analyze --ray ADDRESS``) lives in
:mod:`analytics.ray_executor` so Ray stays an optional extra.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence

__all__ = ["Executor", "ExecutorError", "LocalExecutor", "LOCAL"]

Progress = Callable[[float, str], None]


class ExecutorError(RuntimeError):
    """The units cannot be run where they were sent (the cluster cannot be reached, Ray is not
    installed, a worker died); the message names the address or the unit."""


class Executor(Protocol):
    name: str

    def describe(self) -> dict:
        """Where the units ran, for the run manifest: ``{"kind": "local"}`` or the cluster."""

    def map(self, fn: Callable[..., Any], tasks: Sequence[dict], *, shared: dict | None = None,
            progress: Progress | None = None, label: str = "unit",
            on_result: Callable[[int, Any], None] | None = None) -> list:
        """``[fn(**shared, **task) for task in tasks]``, wherever the executor runs them.

        With ``on_result``, each result is handed to ``on_result(task_index, result)`` as it
        arrives (in any order) and not kept, so a stage holds one unit's output at a time;
        the returned list then holds None for each task.
        """


class LocalExecutor:
    """Runs every unit here, in order. A unit that takes ``progress`` gets a callback that maps
    its own 0..1 onto its share of the whole."""

    name = "local"

    def describe(self) -> dict:
        return {"kind": "local"}

    def map(self, fn, tasks, *, shared=None, progress=None, label="unit", on_result=None):
        progress = progress or (lambda fraction, message: None)
        shared = shared or {}
        takes_progress = "progress" in inspect.signature(fn).parameters
        results = []
        total = len(tasks)
        for index, task in enumerate(tasks):
            prefix = f"{label} {index + 1} of {total}"
            progress(index / max(total, 1), prefix)
            extra = {}
            if takes_progress:
                extra["progress"] = (lambda f, m, i=index, p=prefix:
                                     progress((i + min(max(f, 0.0), 1.0)) / total, f"{p}: {m}"))
            result = fn(**shared, **task, **extra)
            if on_result is not None:
                on_result(index, result)
                result = None
            results.append(result)
        progress(1.0, f"{total} {label}s done")
        return results


LOCAL = LocalExecutor()
