"""The review store: sessions, the append-only decision log, outcome and conflicts, schema
upgrades, and concurrent writers — on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from analytics import store as store_module
from analytics.store import (
    DATABASE_URL_ENV,
    MAX_NOTE_CHARS,
    SCHEMA_VERSION,
    ReviewError,
    ReviewStore,
    category_of,
)
from tests.conftest_pg import postgres_server, postgres_url  # noqa: F401  (fixtures)

CLASSES = ("cat", "dog", "bird")
ITEMS = [f"e{i}" for i in range(10)]
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def no_database_env(monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    opened = ReviewStore.open(store_url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path):
    opened = ReviewStore.open(f"sqlite:///{tmp_path / 'review.sqlite'}")
    yield opened
    opened.close()


def make_session(store, name="hard cats", **overrides):
    options = dict(owner="olga", fingerprint="fp1", classes=CLASSES, reviewers=("ann", "bob"),
                   source="top 10 by el2n", run="runs/abc", description="check the hardest")
    options.update(overrides)
    return store.create_session(name, ITEMS, **options)


# --------------------------------------------------------------------------- sessions


def test_create_and_read_a_session(store):
    created = make_session(store)
    assert (created.name, created.owner, created.fingerprint) == ("hard cats", "olga", "fp1")
    assert created.classes == CLASSES and created.reviewers == ("ann", "bob")
    assert (created.source, created.run, created.n_items, created.archived) == ("top 10 by el2n", "runs/abc", 10, False)
    assert created.created_at.tzinfo is not None
    assert store.get_session(created.id) == created == store.get_session("hard cats")
    items = store.session_items(created.id)
    assert list(items.columns) == ["position", "example_id"]
    assert items["example_id"].tolist() == ITEMS and items["position"].tolist() == list(range(10))


def test_session_items_keep_order_and_drop_repeats(store):
    created = store.create_session("s", ["b", "a", "b", 3], owner="o", fingerprint="f", classes=["x", "y"])
    assert store.session_items(created.id)["example_id"].tolist() == ["b", "a", "3"]


def test_list_sessions_newest_first_and_by_dataset(store):
    first = make_session(store, "one")
    second = make_session(store, "two", fingerprint="fp2")
    third = make_session(store, "three")
    assert [s.name for s in store.list_sessions()] == ["three", "two", "one"]
    assert [s.id for s in store.list_sessions("fp1")] == [third.id, first.id]
    store.archive_session(second.id, actor="olga")
    assert [s.name for s in store.list_sessions()] == ["three", "one"]
    assert {s.name for s in store.list_sessions(include_archived=True)} == {"one", "two", "three"}


def test_duplicate_session_name_is_refused(store):
    make_session(store)
    with pytest.raises(ReviewError, match="session named 'hard cats' already exists"):
        make_session(store)
    with pytest.raises(ReviewError, match="already exists"):
        make_session(store, "  hard cats  ")


@pytest.mark.parametrize("ids", [[], (), iter([])])
def test_session_on_an_empty_selection_is_refused(store, ids):
    with pytest.raises(ReviewError, match="selection is empty"):
        store.create_session("empty", ids, owner="o", fingerprint="f", classes=CLASSES)


def test_unknown_session_is_reported(store):
    with pytest.raises(ReviewError, match="No review session named 'nope'"):
        store.get_session("nope")
    with pytest.raises(ReviewError, match="No review session with id 999"):
        store.history(999)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reviewer=""), "No acting identity was given"),
        (dict(reviewer="   \t"), "No acting identity was given"),
        (dict(decision="approve"), "Unknown decision 'approve'; use one of keep, drop, relabel, flag"),
        (dict(decision="relabel"), "relabel needs the new label: one of 'cat', 'dog', 'bird'"),
        (dict(decision="relabel", new_label="cow"),
         "Cannot relabel to 'cow': the session has no such class. Valid classes are 'cat', 'dog', 'bird'"),
        (dict(decision="keep", new_label="cat"), "new label .* goes only with the decision 'relabel'"),
        (dict(example_id="e99"), "Example 'e99' is not in session 'hard cats'"),
        (dict(note="x" * 100_000), "note is 100,000 characters long; the limit is 10,000"),
        (dict(note="a\x00b"), "NUL character"),
    ],
    ids=["empty-reviewer", "blank-reviewer", "bad-decision", "relabel-no-label", "relabel-unknown-class",
         "label-without-relabel", "not-in-session", "note-100kb", "nul"],
)
def test_invalid_decisions_are_refused_and_nothing_is_written(store, kwargs, message):
    session = make_session(store)
    call = dict(example_id="e1", reviewer="ann", decision="keep") | kwargs
    example_id, reviewer, decision = call.pop("example_id"), call.pop("reviewer"), call.pop("decision")
    with pytest.raises(ReviewError, match=message):
        store.record_decision(session.id, example_id, reviewer, decision, **call)
    assert store.history(session.id).empty


def test_review_error_is_a_value_error():
    assert issubclass(ReviewError, ValueError)


def test_notes_are_stored_exactly_as_given(store):
    session = make_session(store)
    note = "<script>alert('x')</script> & \"quotes\" — ünïcödé 🐱\nsecond line"
    store.record_decision(session.id, "e1", "ann", "flag", note=note)
    longest = "y" * MAX_NOTE_CHARS
    store.record_decision(session.id, "e2", "ann", "flag", note=longest)
    assert store.history(session.id)["note"].tolist() == [note, longest]


def test_reviewer_names_are_trimmed(store):
    session = make_session(store)
    stored = store.record_decision(session.id, "e1", "  ann ", "keep")
    assert stored.reviewer == "ann"


def test_a_failed_batch_writes_nothing(store):
    session = make_session(store)
    with pytest.raises(ReviewError, match="e404"):
        store.record_decisions(session.id, ["e1", "e2", "e404"], "ann", "keep")
    assert store.history(session.id).empty
    written = store.record_decisions(session.id, ["e1", "e2"], "ann", "drop", origin="lasso on map")
    assert [d.example_id for d in written] == ["e1", "e2"] and written[0].id < written[1].id
    assert store.history(session.id)["origin"].tolist() == ["lasso on map"] * 2


def test_archived_sessions_take_no_decisions(store):
    session = make_session(store)
    store.record_decision(session.id, "e1", "ann", "keep")
    assert store.archive_session(session.id, actor="olga").archived
    with pytest.raises(ReviewError, match="archived"):
        store.record_decision(session.id, "e2", "ann", "keep")
    assert len(store.history(session.id)) == 1


# --------------------------------------------------------------------------- the decision log


def test_a_changed_mind_is_a_new_row(store):
    session = make_session(store)
    first = store.record_decision(session.id, "e1", "ann", "keep", origin="map selection")
    second = store.record_decision(session.id, "e1", "ann", "relabel", new_label="dog", note="it barks")
    assert second.id > first.id and second.category == "relabel:dog"
    history = store.history(session.id)
    assert history["decision"].tolist() == ["keep", "relabel"]
    assert history["new_label"].tolist() == [None, "dog"]
    assert history["kind"].tolist() == ["review", "review"]
    current = store.current_decisions(session.id)
    assert current[["example_id", "reviewer", "decision", "new_label", "note"]].values.tolist() == [
        ["e1", "ann", "relabel", "dog", "it barks"]]


def test_session_version_changes_with_every_decision_and_only_its_sessions(store):
    """The Review page redraws when this changes: every new row (a changed mind, an
    adjudication) must change it, and another session's rows must not."""
    session, other = make_session(store), make_session(store, name="other")
    assert store.session_version(session.id) == (0, 0)
    first = store.record_decision(session.id, "e1", "ann", "keep")
    assert store.session_version(session.id) == (1, first.id)
    store.record_decision(other.id, "e1", "ann", "drop")
    assert store.session_version(session.id) == (1, first.id)
    again = store.record_decision(session.id, "e1", "ann", "keep")  # the same decision again
    assert store.session_version(session.id) == (2, again.id)
    ruling = store.adjudicate(session.id, "e1", "olga", "drop")
    assert store.session_version("hard cats") == (3, ruling.id)


