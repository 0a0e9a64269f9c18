"""Several annotators (analytics.annotators): three annotators on the breast-cancer sample, one of
them careless; missing and bad annotations; review sessions where each reviewer counts as an
annotator; the --annotator flag, the sidebar's role picker and the Review page. (The loader's
annotator role is tested in test_datasets.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analytics.annotators import (
    ANNOTATOR_COLUMNS, EXAMPLE_COLUMNS, annotation_codes, compute_annotators, dataset_annotators, majority_vote,
    review_annotations, reviewer_quality,
)
from analytics.datasets import ColumnRoles, load_dataset
from analytics.samples import sample_by_key
from analytics.store import ReviewStore

ANNOTATORS = ("ann_a", "ann_b", "careless")


@pytest.fixture(scope="module")
def breast():
    """The breast-cancer sample: its features, its true labels and its classes."""
    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)
    features = dataset.table[dataset.feature_columns]
    return features, dataset.table["label"].to_numpy(dtype=object), dataset.classes


def annotate(truth, classes, seed, *, wrong=0.0, random=0.0, missing=0.0):
    """An annotator: the true label, flipped on a share ``wrong`` of rows, a uniformly random
    class on a share ``random``, and no label (None) on a share ``missing``."""
    rng = np.random.default_rng(seed)
    labels = truth.copy()
    classes = np.asarray(classes, dtype=object)
    flip = rng.random(len(labels)) < wrong
    labels[flip] = [classes[classes != label][0] for label in labels[flip]]
    noisy = rng.random(len(labels)) < random
    labels[noisy] = rng.choice(classes, int(noisy.sum()))
    labels[rng.random(len(labels)) < missing] = None
    return labels


def three_annotators(truth, classes) -> pd.DataFrame:
    """Two accurate annotators (5% of their labels wrong) and a careless one (a random label on
    40% of the rows); each leaves 10% of the rows unlabelled."""
    return pd.DataFrame({"ann_a": annotate(truth, classes, 1, wrong=0.05, missing=0.1),
                         "ann_b": annotate(truth, classes, 2, wrong=0.05, missing=0.1),
                         "careless": annotate(truth, classes, 3, random=0.4, missing=0.1)})


def heldout_probs(features: pd.DataFrame, labels, classes) -> np.ndarray:
    """Out-of-fold probabilities of a logistic regression, as the run's heldout_probs.npy."""
    codes = pd.Categorical(labels, categories=list(classes)).codes
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return cross_val_predict(model, features.to_numpy(float), codes, cv=5, method="predict_proba")


@pytest.fixture(scope="module")
def annotated(breast, tmp_path_factory):
    """The sample as a file without its diagnosis, labelled by the three annotators: the loader
    votes the label, the probe-like model trains on that vote (as the pipeline would)."""
    features, truth, classes = breast
    annotations = three_annotators(truth, classes)
    path = tmp_path_factory.mktemp("annotated") / "annotated.csv"
    pd.concat([features, annotations], axis=1).to_csv(path, index=False)
    dataset = load_dataset(path, roles=ColumnRoles(annotator=ANNOTATORS))
    return dataset, truth, heldout_probs(dataset.table[dataset.feature_columns], dataset.table["label"], classes)


# ----------------------------------------------------------------------------- consensus and quality


def test_the_careless_annotator_gets_the_lowest_quality_and_the_consensus_recovers_the_truth(annotated):
    dataset, truth, probs = annotated
    report = dataset_annotators(dataset, heldout_probs=probs)
    assert report.method == "crowdlab" and "CROWDLAB" in report.note
    assert list(report.examples.columns) == ["id", *EXAMPLE_COLUMNS]
    assert report.examples["id"].tolist() == dataset.table["id"].tolist()
    table = report.annotators.set_index("annotator")
    assert list(report.annotators.columns) == list(ANNOTATOR_COLUMNS)
    assert report.annotators["annotator"].iloc[0] == "careless"  # lowest quality first
    margin = min(table.loc["ann_a", "quality"], table.loc["ann_b", "quality"]) - table.loc["careless", "quality"]
    assert margin > 0.08, table
    crowdlab_accuracy = np.mean(report.examples["consensus_label"].to_numpy() == truth)
    vote_accuracy = np.mean(dataset.table["label"].to_numpy() == truth)
    assert crowdlab_accuracy > 0.97 and crowdlab_accuracy >= vote_accuracy
    quality = report.examples["consensus_quality"]
    assert quality.between(0, 1).all()
    # where the consensus is wrong, it is less sure than where it is right
    wrong = report.examples["consensus_label"].to_numpy() != truth
    assert quality[wrong].mean() < quality[~wrong].mean()
    # every example has at least one annotation here: nobody is left without a consensus
    assert report.examples["consensus_label"].ne("").all()
    assert table["n_labelled"].to_dict() == dataset.table[list(ANNOTATORS)].notna().sum().to_dict()
    summary = report.summary()
    json.dumps(summary)  # JSON-ready for issues.json
    assert summary["n_annotators"] == 3 and summary["annotators"][0]["annotator"] == "careless"


