"""A bounded pool of worker processes for the app's background work, with a queue, per-user
limits, cancellation and abandoned-job reaping. No Streamlit here: :mod:`ui.jobs` is the app's
face of it (job kinds, who the user is, which browser sessions watch a job).

Why processes, not threads
--------------------------
The app used to run each analysis or experiment in a thread of the Streamlit server. Those jobs
spend much of their time in Python (probe training loops, pandas, progress callbacks), so under
the GIL they starve the server's event loop: with three Impact experiments running,
``/_stcore/health`` answered in 2.1 s median and another user's Overview took 55 s. A thread can
also not be stopped. Here every job runs in a worker *process*:

- started as a fresh interpreter (``subprocess``, not ``multiprocessing``: a fork would copy
  the server's threads and locks, and ``spawn`` re-runs the ``__main__`` module, which under
  Streamlit is the app script itself), in its own process group, at a lower CPU priority
  (``os.nice``) and with torch/BLAS/numba threads capped to its share of the cores, so the
  server's own threads always get the CPU first;
- kept alive between jobs (a worker pays the imports and numba's compile once, not per job);
- cancelled by killing its process group (the worker and anything it started), then replaced
  by a fresh worker when the next job needs one.

Results stay where the engine writes them (the workspace); what travels back over the pipe is
progress, small partial results (the PCA preview) and, for dataset loads, the loaded dataset.
``bench/jobs_load.py`` measures the difference (``docs/BENCHMARKS.md``).

Jobs are keyed: submitting a key that is queued or running joins that job (a second reviewer
opening the same map shares the first one's work). A job records its *watchers* (browser
sessions) with heartbeats; when none is left alive for ``grace_s`` seconds the job is cancelled.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_connections
from typing import Any, Callable

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
_FINISHED = (DONE, FAILED, CANCELLED)
_PROGRESS_INTERVAL_S = 0.25  # a worker sends at most four progress messages a second
_KEEP_FINISHED_S = 600.0  # a finished job is kept this long for the pages that follow it
_TICK_S = 0.1


class JobLimitError(RuntimeError):
    """A user asked for more background jobs than the operator allows; the message says which
    jobs they have and what to do."""


@dataclass(eq=False)  # compared by identity: payloads hold arrays and tables
class Job:
    """One unit of background work, as the pages see it.

    Fields are written only by the pool's scheduler thread; pages read them.
    """

    key: str
    kind: str
    target: str = field(repr=False)  # "module:function" run in the worker
    payload: dict = field(repr=False)
    owner: str
    label: str
    timeout_s: float | None = None
    id: int = 0
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    state: str = QUEUED
    stage: str = QUEUED
    fraction: float = 0.0
    message: str = "Waiting for a worker"
    partial: dict = field(default_factory=dict)  # e.g. {"pca": ndarray} while UMAP still runs
    result: Any = field(default=None, repr=False)
    error: str | None = None
    watchers: dict[str, float] = field(default_factory=dict)  # session id -> last heartbeat

    @property
    def done(self) -> bool:
        """Finished one way or another (succeeded, failed or cancelled)."""
        return self.state in _FINISHED

    @property
    def cancelled(self) -> bool:
        return self.state == CANCELLED

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the job started running (0 while it waits)."""
        if self.started is None:
            return 0.0
        return (self.finished or now or time.monotonic()) - self.started


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    conn: Connection
    job: Job | None = None
    busy_warming: bool = False


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Pool:
    """At most ``slots`` jobs running at once, in worker processes; the rest wait in order.

    Parameters
    ----------
    name : str
        Shown in worker process names and messages.
    slots : int
        Jobs running at once (the number of worker processes, started as needed).
    per_user : int or None
        Most jobs one owner may have queued or running; None for no limit.
    grace_s : float
        A job with no live watcher for this long is cancelled.
    session_alive : callable, optional
        ``session_alive(watcher) -> bool``: the watcher's browser session is still connected
        (it keeps a job alive between heartbeats, e.g. while the user is on another page).
    nice : int
        Added to the workers' CPU niceness.
    threads : int or None
        Threads each worker may use for torch, BLAS and numba (default: the cores shared out
        among the slots, at least 1).
    warm_up : str or None
        ``"module:function"`` that a new worker runs before its first job, when asked to warm up.
    """

    def __init__(self, name: str, *, slots: int, per_user: int | None, grace_s: float,
                 session_alive: Callable[[str], bool] | None = None, nice: int = 10,
                 threads: int | None = None, warm_up: str | None = None) -> None:
        self.name = name
        self.slots, self.per_user, self.grace_s = slots, per_user, grace_s
        self.session_alive = session_alive
        self.nice, self.threads, self.warm_up_target = nice, threads, warm_up
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._workers: list[_Worker] = []
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._exit_hook = False

    # ------------------------------------------------------------------ asked by the pages
    def configure(self, *, slots: int | None = None, per_user: int | None = None,
                  grace_s: float | None = None) -> None:
        """Apply new limits (the operator's policy); running jobs are never stopped by it."""
        with self._lock:
            if slots is not None:
                self.slots = slots
            if per_user is not None:
                self.per_user = per_user
            if grace_s is not None:
                self.grace_s = grace_s
        self._wake.set()

    def submit(self, key: str, kind: str, target: str, payload: dict, *, owner: str, watcher: str,
               label: str, timeout_s: float | None = None) -> Job:
        """Queue a job, or join the queued or running job with the same ``key``.

        Raises
        ------
        JobLimitError
            ``owner`` already has ``per_user`` jobs queued or running (joining never counts).
        """
        with self._lock:
            self._ensure_thread()
            existing = self._jobs.get(key)
            if existing is not None and not existing.done:
                existing.watchers[watcher] = time.monotonic()
                return existing
            mine = [job for job in self._jobs.values() if job.owner == owner and not job.done]
            if self.per_user is not None and len(mine) >= self.per_user:
                names = "; ".join(job.label for job in mine)
                raise JobLimitError(
                    f"You already have {len(mine)} background job{'s' if len(mine) != 1 else ''} running or "
                    f"waiting ({names}), the most this server allows per user ({self.per_user}). Wait for "
                    "one to finish, or cancel one, then start this again.")
            job = Job(key=key, kind=kind, target=target, payload=payload, owner=owner, label=label,
                      timeout_s=timeout_s, id=next(self._ids))
            job.watchers[watcher] = job.created
            self._jobs[key] = job
            self._queue.append(job)
        self._wake.set()
        return job

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def keys(self) -> list[str]:
        """Keys of every job the pool knows (waiting, running, or finished and not yet dropped)."""
        with self._lock:
            return list(self._jobs)

    def position(self, job: Job) -> int | None:
        """1 for the next job to start, 2 for the one after…; None when not waiting."""
        with self._lock:
            try:
                return self._queue.index(job) + 1
            except ValueError:
                return None

    def heartbeat(self, job: Job, watcher: str) -> None:
        """``watcher`` (a browser session) still follows ``job``."""
        with self._lock:
            if not job.done:
                job.watchers[watcher] = time.monotonic()

    def cancel(self, job: Job, *, watcher: str | None = None, reason: str = "Cancelled.") -> bool:
        """Stop following ``job``; it is cancelled when nobody else still follows it.

        With ``watcher`` None the job is cancelled whoever follows it. Returns True when the job
        was cancelled, False when others still wait for it (it goes on for them).
        """
        with self._lock:
            if job.done:
                return False
            if watcher is not None:
                job.watchers.pop(watcher, None)
                now = time.monotonic()
                if any(self._watcher_alive(other, seen, now) for other, seen in job.watchers.items()):
                    return False
            self._cancel_locked(job, reason)
        self._wake.set()
        return True

    def forget(self, key: str) -> None:
        """Drop a finished job, so that the next submit of ``key`` starts afresh."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.done:
                del self._jobs[key]

    def wait_all(self, timeout: float = 300.0) -> bool:
        """Wait for every queued or running job (tests, shutdown); True if all finished in time.

        The caller counts as a watcher while it waits, so nothing is reaped as abandoned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = [job for job in self._jobs.values() if not job.done]
                for job in pending:
                    job.watchers["<wait_all>"] = time.monotonic()
            if not pending:
                return True
            time.sleep(0.05)
        return False

    def warm_up(self) -> None:
        """Start one worker now and run the warm-up in it (numba's compile, at low priority)."""
        if self.warm_up_target is None:
            return
        with self._lock:
            self._ensure_thread()
            if self._workers:
                return
            worker = self._start_worker()
            worker.conn.send(("warm", self.warm_up_target))
            worker.busy_warming = True

    def shutdown(self) -> None:
        """Kill every worker (at interpreter exit); queued and running jobs are cancelled."""
        with self._lock:
            self._closed = True
            for job in list(self._jobs.values()):
                if not job.done:
                    self._cancel_locked(job, "The server is shutting down.")
            for worker in list(self._workers):
                self._kill(worker)
        self._wake.set()

    # ------------------------------------------------------------------ the scheduler thread
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._loop, name=f"pool-{self.name}", daemon=True)
            self._thread.start()
            if not self._exit_hook:
                atexit.register(self.shutdown)
                self._exit_hook = True

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                self._reap(time.monotonic())
                self._dispatch()
                connections = {w.conn: w for w in self._workers}
            if not connections:
                self._wake.wait(_TICK_S)
                self._wake.clear()
                continue
            try:
                ready_list = wait_for_connections(list(connections), timeout=_TICK_S)
            except (OSError, ValueError):  # a worker was killed (cancelled) while we waited
                continue
            for ready in ready_list:
                with self._lock:
                    if connections[ready] in self._workers:
                        self._receive(connections[ready])

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                self._handle(worker, message)
        except (EOFError, OSError):
            self._worker_died(worker)

    def _handle(self, worker: _Worker, message: tuple) -> None:
        what = message[0]
        if what == "warm":
            worker.busy_warming = False
            return
        job = worker.job
        if job is None or job.id != message[1]:
            return  # a message from a job cancelled meanwhile
        if what == "progress":
            update = message[2]
            job.stage = update.get("stage", job.stage)
            job.fraction = float(update.get("fraction", job.fraction))
            job.message = update.get("message", job.message)
            if "partial" in update:
                name, value = update["partial"]
                job.partial[name] = value
        elif what in ("done", "failed"):
            worker.job = None
            job.finished = time.monotonic()
            if what == "done":
                job.state, job.result, job.fraction = DONE, message[2], 1.0
            else:
                job.state, job.error = FAILED, message[2]
            if job.payload is not None:
                job.payload = {}  # free the inputs (a dataset, embeddings)

    def _worker_died(self, worker: _Worker) -> None:
        self._kill(worker)
        code = worker.process.returncode
        job = worker.job
        if job is not None and not job.done:
            job.state, job.finished = FAILED, time.monotonic()
            job.error = (f"The worker process stopped unexpectedly (exit code {code}); it may have run out "
                         "of memory.")

    def _dispatch(self) -> None:
        while self._queue:
            if sum(worker.job is not None for worker in self._workers) >= self.slots:
                return  # (the limit may have been lowered below the number of workers)
            idle = [w for w in self._workers if w.job is None and not w.busy_warming and w.process.poll() is None]
            if idle:
                worker = idle[0]
            elif len(self._workers) < self.slots:
                worker = self._start_worker()
            else:
                return
            job = self._queue.pop(0)
            job.state, job.stage, job.started = RUNNING, "starting", time.monotonic()
            job.message = "Starting"
            worker.job = job
            env = {k: v for k, v in os.environ.items() if k.startswith("CARTOGRAPHER_")}
            try:
                worker.conn.send(("run", job.id, job.target, job.payload, env))
            except (OSError, ValueError) as exc:
                worker.job = None
                job.state, job.finished = FAILED, time.monotonic()
                job.error = f"The job could not be handed to a worker: {exc}"
                self._kill(worker)

    def _reap(self, now: float) -> None:
        for job in list(self._jobs.values()):
            if job.done:
                if job.finished is not None and now - job.finished > _KEEP_FINISHED_S:
                    del self._jobs[job.key]
                continue
            if not any(self._watcher_alive(w, seen, now) for w, seen in job.watchers.items()):
                self._cancel_locked(job, "Cancelled: nobody was following it any more (every tab that "
                                         "asked for it was closed).")
            elif job.timeout_s is not None and job.started is not None and now - job.started > job.timeout_s:
                self._cancel_locked(job, f"Stopped after {job.timeout_s:.0f} s, the time limit for this job.")

    def _watcher_alive(self, watcher: str, seen: float, now: float) -> bool:
        if now - seen < self.grace_s:
            return True
        if self.session_alive is None or watcher.startswith("<"):
            return False
        try:
            return bool(self.session_alive(watcher))
        except Exception:  # the runtime is gone (shutdown): nobody is there
            return False

    def _cancel_locked(self, job: Job, reason: str) -> None:
        if job in self._queue:
            self._queue.remove(job)
        for worker in list(self._workers):
            if worker.job is job:
                self._kill(worker)
        job.state, job.error, job.finished = CANCELLED, reason, time.monotonic()
        job.message = reason
        job.payload = {}

    # ------------------------------------------------------------------ worker processes
    def _start_worker(self) -> _Worker:
        threads = self.threads or max(1, (os.cpu_count() or 1) // max(1, self.slots))
        ours, theirs = socket.socketpair()
        paths = [path for path in sys.path if path and os.path.isdir(path)]
        command = [sys.executable, "-c", _WORKER_BOOT, json.dumps(paths), str(theirs.fileno()), str(self.nice),
                   str(threads)]
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), start_new_session=True,
                                   stdin=subprocess.DEVNULL, cwd=os.getcwd())
        theirs.close()
        worker = _Worker(process=process, conn=Connection(ours.detach()))
        self._workers.append(worker)
        return worker

    def _kill(self, worker: _Worker) -> None:
        """Kill the worker and everything it started (it leads its own process group)."""
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.process.poll() is None:
            try:
                os.killpg(worker.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                worker.process.kill()
        try:
            worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        worker.conn.close()


# The worker's command line: the server's import path, then the worker loop on the inherited socket.
_WORKER_BOOT = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
                "from ui.pool import _worker_main; _worker_main(*map(int, sys.argv[2:5]))")