def test_history_and_current_decisions(store):
    session = make_session(store)
    store.record_decision(session.id, "e1", "ann", "keep")
    store.record_decision(session.id, "e2", "bob", "drop")
    store.record_decision(session.id, "e1", "bob", "flag")
    store.record_decision(session.id, "e1", "ann", "drop")
    store.adjudicate(session.id, "e1", "olga", "keep")
    history = store.history(session.id)
    assert history["id"].is_monotonic_increasing and len(history) == 5
    assert list(history.columns) == ["id", "session_id", "example_id", "reviewer", "decision", "new_label",
                                     "note", "origin", "kind", "created_at"]
    assert history["kind"].tolist()[-1] == "adjudication"
    assert store.history(session.id, "e2")["reviewer"].tolist() == ["bob"]
    current = store.current_decisions(session.id)  # latest per reviewer, in id order, no adjudications
    assert current[["example_id", "reviewer", "category"]].values.tolist() == [
        ["e2", "bob", "drop"], ["e1", "bob", "flag"], ["e1", "ann", "drop"]]


def test_decision_log_refuses_update_and_delete_in_the_database(store):
    session = make_session(store)
    store.record_decision(session.id, "e1", "ann", "keep")
    for statement in ("UPDATE decisions SET decision = 'drop'", "DELETE FROM decisions"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql(statement)
    assert store.history(session.id)["decision"].tolist() == ["keep"]


def test_only_the_owner_adjudicates(store):
    session = make_session(store)
    with pytest.raises(ReviewError, match=r"Only the session's owner \(olga\) or an admin may adjudicate; "
                                          r"ann is a reviewer"):
        store.adjudicate(session.id, "e1", "ann", "keep")
    with pytest.raises(ReviewError, match="Cannot relabel to 'fish'"):
        store.adjudicate(session.id, "e1", "olga", "relabel", "fish")
    ruling = store.adjudicate(session.id, "e1", " olga ", "relabel", "bird", note="final")
    assert (ruling.kind, ruling.reviewer, ruling.new_label) == ("adjudication", "olga", "bird")


def test_progress(store):
    session = make_session(store, reviewers=("ann", "bob", "cy"))
    store.record_decisions(session.id, ["e1", "e2", "e3"], "ann", "keep")
    store.record_decision(session.id, "e1", "ann", "drop")  # a changed mind is not a new example
    store.record_decision(session.id, "e4", "bob", "keep")
    store.add_reviewers(session.id, ["dora"], actor="olga")  # invited late, still counted
    store.record_decision(session.id, "e1", "dora", "flag")
    store.adjudicate(session.id, "e5", "olga", "drop")
    progress = store.progress(session.id)
    assert progress.n_items == 10
    assert progress.decided_by_reviewer == {"ann": 3, "bob": 1, "cy": 0, "dora": 1}
    assert progress.decided_by_anyone == 4
    assert progress.adjudicated == 1


def outcome_by_example(store, session_id):
    frame = store.outcome(session_id).set_index("example_id")
    return {i: (row.final_decision, row.new_label, row.decided_by) for i, row in frame.iterrows()}


def test_outcome(store):
    session = make_session(store)
    s = session.id
    store.record_decision(s, "e0", "ann", "keep")
    store.record_decision(s, "e0", "bob", "keep")                          # agree
    store.record_decision(s, "e1", "ann", "relabel", new_label="dog")
    store.record_decision(s, "e1", "bob", "relabel", new_label="dog")      # agree on a relabel
    store.record_decision(s, "e2", "ann", "relabel", new_label="dog")
    store.record_decision(s, "e2", "bob", "relabel", new_label="bird")     # different classes
    store.record_decision(s, "e3", "ann", "keep")
    store.record_decision(s, "e3", "bob", "drop")
    store.adjudicate(s, "e3", "olga", "relabel", "cat")                      # adjudicated conflict
    store.record_decision(s, "e4", "ann", "flag")                           # one reviewer so far
    store.adjudicate(s, "e5", "olga", "drop")                               # adjudication alone
    store.record_decision(s, "e6", "ann", "keep")
    store.record_decision(s, "e6", "bob", "drop")
    store.record_decision(s, "e6", "bob", "keep")                           # mind changed: agree now
    outcome = store.outcome(s)
    assert outcome["example_id"].tolist() == ITEMS
    assert list(outcome.columns) == ["position", "example_id", "final_decision", "new_label", "decided_by",
                                     "n_reviewers", "reviewer_decisions", "needs_adjudication"]
    assert outcome_by_example(store, s) == {
        "e0": ("keep", None, "reviewers"),
        "e1": ("relabel", "dog", "reviewers"),
        "e2": ("conflict", None, ""),
        "e3": ("relabel", "cat", "adjudication"),
        "e4": ("flag", None, "reviewers"),
        "e5": ("drop", None, "adjudication"),
        "e6": ("keep", None, "reviewers"),
        "e7": ("undecided", None, ""), "e8": ("undecided", None, ""), "e9": ("undecided", None, ""),
    }
    row = outcome.set_index("example_id").loc["e2"]
    assert json.loads(row["reviewer_decisions"]) == {"ann": "relabel:dog", "bob": "relabel:bird"}
    assert row["n_reviewers"] == 2 and row["needs_adjudication"]


def test_conflicts(store):
    session = make_session(store, reviewers=("ann", "bob", "cy"))
    s = session.id
    store.record_decision(s, "e1", "ann", "keep")
    store.record_decision(s, "e1", "bob", "drop")
    store.record_decision(s, "e2", "ann", "relabel", new_label="cat")
    store.record_decision(s, "e2", "bob", "relabel", new_label="dog")
    store.record_decision(s, "e3", "ann", "keep")
    store.record_decision(s, "e3", "bob", "keep")
    store.record_decision(s, "e3", "cy", "keep")
    store.record_decision(s, "e4", "ann", "keep")
    store.record_decision(s, "e4", "bob", "drop")
    store.record_decision(s, "e4", "bob", "keep")  # resolved by a changed mind
    conflicts = store.conflicts(s)
    assert list(conflicts.columns) == ["position", "example_id", "n_reviewers", "reviewer_decisions",
                                       "last_decision_id"]
    assert conflicts["example_id"].tolist() == ["e1", "e2"]

    store.adjudicate(s, "e1", "olga", "drop")  # settles e1
    assert store.conflicts(s)["example_id"].tolist() == ["e2"]
    store.record_decision(s, "e1", "cy", "flag")  # a decision after the ruling reopens it
    assert store.conflicts(s)["example_id"].tolist() == ["e1", "e2"]
    assert outcome_by_example(store, s)["e1"] == ("drop", None, "adjudication")  # the ruling stands
    store.adjudicate(s, "e1", "olga", "keep")
    assert store.conflicts(s)["example_id"].tolist() == ["e2"]
    assert outcome_by_example(store, s)["e1"] == ("keep", None, "adjudication")


def test_empty_session_reads(store):
    session = make_session(store)
    assert store.history(session.id).empty and store.current_decisions(session.id).empty
    assert store.conflicts(session.id).empty
    assert set(store.outcome(session.id)["final_decision"]) == {"undecided"}
    assert store.progress(session.id).decided_by_reviewer == {"ann": 0, "bob": 0}
    assert store.decision_counts(session.id) == {}


def test_decision_counts(store):
    session = make_session(store)
    store.record_decisions(session.id, ["e1", "e2"], "ann", "keep")
    store.record_decision(session.id, "e3", "ann", "relabel", new_label="dog")
    store.record_decision(session.id, "e3", "bob", "drop")
    assert store.decision_counts(session.id) == {"ann": {"keep": 2, "relabel:dog": 1}, "bob": {"drop": 1}}


def test_category_of():
    assert category_of("relabel", "cat") == "relabel:cat"
    assert category_of("keep", None) == "keep"


def test_plain_postgresql_urls_use_psycopg(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with ReviewStore.open(plain) as opened:
        assert opened.engine.dialect.driver == "psycopg"
        assert opened.schema_version == SCHEMA_VERSION


# --------------------------------------------------------------------------- SQLite specifics


def test_default_store_lives_in_the_workspace(isolated_workspace):
    with ReviewStore.open() as opened:
        assert opened.engine.url.database == str((isolated_workspace / "review.sqlite").resolve())
    assert (isolated_workspace / "review.sqlite").exists()


def test_environment_variable_overrides_the_default(tmp_path, monkeypatch, isolated_workspace):
    monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{tmp_path / 'team' / 'shared.sqlite'}")
    with ReviewStore.open() as opened:
        make_session(opened)
    assert (tmp_path / "team" / "shared.sqlite").exists()
    assert not (isolated_workspace / "review.sqlite").exists()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_store):
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_guard_the_log(sqlite_store):
    session = make_session(sqlite_store)
    with pytest.raises(sa.exc.IntegrityError):
        with sqlite_store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO decisions (session_id, example_id, reviewer, decision, note, origin, "
                f"created_at, kind) VALUES ({session.id}, 'not-an-item', 'ann', 'keep', '', '', 'now', 'review')")


def test_readers_proceed_while_a_writer_holds_a_transaction(sqlite_store):
    session = make_session(sqlite_store)
    sqlite_store.record_decision(session.id, "e1", "ann", "keep")
    with sqlite_store.engine.connect() as writer:
        writer.execution_options(sqlite_begin="IMMEDIATE")
        with writer.begin():
            writer.exec_driver_sql(
                "INSERT INTO decisions (session_id, example_id, reviewer, decision, note, origin, "
                f"created_at, kind) VALUES ({session.id}, 'e2', 'bob', 'drop', '', '', 'now', 'review')")
            started = time.monotonic()
            assert len(sqlite_store.history(session.id)) == 1  # the uncommitted row is not seen
            assert time.monotonic() - started < 5
    assert len(sqlite_store.history(session.id)) == 2


def test_a_fresh_database_matches_the_current_table_definitions(store):
    inspector = sa.inspect(store.engine)
    for table in store_module._metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name
    assert store.schema_version == SCHEMA_VERSION == len(store_module.MIGRATIONS) >= 2


# --------------------------------------------------------------------------- schema upgrades

V1_SQLITE_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at VARCHAR(40) NOT NULL);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(200) NOT NULL UNIQUE, description TEXT NOT NULL,
    owner VARCHAR(200) NOT NULL, fingerprint TEXT NOT NULL, run TEXT NOT NULL, source TEXT NOT NULL,
    classes TEXT NOT NULL, reviewers TEXT NOT NULL, created_at VARCHAR(40) NOT NULL);
