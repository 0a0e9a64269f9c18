"""The artefact cache: keys, atomic writes, corrupt entries recomputed rather than trusted."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from analytics.workspace import WORKSPACE_ENV, Workspace, atomic_write_bytes, default_root, params_key


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    assert str(default_root()) == "workspace"
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "ws"))
    assert default_root() == tmp_path / "ws"


def test_params_key_ignores_order_and_separates_values():
    assert params_key({"a": 1, "b": [1, 2]}) == params_key({"b": [1, 2], "a": 1})
    assert params_key({"a": 1}) != params_key({"a": 2})


@pytest.mark.parametrize("fmt,value", [
    ("npy", np.arange(12, dtype=np.float32).reshape(3, 4)),
    ("parquet", pd.DataFrame({"id": ["a", "b"], "x": [0.5, 1.5]})),
    ("json", {"stage": "umap", "seconds": 1.25, "items": [1, 2]}),
])
def test_round_trip_every_format(tmp_path, fmt, value):
    workspace = Workspace(tmp_path)
    path = workspace.save("fp1", "stage", {"k": 1}, value, fmt=fmt)
    assert path.parent == tmp_path / "fp1" / "stage"
    loaded = workspace.load("fp1", "stage", {"k": 1}, fmt=fmt)
    if fmt == "npy":
        np.testing.assert_array_equal(loaded, value)
    elif fmt == "parquet":
        pd.testing.assert_frame_equal(loaded, value)
    else:
        assert loaded == value
    assert workspace.load("fp1", "stage", {"k": 2}, fmt=fmt) is None
    assert workspace.load("fp2", "stage", {"k": 1}, fmt=fmt) is None


def test_cached_computes_once(tmp_path):
    workspace = Workspace(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.ones(3)

    workspace.cached("fp", "s", {}, compute, fmt="npy")
    workspace.cached("fp", "s", {}, compute, fmt="npy")
    assert len(calls) == 1


def test_truncated_entry_is_detected_and_recomputed(tmp_path):
    workspace = Workspace(tmp_path)
    path = workspace.save("fp", "s", {}, np.arange(1000.0), fmt="npy")
    path.write_bytes(path.read_bytes()[:100])  # a partial write by a crashed process
    assert workspace.load("fp", "s", {}, fmt="npy") is None
    assert not path.exists()
    value = workspace.cached("fp", "s", {}, lambda: np.zeros(2), fmt="npy")
    np.testing.assert_array_equal(value, np.zeros(2))


def test_flipped_byte_is_detected(tmp_path):
    workspace = Workspace(tmp_path)
    path = workspace.save("fp", "s", {}, pd.DataFrame({"x": range(50)}), fmt="parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert workspace.load("fp", "s", {}, fmt="parquet") is None


def test_entry_without_meta_is_a_miss(tmp_path):
    """The payload is written before its meta: a crash in between leaves no trusted entry."""
    workspace = Workspace(tmp_path)
    path = workspace.save("fp", "s", {}, {"a": 1}, fmt="json")
    path.with_name(path.name + ".meta.json").unlink()
    assert workspace.load("fp", "s", {}, fmt="json") is None


def test_garbage_meta_is_a_miss(tmp_path):
    workspace = Workspace(tmp_path)
    path = workspace.save("fp", "s", {}, {"a": 1}, fmt="json")
    path.with_name(path.name + ".meta.json").write_text("{not json")
    assert workspace.load("fp", "s", {}, fmt="json") is None


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b'{"v": 1}')

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b'{"v": 2}')
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_written_files_follow_the_umask(tmp_path):
    """A shared workspace must be readable by the team, not private to one user."""
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "shared.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- entries of several files

GRAPH = {"knn_indices": (np.arange(6, dtype=np.int32).reshape(2, 3), "npy"),
         "knn_distances": (np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), "npy"),
         "knn_table": (pd.DataFrame({"id": ["a", "b"]}), "parquet")}
GRAPH_FORMATS = {name: fmt for name, (_, fmt) in GRAPH.items()}


def test_an_entry_of_several_files_is_written_info_last_and_read_back_whole(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path)
    written = []
    real_save = Workspace.save
    monkeypatch.setattr(Workspace, "save", lambda self, fingerprint, stage, params, value, *, fmt: (
        written.append(stage), real_save(self, fingerprint, stage, params, value, fmt=fmt))[1])
    workspace.save_entry("fp", "knn", {"k": 3}, {**GRAPH, "knn_norms": (None, "npy")}, {"method": "exact"})
    assert written == ["knn_indices", "knn_distances", "knn_table", "knn_info"]  # the info last; None not stored
    entry = workspace.load_entry("fp", "knn", {"k": 3}, GRAPH_FORMATS)
    assert entry.info == {"method": "exact"} and set(entry.files) == set(GRAPH)
    np.testing.assert_array_equal(entry.files["knn_indices"], GRAPH["knn_indices"][0])
    np.testing.assert_array_equal(entry.files["knn_distances"], GRAPH["knn_distances"][0])
    pd.testing.assert_frame_equal(entry.files["knn_table"], GRAPH["knn_table"][0])
    assert workspace.load_entry("fp", "knn", {"k": 4}, GRAPH_FORMATS) is None
    # the info under another name (an entry whose summary is its info)
    workspace.save_entry("fp", "issues", {}, {"issues_columns": GRAPH["knn_table"]}, {"n": 2}, info_name="summary")
    assert (tmp_path / "fp" / "issues_summary").is_dir() and not (tmp_path / "fp" / "issues_info").exists()
    assert workspace.load_entry("fp", "issues", {}, {"issues_columns": "parquet"}, info_name="summary").info == {"n": 2}


@pytest.mark.parametrize("lost", ["knn_distances", "knn_table", "knn_info"])
def test_an_entry_missing_a_file_or_its_info_is_a_miss(tmp_path, lost):
    workspace = Workspace(tmp_path)
    workspace.save_entry("fp", "knn", {}, GRAPH, {"method": "exact"})
    fmt = "json" if lost == "knn_info" else GRAPH_FORMATS[lost]
    workspace.entry_path("fp", lost, {}, fmt).unlink()
    assert workspace.load_entry("fp", "knn", {}, GRAPH_FORMATS) is None


def test_a_writer_stopped_before_the_info_leaves_no_entry(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path)
    real_save = Workspace.save

    def save(self, fingerprint, stage, params, value, *, fmt):
        if stage == "knn_table":
            raise KeyboardInterrupt("stopped while writing")
        return real_save(self, fingerprint, stage, params, value, fmt=fmt)

    monkeypatch.setattr(Workspace, "save", save)
    with pytest.raises(KeyboardInterrupt):
        workspace.save_entry("fp", "knn", {}, GRAPH, {"method": "exact"})
    monkeypatch.undo()
    assert workspace.entry_path("fp", "knn_indices", {}, "npy").exists()  # written before the stop
    assert workspace.load_entry("fp", "knn", {}, GRAPH_FORMATS) is None


def test_the_files_an_entry_expects_can_depend_on_its_info(tmp_path):
    """A part stored only for some results (the dynamics' norms) is expected only when the info
    says the entry has it."""
    workspace = Workspace(tmp_path)

    def files(info):
        return {"dyn_logits": "npy", **({"dyn_norms": "npy"} if info["has_norms"] else {})}

    workspace.save_entry("fp", "dyn", {"v": 1}, {"dyn_logits": (np.ones(3), "npy"), "dyn_norms": (None, "npy")},
                         {"has_norms": False})
    assert set(workspace.load_entry("fp", "dyn", {"v": 1}, files).files) == {"dyn_logits"}
    workspace.save_entry("fp", "dyn", {"v": 2}, {"dyn_logits": (np.ones(3), "npy"), "dyn_norms": (np.ones(3), "npy")},
                         {"has_norms": True})
    assert set(workspace.load_entry("fp", "dyn", {"v": 2}, files).files) == {"dyn_logits", "dyn_norms"}
    workspace.entry_path("fp", "dyn_norms", {"v": 2}, "npy").unlink()
    assert workspace.load_entry("fp", "dyn", {"v": 2}, files) is None
