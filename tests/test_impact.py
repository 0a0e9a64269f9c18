"""Curation impact: the batched probe, pruning, held-out evaluation, easy-to-hard, what-if, cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from analytics import impact
from analytics.dynamics import ProbeConfig, _standardise, cross_fit_probabilities, fit_probes, predict_probes
from analytics.impact import (
    Changes,
    EasyHardConfig,
    Evaluation,
    ImpactData,
    ImpactError,
    PruningConfig,
    WhatIfConfig,
    changes_from_ids,
    changes_from_outcome,
    easy_to_hard,
    evaluation_splits,
    hardness_buckets,
    kept_rows,
    pruning_curves,
    stored_result,
    what_if,
)
from analytics.impact_report import figure_html, figure_spec, write_report
from analytics.neighbors import build_knn
from analytics.scores import HIGHER, LOWER
from analytics.scores.neighbourhood import knn_label_disagreement
from analytics.workspace import Workspace

# Small and converged: 40 epochs of a linear head on a few hundred rows take well under a second.
PROBE = ProbeConfig(hidden=0, epochs=40, learning_rate=1e-2)
FAST = dict(seeds=2, evaluation=Evaluation(folds=3), probe=PROBE)


def planted_noise(*, n: int = 400, flip: float = 0.3, seed: int = 1, split: bool = False, clusters: bool = False):
    """Two Gaussian classes; ``flip`` of class 0 labelled 1 (class-dependent noise drags a linear
    boundary, so it hurts). Scores: kNN label disagreement from the shared graph (noise-aware)
    and a plain random column. Returns the data, the true labels and the flipped mask."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 0] += np.where(truth == 1, 2.0, -2.0)
    labels = truth.copy()
    flipped = (truth == 0) & (rng.random(n) < flip)
    labels[flipped] = 1
    graph = build_knn(x, k=10, metric="euclidean")
    scores = pd.DataFrame({**knn_label_disagreement(graph.indices, labels), "noise": rng.random(n)})
    data = ImpactData(
        features=x, labels=labels, classes=("a", "b"), ids=np.array([f"ex{i}" for i in range(n)], dtype=object),
        scores=scores, split=np.where(rng.random(n) < 0.25, "test", "train").astype(object) if split else None,
        clusters=(x[:, 1] > 0).astype(np.int64) if clusters else None,
        cluster_names={0: "low <b>x1</b>", 1: "high x1"} if clusters else {},
        harder={"noise": HIGHER})  # a column of the test's own: not a registered score
    return data, truth, flipped


def test_a_column_of_the_callers_own_needs_its_direction():
    data, _, _ = planted_noise(n=120)
    unknown = ImpactData(**{**data.__dict__, "harder": {}})
    with pytest.raises(ImpactError, match="'noise' is not a registered score column; give its direction"):
        easy_to_hard(unknown, EasyHardConfig(score="noise", **FAST))
    with pytest.raises(ImpactError, match="'noise' is not a registered score column"):
        pruning_curves(unknown, PruningConfig(scores=("noise",), fractions=(0.5,), **FAST))
    with pytest.raises(ImpactError, match="harder must say 'higher' or 'lower'"):
        ImpactData(**{**data.__dict__, "harder": {"noise": "up"}})
    # given as lower = harder, the order of the buckets turns round
    higher = hardness_buckets(data, "noise", buckets=2)
    lower = hardness_buckets(ImpactData(**{**data.__dict__, "harder": {"noise": LOWER}}), "noise", buckets=2)
    assert (higher["bucket_index"] != lower["bucket_index"]).mean() > 0.9


# ----------------------------------------------------------------------------- the probe