CREATE TABLE session_items (
    session_id INTEGER NOT NULL REFERENCES sessions (id), position INTEGER NOT NULL,
    example_id VARCHAR NOT NULL, PRIMARY KEY (session_id, position),
    CONSTRAINT uq_session_items_example UNIQUE (session_id, example_id));
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session_id INTEGER NOT NULL, example_id VARCHAR NOT NULL,
    reviewer VARCHAR(200) NOT NULL, decision VARCHAR(16) NOT NULL, new_label TEXT, note TEXT NOT NULL,
    origin TEXT NOT NULL, created_at VARCHAR(40) NOT NULL, kind VARCHAR(16) NOT NULL,
    CONSTRAINT fk_decisions_item FOREIGN KEY (session_id, example_id)
        REFERENCES session_items (session_id, example_id),
    CONSTRAINT ck_decisions_decision CHECK (decision IN ('keep', 'drop', 'relabel', 'flag')),
    CONSTRAINT ck_decisions_kind CHECK (kind IN ('review', 'adjudication')),
    CONSTRAINT ck_decisions_new_label CHECK ((decision = 'relabel') = (new_label IS NOT NULL)));
"""

V1_DATA = [
    "INSERT INTO schema_version VALUES (1, '2026-01-05T10:00:00.000000+00:00')",
    "INSERT INTO sessions (id, name, description, owner, fingerprint, run, source, classes, reviewers, created_at) "
    "VALUES (1, 'legacy', 'made by v1', 'olga', 'fp-old', 'runs/old', 'cluster 3', '[\"cat\", \"dog\"]', "
    "'[\"ann\", \"bob\"]', '2026-01-05T10:01:00.000000+00:00')",
    "INSERT INTO session_items VALUES (1, 0, 'a'), (1, 1, 'b'), (1, 2, 'c')",
    "INSERT INTO decisions (session_id, example_id, reviewer, decision, new_label, note, origin, created_at, kind) "
    "VALUES (1, 'a', 'ann', 'keep', NULL, 'fine', 'map', '2026-01-05T10:02:00.000000+00:00', 'review'), "
    "(1, 'a', 'bob', 'relabel', 'dog', '', 'map', '2026-01-05T10:03:00.000000+00:00', 'review'), "
    "(1, 'b', 'ann', 'drop', NULL, '<b>dup</b>', 'list', '2026-01-05T10:04:00.000000+00:00', 'review'), "
    "(1, 'a', 'olga', 'relabel', 'dog', 'ruling', 'adjudication', '2026-01-05T10:05:00.000000+00:00', 'adjudication')",
]


def check_upgraded_v1_data(opened):
    assert opened.schema_version == SCHEMA_VERSION
    legacy = opened.get_session("legacy")
    assert (legacy.id, legacy.owner, legacy.classes, legacy.reviewers, legacy.source, legacy.n_items) == (
        1, "olga", ("cat", "dog"), ("ann", "bob"), "cluster 3", 3)
    assert legacy.archived is False  # the v2 column, filled in for old rows
    history = opened.history(legacy.id)
    assert history[["example_id", "reviewer", "decision", "note"]].values.tolist() == [["a", "ann", "keep", "fine"], ["a", "bob", "relabel", ""],
                                         ["b", "ann", "drop", "<b>dup</b>"], ["a", "olga", "relabel", "ruling"]]
    assert outcome_by_example(opened, legacy.id) == {
        "a": ("relabel", "dog", "adjudication"), "b": ("drop", None, "reviewers"), "c": ("undecided", None, "")}
    # The upgraded database works as a current one: new rows continue the ids, the log is append-only.
    added = opened.record_decision(legacy.id, "c", "ann", "keep")
    assert added.id == 5
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with opened.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM decisions")
    with opened.engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY version").scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def build_v1_sqlite(path):
    """A version 1 database written by hand, as the first release would have left it."""
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SQLITE_SCHEMA)
        for statement in V1_DATA:
            conn.execute(statement)
    conn.close()


def test_a_hand_built_version_1_sqlite_database_is_upgraded_with_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    build_v1_sqlite(path)
    with ReviewStore.open(f"sqlite:///{path}") as opened:
        check_upgraded_v1_data(opened)
    with ReviewStore.open(f"sqlite:///{path}") as reopened:  # opening again changes nothing
        assert len(reopened.history("legacy")) == 5


def test_a_version_1_database_is_upgraded_on_both_backends(store_url):
    engine = store_module._make_engine(store_url)
    try:
        store_module._upgrade(engine, target=1)
        with engine.begin() as conn:
            assert "archived" not in {c["name"] for c in sa.inspect(conn).get_columns("sessions")}
            for statement in V1_DATA[1:]:
                conn.exec_driver_sql(statement)
            if conn.dialect.name == "postgresql":  # explicit ids above did not advance the sequences
                conn.exec_driver_sql("SELECT setval('sessions_id_seq', 1)")
                conn.exec_driver_sql("SELECT setval('decisions_id_seq', 4)")
    finally:
        engine.dispose()
    with ReviewStore.open(store_url) as opened:
        check_upgraded_v1_data(opened)


def test_a_failing_upgrade_rolls_back_and_keeps_the_data(tmp_path, monkeypatch):
    path = tmp_path / "old.sqlite"
    build_v1_sqlite(path)

    def broken_v2(conn):
        store_module._v2_archive_and_append_only(conn)
        raise RuntimeError("disk on fire half way through the upgrade")

    monkeypatch.setattr(store_module, "MIGRATIONS", (store_module._v1_base_tables, broken_v2))
    with pytest.raises(RuntimeError, match="disk on fire"):
        ReviewStore.open(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
        assert "archived" not in [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (4,)
    conn.close()
    monkeypatch.undo()
    with ReviewStore.open(f"sqlite:///{path}") as opened:
        check_upgraded_v1_data(opened)


def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "future.sqlite"
    ReviewStore.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'later')")
    conn.close()
    with pytest.raises(ReviewError, match="schema version 99, newer than this app understands"):
        ReviewStore.open(f"sqlite:///{path}")


def test_review_tables_without_a_version_are_refused(tmp_path):
    path = tmp_path / "foreign.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("INSERT INTO sessions VALUES (1, 'someone else''s')")
    conn.close()
    with pytest.raises(ReviewError, match="no schema_version table"):
        ReviewStore.open(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT what FROM sessions").fetchall() == [("someone else's",)]
    conn.close()


# --------------------------------------------------------------------------- concurrency

N_WRITERS, N_DECISIONS = 8, 500
_start_together = None  # a Barrier, in each writer process


def _init_writer(barrier):
    global _start_together
    _start_together = barrier


def _write_decisions(url, session_id, writer):
    """In a writer process: wait for the others, then append N_DECISIONS decisions one by one,
    each in its own transaction; return their ids."""
    opened = ReviewStore.open(url)
    _start_together.wait(120)
    ids = [opened.record_decision(session_id, ITEMS[(writer + i) % len(ITEMS)], f"writer{writer}",
                                  ("keep", "drop", "flag")[i % 3], note=f"{writer}:{i}", origin="concurrency").id
           for i in range(N_DECISIONS)]
    opened.close()
    return ids


@pytest.fixture(scope="module")
def writer_pool():
    """N_WRITERS spawned processes, started once and shared by both backends' tests (starting
    a fresh interpreter costs about a second each on a busy machine)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(N_WRITERS, initializer=_init_writer, initargs=(context.Barrier(N_WRITERS),)) as pool:
        yield pool


