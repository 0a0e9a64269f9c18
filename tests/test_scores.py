"""Every score against a hand-computed example and against the paper's formula written as a
plain per-example loop; plus the registry's shared invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.scores import SCORES, ScoreInputs, assign_regions, available_scores, compute_scores, RegionThresholds
from analytics.scores.label_quality import confident_learning, heldout_scores
from analytics.scores.neighbourhood import knn_density, knn_label_disagreement, knn_shapley
from analytics.scores.training_dynamics import (area_under_margin, cartography, el2n, forgetting, grand,
                                               variance_of_gradients)

LN3, LN9 = math.log(3), math.log(9)


def hand_computed(*columns: str):
    """Mark a test as the hand-computed check of these registered score columns.

    tests/test_score_registry.py collects the marks: every registered column needs one, so a new
    score is its module plus its marked test here, nothing else.
    """
    def mark(test):
        test.hand_computed = columns
        return test
    return mark


def hand_logits():
    """1 seed, 3 epochs, 2 examples, 2 classes. Example 0 (gold 0) has gold-label probability
    0.75, 0.25, 0.9 over the epochs; example 1 (gold 1) is always right with p = 0.75."""
    logits = np.array([[[[LN3, 0.0], [0.0, LN3]],
                        [[0.0, LN3], [0.0, LN3]],
                        [[LN9, 0.0], [0.0, LN3]]]], dtype=np.float64)
    return logits, np.array([0, 1])


@hand_computed("confidence", "variability", "correctness")
def test_cartography_by_hand():
    logits, labels = hand_logits()
    scores = cartography(logits, labels)
    assert scores["confidence"][0] == pytest.approx((0.75 + 0.25 + 0.9) / 3)
    mean = (0.75 + 0.25 + 0.9) / 3
    assert scores["variability"][0] == pytest.approx(math.sqrt(((0.75 - mean) ** 2 + (0.25 - mean) ** 2
                                                                 + (0.9 - mean) ** 2) / 3))
    assert scores["correctness"][0] == pytest.approx(2 / 3)
    assert scores["confidence"][1] == pytest.approx(0.75) and scores["variability"][1] == pytest.approx(0)
    assert scores["correctness"][1] == 1.0


@hand_computed("forgetting_events", "aum")
def test_forgetting_and_aum_by_hand():
    logits, labels = hand_logits()
    f = forgetting(logits, labels)
    assert f["forgetting_events"].tolist() == [1, 0]
    assert f["never_learned"].tolist() == [False, False]
    aum = area_under_margin(logits, labels)["aum"]
    assert aum[0] == pytest.approx((LN3 - LN3 + LN9) / 3) and aum[1] == pytest.approx(LN3)


@hand_computed("never_learned")
def test_never_learned_is_a_flag_not_a_sentinel():
    logits = np.zeros((1, 4, 1, 2))
    logits[..., 1] = 1.0  # always predicts class 1
    f = forgetting(logits, np.array([0]))
    assert f["never_learned"].tolist() == [True] and f["forgetting_events"].tolist() == [0]


@hand_computed("el2n", "grand")
def test_el2n_and_grand_by_hand():
    logits, labels = hand_logits()
    # epoch 0, example 0: p = (0.75, 0.25) → error (−0.25, 0.25), norm 0.25·√2
    assert el2n(logits, labels, 0)["el2n"][0] == pytest.approx(0.25 * math.sqrt(2))
    norms = np.array([[3.0, 8.0]])  # ‖h‖² per example
    assert grand(logits, labels, 0, norms)["grand"][0] == pytest.approx(0.25 * math.sqrt(2) * 2.0)
    # averaging over seeds
    two = np.concatenate([logits, logits[:, [2, 1, 0]]])
    expected = (0.25 * math.sqrt(2) + 0.1 * math.sqrt(2)) / 2
    assert el2n(two, labels, 0)["el2n"][0] == pytest.approx(expected)


def reference_loop(logits: np.ndarray, labels: np.ndarray):
    """The formulas as the papers and the reference code write them, one example at a time."""
    seeds, epochs, n, k = logits.shape
    out = {name: np.zeros(n) for name in ("confidence", "variability", "correctness", "aum", "forgetting")}
    for i in range(n):
        per_seed = {name: [] for name in out}
        for s in range(seeds):
            probs, margins, correct = [], [], []
            for e in range(epochs):
                z = logits[s, e, i].astype(np.float64)
                p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                probs.append(p[labels[i]])
                margins.append(z[labels[i]] - max(z[j] for j in range(k) if j != labels[i]))
                correct.append(int(np.argmax(z)) == labels[i])
            per_seed["confidence"].append(np.mean(probs))
            per_seed["variability"].append(np.std(probs))
            per_seed["correctness"].append(sum(correct) / epochs)
            per_seed["aum"].append(np.mean(margins))
            per_seed["forgetting"].append(sum(1 for e in range(1, epochs) if correct[e - 1] and not correct[e]))
        for name in out:
            out[name][i] = np.mean(per_seed[name])
    return out


def test_dynamics_scores_equal_the_reference_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(2, 6, 40, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    expected = reference_loop(logits, labels)
    got = {**cartography(logits, labels), **area_under_margin(logits, labels)}
    for name in ("confidence", "variability", "correctness", "aum"):
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-9)
    np.testing.assert_allclose(forgetting(logits, labels)["forgetting_events"], expected["forgetting"])


@hand_computed("vog")
def test_vog_by_hand():
    # class 0: raw 1, 3 (mean 2, population std 1) → -1, 1; class 1: raw 5, 5, 8 (mean 6, variance
    # (1 + 1 + 4) / 3 = 2) → -1/√2, -1/√2, 2/√2
    scores = variance_of_gradients(np.array([1.0, 5.0, 3.0, 5.0, 8.0]), np.array([0, 1, 0, 1, 1]))
    assert scores["vog"] == pytest.approx([-1.0, -1 / math.sqrt(2), 1.0, -1 / math.sqrt(2), 2 / math.sqrt(2)])
    # a class whose raw values are all equal scores 0
    assert variance_of_gradients(np.array([4.0, 4.0]), np.array([0, 0]))["vog"] == pytest.approx([0.0, 0.0])


@hand_computed("loss", "margin", "entropy")
def test_heldout_scores_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    scores = heldout_scores(probs, np.array([0, 2]))
    assert scores["loss"] == pytest.approx([-math.log(0.7), -math.log(0.3)])
    assert scores["margin"] == pytest.approx([0.5, -0.2])
    assert scores["entropy"][0] == pytest.approx(-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)))


@hand_computed("label_quality", "label_issue")
def test_confident_learning_flags_a_planted_error():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    probs = np.full((90, 3), 0.05)
    probs[np.arange(90), labels] = 0.9
    probs[5] = [0.02, 0.96, 0.02]  # labelled 0, the model is sure it is a 1
    probs += rng.uniform(0, 0.01, probs.shape)
    scores = confident_learning(probs, labels)
    assert scores["label_issue"][5] and scores["label_issue"].sum() <= 2
    assert np.argmin(scores["label_quality"]) == 5


@hand_computed("knn_label_disagreement", "knn_density", "outlier_score")
def test_knn_label_disagreement_and_density_by_hand():
    indices = np.array([[1, 2], [0, 2], [0, 1]])
    labels = np.array([0, 0, 1])
    assert knn_label_disagreement(indices, labels)["knn_label_disagreement"].tolist() == [0.5, 0.5, 1.0]
    distances = np.array([[1.0, 3.0], [1.0, 1.0], [3.0, 5.0]])
    density = knn_density(distances)
    assert density["outlier_score"].tolist() == [2.0, 1.0, 4.0]
    assert density["knn_density"] == pytest.approx(np.exp(-np.array([2.0, 1.0, 4.0]) / 2.0))


def shapley_single_validation(sorted_labels, y_val, k):
    """Jia et al.'s recursion for one validation point, written out literally (1-indexed)."""
    n = len(sorted_labels)
    s = [0.0] * (n + 1)
    s[n] = float(sorted_labels[n - 1] == y_val) / n
    for i in range(n - 1, 0, -1):
        s[i] = s[i + 1] + (float(sorted_labels[i - 1] == y_val) - float(sorted_labels[i] == y_val)) / k * min(k, i) / i
    return s[1:]


