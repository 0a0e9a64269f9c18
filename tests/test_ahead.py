"""Stages computed ahead in a second process (analytics.ahead): the clusters and the probe's
dynamics are the results the stages compute themselves, the pipeline uses them while numba
compiles, and computes them itself when the second process fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import analytics.pipeline as pipeline
from analytics import ahead
from analytics.clusters import ClusterConfig, Clustering, cluster_embeddings
from analytics.datasets import load_dataset
from analytics.dynamics import ProbeConfig
from analytics.dynamics_sources import probe as probe_source
from analytics.numba_cache import Prewarm
from analytics.pipeline import AnalysisConfig, run_analysis
from analytics.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
EMBEDDING = {"source": "test", "v": 1}
PARAMS = {"embedding": EMBEDDING, "test": "clusters ahead"}


@pytest.fixture
def vectors():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 12)) * 4
    return (centres[rng.integers(0, 6, 900)] + rng.normal(size=(900, 12))).astype(np.float32)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 5
    labels = rng.integers(0, 4, 400)
    frame = pd.DataFrame(centres[labels] + rng.normal(size=(400, 6)), columns=[f"f{i}" for i in range(6)])
    frame["label"] = np.array(["a", "b", "c", "d"])[labels]
    frame["id"] = [f"row{i}" for i in range(400)]
    frame.to_csv(tmp_path / "d.csv", index=False)
    return load_dataset(tmp_path / "d.csv")


def clusters(workspace: Workspace, config: ClusterConfig, metric: str):
    return ahead.start("clusters", {"workspace": workspace, "fingerprint": "fp", "embedding_params": EMBEDDING,
                                    "params": PARAMS, "config": config, "metric": metric})


def entry(workspace: Workspace, fingerprint: str, params: dict) -> Clustering | None:
    found = workspace.load_entry(fingerprint, "clusters", params, {"clusters": "npy"})
    return None if found is None else Clustering.from_parts(found.files["clusters"], found.info)


def same(a: Clustering, b: Clustering) -> bool:
    return (np.array_equal(a.coarse, b.coarse) and np.array_equal(a.fine, b.fine)
            and a.to_meta() == b.to_meta())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_second_process_stores_what_the_stage_would_compute(vectors, tmp_path, metric):
    workspace = Workspace(tmp_path / "ws")
    workspace.save("fp", "embeddings", EMBEDDING, vectors, fmt="npy")
    config = ClusterConfig(sample_max=600, seed=2)
    process = clusters(workspace, config, metric)
    assert process is not None and process.wait(timeout=120)
    stored = entry(workspace, "fp", PARAMS)
    assert stored is not None
    here = cluster_embeddings(vectors, config=config, metric=metric)
    assert same(stored, here) and stored.k == here.k >= 2


def test_hdbscan_is_never_computed_ahead(tmp_path):
    """HDBSCAN clusters the map, which does not exist yet while NN-descent compiles."""
    config = AnalysisConfig(projection="pca", k=8, clusters=ClusterConfig(method="hdbscan"))
    assert pipeline._clusters_ahead(SimpleNamespace(config=config), 10**6) is None


def test_without_the_embeddings_in_the_workspace_it_stores_nothing(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    process = clusters(workspace, ClusterConfig(), "cosine")
    assert process is not None and not process.wait(timeout=120)
    assert entry(workspace, "fp", PARAMS) is None


def test_the_second_process_leaves_when_the_analysis_has_gone(vectors, tmp_path):
    """An analysis stopped (a cancelled job) takes its helper with it."""
    workspace = Workspace(tmp_path / "ws")
    workspace.save("fp", "embeddings", EMBEDDING, np.tile(vectors, (300, 1)), fmt="npy")
    script = ("from analytics import ahead; from analytics.clusters import ClusterConfig\n"
              "from analytics.workspace import Workspace\n"
              f"process = ahead.start('clusters', {{'workspace': Workspace({str(workspace.root)!r}), "
              "'fingerprint': 'fp', "
              f"'embedding_params': {EMBEDDING!r}, 'params': {PARAMS!r}, 'metric': 'cosine', "
              "'config': ClusterConfig(sample_max=200_000, silhouette_sample=50_000)})\n"
              "print(process.process.pid, flush=True)\n")
    parent = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and \
            "zombie" not in Path(f"/proc/{child}/status").read_text(errors="replace").lower():
        time.sleep(0.2)
    alive = Path(f"/proc/{child}").exists() and \
        "zombie" not in Path(f"/proc/{child}/status").read_text(errors="replace").lower()
    assert not alive
    assert entry(workspace, "fp", PARAMS) is None  # stopped long before it could finish


SCORED = ("cluster", "cluster_fine", "confidence", "variability", "aum", "el2n", "grand", "vog", "forgetting_events",
          "loss", "label_quality", "region", "heldout_correct")


def same_runs(one, other) -> None:
    for column in SCORED:
        assert one.examples[column].tolist() == other.examples[column].tolist(), column
    assert one.manifest["clusters"] == other.manifest["clusters"]
    assert one.manifest["dynamics"] == other.manifest["dynamics"]
    for name in ("dynamics.npy", "heldout_probs.npy"):
        assert np.array_equal(np.load(one.path / name), np.load(other.path / name)), name


@pytest.mark.parametrize("scheme", ["cross-fit", "independent"])
def test_on_a_cold_numba_cache_the_pipeline_takes_clusters_and_dynamics_from_second_processes(
        dataset, tmp_path, monkeypatch, scheme):
    """The same run, bit for bit, as when the stages compute their results themselves; the
    analysis's own process neither clusters nor trains a probe."""
    config = AnalysisConfig(projection="pca", k=8, clusters=ClusterConfig(sample_max=300),
                            probe=ProbeConfig(hidden=16, epochs=3, scheme=scheme))
    expected = run_analysis(dataset, config, out_dir=tmp_path / "here", workspace=Workspace(tmp_path / "ws1"))
    started = []
    real_start = ahead.start
    monkeypatch.setattr(pipeline, "_compiles_ahead", lambda run, n: True)
    monkeypatch.setattr(ahead, "start", lambda task, request: started.append(task) or real_start(task, request))
    monkeypatch.setattr(ahead, "cluster_embeddings",
                        lambda *a, **k: pytest.fail("the clusters were computed in the analysis's process"))
    for name in ("train_probe", "cross_fit_dynamics"):
        monkeypatch.setattr(probe_source, name, lambda *a, name=name, **k: pytest.fail(f"{name} ran here"))
    monkeypatch.setattr(pipeline, "cross_fit_probabilities", lambda *a, **k: pytest.fail("held-out probes ran here"))
    computed = run_analysis(dataset, config, out_dir=tmp_path / "ahead", workspace=Workspace(tmp_path / "ws2"))
    assert started == ["clusters", "dynamics"]
    same_runs(computed, expected)