def _open_together(url):
    """In a writer process: open (and so create or upgrade) the store at the same moment as the
    others."""
    _start_together.wait(120)
    with ReviewStore.open(url) as opened:
        return opened.schema_version


def test_concurrent_first_opens_create_the_schema_once(store_url, writer_pool):
    assert writer_pool.map(_open_together, [store_url] * N_WRITERS, chunksize=1) == [SCHEMA_VERSION] * N_WRITERS
    with ReviewStore.open(store_url) as opened, opened.engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY version").scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def _hold_an_uncommitted_insert(url, session_id, ready):
    """Child process: insert a row inside a transaction and wait, never committing."""
    opened = ReviewStore.open(url)
    conn = opened.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
    conn.begin()
    conn.exec_driver_sql(
        "INSERT INTO decisions (session_id, example_id, reviewer, decision, note, origin, created_at, kind) "
        f"VALUES ({session_id}, 'e1', 'ghost', 'drop', 'uncommitted', '', 'now', 'review')")
    ready.set()
    time.sleep(600)


def test_concurrent_writers_lose_nothing(store_url, writer_pool):
    with ReviewStore.open(store_url) as opened:
        session = make_session(opened, reviewers=[f"writer{k}" for k in range(N_WRITERS)])
    # One task per process: each blocks on the barrier until all eight have started writing.
    returned = writer_pool.starmap(_write_decisions, [(store_url, session.id, k) for k in range(N_WRITERS)],
                                   chunksize=1)
    with ReviewStore.open(store_url) as opened:
        history = opened.history(session.id)
    assert len(history) == N_WRITERS * N_DECISIONS
    assert history["id"].is_unique
    assert sorted(history["id"]) == sorted(i for ids in returned for i in ids)
    assert set(history["note"]) == {f"{k}:{i}" for k in range(N_WRITERS) for i in range(N_DECISIONS)}
    assert (history.groupby("reviewer").size() == N_DECISIONS).all()