def _worker_main(fd: int, nice: int, threads: int) -> None:
    """A worker process: run the jobs sent over the socket ``fd`` one after another, until the
    server closes it."""
    try:
        os.nice(nice)
    except OSError:
        pass
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[variable] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # torch, BLAS and numba read these when first imported (by a job), so they are set first.
    conn = Connection(fd)
    threading.Thread(target=_exit_with_server, args=(os.getppid(),), name="server-watch", daemon=True).start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the server went away
        if message[0] == "warm":
            try:
                _resolve(message[1])()
            except Exception:  # a failed warm-up only means the first job compiles
                pass
            conn.send(("warm",))
            continue
        _, job_id, target, payload, env = message
        for variable in [v for v in os.environ if v.startswith("CARTOGRAPHER_")]:
            del os.environ[variable]
        os.environ.update(env)
        last = {"time": 0.0, "stage": None}

        def report(*, stage: str | None = None, fraction: float | None = None, message: str | None = None,
                   partial: tuple[str, Any] | None = None, _job_id: int = job_id) -> None:
            now = time.monotonic()
            new_stage = stage is not None and stage != last["stage"]
            if partial is None and not new_stage and now - last["time"] < _PROGRESS_INTERVAL_S:
                return
            last["time"], last["stage"] = now, stage if stage is not None else last["stage"]
            update = {k: v for k, v in (("stage", stage), ("fraction", fraction), ("message", message),
                                        ("partial", partial)) if v is not None}
            conn.send(("progress", _job_id, update))

        try:
            result = _resolve(target)(report, **payload)
        except Exception as exc:  # the page shows it; the worker takes the next job
            traceback.print_exc()
            conn.send(("failed", job_id, f"{type(exc).__name__}: {exc}"))
        else:
            try:
                conn.send(("done", job_id, result))
            except Exception as exc:  # a result that cannot travel back (unpicklable)
                conn.send(("failed", job_id, f"The result could not be sent back: {type(exc).__name__}: {exc}"))


def _exit_with_server(server_pid: int) -> None:
    """Kill this worker's process group when the server is gone (even killed without a chance to
    clean up), so that no job runs on for nobody."""
    while os.getppid() == server_pid:
        time.sleep(1.0)
    os.killpg(0, signal.SIGKILL)


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
