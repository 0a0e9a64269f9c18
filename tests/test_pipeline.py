"""The pipeline: artefacts and manifest, resuming from cached stages, opening run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import analytics.pipeline as pipeline
from analytics import ahead
from analytics.datasets import load_dataset
from analytics.dynamics_sources import probe as probe_source
from analytics.embeddings import EmbeddingSpec
from analytics.pipeline import (
    AnalysisConfig,
    DamagedRunError,
    RunError,
    load_run,
    read_artefact,
    run_slice_config,
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
                                          "scores", "issues", "clusters", "hardness", "artefacts", "total"}
    for column in ("confidence", "variability", "correctness", "forgetting_events", "never_learned", "aum",
                   "el2n", "grand", "loss", "margin", "entropy", "label_quality", "label_issue",
                   "knn_label_disagreement", "knn_density", "outlier_score", "knn_shapley", "region",
                   "predicted_label", "heldout_correct", "correct", "cluster", "cluster_fine"):
        assert column in examples.columns, column
    assert manifest["dynamics"]["source"] == "probe" and manifest["dynamics"]["seeds"] == 3
    assert manifest["dynamics"]["heldout"] == "probe out-of-fold (5 folds)"
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
    monkeypatch.setattr(probe_source, "train_probe", lambda *a, **k: calls.append("probe"))
    monkeypatch.setattr(pipeline, "cross_fit_probabilities", lambda *a, **k: calls.append("heldout"))
    monkeypatch.setattr(ahead, "cluster_embeddings", lambda *a, **k: calls.append("clusters"))
    monkeypatch.setattr(pipeline, "check_dataset", lambda *a, **k: calls.append("issues"))
    again = run_analysis(dataset, CONFIG, workspace=workspace)
    assert calls == []  # every stage came from the workspace
    assert again.manifest["issues"]["counts"] and "non_iid_score" in again.examples.columns
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


def workspace_files(workspace):
    """Every cache file of the workspace (not the run folders) with its modification time."""
    return {path: path.stat().st_mtime_ns for path in workspace.root.rglob("*")
            if path.is_file() and "runs" not in path.relative_to(workspace.root).parts}


def test_a_second_run_hits_every_stages_cache(dataset, tmp_path, monkeypatch):
    """UMAP from the PCA map, cross-fitted probes and HDBSCAN on the map: the second run reads
    every stage back, writes nothing to the cache and gives the same run."""
    from analytics.clusters import ClusterConfig
    from analytics.dynamics import ProbeConfig

    config = AnalysisConfig(k=8, seed=0, umap_init="pca", clusters=ClusterConfig(method="hdbscan"),
                            probe=ProbeConfig(hidden=8, epochs=2, scheme="cross-fit"))
    workspace = Workspace(tmp_path / "ws")
    first = run_analysis(dataset, config, workspace=workspace)
    cached = workspace_files(workspace)
    for module, name in [(pipeline, "compute_embeddings"), (pipeline, "build_knn"), (pipeline, "project_pca"),
                         (pipeline, "project_umap"), (probe_source, "cross_fit_dynamics"),
                         (probe_source, "train_probe"), (pipeline, "cross_fit_probabilities"),
                         (pipeline, "check_dataset"), (ahead, "cluster_embeddings")]:
        monkeypatch.setattr(module, name, lambda *a, name=name, **k: pytest.fail(f"{name} ran again"))
    stages = []
    again = run_analysis(dataset, config, workspace=workspace, on_stage=lambda stage, result: stages.append(stage))
    assert stages == ["embeddings", "neighbors", "pca", "umap", "dynamics", "heldout", "scores", "issues", "clusters"]
    assert workspace_files(workspace) == cached
    assert again.path == first.path and again.manifest["artefacts"] == first.manifest["artefacts"]


def test_the_stages_return_their_results_and_change_none_of_their_inputs(dataset, tmp_path):
    """The cross-fitted dynamics stage returns the held-out probabilities of its probes rather
    than storing them in the held-out stage's entry; no stage writes into what it is given."""
    from analytics.dynamics import ProbeConfig

    config = AnalysisConfig(projection="pca", k=8, clusters=None, issues=None,
                            probe=ProbeConfig(hidden=8, epochs=2, scheme="cross-fit")).resolved(dataset)
    workspace = Workspace(tmp_path / "ws")
    run = pipeline._RunInputs(dataset=dataset, config=config, workspace=workspace, executor=pipeline.LOCAL,
                              keys=pipeline._stage_keys(dataset, config), checked=None)
    table = dataset.table.copy()
    quiet = lambda fraction, message: None  # noqa: E731
    vectors = pipeline._embed_stage(run, quiet)
    graph = pipeline._neighbours_stage(run, vectors, quiet)
    inputs = [vectors.copy(), graph.indices.copy(), graph.distances.copy()]

    def stages_written():
        return sorted(path.name for path in (workspace.root / dataset.fingerprint).iterdir())

    before = stages_written()
    trained = pipeline._dynamics_stage(run, vectors, quiet)
    assert [s for s in stages_written() if s not in before] == ["dynamics_gold", "dynamics_info", "dynamics_logits",
                                                                 "dynamics_norms", "dynamics_vog"]
    assert trained.heldout is not None and trained.heldout.shape == (150, 3)
    logits, probs = trained.dynamics.logits.copy(), trained.heldout.copy()
    heldout = pipeline._heldout_stage(run, vectors, trained.heldout, quiet)
    assert "heldout" in stages_written() and heldout.origin == "probe"
    assert heldout.note == "probe out-of-fold (4 folds, the probes of the dynamics)"
    np.testing.assert_array_equal(heldout.probs, probs)
    scored = pipeline._scores_stage(run, trained, heldout, graph, quiet)
    assert {"confidence", "region", "correct", "predicted_label"} <= set(scored.table.columns)
    for before_stage, after_stage in zip(inputs + [logits, probs], [vectors, graph.indices, graph.distances,
                                                                    trained.dynamics.logits, heldout.probs]):
        np.testing.assert_array_equal(before_stage, after_stage)
    pd.testing.assert_frame_equal(dataset.table, table)
    # read back from the cache: the same values, and the cross-fitted probabilities not returned again
    again = pipeline._dynamics_stage(run, vectors, quiet)
    assert again.heldout is None
    np.testing.assert_array_equal(again.dynamics.logits, trained.dynamics.logits)
    np.testing.assert_array_equal(pipeline._heldout_stage(run, vectors, None, quiet).probs, probs)


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
             "clusters.parquet", "slices.parquet", "issues.json", "score_agreement.parquet",
             "score_quantiles.parquet", "seed_stability.parquet", "manifest.json"]


