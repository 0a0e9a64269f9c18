"""Training dynamics: the reference format in and out, checkpoints, the probe, cross-fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analytics.dynamics import (
    DynamicsError,
    ProbeConfig,
    TrainingDynamics,
    checkpoint_dynamics,
    cross_fit_probabilities,
    read_reference_dynamics,
    train_probe,
    write_reference_dynamics,
)
from analytics.scores.training_dynamics import cartography


def write_epochs(folder, ids, logits, gold):
    folder.mkdir(parents=True, exist_ok=True)
    for epoch, values in enumerate(logits):
        with (folder / f"dynamics_epoch_{epoch}.jsonl").open("w") as handle:
            for guid, row, label in zip(ids, values, gold):
                handle.write(json.dumps({"guid": guid, f"logits_epoch_{epoch}": row.tolist(), "gold": int(label)}) + "\n")


def test_reference_format_round_trip_and_fidelity(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"ex{i}" for i in range(30)]
    logits = rng.normal(size=(4, 30, 3)).astype(np.float32)  # what torch's .tolist() writes
    gold = rng.integers(0, 3, 30)
    write_epochs(tmp_path / "td", ids, logits, gold)
    shuffled = list(reversed(ids))  # the dataset's order differs from the files'
    dynamics, notes = read_reference_dynamics(tmp_path / "td", shuffled)
    assert dynamics.logits.shape == (1, 4, 30, 3) and notes == []
    np.testing.assert_array_equal(dynamics.logits[0], logits[:, ::-1])
    # confidence, variability and correctness equal the reference formulas to 1e-9
    probs = np.exp(logits.astype(np.float64)) / np.exp(logits.astype(np.float64)).sum(-1, keepdims=True)
    true_probs = probs[:, np.arange(30), gold]
    scores = cartography(dynamics.logits, dynamics.gold)
    np.testing.assert_allclose(scores["confidence"], true_probs.mean(0)[::-1], atol=1e-9, rtol=0)
    np.testing.assert_allclose(scores["variability"], true_probs.std(0)[::-1], atol=1e-9, rtol=0)
    np.testing.assert_allclose(scores["correctness"], (logits.argmax(-1) == gold).mean(0)[::-1], atol=1e-9)
    # and back out in the same format
    out = write_reference_dynamics(dynamics, shuffled, tmp_path / "out")
    assert [p.name for p in out] == [f"dynamics_epoch_{e}.jsonl" for e in range(4)]
    again, _ = read_reference_dynamics(tmp_path / "out", ids)
    np.testing.assert_array_equal(again.logits, logits[None])


def test_missing_epoch_is_named(tmp_path):
    ids = ["a", "b"]
    write_epochs(tmp_path / "td", ids, np.zeros((3, 2, 2), np.float32), [0, 1])
    (tmp_path / "td" / "dynamics_epoch_1.jsonl").unlink()
    with pytest.raises(DynamicsError, match=r"epochs \[1\] are missing"):
        read_reference_dynamics(tmp_path / "td", ids)


def test_unmatched_ids_are_reported(tmp_path):
    write_epochs(tmp_path / "td", ["a", "b", "zz"], np.zeros((2, 3, 2), np.float32), [0, 1, 0])
    dynamics, notes = read_reference_dynamics(tmp_path / "td", ["a", "b"])
    assert dynamics.logits.shape[2] == 2
    assert notes and "1 guids in the dynamics are not in the dataset" in notes[0] and "zz" in notes[0]
    with pytest.raises(DynamicsError, match=r"dynamics_epoch_0.jsonl: 1 dataset ids have no logits in epoch 0, e.g. \['c'\]"):
        read_reference_dynamics(tmp_path / "td", ["a", "b", "c"])


def test_malformed_line_is_named(tmp_path):
    (tmp_path / "td").mkdir()
    (tmp_path / "td" / "dynamics_epoch_0.jsonl").write_text('{"guid": "a", "gold": 0}\n')
    with pytest.raises(DynamicsError, match=r"dynamics_epoch_0.jsonl: line 1 is not a dynamics record"):
        read_reference_dynamics(tmp_path / "td", ["a"])


def test_both_folder_layouts_are_found_and_a_wrong_one_is_named(tmp_path):
    from analytics.dynamics import find_dynamics_folder

    write_epochs(tmp_path / "model" / "training_dynamics", ["a", "b"], np.zeros((2, 2, 2), np.float32), [0, 1])
    inner = (tmp_path / "model" / "training_dynamics").resolve()
    assert find_dynamics_folder(tmp_path / "model") == inner            # the allenai/cartography layout
    assert find_dynamics_folder(tmp_path / "model" / "training_dynamics") == inner
    dynamics, _ = read_reference_dynamics(tmp_path / "model", ["b", "a"])
    assert dynamics.logits.shape == (1, 2, 2, 2)
    (tmp_path / "empty" / "training_dynamics").mkdir(parents=True)
    typed = str(tmp_path / "empty")
    with pytest.raises(DynamicsError) as caught:
        find_dynamics_folder(typed)
    assert str(caught.value).startswith(f"{typed}: neither {typed} nor {typed}/training_dynamics holds "
                                        "dynamics_epoch_*.jsonl")
    with pytest.raises(DynamicsError, match="no such file or folder"):
        read_reference_dynamics(tmp_path / "nowhere", ["a"])
    (tmp_path / "file.jsonl").write_text("{}\n")
    with pytest.raises(DynamicsError, match="is a file; a folder of training dynamics must be a folder"):
        find_dynamics_folder(tmp_path / "file.jsonl")


def test_the_data_roots_apply_to_the_dynamics_folder_and_what_it_links_to(tmp_path):
    from analytics.access import Policy
    from analytics.dynamics import find_dynamics_folder

    root = tmp_path / "root"
    secret = tmp_path / "secret" / "training_dynamics"
    write_epochs(secret, ["a"], np.zeros((1, 1, 2), np.float32), [0])
    (root / "model").mkdir(parents=True)
    (root / "model" / "training_dynamics").symlink_to(secret)       # a link inside the root pointing out
    policy = Policy(data_roots=(root.resolve(),))
    for typed in (root / "model", tmp_path / "secret"):
        with pytest.raises(DynamicsError, match="outside the data folders") as caught:
            find_dynamics_folder(typed, policy=policy)
        assert "secret" not in str(caught.value).replace(str(typed), "")   # never the link's target


def test_classes_json_maps_the_logits_into_the_dataset_class_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"ex{i}" for i in range(12)]
    logits = rng.normal(size=(3, 12, 3)).astype(np.float32)
    gold = rng.integers(0, 3, 12)                        # indices into the recorded order below
    write_epochs(tmp_path / "td", ids, logits, gold)
    recorded = ["cat", "ant", "bee"]
    (tmp_path / "td" / "classes.json").write_text(json.dumps(recorded))
    dataset_classes = ("ant", "bee", "cat")
    dynamics, notes = read_reference_dynamics(tmp_path / "td", ids, classes=dataset_classes)
    column = [dataset_classes.index(name) for name in recorded]
    np.testing.assert_array_equal(dynamics.logits[0][..., column], logits)
    np.testing.assert_array_equal(dynamics.gold, [dataset_classes.index(recorded[g]) for g in gold])
    assert any("class order of classes.json" in note for note in notes)
    # the data map does not depend on the order the classes were recorded in
    direct = cartography(logits[None], gold)
    for score, values in cartography(dynamics.logits, dynamics.gold).items():
        np.testing.assert_allclose(values, direct[score], atol=1e-12)
    # without the dataset's classes, the sorted names are its order (as the loader sorts labels)
    again, _ = read_reference_dynamics(tmp_path / "td", ids)
    np.testing.assert_array_equal(again.logits, dynamics.logits)
    with pytest.raises(DynamicsError, match=r"classes.json: class 'cat' is not a class of the dataset"):
        read_reference_dynamics(tmp_path / "td", ids, classes=("ant", "bee", "dog"))
    with pytest.raises(DynamicsError, match=r"classes.json: lacks the dataset's classes \['dog'\]"):
        read_reference_dynamics(tmp_path / "td", ids, classes=("ant", "bee", "cat", "dog"))
    (tmp_path / "td" / "classes.json").write_text('{"cat": 0}')
    with pytest.raises(DynamicsError, match="classes.json: must be a JSON list of the class names"):
        read_reference_dynamics(tmp_path / "td", ids)
    (tmp_path / "td" / "classes.json").write_text('["ant", "cat"]')
    with pytest.raises(DynamicsError, match=r"dynamics_epoch_0.jsonl: line 1 has 3 logits; expected 2"):
        read_reference_dynamics(tmp_path / "td", ids)


def test_a_gold_index_beyond_the_classes_names_the_file_and_line(tmp_path):
    write_epochs(tmp_path / "td", ["a", "b", "c"], np.zeros((2, 3, 2), np.float32), [0, 1, 0])
    lines = (tmp_path / "td" / "dynamics_epoch_1.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"gold": 0', '"gold": 2')
    (tmp_path / "td" / "dynamics_epoch_1.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DynamicsError, match=r"dynamics_epoch_1.jsonl: line 3 has gold 2, beyond the 2 classes"):
        read_reference_dynamics(tmp_path / "td", ["a", "b", "c"], classes=("x", "y"))
    with pytest.raises(DynamicsError, match=r"dynamics_epoch_0.jsonl: none of its guids match the dataset's ids"):
        read_reference_dynamics(tmp_path / "td", ["p", "q"])


def test_reading_100k_lines_takes_seconds(tmp_path):
    import time

    n = 100_000
    ids = [f"id{i}" for i in range(n)]
    logits = np.random.default_rng(0).normal(size=(1, n, 4)).astype(np.float32)
    write_reference_dynamics(TrainingDynamics(logits=logits[None], gold=np.zeros(n, np.int64), source="probe"),
                             ids, tmp_path)
    start = time.perf_counter()
    dynamics, _ = read_reference_dynamics(tmp_path, ids[::-1], classes=("a", "b", "c", "d"))
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(dynamics.logits[0, 0], logits[0, ::-1])
    assert elapsed < 15, f"{elapsed:.1f} s for 100,000 lines"      # about 1 s on two quiet cores


def test_checkpoint_dynamics_in_epoch_order():
    outputs = {"e0": np.array([[1.0, 0.0], [0.0, 1.0]]), "e1": np.array([[2.0, 0.0], [1.0, 0.0]])}
    dynamics = checkpoint_dynamics(["e0", "e1"], np.array([0, 1]), run_one=lambda p: outputs[p])
    assert dynamics.logits.shape == (1, 2, 2, 2) and dynamics.source == "checkpoints"
    np.testing.assert_array_equal(dynamics.logits[0, 1], outputs["e1"])
    with pytest.raises(DynamicsError, match="expected \\(3, n_classes\\) logits"):
        checkpoint_dynamics(["e0"], np.array([0, 1, 1]), run_one=lambda p: outputs[p])


def separable(n=400, d=8, k=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    labels = rng.integers(0, k, n)
    features = centres[labels] + rng.normal(size=(n, d))
    flipped = rng.random(n) < noise
    noisy = np.where(flipped, (labels + rng.integers(1, k, n)) % k, labels)
    return features.astype(np.float32), noisy, flipped


@pytest.mark.parametrize("hidden", [0, 32])
def test_probe_records_logits_each_epoch_and_learns(hidden):
    features, labels, _ = separable()
    config = ProbeConfig(hidden=hidden, epochs=6, seeds=2)
    dynamics = train_probe(features, labels, 3, config)
    assert dynamics.logits.shape == (2, 6, 400, 3) and dynamics.source == "probe"
    assert dynamics.hidden_norms.shape == (2, 400) and (dynamics.hidden_norms > 0).all()
    assert dynamics.early_epoch == 1
    accuracy = (dynamics.logits[:, -1].argmax(-1) == labels).mean()
    assert accuracy > 0.9
    if hidden == 0:  # a linear head's input is the (standardised) embedding itself
        standardised = (features - features.mean(0)) / features.std(0)
        np.testing.assert_allclose(dynamics.hidden_norms[0], (standardised ** 2).sum(1), rtol=1e-4)
    again = train_probe(features, labels, 3, config)
    np.testing.assert_allclose(again.logits, dynamics.logits, rtol=1e-5, atol=1e-5)  # seeded


def test_cross_fitting_never_scores_an_example_with_a_model_that_saw_it():
    features, labels, flipped = separable(n=300, noise=0.1)
    probs, fold = cross_fit_probabilities(features, labels, 3, ProbeConfig(hidden=0, epochs=8, folds=5))
    assert probs.shape == (300, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert set(fold) == set(range(5)) and np.bincount(fold).min() >= 55
    # held-out probabilities disagree with flipped labels: the flips get low gold probability
    from sklearn.metrics import roc_auc_score

    gold_probability = probs[np.arange(300), labels]
    assert roc_auc_score(flipped, -gold_probability) > 0.9


# --------------------------------------------------------------------------- cross-fitted dynamics


def test_cross_fitted_dynamics_come_from_the_probes_that_trained_on_each_example():
    """Seed s of an example held out in fold f is probe s (s < f) or s + 1 (s >= f); its held-out
    probabilities are probe f's. Checked against each probe trained alone."""
    from analytics.dynamics import _standardise, _stratified_folds, cross_fit_dynamics, fit_probe_run

    features, labels, _ = separable(n=240, noise=0.05)
    config = ProbeConfig(hidden=16, epochs=4, seeds=2)
    dynamics, probs, fold = cross_fit_dynamics(features, labels, 3, config)
    assert dynamics.logits.shape == (2, 4, 240, 3) and dynamics.hidden_norms.shape == (2, 240)
    assert np.isfinite(dynamics.logits).all() and np.allclose(probs.sum(1), 1, atol=1e-5)
    splits = _stratified_folds(labels, 3)
    x = _standardise(features)
    for model, (train, held) in enumerate(splits):
        assert (fold[held] == model).all() and not np.isin(held, train).any()
        alone = fit_probe_run(x, labels, train, held, model, 3, config)
        np.testing.assert_allclose(probs[held], alone["held_probs"], rtol=1e-5, atol=1e-6)
        for position, row in enumerate(train):
            seed = model if model < fold[row] else model - 1
            np.testing.assert_allclose(dynamics.logits[seed, :, row], alone["logits"][:, position],
                                       rtol=1e-5, atol=1e-5)
            assert dynamics.hidden_norms[seed, row] == pytest.approx(alone["norms"][position], rel=1e-5)