def test_majority_vote_without_probabilities_is_cleanlabs_agreement_method(annotated):
    from cleanlab.multiannotator import get_label_quality_multiannotator

    dataset, truth, _ = annotated
    report = dataset_annotators(dataset)
    assert report.method == "majority_vote" and "no out-of-fold probabilities" in report.note
    assert report.annotators["annotator"].iloc[0] == "careless"
    # the loader's voted label is the consensus
    assert report.examples["consensus_label"].tolist() == dataset.table["label"].tolist()
    assert np.mean(report.examples["consensus_label"].to_numpy() == truth) > 0.95

    codes = annotation_codes(dataset.table[list(ANNOTATORS)], dataset.classes)
    # cleanlab breaks ties by the probabilities first: a constant row ranked like our tie-break
    counts = np.array([(codes == k).sum() for k in range(len(dataset.classes))], dtype=float)
    prior = np.tile((counts + 1e-3 * np.arange(len(counts))[::-1]) / counts.sum(), (len(codes), 1))
    prior /= prior.sum(axis=1, keepdims=True)
    expected = get_label_quality_multiannotator(codes, prior, consensus_method="majority_vote",
                                                quality_method="agreement", verbose=False)
    theirs = expected["label_quality"]
    ours = report.examples
    assert (np.asarray(dataset.classes, dtype=object)[theirs["consensus_label"]] == ours["consensus_label"]).all()
    np.testing.assert_allclose(ours["consensus_quality"], theirs["consensus_quality_score"])
    np.testing.assert_allclose(ours["annotator_agreement"], theirs["annotator_agreement"])
    stats = expected["annotator_stats"].sort_index()
    table = report.annotators.set_index("annotator").loc[list(ANNOTATORS)]
    np.testing.assert_allclose(table["quality"], stats["annotator_quality"])
    np.testing.assert_allclose(table["agreement_with_consensus"], stats["agreement_with_consensus"])
    assert table["worst_class"].tolist() == [dataset.classes[c] for c in stats["worst_class"]]


def test_majority_vote_ties_go_to_the_most_chosen_class_then_class_order():
    nan = np.nan
    codes = np.array([[0, 1, nan], [1, 1, 2], [2, nan, nan], [nan, nan, nan], [0, 2, nan], [1, nan, nan],
                      [0, nan, nan]])
    # class 1 chosen 4 times, 0 and 2 three times each: the 0/1 tie goes to 1, the 0/2 tie to 0
    assert majority_vote(codes, 3).tolist() == [1, 1, 2, -1, 0, 1, 0]


def test_missing_annotations_and_annotators_who_labelled_nothing():
    labels = pd.DataFrame({"a": ["x", "y", None, "x", ""], "b": ["x", None, None, "y", "y"],
                           "c": ["x", "y", np.nan, "x", "y"], "idle": [None] * 5})
    report = compute_annotators(labels, ("x", "y"), ids=list("pqrst"))
    examples = report.examples.set_index("id")
    assert examples.loc["r", "consensus_label"] == ""  # nobody labelled it
    assert np.isnan(examples.loc["r", "consensus_quality"]) and np.isnan(examples.loc["r", "annotator_agreement"])
    assert examples.loc[["p", "q", "s", "t"], "consensus_label"].tolist() == ["x", "y", "x", "y"]
    assert examples.loc["s", "annotator_agreement"] == pytest.approx(2 / 3)
    table = report.annotators.set_index("annotator")
    assert table.loc["idle", "n_labelled"] == 0 and np.isnan(table.loc["idle", "quality"])
    assert report.annotators["annotator"].iloc[-1] == "idle"  # unknown quality last
    assert table.loc[["a", "b", "c"], "n_labelled"].tolist() == [3, 3, 4]
    assert "1 annotator labelled nothing" in report.note and "1 example had no annotation" in report.note
    assert report.summary()["annotators"][-1]["quality"] is None