def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_every_file_of_a_run_is_in_the_manifest(dataset, tmp_path):
    run = run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    written = {f.name for f in (tmp_path / "run").iterdir()} - {"manifest.json"}
    assert set(run.manifest["artefacts"]) == written == set(RUN_FILES) - {"manifest.json"}
    assert verify_run(tmp_path / "run") == []


def test_the_score_summaries_are_run_files_that_match_the_rows(dataset, tmp_path):
    from analytics.hardness import (GROUPINGS, HARDNESS_FILES, numeric_scores, quantiles_by_group, score_agreement,
                                    seed_stability)

    run = run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    assert run.manifest["hardness"] == {"files": sorted(HARDNESS_FILES)}
    for name in HARDNESS_FILES:
        entry = run.manifest["artefacts"][name]
        assert entry["bytes"] == (tmp_path / "run" / name).stat().st_size and len(entry["sha256"]) == 64
    scores = numeric_scores(run.examples.columns)
    agreement = read_artefact(tmp_path / "run", "score_agreement.parquet")
    pd.testing.assert_frame_equal(agreement, score_agreement(run.examples, scores))
    assert list(agreement.index) == list(agreement.columns) == scores and len(scores) >= 10
    quantiles = read_artefact(tmp_path / "run", "score_quantiles.parquet")
    groupings = [g for g in GROUPINGS if g in run.examples.columns]
    assert groupings == ["label", "region", "cluster"]
    assert set(zip(quantiles["score"], quantiles["group_by"])) == {(s, g) for s in scores for g in groupings}
    for score, group_by in (("loss", "label"), ("aum", "region"), ("el2n", "cluster")):
        rows = quantiles[(quantiles["score"] == score) & (quantiles["group_by"] == group_by)]
        pd.testing.assert_frame_equal(rows.drop(columns=["score", "group_by"]).reset_index(drop=True),
                                      quantiles_by_group(run.examples[score], run.examples[group_by]))
    # the run keeps its logits as float16: the seeds' rankings from them agree to a few thousandths
    stability = read_artefact(tmp_path / "run", "seed_stability.parquet")
    direct = seed_stability(np.load(tmp_path / "run" / "dynamics.npy").astype(np.float32),
                            run.dataset.label_codes, run.manifest["dynamics"]["early_epoch"])
    assert stability["score"].tolist() == direct["score"].tolist() and (stability["seeds"] == 3).all()
    assert np.allclose(stability["mean_spearman"], direct["mean_spearman"], atol=0.01, equal_nan=True)
    # a run without scores has no summaries
    bare = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, scores=False), out_dir=tmp_path / "bare",
                        workspace=Workspace(tmp_path / "ws"))
    assert bare.manifest["hardness"] is None and not set(HARDNESS_FILES) & set(bare.manifest["artefacts"])