def test_cross_fitted_scores_agree_with_independent_training():
    """Same science, less work: confidence from the cross-fitted probes ranks examples like the
    independent probes' and both find the flipped labels."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from analytics.dynamics import cross_fit_dynamics

    features, labels, flipped = separable(n=600, noise=0.1, seed=3)
    config = ProbeConfig(hidden=32, epochs=6, seeds=3)
    crossed, probs, _ = cross_fit_dynamics(features, labels, 3, config)
    independent = train_probe(features, labels, 3, config)
    confidence = {}
    for name, dyn in (("cross", crossed), ("independent", independent)):
        confidence[name] = cartography(dyn.logits, dyn.gold)["confidence"]
        assert roc_auc_score(flipped, -confidence[name]) > 0.9
    assert spearmanr(confidence["cross"], confidence["independent"]).statistic > 0.9
    assert roc_auc_score(flipped, -probs[np.arange(600), labels]) > 0.9


def test_the_scheme_is_cross_fit_only_for_large_data_with_enough_of_every_class(monkeypatch):
    from analytics.dynamics import DynamicsError, resolve_scheme

    labels = np.repeat([0, 1, 2], 100)
    assert resolve_scheme(ProbeConfig(), labels) == "independent"
    monkeypatch.setattr(ProbeConfig, "CROSS_FIT_FROM", 300)
    assert resolve_scheme(ProbeConfig(), labels) == "cross-fit"
    assert resolve_scheme(ProbeConfig(scheme="independent"), labels) == "independent"
    rare = np.concatenate([labels, [3, 3]])  # a class with 2 examples cannot fill 4 folds
    assert resolve_scheme(ProbeConfig(), rare) == "independent"
    with pytest.raises(DynamicsError, match="smallest class has 2"):
        resolve_scheme(ProbeConfig(scheme="cross-fit"), rare)
    with pytest.raises(ValueError, match="scheme must be"):
        resolve_scheme(ProbeConfig(scheme="bagging"), labels)
