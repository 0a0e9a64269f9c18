"""The review store: team review sessions and their append-only decision log, in SQL.

A *session* is a fixed list of examples (a selection, a filter, a cluster, a data-map region,
the top of a score) that named reviewers go through. Each reviewer records a decision per
example — ``keep``, ``drop``, ``relabel`` (to one of the session's classes) or ``flag`` —
and the session's owner adjudicates where reviewers disagree.

Decisions are never updated or deleted: a changed mind is a new row, and a reviewer's
*current* decision on an example is their latest row (by id). From schema version 2 on the
database itself refuses ``UPDATE`` and ``DELETE`` on the decision log (triggers).

Where it lives: a SQLite file ``review.sqlite`` in the workspace folder by default (WAL
journal, so readers never wait for a writer; a 30 s busy timeout; foreign keys on), or any
SQLAlchemy URL — a PostgreSQL server for a team — given to :meth:`ReviewStore.open` or in the
``CARTOGRAPHER_DATABASE_URL`` environment variable.

The schema is versioned (table ``schema_version``, one row per applied migration) and
upgraded in place, in one transaction, when a store is opened by newer code: nothing is ever
dropped. A database written by *newer* code is refused rather than guessed at.

Every write is one transaction, so a writer killed half way leaves no partial row.

Who may do what is enforced here, not only in the page. Every write names its acting identity
(normalised by :func:`analytics.access.normalize_identity`: NFKC, case-folded, mixed-script
look-alikes refused), and a blank or unknown actor writes nothing:

- *admins* (``CARTOGRAPHER_ADMINS``, or granted) grant and revoke team roles, adjudicate and
  archive any session;
- a session's *owner* (its creator) and its listed *reviewers* record decisions in it; nobody
  else does;
- only the owner or an admin adjudicates;
- *viewers* read; creating sessions, exporting and renaming clusters need the team role
  ``reviewer`` or above (:meth:`ReviewStore.authorize`).

Team roles are an append-only log (table ``role_grants``, schema version 3): a person's role is
their latest grant, else the store's ``default_role`` (``reviewer`` for a one-person local app,
``viewer`` on a team server with sign-in).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from analytics.access import ADMINS_ENV, AccessError, normalize_identity
from analytics.agreement import decision_categories
from analytics.names import DECISIONS, category_of
from analytics.workspace import Workspace

__all__ = [
    "ADJUDICATION",
    "ADMIN",
    "DATABASE_URL_ENV",
    "DECISIONS",
    "DEFAULT_DB_NAME",
    "MAX_NOTE_CHARS",
    "OWNER",
    "REVIEW",
    "REVIEWER",
    "SCHEMA_VERSION",
    "TEAM_ROLES",
    "VIEWER",
    "Decision",
    "Progress",
    "ReviewError",
    "ReviewSession",
    "ReviewStore",
    "SessionSnapshot",
    "category_of",
]

DATABASE_URL_ENV = "CARTOGRAPHER_DATABASE_URL"
DEFAULT_DB_NAME = "review.sqlite"
# The four decisions a reviewer can record (DECISIONS) and a decision as one category
# (category_of) are declared in analytics.names and re-exported here.
#: Kinds of decision rows: a reviewer's review, or the session owner's adjudication.
REVIEW, ADJUDICATION = "review", "adjudication"
MAX_NOTE_CHARS = 10_000
#: Roles, weakest first. ``owner`` is per session (its creator); the others are team roles.
VIEWER, REVIEWER, OWNER, ADMIN = "viewer", "reviewer", "owner", "admin"
#: Roles an admin can grant (the team roles).
TEAM_ROLES = (VIEWER, REVIEWER, ADMIN)
_RANK = {VIEWER: 0, REVIEWER: 1, OWNER: 2, ADMIN: 3}
_REVOKED = "none"
_MAX_NAME_CHARS = 200
_BUSY_TIMEOUT_S = 30
# Key of the PostgreSQL advisory lock that serialises concurrent schema upgrades.
_MIGRATION_LOCK_KEY = 0x0CA27060


class ReviewError(ValueError):
    """A review request cannot be carried out; the message says what is wrong."""


@dataclass(frozen=True)
class ReviewSession:
    """One review session (see :meth:`ReviewStore.create_session`)."""

    id: int
    name: str
    description: str
    owner: str
    fingerprint: str
    run: str
    source: str
    classes: tuple[str, ...]
    reviewers: tuple[str, ...]
    created_at: datetime
    archived: bool
    n_items: int


@dataclass(frozen=True)
class Decision:
    """One row of the decision log."""

    id: int
    session_id: int
    example_id: str
    reviewer: str
    decision: str
    new_label: str | None
    note: str
    origin: str
    kind: str
    created_at: datetime

    @property
    def category(self) -> str:
        """``keep``, ``drop``, ``flag`` or ``relabel:<class>``."""
        return category_of(self.decision, self.new_label)


@dataclass(frozen=True)
class Progress:
    """How far a session's review has come.

    Attributes
    ----------
    n_items : int
        Examples in the session.
    decided_by_reviewer : dict of str to int
        Examples each reviewer has a decision on: every invited reviewer (0 when they have not
        started) and anyone else who recorded one.
    decided_by_anyone : int
        Examples with at least one reviewer decision.
    adjudicated : int
        Examples the owner has adjudicated.
    """

    n_items: int
    decided_by_reviewer: dict[str, int]
    decided_by_anyone: int
    adjudicated: int


@dataclass(frozen=True)
class SessionSnapshot:
    """A session's outcome and decision counts read in one transaction (one snapshot), so an
    export and its manifest agree even while reviewers keep writing.

    Attributes
    ----------
    session : ReviewSession
    outcome : DataFrame
        As :meth:`ReviewStore.outcome`.
    decision_counts : dict
        As :meth:`ReviewStore.decision_counts`.
    actor : str
        The normalised identity that read it (the exporter).
    """

    session: ReviewSession
    outcome: pd.DataFrame
    decision_counts: dict[str, dict[str, int]]
    actor: str


# --------------------------------------------------------------------------- schema

# The current layout, for queries. The migrations below create it; a test checks that a fresh
# database matches these definitions.
_metadata = sa.MetaData()

SCHEMA_VERSION_TABLE = sa.Table(
    "schema_version", _metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)
SESSIONS = sa.Table(
    "sessions", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(_MAX_NAME_CHARS), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("owner", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("run", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("classes", sa.Text, nullable=False),  # JSON list of str
    sa.Column("reviewers", sa.Text, nullable=False),  # JSON list of str
    sa.Column("created_at", sa.String(40), nullable=False),  # UTC ISO 8601
    sa.Column("archived", sa.Boolean, nullable=False, default=False),  # since v2
    sqlite_autoincrement=True,
)
SESSION_ITEMS = sa.Table(
    "session_items", _metadata,
    sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("example_id", sa.String, nullable=False),
    sa.UniqueConstraint("session_id", "example_id", name="uq_session_items_example"),
)
DECISIONS_TABLE = sa.Table(
    "decisions", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("session_id", sa.Integer, nullable=False),
    sa.Column("example_id", sa.String, nullable=False),
    sa.Column("reviewer", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("new_label", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("origin", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    # The example must be one of the session's items (this also implies the session exists).
    sa.ForeignKeyConstraint(["session_id", "example_id"],
                            ["session_items.session_id", "session_items.example_id"],
                            name="fk_decisions_item"),
    sa.CheckConstraint("decision IN ('keep', 'drop', 'relabel', 'flag')", name="ck_decisions_decision"),
    sa.CheckConstraint("kind IN ('review', 'adjudication')", name="ck_decisions_kind"),
    sa.CheckConstraint("(decision = 'relabel') = (new_label IS NOT NULL)", name="ck_decisions_new_label"),
    sqlite_autoincrement=True,
)
ROLE_GRANTS = sa.Table(
    "role_grants", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("granted_by", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.CheckConstraint("role IN ('viewer', 'reviewer', 'admin', 'none')", name="ck_role_grants_role"),
    sqlite_autoincrement=True,
)


def _v1_base_tables(conn: Connection) -> None:
    """Version 1: sessions, their items, and the decision log.

    Spelled out here rather than taken from the current tables, so that it keeps creating
    exactly the version 1 layout when later versions change those tables."""
    v1 = sa.MetaData()
    sa.Table(
        "sessions", v1,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("run", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("classes", sa.Text, nullable=False),
        sa.Column("reviewers", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "session_items", v1,
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("example_id", sa.String, nullable=False),
        sa.UniqueConstraint("session_id", "example_id", name="uq_session_items_example"),
    )
    sa.Table(
        "decisions", v1,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, nullable=False),
        sa.Column("example_id", sa.String, nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("new_label", sa.Text, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["session_id", "example_id"],
                                ["session_items.session_id", "session_items.example_id"],
                                name="fk_decisions_item"),
        sa.CheckConstraint("decision IN ('keep', 'drop', 'relabel', 'flag')", name="ck_decisions_decision"),
        sa.CheckConstraint("kind IN ('review', 'adjudication')", name="ck_decisions_kind"),
        sa.CheckConstraint("(decision = 'relabel') = (new_label IS NOT NULL)", name="ck_decisions_new_label"),
        sqlite_autoincrement=True,
    )
    v1.create_all(conn)


def _v2_archive_and_append_only(conn: Connection) -> None:
    """Version 2: ``sessions.archived``, an index for per-example look-ups, and triggers that
    make the decision log append-only in the database itself."""
    archived = sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false())
    column_ddl = sa.schema.CreateColumn(archived).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE sessions ADD COLUMN {column_ddl}")
    conn.exec_driver_sql(
        "CREATE INDEX ix_decisions_session_example ON decisions (session_id, example_id, id)")
    message = "decisions are append-only; record a new decision instead"
    if conn.dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER decisions_no_{event.lower()} BEFORE {event} ON decisions "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE FUNCTION cartographer_decisions_append_only() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$")
        conn.exec_driver_sql(
            "CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions "
            "FOR EACH ROW EXECUTE FUNCTION cartographer_decisions_append_only()")
        conn.exec_driver_sql(
            "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
            "FOR EACH STATEMENT EXECUTE FUNCTION cartographer_decisions_append_only()")


def _v3_team_roles(conn: Connection) -> None:
    """Version 3: ``role_grants``, the append-only log of team roles (a revoke is a row with
    role ``none``)."""
    v3 = sa.MetaData()
    sa.Table(
        "role_grants", v3,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("identity", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'reviewer', 'admin', 'none')", name="ck_role_grants_role"),
        sqlite_autoincrement=True,
    )
    v3.create_all(conn)
    conn.exec_driver_sql("CREATE INDEX ix_role_grants_identity ON role_grants (identity, id)")
    message = "role grants are append-only; grant again instead"
    if conn.dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER role_grants_no_{event.lower()} BEFORE {event} ON role_grants "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE FUNCTION cartographer_role_grants_append_only() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$")
        conn.exec_driver_sql(
            "CREATE TRIGGER role_grants_append_only BEFORE UPDATE OR DELETE ON role_grants "
            "FOR EACH ROW EXECUTE FUNCTION cartographer_role_grants_append_only()")


#: Migrations in order: ``MIGRATIONS[k]`` takes a database from version k to k + 1. Append
#: new ones; never edit one that has shipped.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _v1_base_tables,
    _v2_archive_and_append_only,
    _v3_team_roles,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(conn: Connection) -> int:
    """The version of the database on ``conn`` (0 for an empty one)."""
    tables = set(sa.inspect(conn).get_table_names())
    if "schema_version" not in tables:
        ours = tables & {"sessions", "session_items", "decisions"}
        if ours:
            raise ReviewError(
                f"The database has review tables ({', '.join(sorted(ours))}) but no "
                "schema_version table, so its layout is unknown; it was left untouched. "
                "Point the store at another database.")
        return 0
    version = conn.execute(sa.select(sa.func.max(SCHEMA_VERSION_TABLE.c.version))).scalar()
    return int(version or 0)


def _upgrade(engine: Engine, target: int | None = None) -> int:
    """Bring the database to ``target`` (default: the latest) in one transaction; returns the
    version found before.

    Concurrent openers are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
    lock), and each re-reads the version inside its transaction, so a migration runs once.
    """
    wanted = len(MIGRATIONS) if target is None else target
    with engine.connect() as conn:
        # Up to date (the usual case): a plain read, no write lock to wait for.
        found = _schema_version(conn)
        conn.rollback()
        if found == wanted:
            return found
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            found = _schema_version(conn)
            latest = len(MIGRATIONS)
            if found > latest:
                raise ReviewError(
                    f"The review database is at schema version {found}, newer than this app "
                    f"understands ({latest}); it was left untouched. Upgrade Data Cartographer "
                    "to open it.")
            if found == 0:
                SCHEMA_VERSION_TABLE.to_metadata(sa.MetaData()).create(conn, checkfirst=True)
            for version in range(found + 1, wanted + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute(sa.insert(SCHEMA_VERSION_TABLE).values(version=version, applied_at=_now()))
    return found


# --------------------------------------------------------------------------- engines


def _normalise_url(url: str | sa.URL) -> str | sa.URL:
    # SQLAlchemy's default PostgreSQL driver is psycopg2; we ship psycopg (3).
    if isinstance(url, str):
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _make_engine(url: str | sa.URL) -> Engine:
    parsed = sa.make_url(_normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    in_memory = parsed.database in (None, "", ":memory:")
    if not in_memory:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False},
        # One shared connection for an in-memory database, or each would get its own.
        **({"poolclass": sa.pool.StaticPool} if in_memory else {}),
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy emit BEGIN itself (the sqlite3 module's own transaction handling
        # would commit before DDL and delay BEGIN, breaking atomic migrations).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_S * 1000}")
        _set_wal(cursor)
        # In WAL mode NORMAL never corrupts and survives a killed process; only a power cut
        # can lose the last commits. FULL would fsync on every decision.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front (BEGIN IMMEDIATE) so they queue on the busy
        # timeout instead of failing when a read transaction tries to become a write.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _set_wal(cursor) -> None:
    """Switch the file to WAL journalling, retrying while another opener holds the lock.

    SQLite does not call the busy handler for a journal-mode change, so concurrent first opens
    of a new file can get "database is locked" at once; each retries until the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.2)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _default_url(workspace_root: str | Path | None) -> sa.URL:
    root = Path(workspace_root) if workspace_root is not None else Workspace.default().root
    # Built, not formatted, so that a folder name with spaces or '#' needs no escaping.
    return sa.URL.create("sqlite", database=str((Path(root).expanduser() / DEFAULT_DB_NAME).resolve()))