def test_a_run_missing_a_listed_score_summary_is_damaged(dataset, tmp_path):
    run_analysis(dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    del manifest["artefacts"]["score_quantiles.parquet"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    assert [p.file for p in verify_run(tmp_path / "run")] == ["score_quantiles.parquet"]


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


# --- sources of training dynamics ---------------------------------------------------------------

def reference_folder(dataset, folder, *, epochs=3, seed=0):
    """A dynamics folder in the allenai/cartography format for ``dataset`` (random logits)."""
    from analytics.dynamics import TrainingDynamics, write_reference_dynamics

    logits = np.random.default_rng(seed).normal(size=(1, epochs, dataset.n_examples, len(dataset.classes)))
    folder.mkdir(parents=True, exist_ok=True)
    write_reference_dynamics(TrainingDynamics(logits=logits.astype(np.float32), gold=dataset.label_codes,
                                              source="probe"), dataset.table["id"].tolist(), folder)
    return folder


def break_folder(folder, how):
    """Damage a dynamics folder the way a user's files go wrong."""
    if how == "missing":
        return folder / "nothing-here"
    if how == "gap":
        (folder / "dynamics_epoch_1.jsonl").unlink()
    elif how == "unknown guids":
        path = folder / "dynamics_epoch_0.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "guid": "other-" + r["guid"]}) + "\n" for r in lines))
    elif how == "class beyond the labels":
        path = folder / "dynamics_epoch_2.jsonl"
        lines = path.read_text().splitlines()
        lines[6] = json.dumps({**json.loads(lines[6]), "gold": 7})
        path.write_text("\n".join(lines) + "\n")
    return folder


BROKEN = {"missing": "nothing-here", "gap": "epochs [1] are missing",
          "unknown guids": "dynamics_epoch_0.jsonl: none of its guids match",
          "class beyond the labels": "dynamics_epoch_2.jsonl: line 7 has gold 7"}


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_wrong_dynamics_folder_fails_before_any_stage(dataset, tmp_path, how):
    import time

    from analytics.pipeline import SourceError

    folder = break_folder(reference_folder(dataset, tmp_path / "td"), how)
    stages = []
    started = time.perf_counter()
    with pytest.raises(SourceError, match=BROKEN[how].replace("[", r"\[").replace("]", r"\]")):
        run_analysis(dataset, AnalysisConfig(projection="pca", k=8, dynamics_dir=str(folder)),
                     workspace=Workspace(tmp_path / "ws"), progress=lambda stage, f, m: stages.append(stage))
    assert time.perf_counter() - started < 5
    assert stages == [] and not (tmp_path / "ws" / dataset.fingerprint / "embeddings").exists()


def test_both_folder_layouts_give_the_same_dynamics(dataset, tmp_path):
    """The folder of epoch files, or the model output folder that holds training_dynamics/."""
    from analytics.pipeline import check_sources

    epochs_folder = reference_folder(dataset, tmp_path / "td")
    model_folder = tmp_path / "model"
    reference_folder(dataset, model_folder / "training_dynamics")
    checked = [check_sources(dataset, AnalysisConfig(dynamics_dir=str(folder)))
               for folder in (epochs_folder, model_folder)]
    assert checked[1].folder == (model_folder / "training_dynamics").resolve()
    np.testing.assert_array_equal(checked[0].reference.logits, checked[1].reference.logits)
    run = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, dynamics_dir=str(model_folder), clusters=None),
                       out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    dynamics = run.manifest["dynamics"]
    assert dynamics["source"] == "reference" and dynamics["epochs"] == 3
    assert dynamics["folder"] == str((model_folder / "training_dynamics").resolve())
    assert dynamics["heldout"] == "probe out-of-fold (5 folds)" and dynamics["heldout_from"] == "probe"
    np.testing.assert_allclose(np.load(tmp_path / "run" / "dynamics.npy").astype(np.float32),
                               checked[0].reference.logits, atol=2e-3)


def test_checkpoints_are_checked_before_any_stage(dataset, tmp_path):
    from analytics.pipeline import SourceError

    paths = [tmp_path / f"epoch{e}.pt" for e in range(3)]
    for path in paths[::2]:
        path.write_bytes(b"x")
    stages = []
    config = AnalysisConfig(projection="pca", checkpoints=tuple(map(str, paths)))
    with pytest.raises(SourceError, match="Checkpoint 2 of 3: .*epoch1.pt: no such file"):
        run_analysis(dataset, config, workspace=Workspace(tmp_path / "ws"),
                     progress=lambda stage, f, m: stages.append(stage))
    paths[1].write_bytes(b"x")
    marker = tmp_path / "MARKER"
    config = AnalysisConfig(projection="pca", checkpoints=tuple(map(str, paths)),
                            architecture=f'subprocess:run{{"args": ["touch", "{marker}"]}}')
    with pytest.raises(SourceError, match="not a subclass of torch.nn.Module"):
        run_analysis(dataset, config, workspace=Workspace(tmp_path / "ws"),
                     progress=lambda stage, f, m: stages.append(stage))
    assert stages == [] and not marker.exists()


def test_fine_tuning_as_the_source_of_dynamics(dataset, tmp_path):
    """Fine-tuning gives the dynamics; its held-out probabilities are cross-fitted when asked,
    otherwise the probe's, and the manifest and the error source say which."""
    from analytics.finetune import FinetuneConfig

    workspace = Workspace(tmp_path / "ws")
    messages = []
    tuned = FinetuneConfig(epochs=2, batch_size=16, heldout="probe")
    run = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, dynamics_from="finetune", finetune=tuned),
                       workspace=workspace, progress=lambda stage, f, m: messages.append((stage, m)))
    dynamics = run.manifest["dynamics"]
    assert dynamics["source"] == "finetune" and dynamics["epochs"] == 2 and dynamics["seeds"] == 1
    assert dynamics["finetune"]["epochs"] == 2 and dynamics["finetune"]["batch_size"] == 16
    assert dynamics["heldout"].startswith("probe out-of-fold (5 folds); ") and dynamics["heldout_from"] == "probe"
    assert run.manifest["clusters"]["errors"] == "probe (out-of-fold)"
    assert any(stage == "dynamics" and "Fine-tuning epoch 2/2 · step" in m for stage, m in messages)
    assert np.isfinite(run.examples["vog"]).all()
    assert (workspace.root / "finetune" / dataset.fingerprint).is_dir()  # the per-epoch cache
    # the same training with cross-fitted held-out probabilities: the dynamics come from the cache
    crossed = run_analysis(dataset, AnalysisConfig(projection="pca", k=8, dynamics_from="finetune",
                                                   finetune=FinetuneConfig(epochs=2, batch_size=16,
                                                                           heldout="cross-fit")),
                           workspace=workspace)
    assert crossed.path != run.path
    assert crossed.manifest["dynamics"]["heldout"] == "fine-tuning cross-fit, 5 folds"
    assert crossed.manifest["clusters"]["errors"] == "fine-tuned model (out-of-fold)"
    np.testing.assert_array_equal(crossed.examples["confidence"], run.examples["confidence"])
    held = np.load(crossed.path / "heldout_probs.npy")
    assert (crossed.examples["predicted_label"].to_numpy()
            == np.asarray(dataset.classes, dtype=object)[held.argmax(1)]).all()


