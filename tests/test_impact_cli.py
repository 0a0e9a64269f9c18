"""`cartographer impact` on a small analysed run, and the experiments' inputs read from a run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analytics.cli import main
from analytics.clusters import ClusterConfig
from analytics.datasets import load_dataset
from analytics.dynamics import ProbeConfig
from analytics.impact import impact_data
from analytics.pipeline import AnalysisConfig, load_run, run_analysis
from analytics.workspace import Workspace


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 240-row table with a test split, analysed quickly (PCA map, short probe, 3 clusters)."""
    folder = tmp_path_factory.mktemp("impact-run")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 240)
    table = pd.DataFrame(rng.normal(size=(240, 4)) + labels[:, None] * 1.5, columns=["f1", "f2", "f3", "f4"])
    table["label"] = np.array(["cat", "dog", "emu"])[labels]
    table["split"] = np.where(np.arange(240) % 5 == 0, "test", "train")
    table.to_csv(folder / "animals.csv", index=False)
    dataset = load_dataset(folder / "animals.csv")
    config = AnalysisConfig(projection="pca", probe=ProbeConfig(epochs=3, seeds=2), clusters=ClusterConfig(k=3))
    run_analysis(dataset, config, workspace=Workspace(folder / "ws"), out_dir=folder / "run")
    return folder / "run"


def test_impact_data_reads_the_run(small_run):
    run = load_run(small_run)
    data = impact_data(run)
    assert data.features.shape == (240, run.embeddings().shape[1]) and data.n == 240
    assert {"el2n", "aum", "label_quality", "label_issue"} <= set(data.scores.columns)
    assert (data.split == "test").sum() == 48 and data.probe == ProbeConfig(epochs=3, seeds=2)
    assert set(data.cluster_names) == {0, 1, 2} and data.key == impact_data(load_run(small_run)).key


def test_cli_pruning_writes_the_report(small_run, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["impact", str(small_run), "--out", str(out), "--scores", "aum", "el2n", "--fractions", "0.5", "1",
                 "--seeds", "2", "--epochs", "5"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["pruning.csv", "pruning.html", "pruning.json", "pruning_runs.csv"]
    table = pd.read_csv(out / "pruning.csv")
    assert set(table["score"]) == {"aum", "el2n", "random"} and set(table["kept_fraction"]) == {0.5, 1.0}
    assert (table["n_eval"] == 48).all()  # judged on the test split only
    info = json.loads((out / "pruning.json").read_text())["info"]
    assert "held-out 'test' split" in info["evaluation"] and info["probe"].startswith("linear head, 5 epochs")
    assert "wrote pruning.csv" in capsys.readouterr().out
    # the second time it comes from the workspace cache
    assert main(["impact", str(small_run), "--out", str(out), "--scores", "aum", "el2n", "--fractions", "0.5", "1",
                 "--seeds", "2", "--epochs", "5"]) == 0
    assert "(from the workspace cache)" in capsys.readouterr().out


def test_cli_easy_hard_and_what_if(small_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["impact", str(small_run), "--out", str(out), "--experiment", "easy-hard", "--score", "aum",
                 "--buckets", "2", "--by-cluster", "--seeds", "1", "--probe", "run"]) == 0
    buckets = pd.read_csv(out / "easy_hard_buckets.csv")
    assert len(buckets) == 240 and set(buckets["bucket"]) == {"easy", "hard"}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(load_run(small_run).examples["id"].astype(str)[:20]) + "\n")
    assert main(["impact", str(small_run), "--out", str(out), "--experiment", "what-if", "--remove-ids", str(ids),
                 "--seeds", "1"]) == 0
    table = pd.read_csv(out / "what_if.csv")
    assert set(table["variant"]) == {"original", "curated", "random removal"} and "overall" in set(table["scope"])
    assert main(["impact", str(small_run), "--out", str(out), "--experiment", "what-if",
                 "--remove-flagged", "label_issue", "--seeds", "1", "--evaluate-on", "original"]) == 0
    assert json.loads((out / "what_if.json").read_text())["info"]["source"] == "rows flagged by label_issue"


def test_cli_what_if_from_a_review_session(small_run, tmp_path, capsys):
    from analytics.store import ReviewStore

    url = f"sqlite:///{tmp_path / 'review.sqlite'}"
    run = load_run(small_run)
    ids = run.examples["id"].astype(str).tolist()
    with ReviewStore.open(url) as store:
        session = store.create_session("impact check", ids[:6], owner="ana", fingerprint=run.dataset.fingerprint,
                                       classes=run.dataset.classes)
        store.record_decisions(session.id, ids[:3], "ana", "drop")
        store.record_decision(session.id, ids[3], "ana", "relabel", new_label="emu")
    out = tmp_path / "report"
    assert main(["impact", str(small_run), "--out", str(out), "--experiment", "what-if", "--session", "impact check",
                 "--database-url", url, "--seeds", "1"]) == 0
    info = json.loads((out / "what_if.json").read_text())["info"]
    assert info["removed"] == 3 and info["relabeled"] == 1 and info["unchanged_decisions"] == ["2 undecided"]


def test_cli_errors_exit_2(small_run, tmp_path, capsys):
    assert main(["impact", str(small_run), "--out", str(tmp_path), "--scores", "nonsense"]) == 2
    assert "no score 'nonsense'" in capsys.readouterr().err
    assert main(["impact", str(small_run), "--out", str(tmp_path), "--experiment", "what-if"]) == 2
    assert "exactly one of --session" in capsys.readouterr().err