def test_a_writer_killed_mid_transaction_leaves_no_partial_row(store_url):
    with ReviewStore.open(store_url) as opened:
        session = make_session(opened)
        opened.record_decision(session.id, "e1", "ann", "keep")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_hold_an_uncommitted_insert, args=(store_url, session.id, ready))
    child.start()
    try:
        assert ready.wait(120), "the child never began its transaction"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with ReviewStore.open(store_url) as opened:
        # The killed writer's lock is gone: a new write goes through at once.
        started = time.monotonic()
        opened.record_decision(session.id, "e2", "bob", "drop")
        assert time.monotonic() - started < 10
        history = opened.history(session.id)
        assert history["reviewer"].tolist() == ["ann", "bob"]
        assert "uncommitted" not in set(history["note"])
        if opened.engine.dialect.name == "sqlite":
            with opened.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_history_is_a_plain_dataframe(store):
    session = make_session(store)
    store.record_decision(session.id, "e1", "ann", "keep")
    history = store.history(session.id)
    assert isinstance(history, pd.DataFrame)
    assert str(history["created_at"].dt.tz) == "UTC"
    assert history["id"].dtype == "int64"


# --------------------------------------------------------------------------- roles (issue 12)


@pytest.fixture
def team_store(store_url):
    """A team server's store: no grant means viewer; "root" is an admin by configuration."""
    opened = ReviewStore.open(store_url, admins=["Root"], default_role="viewer")
    opened.grant_role("alice", "reviewer", actor="root")
    opened.grant_role("carol", "reviewer", actor="root")
    yield opened
    opened.close()