@pytest.mark.parametrize("hidden", [0, 8])
def test_fit_probes_trains_the_pipeline_probe(hidden):
    """One member of fit_probes is the probe of cross_fit_probabilities, step for step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    config = ProbeConfig(hidden=hidden, epochs=3, folds=3)
    reference, _ = cross_fit_probabilities(x, y, 3, config)
    standardised = _standardise(x)
    splitter = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    for fold, (train, held_out) in enumerate(splitter.split(np.zeros(150), y)):
        stack = fit_probes(standardised, train[None], y[train][None], 3, config, seeds=[fold])
        np.testing.assert_allclose(predict_probes(stack, standardised, held_out)[0], reference[held_out], atol=1e-5)


def test_fit_probes_members_train_independently():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    rows = np.stack([rng.permutation(120)[:60] for _ in range(3)])
    together = predict_probes(fit_probes(x, rows, y[rows], 3, PROBE, seeds=[0, 1, 2]), x, np.arange(120))
    for i in range(3):
        alone = predict_probes(fit_probes(x, rows[i:i + 1], y[rows[i]][None], 3, PROBE, seeds=[i]), x, np.arange(120))
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)
    assert together.shape == (3, 120, 3) and np.allclose(together.sum(2), 1, atol=1e-5)


def test_fit_probes_refuses_mismatched_inputs():
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="one seed per probe"):
        fit_probes(x, np.zeros((2, 4), int), np.zeros((2, 4), int), 2, PROBE, seeds=[0])
    with pytest.raises(ValueError, match="class indices"):
        fit_probes(x, np.zeros((1, 4), int), np.full((1, 4), 5), 2, PROBE, seeds=[0])


# ----------------------------------------------------------------------------- which rows pruning keeps


def test_kept_rows_follow_the_direction():
    pool = np.arange(10, 20)
    values = np.arange(10.0)  # row 10 easiest ... row 19 hardest (higher = harder)
    labels = np.zeros(10, int)
    keep = lambda **kw: kept_rows(pool, 0.3, values=values, labels=labels, **kw).tolist()  # noqa: E731
    assert keep(direction="drop-hardest") == [10, 11, 12]
    assert keep(direction="drop-easiest") == [17, 18, 19]
    assert keep(direction="window", offset=0.2) == [15, 16, 17]  # skip the two hardest
    assert keep(direction="window", offset=0.9) == [10, 11, 12]  # slides back to fit
    assert keep(direction="drop-hardest", harder_is_higher=False) == [17, 18, 19]
    random = kept_rows(pool, 0.3, values=None, labels=labels, rng=np.random.default_rng(0))
    assert len(random) == 3 and set(random) <= set(pool)


def test_kept_rows_class_balanced_and_ties():
    pool = np.arange(12)
    labels = np.array([0] * 8 + [1] * 4)
    values = np.r_[np.arange(8.0), np.arange(4.0) + 100]  # class 1 is all "harder"
    plain = kept_rows(pool, 0.5, values=values, labels=labels)
    balanced = kept_rows(pool, 0.5, values=values, labels=labels, class_balanced=True)
    assert set(plain) == {0, 1, 2, 3, 4, 5}  # drops every class-1 row
    assert balanced.tolist() == [0, 1, 2, 3, 8, 9]  # half of each class
    tied = np.zeros(12)
    draws = {tuple(kept_rows(pool, 0.5, values=tied, labels=labels, rng=np.random.default_rng(s))) for s in range(5)}
    assert len(draws) > 1  # ties are broken at random, not by row order


# ----------------------------------------------------------------------------- pruning curves


def test_dropping_by_a_noise_aware_score_beats_random():
    data, truth, flipped = planted_noise()
    config = PruningConfig(scores=("knn_label_disagreement",), fractions=(0.7, 1.0), **FAST)
    against_truth = pruning_curves(data, config, evaluation_labels=truth).table.set_index(["score", "kept_fraction"])
    against_labels = pruning_curves(data, config).table.set_index(["score", "kept_fraction"])
    for table in (against_truth, against_labels):
        assert table.loc[("knn_label_disagreement", 0.7), "accuracy"] > table.loc[("random", 0.7), "accuracy"]
        # at 100% every score keeps the whole training set: the curves meet
        assert table.loc[("knn_label_disagreement", 1.0), "accuracy"] == table.loc[("random", 1.0), "accuracy"]
    assert against_truth.loc[("knn_label_disagreement", 0.7), "vs_random"] > 0.02
    row = against_truth.loc[("random", 0.7)]
    assert row["runs"] == 2 and row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["n_eval"] == 400


def test_pruning_table_and_runs_shapes():
    data, _, _ = planted_noise(n=200)
    result = pruning_curves(data, PruningConfig(scores=("noise", "knn_label_disagreement"), fractions=(0.5, 1.0),
                                                direction="window", offset=0.1, **FAST))
    assert set(result.table["score"]) == {"noise", "knn_label_disagreement", "random"}
    assert len(result.table) == 6 and len(result.runs) == 3 * 2 * 2
    assert set(result.table.loc[result.table["score"] != "random", "direction"]) == {"window"}
    half = result.table[result.table["kept_fraction"] == 0.5]
    assert (half["n_train"] == round(0.5 * 200 * 2 / 3)).all()  # half of each 3-fold training set
    assert result.info["evaluation"].startswith("3-fold stratified cross-validation")


# ----------------------------------------------------------------------------- held-out evaluation


def spy_on_training(monkeypatch):
    """Record every (training rows, evaluated rows) pair the experiments use."""
    calls = []
    real_fit, real_predict = impact.fit_probes, impact.predict_probes

    def fit(features, rows, targets, n_classes, config, *, seeds, progress=None):
        calls.append({"train": np.asarray(rows).copy()})
        return real_fit(features, rows, targets, n_classes, config, seeds=seeds)

    def predict(stack, features, rows):
        calls[-1]["evaluated"] = np.asarray(rows).copy()
        return real_predict(stack, features, rows)

    monkeypatch.setattr(impact, "fit_probes", fit)
    monkeypatch.setattr(impact, "predict_probes", predict)
    return calls


def test_cross_validation_never_evaluates_a_training_row(monkeypatch):
    data, _, _ = planted_noise(n=150)
    calls = spy_on_training(monkeypatch)
    config = PruningConfig(scores=("knn_label_disagreement",), fractions=(0.4, 1.0), seeds=1,
                           evaluation=Evaluation(folds=3, repeats=2), probe=PROBE)
    pruning_curves(data, config)
    assert len(calls) == 2 * 3 * 2  # repeats × folds × fractions (one size per fraction)
    splits = evaluation_splits(data, config.evaluation)
    for call in calls:
        assert not np.intersect1d(call["train"], call["evaluated"]).size
        split = next(s for s in splits if np.array_equal(s.evaluate, call["evaluated"]))
        assert np.isin(call["train"], split.train).all()  # pruning ranks only the training fold
    for repeat in (0, 1):  # every row is judged exactly once per repeat
        judged = np.concatenate([s.evaluate for s in splits if s.repeat == repeat])
        assert np.array_equal(np.sort(judged), np.arange(150))


def test_test_split_is_only_evaluated_and_never_trained_on(monkeypatch):
    data, _, _ = planted_noise(n=200, split=True)
    calls = spy_on_training(monkeypatch)
    what_if(data, changes_from_ids(data.ids[:10]), WhatIfConfig(**FAST))
    easy_to_hard(data, EasyHardConfig(score="noise", **FAST))
    test_rows = np.flatnonzero(data.split == "test")
    assert calls and all(np.isin(c["evaluated"], test_rows).all() for c in calls)
    assert all(not np.isin(c["train"], test_rows).any() for c in calls)


def test_scores_of_evaluation_rows_do_not_change_what_is_kept():
    data, _, _ = planted_noise(n=200, split=True)
    scrambled = data.scores.copy()
    test = data.split == "test"
    scrambled.loc[test, "knn_label_disagreement"] = np.random.default_rng(5).random(test.sum()) * 10
    other = ImpactData(**{**data.__dict__, "scores": scrambled})
    config = PruningConfig(scores=("knn_label_disagreement",), fractions=(0.5,), **FAST)
    pd.testing.assert_frame_equal(pruning_curves(data, config).runs, pruning_curves(other, config).runs)


def test_an_overlap_between_training_and_evaluation_is_refused():
    data, _, _ = planted_noise(n=60)
    with pytest.raises(ImpactError, match="evaluation rows are among the training rows"):
        impact._fit_predict(data.features, [np.arange(40)], [data.labels[:40]], [0], np.arange(35, 60), 2, PROBE)


def test_evaluation_choices():
    data, _, _ = planted_noise(n=100)
    with pytest.raises(ImpactError, match="no 'test' split"):
        evaluation_splits(data, Evaluation(method="test-split"))
    with_split, _, _ = planted_noise(n=100, split=True)
    assert len(evaluation_splits(with_split)) == 1
    assert len(evaluation_splits(with_split, Evaluation(method="cross-validation", folds=4))) == 4
    assert "held-out 'test' split" in impact.describe_evaluation(with_split)


# ----------------------------------------------------------------------------- easy to hard


def test_buckets_are_stratified_by_class_and_cluster():
    data, _, _ = planted_noise(n=301, clusters=True)
    buckets = hardness_buckets(data, "knn_label_disagreement", buckets=3)
    counts = buckets.groupby(["label", "bucket"]).size().unstack()
    assert list(counts.columns.sort_values()) == ["easy", "hard", "medium"]
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()  # every class split evenly
    means = buckets.groupby("bucket")["score"].mean()
    assert means["easy"] <= means["medium"] <= means["hard"]  # higher disagreement = harder
    by_cluster = hardness_buckets(data, "knn_label_disagreement", buckets=2, by_cluster=True)
    per_group = by_cluster.groupby(["group", "bucket"]).size().unstack()
    assert len(per_group) == 4 and (abs(per_group["easy"] - per_group["hard"]) <= 1).all()
    assert by_cluster["group"].str.contains(" · cluster ").all()


def test_easy_to_hard_table_and_buckets():
    data, _, _ = planted_noise(n=240)
    result = easy_to_hard(data, EasyHardConfig(score="knn_label_disagreement", **FAST))
    table = result.table.set_index(["train_on", "evaluate_on"])
    assert set(table.index.get_level_values(0)) == {"easy", "medium", "hard", "all"}
    assert set(table.index.get_level_values(1)) == {"easy", "medium", "hard", "all"}
    assert table.loc[("all", "all"), "n_eval"] == 240
    assert table.loc[("easy", "all"), "n_train"] == pytest.approx(table.loc[("all", "all"), "n_train"] / 3, abs=1)
    # easy rows are easy for every probe; the hard (mostly mislabelled) ones are not
    assert table.loc[("all", "easy"), "accuracy"] > table.loc[("all", "hard"), "accuracy"]
    assert list(result.buckets.columns) == ["id", "label", "bucket", "bucket_index", "group", "score"]


# ----------------------------------------------------------------------------- what-if


def test_what_if_without_decisions_equals_the_original():
    data, _, _ = planted_noise(n=200, clusters=True)
    outcome = pd.DataFrame({"example_id": data.ids[:20], "final_decision": ["keep"] * 10 + ["undecided"] * 10,
                            "new_label": [None] * 20})
    changes = changes_from_outcome(outcome, source="session")
    assert changes.empty and changes.notes == ("10 keep", "10 undecided")
    table = what_if(data, changes, WhatIfConfig(**FAST)).table
    for _, scope in table.groupby("scope"):
        assert scope["accuracy"].nunique() == 1 and (scope["delta"] == 0).all()
    assert set(table["scope"]) == {"overall", "cluster 0 · low <b>x1</b>", "cluster 1 · high x1"}


def test_what_if_removes_drops_and_applies_relabels():
    data, truth, flipped = planted_noise(n=300)
    dropped = data.ids[flipped][:30]
    relabelled = data.ids[flipped][30:40]
    outcome = pd.DataFrame({
        "example_id": list(dropped) + list(relabelled) + ["unknown-id"],
        "final_decision": ["drop"] * 30 + ["relabel"] * 10 + ["drop"],
        "new_label": [None] * 30 + ["a"] * 10 + [None]})
    changes = changes_from_outcome(outcome)
    assert len(changes.remove) == 31 and len(changes.relabel) == 10
    result = what_if(data, changes, WhatIfConfig(**FAST))
    overall = result.table[result.table["scope"] == "overall"].set_index("variant")
    assert overall.loc["curated", "n_eval"] == 300 - 30  # removed rows are not judged
    assert overall.loc["curated", "n_train"] == overall.loc["random removal", "n_train"] < overall.loc["original", "n_train"]
    assert result.info["removed"] == 30 and result.info["ids_not_in_run"] == 1 and result.info["changed_labels"] == 10
    # judged against the known truth, removing and fixing mislabelled rows helps
    original = what_if(data, changes, WhatIfConfig(evaluate_on="original", **FAST), evaluation_labels=truth)
    overall = original.table[original.table["scope"] == "overall"].set_index("variant")
    assert overall.loc["curated", "accuracy"] > overall.loc["random removal", "accuracy"]
    assert overall.loc["curated", "n_eval"] == 300
    with pytest.raises(ImpactError, match="classes this dataset does not have"):
        what_if(data, Changes(relabel=(("ex1", "zebra"),)), WhatIfConfig(**FAST))


# ----------------------------------------------------------------------------- cache and report


def test_results_are_cached_by_run_and_parameters(tmp_path, monkeypatch):
    data, _, _ = planted_noise(n=120)
    data = ImpactData(**{**data.__dict__, "key": "run-1", "fingerprint": "fp"})
    workspace = Workspace(tmp_path / "ws")
    config = PruningConfig(scores=("noise",), fractions=(0.5, 1.0), **FAST)
    assert stored_result("pruning", data, config, workspace=workspace) is None
    first = pruning_curves(data, config, workspace=workspace)
    monkeypatch.setattr(impact, "fit_probes", lambda *a, **k: pytest.fail("retrained a cached experiment"))
    again = pruning_curves(data, config, workspace=workspace)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert again.info["cached"] and stored_result("pruning", data, config, workspace=workspace) is not None
    with pytest.raises(pytest.fail.Exception):  # other parameters, or another run: computed again
        pruning_curves(data, PruningConfig(scores=("noise",), fractions=(0.5,), **FAST), workspace=workspace)
    with pytest.raises(pytest.fail.Exception):
        pruning_curves(ImpactData(**{**data.__dict__, "key": "run-2"}), config, workspace=workspace)
    assert impact.result_key("pruning", data, config) != impact.result_key("pruning", data, replace_seeds(config))


def replace_seeds(config):
    from dataclasses import replace

    return replace(config, seeds=config.seeds + 1)


def test_what_if_cache_follows_the_changes(tmp_path):
    data, _, _ = planted_noise(n=120)
    data = ImpactData(**{**data.__dict__, "key": "run-1", "fingerprint": "fp"})
    workspace = Workspace(tmp_path / "ws")
    what_if(data, changes_from_ids(["ex1"], source="a"), WhatIfConfig(**FAST), workspace=workspace)
    # the same changes from elsewhere are the same experiment; other changes are not
    assert stored_result("what-if", data, WhatIfConfig(**FAST), changes=changes_from_ids(["ex1"], source="b"),
                         workspace=workspace) is not None
    assert stored_result("what-if", data, WhatIfConfig(**FAST), changes=changes_from_ids(["ex2"]),
                         workspace=workspace) is None


def test_report_files_and_escaped_figure(tmp_path):
    data, _, _ = planted_noise(n=120, clusters=True)
    data = ImpactData(**{**data.__dict__, "cluster_names": {0: "</script><b>x</b>", 1: "fine"}})
    result = what_if(data, changes_from_ids(data.ids[:5]), WhatIfConfig(**FAST))
    files = write_report(result, tmp_path / "out")
    assert sorted(f.name for f in files) == ["what_if.csv", "what_if.html", "what_if.json", "what_if_runs.csv"]
    saved = json.loads((tmp_path / "out" / "what_if.json").read_text())
    assert saved["info"]["experiment"] == "what-if" and len(saved["table"]) == len(result.table)
    page = (tmp_path / "out" / "what_if.html").read_text()
    assert "</script><b>" not in page and "Plotly.newPlot" in page
    spec = figure_spec(result)
    assert [trace["name"] for trace in spec["data"]] == ["curated", "random removal"]
    assert spec["layout"]["xaxis"]["ticktext"][0] == "overall"
    assert "&lt;b&gt;x&lt;/b&gt;" in spec["layout"]["xaxis"]["ticktext"][1]
    pruning = pruning_curves(data, PruningConfig(scores=("noise",), fractions=(0.5, 1.0), **FAST))
    lines = [t for t in figure_spec(pruning)["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in lines] == ["noise", "random"] and lines[1]["line"]["dash"] == "dash"
    assert "<!DOCTYPE html>" in figure_html(figure_spec(pruning))


def test_configurations_are_checked():
    data, _, _ = planted_noise(n=60)
    with pytest.raises(ImpactError, match="no score 'el2n'; available: knn_label_disagreement, noise"):
        pruning_curves(data, PruningConfig(scores=("el2n",), **FAST))
    with pytest.raises(ImpactError, match=r"\(0, 1\]"):
        PruningConfig(fractions=(0.0, 0.5))
    with pytest.raises(ImpactError, match="direction"):
        PruningConfig(direction="sideways")
    with pytest.raises(ImpactError, match="buckets"):
        EasyHardConfig(buckets=7)
    with pytest.raises(ImpactError, match="evaluate_on='original'"):
        what_if(data, Changes(), WhatIfConfig(**FAST), evaluation_labels=data.labels)
