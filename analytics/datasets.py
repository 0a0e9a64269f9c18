"""Load, validate and fingerprint a labeled dataset: the table contract every stage builds on.

A dataset is a CSV, TSV, Parquet, JSON Lines (or JSON array) file, or an image folder with one
sub-folder per class (optionally under ``train/``, ``test/``… split folders). Loading gives a
:class:`Dataset`: one table keyed by a unique string ``id``, with a string ``label`` column and,
where present, ``text``, ``image`` (absolute file paths) and ``split`` columns; every other
column is kept as metadata or features under its own name.

Several annotators: the role ``annotator`` names one label column per annotator
(``ColumnRoles(annotator=("ann_a", "ann_b", "ann_c"))``, ``--annotator COL`` once per annotator).
They keep their names; each value becomes a class name (str) or None where that annotator did
not label the row, and every value must be one of the dataset's classes (else the column and
row are named). They are never features. How ``label`` relates to them:

- with a label column, it stays the label (the one the model trains on); the annotators'
  consensus is computed beside it (:mod:`analytics.annotators`: ``consensus_label``…);
- with no label column (none detected, or ``label=""``), each row's label is the annotators'
  majority vote (:func:`analytics.annotators.majority_vote`; ties go to the class chosen most
  often overall), the classes are those the annotators used, and ``notes`` says so. A row
  nobody labelled has no label (:class:`MissingLabelsError`, or dropped on request).

Bad input raises :class:`DatasetError` with a message that names the file and the row or
column at fault. Paths go through :func:`analytics.access.resolve_data_path` first: only regular
files and folders, within the operator's caps (file size, columns, images) and inside the data
roots (from the environment unless the caller passes a policy). Rows are numbered from 1 in the order of the file (for CSV and TSV, row 1 is
the line after the header).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.names import ROLE_COLUMNS

__all__ = [
    "AUTO",
    "NO_COLUMN",
    "ColumnRoles",
    "Dataset",
    "DatasetError",
    "MissingLabelsError",
    "SkippedFile",
    "SUPPORTED_SUFFIXES",
    "IMAGE_SUFFIXES",
    "count_images",
    "load_dataset",
    "peek_columns",
    "source_stamp",
]

#: File types read as tables, by suffix.
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
#: File types taken as images in an image folder or an image column.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Role value meaning "detect this column automatically".
AUTO = None
#: Role value meaning "this dataset has no such column" (turns auto-detection off).
NO_COLUMN = ""

DataKind = Literal["text", "image", "tabular"]

# Column names recognised for each role, in order of preference (compared case-insensitively).
_ROLE_NAMES = {
    "id": ("id", "guid", "uid", "uuid", "example_id", "sample_id", "idx", "key"),
    "label": ("label", "labels", "gold", "gold_label", "class", "class_name", "target",
              "category", "y"),
    "text": ("text", "sentence", "content", "document", "review", "description", "body",
             "comment", "question", "prompt", "premise", "utterance", "abstract", "title"),
    "image": ("image", "image_path", "img", "img_path", "filepath", "file_path", "path",
              "file", "filename"),
    "split": ("split", "fold", "subset", "partition"),
}
_SPLIT_FOLDERS = ("train", "training", "test", "testing", "val", "valid", "validation", "dev")
_MAX_SHOWN = 5  # examples quoted in an error message
# Characters an id must not hold: C0 and C1 control characters (newline, NUL, escape…) and the
# Unicode line and paragraph separators; they break exports, logs and the page's layout.
_CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"


class DatasetError(ValueError):
    """The dataset cannot be used as it is; the message says which file, row or column."""


class MissingLabelsError(DatasetError):
    """Some rows have no label. ``load_dataset(..., drop_missing_labels=True)`` drops them."""

    def __init__(self, message: str, *, count: int, rows: list[int]):
        super().__init__(message)
        self.count = count
        self.rows = rows


@dataclass(frozen=True)
class ColumnRoles:
    """Which column plays which role. ``AUTO`` (None) detects it; ``NO_COLUMN`` ("") means none.

    ``annotator`` is the exception: the label columns of several annotators, one each, as a
    tuple (a list or a single name is accepted and stored as a tuple; None or "" is none).
    They are never detected: name them.
    """

    id: str | None = AUTO
    label: str | None = AUTO
    text: str | None = AUTO
    image: str | None = AUTO
    split: str | None = AUTO
    annotator: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "annotator", _annotator_names(self.annotator))

    def as_dict(self) -> dict[str, str | None | tuple[str, ...]]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def single_columns(self) -> dict[str, str | None]:
        """The one-column roles (every role but ``annotator``)."""
        return {role: value for role, value in self.as_dict().items() if role != "annotator"}


def _annotator_names(value) -> tuple[str, ...]:
    if value is None or isinstance(value, str):
        return (value,) if value else ()
    names = tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise DatasetError(f"Annotator columns must be column names (non-empty text); got {list(names)!r}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(f"Annotator columns repeat: {_quote_list(repeated)}.")
    return names


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset, and why."""

    path: str
    reason: str


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated dataset.

    Attributes
    ----------
    name : str
        Display name (the file or folder name).
    source : Path
        The file or folder it was loaded from.
    table : DataFrame of shape (n_examples, n_columns)
        ``id`` (unique str) and ``label`` (str) first, then ``text``/``image``/``split`` where
        present, then every other column under its original name.
    classes : tuple of str
        The distinct labels, numerically sorted when they all look like numbers.
    kind : {"text", "image", "tabular"}
    roles : ColumnRoles
        The columns of the *file* that were used for each role (``NO_COLUMN`` where none).
    fingerprint : str
        Hex digest of the content (ids, labels, every column, image bytes): the cache key for
        everything computed from this dataset.
    ids_generated : bool
        True when the file had no id column and ids were derived from row content.
    skipped : tuple of SkippedFile
        Image files that could not be read (image datasets only).
    notes : tuple of str
        Things the user should know that did not stop loading (dropped rows, renamed columns).
    """

    name: str
    source: Path
    table: pd.DataFrame
    classes: tuple[str, ...]
    kind: DataKind
    roles: ColumnRoles
    fingerprint: str
    ids_generated: bool = False
    skipped: tuple[SkippedFile, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def n_examples(self) -> int:
        return len(self.table)

    @property
    def label_codes(self) -> np.ndarray:
        """ndarray of shape (n_examples,): each label's index in :attr:`classes`."""
        return pd.Categorical(self.table["label"], categories=list(self.classes)).codes.astype(np.int64)

    @property
    def feature_columns(self) -> list[str]:
        """Columns other than id, label, text, image, split and the annotators' label columns
        (metadata or features)."""
        roles = (*ROLE_COLUMNS, *self.roles.annotator)
        return [c for c in self.table.columns if c not in roles]


