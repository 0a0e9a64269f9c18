"""The app's background work: analyses, Impact experiments and dataset loads, in worker
processes (:mod:`ui.pool`, which says why processes), never in a page's thread.

- **One pool for the heavy jobs** (analyses, experiments; a new kind such as fine-tuning is one
  entry of :data:`KINDS` plus its function in :mod:`ui.tasks`). At most ``Policy.max_jobs`` run
  at once server-wide; the others wait in order and their page says their place in the queue.
  A user may have ``Policy.max_jobs_per_user`` jobs running or waiting; one more is refused with
  a message (:class:`JobLimitError`).
- **Shared by key.** One job per (dataset, configuration) or experiment key, for every session of
  the server: a second reviewer opening the same map joins the running job instead of starting
  another. A finished job is never reused: a page asks again only when the result is missing (or
  was found damaged), and then it must be computed again.
- **Watched.** Every page that follows a job sends a heartbeat with its Streamlit session id. A
  job whose every watcher has gone (tab closed) for ``Policy.job_grace_seconds`` is cancelled;
  a user can cancel their job with the button next to its progress (it goes on if someone else
  still follows it).
- **Dataset loads** (reading, validating, hashing) run in a small pool of their own, so opening
  a dataset never waits behind an hour-long analysis; the sidebar shows their progress and a
  load is stopped after :data:`LOAD_TIMEOUT_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from analytics.datasets import DatasetError, MissingLabelsError
from ui.pool import CANCELLED, FAILED, Job, JobLimitError, Pool, ordinal

__all__ = ["Job", "JobLimitError", "KINDS", "LOAD_TIMEOUT_S", "analysis_overall", "cancel", "follow", "forget",
           "get", "heartbeat", "impact_key", "keys", "load_dataset", "session_id", "show_progress",
           "start_analysis", "start_impact", "user_key", "wait_all", "warm_up_umap"]

LOAD_TIMEOUT_S = 900.0  # a load still running after 15 minutes is stopped (and says so)
_LOAD_SLOTS = 2


@dataclass(frozen=True)
class Kind:
    """A kind of heavy background job: the worker function that runs it and what the user calls it."""

    target: str  # "module:function" in ui.tasks
    title: str


KINDS = {
    "analysis": Kind("ui.tasks:analysis", "analysis"),
    "impact": Kind("ui.tasks:impact", "Impact experiment"),
}


def _session_alive(watcher: str) -> bool:
    """The browser session is still connected to this server."""
    from streamlit import runtime

    return runtime.exists() and runtime.get_instance().is_active_session(watcher)


_pool = Pool("jobs", slots=2, per_user=2, grace_s=30.0, session_alive=_session_alive,
             warm_up="ui.tasks:warm_up_umap")
# A load is what its user waits for, so it runs nearly at the server's priority (a runaway
# load is stopped by its time limit or when its tab goes away).
_loads = Pool("loads", slots=_LOAD_SLOTS, per_user=None, grace_s=30.0, session_alive=_session_alive, nice=2)


def _apply_policy() -> None:
    """The operator's limits, read for every new job (a test or an operator may change them)."""
    from ui.policy import policy

    rules = policy()
    _pool.configure(slots=rules.max_jobs, per_user=rules.max_jobs_per_user, grace_s=float(rules.job_grace_seconds))
    _loads.configure(grace_s=float(rules.job_grace_seconds))


def session_id() -> str:
    """This browser tab's Streamlit session id (``"<no session>"`` outside a page run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "<no session>"


def user_key() -> str:
    """Who owns a job, for the per-user limit: the signed-in identity on a team server
    (:func:`ui.identity.current_user`); in local mode this browser session, since a typed name is
    not an identity (retyping it must not reset the limit)."""
    try:
        from ui import identity
    except ImportError:  # a checkout without the sign-in module: sessions only
        return f"session:{session_id()}"
    user = identity.current_user() if identity.team_mode() else None
    return f"user:{user}" if user else f"session:{session_id()}"


# ---------------------------------------------------------------------------------- heavy jobs
def start_analysis(dataset, config, workspace, *, key: str | None = None) -> Job:
    """Start (or join) the analysis of ``dataset`` with ``config``.

    A job that failed or was cancelled is returned as it is (the page says so and offers to start
    again after :func:`forget`); a job that finished is replaced, since the page asks only when
    the run is missing or damaged.

    Raises
    ------
    JobLimitError
        The user already has as many jobs as the server allows.
    """
    if key is None:
        from analytics.pipeline import run_dir_for

        key = str(run_dir_for(dataset, config, workspace))
    return _start(key, "analysis", dict(dataset=dataset, config=config, workspace=workspace),
                  label=f"the map of {dataset.name}")


def impact_key(experiment: str, data, config, changes=None) -> str:
    """The key of an Impact experiment's job: the key of its result in the workspace (run ×
    configuration × changes), so every session asking for the same experiment joins one job."""
    from analytics.impact import result_key

    return result_key(experiment, data, config, changes=changes)


def start_impact(experiment: str, data, config, changes=None, *, workspace=None) -> Job:
    """Start (or join) an Impact experiment in a background worker; its result lands in the
    workspace (the default one unless given), under :func:`impact_key`.

    Raises
    ------
    JobLimitError
        The user already has as many jobs as the server allows.
    """
    if workspace is None:
        from analytics.workspace import Workspace

        workspace = Workspace.default()
    return _start(impact_key(experiment, data, config, changes), "impact",
                  dict(experiment=experiment, data=data, config=config, changes=changes, workspace=workspace),
                  label=f"the {experiment} experiment")


def _start(key: str, kind: str, payload: dict, *, label: str) -> Job:
    _apply_policy()
    existing = _pool.get(key)
    if existing is not None and existing.state in (FAILED, CANCELLED):
        return existing
    if existing is not None and existing.done:
        _pool.forget(key)
    return _pool.submit(key, kind, KINDS[kind].target, payload, owner=user_key(), watcher=session_id(),
                        label=label)


def get(key: str) -> Job | None:
    """The job with ``key`` (waiting, running, or finished and not yet forgotten), or None."""
    return _pool.get(key)


def keys() -> list[str]:
    """Keys of the heavy jobs the server knows."""
    return _pool.keys()


def forget(key: str) -> None:
    """Drop a finished job (its results stay in the workspace), so that asking again recomputes."""
    _pool.forget(key)


def heartbeat(job: Job) -> None:
    """This tab still follows ``job``."""
    _pool.heartbeat(job, session_id())


def cancel(job: Job) -> bool:
    """This tab no longer wants ``job``: it is cancelled unless another tab still follows it.
    True when it was cancelled."""
    return _pool.cancel(job, watcher=session_id(), reason="Cancelled by a user.")


def analysis_overall(job: Job) -> float:
    """Rough overall progress of an analysis: finished stages plus the current one's fraction."""
    from analytics.pipeline import STAGES

    if job.stage not in STAGES:
        return 0.0
    return min(1.0, (STAGES.index(job.stage) + job.fraction) / len(STAGES))


