"""The bounded worker pool (ui/pool.py) with tiny fake jobs (tests/pool_tasks.py): limits, the
queue, cancelling, abandoned jobs, joining by key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ui.pool import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobLimitError, Pool, ordinal

TASKS = "tests.pool_tasks"


@pytest.fixture
def make_pool():
    pools = []

    def make(**options) -> Pool:
        settings = dict(slots=2, per_user=None, grace_s=30.0)
        settings.update(options)
        pool = Pool("test", **settings)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()


def submit(pool: Pool, key: str, function: str, *, owner: str = "alice", watcher: str = "tab-1", **payload):
    return pool.submit(key, "fake", f"{TASKS}:{function}", payload, owner=owner, watcher=watcher,
                       label=f"job {key}")


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_job_runs_in_a_low_priority_worker_process_and_reports_progress(make_pool, monkeypatch):
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", "/tmp/the-tests-workspace")
    pool = make_pool(slots=2)
    job = submit(pool, "facts", "nice_and_threads")
    assert pool.wait_all(60)
    assert job.state == DONE, job.error
    facts = job.result
    assert facts["pid"] != os.getpid() and facts["pgid"] == facts["pid"]  # its own process group
    assert facts["nice"] >= os.nice(0) + 10
    assert facts["omp"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert facts["workspace"] == "/tmp/the-tests-workspace"  # the server's settings travel with the job

    adding = submit(pool, "add", "add", a=2, b=3)
    assert pool.wait_all(60)
    assert adding.result == 5 and adding.stage == "adding" and adding.message == "Adding"


def test_at_most_slots_jobs_run_at_once_and_the_rest_wait_their_turn(make_pool, tmp_path):
    pool = make_pool(slots=2)
    log = tmp_path / "log.txt"
    jobs = [submit(pool, f"sleep-{i}", "sleep", owner=f"user-{i}", seconds=0.6, log=str(log)) for i in range(4)]
    most_running = 0
    while not all(job.done for job in jobs):
        most_running = max(most_running, sum(job.state == RUNNING for job in jobs))
        time.sleep(0.01)
    assert [job.state for job in jobs] == [DONE] * 4
    assert most_running == 2
    # the workers' own log: never more than two jobs between their start and end
    events = sorted((float(t), kind) for kind, _, t in (line.split() for line in log.read_text().splitlines()))
    running, peak = 0, 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    # started in the order they were submitted
    assert sorted(jobs, key=lambda job: job.started) == jobs


def test_waiting_jobs_know_their_place_in_the_queue(make_pool):
    pool = make_pool(slots=1)
    first = submit(pool, "a", "sleep", seconds=1.0)
    second = submit(pool, "b", "sleep", seconds=0.1)
    third = submit(pool, "c", "sleep", seconds=0.1)
    assert wait_until(lambda: first.state == RUNNING)
    assert pool.position(first) is None
    assert (pool.position(second), pool.position(third)) == (1, 2)
    assert second.state == third.state == QUEUED
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
    pool.cancel(second)
    assert pool.position(third) == 1  # moves up when a job ahead leaves the queue
    assert pool.wait_all(60) and third.state == DONE


def test_the_per_user_limit_refuses_one_more_job_with_a_clear_message(make_pool):
    pool = make_pool(slots=1, per_user=2)
    submit(pool, "a", "sleep", seconds=5)
    submit(pool, "b", "sleep", seconds=5)
    with pytest.raises(JobLimitError) as refused:
        submit(pool, "c", "sleep", seconds=5)
    message = str(refused.value)
    assert "You already have 2 background jobs running or waiting" in message
    assert "job a; job b" in message and "(2)" in message and "cancel one" in message
    assert pool.get("c") is None
    submit(pool, "a", "sleep", seconds=5)  # joining one's own running job is not one more
    submit(pool, "c", "sleep", owner="bob", seconds=0.1)  # another user is not affected
    for key in ("a", "b"):
        pool.cancel(pool.get(key))
    submit(pool, "d", "sleep", seconds=0.1)  # a cancelled job no longer counts


def test_the_same_key_joins_the_running_job_and_it_stops_only_when_nobody_wants_it(make_pool):
    pool = make_pool(slots=1)
    job = submit(pool, "shared", "sleep", watcher="tab-alice", seconds=30)
    assert submit(pool, "shared", "sleep", owner="bob", watcher="tab-bob", seconds=30) is job
    assert set(job.watchers) == {"tab-alice", "tab-bob"}
    assert wait_until(lambda: job.state == RUNNING)
    assert pool.cancel(job, watcher="tab-alice") is False  # bob still follows it
    assert job.state == RUNNING
    assert pool.cancel(job, watcher="tab-bob") is True
    assert job.state == CANCELLED and job.error == "Cancelled."


def test_cancel_kills_the_worker_and_what_it_started_and_the_queue_goes_on(make_pool, tmp_path):
    pool = make_pool(slots=1)
    pid_file = tmp_path / "pids"
    spinning = submit(pool, "spin", "spin_with_child", pid_file=str(pid_file))
    after = submit(pool, "after", "add", a=1, b=1)
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text())
    worker_pid, child_pid = map(int, pid_file.read_text().split())
    assert not gone(worker_pid) and not gone(child_pid)
    assert pool.cancel(spinning, reason="Stopped by the test.") is True
    assert spinning.state == CANCELLED and spinning.error == "Stopped by the test."
    assert wait_until(lambda: gone(worker_pid) and gone(child_pid), timeout=10)
    assert pool.wait_all(60) and after.state == DONE and after.result == 2  # a fresh worker took over


def test_a_job_nobody_follows_any_more_is_cancelled_after_the_grace_period(make_pool):
    pool = make_pool(slots=2, grace_s=0.5)
    abandoned = submit(pool, "abandoned", "sleep", watcher="closed-tab", seconds=30)
    followed = submit(pool, "followed", "sleep", watcher="open-tab", seconds=30)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        pool.heartbeat(followed, "open-tab")
        time.sleep(0.1)
    assert abandoned.state == CANCELLED
    assert "nobody was following it" in abandoned.error
    assert followed.state == RUNNING
    # a session the server still knows keeps its job alive without heartbeats
    pool.session_alive = lambda watcher: watcher == "open-tab"
    time.sleep(1.0)
    assert followed.state == RUNNING
    pool.session_alive = lambda watcher: False
    assert wait_until(lambda: followed.state == CANCELLED, timeout=5)


def test_a_failed_job_says_why_and_the_worker_takes_the_next_one(make_pool):
    pool = make_pool(slots=1)
    failing = submit(pool, "fail", "fail")
    following = submit(pool, "add", "add", a=20, b=22)
    assert pool.wait_all(60)
    assert failing.state == FAILED and failing.error == "ValueError: the fake job failed on purpose"
    assert following.result == 42


def test_a_job_past_its_time_limit_is_stopped(make_pool):
    pool = make_pool(slots=1)
    job = pool.submit("slow", "fake", f"{TASKS}:sleep", {"seconds": 30}, owner="alice", watcher="tab",
                      label="slow", timeout_s=0.5)
    assert wait_until(lambda: job.done, timeout=30)
    assert job.state == CANCELLED and "time limit" in job.error


def test_forget_drops_a_finished_job_so_the_key_starts_afresh(make_pool):
    pool = make_pool(slots=1)
    first = submit(pool, "key", "add", a=1, b=2)
    assert pool.wait_all(60)
    pool.forget("key")
    assert pool.get("key") is None and pool.keys() == []
    second = submit(pool, "key", "add", a=1, b=2)
    assert second is not first
    running = submit(pool, "long", "sleep", seconds=30)
    pool.forget("long")  # never drops a job that is still queued or running
    assert pool.get("long") is running


def test_workers_stop_when_the_server_is_killed(tmp_path):
    """A server killed without cleaning up (SIGKILL) leaves no job running for nobody."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    pid_file = tmp_path / "pids"
    server = subprocess.Popen([sys.executable, "-c", (
        "import time\n"
        "from ui.pool import Pool\n"
        "pool = Pool('server', slots=1, per_user=None, grace_s=60)\n"
        f"pool.submit('spin', 'fake', 'tests.pool_tasks:spin_with_child', {{'pid_file': {str(pid_file)!r}}},\n"
        "            owner='alice', watcher='tab', label='spin')\n"
        "time.sleep(120)\n")], cwd=ROOT)
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60)
        worker_pid, child_pid = map(int, pid_file.read_text().split())
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert wait_until(lambda: gone(worker_pid) and gone(child_pid), timeout=10)
    finally:
        server.kill()