def test_with_probabilities_but_no_shared_example_the_model_judges_each_annotator():
    labels = pd.DataFrame({"good": ["x", "y", "x", None, None, None],
                           "bad": [None, None, None, "y", "x", "y"]})
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.9, 0.1], [0.1, 0.9], [0.85, 0.15]])
    report = compute_annotators(labels, ("x", "y"), heldout_probs=probs)
    assert report.method == "model_only" and "cannot be compared" in report.note
    assert report.annotators["annotator"].tolist() == ["bad", "good"]
    assert report.examples["consensus_label"].tolist() == ["x", "y", "x", "y", "x", "y"]
    no_model = compute_annotators(labels, ("x", "y"))
    assert no_model.annotators["quality"].isna().all() and "cannot be judged" in no_model.note


def test_labels_outside_the_classes_are_refused_naming_column_and_row():
    labels = pd.DataFrame({"a": ["x", "y", "x"], "b": ["x", "maybe", None]})
    with pytest.raises(ValueError, match=r"annotator column 'b' has 1 label that is not among the classes "
                                         r"\('x', 'y'\): row 2 'maybe'"):
        compute_annotators(labels, ("x", "y"))
    with pytest.raises(ValueError, match=r"heldout_probs has shape \(3, 3\); expected \(3, 2\)"):
        compute_annotators(labels.iloc[:, :1], ("x", "y"), heldout_probs=np.full((3, 3), 1 / 3))


# ----------------------------------------------------------------------------- the command line


def write(path, **columns):
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_the_command_line_takes_annotator_once_per_annotator(tmp_path, capsys):
    from analytics.cli import main

    path = write(tmp_path / "cli.csv", text=["one text", "two text", "three"], a=["x", "y", "x"], b=["x", "y", "y"])
    assert main(["validate", str(path), "--annotator", "a", "--annotator", "b"]) == 0
    out = capsys.readouterr().out
    assert "annotator=('a', 'b')" in out and "majority vote of the 2 annotators" in out


# ----------------------------------------------------------------------------- review sessions


def review_session(tmp_path, breast, probs):
    """Two reviewers over 120 examples: alice keeps the (true) labels, except a few drops and flags;
    bob relabels half of the examples to a random class."""
    _, truth, classes = breast
    ids = np.array([f"row{i}" for i in range(len(truth))], dtype=object)
    rng = np.random.default_rng(7)
    chosen = rng.choice(len(truth), 120, replace=False)
    store = ReviewStore.open(f"sqlite:///{tmp_path / 'review.sqlite'}")
    store.create_session("careless bob", ids[chosen].tolist(), owner="alice", fingerprint="f", classes=classes,
                         reviewers=["bob"])
    session = store.get_session("careless bob").id
    store.record_decisions(session, ids[chosen[:110]].tolist(), "alice", "keep")
    store.record_decisions(session, ids[chosen[110:115]].tolist(), "alice", "drop")
    store.record_decisions(session, ids[chosen[115:]].tolist(), "alice", "flag")
    relabel = rng.random(len(chosen)) < 0.5
    store.record_decisions(session, ids[chosen[~relabel]].tolist(), "bob", "keep")
    targets = rng.choice(np.asarray(classes, dtype=object), int(relabel.sum()))
    for target in classes:
        picked = ids[chosen[relabel]][targets == target].tolist()
        if picked:
            store.record_decisions(session, picked, "bob", "relabel", new_label=target)
    return store, session, ids, chosen, relabel, targets


def test_a_reviewer_who_relabels_at_random_gets_the_lower_quality(tmp_path, breast):
    features, truth, classes = breast
    probs = heldout_probs(features, truth, classes)
    store, session, ids, chosen, relabel, targets = review_session(tmp_path, breast, probs)
    store.adjudicate(session, ids[chosen[0]], "alice", "drop")  # the owner's word is no annotation
    current = store.current_decisions(session)

    annotations = review_annotations(current, ids=ids, labels=truth)
    assert list(annotations.columns) == ["alice", "bob"] and len(annotations) == 120
    assert annotations.loc[ids[chosen[:110]], "alice"].tolist() == truth[chosen[:110]].tolist()  # keep
    assert annotations.loc[ids[chosen[110:]], "alice"].isna().all()  # drop and flag: no label
    assert annotations.loc[ids[chosen[relabel]], "bob"].tolist() == targets.tolist()  # relabel

    report = reviewer_quality(current, ids=ids, labels=truth, classes=classes, heldout_probs=probs)
    assert report.method == "crowdlab"
    table = report.annotators.set_index("annotator")
    assert table.loc["bob", "quality"] < table.loc["alice", "quality"] - 0.1, table
    assert table["n_labelled"].to_dict() == {"alice": 110, "bob": 120}

    with pytest.raises(ValueError, match="not in this dataset's run"):
        review_annotations(current, ids=ids[:10], labels=truth[:10])