# --------------------------------------------------------------------------- validation


def _clean_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReviewError(f"The {what} name is empty; give a name.")
    value = value.strip()
    if len(value) > _MAX_NAME_CHARS:
        raise ReviewError(f"The {what} name is {len(value):,} characters long; the limit is {_MAX_NAME_CHARS}.")
    _check_text(value, f"the {what} name")
    return value


def _identity(value: object, what: str = "acting") -> str:
    """A person's normalised identity, or :class:`ReviewError` saying why it is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ReviewError(f"No {what} identity was given (nobody is signed in, or the name is empty); "
                          "nothing was written.")
    try:
        return normalize_identity(value)
    except AccessError as exc:
        raise ReviewError(str(exc)) from None


def _stored_identity(value: str) -> str:
    """A name stored before identities were normalised (schema version 2), as compared now."""
    try:
        return normalize_identity(value)
    except AccessError:
        return value.strip()


def _check_text(value: str, what: str) -> None:
    # PostgreSQL text cannot hold NUL, and SQLite would truncate it in some tools.
    if "\x00" in value:
        raise ReviewError(f"{what[0].upper()}{what[1:]} contains a NUL character (\\x00); remove it.")


def _check_note(note: object) -> str:
    if note is None:
        return ""
    if not isinstance(note, str):
        raise ReviewError(f"A note must be text, not {type(note).__name__}.")
    if len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"The note is {len(note):,} characters long; the limit is {MAX_NOTE_CHARS:,}. "
                          "Shorten it or link to a longer document.")
    _check_text(note, "the note")
    return note


def _check_decision(decision: object, new_label: object, classes: Sequence[str]) -> str | None:
    if decision not in DECISIONS:
        raise ReviewError(f"Unknown decision {decision!r}; use one of {', '.join(DECISIONS)}.")
    if decision != "relabel":
        if new_label is not None:
            raise ReviewError(f"A new label ({new_label!r}) goes only with the decision 'relabel', "
                              f"not {decision!r}.")
        return None
    if new_label is None or (isinstance(new_label, str) and not new_label.strip()):
        raise ReviewError(f"A relabel needs the new label: one of {_quote(classes)}.")
    new_label = str(new_label)
    if new_label not in classes:
        raise ReviewError(f"Cannot relabel to {new_label!r}: the session has no such class. "
                          f"Valid classes are {_quote(classes)}.")
    return new_label


def _quote(values: Iterable[str], limit: int = 30) -> str:
    values = [f"'{v}'" for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


# --------------------------------------------------------------------------- the store


_DECISION_COLUMNS = ["id", "session_id", "example_id", "reviewer", "decision", "new_label",
                     "note", "origin", "kind", "created_at"]
_OUTCOME_COLUMNS = ["position", "example_id", "final_decision", "new_label", "decided_by",
                    "n_reviewers", "reviewer_decisions", "needs_adjudication"]
_CONFLICT_COLUMNS = ["position", "example_id", "n_reviewers", "reviewer_decisions", "last_decision_id"]


class ReviewStore:
    """Review sessions and decisions in one SQL database. Open it with :meth:`open`.

    Methods taking ``session`` accept a session id (int) or name (str).
    """

    def __init__(self, engine: Engine, *, admins: Iterable[str] = (), default_role: str = REVIEWER):
        if default_role not in (VIEWER, REVIEWER):
            raise ReviewError(f"default_role must be '{VIEWER}' or '{REVIEWER}', not {default_role!r}.")
        self.engine = engine
        self.admins = frozenset(_identity(a, "admin") for a in admins)
        self.default_role = default_role
        self._sessions: dict[int, ReviewSession] = {}
        self._local = threading.local()  # the connection of a read snapshot, per thread

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, url: str | None = None, workspace_root: str | Path | None = None, *,
             admins: Iterable[str] | None = None, default_role: str = REVIEWER) -> "ReviewStore":
        """Open (creating or upgrading) the review database.

        Parameters
        ----------
        url : str, optional
            A SQLAlchemy URL (``sqlite:///path``, ``postgresql://user@host/db``). Default: the
            ``CARTOGRAPHER_DATABASE_URL`` environment variable, else ``review.sqlite`` in the
            workspace folder.
        workspace_root : str or Path, optional
            Folder of the default SQLite file (default: the workspace root).
        admins : iterable of str, optional
            Identities that are always admins (default: ``CARTOGRAPHER_ADMINS``, comma-separated).
        default_role : {"reviewer", "viewer"}, default "reviewer"
            The team role of someone with no grant: ``reviewer`` for a one-person local app,
            ``viewer`` for a team server with sign-in.

        Raises
        ------
        ReviewError
            When the database was written by a newer version, or holds tables of unknown layout.
        """
        url = url or os.environ.get(DATABASE_URL_ENV) or _default_url(workspace_root)
        if admins is None:
            admins = [part for part in os.environ.get(ADMINS_ENV, "").split(",") if part.strip()]
        admins = tuple(_identity(a, "admin") for a in admins)
        engine = _make_engine(url)
        try:
            _upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, admins=admins, default_role=default_role)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return _schema_version(conn)

    def _write(self) -> Connection:
        """A connection whose transactions take the write lock at once (SQLite)."""
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """The open read snapshot's connection on this thread, else a new connection."""
        snapshot = getattr(self._local, "connection", None)
        if snapshot is not None:
            yield snapshot
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read of this store on this thread inside the ``with`` block sees one snapshot
        of the database: one read transaction (SQLite: ``BEGIN``, whose first read fixes the
        snapshot in WAL mode; PostgreSQL: ``REPEATABLE READ``). Nested blocks share it."""
        if getattr(self._local, "connection", None) is not None:
            yield
            return
        options = ({"isolation_level": "REPEATABLE READ"} if self.engine.dialect.name == "postgresql"
                   else {"sqlite_begin": "DEFERRED"})
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            self._local.connection = conn
            try:
                yield
            finally:
                self._local.connection = None

    # ----------------------------------------------------------------- roles

    def team_role(self, actor: str) -> str:
        """``actor``'s team role: ``admin`` (listed in ``CARTOGRAPHER_ADMINS`` or granted),
        their latest grant, else the store's ``default_role``."""
        identity = _identity(actor)
        if identity in self.admins:
            return ADMIN
        with self._connect() as conn:
            role = conn.execute(sa.select(ROLE_GRANTS.c.role).where(ROLE_GRANTS.c.identity == identity)
                                .order_by(ROLE_GRANTS.c.id.desc()).limit(1)).scalar()
        return self.default_role if role in (None, _REVOKED) else role

    def session_role(self, session: int | str, actor: str) -> str:
        """``actor``'s role in a session: ``admin``, ``owner``, ``reviewer`` (listed) or ``viewer``."""
        found = self._session(session)
        identity = _identity(actor)
        if self.team_role(identity) == ADMIN:
            return ADMIN
        if identity == _stored_identity(found.owner):
            return OWNER
        return REVIEWER if self.is_member(found.id, identity) else VIEWER

    def is_member(self, session: int | str, actor: str) -> bool:
        """``actor`` is the session's owner or one of its listed reviewers: they may decide."""
        found = self._session(session)
        identity = _identity(actor)
        if identity not in _members(found):
            found = self.get_session(found.id)  # reviewers may have been added since it was cached
        return identity in _members(found)

    def authorize(self, actor: str, *, at_least: str = REVIEWER, session: int | str | None = None,
                  action: str = "do this") -> str:
        """``actor``'s normalised identity when their role (in ``session``, else their team role)
        is ``at_least``; :class:`ReviewError` naming the role needed otherwise."""
        identity = _identity(actor)
        role = self.session_role(session, identity) if session is not None else self.team_role(identity)
        if _RANK[role] < _RANK[at_least]:
            where = f" in session '{self._session(session).name}'" if session is not None else ""
            raise ReviewError(f"{identity} is a {role}{where} and may not {action}: that needs the role "
                              f"{at_least} or above. An admin can grant it.")
        return identity

    def grant_role(self, identity: str, role: str, *, actor: str) -> str:
        """Give ``identity`` the team role ``role`` (one of :data:`TEAM_ROLES`); only an admin may.
        Returns the normalised identity."""
        if role not in TEAM_ROLES:
            raise ReviewError(f"Unknown role {role!r}; use one of {', '.join(TEAM_ROLES)}.")
        return self._record_grant(identity, role, actor)

    def revoke_role(self, identity: str, *, actor: str) -> str:
        """Take back ``identity``'s granted role (they fall back to the default role); only an
        admin may."""
        return self._record_grant(identity, _REVOKED, actor)

    def _record_grant(self, identity: str, role: str, actor: str) -> str:
        granted_by = self.authorize(actor, at_least=ADMIN, action="grant or revoke roles")
        identity = _identity(identity, "grantee's")
        if identity in self.admins and role != ADMIN:
            raise ReviewError(f"{identity} is an admin by the server's configuration ({ADMINS_ENV}); "
                              "change it there.")
        with self._write() as conn, conn.begin():
            conn.execute(sa.insert(ROLE_GRANTS).values(identity=identity, role=role, granted_by=granted_by,
                                                       created_at=_now()))
        return identity

    def team(self) -> pd.DataFrame:
        """Current team roles: the configured admins and everyone with a grant in force.

        Columns: identity, role, granted_by (``"configuration"`` for configured admins), granted_at.
        """
        latest = sa.select(sa.func.max(ROLE_GRANTS.c.id).label("id")).group_by(ROLE_GRANTS.c.identity).subquery()
        query = (sa.select(ROLE_GRANTS.c.identity, ROLE_GRANTS.c.role, ROLE_GRANTS.c.granted_by,
                           ROLE_GRANTS.c.created_at)
                 .join(latest, latest.c.id == ROLE_GRANTS.c.id).where(ROLE_GRANTS.c.role != _REVOKED)
                 .order_by(ROLE_GRANTS.c.identity))
        granted = self._frame(query, ["identity", "role", "granted_by", "granted_at"])
        granted = granted[~granted["identity"].isin(self.admins)]
        configured = pd.DataFrame({"identity": sorted(self.admins), "role": ADMIN,
                                   "granted_by": "configuration", "granted_at": ""})
        return pd.concat([configured, granted], ignore_index=True)

    # ----------------------------------------------------------------- sessions

    def create_session(
        self,
        name: str,
        example_ids: Iterable[str],
        *,
        owner: str,
        fingerprint: str,
        classes: Sequence[str],
        description: str = "",
        reviewers: Iterable[str] = (),
        source: str = "",
        run: str = "",
    ) -> ReviewSession:
        """Create a session over ``example_ids`` (kept in order; repeats dropped).

        Parameters
        ----------
        name : str
            Unique across the store.
        example_ids : iterable of str
            The examples to review (dataset ids).
        owner : str
            Who creates it (the acting identity; needs the team role ``reviewer`` or above). The
            owner records decisions and adjudicates.
        fingerprint : str
            The dataset's fingerprint.
        classes : sequence of str
            The dataset's classes: the targets a relabel may use.
        description, source, run : str
            Free text: what the session is for; where its examples came from (``"selection"``,
            ``"cluster 3"``, ``"top 50 by el2n"``); the analysis run (path or key).
        reviewers : iterable of str
            The reviewers: only they and the owner record decisions in the session. Stored
            normalised (``"Alice"`` is ``"alice"``); a look-alike name is refused.
        """
        name = _clean_name(name, "session")
        owner = self.authorize(owner, action="create review sessions")
        if isinstance(reviewers, str):
            raise ReviewError("reviewers must be a list of names, not one string.")
        reviewers = tuple(dict.fromkeys(_identity(r, "reviewer's") for r in reviewers))
        classes = tuple(dict.fromkeys(str(c) for c in classes))
        if not classes or any(not c.strip() for c in classes):
            raise ReviewError("A session needs the dataset's classes (non-empty names), "
                              "so that relabels can be checked.")
        if isinstance(example_ids, str):
            raise ReviewError("example_ids must be a list of ids, not one string.")
        ids = list(dict.fromkeys(str(i) for i in example_ids))
        if not ids:
            raise ReviewError("The selection is empty: a session needs at least one example.")
        if any(not i.strip() for i in ids):
            raise ReviewError("Example ids must not be empty strings.")
        for value, what in ((description, "the description"), (source, "the source"), (run, "the run"),
                            (fingerprint, "the fingerprint"), *((i, "an example id") for i in ids)):
            _check_text(str(value), what)
        row = dict(name=name, description=description or "", owner=owner, fingerprint=str(fingerprint),
                   run=str(run or ""), source=source or "", classes=json.dumps(list(classes)),
                   reviewers=json.dumps(list(reviewers)), created_at=_now(), archived=False)
        try:
            with self._write() as conn, conn.begin():
                if conn.execute(sa.select(SESSIONS.c.id).where(SESSIONS.c.name == name)).first():
                    raise ReviewError(f"A session named '{name}' already exists; choose another name.")
                session_id = conn.execute(sa.insert(SESSIONS).values(**row)).inserted_primary_key[0]
                conn.execute(sa.insert(SESSION_ITEMS), [
                    {"session_id": session_id, "position": position, "example_id": example_id}
                    for position, example_id in enumerate(ids)
                ])
        except sa.exc.IntegrityError as exc:
            # Two creators raced for the same name; the unique constraint decided.
            if self._find_session_id(name) is not None:
                raise ReviewError(f"A session named '{name}' already exists; choose another name.") from None
            raise
        return self.get_session(session_id)

    def list_sessions(self, fingerprint: str | None = None, *, include_archived: bool = False) -> list[ReviewSession]:
        """Sessions, newest first; only those of a dataset when ``fingerprint`` is given."""
        query = _session_query()
        if fingerprint is not None:
            query = query.where(SESSIONS.c.fingerprint == fingerprint)
        if not include_archived:
            query = query.where(SESSIONS.c.archived == sa.false())
        with self._connect() as conn:
            rows = conn.execute(query.order_by(SESSIONS.c.id.desc())).mappings().all()
        return [_session_from_row(row) for row in rows]

    def get_session(self, session: int | str) -> ReviewSession:
        """The session with this id (int) or name (str)."""
        if isinstance(session, ReviewSession):
            session = session.id
        if isinstance(session, (bool, np.bool_)) or not isinstance(session, (int, np.integer, str)):
            raise ReviewError(f"A session is named by its id (int) or name (str), not {session!r}.")
        column = SESSIONS.c.name if isinstance(session, str) else SESSIONS.c.id
        key = session.strip() if isinstance(session, str) else int(session)
        with self._connect() as conn:
            row = conn.execute(_session_query().where(column == key)).mappings().first()
        if row is None:
            raise ReviewError(f"No review session {'named ' if isinstance(session, str) else 'with id '}"
                              f"{session!r}.")
        found = _session_from_row(row)
        self._sessions[found.id] = found
        return found

    def archive_session(self, session: int | str, *, actor: str) -> ReviewSession:
        """Hide a session from :meth:`list_sessions` and refuse new decisions in it (its data
        stays); only its owner or an admin may."""
        found = self.get_session(session)
        self.authorize(actor, at_least=OWNER, session=found.id, action="archive the session")
        with self._write() as conn, conn.begin():
            conn.execute(sa.update(SESSIONS).where(SESSIONS.c.id == found.id).values(archived=True))
        return self.get_session(found.id)

    def add_reviewers(self, session: int | str, names: Iterable[str], *, actor: str) -> ReviewSession:
        """Add reviewers to a session (its owner or an admin may); returns the updated session."""
        found = self.get_session(session)
        self.authorize(actor, at_least=OWNER, session=found.id, action="change the reviewers")
        if isinstance(names, str):
            raise ReviewError("names must be a list of names, not one string.")
        added = [_identity(name, "reviewer's") for name in names]
        with self._write() as conn, conn.begin():
            stored = conn.execute(sa.select(SESSIONS.c.reviewers).where(SESSIONS.c.id == found.id)).scalar()
            reviewers = list(dict.fromkeys([*json.loads(stored), *added]))
            conn.execute(sa.update(SESSIONS).where(SESSIONS.c.id == found.id)
                         .values(reviewers=json.dumps(reviewers)))
        return self.get_session(found.id)

    def session_items(self, session: int | str) -> pd.DataFrame:
        """DataFrame with columns ``position`` and ``example_id``, in session order."""
        session_id = self._session(session).id
        query = (sa.select(SESSION_ITEMS.c.position, SESSION_ITEMS.c.example_id)
                 .where(SESSION_ITEMS.c.session_id == session_id).order_by(SESSION_ITEMS.c.position))
        return self._frame(query, ["position", "example_id"])

    # ----------------------------------------------------------------- writing

    def record_decision(
        self,
        session: int | str,
        example_id: str,
        reviewer: str,
        decision: str,
        *,
        new_label: str | None = None,
        note: str = "",
        origin: str = "",
    ) -> Decision:
        """Append a reviewer's decision on one example; returns the stored row.

        ``reviewer`` is the acting identity: the session's owner or one of its listed reviewers
        (anyone else is refused and nothing is written); it is stored normalised. ``new_label`` is required for ``relabel`` (one of the session's classes) and refused
        otherwise. ``note`` (at most 10,000 characters) is stored as given: escape it when
        showing it. ``origin`` says which view or selection the decision came from.
        """
        return self.record_decisions(session, [example_id], reviewer, decision,
                                     new_label=new_label, note=note, origin=origin)[0]

    def record_decisions(
        self,
        session: int | str,
        example_ids: Iterable[str],
        reviewer: str,
        decision: str,
        *,
        new_label: str | None = None,
        note: str = "",
        origin: str = "",
    ) -> list[Decision]:
        """The same decision on several examples, in one transaction (all or none)."""
        return self._append(session, example_ids, reviewer, decision, new_label=new_label,
                            note=note, origin=origin, kind=REVIEW)

    def adjudicate(
        self,
        session: int | str,
        example_id: str,
        actor: str,
        decision: str,
        new_label: str | None = None,
        note: str = "",
    ) -> Decision:
        """The final word on an example (a row of kind ``adjudication``), by the session's owner
        or an admin (``actor``)."""
        found = self._session(session)
        return self._append(found.id, [example_id], actor, decision, new_label=new_label,
                            note=note, origin="adjudication", kind=ADJUDICATION)[0]

    def _append(self, session, example_ids, reviewer, decision, *, new_label, note, origin, kind) -> list[Decision]:
        found = self._session(session)
        if kind == ADJUDICATION:
            role = self.session_role(found.id, reviewer)
            if role not in (OWNER, ADMIN):
                raise ReviewError(f"Only the session's owner ({found.owner}) or an admin may adjudicate; "
                                  f"{_identity(reviewer)} is a {role} of session '{found.name}'.")
        elif not self.is_member(found.id, reviewer):
            listed = ", ".join(found.reviewers) or "none besides the owner"
            raise ReviewError(f"{_identity(reviewer)} is not a reviewer of session '{found.name}' "
                              f"(owner {found.owner}; reviewers: {listed}); nothing was recorded. "
                              "The owner or an admin can add reviewers.")
        reviewer = _identity(reviewer)
        new_label = _check_decision(decision, new_label, found.classes)
        note = _check_note(note)
        origin = "" if origin is None else str(origin)
        _check_text(origin, "the origin")
        if isinstance(example_ids, str):
            example_ids = [example_ids]
        ids = [str(i) for i in example_ids]
        if not ids:
            raise ReviewError("No examples given to record a decision on.")
        created_at = _now()
        rows = [dict(session_id=found.id, example_id=example_id, reviewer=reviewer, decision=decision,
                     new_label=new_label, note=note, origin=origin, created_at=created_at, kind=kind)
                for example_id in ids]
        unique_ids = list(dict.fromkeys(ids))
        with self._write() as conn, conn.begin():
            present, archived = set(), False
            for start in range(0, len(unique_ids), 500):  # stay under bound-parameter limits
                chunk = unique_ids[start:start + 500]
                for example_id, is_archived in conn.execute(
                    sa.select(SESSION_ITEMS.c.example_id, SESSIONS.c.archived)
                    .join(SESSIONS, SESSIONS.c.id == SESSION_ITEMS.c.session_id)
                    .where(SESSION_ITEMS.c.session_id == found.id, SESSION_ITEMS.c.example_id.in_(chunk))
                ):
                    present.add(example_id)
                    archived = archived or bool(is_archived)
            if archived or not present:
                archived = conn.execute(sa.select(SESSIONS.c.archived).where(SESSIONS.c.id == found.id)).scalar()
            if archived:
                raise ReviewError(f"Session '{found.name}' is archived; it takes no new decisions.")
            missing = [i for i in unique_ids if i not in present]
            if missing:
                raise ReviewError(f"Example {_quote(missing, limit=5)} is not in session '{found.name}'."
                                  if len(missing) == 1 else
                                  f"{len(missing)} examples are not in session '{found.name}': "
                                  f"{_quote(missing, limit=5)}.")
            inserted = conn.execute(sa.insert(DECISIONS_TABLE).returning(DECISIONS_TABLE.c.id,
                                                                         sort_by_parameter_order=True),
                                    rows).scalars().all()
        return [Decision(id=int(decision_id), **{**row, "created_at": _parse_time(created_at)})
                for decision_id, row in zip(inserted, rows)]

    # ----------------------------------------------------------------- reading

    def history(self, session: int | str, example_id: str | None = None) -> pd.DataFrame:
        """Every decision row (reviews and adjudications), oldest first.

        Columns: id, session_id, example_id, reviewer, decision, new_label, note, origin, kind,
        created_at (UTC timestamps).
        """
        session_id = self._session(session).id
        query = sa.select(*[DECISIONS_TABLE.c[c] for c in _DECISION_COLUMNS]).where(
            DECISIONS_TABLE.c.session_id == session_id)
        if example_id is not None:
            query = query.where(DECISIONS_TABLE.c.example_id == str(example_id))
        return self._decisions_frame(query.order_by(DECISIONS_TABLE.c.id))

    def current_decisions(self, session: int | str) -> pd.DataFrame:
        """Each reviewer's latest review of each example (adjudications are left out), in id
        order; columns as :meth:`history` plus ``category``."""
        session_id = self._session(session).id
        latest = (sa.select(sa.func.max(DECISIONS_TABLE.c.id).label("id"))
                  .where(DECISIONS_TABLE.c.session_id == session_id, DECISIONS_TABLE.c.kind == REVIEW)
                  .group_by(DECISIONS_TABLE.c.example_id, DECISIONS_TABLE.c.reviewer).subquery())
        query = (sa.select(*[DECISIONS_TABLE.c[c] for c in _DECISION_COLUMNS])
                 .join(latest, latest.c.id == DECISIONS_TABLE.c.id).order_by(DECISIONS_TABLE.c.id))
        frame = self._decisions_frame(query)
        frame["category"] = _categories(frame)
        return frame

    def latest_adjudications(self, session: int | str) -> pd.DataFrame:
        """The owner's latest adjudication of each adjudicated example; columns as
        :meth:`history` plus ``category``."""
        session_id = self._session(session).id
        latest = (sa.select(sa.func.max(DECISIONS_TABLE.c.id).label("id"))
                  .where(DECISIONS_TABLE.c.session_id == session_id, DECISIONS_TABLE.c.kind == ADJUDICATION)
                  .group_by(DECISIONS_TABLE.c.example_id).subquery())
        query = (sa.select(*[DECISIONS_TABLE.c[c] for c in _DECISION_COLUMNS])
                 .join(latest, latest.c.id == DECISIONS_TABLE.c.id).order_by(DECISIONS_TABLE.c.id))
        frame = self._decisions_frame(query)
        frame["category"] = _categories(frame)
        return frame

    def session_version(self, session: int | str, example_id: str | None = None) -> tuple[int, int]:
        """``(number of decision rows, newest row id)`` of a session, or of one of its examples:
        one cheap query that changes whenever anyone records a decision or an adjudication (the
        log is append-only), so a page can tell whether what it shows is still current."""
        found = self._session(session)
        query = (sa.select(sa.func.count(DECISIONS_TABLE.c.id), sa.func.max(DECISIONS_TABLE.c.id))
                 .where(DECISIONS_TABLE.c.session_id == found.id))
        if example_id is not None:
            query = query.where(DECISIONS_TABLE.c.example_id == str(example_id))
        with self.engine.connect() as conn:
            count, newest = conn.execute(query).one()
        return int(count or 0), int(newest or 0)

    def progress(self, session: int | str) -> Progress:
        """Items, examples decided by each reviewer and by anyone, and adjudicated."""
        found = self._session(session)
        current = self.current_decisions(found.id)
        per_reviewer = current.groupby("reviewer")["example_id"].nunique()
        decided = {reviewer: 0 for reviewer in found.reviewers}
        decided.update({str(k): int(v) for k, v in per_reviewer.items()})
        return Progress(
            n_items=found.n_items,
            decided_by_reviewer=decided,
            decided_by_anyone=int(current["example_id"].nunique()),
            adjudicated=int(self.latest_adjudications(found.id)["example_id"].nunique()),
        )

    def outcome(self, session: int | str) -> pd.DataFrame:
        """The final decision on every example of the session, in session order.

        ``final_decision`` is the owner's latest adjudication when there is one; otherwise the
        reviewers' decision when all who decided agree (category equal: relabels to different
        classes disagree); ``"conflict"`` when they differ; ``"undecided"`` when nobody decided.
        Reviewers who have not decided an example do not count against agreement (see
        :meth:`progress` for who is left).

        Columns: position, example_id, final_decision, new_label (for relabels), decided_by
        (``"adjudication"``, ``"reviewers"`` or ``""``), n_reviewers, reviewer_decisions (compact
        JSON ``{"reviewer": "category"}``), needs_adjudication (reviewers disagree and no
        adjudication is later than their current decisions — see :meth:`conflicts`).
        """
        items = self.session_items(session)
        per_example = self._per_example(session, items)
        return per_example[_OUTCOME_COLUMNS]

    def conflicts(self, session: int | str) -> pd.DataFrame:
        """Examples whose reviewers' current decisions differ (two relabels to different classes
        differ) and that have no adjudication later than those decisions, in session order.

        Columns: position, example_id, n_reviewers, reviewer_decisions, last_decision_id.
        """
        items = self.session_items(session)
        per_example = self._per_example(session, items)
        return per_example.loc[per_example["needs_adjudication"], _CONFLICT_COLUMNS].reset_index(drop=True)

    def decision_counts(self, session: int | str) -> dict[str, dict[str, int]]:
        """``{reviewer: {category: count}}`` over current decisions (for manifests and badges)."""
        current = self.current_decisions(session)
        counts: dict[str, dict[str, int]] = {}
        for (reviewer, category), count in current.groupby(["reviewer", "category"]).size().items():
            counts.setdefault(str(reviewer), {})[str(category)] = int(count)
        return counts

    def export_snapshot(self, session: int | str, *, actor: str) -> SessionSnapshot:
        """The session's outcome and decision counts from one snapshot, for an export and its
        manifest; ``actor`` needs the role ``reviewer`` or above (a session reviewer, its owner,
        or a team reviewer or admin)."""
        found = self.get_session(session)
        identity = _identity(actor)
        if not self.is_member(found.id, identity):
            self.authorize(identity, action=f"export session '{found.name}'")
        with self.read_snapshot():
            return SessionSnapshot(session=self.get_session(found.id), outcome=self.outcome(found.id),
                                   decision_counts=self.decision_counts(found.id), actor=identity)

    # ----------------------------------------------------------------- internals

    def _session(self, session: int | str | ReviewSession) -> ReviewSession:
        """The session, from the cache where possible (classes and owner never change)."""
        if isinstance(session, ReviewSession):
            return session
        if isinstance(session, (int, np.integer)) and not isinstance(session, bool) and int(session) in self._sessions:
            return self._sessions[int(session)]
        return self.get_session(session)

    def _find_session_id(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(SESSIONS.c.id).where(SESSIONS.c.name == name)).scalar()

    def _frame(self, query, columns: list[str]) -> pd.DataFrame:
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=columns)

    def _decisions_frame(self, query) -> pd.DataFrame:
        frame = self._frame(query, _DECISION_COLUMNS)
        frame["id"] = frame["id"].astype(np.int64)
        frame["session_id"] = frame["session_id"].astype(np.int64)
        frame["new_label"] = frame["new_label"].astype(object).where(frame["new_label"].notna(), None)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
        return frame

    def _per_example(self, session, items: pd.DataFrame) -> pd.DataFrame:
        current = self.current_decisions(session)
        adjudications = self.latest_adjudications(session)
        reviews = current.groupby("example_id").agg(
            n_reviewers=("reviewer", "nunique"),
            n_categories=("category", "nunique"),
            first_decision=("decision", "first"),
            first_label=("new_label", "first"),
            last_decision_id=("id", "max"),
        )
        ordered = current.sort_values(["example_id", "reviewer"])
        pairs = (ordered["reviewer"].map(_json_string) + ":" + ordered["category"].map(_json_string)).astype(object)
        reviews["reviewer_decisions"] = "{" + pairs.groupby(ordered["example_id"]).agg(",".join) + "}"
        adjudicated = adjudications.set_index("example_id")[["id", "decision", "new_label"]].rename(
            columns={"id": "adjudication_id", "decision": "adjudicated", "new_label": "adjudicated_label"})
        table = items.join(reviews, on="example_id").join(adjudicated, on="example_id")
        has_adjudication = table["adjudication_id"].notna()
        has_reviews = table["n_reviewers"].notna()
        agree = has_reviews & (table["n_categories"] == 1)
        disagree = has_reviews & (table["n_categories"] > 1)
        final = np.select([has_adjudication, agree, disagree],
                          [table["adjudicated"], table["first_decision"], "conflict"], "undecided")
        new_label = np.select([has_adjudication, agree], [table["adjudicated_label"], table["first_label"]], None)
        table["final_decision"] = final.astype(object)
        table["new_label"] = pd.Series(new_label, index=table.index, dtype=object).where(
            table["final_decision"] == "relabel", None)
        table["decided_by"] = np.select([has_adjudication, agree], ["adjudication", "reviewers"], "")
        table["n_reviewers"] = table["n_reviewers"].fillna(0).astype(np.int64)
        table["reviewer_decisions"] = table["reviewer_decisions"].fillna("{}").astype(object)
        table["needs_adjudication"] = disagree & ~(
            has_adjudication & (table["adjudication_id"] > table["last_decision_id"]))
        table["last_decision_id"] = table["last_decision_id"].astype("Int64")
        return table.reset_index(drop=True)


def _members(session: ReviewSession) -> set[str]:
    return {_stored_identity(name) for name in (session.owner, *session.reviewers)}


def _session_query():
    n_items = (sa.select(sa.func.count()).where(SESSION_ITEMS.c.session_id == SESSIONS.c.id)
               .correlate(SESSIONS).scalar_subquery().label("n_items"))
    return sa.select(SESSIONS, n_items)


def _session_from_row(row) -> ReviewSession:
    return ReviewSession(
        id=int(row["id"]), name=row["name"], description=row["description"], owner=row["owner"],
        fingerprint=row["fingerprint"], run=row["run"], source=row["source"],
        classes=tuple(json.loads(row["classes"])), reviewers=tuple(json.loads(row["reviewers"])),
        created_at=_parse_time(row["created_at"]), archived=bool(row["archived"]),
        n_items=int(row["n_items"]),
    )


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _json_string(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _categories(frame: pd.DataFrame) -> np.ndarray:
    return decision_categories(frame["decision"], frame["new_label"]).to_numpy()