def test_different_sources_never_share_a_run_folder(dataset, tmp_path):
    from analytics.finetune import FinetuneConfig
    from analytics.pipeline import run_dir_for

    folder = reference_folder(dataset, tmp_path / "td")
    workspace = Workspace(tmp_path / "ws")
    configs = [AnalysisConfig(), AnalysisConfig(dynamics_from="finetune"),
               AnalysisConfig(dynamics_from="finetune", finetune=FinetuneConfig(epochs=3)),
               AnalysisConfig(dynamics_from="finetune", finetune=FinetuneConfig(learning_rate=1e-4)),
               AnalysisConfig(dynamics_from="finetune", finetune=FinetuneConfig(heldout="probe")),
               AnalysisConfig(dynamics_dir=str(folder))]
    keys = [run_dir_for(dataset, config, workspace) for config in configs]
    assert len(set(keys)) == len(keys)
    assert run_dir_for(dataset, AnalysisConfig(dynamics_from="probe"), workspace) == keys[0]
    assert run_dir_for(dataset, AnalysisConfig(dynamics_from="folder", dynamics_dir=str(folder)), workspace) == keys[-1]


@pytest.mark.parametrize("fields, message", [
    ({"dynamics_from": "notes"}, "dynamics_from must be one of"),
    ({"dynamics_from": "folder"}, "need its path"),
    ({"dynamics_from": "probe", "dynamics_dir": "/x"}, "conflict with a dynamics folder"),
    ({"dynamics_from": "finetune", "checkpoints": ("a", "b")}, "conflict with per-epoch checkpoints"),
    ({"dynamics_dir": "/x", "checkpoints": ("a", "b")}, "not both"),
    ({"dynamics_from": "checkpoints", "checkpoints": ("a",)}, "at least two checkpoints"),
    ({"dynamics_from": "finetune", "scores": False}, "Without scores"),
])
def test_conflicting_sources_are_refused_with_a_clear_message(fields, message):
    with pytest.raises(ValueError, match=message):
        AnalysisConfig(**fields)


