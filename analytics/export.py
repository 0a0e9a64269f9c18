"""Export a subset of a dataset, or a review session's outcome, with its provenance.

An export is one file — CSV, Parquet or JSON Lines, chosen by the file's extension or by
``fmt`` — holding the dataset's own columns (``id``, ``label``, ``text``/``image``/``split`` and
the rest), any chosen score columns, and for a session its decisions: ``final_decision``,
``new_label`` and ``reviewer_decisions`` (compact JSON ``{"reviewer": "category"}``). With
``apply_outcome=True`` the session's outcome is applied: rows whose final decision is ``drop``
are left out and relabels replace ``label``, the label before review kept in
``original_label``. Rows in conflict, undecided or flagged are kept as they are (their
``final_decision`` says so, and the manifest counts them).

Beside the file, ``<file>.manifest.json`` records the dataset fingerprint, the selection or
filters, the session (id, name), decision counts by reviewer, outcome counts, who exported
(``exported_by``), the app version, the time (UTC), the row count, the columns and the SHA-256
of the file. A session's rows and the manifest's counts come from one read transaction of the
store (:meth:`analytics.store.ReviewStore.export_snapshot`), so they agree while reviewers keep
writing, and exporting needs the role ``reviewer`` or above.

An export never replaces an existing file: when the name is taken the export goes to
``<stem>-2<ext>``, ``<stem>-3<ext>``… The name is claimed with a hard link of a finished
temporary file (``os.link`` fails if the name exists), so two exporters at once never take the
same name and nobody ever sees a partial file. The manifest follows.

An export from a run also lists the run's data-issue counts (``issue_counts``, from its
``issues.json``), and can carry the leak-free split (:func:`leak_free_split_frame`): the ``split``
column rewritten so that no set of exact or near copies spans two splits, the old value kept in
``original_split`` and the number of examples moved recorded under ``leak_free_split``.

The exported file loads back with :func:`analytics.datasets.load_dataset`: ids and labels are
in the canonical ``id`` and ``label`` columns, and the manifest's ``roles`` lists the role
columns in case a reader wants to set them explicitly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pandas as pd

from analytics.datasets import Dataset
from analytics.names import ROLE_COLUMNS
from analytics.workspace import atomic_write_text

if TYPE_CHECKING:  # the store pulls in SQLAlchemy; exports of plain subsets do not need it
    from analytics.store import ReviewStore

__all__ = [
    "DECISION_COLUMNS",
    "EXPORT_FORMATS",
    "ExportDownload",
    "ExportError",
    "ExportResult",
    "Provenance",
    "app_version",
    "export_bytes",
    "export_format",
    "export_session",
    "export_subset",
    "leak_free_split_frame",
    "manifest_path",
    "session_frame",
    "session_export",
    "session_provenance",
    "subset_frame",
    "write_export",
]

#: Export formats and their usual extension.
EXPORT_FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_MIME_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}
#: Columns a session export adds.
DECISION_COLUMNS = ("final_decision", "new_label", "reviewer_decisions")
_ROLE_COLUMNS = ROLE_COLUMNS
MANIFEST_FORMAT = "data-cartographer-export"
MANIFEST_VERSION = 1
PACKAGE = "data-cartographer"


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Provenance:
    """Where an export's rows came from, for its manifest.

    Attributes
    ----------
    fingerprint : str
        The dataset's fingerprint.
    description : str
        The selection or filters in words (``"lasso on the map, label = cat"``).
    session_id, session_name : int and str, optional
        The review session, for session exports.
    decision_counts : dict
        ``{reviewer: {category: count}}`` over reviewers' current decisions.
    outcome_counts : dict
        ``{final_decision: count}`` over the session's examples.
    applied_outcome : bool
        Whether drops were removed and relabels applied.
    exported_by : str
        The normalised identity of who exported ("" when unknown, e.g. a notebook).
    issue_counts : dict
        ``{issue type: count}`` of the run the rows come from (its ``issues.json``).
    leak_free_split : dict, optional
        ``{"moved": n, "moved_in_dataset": m}`` when the split column is the leak-free split.
    """

    fingerprint: str
    description: str = ""
    session_id: int | None = None
    session_name: str | None = None
    decision_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    outcome_counts: dict[str, int] = field(default_factory=dict)
    applied_outcome: bool = False
    exported_by: str = ""
    issue_counts: dict[str, int] = field(default_factory=dict)
    leak_free_split: dict | None = None


@dataclass(frozen=True)
class ExportResult:
    """A written export: the file, its manifest file, and the manifest's content.

    ``requested`` is the path asked for; ``path`` differs from it when that name was taken.
    """

    path: Path
    manifest_path: Path
    manifest: dict
    n_rows: int
    requested: Path | None = None

    @property
    def renamed(self) -> bool:
        """The requested name was taken, so the export went to a suffixed one."""
        return self.requested is not None and self.requested != self.path


@dataclass(frozen=True)
class ExportDownload:
    """An export in memory, for a browser download."""

    data: bytes
    manifest: dict
    mime_type: str
    suffix: str

    @property
    def manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def app_version() -> str:
    """The installed version of the package, or ``"unknown"``."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def export_format(path: str | Path | None = None, fmt: str | None = None) -> str:
    """``fmt`` when given, else the format of ``path``'s extension."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
        if fmt not in EXPORT_FORMATS:
            raise ExportError(f"Unknown export format '{fmt}'; use one of {', '.join(EXPORT_FORMATS)}.")
        return fmt
    suffix = Path(path).suffix.lower() if path is not None else ""
    if suffix not in _SUFFIXES:
        raise ExportError(f"Cannot tell the export format from '{Path(path).name if path else ''}': "
                          f"use an extension among {', '.join(_SUFFIXES)} or pass fmt=.")
    return _SUFFIXES[suffix]


def manifest_path(path: str | Path) -> Path:
    """``<file>.manifest.json`` beside the export."""
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


# --------------------------------------------------------------------------- building tables


def _table_of(data: Dataset | pd.DataFrame) -> pd.DataFrame:
    table = data.table if isinstance(data, Dataset) else data
    if not isinstance(table, pd.DataFrame):
        raise ExportError(f"Expected a Dataset or a DataFrame, not {type(data).__name__}.")
    missing = [c for c in ("id", "label") if c not in table.columns]
    if missing:
        raise ExportError(f"The table has no {' and '.join(missing)} column; columns are {list(table.columns)[:20]}.")
    return table


def subset_frame(
    data: Dataset | pd.DataFrame,
    *,
    ids: Iterable[str] | None = None,
    scores: pd.DataFrame | None = None,
    score_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """The dataset's rows for ``ids`` (in that order; every row when None), with the chosen
    score columns joined by id.

    Parameters
    ----------
    data : Dataset or DataFrame
        The dataset (its table has ``id`` and ``label`` columns).
    ids : iterable of str, optional
        The examples to export; repeats are dropped.
    scores : DataFrame, optional
        Per-example scores keyed by ``id`` (a run's ``examples.parquet``).
    score_columns : sequence of str
        Columns of ``scores`` to add.
    """
    table = _table_of(data)
    if ids is None:
        frame = table.reset_index(drop=True)
    else:
        wanted = pd.Index(dict.fromkeys(str(i) for i in ids))
        positions = pd.Index(table["id"].astype(str)).get_indexer(wanted)
        if (positions < 0).any():
            missing = wanted[positions < 0]
            shown = ", ".join(f"'{i}'" for i in missing[:5])
            raise ExportError(f"{len(missing)} ids are not in the dataset: {shown}"
                              f"{' and more' if len(missing) > 5 else ''}.")
        frame = table.iloc[positions].reset_index(drop=True)
    score_columns = list(dict.fromkeys(score_columns))
    if not score_columns:
        return frame
    if scores is None:
        raise ExportError(f"Score columns {score_columns} were asked for but no scores table was given.")
    if "id" not in scores.columns:
        raise ExportError("The scores table has no id column to join on.")
    unknown = [c for c in score_columns if c not in scores.columns]
    if unknown:
        raise ExportError(f"No score columns {unknown}; available: {[c for c in scores.columns if c != 'id']}.")
    clashing = [c for c in score_columns if c in frame.columns]
    if clashing:
        raise ExportError(f"Score columns {clashing} have the names of dataset columns; they are "
                          "already in the export.")
    by_id = scores.assign(id=scores["id"].astype(str)).drop_duplicates("id").set_index("id")[score_columns]
    joined = by_id.reindex(frame["id"].astype(str).to_numpy()).reset_index(drop=True)
    return pd.concat([frame, joined], axis=1)


def leak_free_split_frame(frame: pd.DataFrame, examples: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``frame`` with its ``split`` column replaced by the leak-free split of the run.

    The split is computed over the whole run (``examples``: its ``examples.parquet`` with the
    ``split`` and ``duplicate_set`` columns) by
    :func:`analytics.data_issues.leak_free_split`, so a duplicate set moves as a whole even when
    only part of it is exported; then joined to ``frame`` by id. The previous split is kept in
    ``original_split``.

    Returns
    -------
    (DataFrame, dict)
        The frame, and ``{"moved": examples of the frame whose split changed,
        "moved_in_dataset": examples of the whole run whose split changed}`` for the manifest.
    """
    from analytics.data_issues import leak_free_split

    missing = [c for c in ("id", "split", "duplicate_set") if c not in examples.columns]
    if missing:
        raise ExportError(f"The leak-free split needs the run's {' and '.join(missing)} column"
                          f"{'s' * (len(missing) > 1)}: analyse a dataset with a split column, with the "
                          "duplicate check on.")
    if "split" not in frame.columns:
        raise ExportError("The exported rows have no split column to replace.")
    new_split, moved_in_dataset = leak_free_split(examples["split"], examples["duplicate_set"].to_numpy())
    by_id = pd.Series(new_split, index=examples["id"].astype(str).to_numpy())
    by_id = by_id[~by_id.index.duplicated()]
    replaced = by_id.reindex(frame["id"].astype(str).to_numpy()).to_numpy(dtype=object)
    unknown = pd.isna(replaced) & frame["split"].notna().to_numpy()
    if unknown.any():
        raise ExportError(f"{int(unknown.sum())} exported ids are not in the run, e.g. "
                          f"'{frame['id'].astype(str).to_numpy()[unknown][0]}'.")
    out = frame.copy()
    out["original_split"] = frame["split"].to_numpy(dtype=object)
    out["split"] = replaced
    old, new = out["original_split"].astype("string"), out["split"].astype("string")
    moved = int((old.fillna("\0") != new.fillna("\0")).sum())
    return out, {"moved": moved, "moved_in_dataset": int(moved_in_dataset)}


def session_frame(
    data: Dataset | pd.DataFrame,
    store: "ReviewStore",
    session: int | str,
    *,
    scores: pd.DataFrame | None = None,
    score_columns: Sequence[str] = (),
    apply_outcome: bool = False,
    all_rows: bool = False,
) -> pd.DataFrame:
    """A session's examples with their decisions (see the module docstring).

    Parameters
    ----------
    data : Dataset or DataFrame
        The dataset the session was made on.
    store : ReviewStore
    session : int or str
        Session id or name.
    scores, score_columns
        As for :func:`subset_frame`.
    apply_outcome : bool, default False
        Leave out rows decided ``drop`` and apply relabels (``label`` replaced, the previous
        label kept in ``original_label``).
    all_rows : bool, default False
        Export every row of the dataset, not only the session's examples; rows outside the
        session have an empty ``final_decision``.
    """
    return _outcome_frame(data, store.outcome(session), scores=scores, score_columns=score_columns,
                          apply_outcome=apply_outcome, all_rows=all_rows)


def _outcome_frame(data, outcome: pd.DataFrame, *, scores, score_columns, apply_outcome: bool,
                   all_rows: bool) -> pd.DataFrame:
    table = _table_of(data)
    if all_rows:
        in_table = pd.Index(table["id"].astype(str))
        outside = ~outcome["example_id"].isin(in_table)
        ids = table["id"].astype(str).tolist()
    else:
        outside = pd.Series(False, index=outcome.index)
        ids = outcome["example_id"].tolist()
    if outside.any():
        raise ExportError(f"{int(outside.sum())} examples of the session are not in the dataset "
                          f"(e.g. '{outcome.loc[outside, 'example_id'].iloc[0]}'); was the session made "
                          "on another version of it?")
    try:
        frame = subset_frame(table, ids=ids, scores=scores, score_columns=score_columns)
    except ExportError as exc:
        raise ExportError(f"{exc} The session's examples must come from this dataset.") from None
    clashing = [c for c in (*DECISION_COLUMNS, "original_label") if c in frame.columns]
    if clashing:
        raise ExportError(f"The dataset already has columns named {clashing}; rename them before "
                          "exporting decisions.")
    decisions = outcome.set_index("example_id")[list(DECISION_COLUMNS)].reindex(frame["id"].astype(str).to_numpy())
    frame["final_decision"] = decisions["final_decision"].fillna("").astype(object).to_numpy()
    new_label = decisions["new_label"].to_numpy(dtype=object, copy=True)
    new_label[pd.isna(new_label)] = None
    frame["new_label"] = pd.Series(new_label, index=frame.index, dtype=object)
    frame["reviewer_decisions"] = decisions["reviewer_decisions"].fillna("").astype(object).to_numpy()
    if not apply_outcome:
        return frame
    frame = frame[frame["final_decision"] != "drop"].reset_index(drop=True)
    relabel = (frame["final_decision"] == "relabel").to_numpy()
    original = frame["label"].copy()
    frame["label"] = frame["label"].astype(object).where(~relabel, frame["new_label"])
    frame.insert(frame.columns.get_loc("label") + 1, "original_label", original)
    return frame


def session_export(
    data: Dataset | pd.DataFrame,
    store: "ReviewStore",
    session: int | str,
    *,
    actor: str,
    scores: pd.DataFrame | None = None,
    score_columns: Sequence[str] = (),
    apply_outcome: bool = False,
    all_rows: bool = False,
    description: str | None = None,
    fingerprint: str | None = None,
) -> tuple[pd.DataFrame, Provenance]:
    """A session's rows (as :func:`session_frame`) and their provenance, both from one snapshot
    of the store, so the manifest's counts describe exactly the rows exported.

    ``actor`` is who exports: they need the role ``reviewer`` or above (the store checks), and
    the manifest records them as ``exported_by``. ``fingerprint`` defaults to the dataset's, else
    the session's; ``description`` to the session's source.

    Raises
    ------
    analytics.store.ReviewError
        The actor may not export this session.
    ExportError
        The session's examples are not in ``data``, or columns clash.
    """
    snapshot = store.export_snapshot(session, actor=actor)
    frame = _outcome_frame(data, snapshot.outcome, scores=scores, score_columns=score_columns,
                           apply_outcome=apply_outcome, all_rows=all_rows)
    found = snapshot.session
    if fingerprint is None:
        fingerprint = getattr(data, "fingerprint", None) or found.fingerprint
    return frame, Provenance(
        fingerprint=fingerprint,
        description=description if description is not None else found.source,
        session_id=found.id,
        session_name=found.name,
        decision_counts=snapshot.decision_counts,
        outcome_counts=_outcome_counts(snapshot.outcome),
        applied_outcome=apply_outcome,
        exported_by=snapshot.actor,
    )


def _outcome_counts(outcome: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in outcome["final_decision"].value_counts().sort_index().items()}


def session_provenance(
    store: "ReviewStore",
    session: int | str,
    *,
    fingerprint: str | None = None,
    description: str | None = None,
    applied_outcome: bool = False,
) -> Provenance:
    """The manifest's facts about a session: id, name, decision and outcome counts.

    ``fingerprint`` defaults to the session's dataset fingerprint and ``description`` to the
    session's source (``"cluster 3"``, ``"top 50 by el2n"``). The reads share one snapshot; for
    an export, whose rows must match these counts, use :func:`session_export`.
    """
    with store.read_snapshot():
        found = store.get_session(session)
        outcome = store.outcome(found.id)
        decision_counts = store.decision_counts(found.id)
    return Provenance(
        fingerprint=fingerprint if fingerprint is not None else found.fingerprint,
        description=description if description is not None else found.source,
        session_id=found.id,
        session_name=found.name,
        decision_counts=decision_counts,
        outcome_counts=_outcome_counts(outcome),
        applied_outcome=applied_outcome,
    )


# --------------------------------------------------------------------------- writing


def _serialise(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "jsonl":
        if frame.empty:
            return b""
        text = frame.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
        return (text if text.endswith("\n") else text + "\n").encode("utf-8")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _manifest(frame: pd.DataFrame, provenance: Provenance, fmt: str, data: bytes, file_name: str) -> dict:
    session = (None if provenance.session_id is None
               else {"id": provenance.session_id, "name": provenance.session_name})
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "file": file_name,
        "file_format": fmt,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "app_version": app_version(),
        "dataset_fingerprint": provenance.fingerprint,
        "selection": provenance.description,
        "session": session,
        "outcome_applied": provenance.applied_outcome,
        "decision_counts": provenance.decision_counts,
        "outcome_counts": provenance.outcome_counts,
        "exported_by": provenance.exported_by,
        "issue_counts": provenance.issue_counts,
        "leak_free_split": provenance.leak_free_split,
        "rows": int(len(frame)),
        "columns": [str(c) for c in frame.columns],
        "roles": {role: role for role in _ROLE_COLUMNS if role in frame.columns},
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def export_bytes(frame: pd.DataFrame, provenance: Provenance, *, fmt: str) -> ExportDownload:
    """The export as bytes (for a browser download), with the manifest it would have."""
    fmt = export_format(fmt=fmt)
    data = _serialise(frame, fmt)
    manifest = _manifest(frame, provenance, fmt, data, f"export{EXPORT_FORMATS[fmt]}")
    return ExportDownload(data=data, manifest=manifest, mime_type=_MIME_TYPES[fmt], suffix=EXPORT_FORMATS[fmt])


def write_export(frame: pd.DataFrame, path: str | Path, provenance: Provenance, *, fmt: str | None = None) -> ExportResult:
    """Write ``frame`` to ``path`` and its manifest beside it; never replaces a file.

    The format is ``fmt`` if given, else the extension's (``.csv``, ``.parquet``/``.pq``,
    ``.jsonl``/``.ndjson``). When ``path`` (or its manifest) exists, the export goes to
    ``<stem>-2<ext>``, ``<stem>-3<ext>``…; :attr:`ExportResult.path` says where.
    """
    requested = Path(path).expanduser()
    fmt = export_format(requested, fmt)
    data = _serialise(frame, fmt)
    path = _claim_name(requested, data)
    manifest = _manifest(frame, provenance, fmt, data, path.name)
    destination = manifest_path(path)
    atomic_write_text(destination, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return ExportResult(path=path, manifest_path=destination, manifest=manifest, n_rows=len(frame),
                        requested=requested)


_MAX_SUFFIX = 10_000


def _claim_name(path: Path, data: bytes) -> Path:
    """Put ``data`` at ``path``, or at the first free ``<stem>-N<ext>``, atomically: the bytes are
    written and flushed to a temporary file, which is then hard-linked to the name (``os.link``
    refuses an existing name, so concurrent exporters never share one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        for number in range(1, _MAX_SUFFIX + 1):
            candidate = path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")
            if manifest_path(candidate).exists():  # a manifest without its file still holds the name
                continue
            try:
                os.link(temporary, candidate)
            except FileExistsError:
                continue
            return candidate
    finally:
        os.unlink(temporary)
    raise ExportError(f"'{path.name}' and {_MAX_SUFFIX - 1:,} numbered variants of it already exist in "
                      f"{path.parent.name}/; choose another name.")


def export_subset(
    data: Dataset | pd.DataFrame,
    path: str | Path,
    *,
    ids: Iterable[str] | None = None,
    scores: pd.DataFrame | None = None,
    score_columns: Sequence[str] = (),
    description: str = "",
    fingerprint: str | None = None,
    fmt: str | None = None,
    exported_by: str = "",
    issue_counts: dict[str, int] | None = None,
    leak_free: bool = False,
) -> ExportResult:
    """Write a subset (see :func:`subset_frame`) and its manifest.

    ``fingerprint`` defaults to the dataset's (required in practice when ``data`` is a bare
    DataFrame; it is recorded as given). ``exported_by`` is recorded in the manifest, and so are
    ``issue_counts`` (the run's, see :func:`analytics.pipeline.read_issues`). With ``leak_free``
    the split column is the run's leak-free split (:func:`leak_free_split_frame`, computed from
    ``scores``, the run's examples), and the manifest counts the examples moved.
    """
    frame = subset_frame(data, ids=ids, scores=scores, score_columns=score_columns)
    moved = None
    if leak_free:
        if scores is None:
            raise ExportError("The leak-free split needs the run's examples (scores=examples.parquet).")
        frame, moved = leak_free_split_frame(frame, scores)
    fingerprint = fingerprint if fingerprint is not None else getattr(data, "fingerprint", "")
    return write_export(frame, path, Provenance(fingerprint=fingerprint, description=description,
                                                exported_by=exported_by, issue_counts=dict(issue_counts or {}),
                                                leak_free_split=moved), fmt=fmt)


def export_session(
    data: Dataset | pd.DataFrame,
    path: str | Path,
    store: "ReviewStore",
    session: int | str,
    *,
    actor: str,
    scores: pd.DataFrame | None = None,
    score_columns: Sequence[str] = (),
    apply_outcome: bool = False,
    all_rows: bool = False,
    description: str | None = None,
    fmt: str | None = None,
) -> ExportResult:
    """Write a session's examples with their decisions and a manifest naming the session,
    counting its decisions and naming ``actor`` as the exporter (see :func:`session_export`)."""
    frame, provenance = session_export(data, store, session, actor=actor, scores=scores,
                                       score_columns=score_columns, apply_outcome=apply_outcome,
                                       all_rows=all_rows, description=description)
    return write_export(frame, path, provenance, fmt=fmt)
