"""Analysis runs in background threads, so pages stay responsive and show progress.

One job per (dataset fingerprint, configuration), shared by every session of the server: a
second reviewer opening the same map joins the running job instead of starting another.
Threads never touch Streamlit; pages poll the job's fields.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from analytics.datasets import Dataset
from analytics.pipeline import STAGES, AnalysisConfig, AnalysisRun, run_analysis, run_dir_for
from analytics.workspace import Workspace


@dataclass
class AnalysisJob:
    key: str
    started: float = field(default_factory=time.monotonic)
    stage: str = "queued"
    fraction: float = 0.0
    message: str = "Waiting to start"
    partial: dict = field(default_factory=dict)  # stage name -> result (the PCA map, …)
    run: AnalysisRun | None = None
    error: str | None = None
    finished: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.run is not None or self.error is not None

    @property
    def overall(self) -> float:
        """Rough overall progress: finished stages plus the fraction of the current one."""
        if self.stage not in STAGES:
            return 0.0
        return min(1.0, (STAGES.index(self.stage) + self.fraction) / len(STAGES))


_jobs: dict[str, AnalysisJob] = {}
_lock = threading.Lock()


def start_analysis(dataset: Dataset, config: AnalysisConfig, workspace: Workspace) -> AnalysisJob:
    """Start (or join) the analysis of ``dataset`` with ``config``."""
    key = str(run_dir_for(dataset, config, workspace))
    with _lock:
        job = _jobs.get(key)
        if job is not None and job.error is None:
            return job
        job = _jobs[key] = AnalysisJob(key=key)

    def progress(stage: str, fraction: float, message: str) -> None:
        job.stage, job.fraction, job.message = stage, fraction, message

    def on_stage(stage: str, result) -> None:
        if stage in ("pca", "umap"):
            job.partial[stage] = result

    def work() -> None:
        try:
            job.run = run_analysis(dataset, config, workspace=workspace, progress=progress, on_stage=on_stage)
        except Exception as exc:  # shown to the user on the page; the app keeps running
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.monotonic()

    job.thread = threading.Thread(target=work, name=f"analysis-{dataset.fingerprint}", daemon=True)
    job.thread.start()
    return job


def wait_all(timeout: float = 300.0) -> bool:
    """Wait for every running job (tests and shutdown); True if all finished in time."""
    deadline = time.monotonic() + timeout
    with _lock:
        threads = [job.thread for job in _jobs.values() if job.thread is not None] + _background
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def forget(key: str) -> None:
    """Drop a finished job (its run stays on disk)."""
    with _lock:
        job = _jobs.get(key)
        if job is not None and job.done:
            del _jobs[key]


_warm = threading.Event()
_background: list[threading.Thread] = []


def warm_up_umap() -> None:
    """Compile UMAP's numba code once per server process, in the background.

    The first UMAP fit in a process spends 20-30 s compiling; doing it at start-up means the
    first map a user asks for does not wait for it.
    """
    if _warm.is_set():
        return
    _warm.set()

    def work() -> None:
        import numpy as np

        from analytics.projection import project_umap

        project_umap(np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32),
                     n_neighbors=10, n_epochs=20)

    thread = threading.Thread(target=work, name="umap-warm-up", daemon=True)
    _background.append(thread)
    thread.start()
