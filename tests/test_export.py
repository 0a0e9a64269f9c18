"""Exports of subsets and session outcomes: formats, manifests, and round trips through
load_dataset."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import threading
import time
from datetime import datetime
from importlib import metadata

import pandas as pd
import pytest

from analytics.datasets import load_dataset
from analytics.export import (
    ExportError,
    Provenance,
    export_bytes,
    export_format,
    export_session,
    export_subset,
    manifest_path,
    session_export,
    session_frame,
    subset_frame,
    write_export,
)
from analytics.store import ReviewError, ReviewStore
from analytics.workspace import file_sha256
from tests.conftest_pg import postgres_server, postgres_url  # noqa: F401  (fixtures)

FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


@pytest.fixture
def dataset(tmp_path):
    rows = [
        ("007", "cat", "a small cat, sitting", "train", 3),
        ("a1", "dog", 'the dog said "woof"', "train", 4),
        ("a2", "bird", "a bird\non two lines", "test", 5),
        ("a3", "cat", "another cat", "train", 2),
        ("a4", "dog", "ünïcödé dog 🐶", "test", 3),
        ("a5", "bird", "a blue bird", "train", 3),
    ]
    path = tmp_path / "animals.csv"
    pd.DataFrame(rows, columns=["id", "label", "text", "split", "n_words"]).to_csv(path, index=False)
    return load_dataset(path)


@pytest.fixture
def scores(dataset):
    return pd.DataFrame({"id": dataset.table["id"][::-1].to_numpy(),  # another order than the dataset
                         "el2n": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                         "confidence": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                         "label": ["x"] * 6})


@pytest.fixture
def store(tmp_path):
    opened = ReviewStore.open(f"sqlite:///{tmp_path / 'review.sqlite'}")
    yield opened
    opened.close()


@pytest.fixture
def reviewed(store, dataset):
    """A session over five examples with every kind of outcome."""
    session = store.create_session("curation", ["a1", "007", "a2", "a3", "a4"], owner="olga",
                                   fingerprint=dataset.fingerprint, classes=dataset.classes,
                                   reviewers=("ann", "bob"), source="top 5 by el2n")
    s = session.id
    store.record_decision(s, "a1", "ann", "relabel", new_label="cat")
    store.record_decision(s, "a1", "bob", "relabel", new_label="cat")   # agreed relabel
    store.record_decision(s, "007", "ann", "drop")
    store.record_decision(s, "007", "bob", "drop")                      # agreed drop
    store.record_decision(s, "a2", "ann", "keep")
    store.record_decision(s, "a2", "bob", "relabel", new_label="dog")   # conflict, kept as is
    store.record_decision(s, "a3", "ann", "keep")
    store.record_decision(s, "a3", "bob", "drop")
    store.adjudicate(s, "a3", "olga", "relabel", "bird")                 # adjudicated relabel
    # a4 undecided
    return session


def read_back(path):
    return load_dataset(path)


def test_export_format_from_extension_or_argument(tmp_path):
    assert export_format("x.csv") == "csv" and export_format("x.PQ") == "parquet"
    assert export_format("x.ndjson") == "jsonl" and export_format("x.txt", "jsonl") == "jsonl"
    with pytest.raises(ExportError, match="Cannot tell the export format from 'x.txt'"):
        export_format("x.txt")
    with pytest.raises(ExportError, match="Unknown export format 'xlsx'"):
        export_format("x.csv", "xlsx")


@pytest.mark.parametrize("fmt", FORMATS)
def test_subset_round_trip_and_manifest(tmp_path, dataset, scores, fmt):
    path = tmp_path / "out" / f"subset{FORMATS[fmt]}"
    result = export_subset(dataset, path, ids=["a3", "007", "a5"], scores=scores,
                           score_columns=["el2n"], description="lasso on the map; label = cat")
    loaded = read_back(path)
    assert loaded.table["id"].tolist() == ["a3", "007", "a5"]
    assert loaded.table["label"].tolist() == ["cat", "cat", "bird"]
    assert loaded.table["text"].tolist() == ["another cat", "a small cat, sitting", "a blue bird"]
    assert loaded.table["el2n"].tolist() == pytest.approx([0.4, 0.1, 0.6])
    assert loaded.kind == "text"

    manifest = json.loads(manifest_path(path).read_text())
    assert manifest == result.manifest and result.n_rows == 3
    assert manifest_path(path).name == f"subset{FORMATS[fmt]}.manifest.json"
    assert manifest["dataset_fingerprint"] == dataset.fingerprint
    assert manifest["selection"] == "lasso on the map; label = cat"
    assert manifest["session"] is None and manifest["decision_counts"] == {}
    assert manifest["rows"] == 3 and manifest["file_format"] == fmt
    assert manifest["sha256"] == file_sha256(path) and manifest["size"] == path.stat().st_size
    assert manifest["app_version"] == metadata.version("data-cartographer")
    assert datetime.fromisoformat(manifest["created_at"]).utcoffset().total_seconds() == 0
    assert manifest["roles"] == {"id": "id", "label": "label", "text": "text", "split": "split"}
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, manifest_path(path).name])


@pytest.mark.parametrize("fmt", FORMATS)
def test_session_outcome_round_trip(tmp_path, dataset, store, reviewed, fmt):
    path = tmp_path / f"curated{FORMATS[fmt]}"
    result = export_session(dataset, path, store, reviewed.id, actor="Ann", apply_outcome=True)
    loaded = read_back(path).table.set_index("id")
    # 007 was dropped; a1 and a3 relabelled; the conflict (a2) and the undecided (a4) kept as they were.
    assert loaded.index.tolist() == ["a1", "a2", "a3", "a4"]
    assert loaded["label"].tolist() == ["cat", "bird", "bird", "dog"]
    assert loaded["original_label"].tolist() == ["dog", "bird", "cat", "dog"]
    assert loaded["final_decision"].tolist() == ["relabel", "conflict", "relabel", "undecided"]
    assert json.loads(loaded.loc["a2", "reviewer_decisions"]) == {"ann": "keep", "bob": "relabel:dog"}

    manifest = result.manifest
    assert manifest["session"] == {"id": reviewed.id, "name": "curation"}
    assert manifest["outcome_applied"] is True and manifest["rows"] == 4
    assert manifest["selection"] == "top 5 by el2n"
    assert manifest["dataset_fingerprint"] == dataset.fingerprint
    assert manifest["decision_counts"] == {
        "ann": {"drop": 1, "keep": 2, "relabel:cat": 1},
        "bob": {"drop": 2, "relabel:cat": 1, "relabel:dog": 1},
    }
    assert manifest["outcome_counts"] == {"conflict": 1, "drop": 1, "relabel": 2, "undecided": 1}
    assert manifest["exported_by"] == "ann"
    assert manifest["sha256"] == file_sha256(path)


def test_session_export_without_applying_keeps_every_item_and_label(dataset, store, reviewed, scores):
    frame = session_frame(dataset, store, reviewed.id, scores=scores, score_columns=["confidence"])
    assert frame["id"].tolist() == ["a1", "007", "a2", "a3", "a4"]
    assert frame["label"].tolist() == ["dog", "cat", "bird", "cat", "dog"]
    assert frame["final_decision"].tolist() == ["relabel", "drop", "conflict", "relabel", "undecided"]
    assert frame["new_label"].tolist() == ["cat", None, None, "bird", None]
    assert frame["confidence"].tolist() == pytest.approx([0.5, 0.6, 0.4, 0.3, 0.2])
    assert "original_label" not in frame.columns
    assert list(frame.columns[:5]) == ["id", "label", "text", "split", "n_words"]


def test_session_export_of_every_row(dataset, store, reviewed):
    frame = session_frame(dataset, store, reviewed.id, apply_outcome=True, all_rows=True)
    assert frame["id"].tolist() == ["a1", "a2", "a3", "a4", "a5"]  # dataset order, 007 dropped
    assert frame["label"].tolist() == ["cat", "bird", "bird", "dog", "bird"]
    assert frame.set_index("id").loc["a5", "final_decision"] == ""


def test_export_bytes_for_downloads(dataset, scores):
    frame = subset_frame(dataset, ids=["a1", "a2"], scores=scores, score_columns=["el2n", "confidence"])
    download = export_bytes(frame, Provenance(fingerprint=dataset.fingerprint, description="two"), fmt="parquet")
    assert download.mime_type == "application/vnd.apache.parquet" and download.suffix == ".parquet"
    back = pd.read_parquet(io.BytesIO(download.data))
    assert back["id"].tolist() == ["a1", "a2"] and back["el2n"].tolist() == pytest.approx([0.2, 0.3])
    import hashlib

    assert download.manifest["sha256"] == hashlib.sha256(download.data).hexdigest()
    assert json.loads(download.manifest_bytes)["rows"] == 2
    csv = export_bytes(frame, Provenance(fingerprint="f"), fmt="csv")
    assert csv.data.decode().splitlines()[0] == "id,label,text,split,n_words,el2n,confidence"


def test_an_existing_export_is_never_overwritten(tmp_path, dataset):
    path = tmp_path / "exports" / "out.jsonl"
    first = write_export(subset_frame(dataset), path, Provenance(fingerprint="f"))
    before = path.read_bytes(), first.manifest_path.read_bytes()
    second = write_export(subset_frame(dataset, ids=["a1"]), path, Provenance(fingerprint="f"))
    third = write_export(subset_frame(dataset, ids=["a2"]), path, Provenance(fingerprint="f"))
    assert (path.read_bytes(), first.manifest_path.read_bytes()) == before
    assert not first.renamed and second.renamed and second.requested == path
    assert (second.path.name, third.path.name) == ("out-2.jsonl", "out-3.jsonl")
    assert len(second.path.read_text().splitlines()) == 1 and second.manifest["file"] == "out-2.jsonl"
    assert json.loads(manifest_path(third.path).read_text())["sha256"] == file_sha256(third.path)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "out-2.jsonl", "out-2.jsonl.manifest.json", "out-3.jsonl", "out-3.jsonl.manifest.json",
        "out.jsonl", "out.jsonl.manifest.json"]  # and no temporary file left behind


def test_a_leftover_manifest_keeps_its_name(tmp_path, dataset):
    path = tmp_path / "out.csv"
    manifest_path(path).write_text("{}")
    result = write_export(subset_frame(dataset), path, Provenance(fingerprint="f", exported_by="ann"))
    assert result.path.name == "out-2.csv" and manifest_path(path).read_text() == "{}"
    assert result.manifest["exported_by"] == "ann"


def _export_under_one_name(directory, worker):
    """In a process: write one export to ``directory/same.csv``; returns the path taken."""
    frame = pd.DataFrame({"id": [f"w{worker}"], "label": ["cat"]})
    return str(write_export(frame, os.path.join(directory, "same.csv"), Provenance(fingerprint="f")).path)


def test_concurrent_exporters_never_share_a_name(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        taken = pool.starmap(_export_under_one_name, [(str(tmp_path), k) for k in range(12)])
    assert len(set(taken)) == 12
    assert sorted(pd.read_csv(p)["id"].iloc[0] for p in taken) == sorted(f"w{k}" for k in range(12))


def test_format_argument_overrides_the_extension(tmp_path, dataset):
    path = tmp_path / "export.data"
    result = export_subset(dataset, path, fmt="csv")
    assert result.manifest["file_format"] == "csv"
    assert pd.read_csv(path, dtype=str)["id"].tolist() == dataset.table["id"].tolist()


def test_export_errors(dataset, scores, store, tmp_path):
    with pytest.raises(ExportError, match="1 ids are not in the dataset: 'zz'"):
        subset_frame(dataset, ids=["a1", "zz"])
    with pytest.raises(ExportError, match=r"No score columns \['aum'\]; available: \['el2n', 'confidence', 'label'\]"):
        subset_frame(dataset, scores=scores, score_columns=["aum"])
    with pytest.raises(ExportError, match="names of dataset columns"):
        subset_frame(dataset, scores=scores, score_columns=["label"])
    with pytest.raises(ExportError, match="no scores table"):
        subset_frame(dataset, score_columns=["el2n"])
    other = store.create_session("elsewhere", ["not-here"], owner="o", fingerprint="x", classes=["cat"])
    with pytest.raises(ExportError, match="not in the dataset"):
        export_session(dataset, tmp_path / "x.csv", store, other.id, actor="o")
    assert not (tmp_path / "x.csv").exists()


def test_tabular_sample_round_trip_keeps_generated_ids(tmp_path, store):
    """The bundled table has no id column: its content-derived ids survive the export."""
    from analytics.samples import SAMPLES

    sample = next(s for s in SAMPLES if s.key == "breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)
    assert dataset.ids_generated and dataset.kind == "tabular"
    ids = dataset.table["id"].tolist()[:6]
    other = {"benign": "malignant", "malignant": "benign"}
    session = store.create_session("tabular", ids, owner="olga", fingerprint=dataset.fingerprint,
                                   classes=dataset.classes, reviewers=("ann", "bob"))
    first_label = dataset.table["label"].iloc[0]
    store.record_decision(session.id, ids[0], "ann", "relabel", new_label=other[first_label])
    store.record_decision(session.id, ids[1], "ann", "drop")
    path = tmp_path / "curated.parquet"
    export_session(dataset, path, store, session.id, actor="olga", apply_outcome=True)
    loaded = load_dataset(path)
    assert loaded.kind == "tabular" and not loaded.ids_generated
    assert loaded.table["id"].tolist() == [ids[0], *ids[2:]]
    assert loaded.table["label"].iloc[0] == other[first_label]
    assert loaded.table["label"].tolist()[1:] == dataset.table["label"].tolist()[2:6]


def test_only_a_reviewer_or_above_exports_a_session(tmp_path, dataset, reviewed):
    team = ReviewStore.open(f"sqlite:///{tmp_path / 'review.sqlite'}", default_role="viewer", admins=["root"])
    with pytest.raises(ReviewError, match="mallory is a viewer and may not export session 'curation'"):
        export_session(dataset, tmp_path / "stolen.csv", team, reviewed.id, actor="mallory")
    with pytest.raises(ReviewError, match="No acting identity"):
        export_session(dataset, tmp_path / "stolen.csv", team, reviewed.id, actor="")
    assert not (tmp_path / "stolen.csv").exists()
    assert export_session(dataset, tmp_path / "ok.csv", team, reviewed.id, actor="root").manifest["exported_by"] == "root"
    team.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'review.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    opened = ReviewStore.open(url)
    yield opened
    opened.close()


@pytest.fixture
def any_reviewed(any_store, dataset):
    session = any_store.create_session("busy", ["a1", "007", "a2", "a3", "a4"], owner="olga",
                                       fingerprint=dataset.fingerprint, classes=dataset.classes,
                                       reviewers=("ann", "bob"))
    any_store.record_decisions(session.id, ["a1", "007", "a2", "a3"], "ann", "keep")
    any_store.record_decisions(session.id, ["a1", "007", "a2", "a3"], "bob", "drop")
    return session


def test_manifest_counts_match_the_file_while_reviewers_write(dataset, any_store, any_reviewed):
    """Two reviewers keep changing their minds while exports run: the manifest's outcome counts
    always describe the exported rows (before, the rows and the counts were read in separate
    transactions and disagreed in about half of the exports)."""
    store, reviewed = any_store, any_reviewed
    items = ["a1", "007", "a2", "a3", "a4"]
    stop = threading.Event()

    def keep_deciding(reviewer):
        writer = ReviewStore.open(store.engine.url.render_as_string(hide_password=False))
        flip = 0
        while not stop.is_set():
            flip += 1
            writer.record_decisions(reviewed.id, items, reviewer, ("keep", "drop", "flag")[flip % 3])
        writer.close()

    writers = [threading.Thread(target=keep_deciding, args=(name,)) for name in ("ann", "bob")]
    for writer in writers:
        writer.start()
    mismatches, deadline = 0, time.monotonic() + 60
    try:
        for _ in range(40):
            frame, provenance = session_export(dataset, store, reviewed.id, actor="olga")
            counted = {str(k): int(v) for k, v in frame["final_decision"].value_counts().sort_index().items()}
            mismatches += counted != provenance.outcome_counts
            per_reviewer = {r: sum(c.values()) for r, c in provenance.decision_counts.items()}
            assert set(per_reviewer.values()) <= {len(items) - 1, len(items)}  # a4 undecided at first
            assert time.monotonic() < deadline
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert mismatches == 0


def test_the_leak_free_split_and_the_issue_counts_in_the_manifest(tmp_path, dataset):
    from analytics.export import leak_free_split_frame

    # the run's examples: 007 (train) is a copy of a2 and a4 (test); a1 and a3 copies within train
    examples = pd.DataFrame({"id": ["007", "a1", "a2", "a3", "a4", "a5"],
                             "split": ["train", "train", "test", "train", "test", "train"],
                             "duplicate_set": [0, 1, 0, 1, 0, -1]})
    counts = {"near_duplicate": 5, "split_leak": 3, "null": 0}
    result = export_subset(dataset, tmp_path / "clean.csv", ids=["a1", "007", "a5"], scores=examples,
                           leak_free=True, issue_counts=counts, description="leak-free")
    assert result.manifest["issue_counts"] == counts
    assert result.manifest["leak_free_split"] == {"moved": 1, "moved_in_dataset": 1}
    loaded = read_back(tmp_path / "clean.csv").table
    assert loaded["split"].tolist() == ["train", "test", "train"]  # 007 joins its copies in test
    assert loaded["original_split"].tolist() == ["train", "train", "train"]
    # the whole dataset: only 007 moves, and the sets now sit in one split each
    frame, moved = leak_free_split_frame(dataset.table, examples)
    assert moved == {"moved": 1, "moved_in_dataset": 1}
    assert frame.groupby(examples.set_index("id").loc[frame["id"], "duplicate_set"].to_numpy())["split"] \
        .nunique().max() == 1
    # an export without them says nothing of issues; without the duplicate column it is refused
    plain = export_subset(dataset, tmp_path / "plain.csv", ids=["a1"])
    assert plain.manifest["issue_counts"] == {} and plain.manifest["leak_free_split"] is None
    with pytest.raises(ExportError, match="duplicate_set"):
        export_subset(dataset, tmp_path / "x.csv", scores=examples.drop(columns="duplicate_set"), leak_free=True)
    with pytest.raises(ExportError, match="needs the run's examples"):
        export_subset(dataset, tmp_path / "y.csv", leak_free=True)