# ----------------------------------------------------------------------------- the app


def test_the_sidebar_sets_annotator_columns_and_the_overview_names_them(tmp_path, clean_app_caches):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    from ui import state

    path = write(tmp_path / "crowd.csv", text=[f"text number {i} here" for i in range(6)],
                 ann_a=["good", "bad"] * 3, ann_b=["good", "bad", "bad", "bad", "good", "good"])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[state.DATASET_CHOICE] = "Open a file or folder…"
    at.session_state[state.DATASET_PATH] = str(path)
    at.run()
    assert any("no label column found" in e.value and "--annotator" in e.value for e in at.sidebar.error)
    at.sidebar.multiselect(key=f"role_annotator_{path}").set_value(["ann_a", "ann_b"]).run()
    assert not at.exception and not at.sidebar.error
    assert any("majority vote of the 2 annotators" in info.value for info in at.info)
    columns = [df.value for df in at.dataframe if "role" in df.value.columns][0].set_index("column")
    assert columns.loc[["ann_a", "ann_b"], "role"].tolist() == ["annotator", "annotator"]
    assert columns.loc["label", "source column"] == "(the annotators' majority vote)"


def test_the_review_page_shows_each_reviewers_quality_beside_the_kappa(use_analysed_workspace, tmp_path,
                                                                      monkeypatch, clean_app_caches):
    from streamlit.testing.v1 import AppTest

    from analytics.pipeline import AnalysisConfig, load_run, run_dir_for
    from analytics.store import DATABASE_URL_ENV
    from analytics.workspace import Workspace
    from tests.conftest import ROOT
    from ui import state

    url = f"sqlite:///{tmp_path / 'review.sqlite'}"
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)
    run = load_run(run_dir_for(dataset, AnalysisConfig(), Workspace.default()))
    examples = run.examples.iloc[:80]
    store = ReviewStore.open(url)
    session = store.create_session("quality", examples["id"].tolist(), owner="alice", fingerprint=dataset.fingerprint,
                                   classes=dataset.classes, reviewers=["bob"], run=str(run.path)).id
    store.record_decisions(session, examples["id"].tolist(), "alice", "keep")
    flip = {"benign": "malignant", "malignant": "benign"}
    bob = np.random.default_rng(0).random(len(examples)) < 0.5
    store.record_decisions(session, examples.loc[~bob, "id"].tolist(), "bob", "keep")
    for label, group in examples[bob].groupby("label"):
        store.record_decisions(session, group["id"].tolist(), "bob", "relabel", new_label=flip[label])

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = sample.title
    at.session_state[state.REVIEWER] = "alice"
    at.run()
    at.switch_page("views/review.py").run()
    at.radio(key="review_view").set_value("Agreement and conflicts").run()
    assert not at.exception, at.exception
    quality = [df.value for df in at.dataframe if "quality" in df.value.columns][0].set_index("annotator")
    assert quality.loc["bob", "quality"] < quality.loc["alice", "quality"]
    assert quality["n_labelled"].to_dict() == {"alice": 80, "bob": 80}
    assert any("CROWDLAB" in caption.value for caption in at.caption)


# ----------------------------------------------------------------------------- in the analysis run


def test_a_run_carries_the_consensus_columns_and_the_annotator_table(annotated, tmp_path):
    from analytics.annotators import ANNOTATORS_FILE
    from analytics.pipeline import AnalysisConfig, analysis_columns, load_run, run_analysis
    from analytics.workspace import Workspace

    dataset, truth, _ = annotated
    run = run_analysis(dataset, AnalysisConfig(clusters=None, issues=None), out_dir=tmp_path / "run",
                       workspace=Workspace(tmp_path / "ws"))
    reloaded = load_run(run.path)
    for column in ("consensus_label", "consensus_quality", "annotator_agreement"):
        assert column in reloaded.examples.columns and column in analysis_columns(reloaded.examples)
        assert column not in reloaded.dataset.table.columns
    assert (reloaded.examples["consensus_label"].to_numpy(dtype=object) == truth).mean() > 0.9
    table = pd.read_parquet(run.path / ANNOTATORS_FILE)
    assert table["annotator"].iloc[0] == "careless"  # lowest quality first
    summary = reloaded.manifest["annotators"]
    assert summary["method"] == "crowdlab" and summary["n_annotators"] == 3
    assert ANNOTATORS_FILE in reloaded.manifest["artefacts"]