def load_dataset(
    path: str | Path,
    *,
    roles: ColumnRoles | None = None,
    drop_missing_labels: bool = False,
    encoding: str = "utf-8",
    progress: Callable[[float, str], None] | None = None,
    policy: Policy | None = None,
    max_columns: int | None = None,
    max_images: int | None = None,
) -> Dataset:
    """Load and validate a dataset from a file or an image folder.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``/``.ndjson`` or ``.json`` file, or a folder
        of images with one sub-folder per class.
    roles : ColumnRoles, optional
        Columns to use for id, label, text, image and split (unset roles are detected), and the
        annotators' label columns (see the module docstring).
    drop_missing_labels : bool, default False
        Drop rows without a label (and say so in ``notes``) instead of raising
        :class:`MissingLabelsError`.
    encoding : str, default "utf-8"
        Text encoding of CSV, TSV and JSON files.
    progress : callable, optional
        Called as ``progress(fraction, message)`` while image files are checked.
    policy : Policy, optional
        The operator's rules (data roots, file size cap, column cap) for the path and for the
        image files it names. By default :meth:`Policy.from_env`, under which the bundled
        samples stay readable. In every mode only a regular file or a folder is read, never a
        device or a pipe.
    max_columns : int, optional
        Most columns a table may have; by default ``policy.max_columns``. Checked on the
        header, before the rows are read.
    max_images : int, optional
        Most images an image folder may hold; by default no limit. (The app asks the user
        before opening a folder over ``policy.max_images``; the CLI passes it here.)

    Raises
    ------
    DatasetError
        With a message naming the file and the row or column at fault, or what the operator's
        rules refuse.
    """
    policy = policy or _operator_policy()
    path = _checked_path(path, policy)
    roles = roles or ColumnRoles()
    if path.is_dir():
        _check_image_count(path, max_images)
        frame, file_roles, skipped, file_hashes = _read_image_folder(path, roles, progress, policy)
        base_dir = path
    else:
        frame = _read_table(path, encoding=encoding, max_columns=max_columns or policy.max_columns)
        file_roles = _resolve_roles(frame, roles, path)
        skipped, file_hashes = (), None
        base_dir = path.parent
    table, notes, ids_generated = _normalise(frame, file_roles, path, drop_missing_labels)
    if "image" in table.columns and file_hashes is None:
        table, skipped, file_hashes = _check_image_column(table, base_dir, path, policy)
        if skipped:
            notes.append(f"{len(skipped)} rows skipped because their image could not be read.")
    classes = _checked_classes(table, file_roles, path, images_skipped=bool(skipped))
    kind: DataKind = "image" if "image" in table.columns else "text" if "text" in table.columns else "tabular"
    return Dataset(
        name=path.name,
        source=path.resolve(),
        table=table,
        classes=classes,
        kind=kind,
        roles=file_roles,
        fingerprint=_fingerprint(table, kind, file_hashes),
        ids_generated=ids_generated,
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def _check_image_count(folder: Path, max_images: int | None) -> None:
    """Raise :class:`DatasetError` when ``folder`` holds more than ``max_images`` images (None: no cap)."""
    if max_images is not None and (found := count_images(folder, stop_after=max_images)) > max_images:
        raise DatasetError(f"{folder}: holds more than {max_images:,} images (found {found:,} so far), the most "
                           "opened without asking. Raise the cap to open it anyway (--max-images on the "
                           "command line, CARTOGRAPHER_MAX_IMAGES for the app).")


def _checked_classes(table: pd.DataFrame, roles: ColumnRoles, path: Path, *,
                     images_skipped: bool) -> tuple[str, ...]:
    """The classes of the loaded table's labels, sorted; raises :class:`DatasetError` when there
    are fewer than two, or when an annotator's label no longer fits them once rows with an
    unreadable image are left out (``images_skipped``)."""
    classes = _sorted_classes(table["label"])
    if len(classes) < 2:
        raise DatasetError(
            f"{path}: {_label_source(roles)} has a single class ('{classes[0]}'); "
            "at least two classes are needed to map, score or curate labels."
        )
    if roles.annotator and images_skipped:  # a class may have left with the skipped rows
        from analytics.annotators import annotation_codes

        try:
            annotation_codes(table[list(roles.annotator)], classes)
        except ValueError as exc:
            raise DatasetError(f"{path}: once the unreadable images are left out, {exc} (rows of the loaded "
                               "table.)") from None
    return classes


def peek_columns(path: str | Path, *, encoding: str = "utf-8", policy: Policy | None = None,
                 max_columns: int | None = None) -> list[str]:
    """The column names of a table file without reading all of it (for choosing roles).

    An image folder has the fixed columns ``id``, ``label``, ``image`` (and ``split``).
    ``policy`` and ``max_columns`` are as for :func:`load_dataset`; a table over the column
    cap raises :class:`DatasetError`.
    """
    policy = policy or _operator_policy()
    path = _checked_path(path, policy)
    max_columns = max_columns or policy.max_columns
    if path.is_dir():
        return ["id", "label", "image", "split"]
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            names = list(pq.read_schema(path).names)
        except Exception as exc:
            raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None
        _check_column_count(path, len(names), max_columns)
        return names
    if suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        _check_column_count(path, _header_width(path, sep=sep, encoding=encoding), max_columns)
        try:
            header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError):
            return []
        return [str(c) for c in header.columns]
    try:
        return [str(c) for c in _read_table(path, encoding=encoding, max_columns=max_columns).columns]
    except (DatasetError, UnicodeDecodeError):
        return []