def show_progress(job: Job, *, fraction: float, key: str) -> bool:
    """Draw the job's place in the queue or its progress, with a Cancel button beside it (call it
    in the fragment that polls the job; it sends the heartbeat). True when the user cancelled."""
    heartbeat(job)
    left, right = st.columns([6, 1], vertical_alignment="center")
    place = _pool.position(job)
    if place is not None:
        left.progress(0.0, text=f"Waiting: {ordinal(place)} in the queue (at most {_pool.slots} "
                                f"background job{'s' if _pool.slots != 1 else ''} run at once on this server).")
    else:
        left.progress(min(1.0, max(0.0, fraction)), text=f"{job.message} · {job.elapsed():.0f} s")
    if right.button("Cancel", key=key, help="Stop this job (it goes on if another tab still follows it)."):
        if not cancel(job):
            st.toast("Another tab still follows this job, so it goes on for them.")
        return True
    return False


@st.fragment(run_every=1.0)
def follow(key: str, *, cancel_key: str) -> None:
    """Poll the job with ``key`` (in a fragment, every second): its place in the queue or its
    progress with a Cancel button (widget key ``cancel_key``); the whole page reruns once the job
    ends or is cancelled."""
    job = get(key)
    if job is None or job.done:
        st.rerun(scope="app")
    if show_progress(job, fraction=job.fraction, key=cancel_key):
        st.rerun(scope="app")


def wait_all(timeout: float = 300.0) -> bool:
    """Wait for every heavy job and dataset load (tests, shutdown); True if all finished in time."""
    deadline = time.monotonic() + timeout
    return _pool.wait_all(timeout) and _loads.wait_all(max(0.0, deadline - time.monotonic()))


def warm_up_umap() -> None:
    """Start one worker at server start and compile UMAP's numba code in it, at low priority:
    the first map a user asks for does not wait 20-30 s for the compiler."""
    _pool.warm_up()


# ---------------------------------------------------------------------------------- dataset loads
def load_dataset(path: str, roles: dict, drop_missing_labels: bool, encoding: str, *, key: tuple,
                 progress=None):
    """Load (read, validate, fingerprint) a dataset in a worker process and wait for it here,
    calling ``progress(fraction, message)`` as it goes; the page thread only waits.

    Raises
    ------
    MissingLabelsError, DatasetError
        As :func:`analytics.datasets.load_dataset` does; also when the load was stopped (time
        limit, cancelled) or its worker failed.
    """
    _apply_policy()
    watcher = session_id()
    job = _loads.submit(repr(key), "load", "ui.tasks:load",
                        dict(path=path, roles=roles, drop_missing_labels=drop_missing_labels, encoding=encoding),
                        owner=user_key(), watcher=watcher, label=f"loading {path}", timeout_s=LOAD_TIMEOUT_S)
    shown = None
    while not job.done:
        _loads.heartbeat(job, watcher)
        place = _loads.position(job)
        now = (0.0, f"Waiting to load: {ordinal(place)} in the queue") if place else (job.fraction, job.message)
        if progress is not None and now != shown:
            progress(*now)
            shown = now
        time.sleep(0.05)
    _loads.forget(job.key)
    if job.state == CANCELLED or job.state == FAILED:
        raise DatasetError(f"Loading {path} did not finish: {job.error}")
    loaded = job.result
    if loaded.missing_labels is not None:
        raise MissingLabelsError(loaded.error, count=loaded.missing_labels, rows=[])
    if loaded.error is not None:
        raise DatasetError(loaded.error)
    return loaded.dataset
