"""The shared kNN graph: exact search against a brute-force reference, NN-descent recall, and the
neighbour-of-neighbour refinement that lifts a poor approximate graph."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.neighbors import build_knn, exact_knn, knn_recall, refine_knn


def blobs(n=600, d=16, centres=6, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, d)) * 4
    labels = rng.integers(0, centres, n)
    return (centre[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_matches_brute_force(metric):
    data, _ = blobs(n=300)
    indices, distances = exact_knn(data, k=7, metric=metric)
    if metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        full = 1 - unit @ unit.T
    else:
        full = np.linalg.norm(data[:, None] - data[None], axis=2)
    np.fill_diagonal(full, np.inf)
    reference = np.argsort(full, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(distances, np.take_along_axis(full, reference, axis=1), atol=1e-4)
    agree = np.mean([len(np.intersect1d(a, b)) / 7 for a, b in zip(indices, reference)])
    assert agree > 0.99  # ties may order differently
    assert not (indices == np.arange(300)[:, None]).any()


def test_exact_search_in_blocks_gives_the_same_graph(monkeypatch):
    data, _ = blobs(n=500)
    whole = exact_knn(data, k=5)
    import analytics.neighbors as neighbors

    monkeypatch.setattr(neighbors, "_BLOCK_BYTES", 4 * 500 * 7)  # 7 rows per block
    blocked = exact_knn(data, k=5)
    np.testing.assert_array_equal(whole[0], blocked[0])


def test_duplicates_never_list_a_point_as_its_own_neighbour():
    data = np.repeat(np.eye(4, dtype=np.float32), 5, axis=0)  # 4 groups of 5 identical points
    graph = build_knn(data, k=4, metric="euclidean")
    assert not (graph.indices == np.arange(20)[:, None]).any()
    # each point's 4 neighbours are its identical twins
    assert (graph.indices // 5 == np.arange(20)[:, None] // 5).all()


def test_approximate_graph_reports_its_recall():
    data, labels = blobs(n=3000, d=32)
    graph = build_knn(data, k=10, exact_max=1000, recall_queries=300)
    assert graph.method == "nndescent"
    assert graph.indices.shape == (3000, 10) and graph.indices.dtype == np.int32
    assert not (graph.indices == np.arange(3000)[:, None]).any()
    assert graph.recall > 0.9 and graph.recall_queries == 300
    # the recall it reports is what an independent check measures
    recall, _ = knn_recall(data, graph.indices, n_queries=300, seed=1)
    assert abs(recall - graph.recall) < 0.05
    # neighbours come from the same blob
    assert (labels[graph.indices] == labels[:, None]).mean() > 0.95


def test_with_self_is_what_umap_expects():
    data, _ = blobs(n=50)
    graph = build_knn(data, k=5)
    indices, distances = graph.with_self()
    assert indices.shape == (50, 6) and (indices[:, 0] == np.arange(50)).all()
    assert (distances[:, 0] == 0).all() and (np.diff(distances, axis=1) >= -1e-6).all()


def test_graph_below_the_recall_target_carries_a_warning():
    from analytics.neighbors import RECALL_TARGET, KnnGraph

    indices, distances = np.zeros((4, 2), np.int32), np.zeros((4, 2), np.float32)
    good = KnnGraph(indices, distances, "cosine", "nndescent", RECALL_TARGET, 1000)
    poor = KnnGraph(indices, distances, "cosine", "nndescent", 0.865, 1000)
    assert good.warning is None
    assert "86.5%" in poor.warning and "1,000 points" in poor.warning and "95%" in poor.warning



@pytest.fixture(scope="module")
def hard_blobs():
    """8,000 points in 16-d blobs (high intrinsic dimension: hard for neighbour search) and their
    exact 15-NN graph."""
    data, _ = blobs(n=8000, d=16, centres=12)
    return data, exact_knn(data, k=15)[0]


def corrupted(graph, fraction, seed=0):
    """A low-quality graph: ``fraction`` of the entries replaced by random other points (what a
    stalled NN-descent leaves: most neighbours right, the rest far away)."""
    rng = np.random.default_rng(seed)
    n = len(graph)
    poor = graph.copy()
    mask = rng.random(poor.shape) < fraction
    poor[mask] = (np.nonzero(mask)[0] + rng.integers(1, n, mask.sum())) % n  # never the point itself
    return poor


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_refinement_lifts_a_poor_graph_and_keeps_it_well_formed(metric, hard_blobs):
    data, exact = hard_blobs
    if metric == "euclidean":
        exact = exact_knn(data, k=15, metric="euclidean")[0]
    start = corrupted(exact, 0.4)
    before, _ = knn_recall(data, start, metric=metric, n_queries=500)
    once, _, brought = refine_knn(data, start, metric=metric)
    indices, distances, _ = refine_knn(data, start, metric=metric, passes=3)
    after_one, _ = knn_recall(data, once, metric=metric, n_queries=500)
    after, _ = knn_recall(data, indices, metric=metric, n_queries=500)
    assert before < 0.65 and after_one > before + 0.15 and after > 0.9 and brought.any()
    assert indices.shape == start.shape and indices.dtype == np.int32 and distances.dtype == np.float32
    assert not (indices == np.arange(len(data))[:, None]).any()  # never one's own neighbour
    assert (np.diff(distances, axis=1) >= 0).all()  # nearest first
    assert all(len(np.unique(row)) == 15 for row in indices)  # no neighbour twice
    # the distances are the true distances of the listed neighbours
    if metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        true = 1 - np.einsum("ij,ikj->ik", unit, unit[indices])
    else:
        true = np.linalg.norm(data[:, None] - data[indices], axis=2)
    np.testing.assert_allclose(distances, true, atol=1e-4)


def test_refinement_keeps_an_exact_graph_and_is_deterministic(hard_blobs):
    data, exact = hard_blobs
    exact_dist = exact_knn(data, k=15, queries=np.arange(500))[1]
    indices, distances, _ = refine_knn(data, exact)
    np.testing.assert_allclose(distances[:500], exact_dist, atol=1e-5)
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(indices, exact)]) > 14.99  # ties aside
    poor = corrupted(exact, 0.5, seed=1)
    first, second = refine_knn(data, poor, passes=2), refine_knn(data, poor, passes=2)
    np.testing.assert_array_equal(first[0], second[0])
    # a later pass looks only at pairs of edges with a new one: the same graph as a full pass
    full = refine_knn(data, refine_knn(data, poor)[0])
    np.testing.assert_array_equal(first[0], full[0])
    np.testing.assert_array_equal(first[1], full[1])
    with pytest.raises(ValueError, match="own neighbour"):
        refine_knn(data, np.tile(np.arange(len(data), dtype=np.int32)[:, None], (1, 3)))


def test_build_knn_refines_an_approximate_graph_below_the_target(monkeypatch, hard_blobs):
    import pynndescent

    from analytics.neighbors import REFINE_BELOW

    data, exact = hard_blobs
    poor = corrupted(exact[:, :14], 0.25, seed=2)
    initial, _ = knn_recall(data, poor, n_queries=500, seed=3)

    class PoorNNDescent:
        """Stands in for pynndescent.NNDescent: a low-recall graph, k + 1 columns, self first."""

        def __init__(self, vectors, *, n_neighbors, metric, **_):
            assert n_neighbors == 15 and metric == "cosine"
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            graph = np.hstack([np.arange(len(vectors), dtype=np.int32)[:, None], poor])
            distances = 1 - np.einsum("ij,ikj->ik", unit, unit[graph])
            order = np.argsort(distances, axis=1, kind="stable")
            self.neighbor_graph = (np.take_along_axis(graph, order, axis=1),
                                   np.take_along_axis(distances, order, axis=1).astype(np.float32))

    monkeypatch.setattr(pynndescent, "NNDescent", PoorNNDescent)
    messages = []
    graph = build_knn(data, k=14, exact_max=5000, recall_queries=500,
                      progress=lambda fraction, message: messages.append(message))
    assert initial < 0.8
    assert graph.method == "nndescent" and 1 <= graph.refine_passes <= 3
    assert any("refining" in m for m in messages)
    # it refines until the measured recall reaches REFINE_BELOW (or a pass stops helping)
    assert graph.recall >= REFINE_BELOW or graph.refine_passes == 3
    recall, _ = knn_recall(data, graph.indices, n_queries=500, seed=3)  # other queries agree
    assert recall > initial + 0.15 and abs(recall - graph.recall) < 0.03
    assert not (graph.indices == np.arange(len(data))[:, None]).any()
    assert (np.diff(graph.distances, axis=1) >= 0).all()


def test_exact_search_is_not_refined(monkeypatch):
    import analytics.neighbors as neighbors

    def fail(*args, **kwargs):
        raise AssertionError("exact search must not be refined")

    monkeypatch.setattr(neighbors, "refine_knn", fail)
    data, _ = blobs(n=800)
    graph = build_knn(data, k=8)
    assert graph.method == "exact" and graph.recall == 1.0 and graph.refine_passes == 0
    indices, distances = exact_knn(data, k=8)
    np.testing.assert_array_equal(graph.indices, indices)
    np.testing.assert_array_equal(graph.distances, distances)