def count_images(folder: str | Path, *, stop_after: int | None = None) -> int:
    """How many image files (by suffix) an image folder holds, hidden files and folders left out.

    Parameters
    ----------
    folder : str or Path
    stop_after : int, optional
        Stop counting once more than this many are found (the answer is then ``stop_after + 1``):
        enough to know a folder is over a cap without listing all of it.

    Returns
    -------
    int
    """
    count = 0
    for _, directories, files in os.walk(folder):
        directories[:] = [d for d in directories if not d.startswith(".")]
        count += sum(1 for name in files if not name.startswith(".") and
                     os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES)
        if stop_after is not None and count > stop_after:
            return stop_after + 1
    return count


def _operator_policy() -> Policy:
    """The operator's rules from the environment; under data roots the bundled samples, which
    ship with the app, stay readable."""
    from analytics.samples import SAMPLE_DIR  # samples.py imports this module

    try:
        policy = Policy.from_env()
    except AccessError as exc:
        raise DatasetError(str(exc)) from None
    return replace(policy, data_roots=policy.data_roots + (SAMPLE_DIR,)) if policy.data_roots else policy


def _checked_path(path: str | Path, policy: Policy) -> Path:
    """``path`` resolved under the operator's rules; their refusal as a :class:`DatasetError`."""
    try:
        return resolve_data_path(path, policy, what="dataset")
    except AccessError as exc:
        raise DatasetError(str(exc)) from None