def alice_and_carol(store):
    return store.create_session("alice's", ITEMS, owner="alice", fingerprint="fp1", classes=CLASSES,
                                reviewers=["carol"])


def test_only_listed_reviewers_and_the_owner_decide(store):
    session = store.create_session("alice's", ITEMS, owner="alice", fingerprint="fp1", classes=CLASSES,
                                   reviewers=["carol"])
    with pytest.raises(ReviewError, match=r"mallory is not a reviewer of session 'alice's' \(owner alice; "
                                          r"reviewers: carol\); nothing was recorded"):
        store.record_decision(session.id, "e1", "mallory", "drop")
    with pytest.raises(ReviewError, match="mallory is not a reviewer"):
        store.record_decisions(session.id, ["e1", "e2"], "mallory", "drop")
    assert store.history(session.id).empty
    store.record_decision(session.id, "e1", "carol", "keep")
    store.record_decision(session.id, "e1", "alice", "drop")
    assert store.history(session.id)["reviewer"].tolist() == ["carol", "alice"]


def test_an_empty_reviewer_list_leaves_only_the_owner(store):
    session = store.create_session("solo", ITEMS, owner="ana", fingerprint="fp1", classes=CLASSES)
    store.record_decision(session.id, "e1", "ana", "keep")
    with pytest.raises(ReviewError, match="bob is not a reviewer of session 'solo' .*reviewers: none besides"):
        store.record_decision(session.id, "e1", "bob", "keep")