@hand_computed("knn_shapley")
def test_knn_shapley_equals_the_recursion_and_brute_force_shapley():
    # every example validates its 4 listed neighbours; a value is the mean over validators
    labels = np.array([1, 1, 0, 1, 0])
    graph = np.array([[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [0, 1, 2, 3]])
    expected = np.zeros(5)
    counts = np.zeros(5)
    for v in range(5):
        s = shapley_single_validation(labels[graph[v]], labels[v], 2)
        for rank, j in enumerate(graph[v]):
            expected[j] += s[rank]
            counts[j] += 1
    np.testing.assert_allclose(knn_shapley(graph, labels, k=2)["knn_shapley"], expected / counts)
    # the recursion itself equals brute-force Shapley values of the k-NN utility
    from itertools import permutations

    sorted_labels, y_val, k = [1, 0, 1, 0], 1, 2

    def utility(subset):
        chosen = sorted(subset)[:k]  # ranks are distances: lower = nearer
        return sum(sorted_labels[r] == y_val for r in chosen) / k

    brute = np.zeros(4)
    orders = list(permutations(range(4)))
    for order in orders:
        for pos, player in enumerate(order):
            brute[player] += utility(order[:pos + 1]) - utility(order[:pos])
    np.testing.assert_allclose(shapley_single_validation(sorted_labels, y_val, k), brute / len(orders))


def test_regions_follow_the_thresholds():
    confidence = np.array([0.9, 0.2, 0.5, 0.9])
    variability = np.array([0.05, 0.05, 0.3, 0.25])
    assert assign_regions(confidence, variability).tolist() == ["easy-to-learn", "hard-to-learn",
                                                                "ambiguous", "ambiguous"]
    moved = assign_regions(confidence, variability, RegionThresholds(confidence=0.5, variability=0.28))
    assert moved.tolist() == ["easy-to-learn", "hard-to-learn", "ambiguous", "easy-to-learn"]


def test_region_codes_are_the_regions_positions_in_one_byte():
    from analytics.names import REGIONS
    from analytics.scores.regions import region_codes

    rng = np.random.default_rng(1)
    confidence, variability = rng.random(5_000), rng.random(5_000) * 0.4
    confidence[:3], variability[:3] = [0.5, 0.49, 0.9], [0.1, 0.1, 0.2]  # on the thresholds: >= counts
    for thresholds in (RegionThresholds(), RegionThresholds(confidence=0.3, variability=0.1)):
        codes = region_codes(confidence, variability, thresholds)
        assert codes.dtype == np.int8
        assert np.array(REGIONS, dtype=object)[codes].tolist() == \
            assign_regions(confidence, variability, thresholds).tolist()
    assert [REGIONS[c] for c in region_codes(confidence[:3], variability[:3])] == \
        ["easy-to-learn", "hard-to-learn", "ambiguous"]


def full_inputs(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(2, 5, n, k)).astype(np.float32)
    probs = rng.dirichlet(np.ones(k), n)
    indices = np.array([rng.choice(np.delete(np.arange(n), i), 6, replace=False) for i in range(n)])
    return ScoreInputs(labels=labels, logits_by_epoch=logits, early_epoch=1, heldout_probs=probs,
                       knn_indices=indices, knn_distances=np.sort(rng.uniform(size=(n, 6)), axis=1),
                       hidden_norms=rng.uniform(1, 2, (2, n)), vog_raw=rng.uniform(0, 1, n))


def test_registry_runs_only_what_the_inputs_allow():
    inputs = full_inputs()
    assert {s.name for s in available_scores(inputs)} == set(SCORES)
    only_labels_and_graph = ScoreInputs(labels=inputs.labels, knn_indices=inputs.knn_indices,
                                        knn_distances=inputs.knn_distances)
    graph_scores = {s.name for s in SCORES.values() if set(s.requires) <= {"labels", "knn"}}
    assert {"knn_label_disagreement", "knn_density"} <= graph_scores and "heldout" not in graph_scores
    assert {s.name for s in available_scores(only_labels_and_graph)} == graph_scores
    table = compute_scores(only_labels_and_graph)
    assert set(table.columns) == {c for name in graph_scores for c in SCORES[name].columns}
    # the graph needs both arrays: indices alone run nothing that reads it
    assert not any("knn" in s.requires for s in available_scores(
        ScoreInputs(labels=inputs.labels, knn_indices=inputs.knn_indices)))


def _permuted(inputs: ScoreInputs, perm: np.ndarray) -> ScoreInputs:
    """The same examples in the order ``perm`` (row i of the result is example perm[i]); the
    neighbour lists are renumbered to the new order."""
    new_position = np.argsort(perm)
    return ScoreInputs(labels=inputs.labels[perm], logits_by_epoch=inputs.logits_by_epoch[:, :, perm],
                       early_epoch=inputs.early_epoch, heldout_probs=inputs.heldout_probs[perm],
                       knn_indices=new_position[inputs.knn_indices[perm]], knn_distances=inputs.knn_distances[perm],
                       hidden_norms=inputs.hidden_norms[:, perm], vog_raw=inputs.vog_raw[perm])


@pytest.mark.parametrize("name", sorted(SCORES))
def test_every_score_has_documentation_shape_and_order_invariance(name):
    """The common invariants (after scikit-learn's common metric tests): documented, one finite
    value per example in each declared column, and the same value for an example whatever the
    order of the rows."""
    score = SCORES[name]
    assert score.reference and score.direction and score.columns
    inputs = full_inputs()
    result = score.compute(inputs)
    assert set(result) == set(score.columns)
    for values in result.values():
        assert np.asarray(values).shape == (60,)
        assert np.isfinite(np.asarray(values, dtype=float)).all()
    perm = np.random.default_rng(1).permutation(60)
    for column, values in score.compute(_permuted(inputs, perm)).items():
        np.testing.assert_allclose(np.asarray(values, dtype=float), np.asarray(result[column], dtype=float)[perm],
                                   err_msg=column)


@pytest.mark.parametrize("name", sorted(SCORES))
def test_a_per_example_score_gives_each_row_the_same_value_in_a_block(name):
    """``per_example`` scores run over blocks of examples at scale: computed on a block, each row
    must equal the whole computation's. The neighbour graph cannot be cut into blocks."""
    score = SCORES[name]
    if not score.per_example:
        return
    assert "knn" not in score.requires, f"{name} reads the neighbour graph, so a block cannot hold its inputs"
    from analytics.scores.registry import _block

    inputs = full_inputs(n=60)
    whole = score.compute(inputs)
    rows = slice(10, 27)
    part = score.compute(_block(inputs, rows))
    for column in score.columns:
        np.testing.assert_allclose(np.asarray(part[column], dtype=float), np.asarray(whole[column], dtype=float)[rows],
                                   atol=1e-12, err_msg=column)


def test_scores_in_blocks_equal_scores_in_one_piece():
    """Per-example scores run over blocks of examples at scale; the result must not change."""
    inputs = full_inputs(n=60)
    whole = compute_scores(inputs)
    blocked = compute_scores(inputs, block=7)
    assert list(blocked.columns) == list(whole.columns)
    for column in whole.columns:
        np.testing.assert_allclose(blocked[column].astype(float), whole[column].astype(float), atol=1e-12)
    assert any(s.per_example for s in SCORES.values())  # otherwise blocks are never used