def _header_width(path: Path, *, sep: str, encoding: str) -> int:
    """How many fields the header line of a CSV or TSV holds (0 when it cannot be read).

    Counted with the csv module: pandas takes seconds to parse a header of 100,000 names.
    """
    try:
        with path.open(encoding=encoding, newline="") as handle:
            return len(next(csv.reader(handle, delimiter=sep), []))
    except (csv.Error, UnicodeDecodeError, OSError):
        return 0  # the full reader gives the precise error


def _check_column_count(path: Path, count: int, max_columns: int) -> None:
    if count > max_columns:
        raise DatasetError(f"{path}: has {count:,} columns, more than the {max_columns:,} a dataset may have "
                           "(CARTOGRAPHER_MAX_COLUMNS). Keep the columns you need in a smaller file.")


def source_stamp(path: str | Path) -> tuple:
    """A cheap token that changes when the file (or the image folder's listing) changes.

    For a folder it covers the folder and two levels of sub-folders (class and split folders),
    whose modification times change when files are added, removed or renamed.
    """
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return ("missing", str(path))
    if not path.is_dir():
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    stamps = [(str(path.resolve()), stat.st_mtime_ns)]
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        stamps.append((child.name, child.stat().st_mtime_ns))
        stamps.extend((f"{child.name}/{g.name}", g.stat().st_mtime_ns)
                      for g in sorted(q for q in child.iterdir() if q.is_dir()))
    return tuple(stamps)


# --------------------------------------------------------------------------- file readers


def _read_table(path: Path, *, encoding: str, max_columns: int) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DatasetError(
            f"{path}: unsupported file type '{path.suffix or '(none)'}'. "
            f"Use one of {', '.join(SUPPORTED_SUFFIXES)}, or a folder of images."
        )
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty.")
    try:
        if suffix in (".parquet", ".pq"):
            frame = _read_parquet(path, max_columns=max_columns)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            frame = _read_json(path, encoding=encoding, lines=suffix != ".json")
        else:
            frame = _read_delimited(path, sep="\t" if suffix == ".tsv" else ",", encoding=encoding,
                                    max_columns=max_columns)
    except UnicodeDecodeError as exc:
        raise DatasetError(_describe_decode_error(path, encoding, exc)) from None
    if frame.shape[1] == 0:
        raise DatasetError(f"{path}: no columns found; the file is empty or not a {suffix} table.")
    _check_column_count(path, frame.shape[1], max_columns)  # JSON has no header to check first
    if len(frame) == 0:
        raise DatasetError(
            f"{path}: the file has columns ({_quote_list(frame.columns)}) but no rows."
        )
    frame.columns = [str(c) for c in frame.columns]
    duplicated = pd.Index(frame.columns)[pd.Index(frame.columns).duplicated()]
    if len(duplicated):
        raise DatasetError(f"{path}: column names repeat: {_quote_list(duplicated.unique())}.")
    return frame


def _read_delimited(path: Path, *, sep: str, encoding: str, max_columns: int) -> pd.DataFrame:
    _check_column_count(path, _header_width(path, sep=sep, encoding=encoding), max_columns)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty (no header line).") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: cannot parse the header: {exc}") from None
    # Read id and label candidates as text, so ids like "007" and labels like "1" survive.
    as_text = {c: str for c in header.columns if _role_of_name(str(c)) in ("id", "label", "split")}
    try:
        return pd.read_csv(path, sep=sep, encoding=encoding, dtype=as_text, keep_default_na=True)
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: malformed {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None


def _read_parquet(path: Path, *, max_columns: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        _check_column_count(path, len(names), max_columns)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DatasetError(f"{path}: column names repeat: {_quote_list(repeated)}.")
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(
            f"{path}: not a readable Parquet file (it may be truncated or corrupt): {exc}"
        ) from None


def _read_json(path: Path, *, encoding: str, lines: bool) -> pd.DataFrame:
    if not lines:
        try:
            records = json.loads(path.read_text(encoding=encoding))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DatasetError(f"{path}: expected a JSON array of objects (one per example).")
        return pd.DataFrame.from_records(records)
    records = []
    with path.open(encoding=encoding) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}: line {line_number} is not valid JSON ({exc.msg} at column {exc.colno})."
                ) from None
            if not isinstance(record, dict):
                raise DatasetError(
                    f"{path}: line {line_number} holds a {type(record).__name__}, not a JSON object."
                )
            records.append(record)
    if not records:
        raise DatasetError(f"{path}: the file holds no JSON objects.")
    return pd.DataFrame.from_records(records)


