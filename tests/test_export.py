"""Exports of subsets and session outcomes: formats, manifests, and round trips through
load_dataset."""

from __future__ import annotations

import io
import json
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
    session_frame,
    subset_frame,
    write_export,
)
from analytics.store import ReviewStore
from analytics.workspace import file_sha256

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
    result = export_session(dataset, path, store, reviewed.id, apply_outcome=True)
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


def test_write_export_replaces_an_older_file_atomically(tmp_path, dataset):
    path = tmp_path / "exports" / "out.jsonl"
    write_export(subset_frame(dataset), path, Provenance(fingerprint="f"))
    result = write_export(subset_frame(dataset, ids=["a1"]), path, Provenance(fingerprint="f"))
    assert len(path.read_text().splitlines()) == 1 and result.manifest["rows"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl", "out.jsonl.manifest.json"]


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
        export_session(dataset, tmp_path / "x.csv", store, other.id)
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
    export_session(dataset, path, store, session.id, apply_outcome=True)
    loaded = load_dataset(path)
    assert loaded.kind == "tabular" and not loaded.ids_generated
    assert loaded.table["id"].tolist() == [ids[0], *ids[2:]]
    assert loaded.table["label"].iloc[0] == other[first_label]
    assert loaded.table["label"].tolist()[1:] == dataset.table["label"].tolist()[2:6]
