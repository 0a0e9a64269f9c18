"""Tiny jobs for tests/test_pool.py, run in the pool's worker processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def add(report, *, a: int, b: int) -> int:
    report(stage="adding", fraction=0.5, message="Adding")
    return a + b


def sleep(report, *, seconds: float, log: str | None = None) -> str:
    """Sleep; with ``log``, append "start <pid> <time>" and "end <pid> <time>" lines to it."""
    if log:
        with open(log, "a") as out:
            out.write(f"start {os.getpid()} {time.time()}\n")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        report(stage="sleeping", fraction=1 - (deadline - time.monotonic()) / seconds, message="Sleeping")
        time.sleep(0.02)
    if log:
        with open(log, "a") as out:
            out.write(f"end {os.getpid()} {time.time()}\n")
    return "slept"


def fail(report) -> None:
    raise ValueError("the fake job failed on purpose")


def spin_with_child(report, *, pid_file: str) -> None:
    """Start a child process, write both pids, then keep a core busy until killed."""
    child = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")
    while True:
        pass


def nice_and_threads(report) -> dict:
    return {"nice": os.nice(0), "omp": os.environ.get("OMP_NUM_THREADS"),
            "workspace": os.environ.get("CARTOGRAPHER_WORKSPACE"), "pgid": os.getpgid(0), "pid": os.getpid()}