def test_a_reviewer_cannot_adjudicate_the_owner_and_an_admin_can(team_store):
    session = alice_and_carol(team_store)
    with pytest.raises(ReviewError, match=r"Only the session's owner \(alice\) or an admin may adjudicate; "
                                          r"carol is a reviewer"):
        team_store.adjudicate(session.id, "e1", "carol", "drop")
    with pytest.raises(ReviewError, match="mallory is a viewer"):
        team_store.adjudicate(session.id, "e1", "mallory", "drop")
    assert team_store.history(session.id).empty
    assert team_store.adjudicate(session.id, "e1", "alice", "keep").reviewer == "alice"
    assert team_store.adjudicate(session.id, "e2", "ROOT", "drop").reviewer == "root"
    # an admin adjudicates but does not review unless listed
    with pytest.raises(ReviewError, match="root is not a reviewer"):
        team_store.record_decision(session.id, "e1", "root", "keep")


def test_names_are_normalised_so_case_and_width_do_not_make_a_second_person(store):
    session = store.create_session("s", ITEMS, owner="  Alice ", fingerprint="fp1", classes=CLASSES,
                                   reviewers=["Carol", "CAROL", "ｃａｒｏｌ"])
    assert (session.owner, session.reviewers) == ("alice", ("carol",))
    store.record_decision(session.id, "e1", "ALICE", "keep")
    store.record_decision(session.id, "e2", "ｃａｒｏｌ", "drop")  # full-width letters: NFKC
    assert store.history(session.id)["reviewer"].tolist() == ["alice", "carol"]
    assert store.adjudicate(session.id, "e3", "Alice", "keep").reviewer == "alice"
    assert set(store.progress(session.id).decided_by_reviewer) == {"alice", "carol"}