def _describe_decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Name the line of the first byte that is not valid in ``encoding``."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
        position, byte = exc.start, None
    except UnicodeDecodeError as full:
        position, byte = full.start, data[full.start]
    line = data.count(b"\n", 0, position) + 1
    shown = f"byte 0x{byte:02x} " if byte is not None else ""
    return (
        f"{path}: not valid {encoding.upper()} text: {shown}at line {line} (offset {position}). "
        "Save the file as UTF-8, or choose its encoding (for example latin-1)."
    )


def _read_image_folder(
    root: Path, roles: ColumnRoles, progress: Callable[[float, str], None] | None, policy: Policy
) -> tuple[pd.DataFrame, ColumnRoles, list[SkippedFile], np.ndarray]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DatasetError(
            f"{root}: a folder dataset needs one sub-folder per class (e.g. {root}/cat/1.png); "
            "none found."
        )
    split_layout = all(d.name.lower() in _SPLIT_FOLDERS for d in subdirs)
    groups = (
        [(d.name, c) for d in subdirs for c in sorted(p for p in d.iterdir() if p.is_dir())]
        if split_layout
        else [(None, d) for d in subdirs]
    )
    rows, hashes, skipped = [], [], []
    files = [(split, class_dir, file) for split, class_dir in groups
             for file in sorted(p for p in class_dir.rglob("*") if p.is_file())
             if not any(part.startswith(".") for part in file.relative_to(root).parts)]
    for loose in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        skipped.append(SkippedFile(str(loose), "not inside a class folder"))
    for done, (split, class_dir, file) in enumerate(files):
        if progress and done % 500 == 0:
            progress(done / len(files), f"Checking images: {done:,} of {len(files):,}")
        digest, reason = _check_image_file(file, policy)
        if reason:
            skipped.append(SkippedFile(str(file), reason))
            continue
        rows.append({
            "id": file.relative_to(root).as_posix(),
            "label": class_dir.name,
            "image": str(file.resolve()),
            **({"split": split} if split_layout else {}),
        })
        hashes.append(digest)
    if not rows:
        shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:_MAX_SHOWN])
        raise DatasetError(f"{root}: no readable images in the class folders. {shown}")
    file_roles = ColumnRoles(id="id", label="label", text=NO_COLUMN, image="image",
                             split="split" if split_layout else NO_COLUMN)
    if roles.label not in (AUTO, "label") or roles.id not in (AUTO, "id"):
        raise DatasetError(f"{root}: in an image folder the label is the class folder's name "
                           "and the id is the file's path; they cannot be set to other columns.")
    if roles.annotator:
        raise DatasetError(f"{root}: an image folder has no annotator columns; give several annotators' labels "
                           "in a table (CSV, Parquet…) with an image column of file paths.")
    return pd.DataFrame(rows), file_roles, skipped, np.array(hashes, dtype=object)


def _check_image_file(file: Path, policy: Policy) -> tuple[str | None, str | None]:
    """Return (sha256 of the bytes, None) for a readable image, or (None, why not)."""
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"not an image file type ({file.suffix or 'no extension'})"
    try:  # a link to a device would be read forever; one out of the data roots must not be read
        file = resolve_data_path(file, policy, what="image", allow_dir=False)
    except AccessError:
        return None, "not a regular file inside the data folders, or over the size cap"
    try:
        data = file.read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not data:
        return None, "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        return None, f"not a readable image ({type(exc).__name__}: {exc})"
    return hashlib.sha256(data).hexdigest(), None


def _check_image_column(
    table: pd.DataFrame, base_dir: Path, path: Path, policy: Policy
) -> tuple[pd.DataFrame, list[SkippedFile], np.ndarray]:
    resolved = [
        str(p if p.is_absolute() else (base_dir / p)) for p in map(Path, table["image"].astype(str))
    ]
    results = [_check_image_file(Path(p), policy) if Path(p).exists() else (None, "file not found")
               for p in resolved]
    keep = np.array([reason is None for _, reason in results])
    skipped = [
        SkippedFile(p, f"row {i + 1} of {path.name}: {reason}")
        for i, (p, (_, reason)) in enumerate(zip(resolved, results)) if reason
    ]
    if not keep.any():
        raise DatasetError(f"{path}: none of the files in the image column could be read; "
                           f"e.g. {skipped[0].path}: {skipped[0].reason}.")
    table = table.assign(image=resolved)[keep].reset_index(drop=True)
    hashes = np.array([digest for digest, _ in results], dtype=object)[keep]
    return table, skipped, hashes