def test_the_issues_stage_writes_its_columns_and_a_checksummed_issues_json(dataset, tmp_path):
    from analytics.data_issues import IssueOptions
    from analytics.pipeline import analysis_columns, read_issues, run_dir_for, run_slice_features

    table = dataset.table.copy()  # plant three copies of row 0 under other ids, one in another split
    copies = pd.concat([table.iloc[[0, 0, 0]]] * 1, ignore_index=True)
    copies["id"] = ["copy1", "copy2", "copy3"]
    planted = pd.concat([table, copies], ignore_index=True)
    planted["split"] = ["train"] * (len(planted) - 1) + ["test"]
    planted.to_csv(tmp_path / "planted.csv", index=False)
    planted_dataset = load_dataset(tmp_path / "planted.csv")
    run = run_analysis(planted_dataset, CONFIG, out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    examples = run.examples
    for column in ("near_duplicate", "duplicate_set", "duplicate_kind", "duplicate_label_conflict", "split_leak",
                   "non_iid_score"):
        assert column in examples.columns, column
    copied = examples["id"].isin(["row0", "copy1", "copy2", "copy3"]).to_numpy()
    assert examples.loc[copied, "near_duplicate"].all() and examples.loc[copied, "duplicate_kind"].eq("exact").all()
    assert examples.loc[copied, "duplicate_set"].nunique() == 1
    assert examples.loc[copied, "split_leak"].all() and examples["split_leak"].sum() == 4
    issues = json.loads((tmp_path / "run" / "issues.json").read_text())
    assert issues["issues"]["near_duplicate"]["count"] == int(examples["near_duplicate"].sum()) >= 4
    assert issues["split_leaks"]["pairs"] and issues["split_leaks"]["leak_free_split"]["moved"] == 1
    assert "issues.json" in run.manifest["artefacts"] and verify_run(tmp_path / "run") == []
    assert run.manifest["issues"]["counts"]["split_leak"] == 4
    assert run.manifest["issues"]["counts"] == {t: e["count"] for t, e in issues["issues"].items()}
    # the issue columns are analysis columns: not slice features, not the dataset's own columns
    assert {"near_duplicate", "non_iid_score"} <= analysis_columns(examples)
    features = run_slice_features(examples, None, run_slice_config(run.manifest), analysis_columns(examples))
    names = {feature.name for feature in features}
    assert "split" in names and not {"near_duplicate", "duplicate_set", "split_leak", "non_iid_score"} & names
    loaded = load_run(tmp_path / "run")
    assert "near_duplicate" not in loaded.dataset.table.columns
    assert read_issues(loaded) == issues
    (tmp_path / "run" / "issues.json").write_text(json.dumps({**issues, "n_examples": 0}))
    assert [p.file for p in verify_run(tmp_path / "run")] == ["issues.json"]
    # switched off: no issues.json, no columns, another run folder; one check off changes the key too
    workspace = Workspace(tmp_path / "ws")
    off = AnalysisConfig(projection="pca", k=8, issues=None)
    bare = run_analysis(planted_dataset, off, out_dir=tmp_path / "off", workspace=workspace)
    assert not (tmp_path / "off" / "issues.json").exists() and "near_duplicate" not in bare.examples.columns
    assert bare.manifest["issues"] is None and verify_run(tmp_path / "off") == []
    assert read_issues(load_run(tmp_path / "off")) is None
    folders = {run_dir_for(planted_dataset, config, workspace)
               for config in (CONFIG, off, AnalysisConfig(projection="pca", k=8, issues=IssueOptions(images=False)))}
    assert len(folders) == 3


def test_a_run_without_issues_json_from_before_the_checks_still_loads(dataset, tmp_path):
    run_analysis(dataset, AnalysisConfig(projection="pca", k=8, scores=False, clusters=None), out_dir=tmp_path / "run", workspace=Workspace(tmp_path / "ws"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    del manifest["issues"], manifest["issue_columns"], manifest["artefacts"]["issues.json"]
    (tmp_path / "run" / "issues.json").unlink()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    assert verify_run(tmp_path / "run") == []
    assert load_run(tmp_path / "run").examples["near_duplicate"].dtype == bool
