"""The pipeline: artefacts and manifest, resuming from cached stages, opening run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import analytics.pipeline as pipeline
from analytics.datasets import load_dataset
from analytics.embeddings import EmbeddingSpec
from analytics.pipeline import (
    AnalysisConfig,
    DamagedRunError,
    RunError,
    load_run,
    read_artefact,
    run_analysis,
    verify_run,
)
from analytics.workspace import Workspace


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 5
    labels = rng.integers(0, 3, 150)
    frame = pd.DataFrame(centres[labels] + rng.normal(size=(150, 5)), columns=[f"f{i}" for i in range(5)])
    frame["label"] = np.array(["a", "b", "c"])[labels]
    frame["id"] = [f"row{i}" for i in range(150)]
    frame.to_csv(tmp_path / "d.csv", index=False)
    return load_dataset(tmp_path / "d.csv")


CONFIG = AnalysisConfig(projection="pca", k=8)


def test_run_writes_the_artefacts_and_manifest(dataset, tmp_path):
    run = run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    examples = pd.read_parquet(tmp_path / "run" / "examples.parquet")
    assert list(examples.columns[:2]) == ["id", "label"]
    assert {"x", "y", "pca_x", "pca_y", "f0"} <= set(examples.columns)
    assert examples["id"].tolist() == dataset.table["id"].tolist()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["dataset"]["fingerprint"] == dataset.fingerprint
    assert manifest["embedding"]["source"] == "tabular" and manifest["embedding"]["dims"] == 5
    assert manifest["neighbors"] == {"k": 8, "metric": "euclidean", "method": "exact", "recall": 1.0,
                                     "recall_queries": 150}
    assert set(manifest["timings_s"]) == {"embeddings", "neighbors", "pca", "dynamics", "heldout",
                                          "scores", "clusters", "artefacts", "total"}
    for column in ("confidence", "variability", "correctness", "forgetting_events", "never_learned", "aum",
                   "el2n", "grand", "loss", "margin", "entropy", "label_quality", "label_issue",
                   "knn_label_disagreement", "knn_density", "outlier_score", "knn_shapley", "region",
                   "predicted_label", "heldout_correct", "correct", "cluster", "cluster_fine"):
        assert column in examples.columns, column
    assert manifest["dynamics"]["source"] == "probe" and manifest["dynamics"]["seeds"] == 3
    assert np.load(tmp_path / "run" / "dynamics.npy").shape == (3, 10, 150, 3)
    assert set(examples["region"]) <= {"easy-to-learn", "ambiguous", "hard-to-learn"}
    assert {"numpy", "umap-learn", "torch"} <= set(manifest["versions"])
    assert manifest["device"] == "cpu"
    with np.load(tmp_path / "run" / "neighbors.npz") as graph:
        assert graph["indices"].shape == (150, 8)
    assert np.load(tmp_path / "run" / "embeddings.npy").shape == (150, 5)
    assert run.examples.equals(examples)
    assert {"clusters.parquet", "slices.parquet"} <= set(manifest["artefacts"])


def test_the_run_clusters_names_and_slices(dataset, tmp_path):
    run = run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    examples = run.examples
    clusters = pd.read_parquet(tmp_path / "run" / "clusters.parquet")
    coarse = clusters[clusters["level"] == "coarse"].set_index("cluster")
    fine = clusters[clusters["level"] == "fine"].set_index("cluster")
    # one row per cluster id in the examples, sizes that add up, fine clusters inside their parent
    assert sorted(coarse.index) == sorted(examples["cluster"].unique())
    assert sorted(fine.index) == sorted(examples["cluster_fine"].unique())
    assert coarse["size"].sum() == fine["size"].sum() == len(examples)
    for fine_id, parent in fine["parent"].items():
        assert set(examples.loc[examples["cluster_fine"] == fine_id, "cluster"]) == {parent}
    # three well separated blobs, one per label: three pure coarse clusters, named from the features
    assert len(coarse) == 3 and (coarse["purity"] > 0.95).all()
    assert all(name for name in coarse["name"]) and all(len(r) for r in coarse["representatives"])
    expected_accuracy = examples.groupby("cluster")["correct"].mean()
    assert np.allclose(coarse["accuracy"].sort_index(), expected_accuracy.sort_index())
    for column in ("label_mix", "mean_el2n", "label_issue_share", "ambiguous_share", "accuracy_low"):
        assert column in clusters.columns
    slices = pd.read_parquet(tmp_path / "run" / "slices.parquet")
    assert list(slices.columns[:4]) == ["slice", "features", "codes", "support"]
    assert (slices["error_rate"] > slices["overall_error_rate"]).all()
    info = run.manifest["clusters"]
    assert info["method"] == "kmeans" and info["k"] == 3 and 0 <= info["uniformity"]["harmony"] <= 1
    assert info["errors"] == "probe (out-of-fold)"
    # the dataset opened from the run folder does not carry the analysis columns
    reopened = load_run(tmp_path / "run")
    assert "cluster" not in reopened.dataset.table.columns and "correct" not in reopened.dataset.table.columns


def test_clusters_can_be_switched_off_or_set(dataset, tmp_path):
    from analytics.clusters import ClusterConfig

    run = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, clusters=None), out_dir=tmp_path / "a",
                       workspace=Workspace(tmp_path / "ws"))
    assert "cluster" not in run.examples.columns and not (tmp_path / "a" / "clusters.parquet").exists()
    run = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, clusters=ClusterConfig(k=5)),
                       out_dir=tmp_path / "b", workspace=Workspace(tmp_path / "ws"))
    assert run.examples["cluster"].nunique() == 5 and run.manifest["clusters"]["k"] == 5


def test_a_second_run_resumes_from_the_cache(dataset, tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "ws")
    run_analysis(dataset, CONFIG, workspace=workspace)
    calls = []
    monkeypatch.setattr(pipeline, "compute_embeddings", lambda *a, **k: calls.append("embed"))
    monkeypatch.setattr(pipeline, "build_knn", lambda *a, **k: calls.append("knn"))
    monkeypatch.setattr(pipeline, "project_pca", lambda *a, **k: calls.append("pca"))
    monkeypatch.setattr(pipeline, "train_probe", lambda *a, **k: calls.append("probe"))
    monkeypatch.setattr(pipeline, "cross_fit_probabilities", lambda *a, **k: calls.append("heldout"))
    monkeypatch.setattr(pipeline, "cluster_embeddings", lambda *a, **k: calls.append("clusters"))
    again = run_analysis(dataset, CONFIG, workspace=workspace)
    assert calls == []  # every stage came from the workspace
    assert again.path.parent.parent == workspace.root / "runs"


def test_a_run_stopped_after_a_stage_does_not_redo_it(dataset, tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "ws")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("stopped during the map")

    monkeypatch.setattr(pipeline, "project_pca", crash)
    with pytest.raises(KeyboardInterrupt):
        run_analysis(dataset, CONFIG, workspace=workspace)
    monkeypatch.undo()
    embedded = []
    real = pipeline.compute_embeddings
    monkeypatch.setattr(pipeline, "compute_embeddings", lambda *a, **k: embedded.append(1) or real(*a, **k))
    run_analysis(dataset, CONFIG, workspace=workspace)
    assert embedded == []


def test_load_run_round_trip_and_refuses_a_modified_file(dataset, tmp_path):
    run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    run = load_run(tmp_path / "run")
    assert run.dataset.fingerprint == dataset.fingerprint
    pd.testing.assert_frame_equal(run.dataset.table, dataset.table, check_dtype=False)
    assert run.embeddings().shape == (150, 5)
    examples = pd.read_parquet(tmp_path / "run" / "examples.parquet")
    examples.loc[0, "label"] = "c"
    examples.to_parquet(tmp_path / "run" / "examples.parquet")
    with pytest.raises(RunError, match="does not match its manifest"):
        load_run(tmp_path / "run")


def test_load_run_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(tmp_path)


def test_precomputed_embeddings_file(dataset, tmp_path):
    vectors = np.random.default_rng(1).normal(size=(150, 12)).astype(np.float32)
    np.save(tmp_path / "e.npy", vectors)
    config = AnalysisConfig(embedding=EmbeddingSpec(source="file", path=str(tmp_path / "e.npy")),
                            projection="pca")
    run = run_analysis(dataset, config, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    assert run.manifest["embedding"]["dims"] == 12 and run.manifest["embedding"]["metric"] == "cosine"
    np.testing.assert_allclose(run.embeddings(), vectors, atol=1e-2)


def test_large_data_methods_are_used_and_recorded(dataset, tmp_path, monkeypatch):
    """From the size thresholds on, UMAP starts from the PCA map and one set of cross-fitted
    probes gives the dynamics and the held-out probabilities (no separate fold probes)."""
    from analytics.dynamics import ProbeConfig

    monkeypatch.setattr(ProbeConfig, "CROSS_FIT_FROM", 100)
    monkeypatch.setattr(pipeline, "PCA_START_FROM", 100)
    starts = []
    real_umap = pipeline.project_umap
    monkeypatch.setattr(pipeline, "project_umap",
                        lambda *a, **k: starts.append(k.get("init")) or real_umap(*a, **k))
    real_cross_fit = pipeline.cross_fit_probabilities
    monkeypatch.setattr(pipeline, "cross_fit_probabilities",
                        lambda *a, **k: pytest.fail("the cross-fitted probes already held every example out"))
    config = AnalysisConfig(k=8, probe=ProbeConfig(hidden=0, epochs=10, learning_rate=0.05), clusters=None)
    run = run_analysis(dataset, config, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    assert len(starts) == 1 and starts[0] is not None and starts[0].shape == (150, 2)
    assert run.manifest["projection"]["init"] == "pca"
    dynamics = run.manifest["dynamics"]
    assert dynamics["scheme"] == "cross-fit" and dynamics["folds"] == 4 and dynamics["seeds"] == 3
    held = np.load(run.path / "heldout_probs.npy")
    assert held.shape == (150, 3) and np.allclose(held.sum(1), 1, atol=1e-5)
    assert run.examples["heldout_correct"].mean() > 0.9
    # below the thresholds: the spectral start and independent probes plus fold probes
    monkeypatch.setattr(ProbeConfig, "CROSS_FIT_FROM", 1000)
    monkeypatch.setattr(pipeline, "PCA_START_FROM", 1000)
    monkeypatch.setattr(pipeline, "cross_fit_probabilities", real_cross_fit)
    small = run_analysis(dataset, config, out_dir=tmp_path / "small", workspace=Workspace(tmp_path / "ws2"))
    assert starts[-1] is None and small.manifest["projection"]["init"] == "spectral"
    assert small.manifest["dynamics"]["scheme"] == "independent" and small.manifest["dynamics"]["folds"] == 5


RUN_FILES = ["examples.parquet", "neighbors.npz", "dynamics.npy", "heldout_probs.npy", "embeddings.npy",
             "clusters.parquet", "slices.parquet", "manifest.json"]


def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_every_file_of_a_run_is_in_the_manifest(dataset, tmp_path):
    run = run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    written = {f.name for f in (tmp_path / "run").iterdir()} - {"manifest.json"}
    assert set(run.manifest["artefacts"]) == written == set(RUN_FILES) - {"manifest.json"}
    assert verify_run(tmp_path / "run") == []


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_truncated_file_is_named_and_the_run_recomputed(dataset, tmp_path, monkeypatch, name):
    workspace = Workspace(tmp_path / "ws")
    run = run_analysis(dataset, CONFIG, workspace=workspace)  # where the app keeps its runs
    truncate(run.path / name)

    assert [problem.file for problem in verify_run(run.path)] == [name]
    with pytest.raises(DamagedRunError) as caught:
        load_run(run.path)
    message = str(caught.value)
    assert name in message and str(tmp_path) not in message
    assert caught.value.problems[0].file == name

    embedded = []  # the stages come back from the workspace cache: only the run folder is rewritten
    real = pipeline.compute_embeddings
    monkeypatch.setattr(pipeline, "compute_embeddings", lambda *a, **k: embedded.append(1) or real(*a, **k))
    again = run_analysis(dataset, CONFIG, workspace=workspace)
    assert embedded == [] and again.path == run.path
    assert verify_run(run.path) == []
    pd.testing.assert_frame_equal(load_run(run.path).examples, run.examples)


@pytest.mark.parametrize("name, read", [("neighbors.npz", lambda run: run.neighbors()),
                                        ("dynamics.npy", lambda run: run.dynamics()),
                                        ("embeddings.npy", lambda run: run.embeddings())])
def test_files_read_later_are_checked_too(dataset, tmp_path, name, read):
    run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    run = load_run(tmp_path / "run")
    assert read(run) is not None
    truncate(tmp_path / "run" / name)
    with pytest.raises(DamagedRunError, match=f"{name} does not match its manifest") as caught:
        read(run)
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(DamagedRunError, match=name):
        read_artefact(tmp_path / "run", name)


def test_a_changed_byte_and_a_hostile_manifest_are_refused(dataset, tmp_path):
    run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    file = tmp_path / "run" / "heldout_probs.npy"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    assert [str(p) for p in verify_run(tmp_path / "run")] == [
        "heldout_probs.npy does not match its manifest (checksum differs): it was changed or only partly copied"]

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    manifest["artefacts"]["../outside.npy"] = {"bytes": 1, "sha256": "0"}
    del manifest["artefacts"]["neighbors.npz"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    problems = {p.file: p.reason for p in verify_run(tmp_path / "run")}
    assert problems["neighbors.npz"] == "is not listed in manifest.json with its checksum"
    assert problems["../outside.npy"] == "is not a file name of a run folder"
    with pytest.raises(DamagedRunError):
        load_run(tmp_path / "run")