# --------------------------------------------------------------------------- roles


def _role_of_name(name: str) -> str | None:
    lowered = name.strip().lower()
    for role, names in _ROLE_NAMES.items():
        if lowered in names:
            return role
    return None


def _resolve_roles(frame: pd.DataFrame, roles: ColumnRoles, path: Path) -> ColumnRoles:
    columns = list(frame.columns)
    annotators = roles.annotator
    absent = [c for c in annotators if c not in columns]
    if absent:
        raise DatasetError(f"{path}: the annotator column{'s' if len(absent) > 1 else ''} {_quote_list(absent)} "
                           f"{'do' if len(absent) > 1 else 'does'} not exist; columns are {_quote_list(columns)}.")
    reserved = [c for c in annotators if c in _ROLE_NAMES]
    if reserved:
        raise DatasetError(f"{path}: the annotator column {_quote_list(reserved)} has the name of a role column; "
                           "rename it in the file (e.g. 'label_1') so it cannot be taken for the dataset's own.")
    chosen: dict[str, str] = {}
    for role, value in roles.single_columns().items():
        if value is AUTO:
            continue
        if value != NO_COLUMN and value not in columns:
            raise DatasetError(
                f"{path}: the {role} column '{value}' does not exist; columns are {_quote_list(columns)}."
            )
        if value in annotators:
            raise DatasetError(f"{path}: column '{value}' cannot be both the {role} column and an annotator column.")
        chosen[role] = value
    taken = {v for v in chosen.values() if v} | set(annotators)
    for role in ("id", "label", "split", "image", "text"):
        if role in chosen:
            continue
        by_name = [c for c in columns if c not in taken and _role_of_name(c) == role]
        by_name.sort(key=lambda c: _ROLE_NAMES[role].index(c.strip().lower()))
        candidate = next((c for c in by_name if _fits_role(frame[c], role)), None)
        if candidate is None and role in ("text", "image"):
            candidate = _guess_by_content(frame, role, exclude=taken)
        chosen[role] = candidate or NO_COLUMN
        taken.add(chosen[role])
    if not chosen["label"] and not annotators:
        # Columns with few distinct values are the likely labels: name them first.
        likely = [c for c in columns if c not in taken and 2 <= frame[c].nunique() <= min(100, len(frame) // 2)]
        hint = f" Likely candidates: {_quote_list(likely)}." if likely else ""
        raise DatasetError(
            f"{path}: no label column found. Columns are {_quote_list(columns, limit=60)}.{hint} "
            "Choose the label column explicitly (in the app's column roles, or "
            "ColumnRoles(label=...) / --label on the command line), or name the annotators' label "
            "columns (--annotator COL, once per annotator) to label each row by their majority vote."
        )
    return ColumnRoles(**chosen, annotator=annotators)


def _fits_role(column: pd.Series, role: str) -> bool:
    if role == "split":
        return column.nunique(dropna=True) <= 10
    if role == "image":
        return _looks_like_image_paths(column)
    if role == "text":
        return column.dtype == object or pd.api.types.is_string_dtype(column)
    return True


def _looks_like_image_paths(column: pd.Series) -> bool:
    values = column.dropna()
    if values.empty or not (column.dtype == object or pd.api.types.is_string_dtype(column)):
        return False
    sample = values.astype(str).head(200).str.lower()
    return bool(sample.str.endswith(IMAGE_SUFFIXES).mean() > 0.9)


def _guess_by_content(frame: pd.DataFrame, role: str, exclude: set[str]) -> str | None:
    """Find an unnamed text column (long, varied strings with spaces) or image-path column."""
    best, best_length = None, 0.0
    for name in frame.columns:
        column = frame[name]
        if name in exclude or not (column.dtype == object or pd.api.types.is_string_dtype(column)):
            continue
        if role == "image":
            if _looks_like_image_paths(column):
                return name
            continue
        sample = column.dropna().astype(str).head(500)
        if sample.empty:
            continue
        mean_length = sample.str.len().mean()
        has_spaces = sample.str.contains(" ").mean() > 0.5
        varied = sample.nunique() > 0.5 * len(sample)
        if has_spaces and varied and mean_length >= 20 and mean_length > best_length:
            best, best_length = name, mean_length
    return best


# --------------------------------------------------------------------------- normalisation


def _normalise(
    frame: pd.DataFrame, roles: ColumnRoles, path: Path, drop_missing_labels: bool
) -> tuple[pd.DataFrame, list[str], bool]:
    """Rename role columns to their canonical names, check ids and labels, generate ids."""
    notes: list[str] = []
    frame = frame.reset_index(drop=True)
    role_columns = {role: col for role, col in roles.single_columns().items() if col}
    canonical = {col: role for role, col in role_columns.items()}
    # A non-role column that happens to carry a canonical name keeps its data under a new name.
    clashes = {c: f"{c}_original" for c in frame.columns if c in _ROLE_NAMES and c not in canonical}
    if clashes:
        notes.append("Renamed columns that clash with role names: "
                     + ", ".join(f"'{a}' → '{b}'" for a, b in clashes.items()) + ".")
    frame = frame.rename(columns={**clashes, **canonical})
    if roles.annotator:
        frame, note = _annotations(frame, roles, path)
        notes.extend([note] if note else [])

    frame, note = _labelled_rows(frame, roles, path, drop_missing_labels)
    notes.extend([note] if note else [])
    frame["label"] = _labels_as_text(frame["label"])

    ids_generated = "id" not in frame.columns
    if ids_generated:
        frame.insert(0, "id", _content_ids(frame, exclude=roles.annotator))
        notes.append("The file has no id column: ids were derived from each row's content "
                     "(stable across reloads and reordering).")
    else:
        frame["id"] = _unique_ids(frame["id"], roles.id, path)

    if "text" in frame.columns:
        no_text = frame["text"].isna()
        if no_text.any():
            notes.append(f"{int(no_text.sum())} rows have no text in column '{roles.text}' "
                         f"(rows {_quote_rows((np.flatnonzero(no_text.to_numpy()) + 1).tolist())}); "
                         "they are kept with empty text.")
        frame["text"] = frame["text"].fillna("").astype(str)
    if "split" in frame.columns:
        frame["split"] = frame["split"].astype("string").fillna("").astype(str)
    leading = [c for c in ROLE_COLUMNS if c in frame.columns]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    return frame, notes, ids_generated


def _labelled_rows(frame: pd.DataFrame, roles: ColumnRoles, path: Path,
                   drop_missing_labels: bool) -> tuple[pd.DataFrame, str]:
    """The rows that have a label, and a note on those dropped ("" when none were).

    Raises :class:`MissingLabelsError` naming the rows without one, unless
    ``drop_missing_labels``; :class:`DatasetError` when no row has a label.
    """
    labels = frame["label"]
    missing = labels.isna() | labels.astype(str).str.strip().eq("")
    if not missing.any():
        return frame, ""
    rows = (np.flatnonzero(missing.to_numpy()) + 1).tolist()
    if not drop_missing_labels:
        raise MissingLabelsError(
            f"{path}: {_label_source(roles)} has {len(rows)} rows with no label "
            f"(rows {_quote_rows(rows)}). Drop those rows or fill in their labels.",
            count=len(rows), rows=rows,
        )
    frame = frame[~missing.to_numpy()].reset_index(drop=True)
    if frame.empty:
        raise DatasetError(f"{path}: every row lacks a label in {_label_source(roles)}.")
    return frame, f"Dropped {len(rows)} rows with no label (rows {_quote_rows(rows)})."


def _unique_ids(ids: pd.Series, column: str, path: Path) -> pd.Series:
    """The id column as text, checked (:func:`_check_ids`) and unique; raises
    :class:`DatasetError` naming the repeated ids and their rows."""
    _check_ids(ids, column, path)
    ids = _labels_as_text(ids)
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        dupes = ids[duplicated]
        shown = [
            f"'{value}' (rows {_quote_rows((np.flatnonzero(ids.to_numpy() == value) + 1).tolist())})"
            for value in dupes.unique()[:_MAX_SHOWN]
        ]
        raise DatasetError(
            f"{path}: column '{column}' must be unique but {dupes.nunique()} ids repeat: "
            + "; ".join(shown) + "."
        )
    return ids


def _annotations(frame: pd.DataFrame, roles: ColumnRoles, path: Path) -> tuple[pd.DataFrame, str]:
    """The annotator columns as class names or None; checked against the label column's
    classes, or, when there is no label column, voted into one (and a note saying so)."""
    from analytics.annotators import annotation_codes, majority_vote

    columns = list(roles.annotator)
    frame = frame.copy()
    for column in columns:
        values = frame[column]
        given = ~(values.isna() | values.astype(str).str.strip().eq("")).to_numpy()
        text = np.full(len(frame), None, dtype=object)
        text[given] = _labels_as_text(values[given]).to_numpy(dtype=object)
        frame[column] = pd.Series(text, index=frame.index, dtype=object)
    if roles.label:
        labels = frame["label"]
        classes = _sorted_classes(_labels_as_text(labels[labels.notna() & labels.astype(str).str.strip().ne("")]))
    else:
        classes = _sorted_classes(pd.Series(pd.unique(frame[columns].stack().dropna())))
        if not classes:
            raise DatasetError(f"{path}: there is no label column and the annotator columns {_quote_list(columns)} "
                               "are empty: no row has a label.")
    try:
        codes = annotation_codes(frame[columns], classes)
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if roles.label:
        return frame, ""
    votes = majority_vote(codes, len(classes))
    frame.insert(0, "label", pd.Series(np.asarray(classes, dtype=object)[votes], dtype=object).where(votes >= 0, None))
    return frame, (f"No label column: each row's label is the majority vote of the {len(columns)} annotators "
                   f"({_quote_list(columns)}); ties go to the class they chose most often.")


def _label_source(roles: ColumnRoles) -> str:
    """Where the labels come from, for messages: the label column or the annotators' vote."""
    if roles.label:
        return f"column '{roles.label}'"
    return f"the majority vote of the annotator columns {_quote_list(roles.annotator)}"


def _check_ids(ids: pd.Series, column: str, path: Path) -> None:
    empty = ids.isna() | ids.astype(str).str.strip().eq("")
    if empty.any():
        rows = (np.flatnonzero(empty.to_numpy()) + 1).tolist()
        raise DatasetError(f"{path}: column '{column}' has {len(rows)} empty ids "
                           f"(rows {_quote_rows(rows)}).")
    control = ids.astype(str).str.contains(_CONTROL_CHARACTERS, regex=True).to_numpy()
    if control.any():
        rows = (np.flatnonzero(control) + 1).tolist()
        raise DatasetError(f"{path}: column '{column}' has {len(rows)} ids with control characters such as "
                           f"a line break or NUL (rows {_quote_rows(rows)}; row {rows[0]} is "
                           f"{ascii(ids.iloc[rows[0] - 1])}). Ids must be printable text.")


def _labels_as_text(values: pd.Series) -> pd.Series:
    """Labels and ids as strings; 1.0 becomes "1" (floats appear when a column has gaps)."""
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype(np.int64)
    return values.astype(str).str.strip()


def _sorted_classes(labels: pd.Series) -> tuple[str, ...]:
    unique = labels.unique().tolist()
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numeric.notna().all():
        return tuple(str(u) for _, u in sorted(zip(numeric, unique)))
    return tuple(sorted(unique))


def _content_ids(frame: pd.DataFrame, *, exclude: tuple[str, ...] = ()) -> pd.Series:
    """Ids from a hash of each row's content, leaving out label, split and the annotators'
    labels (``exclude``) so a relabel keeps it.

    Identical rows get ``-2``, ``-3``… suffixes in file order.
    """
    content = frame.drop(columns=[c for c in ("label", "split", *exclude) if c in frame.columns])
    hashes = pd.util.hash_pandas_object(content, index=False).to_numpy()
    base = pd.Series([f"r{h:016x}"[:13] for h in hashes], index=frame.index)
    occurrence = base.groupby(base).cumcount()
    return base.where(occurrence == 0, base + "-" + (occurrence + 1).astype(str))


def _fingerprint(table: pd.DataFrame, kind: str, image_hashes: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "columns": list(map(str, table.columns)),
                              "dtypes": [str(t) for t in table.dtypes]}).encode())
    hashable = table.drop(columns=["image"]) if "image" in table.columns else table
    try:  # vectorised; no Python call per value
        hashed = pd.util.hash_pandas_object(hashable, index=False).to_numpy()
    except TypeError:  # object columns holding lists (e.g. precomputed vectors) are not hashable as-is
        hashable = hashable.apply(lambda c: c.map(repr) if c.dtype == object and
                                  c.map(lambda v: isinstance(v, (list, dict, np.ndarray))).any() else c)
        hashed = pd.util.hash_pandas_object(hashable, index=False).to_numpy()
    digest.update(hashed.tobytes())
    if image_hashes is not None:
        digest.update("\n".join(image_hashes).encode())
    return digest.hexdigest()[:20]


def _quote_list(values, limit: int = 20) -> str:
    values = [f"'{v}'" for v in values]
    return ", ".join(values[:limit]) + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _quote_rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:_MAX_SHOWN]))
    return shown + (f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else "")