def test_when_the_second_processes_fail_the_stages_compute_their_results_themselves(dataset, tmp_path,
                                                                                   monkeypatch):
    config = AnalysisConfig(projection="pca", k=8, clusters=ClusterConfig(sample_max=300),
                            probe=ProbeConfig(hidden=16, epochs=3, scheme="cross-fit"))
    expected = run_analysis(dataset, config, out_dir=tmp_path / "here", workspace=Workspace(tmp_path / "ws1"))
    monkeypatch.setattr(pipeline, "_compiles_ahead", lambda run, n: True)
    monkeypatch.setattr(ahead, "start", lambda *a, **k: Prewarm(
        subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])))
    messages = []
    again = run_analysis(dataset, config, out_dir=tmp_path / "again", workspace=Workspace(tmp_path / "ws2"),
                         progress=lambda stage, fraction, message: messages.append(message))
    same_runs(again, expected)
    assert "The second process did not train the probe: training it here" in messages
    assert "The second process did not compute the clusters: computing them here" in messages


def test_the_probe_trains_ahead_only_on_the_cpu_here_and_up_to_its_size(dataset, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(pipeline, "_compiles_ahead", lambda run, n: True)
    monkeypatch.setattr(ahead, "start", lambda task, request: started.append(task))

    def inputs(config, executor=None):
        config = config.resolved(dataset)
        return pipeline._RunInputs(dataset=dataset, config=config, workspace=Workspace(tmp_path / "ws"),
                                   executor=executor or pipeline.LOCAL, keys=pipeline._stage_keys(dataset, config),
                                   checked=pipeline.check_sources(dataset, config))

    run = inputs(AnalysisConfig(projection="pca", k=8))
    pipeline._dynamics_ahead(run, 1_000)
    assert started == ["dynamics"]
    started.clear()
    pipeline._dynamics_ahead(run, pipeline.DYNAMICS_AHEAD_MAX + 1)
    pipeline._dynamics_ahead(inputs(AnalysisConfig(projection="pca", k=8, scores=False)), 1_000)
    pipeline._dynamics_ahead(inputs(AnalysisConfig(projection="pca", k=8, probe=ProbeConfig(device="cuda"))), 1_000)
    pipeline._dynamics_ahead(inputs(AnalysisConfig(projection="pca", k=8), SimpleNamespace(name="ray")), 1_000)
    assert started == []


def test_the_clusters_are_computed_ahead_only_while_numba_compiles(monkeypatch):
    """A cold numba cache and a kNN graph by NN-descent for the UMAP map: nothing else."""
    umap_run = SimpleNamespace(config=AnalysisConfig())
    pca_run = SimpleNamespace(config=AnalysisConfig(projection="pca"))
    big = umap_run.config.exact_knn_max + 1
    monkeypatch.setattr(pipeline, "numba_compiled", lambda: False)
    assert pipeline._compiles_ahead(umap_run, big)
    assert not pipeline._compiles_ahead(umap_run, big - 1)  # an exact kNN graph: nothing compiles first
    assert not pipeline._compiles_ahead(pca_run, big)
    monkeypatch.setattr(pipeline, "numba_compiled", lambda: True)  # a warm cache
    assert not pipeline._compiles_ahead(umap_run, big)