def test_a_cyrillic_look_alike_is_refused(store):
    lookalike = "\u0430lice"  # Cyrillic "а" followed by Latin "lice"
    session = store.create_session("s", ITEMS, owner="alice", fingerprint="fp1", classes=CLASSES)
    with pytest.raises(ReviewError, match="mixes letters of several scripts"):
        store.record_decision(session.id, "e1", lookalike, "keep")
    with pytest.raises(ReviewError, match="mixes letters of several scripts"):
        store.adjudicate(session.id, "e1", lookalike, "keep")
    with pytest.raises(ReviewError, match="mixes letters of several scripts"):
        store.create_session("t", ITEMS, owner="bob", fingerprint="fp1", classes=CLASSES, reviewers=[lookalike])
    assert store.history(session.id).empty
    assert [s.name for s in store.list_sessions()] == ["s"]


def test_a_blank_actor_writes_nothing(store):
    session = make_session(store)
    for actor in ("", "  ", None):
        with pytest.raises(ReviewError, match="No acting identity was given"):
            store.record_decision(session.id, "e1", actor, "keep")
        with pytest.raises(ReviewError, match="No acting identity"):
            store.create_session(f"by {actor!r}", ITEMS, owner=actor, fingerprint="fp1", classes=CLASSES)
        with pytest.raises(ReviewError, match="No acting identity"):
            store.export_snapshot(session.id, actor=actor)
    assert store.history(session.id).empty and len(store.list_sessions()) == 1


def test_viewers_read_but_cannot_create_export_or_be_granted_by_a_non_admin(team_store):
    session = alice_and_carol(team_store)
    team_store.record_decision(session.id, "e1", "carol", "keep")
    assert team_store.team_role("mallory") == "viewer"
    assert team_store.session_role(session.id, "mallory") == "viewer"
    assert len(team_store.history(session.id)) == 1  # viewers read
    with pytest.raises(ReviewError, match="mallory is a viewer and may not export session 'alice's'"):
        team_store.export_snapshot(session.id, actor="mallory")
    with pytest.raises(ReviewError, match="mallory is a viewer and may not rename clusters"):
        team_store.authorize("mallory", action="rename clusters")
    with pytest.raises(ReviewError, match="mallory is a viewer and may not create review sessions"):
        team_store.create_session("mine", ITEMS, owner="mallory", fingerprint="fp1", classes=CLASSES)
    with pytest.raises(ReviewError, match="alice is a reviewer and may not grant or revoke roles"):
        team_store.grant_role("mallory", "reviewer", actor="alice")
    assert team_store.export_snapshot(session.id, actor="Carol").actor == "carol"
    assert team_store.authorize("alice", action="rename clusters") == "alice"


def test_admins_grant_and_revoke_roles_and_the_log_is_append_only(team_store):
    team_store.grant_role("Mallory", "reviewer", actor="root")
    assert team_store.team_role("mallory") == "reviewer"
    team_store.grant_role("dave", "admin", actor="root")
    team_store.grant_role("erin", "reviewer", actor="dave")  # a granted admin grants too
    team_store.revoke_role("mallory", actor="root")
    assert team_store.team_role("mallory") == "viewer"
    team = team_store.team()
    assert team[["identity", "role", "granted_by"]].values.tolist() == [
        ["root", "admin", "configuration"], ["alice", "reviewer", "root"], ["carol", "reviewer", "root"],
        ["dave", "admin", "root"], ["erin", "reviewer", "dave"]]
    with pytest.raises(ReviewError, match="Unknown role 'owner'"):
        team_store.grant_role("erin", "owner", actor="root")
    with pytest.raises(ReviewError, match="admin by the server's configuration"):
        team_store.revoke_role("root", actor="dave")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with team_store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE role_grants SET role = 'admin'")


def test_local_mode_lets_a_typed_name_create_but_still_enforces_the_reviewer_list(store):
    assert store.default_role == "reviewer" and store.team_role("anyone") == "reviewer"
    session = alice_and_carol(store)
    with pytest.raises(ReviewError, match="mallory is not a reviewer"):
        store.record_decision(session.id, "e1", "mallory", "keep")
    with pytest.raises(ReviewError, match="may not change the reviewers: that needs the role owner"):
        store.add_reviewers(session.id, ["mallory"], actor="mallory")
    store.add_reviewers(session.id, ["Mallory"], actor="alice")
    assert store.record_decision(session.id, "e1", "mallory", "keep").reviewer == "mallory"


def test_admins_come_from_the_environment(store_url, monkeypatch):
    monkeypatch.setenv("CARTOGRAPHER_ADMINS", "Root, ops@example.org")
    with ReviewStore.open(store_url, default_role="viewer") as opened:
        assert opened.admins == {"root", "ops@example.org"}
        assert opened.team_role("OPS@example.org") == "admin"
