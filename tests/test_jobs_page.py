"""The job queue as the pages show it (AppTest): the place in the queue, the Cancel button, the
per-user limit, and the sidebar's dataset load in a worker process."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from ui import jobs, state
from ui.pool import CANCELLED

APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


def open_map(path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = "Open a file or folder…"
    at.session_state[state.DATASET_PATH] = str(path)
    at.run()
    return at.switch_page("views/map.py").run()


def blocker(key: str, owner: str):
    """A fake job that holds a slot of the app's pool until cancelled."""
    return jobs._pool.submit(key, "fake", "tests.pool_tasks:sleep", {"seconds": 120}, owner=owner,
                             watcher="<test>", label="a blocking job")


def test_a_waiting_analysis_shows_its_place_and_can_be_cancelled(small_csv, monkeypatch, isolated_workspace):
    monkeypatch.setenv("CARTOGRAPHER_MAX_JOBS", "1")
    holder = blocker("test-blocker", owner="someone else")
    try:
        at = open_map(small_csv)
        assert not at.exception
        texts = [p.proto.text for p in at.get("progress")]
        assert any("Waiting: 1st in the queue (at most 1 background job run at once" in t for t in texts), texts
        # this test's analysis (earlier tests' finished jobs are still listed for a while)
        key = next(k for k in jobs.keys() if k.startswith(str(isolated_workspace)))
        waiting = jobs.get(key)
        assert waiting.state == "queued" and waiting.watchers  # this tab follows it
        at.button(key="analysis_cancel").click().run()
        assert waiting.state == CANCELLED and waiting.error == "Cancelled by a user."
        assert any("The analysis was stopped. Cancelled by a user." in i.value for i in at.info)
        assert at.button(key="analysis_retry")  # and it can be started again
    finally:
        jobs._pool.cancel(holder)


def test_one_job_too_many_for_a_user_is_refused_with_a_message(small_csv, monkeypatch):
    monkeypatch.setenv("CARTOGRAPHER_MAX_JOBS_PER_USER", "1")
    monkeypatch.setattr(jobs, "user_key", lambda: "user:alice")
    holder = blocker("alice-blocker", owner="user:alice")
    try:
        at = open_map(small_csv)
        assert not at.exception
        warnings = " ".join(w.value for w in at.warning)
        assert "You already have 1 background job running or waiting (a blocking job)" in warnings
        assert "the most this server allows per user (1)" in warnings
        assert [k for k in jobs.keys() if not jobs.get(k).done] == ["alice-blocker"]  # nothing was queued
    finally:
        jobs._pool.cancel(holder)


def test_the_sidebar_loads_in_a_worker_and_keeps_its_messages(tmp_path):
    path = tmp_path / "gaps.csv"
    pd.DataFrame({"text": [f"row {i}" for i in range(10)],
                  "label": ["a", "b", None, "a", "b", "a", None, "b", "a", "b"]}).to_csv(path, index=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = "Open a file or folder…"
    at.session_state[state.DATASET_PATH] = str(path)
    at.run()
    assert not at.exception
    assert any("2" in e.value and "label" in e.value for e in at.sidebar.error)
    at.sidebar.button(key="drop_missing_button").click().run()
    assert not at.exception
    dataset = at.session_state[state.DATASET]
    assert dataset.n_examples == 8
    assert jobs._loads.keys() == []  # the finished load was dropped; its dataset is cached


def test_a_load_that_does_not_finish_in_time_is_stopped_with_a_message(tmp_path, monkeypatch):
    from analytics.datasets import DatasetError

    monkeypatch.setattr(jobs, "LOAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr("ui.jobs._loads.submit", _slow_submit(jobs._loads.submit))
    with pytest.raises(DatasetError, match="did not finish: Stopped after 0 s, the time limit"):
        jobs.load_dataset("/nowhere.csv", {}, False, "utf-8", key=("slow",))


def _slow_submit(submit):
    """The loads pool's submit, running a sleeping job instead of the loader."""
    def slow(key, kind, target, payload, **options):
        return submit(key, kind, "tests.pool_tasks:sleep", {"seconds": 30}, **options)
    return slow
